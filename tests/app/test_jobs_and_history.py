"""Fine-tune in the background to completion, reload it by URL, compare the three models, list the experiment,
save a pruned model and load it again, loss impact with progress."""

from __future__ import annotations

import html
import re

import pytest
import torch

from sentinel.demo.prompts import default_prompts
from sentinel.generation import generate_text
from sentinel.pruning import active_heads
from sentinel.ui.state import shared_store
from tests.app.conftest import assert_clean, dashboard, errors, open_app, wait_for

STEPS = 4


@pytest.fixture(scope="module")
def finished():
    """A session that pruned 30% by entropy and fine-tuned for 4 steps, waited to the end."""
    at = open_app("prune")
    at.button(key="prune_go").click().run()
    at.switch_page("app_pages/finetune.py").run()
    at.number_input(key="finetune_steps").set_value(STEPS)
    at.number_input(key="finetune_batch").set_value(2)
    at.select_slider(key="finetune_block").set_value(64)
    at.button(key="FormSubmitter:finetune_settings-Start fine-tuning").click().run()
    assert_clean(at)
    job_id = at.query_params["job"]
    wait_for(at, lambda a: dashboard(a).tuned is not None)
    return at, job_id


def test_a_short_finetune_runs_to_completion(finished):
    at, job_id = finished
    job = shared_store().get_job(job_id)
    assert job.state == "succeeded" and job.result["steps"] == STEPS and job.result["stopped"] == "completed"
    success = [s.value for s in at.success]
    before, after = job.result["perplexity_before"], job.result["perplexity_after"]
    assert success == [f"Fine-tuned for {STEPS} steps: validation perplexity {before:.2f} → {after:.2f}. The "
                       "fine-tuned model is now this session's 'after' model on the Compare page."]
    curves = shared_store().get_curves(job.experiment_id)
    assert [p.step for p in curves["loss"]] == list(range(1, STEPS + 1))
    assert len(at.get("vega_lite_chart")) == 2                # loss and perplexity curves
    tuned = dashboard(at).tuned
    assert tuned.job_id == job_id and tuned.checkpoint == job.result["model"]
    # the fine-tuned model keeps the session's masks: the same 14 heads are off
    assert active_heads(tuned.model) == active_heads(dashboard(at).working.model)


def test_the_job_url_shows_the_same_job_after_a_reload(finished):
    first, job_id = finished
    at = open_app("finetune", query={"job": job_id})
    assert_clean(at)
    state = dashboard(at)
    assert state.job_id == job_id and state.tuned is not None and state.tuned.job_id == job_id
    # the new session rebuilt the pruned model the job started from
    assert state.working.status() == dashboard(first).working.status()
    assert at.progress[0].value == 100
    assert f"step {STEPS} of {STEPS}" in at.progress[0].proto.text


def test_compare_renders_three_models_with_the_same_seed(finished):
    at, _ = finished
    at.switch_page("app_pages/compare.py").run()
    at.button(key="compare_go").click().run()
    assert_clean(at)
    bodies = {re.search(r"id='compare-(\w+)'", h.proto.body).group(1): h.proto.body for h in at.get("html")}
    assert set(bodies) == {"base", "pruned", "tuned"}
    state = dashboard(at)
    prompt = default_prompts()[0]                                   # the page's default prompt
    expected = {
        "base": generate_text(state.working.base.model, state.working.tokenizer, prompt, 40, greedy=True).text,
        "pruned": generate_text(state.working.model, state.working.tokenizer, prompt, 40, greedy=True).text,
        "tuned": generate_text(state.tuned.model, state.working.tokenizer, prompt, 40, greedy=True).text,
    }
    for name, text in expected.items():
        shown = html.unescape(re.sub(r"<[^>]+>", "", bodies[name].split("</b>", 1)[1])).strip()
        assert shown == text.strip()
    labels = [m.label for m in at.metric]
    assert labels.count("Perplexity") == 3 and labels.count("Tokens/s (this generation)") == 3


def test_the_experiment_is_listed(finished):
    _, job_id = finished
    at = open_app("experiments")
    job = shared_store().get_job(job_id)
    table = at.dataframe[0].value
    row = table[table["id"] == job.experiment_id].iloc[0]
    assert row["kind"] == "finetune" and row["status"] == "completed" and row["strategy"] == "entropy"
    assert row["pruning_ratio"] == pytest.approx(14 / 48, abs=1e-4)
    assert row["perplexity"] == pytest.approx(job.result["perplexity_after"])
    at.selectbox(key="experiments_pick").set_value(job.experiment_id).run()
    assert_clean(at)
    pruned = at.dataframe[1].value
    assert len(pruned) == 14 and set(pruned["mode"]) == {"mask"}


def test_save_a_pruned_model_and_load_it_again(app_home):
    at = open_app("prune")
    at.button(key="prune_go").click().run()
    at.text_input(key="save_name").set_value("entropy-30").run()
    at.button(key="save_go").click().run()
    assert_clean(at)
    folder = app_home / "models" / "entropy-30"
    assert [s.value for s in at.success] == [f"Saved to {folder}. Load it on the Model page under 'Saved pruned "
                                            "model'."]
    at.switch_page("app_pages/model.py").run()
    at.radio(key="model_kind").set_value("saved").run()
    at.selectbox(key="model_saved").set_value(str(folder)).run()
    at.button(key="model_load").click().run()
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Active heads (as loaded)"] == "34 / 48"
    assert dashboard(at).working.status() == {k: "masked" for k in dashboard(at).working.status()}
    assert len(dashboard(at).working.status()) == 14


def test_bad_save_name_is_refused():
    at = open_app("prune")
    at.text_input(key="save_name").set_value("../outside").run()
    assert_clean(at)
    assert errors(at)[0].startswith("Could not finish checking the name: '../outside' is not a usable name")


def test_loss_impact_on_request_with_progress():
    at = open_app("head_maps")
    at.segmented_control(key="map_metric").set_value("loss_impact").run()
    at.button(key="loss_impact_run").click().run()
    assert_clean(at)
    scores = dashboard(at).caches["maps"][1].scores["loss_impact"].values
    assert scores.shape == (6, 8) and bool(torch.isfinite(scores).all())
    assert len(at.get("vega_lite_chart")) == 1


def test_an_interrupted_job_is_shown_with_resume():
    store = shared_store()
    experiment = store.create_experiment("interrupted run", {"base_model": None}, kind="finetune")
    job_id = store.create_job("finetune", {"config": {"max_steps": 10}}, "cpu", experiment)
    store.set_job_state(job_id, "running")
    store.update_job_progress(job_id, {"step": 3, "total_steps": 10})
    store.set_job_state(job_id, "interrupted", error="The process running this job stopped before it finished.")
    at = open_app("finetune", query={"job": job_id})
    assert [w.value for w in at.warning] == ["The job was interrupted at step 3; its last checkpoint is kept."]
    assert at.button(key="finetune_resume").label == "Resume"
    assert at.progress[0].value == 30
