"""Experiments as a run tracker, in the dashboard: filter, rename, tag, delete (after a confirmation), the level
chart by share of parameters with the base as a reference and intervals as error bars, CSV and JSON of every
table, and kept review reports at read-only links that name nothing but a listed report."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from app_support.state import shared_store
from sentinel.files import prepare_run_folder
from sentinel.store import StoreError
from sentinel.ui.finetune import DASHBOARD_RUNS
from tests.app.conftest import assert_clean, errors, open_app

MIXED = {"strategy": "mixed", "pruning_ratio": 0.58, "params_before": 1000, "params_after": 560,
         "baseline_perplexity": 1.5, "dashboard_steps": [{"mode": "remove", "heads": {}, "how": "selection"}]}
PROTOCOL = {"protocol_perplexity_before": 2.6, "protocol_perplexity_before_ci": [2.5, 2.7],
            "protocol_perplexity_after": 1.8, "protocol_perplexity_after_ci": [1.75, 1.85], "protocol_tokens": 100}


def make_run(name: str, kind: str = "finetune", config: dict | None = None, summary: dict | None = None,
             model: str = "tracker-model", tags: tuple[str, ...] = ()) -> str:
    store = shared_store()
    exp = store.create_experiment(name, config or {}, kind=kind, model=model, status="completed")
    if summary:
        store.update_experiment(exp, summary=summary)
    if tags:
        store.edit_experiment(exp, tags=list(tags))
    return exp


def filtered(text: str):
    """The Experiments page showing only the runs whose name holds `text`."""
    at = open_app("experiments")
    at.text_input(key="experiments_filter_text").set_value(text).run()
    assert_clean(at)
    return at


TABLES = {"experiments": {"id", "name", "tags", "params_removed"}, "reports": {"id", "title", "kept"},
          "ranking": {"rank", "strategy", "heads pruned"}}


def table(at, which: str = "experiments") -> pd.DataFrame:
    """The page's table of that kind, known by its columns."""
    return next(d.value for d in at.dataframe if TABLES[which] <= set(d.value.columns))


def shown_ids(at) -> list[str]:
    return table(at)["id"].tolist()


def downloads(at) -> set[str]:
    """The keys of the page's download buttons (the file names are in app_support.tables, tested in tests/ui)."""
    return {b.proto.id.rsplit("-", 1)[-1] for b in at.get("download_button")}


def level_chart_data(at) -> tuple[dict, list[pd.DataFrame]]:
    """The level chart's Vega-Lite spec and its datasets (points, error bars, the base's rule)."""
    import pyarrow as pa

    chart = next(c for c in at.get("vega_lite_chart") if "Perplexity vs. pruning level" in c.proto.spec)
    return json.loads(chart.proto.spec), [pa.ipc.open_stream(d.data.data).read_all().to_pandas()
                                         for d in chart.proto.datasets]


def test_filter_rename_and_tag_runs():
    a = make_run("trk-filter entropy run")
    b = make_run("trk-filter random run", tags=("demo",))
    c = make_run("trk-filter compress run", kind="compress")
    at = filtered("trk-filter")
    assert sorted(shown_ids(at)) == sorted([a, b, c])
    at.multiselect(key="experiments_filter_kinds").set_value(["compress"]).run()
    assert shown_ids(at) == [c]
    at.multiselect(key="experiments_filter_kinds").set_value([]).run()
    at.multiselect(key="experiments_filter_tags").set_value(["demo"]).run()
    assert shown_ids(at) == [b]
    at.multiselect(key="experiments_filter_tags").set_value([]).run()

    at.selectbox(key="experiments_pick").set_value(a).run()
    at.text_input(key=f"experiments_name_{a}").set_value("trk-filter  my best run")
    at.text_input(key=f"experiments_tags_{a}").set_value("keep, demo")
    at.button(key=f"FormSubmitter:experiments_edit_{a}-Save name and tags").click().run()
    assert_clean(at)
    record = shared_store().get_experiment(a)
    assert (record.name, record.tags) == ("trk-filter my best run", ["keep", "demo"])
    assert at.success[0].value == f"Run {a} saved as “trk-filter my best run”, tagged keep, demo."
    row = table(at).set_index("id").loc[a]
    assert (row["name"], row["tags"]) == ("trk-filter my best run", "keep, demo")
    at.multiselect(key="experiments_filter_tags").set_value(["demo"]).run()
    assert sorted(shown_ids(at)) == sorted([a, b])

    at.selectbox(key="experiments_pick").set_value(a).run()
    at.text_input(key=f"experiments_tags_{a}").set_value("x" * 41)
    at.button(key=f"FormSubmitter:experiments_edit_{a}-Save name and tags").click().run()
    assert_clean(at)
    assert errors(at) == ["Could not finish renaming or tagging the run: A tag needs 1 to 40 characters and no "
                          f"comma; got '{'x' * 41}'."]
    assert shared_store().get_experiment(a).tags == ["keep", "demo"]


def test_delete_asks_first_and_removes_only_what_sentinel_wrote(app_home):
    store = shared_store()
    doomed = make_run("trk-delete fine-tune")
    store.log_metric(doomed, "loss", 2.0, step=1)
    ours = prepare_run_folder(app_home / DASHBOARD_RUNS / doomed)          # the dashboard fine-tune's folder
    (ours / "step-1").mkdir()
    foreign_run = make_run("trk-delete with a folder sentinel did not write")
    foreign = app_home / DASHBOARD_RUNS / foreign_run
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    at = filtered("trk-delete")
    at.selectbox(key="experiments_pick").set_value(doomed).run()
    at.button(key="experiments_delete").click().run()
    assert_clean(at)
    assert "This cannot be undone." in at.warning[0].value
    assert store.get_experiment(doomed).name == "trk-delete fine-tune"    # nothing happens before the confirmation
    at.button(key="experiments_delete_cancel").click().run()
    assert not at.warning and store.get_experiment(doomed)
    at.button(key="experiments_delete").click().run()
    at.button(key="experiments_delete_confirm").click().run()
    assert_clean(at)
    with pytest.raises(StoreError):
        store.get_experiment(doomed)
    assert not store.get_curves(doomed) and not ours.exists()
    assert at.success[0].value == f"Deleted run “trk-delete fine-tune” ({doomed})."
    assert doomed not in shown_ids(at)

    at.selectbox(key="experiments_pick").set_value(foreign_run).run()
    at.button(key="experiments_delete").click().run()
    at.button(key="experiments_delete_confirm").click().run()
    assert_clean(at)
    assert foreign_run not in [r.id for r in store.list_experiments()]
    assert (foreign / "notes.txt").read_text() == "mine"                   # not Sentinel's: left where it was


def test_a_run_with_a_running_job_is_not_deleted():
    store = shared_store()
    busy = make_run("trk-busy run")
    job = store.create_job("finetune", {}, "cpu", busy)
    store.set_job_state(job, "running")
    try:
        at = filtered("trk-busy")
        at.button(key="experiments_delete").click().run()
        at.button(key="experiments_delete_confirm").click().run()
        assert_clean(at)
        assert errors(at)[0].startswith(f"Could not finish deleting the run: Run {busy} is still being worked on")
        assert store.get_experiment(busy).name == "trk-busy run"
    finally:                     # a record made by hand: nothing runs it, so close it for the other tests
        store.set_job_state(job, "interrupted", error="test record")


def test_level_chart_by_parameter_share_with_base_and_error_bars():
    mixed = make_run("trk-chart mixed heads neurons layers", config=MIXED, summary=PROTOCOL, model="trk-chart-model")
    old = make_run("trk-chart older entropy run", model="trk-chart-model",
                   config={"strategy": "entropy", "pruning_ratio": 0.3, "dashboard_steps": []},
                   summary={"protocol_perplexity_before": 2.0, "protocol_perplexity_after": 1.9,
                            "protocol_tokens": 100})
    at = filtered("trk-chart")
    row = table(at).set_index("id").loc[mixed]
    assert (row["pruning_ratio"], row["params_removed"], row["ci_low"], row["ci_high"]) == (0.58, 0.44, 1.75, 1.85)
    spec, frames = level_chart_data(at)
    points = frames[0]
    assert set(points[points["run"] == mixed]["level"]) == {0.58}          # by share of heads: 58%
    assert spec["layer"][0]["encoding"]["x"]["title"] == "Share of heads pruned"
    at.segmented_control(key="experiments_axis").set_value("params").run()
    assert_clean(at)
    spec, frames = level_chart_data(at)
    assert spec["layer"][0]["encoding"]["x"]["title"] == "Share of parameters removed (measured)"
    points = frames[0]
    assert set(points["run"]) == {mixed} and set(points["level"]) == {0.44}   # by parameters: what it removed
    spans = next(f for f in frames if "ci_low" in f and f["ci_low"].notna().all())
    assert sorted(map(tuple, spans[["ci_low", "ci_high"]].values.tolist())) == [(1.75, 1.85), (2.5, 2.7)]
    base = next(f for f in frames if "label" in f)
    assert base["perplexity"].tolist() == [1.5] and base["label"].tolist() == [f"unpruned model (run {mixed})"]
    captions = " ".join(c.value for c in at.caption)
    assert "Dashed: the unpruned model, 1.5." in captions
    assert "1 run(s) recorded before parameter counts were kept are not drawn here." in captions
    assert old in shown_ids(at)


def test_every_table_downloads_as_csv_and_json():
    ranked = make_run("trk-tables strategy comparison", kind="strategy-compare", summary={"comparison": {
        "ratio": 0.3, "baseline": 1.5, "prior_steps": 0,
        "results": [{"strategy": "entropy", "seed": None, "pruned": 14, "total": 48, "perplexity": 1.6, "tokens": 9},
                    {"strategy": "magnitude", "seed": None, "pruned": 14, "total": 48, "perplexity": 1.7,
                     "tokens": 9}]}})
    shared_store().record_pruned_heads(ranked, {0: [1, 2]}, mode="mask")
    shared_store().log_sample(ranked, "Once", "Once upon a time")
    make_run("trk-tables other", config={"steps": 3})
    at = filtered("trk-tables")
    at.selectbox(key="experiments_pick").set_value(ranked).run()
    assert_clean(at)
    ranking = table(at, "ranking")
    assert ranking["strategy"].tolist() == ["entropy", "magnitude"] and ranking["rank"].tolist() == [1, 2]
    keys = downloads(at)
    for table_key in ("experiments_table", "experiments_settings", "experiments_results", "experiments_ranking",
                      "experiments_pruned_heads", "experiments_samples", "experiments_diff_table"):
        assert {f"{table_key}_csv", f"{table_key}_json"} <= keys, table_key


def test_a_kept_report_opens_at_its_link_and_nothing_else_does(app_home):
    page = ("<!DOCTYPE html><html><head><style>.verdict{color:red}</style></head><body><h1>Pruning review of "
            "trk-model</h1><div class='verdict fail'>pruned does not meet the criteria.</div></body></html>")
    report = shared_store().save_report("Review of trk-model: pruned fails", page)
    at = open_app("experiments", query={"report": report})
    shown = [h.proto.body for h in at.get("html")]
    assert any("Pruning review of trk-model" in body and ".verdict{color:red}" in body for body in shown)
    assert downloads(at) == {"report_download"} and not at.dataframe
    (app_home / "secret.txt").write_text("server secret")
    for bad in ("../secret.txt", "../sentinel.db", "..%2Fsecret.txt", "/etc/passwd", "0123456789ab", report + "/"):
        at.query_params["report"] = bad               # the same session, another address
        at.run()
        assert_clean(at)
        assert errors(at) == ["Could not finish opening the report: There is no kept report with this id; open "
                              "the report from the list on Experiments."], bad
        assert not at.get("html") and not at.get("download_button") and not at.dataframe
    del at.query_params["report"]
    at.run()
    assert report in table(at, "reports")["id"].tolist()
