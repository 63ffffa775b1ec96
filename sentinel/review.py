"""A review a stakeholder can sign: a base model and pruned models measured side by side, judged against the
reviewer's thresholds, written as one self-contained HTML file (no network needed to open it, printable).

Every number is measured here, with the same functions as `sentinel evaluate` (perplexity on each model's own
held-out text, `sentinel.evaluation.own_text.text_perplexity`, with its bootstrap interval) and the dashboard's
speed verdict (`interleaved_speed`: models timed in turns, median of per-round ratios with their range).
"""

from __future__ import annotations

import hashlib
import html
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from sentinel.data import evaluation_text
from sentinel.errors import DataError, InvalidOutputError
from sentinel.evaluation.own_text import text_perplexity
from sentinel.evaluation.paired import FLOPS_CONTEXT, SpeedRatio, interleaved_speed
from sentinel.evaluation.size import parameter_count, weight_bytes
from sentinel.evaluation.tasks import TaskResult, TaskSelection, evaluate_tasks
from sentinel.files import check_new_file, write_file_atomically
from sentinel.generation import generate_text
from sentinel.models.flops import forward_flops
from sentinel.models.loading import pruning_record
from sentinel.textdiff import word_diff_html

logger = logging.getLogger(__name__)

REPORT_MARKER = '<meta name="generator" content="sentinel-review">'   # a file Sentinel may overwrite
REVIEW_NEW_TOKENS = 32
Status = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class ReviewCriteria:
    """The reviewer's thresholds. Perplexity may rise by at most `max_perplexity_increase` (0.05 = 5%); parameters
    must shrink by at least `min_size_reduction` (0.2 = 20%); prefill must be `min_speedup`× faster (None: no
    speed requirement)."""

    max_perplexity_increase: float = 0.05
    min_size_reduction: float = 0.0
    min_speedup: float | None = None

    def validate(self) -> None:
        if not 0 <= self.max_perplexity_increase <= 10:
            raise DataError(f"The allowed perplexity increase must be between 0 and 10 (0.05 = 5%), got "
                            f"{self.max_perplexity_increase}.")
        if not 0 <= self.min_size_reduction < 1:
            raise DataError(f"The required size reduction must be in [0, 1) (0.2 = 20%), got {self.min_size_reduction}.")
        if self.min_speedup is not None and not 0 < self.min_speedup <= 100:
            raise DataError(f"The required speed-up must be a ratio above 0 (1.2 = 20% faster), got {self.min_speedup}.")


@dataclass(frozen=True)
class Criterion:
    """One line of the verdict: what was required, what was measured (with its spread) and whether it passed."""

    name: str
    required: str
    measured: str
    status: Status


@dataclass
class ModelFacts:
    """One model as measured for the review."""

    label: str
    name: str                       # a model name, never a server path
    weights_sha256: str
    parameters: int
    weight_bytes: int
    flops_per_token: int
    perplexity: float
    ci_low: float | None
    ci_high: float | None
    tokens: int
    window: int
    text: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    generations: list[str] = field(default_factory=list)
    tasks: list[TaskResult] = field(default_factory=list)     # lm-eval task accuracy, when tasks were asked for


@dataclass
class ModelVerdict:
    """A pruned model against the base: the criteria and their overall outcome."""

    label: str
    criteria: list[Criterion]
    prefill: SpeedRatio | None
    decode: SpeedRatio | None

    @property
    def status(self) -> Status:
        """'fail' if any criterion fails, else 'inconclusive' if any could not be judged, else 'pass'."""
        states = {c.status for c in self.criteria}
        return "fail" if "fail" in states else ("inconclusive" if "inconclusive" in states else "pass")

    def headline(self) -> str:
        words = {"pass": "meets every criterion", "fail": "does not meet the criteria",
                 "inconclusive": "cannot be judged yet on every criterion"}
        return f"{self.label} {words[self.status]}."


@dataclass
class Review:
    """The base, the pruned models, their verdicts and how everything was measured."""

    base: ModelFacts
    models: list[ModelFacts]
    verdicts: list[ModelVerdict]
    criteria: ReviewCriteria
    prompts: list[str]
    speed_rounds: int
    speed_setup: str
    created: str
    task_limit: int | None = None


    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for verdict, entry in zip(self.verdicts, data["verdicts"]):
            entry["status"] = verdict.status
        return data


@dataclass(frozen=True)
class ReviewSubject:
    """A model to review: in memory (the dashboard's session) or loaded from a folder (the CLI)."""

    label: str
    name: str
    model: nn.Module
    tokenizer: Any
    source: str | None = None       # the folder it came from: decides its held-out text


def weights_digest(model: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes and bytes, in name order): the same weights give the
    same digest whether in memory or loaded from a folder."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def measure_subject(subject: ReviewSubject, prompts: Sequence[str], new_tokens: int = REVIEW_NEW_TOKENS,
                    tasks: TaskSelection | None = None, task_limit: int | None = None) -> ModelFacts:
    """Size, FLOPs, perplexity with its interval, the pruning steps and greedy generations of one model, and its
    task accuracy when `tasks` are given."""
    text = evaluation_text(subject.source or getattr(subject.model.config, "name_or_path", None) or None)
    ppl = text_perplexity(subject.model, subject.tokenizer, text)
    generations = [generate_text(subject.model, subject.tokenizer, p, max_new_tokens=new_tokens, greedy=True).text
                   for p in prompts]
    return ModelFacts(subject.label, subject.name, weights_digest(subject.model), parameter_count(subject.model),
                      weight_bytes(subject.model), forward_flops(subject.model, FLOPS_CONTEXT, lm_head=True),
                      ppl.perplexity, ppl.ci_low, ppl.ci_high, ppl.tokens_evaluated, ppl.window_length, text.name,
                      list(pruning_record(subject.model).get("history", [])), generations,
                      evaluate_tasks(subject.model, subject.tokenizer, tasks, limit=task_limit) if tasks else [])


def judge(base: ModelFacts, model: ModelFacts, criteria: ReviewCriteria, prefill: SpeedRatio | None,
          decode: SpeedRatio | None) -> ModelVerdict:
    """The criteria for one pruned model against the base."""
    rise = model.perplexity / base.perplexity - 1
    spread = f" (95% CI {model.ci_low:.4g}–{model.ci_high:.4g})" if model.ci_low is not None else ""
    items = [Criterion("Perplexity", f"at most +{criteria.max_perplexity_increase:.1%} (≤ "
                                     f"{base.perplexity * (1 + criteria.max_perplexity_increase):.4g})",
                       f"{model.perplexity:.4g}{spread}, {rise:+.1%} against {base.perplexity:.4g}",
                       "pass" if rise <= criteria.max_perplexity_increase else "fail")]
    smaller = 1 - model.parameters / base.parameters
    items.append(Criterion("Size", f"at least {criteria.min_size_reduction:.1%} fewer parameters",
                           f"{model.parameters:,} parameters, {smaller:.1%} fewer ({model.weight_bytes / 1e6:.1f} MB)",
                           "pass" if smaller >= criteria.min_size_reduction else "fail"))
    if criteria.min_speedup is not None:
        if prefill is None:
            items.append(Criterion("Speed", f"prefill at least {criteria.min_speedup:.2f}× faster", "not measured",
                                   "inconclusive"))
        else:
            # every pair at or above the requirement: pass; every pair below: fail; straddling it: not yet known
            status: Status = ("inconclusive" if prefill.noisy or prefill.pairs < 2 else
                              "pass" if prefill.low >= criteria.min_speedup else
                              "fail" if prefill.high < criteria.min_speedup else "inconclusive")
            items.append(Criterion("Speed", f"prefill at least {criteria.min_speedup:.2f}× faster in every pair",
                                   prefill.describe(), status))
    return ModelVerdict(model.label, items, prefill, decode)


def build_review(base: ReviewSubject, models: Sequence[ReviewSubject], criteria: ReviewCriteria,
                 prompts: Sequence[str], speed_rounds: int = 5, prompt_tokens: int = 64, new_tokens: int = 32,
                 report: Callable[[str], None] | None = None, tasks: TaskSelection | None = None,
                 task_limit: int | None = None) -> Review:
    """Measure the base and every pruned model, time them in turns and judge each against `criteria`; with
    `tasks` (see `sentinel.evaluation.tasks.select_tasks`) each model's task accuracy is shown beside perplexity."""
    criteria.validate()
    if not models:
        raise DataError("A review needs at least one pruned model besides the base; give --model.")
    if not prompts:
        raise DataError("A review needs at least one prompt for the before/after generations.")
    labels = [base.label, *(m.label for m in models)]
    if len(set(labels)) != len(labels):
        raise DataError(f"Each model in a review needs its own label; got {labels}.")
    tell = report or (lambda message: None)
    facts = []
    for subject in (base, *models):
        tell(f"Measuring {subject.label}")
        facts.append(measure_subject(subject, prompts, tasks=tasks, task_limit=task_limit))
    speed = None
    if speed_rounds > 0:
        tell(f"Timing the models in turns ({speed_rounds} rounds)")
        speed = interleaved_speed({s.label: s.model for s in (base, *models)},
                                  tokenizers={s.label: s.tokenizer for s in (base, *models)},
                                  repeats=speed_rounds, prompt_tokens=prompt_tokens, new_tokens=new_tokens)
    verdicts = [judge(facts[0], fact, criteria, speed.ratio(fact.label, "prefill") if speed else None,
                      speed.ratio(fact.label, "decode") if speed else None) for fact in facts[1:]]
    setup = (f"{speed_rounds} interleaved rounds, {prompt_tokens} prompt tokens then {new_tokens} generated, "
             f"{speed.threads} CPU threads" if speed else "not timed")
    return Review(facts[0], facts[1:], verdicts, criteria, list(prompts), speed_rounds, setup,
                  datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), task_limit if tasks else None)


# -- HTML ---------------------------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;
color:#1b1b1b;line-height:1.45}h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;margin:.6em 0}th,td{border:1px solid #ccc;padding:.35em .5em;text-align:left;
vertical-align:top}th{background:#f3f3f3}.pass{color:#0a6b2b;font-weight:600}.fail{color:#a31515;font-weight:600}
.inconclusive{color:#8a5a00;font-weight:600}mark{background:#ffe08a}.verdict{font-size:1.15em;padding:.6em;
border-left:6px solid #999;background:#fafafa;margin:.5em 0}.verdict.pass{border-color:#0a6b2b}
.verdict.fail{border-color:#a31515}.verdict.inconclusive{border-color:#d99a00}code{background:#f3f3f3;padding:0 .2em}
.small{color:#555;font-size:.9em}@media print{body{margin:0}h2{page-break-after:avoid}}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _bars(rows: list[tuple[str, float, float | None, float | None]], unit: str) -> str:
    """An inline SVG bar chart (value with its interval as an error bar) — no script, no network."""
    top = max((hi if hi is not None else v) for _, v, _, hi in rows) * 1.15 or 1.0
    width, bar, gap, left = 640, 26, 12, 190
    height = len(rows) * (bar + gap) + gap
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{_e(unit)}">']
    for index, (label, value, low, high) in enumerate(rows):
        y = gap + index * (bar + gap)
        length = (width - left - 80) * value / top
        parts.append(f'<text x="0" y="{y + bar * 0.7}" font-size="13">{_e(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{bar}" fill="{"#7b8fa6" if index else "#4a5d73"}"/>')
        if low is not None and high is not None:
            x0, x1 = left + (width - left - 80) * low / top, left + (width - left - 80) * high / top
            parts.append(f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{y + bar / 2}" y2="{y + bar / 2}" stroke="#111" '
                         'stroke-width="2"/>')
        parts.append(f'<text x="{left + length + 6:.1f}" y="{y + bar * 0.7}" font-size="12">{value:.4g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _steps(facts: ModelFacts) -> str:
    if not facts.steps:
        return "<p>No pruning steps recorded: this model is as loaded.</p>"
    items = []
    for step in facts.steps:
        detail = ", ".join(f"{k} {v}" for k, v in step.items() if k != "op")
        items.append(f"<li><code>{_e(step.get('op', 'step'))}</code> {_e(detail)}</li>")
    return "<ol>" + "".join(items) + "</ol>"


def _task_table(models: list[ModelFacts], limit: int | None) -> str:
    """Task accuracy of every model, metric by metric, with its standard error and the change against the base."""
    base = {(t.task, t.metric): t for t in models[0].tasks}
    head = "".join(f"<th>{_e(m.label)}</th>" for m in models)
    rows = []
    for key, reference in base.items():
        cells = []
        for m in models:
            mine = {(t.task, t.metric): t for t in m.tasks}.get(key)
            change = f", {mine.value - reference.value:+.3f}" if mine is not None and m is not models[0] else ""
            cells.append(f"<td>{_e(mine.text() + change) if mine is not None else 'not measured'}</td>")
        rows.append(f"<tr><td>{_e(key[0])}</td><td>{_e(key[1])}</td>{''.join(cells)}</tr>")
    scope = f"the first {limit} documents of each task" if limit else "every document of each task"
    return ("<h2>Task accuracy</h2><p>lm-evaluation-harness run on each model as it is in memory, on "
            f"{_e(scope)}; ± is the standard error, the signed number the change against the base. Bundled "
            "next-sentence tasks have four choices: chance is 0.25.</p>"
            f"<table><tr><th>Task</th><th>Metric</th>{head}</tr>{''.join(rows)}</table>")


def render_html(review: Review) -> str:
    """The review as one self-contained HTML page (inline CSS and SVG)."""
    base, out = review.base, []
    out.append(f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>{REPORT_MARKER}"
               f"<title>Pruning review: {_e(base.name)}</title><style>{_STYLE}</style></head><body>")
    out.append(f"<h1>Pruning review of {_e(base.name)}</h1><p class='small'>Written by Sentinel on {_e(review.created)}. "
               "Every number below was measured for this report; none is copied from elsewhere.</p>")
    out.append("<h2>Verdict</h2>")
    for verdict in review.verdicts:
        out.append(f"<div class='verdict {verdict.status}'>{_e(verdict.headline())}</div>")
        out.append("<table><tr><th>Criterion</th><th>Required</th><th>Measured</th><th>Result</th></tr>")
        for c in verdict.criteria:
            out.append(f"<tr><td>{_e(c.name)}</td><td>{_e(c.required)}</td><td>{_e(c.measured)}</td>"
                       f"<td class='{c.status}'>{_e(c.status)}</td></tr>")
        out.append("</table>")
    models = [base, *review.models]
    out.append("<h2>What perplexity means here</h2><p>Perplexity is how surprised the model is by held-out text it "
               "never trained on: lower is better, and a rise of a few percent is usually invisible in generated "
               f"text while a doubling is not. Each model is scored on {_e(base.text)}, every token once, in windows "
               f"of {base.window} tokens; the interval is a 95% bootstrap over those windows.</p>")
    out.append(_bars([(m.label, m.perplexity, m.ci_low, m.ci_high) for m in models], "perplexity"))
    if base.tasks:
        out.append(_task_table(models, review.task_limit))
    out.append("<h2>Size, compute and speed</h2><table><tr><th>Model</th><th>Parameters</th><th>Weights</th>"
               f"<th>FLOPs per token (context {FLOPS_CONTEXT})</th><th>Prefill speed</th><th>Generation speed</th></tr>")
    speeds = {v.label: v for v in review.verdicts}
    for m in models:
        verdict = speeds.get(m.label)
        prefill = verdict.prefill.describe() if verdict and verdict.prefill else ("reference" if m is base else "not timed")
        decode = verdict.decode.describe() if verdict and verdict.decode else ("reference" if m is base else "not timed")
        out.append(f"<tr><td>{_e(m.label)}</td><td>{m.parameters:,}</td><td>{m.weight_bytes / 1e6:.1f} MB</td>"
                   f"<td>{m.flops_per_token:,}</td><td>{_e(prefill)}</td><td>{_e(decode)}</td></tr>")
    out.append(f"</table><p class='small'>Speed: {_e(review.speed_setup)}; each ratio is the median over rounds "
               "with the lowest and highest round; a range covering 1.00× means no measurable difference, and a "
               "range wider than 2× is too noisy to conclude.</p>")
    out.append("<h2>Generated text, before and after</h2><p class='small'>Greedy decoding of the same prompts; "
               "words that differ from the base model's are highlighted.</p>")
    for index, prompt in enumerate(review.prompts):
        out.append(f"<table><tr><th colspan='2'>Prompt: {_e(prompt)}</th></tr>")
        reference = base.generations[index]
        out.append(f"<tr><td>{_e(base.label)}</td><td>{_e(reference)}</td></tr>")
        for m in review.models:
            out.append(f"<tr><td>{_e(m.label)}</td><td>{word_diff_html(reference, m.generations[index])}</td></tr>")
        out.append("</table>")
    out.append("<h2>What was done</h2>")
    for m in review.models:
        out.append(f"<h3>{_e(m.label)} ({_e(m.name)})</h3>{_steps(m)}")
    out.append("<h2>How to reproduce</h2><table><tr><th>Model</th><th>Name</th><th>Weights sha256</th></tr>")
    for m in models:
        out.append(f"<tr><td>{_e(m.label)}</td><td>{_e(m.name)}</td><td><code>{m.weights_sha256}</code></td></tr>")
    flags = (f"--max-perplexity-increase {review.criteria.max_perplexity_increase:g} --min-size-reduction "
             f"{review.criteria.min_size_reduction:g}" + (f" --min-speedup {review.criteria.min_speedup:g}"
                                                          if review.criteria.min_speedup is not None else ""))
    names = " ".join(f"--model {_e(m.name)}" for m in review.models)
    out.append(f"</table><p>Each perplexity: <code>sentinel evaluate MODEL</code> prints the same number. This "
               f"report: <code>sentinel report --base {_e(base.name)} {names} {flags} --out report.html</code>.</p>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(review: Review, path: str | Path, overwrite: bool = False) -> Path:
    """Write the HTML atomically. An existing file is replaced only with `overwrite` and only when Sentinel
    wrote it (it carries REPORT_MARKER); anything else is left alone."""
    target = check_new_file(path, overwrite=overwrite)
    if target.exists():
        head = target.read_bytes()[:4096].decode("utf-8", errors="replace")
        if REPORT_MARKER not in head:
            raise InvalidOutputError(f"{target} exists and is not a Sentinel review; Sentinel does not overwrite "
                                     "files it did not write. Choose another name.")
    write_file_atomically(target, render_html(review))
    logger.info("Wrote the review to %s", target)
    return target
