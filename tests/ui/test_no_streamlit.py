"""The library never imports Streamlit: only app.py, app_pages/ and app_support/ do."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import sentinel


def test_no_sentinel_module_imports_streamlit():
    names = [m.name for m in pkgutil.walk_packages(sentinel.__path__, "sentinel.")
             if not m.name.endswith("__main__")]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"some sentinel module imports streamlit ({len(names)} checked)"
