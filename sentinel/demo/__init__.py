"""The bundled demo model: its corpus (stdlib docstrings), build script and model card."""
