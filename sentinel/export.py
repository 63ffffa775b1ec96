"""Export a pruned model as a stock Hugging Face checkpoint that plain transformers loads.

The exported config is derived from the model's actual module shapes (query and K/V heads, MLP width
per block, number of blocks), so any pruning that leaves uniform shapes can be exported. Masked units
are removed first. Families differ in what their config can say:

- Llama / Mistral / Qwen2 keep `head_dim` in the config, so uniform head and K/V head counts export. The
  installed LlamaConfig may still insist that hidden size is a multiple of the head count (transformers 5
  does, whatever `head_dim` says); such a Llama without biases is written as the identical Mistral
  architecture (`MistralForCausalLM`, same weight names and math), otherwise refused;
- GPT-2, OPT, BERT/RoBERTa, GPT-NeoX, GPT-J, Phi and Falcon derive head size from hidden size / heads, so
  they export a uniform MLP width and removed blocks, but not removed heads.

Per-layer shapes would need `per_layer_config`; whether the installed transformers builds a family's
modules from it is probed at run time (it did not for these families in transformers 5.24).
`sentinel_pruning.json` is written beside the checkpoint, so `sentinel.load_model` keeps original indices.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import torch
import transformers
from torch import nn
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import PreTrainedTokenizerBase

from sentinel.errors import SentinelError
from sentinel.models import save_model
from sentinel.models.blocks import BlockShape, block_shapes, mlp_output_projection, model_blocks
from sentinel.models.heads import model_heads
from sentinel.models.loading import _model_class
from sentinel.pruning.masks import gate_scales, masked_heads
from sentinel.pruning.removal import remove_heads

logger = logging.getLogger(__name__)


class ExportError(SentinelError):
    """The pruned shapes cannot be written as the family's stock config.

    `reason` is the same refusal as one short plain clause (no settings, versions or class names), for a
    dashboard control that is switched off before anything is written; the message keeps the full detail.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message.rstrip(".")


@dataclass(frozen=True)
class StockKeys:
    """The config keys a family's stock modeling code builds its shapes from."""

    layers: str                          # number of blocks
    mlp_width: str                       # MLP intermediate width
    heads: str | None = None             # query heads, when the config keeps head size fixed (else: not exportable)
    kv_heads: str | None = None          # key/value heads (grouped-query attention)
    head_dim: str | None = None          # written explicitly so fewer heads keep their size
    per_layer_lists: tuple[str, ...] = ()  # config lists with one entry per block
    derived_head_size: str = ""          # how the family derives head size, for the error message


STOCK_KEYS: dict[str, StockKeys] = {
    "gpt2": StockKeys("n_layer", "n_inner", derived_head_size="n_embd / n_head"),
    "opt": StockKeys("num_hidden_layers", "ffn_dim", derived_head_size="hidden_size / num_attention_heads"),
    "bert": StockKeys("num_hidden_layers", "intermediate_size", derived_head_size="hidden_size / num_attention_heads"),
    "gpt_neox": StockKeys("num_hidden_layers", "intermediate_size",
                          derived_head_size="hidden_size / num_attention_heads"),
    "gptj": StockKeys("n_layer", "n_inner", derived_head_size="n_embd / n_head"),
    "phi": StockKeys("num_hidden_layers", "intermediate_size", derived_head_size="hidden_size / num_attention_heads"),
    "falcon": StockKeys("num_hidden_layers", "ffn_hidden_size", derived_head_size="hidden_size / num_attention_heads"),
    "llama": StockKeys("num_hidden_layers", "intermediate_size", "num_attention_heads", "num_key_value_heads",
                       "head_dim", per_layer_lists=("layer_types",)),
}


@dataclass
class ExportResult:
    """What export wrote and how the stock config differs from the original one."""

    path: str
    family: str
    model_type: str
    model_class: str
    blocks: int
    heads: int
    kv_heads: int
    mlp_width: int
    config_changes: dict[str, list[Any]]          # key: [original, exported]
    masked_removed: dict[str, list[int]]           # masked heads removed before export, original indices
    per_layer_config: dict[str, Any]               # {"supported": bool, "detail": str}
    verified_max_abs_diff: float | None = None     # logits of the reloaded stock model vs the Sentinel model
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None,
    path: str | os.PathLike,
    note: dict | None = None,
    verify: bool = True,
) -> ExportResult:
    """Write `model` as a stock Hugging Face folder (config, safetensors, tokenizer) plus the Sentinel record.

    Works on a copy: the caller's model keeps its masks. Raises ExportError when the shapes are not
    expressible in the family's config. With `verify`, the folder is reloaded with plain transformers
    and its logits compared with the Sentinel model's.
    """
    work, masked, notes = _unmasked_copy(model)
    stock, summary = stock_config(work)
    notes.extend(summary["notes"])
    if not getattr(stock, "architectures", None):   # lets Auto classes and pipelines pick the right head
        stock.architectures = [type(work).__name__]
    export_note = {"export": {"config_changes": summary["changes"]}, **(note or {})}
    target = save_model(work, tokenizer, path, note=export_note, config=stock)
    result = ExportResult(
        path=str(target), family=summary["family"], model_type=stock.model_type,
        model_class=_model_class(stock).__name__,
        blocks=summary["blocks"], heads=summary["heads"], kv_heads=summary["kv_heads"], mlp_width=summary["mlp_width"],
        config_changes=summary["changes"], masked_removed={str(k): v for k, v in masked.items()},
        per_layer_config=summary["per_layer_config"], notes=notes,
    )
    if verify:
        result.verified_max_abs_diff = verify_export(work, target)
    return result


def _unmasked_copy(model: nn.Module) -> tuple[nn.Module, dict[int, list[int]], list[str]]:
    """A copy of `model` with its masked heads removed (a stock checkpoint has no masks), the heads removed and a
    note saying so; ExportError while heads are fading in."""
    if gate_scales(model):
        raise ExportError("Some heads are still fading in (fractional gate scales); a stock checkpoint cannot hold "
                          "a scale. Finish the growth (scale 1) or mask those heads, then export.",
                          reason="some heads are still fading in, and a stock checkpoint cannot hold a partial head "
                                 "(finish the growth first)")
    work = copy.deepcopy(model)
    masked = masked_heads(work)
    notes: list[str] = []
    if masked:
        count = sum(len(v) for v in masked.values())
        remove_heads(work, masked, note={"how": "export", "reason": "masked heads are removed before export"})
        notes.append(f"removed {count} masked heads first (a stock checkpoint has no masks)")
        logger.warning("Export: removed %d masked heads first (a stock checkpoint has no masks).", count)
    return work, masked, notes


def check_exportable(model: nn.Module) -> None:
    """Raise the ExportError `export_model` would raise for `model`'s shapes, without writing anything (it checks
    a copy with its masked heads removed, as export does; the model itself is not changed)."""
    work, _, _ = _unmasked_copy(model)
    stock_config(work)


def stock_config(model: nn.Module) -> tuple[Any, dict[str, Any]]:
    """The family's stock config for the model's current shapes, and a summary; ExportError if inexpressible."""
    heads = model_heads(model)
    family = heads.adapter.family
    keys = STOCK_KEYS.get(family)
    if keys is None:
        raise ExportError(f"Export does not know the {family} family's config keys; nothing was written.",
                          reason=f"Sentinel cannot write a stock checkpoint of the {family} family yet")
    shapes = block_shapes(model)
    if not shapes:
        raise ExportError("The model has no transformer blocks left; there is nothing to export.",
                          reason="the model has no transformer blocks left")
    original = model.config
    support = per_layer_config_support(type(original), family)
    found = _inexpressible(heads.num_heads, shapes, keys, family, original.model_type)
    problems = [detail for detail, _ in found]
    if problems:
        per_layer = ("the installed transformers "
                     f"{transformers.__version__} {'does' if support['supported'] else 'does not'} build "
                     f"{original.model_type} modules from per_layer_config ({support['detail']})")
        if support["supported"]:
            per_layer += ", but Sentinel does not write per-layer configs yet"
        raise ExportError(f"Cannot export as a stock {original.model_type} checkpoint: " + "; ".join(problems)
                          + f". Per-layer shapes: {per_layer}. The model still saves and reloads with "
                          "sentinel.save_model / sentinel.load_model.",
                          reason=found[0][1])          # the first problem alone: one plain clause
    first = shapes[0]
    values: dict[str, Any] = {keys.layers: len(shapes), keys.mlp_width: first.mlp_width}
    if keys.heads is not None:
        values[keys.heads] = first.heads
        values[keys.kv_heads] = first.kv_heads
        values[keys.head_dim] = heads.head_dim
    for name in keys.per_layer_lists:
        values.update(_per_layer_list(model, heads, name, len(shapes)))
    stock = copy.deepcopy(original)
    changes: dict[str, list[Any]] = {}
    for key, value in values.items():
        before = getattr(original, key, None)
        if before != value:
            changes[key] = [before, value]
        setattr(stock, key, value)
    stock, rewritten = _validated(stock)
    if rewritten:
        changes["model_type"] = [original.model_type, stock.model_type]
    summary = {"family": family, "blocks": len(shapes), "heads": first.heads, "kv_heads": first.kv_heads,
               "mlp_width": first.mlp_width, "changes": changes, "per_layer_config": support,
               "notes": [rewritten] if rewritten else []}
    return stock, summary


# Llama config keys Mistral has no counterpart for, and the value under which Llama's code equals Mistral's.
_LLAMA_ONLY_KEYS = {"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1}


def _validated(stock: Any) -> tuple[Any, str]:
    """`stock` if the installed transformers accepts it, else an equivalent Mistral config and why; else ExportError.

    transformers 5's LlamaConfig refuses hidden_size % num_attention_heads != 0 even when `head_dim` is given,
    while MistralConfig (the same modeling code without Llama's bias and tensor-parallel options) takes it.
    """
    try:
        stock.validate()
        return stock, ""
    except (StrictDataclassClassValidationError, ValueError) as err:
        reason = _first_line(getattr(err, "__cause__", None) or err)
    blocking = {k: getattr(stock, k, None) for k, ok in _LLAMA_ONLY_KEYS.items()
                if getattr(stock, k, ok) not in (ok, None)}
    if stock.model_type != "llama" or blocking:
        why = (f"and its {', '.join(f'{k}={v}' for k, v in blocking.items())} rules out writing it as the "
               "equivalent Mistral architecture" if blocking else "and no equivalent stock architecture is known")
        raise ExportError(f"The installed transformers {transformers.__version__} refuses this "
                          f"{stock.model_type} config ({reason}), {why}; keep a head count that divides "
                          f"hidden_size {stock.hidden_size}, or keep the Sentinel format.",
                          reason=f"plain transformers cannot build a {stock.model_type} model with these head counts "
                                 "(keep a head count that divides the hidden size)")
    from transformers import MistralConfig

    fields = {k: v for k, v in stock.to_dict().items() if k not in _LLAMA_ONLY_KEYS
              and k not in ("model_type", "architectures", "transformers_version")}
    mistral = MistralConfig(**{**fields, "sliding_window": None, "architectures": ["MistralForCausalLM"]})
    if getattr(stock, "_attn_implementation", None):
        mistral._attn_implementation = stock._attn_implementation
    note = (f"written as MistralForCausalLM (same weights and math): the installed transformers "
            f"{transformers.__version__} refuses a llama config with {reason[0].lower() + reason[1:]}")
    logger.warning("Export: %s", note)
    return mistral, note


def _first_line(err: BaseException) -> str:
    """The first sentence of an error's message, without the trailing period."""
    return str(err).strip().splitlines()[0].rstrip(".")


def _inexpressible(num_heads: int, shapes: list[BlockShape], keys: StockKeys, family: str,
                   model_type: str) -> list[tuple[str, str]]:
    """Why the shapes cannot be one stock config, as (detail, short) pairs: the detail names the blocks concerned
    and what would fix it; the short clause says the same in plain words (`ExportError.reason`)."""
    problems = []
    if keys.heads is None:
        cut = [f"{s.layer} ({s.heads} of {num_heads})" for s in shapes if s.heads != num_heads]
        if cut:
            problems.append((
                f"blocks {', '.join(cut)} lost attention heads, and {family} derives head size from "
                f"{keys.derived_head_size}, so its config cannot express removed heads; export needs all "
                f"{num_heads} heads in every block (prune MLP neurons or whole layers for this family, or "
                "keep the Sentinel format)",
                f"a stock {model_type} checkpoint needs all {num_heads} attention heads in every layer and "
                f"{_blocks(len(cut))} lost some (prune only MLP neurons or whole layers to export)"))
    else:
        empty = [str(s.layer) for s in shapes if s.heads == 0]
        if empty:
            problems.append((f"blocks {', '.join(empty)} have no heads left, which a stock config cannot express; "
                             "keep at least one K/V group per block (--min-heads)",
                             f"{_blocks(len(empty))} {'has' if len(empty) == 1 else 'have'} no attention heads "
                             "left (keep at least one per layer)"))
        counts = {(s.heads, s.kv_heads) for s in shapes}
        if len(counts) > 1:
            listed = ", ".join(f"{s.layer}: {s.heads} heads/{s.kv_heads} K/V" for s in shapes)
            problems.append((f"blocks keep different head counts ({listed}); export needs the same count in every "
                             "block: prune with --scope per_layer (whole K/V groups), or a uniform allocation",
                             "its layers keep different numbers of attention heads and a stock checkpoint needs "
                             "the same number in every layer (rank heads within each layer)"))
    widths = {s.mlp_width for s in shapes}
    if len(widths) > 1:
        listed = ", ".join(f"{s.layer}: {s.mlp_width}" for s in shapes)
        problems.append((f"blocks keep different MLP widths ({listed}); export needs one width in every block: "
                         "prune neurons with a uniform allocation",
                         "its layers keep different MLP widths and a stock checkpoint needs one width in every "
                         "layer (remove the same number of neurons per layer)"))
    return problems


def _blocks(count: int) -> str:
    return "1 layer" if count == 1 else f"{count} layers"


def _per_layer_list(model: nn.Module, heads: Any, name: str, blocks: int) -> dict[str, Any]:
    """A config list with one entry per block, cut to the blocks still present (by their original index)."""
    values = getattr(model.config, name, None)
    if not isinstance(values, list) or len(values) == blocks:
        return {}
    if len(set(values)) == 1:
        return {name: values[:blocks]}
    original = [getattr(attn, "layer_idx", None) for attn in heads.modules]
    if any(i is None or not 0 <= i < len(values) for i in original):
        raise ExportError(f"config.{name} differs between blocks and the remaining blocks' original indices are "
                          "unknown, so it cannot be cut to the blocks kept.",
                          reason="its config lists a setting per layer that cannot be cut to the layers kept")
    return {name: [values[i] for i in original]}


@cache
def per_layer_config_support(config_class: type, family: str) -> dict[str, Any]:
    """Whether the installed transformers builds this family with per-block shapes from `per_layer_config`.

    Probed, not assumed: a two-block model whose block 1 asks for half the MLP width is built on the
    meta device; supported only if block 1 really gets that width.
    """
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    probe = config_class()
    keys = STOCK_KEYS[family]
    width = getattr(probe, keys.mlp_width, None) or 4 * probe.hidden_size
    kwargs = {k: v for k, v in probe.to_dict().items() if k not in keys.per_layer_lists}
    kwargs.update({keys.layers: 2, keys.mlp_width: width, "per_layer_config": {1: {keys.mlp_width: width // 2}}})
    try:
        config = config_class(**kwargs)
        auto = AutoModelForMaskedLM if config.model_type in ("bert", "roberta") else AutoModelForCausalLM
        with torch.device("meta"):
            built = auto.from_config(config)
        heads = model_heads(built)
        got = [mlp_output_projection(heads, b).weight.shape for b in model_blocks(built, heads)]
    except (RuntimeError, ValueError, TypeError, AttributeError, KeyError, StrictDataclassClassValidationError) as err:
        reason = str(err).splitlines()[0].split(". ")[0]
        return {"supported": False, "detail": f"a probe build fails with {type(err).__name__}: {reason}"}
    if len({tuple(s) for s in got}) == 1:
        return {"supported": False, "detail": "the override is accepted but ignored: every block gets the same width"}
    return {"supported": True, "detail": "a probe model got a smaller MLP in block 1"}


def verify_export(model: nn.Module, folder: str | os.PathLike, atol: float = 1e-4) -> float:
    """Reload `folder` with plain transformers and compare its logits with `model`'s; returns the max difference.

    Raises ExportError when weights are missing or unexpected, or the logits differ by more than `atol`
    (scaled by the logits' magnitude; half precision gets a looser bound).
    """
    config = transformers.AutoConfig.from_pretrained(folder)
    cls = _model_class(config)
    param = next(model.parameters())
    attn = getattr(model.config, "_attn_implementation", None)
    kwargs: dict[str, Any] = {"dtype": param.dtype, "output_loading_info": True}
    if attn:
        kwargs["attn_implementation"] = attn
    stock, info = cls.from_pretrained(folder, **kwargs)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        raise ExportError(f"Plain transformers does not load the export at {folder} cleanly ({bad}); "
                          "the shapes were not written as this family expects. Please report this.")
    stock.to(param.device).eval()
    ids = torch.randint(3, min(config.vocab_size, 1000), (2, 8), generator=torch.Generator().manual_seed(0))
    ids = ids.to(param.device)
    with torch.no_grad():
        expected = model(input_ids=ids).logits.float()
        got = stock(input_ids=ids).logits.float()
    diff = float((expected - got).abs().max())
    bound = atol if param.dtype == torch.float32 else 1e-2
    if diff > bound * max(1.0, float(expected.abs().max())):
        raise ExportError(f"The exported model's logits differ from the pruned model's by {diff:.3g}; "
                          f"the checkpoint written at {folder} is not faithful; do not use it, and please "
                          "report this.")
    return diff

