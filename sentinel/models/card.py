"""The model card (README.md) Sentinel writes into every folder it saves or exports.

Hugging Face model-card metadata (front matter) plus what was pruned, read from the pruning record, and
only the metrics a caller measured and passed in (with their protocol): a card never invents a number.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

CARD_FILE = "README.md"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_base_model(candidates: list[Any]) -> str | None:
    """The first candidate that is a hub id (owner/name) rather than a local folder, or None."""
    for value in candidates:
        if isinstance(value, str) and _HUB_ID.match(value) and not Path(value).exists():
            return value
    return None


def _yaml_value(value: Any) -> str:
    return json.dumps(value)    # a JSON string or list is valid YAML flow syntax


def pruning_summary(record: dict[str, Any]) -> list[str]:
    """Plain-language lines saying what was removed or masked, from a `pruning_record`."""
    layers, heads = record.get("num_layers", 0), record.get("num_heads", 0)
    kept = record.get("kept", {})
    removed_blocks = record.get("layers", {}).get("removed_blocks", [])
    remaining = [layer for layer in range(layers) if layer not in removed_blocks]
    heads_left = sum(len(kept.get(str(layer), [])) for layer in remaining)
    lines = []
    if heads_left < len(remaining) * heads:
        lines.append(f"Attention heads removed: {len(remaining) * heads - heads_left} of {len(remaining) * heads} "
                     "(in blocks that remain).")
    masked = sum(len(v) for v in record.get("masked", {}).values())
    if masked:
        lines.append(f"Attention heads masked (still in the weights, switched off): {masked}.")
    neurons = record.get("neurons", {})
    gone = sum(len(v) for v in neurons.get("removed", {}).values())
    if gone:
        lines.append(f"MLP neurons removed: {gone} of {len(remaining) * record.get('num_neurons', 0)} "
                     "(in blocks that remain).")
    masked_n = sum(len(v) for v in neurons.get("masked", {}).values())
    if masked_n:
        lines.append(f"MLP neurons masked: {masked_n}.")
    if removed_blocks:
        lines.append(f"Blocks removed: {len(removed_blocks)} of {layers} (original layers {removed_blocks}).")
    parts = record.get("layers", {}).get("removed_parts", {})
    if parts:
        lines.append("Parts removed: " + "; ".join(f"layer {k}: {', '.join(v)}" for k, v in parts.items()) + ".")
    sparse = record.get("weight_sparsity", {})
    if sparse:
        share = sum(e["sparsity"] for e in sparse.values()) / len(sparse)
        patterns = sorted({str(e.get("pattern", "unstructured")) for e in sparse.values()})
        methods = sorted({str(e.get("method", "?")) for e in sparse.values()})
        lines.append(f"Weight sparsity: {len(sparse)} matrices, mean {share:.1%} zeros "
                     f"(pattern {', '.join(patterns)}; method {', '.join(methods)}); the zeros are kept as masks "
                     "when Sentinel fine-tunes the model.")
    return lines or ["Nothing was pruned: the model has its original shapes."]


def render_model_card(record: dict[str, Any], *, is_causal: bool, base_model: str | None = None,
                      metrics: dict[str, dict[str, Any]] | None = None, fmt: str = "transformers") -> str:
    """The card's Markdown. `metrics`: {name: {"value": ..., "protocol": "..."}} as measured by the caller (a note's `measured_metrics`)."""
    front = ["---", f"library_name: {'transformers' if fmt == 'transformers' else fmt}",
             f"pipeline_tag: {'text-generation' if is_causal else 'fill-mask'}",
             f"tags: {_yaml_value(['pruned', 'sentinel'])}"]
    if base_model:
        front.append(f"base_model: {_yaml_value(base_model)}")
    front.append("---")
    family = record.get("family", "?")
    body = ["", f"# Pruned {family} model", "",
            f"Written by Sentinel ({fmt} format) from "
            + (f"`{base_model}`." if base_model else "a model given as a local folder."), "",
            "## What was pruned", ""]
    body += [f"- {line}" for line in pruning_summary(record)]
    steps = record.get("history", [])
    if steps:
        body.append(f"- Steps recorded: {len(steps)} (see `sentinel_pruning.json`).")
    body += ["", "## Measured metrics", ""]
    if metrics:
        body += ["| metric | value | protocol |", "| --- | --- | --- |"]
        body += [f"| {name} | {m.get('value')} | {m.get('protocol', 'not stated')} |" for name, m in metrics.items()]
    else:
        body.append("None were measured when this folder was written; `sentinel evaluate --model <this folder>` "
                    "measures perplexity and speed.")
    body += ["", "Units are named by their original indices; `sentinel.load_model` reads `sentinel_pruning.json` "
             "to rebuild the pruned shapes.", ""]
    return "\n".join(front + body)


def write_model_card(folder: Path, model: Any, record: dict[str, Any], note: dict[str, Any] | None = None,
                     fmt: str = "transformers") -> Path:
    """Write README.md into `folder` (a staging folder of Sentinel's own) for `model` and its pruning `record`."""
    from sentinel.models.state import model_state

    notes = note or {}
    base = hub_base_model([notes.get("base_model"), notes.get("source"), notes.get("exported_from"),
                           getattr(model.config, "name_or_path", None)])
    card = render_model_card(record, is_causal=model_state(model).layout().is_causal, base_model=base,
                             metrics=notes.get("measured_metrics"), fmt=fmt)
    path = Path(folder) / CARD_FILE
    path.write_text(card, encoding="utf-8")
    return path
