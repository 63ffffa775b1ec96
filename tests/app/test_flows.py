"""Dashboard flows that must not mislead: the preview is what Prune prunes, the selection link opens
'By my selection' with those heads, a reload restores the session, one perplexity on every page."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from sentinel.models import load_model
from sentinel.pruning.strategies import heads_for_ratio
from sentinel.ui.history import readable, significant
from sentinel.ui.protocol import protocol_perplexity
from tests.app.conftest import assert_clean, dashboard, errors, open_app, url_of, wait_for


def preview_heads(at) -> set[tuple[int, int]]:
    """The heads the Prune page's map outlines as the preview (read from the chart's data)."""
    import pyarrow as pa

    data = at.get("vega_lite_chart")[0].proto.datasets[0].data.data
    frame = pa.ipc.open_stream(data).read_all().to_pandas()
    return {(int(r.layer), int(r.head)) for r in frame.itertuples() if r.preview}


@pytest.mark.parametrize("strategy", ["entropy", "magnitude", "random"])
def test_the_preview_marks_exactly_the_heads_prune_then_prunes(strategy):
    at = open_app("prune")
    at.selectbox(key="prune_strategy").set_value(strategy).run()
    at.slider(key="prune_ratio").set_value(0.2).run()
    shown = preview_heads(at)
    wanted = heads_for_ratio(0.2, 48)
    assert len(shown) == wanted
    assert any(f"Preview (dashed orange on the map): {wanted} of 48 heads = {wanted / 48:.0%}" in c.value
               for c in at.caption)
    at.button(key="prune_go").click().run()
    assert_clean(at)
    assert set(dashboard(at).working.status()) == shown


def test_the_selection_link_opens_prune_by_selection_with_those_heads():
    at = open_app("head_maps")
    dashboard(at).selection = dashboard(at).selection.__class__(((1, 2), (4, 0)), ())
    at.run()
    charts = at.get("vega_lite_chart")                       # the map, then inside L1 H2: base and now
    assert len(charts) == 3 and at.selectbox(key="inside_head").value == (1, 2)
    assert any(c.value.startswith("Attends most to: ") for c in at.caption)
    link = at.button(key="prune_selected")
    assert link.label == "Prune the 2 selected heads"
    link.click().run()
    assert_clean(at)
    assert at.radio(key="prune_how").value == "selection"
    assert at.multiselect(key="selected_heads_list").value == ["L1 H2", "L4 H0"]
    at.switch_page("app_pages/prune.py")       # AppTest's next run starts from its own page; the browser stays
    at.button(key="prune_go").click().run()                    # defaults: mask
    assert dashboard(at).working.status() == {(1, 2): "masked", (4, 0): "masked"}


def test_a_reload_restores_the_pruning_steps_and_the_selection():
    at = open_app("prune")
    at.button(key="prune_go").click().run()                   # entropy 30%: 14 heads masked
    at.radio(key="prune_how").set_value("selection").run()
    at.radio(key="prune_mode").set_value("remove").run()
    active = [f"L{layer} H{head}" for layer, head in dashboard(at).working.active() if layer in (3, 4)]
    at.multiselect(key="selected_heads_list").set_value([active[0], active[-1]]).run()
    at.button(key="prune_go").click().run()
    at.multiselect(key="selected_heads_list").set_value([active[1]]).run()
    first = dashboard(at)
    again = open_app("prune", query=url_of(at))              # F5: a new session on the same address
    state = dashboard(again)
    assert state.working.status() == first.working.status() and len(state.working.status()) == 16
    assert [s.to_dict() for s in state.working.steps] == first.working.history()
    assert [f"L{layer} H{head}" for layer, head in state.selection.heads] == [active[1]]
    assert again.table[0].value.loc["Active heads"].tolist()[1] == "32 of 48"


def test_a_damaged_address_starts_afresh_with_a_message():
    at = open_app(query={"s": "not-a-session"})
    assert_clean(at)
    assert errors(at)[0].startswith("Could not finish restoring your session from the page address: The page "
                                    "address carries a session that cannot be read")
    assert dashboard(at).working is not None and dashboard(at).working.steps == []


def test_a_link_may_not_open_a_folder_outside_the_data_folder(tmp_path):
    from sentinel.ui.state import ModelChoice, SessionSnapshot

    token = SessionSnapshot(ModelChoice(str(tmp_path))).encode()
    at = open_app(query={"s": token})
    assert any("a link may only reopen the bundled model or one saved in the data folder's models/" in e
               for e in errors(at))


def test_one_perplexity_on_every_page(monkeypatch):
    from app_support.state import shared_store

    def measured_again(*args, **kwargs):
        raise AssertionError("the Fine-tune page measured the job again instead of reading the job's own numbers")

    monkeypatch.setattr("app_support.state.record_verdict", measured_again)
    bundled = load_model(None)
    expected = protocol_perplexity(bundled.model, bundled.tokenizer)
    at = open_app()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Perplexity (as loaded)"] == readable(expected.perplexity)
    # the bundled model carries its own held-out split: every page scores that, and says so
    assert any(f"{expected.tokens_evaluated:,} scored tokens of stories-gpt2's own validation split" in c.value
               for c in at.caption)
    at.switch_page("app_pages/prune.py").run()
    assert at.table[0].value.loc["Perplexity", "Before"] == readable(expected.perplexity)
    at.switch_page("app_pages/compare.py").run()
    at.button(key="compare_go").click().run()
    values = [m.value for m in at.metric if m.label == "Perplexity"]
    assert values[0] == readable(expected.perplexity)
    # Fine-tune: a one-step run on the unpruned model; its "before" is that same model, measured inside the job
    at.switch_page("app_pages/finetune.py").run()
    at.number_input(key="finetune_steps").set_value(1)
    at.number_input(key="finetune_batch").set_value(2)
    at.select_slider(key="finetune_block").set_value(64)
    at.button(key="FormSubmitter:finetune_settings-Start fine-tuning").click().run()
    job_id = url_of(at)["job"]
    wait_for(at, lambda a: ("verdict", job_id) in dashboard(a).caches)
    verdict = dashboard(at).caches[("verdict", job_id)]
    assert verdict.before == expected.perplexity and verdict.tokens == expected.tokens_evaluated
    assert any(v.value.startswith(verdict.headline()) for v in (*at.success, *at.warning, *at.info))
    # Experiments: the numbers the job wrote, the same model's the same number
    job = shared_store().get_job(job_id)
    summary = shared_store().get_experiment(job.experiment_id).summary
    assert summary["protocol_perplexity_before"] == expected.perplexity
    assert summary["protocol_perplexity_after"] == verdict.after
    at.switch_page("app_pages/experiments.py").run()
    table = at.dataframe[0].value
    row = table[table["id"] == job.experiment_id].iloc[0]
    assert row["perplexity"] == significant(verdict.after) and pd.isna(row["perplexity_note"])
    at.selectbox(key="experiments_pick").set_value(job.experiment_id).run()
    results = at.dataframe[2].value.set_index("setting")["value"]
    assert results["protocol perplexity before"] == readable(expected.perplexity)


@pytest.mark.parametrize("name, data, message", [
    ("big.txt", b"word " * (6 * 1024 * 1024 // 5 + 10),
     "big.txt is 6.0 MB; sample texts can be at most 5 MB. Upload a shorter excerpt"),
    ("table.csv", b"title,body\nhello,world\n",
     "table.csv has no column named 'text', so there is nothing to read. Columns found: 'title', 'body'."),
])
def test_upload_problems_are_named_in_user_terms(name, data, message):
    at = open_app("head_maps")
    at.radio(key="text_kind").set_value("uploaded").run()
    at.file_uploader(key="text_upload").upload(name, data, "text/plain")
    at.run()
    at.button(key="text_apply").click().run()
    assert_clean(at)
    assert len(errors(at)) == 1 and message in errors(at)[0]
    assert "text_column" not in errors(at)[0]


def test_a_short_sample_text_draws_with_a_visible_warning():
    at = open_app("head_maps")
    at.radio(key="text_kind").set_value("pasted").run()
    at.text_area(key="text_pasted").set_value("Return the value of the key.").run()
    at.button(key="text_apply").click().run()
    assert_clean(at)
    tokens = dashboard(at).caches["maps"][1].tokens
    assert tokens < 256
    assert at.warning[0].value.startswith(f"The sample text gives only {tokens} tokens")
    assert [c.key for c in at.get("vega_lite_chart")][:1] == ["head_map_chart"]   # the map, then inside a head


def test_compare_strategies_runs_as_a_job_and_ranks_by_measured_perplexity(monkeypatch):
    from app_support.state import shared_store
    from sentinel.ui.strategies import Comparison

    # three strategies keep the test short; the unit test covers every registered one
    monkeypatch.setattr("sentinel.ui.strategies.strategy_names", lambda: ["entropy", "magnitude", "random"])
    at = open_app("prune")
    at.button(key="compare_strategies").click().run()
    assert_clean(at)
    job_id = dashboard(at).compare_job_id
    wait_for(at, lambda a: shared_store().get_job(job_id).state not in ("queued", "running"))
    at.run()
    job = shared_store().get_job(job_id)
    assert job.state == "succeeded" and job.kind == "strategy-compare"
    comparison = Comparison.from_dict(job.result["comparison"])
    table = at.dataframe[0].value
    assert table["perplexity"].tolist() == sorted(significant(r.perplexity) for r in comparison.results)
    assert {"entropy", "magnitude", "random (seed 0)"} <= set(table["strategy"])
    assert set(table["heads pruned"]) == {"14 of 48 = 29%"}
    assert comparison.baseline == pytest.approx(dashboard(at).caches["figures-base", id(dashboard(at).working.base)]
                                                .perplexity)
    shown = [m.value for m in at.markdown]
    assert comparison.recommendation() in shown
    experiment = shared_store().get_experiment(job.experiment_id)
    assert experiment.kind == "strategy-compare" and experiment.summary["comparison"] == job.result["comparison"]
    assert not Path(job.params["model"]).exists()            # the start copy is gone; the result is in the store
    again = open_app("prune", query=url_of(at))              # a reload keeps the comparison on the page
    assert dashboard(again).compare_job_id == job_id
    assert again.dataframe[0].value["perplexity"].tolist() == table["perplexity"].tolist()
    assert not any(w.value.startswith("This strategy comparison was made") for w in again.warning)
    again.button(key="prune_go").click().run()                 # one more step: the ranking is of the model before it
    assert_clean(again)
    assert any(w.value.startswith("This strategy comparison was made on your model before step 1 (mask 14 heads")
               for w in again.warning)


def test_a_strategy_comparison_can_be_cancelled_and_its_start_copy_is_removed(monkeypatch):
    from app_support.state import shared_store

    from sentinel.ui.strategies import Comparison

    def until_cancelled(model, tokenizer, request, report, should_stop):
        """Runs until the page's Cancel reaches the job, so the button is there to press (no timing race)."""
        deadline = time.monotonic() + 120
        while not should_stop() and time.monotonic() < deadline:
            time.sleep(0.05)
        return Comparison(request.ratio, 1.0)

    monkeypatch.setattr("sentinel.ui.strategies.compare_strategies", until_cancelled)
    at = open_app("prune")
    at.button(key="compare_strategies").click().run()
    job_id = dashboard(at).compare_job_id
    start = Path(shared_store().get_job(job_id).params["model"])
    at.button(key="compare_strategies_cancel").click().run()
    wait_for(at, lambda a: shared_store().get_job(job_id).state not in ("queued", "running"))
    at.run()
    assert_clean(at)
    assert shared_store().get_job(job_id).state == "cancelled"
    assert any("strategy comparison was cancelled" in i.value for i in at.info)
    assert not start.exists()


def test_a_restart_draws_the_first_map_from_the_disk_cache(monkeypatch):
    first = open_app("head_maps")
    computed = dashboard(first).caches["maps"][1].scores["entropy"].values

    def must_not_run(*args, **kwargs):
        raise AssertionError("the maps were computed again instead of read from the cache")

    monkeypatch.setattr("sentinel.ui.analysis.compute_scores", must_not_run)
    again = open_app("head_maps")                      # a new session, as after a restart: only the disk cache
    assert_clean(again)
    assert torch.equal(dashboard(again).caches["maps"][1].scores["entropy"].values.isnan(), computed.isnan())
    assert torch.allclose(dashboard(again).caches["maps"][1].scores["entropy"].values, computed.double())


def test_head_maps_outline_the_same_heads_as_the_prune_preview():
    at = open_app("prune")
    at.selectbox(key="prune_strategy").set_value("magnitude").run()
    on_prune = preview_heads(at)
    at.switch_page("app_pages/head_maps.py").run()
    assert_clean(at)
    assert preview_heads(at) == on_prune and len(on_prune) == 14
    assert any(c.value.startswith("Dashed orange: the 14 heads Prune would prune now with its settings (magnitude 30%")
               for c in at.caption)
