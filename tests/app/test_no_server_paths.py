"""Visitors never see the server's folders (issue 22 #12): a walk through load, prune, save, export, reload of the
saved model, Compare and Experiments finds no absolute path of the app folder, the data folder, the temp folder or
the home folder in any element the pages render (text, captions, messages, help texts, labels, options, tables)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from sentinel.models import BUNDLED_MODEL_DIR
from sentinel.store import sentinel_home
from sentinel.ui.library import model_folder_for
from tests.app.conftest import APP, assert_clean, errors, open_app


def rendered(node) -> list[str]:
    """Every element's protobuf as text (what the browser receives for it), depth first."""
    found = [str(node.proto)] if getattr(node, "proto", None) is not None else []
    for child in getattr(node, "children", {}).values():
        found += rendered(child)
    return found


def server_paths() -> list[str]:
    folders = {Path(APP).resolve().parent, sentinel_home().resolve(), Path(tempfile.gettempdir()).resolve(),
               Path.home().resolve(), BUNDLED_MODEL_DIR.resolve()}
    return sorted({str(folder) + "/" for folder in folders} | {str(BUNDLED_MODEL_DIR.resolve())})


def assert_no_server_paths(at, where: str) -> None:
    assert_clean(at)
    leaks = [text[max(0, text.index(path) - 200):text.index(path) + 100] for text in rendered(at._tree)
             for path in server_paths() if path in text]
    assert not leaks, f"{where}: the page shows server folders in " + "\n---\n".join(leaks)


def test_no_page_of_the_main_walk_shows_a_server_folder():
    at = open_app("model")
    assert_no_server_paths(at, "Model page, bundled model")
    at.switch_page("app_pages/prune.py").run()
    at.radio(key="prune_how").set_value("target").run()
    at.multiselect(key="budget_units").set_value(["neurons"]).run()
    at.radio(key="budget_allocation").set_value("uniform").run()   # exportable: the same width in every block
    at.button(key="prune_go").click().run()
    assert_no_server_paths(at, "Prune page after a prune")
    at.text_input(key="save_name").set_value("walk-saved").run()
    at.button(key="save_go").click().run()
    assert not errors(at)
    assert any(s.value.startswith("Saved as models/walk-saved.") for s in at.success)
    assert_no_server_paths(at, "Prune page after Save")
    at.text_input(key="export_name").set_value("walk-stock").run()
    at.button(key="export_go").click().run()
    assert not errors(at)
    assert any(s.value.startswith("Exported as exports/walk-stock:") for s in at.success)
    assert_no_server_paths(at, "Prune page after Export")

    at.switch_page("app_pages/model.py").run()
    at.radio(key="model_kind").set_value("saved").run()
    assert_no_server_paths(at, "Model page, the saved models list")
    at.selectbox(key="model_saved").set_value(str(model_folder_for("walk-saved"))).run()
    at.button(key="model_load").click().run()
    assert_no_server_paths(at, "Model page, asking before the session's work is set aside")
    at.button(key="model_load_confirm").click().run()    # the session's pruning step was kept as a run first
    assert not errors(at)
    assert any("Loaded a Sentinel-saved pruned model from models/walk-saved" in c.value for c in at.caption)
    assert_no_server_paths(at, "Model page, the saved model loaded")
    for page in ("compare", "experiments"):
        at.switch_page(f"app_pages/{page}.py").run()
        assert_no_server_paths(at, f"{page} page")
