"""The `onnx` export format: a prefill graph traced from the pruned torch modules, run by ONNX Runtime.

The graph is traced from the actual modules, so it carries any per-block shape (different query heads,
K/V groups and MLP widths per block, removed blocks) that no stock config can express. Masked heads and
neurons are removed first. `model.onnx` is the prefill graph `input_ids, attention_mask -> logits`
(encoders without a head: `last_hidden_state`), dynamic batch and sequence axes; causal models also get
`model_with_past.onnx`, which takes and returns the KV cache per block (`past.{i}.key/value` ->
`present.{i}.key/value`, each block with its own K/V head count). The legacy TorchScript exporter (`dynamo=False`) is
used: on transformers 5 GPT-2 and GQA Llama it gives the same logits as `dynamo=True` (both within 2e-7)
and exports 10-20x faster.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from sentinel.export import ExportError
from sentinel.files import replace_folder_atomically
from sentinel.models.card import write_model_card
from sentinel.models.blocks import block_shapes
from sentinel.models.heads import model_heads
from sentinel.models.loading import pruning_record
from sentinel.pruning.masks import gate_scales, masked_heads
from sentinel.pruning.removal import remove_heads
from sentinel.pruning.units import masked_neurons, remove_neurons

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
PAST_FILE = "model_with_past.onnx"     # causal models: the decoding graph with a KV cache
RECORD_FILE = "sentinel_pruning.json"
OPSET = 18
EXTERNAL_DATA_BYTES = 1 << 30          # above this the weights go to model.onnx.data (protobuf's 2 GiB limit)
VERIFY_ATOL = 1e-4                     # fp32; scaled by the logits' magnitude


@dataclass
class OnnxExportResult:
    """What the ONNX export wrote: the graph's inputs/outputs, per-block shapes and the verification."""

    path: str
    family: str
    inputs: list[str]
    output: str
    opset: int
    external_data: bool
    blocks: list[dict[str, int]]                   # per remaining block: layer, heads, kv_heads, mlp_width
    masked_removed: dict[str, dict[str, list[int]]]  # {"heads"|"neurons": {layer: original indices}}
    kv_cache: bool = False                         # model_with_past.onnx written (causal models)
    verified_with_past_max_abs_diff: float | None = None  # cached decoding vs the full prefix, in ORT
    verified_max_abs_diff: float | None = None     # ONNX Runtime vs the pruned torch model
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        shapes = ", ".join(f"{b['heads']}h/{b['kv_heads']}kv/{b['mlp_width']}" for b in self.blocks)
        checked = ("not verified" if self.verified_max_abs_diff is None
                   else f"ONNX Runtime max logit difference {self.verified_max_abs_diff:.2g}")
        cached = ""
        if self.kv_cache:
            cached = (" + KV-cache graph" if self.verified_with_past_max_abs_diff is None else
                      f"; KV-cache graph max difference {self.verified_with_past_max_abs_diff:.2g}")
        return (f"exported {self.family} as ONNX prefill graph ({len(self.blocks)} blocks: {shapes}) "
                f"to {self.path}; {checked}{cached}")


class _Prefill(nn.Module):
    """input_ids, attention_mask -> the model's first output (logits, or last_hidden_state), no cache."""

    def __init__(self, model: nn.Module, output: str) -> None:
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if not _is_encoder(self.model):
            kwargs["use_cache"] = False
        return getattr(self.model(**kwargs), self.output)


class _WithPast(nn.Module):
    """input_ids, attention_mask, past.{i}.key/value... -> logits, present.{i}.key/value... (one pair per block)."""

    def __init__(self, model: nn.Module, blocks: int) -> None:
        super().__init__()
        self.model = model
        self.blocks = blocks

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *past: torch.Tensor) -> tuple:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(self.blocks):                  # [batch, kv_heads of block i, past, head_dim]
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
        present = [t for layer in out.past_key_values.layers[:self.blocks] for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def _past_names(blocks: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kv}" for i in range(blocks) for kv in ("key", "value")]


def _is_encoder(model: nn.Module) -> bool:
    return model.config.model_type in ("bert", "roberta")


def _prepared(model: nn.Module) -> tuple[nn.Module, dict[str, dict[str, list[int]]], list[str]]:
    """An eval-mode copy of `model` with masked heads and neurons removed; refuses fading units and sparsity masks."""
    for kind in ("head", "neuron"):
        if gate_scales(model, kind):
            raise ExportError(f"Some {kind}s are still fading in (fractional gate scales); an export would freeze "
                              f"a transient scale. Finish the growth (scale 1) or mask those {kind}s, then export.")
    sparse = [n for n, m in model.named_modules() if hasattr(m, "weight_orig") and hasattr(m, "weight_mask")]
    if sparse:
        raise ExportError(f"The model still carries weight-level sparsity masks ({len(sparse)} modules, e.g. "
                          f"{sparse[0]}); call sentinel.sparsity.make_permanent(model) first, then export.")
    work = copy.deepcopy(model).eval()
    removed: dict[str, dict[str, list[int]]] = {}
    notes: list[str] = []
    heads, neurons = masked_heads(work), masked_neurons(work)
    if heads:
        remove_heads(work, heads, note={"how": "export", "reason": "masked heads are removed before ONNX export"})
        removed["heads"] = {str(k): v for k, v in heads.items()}
    if neurons:
        remove_neurons(work, neurons, note={"how": "export", "reason": "masked neurons are removed before ONNX export"})
        removed["neurons"] = {str(k): v for k, v in neurons.items()}
    if removed:
        counts = ", ".join(f"{sum(len(v) for v in r.values())} masked {k}" for k, r in removed.items())
        notes.append(f"removed {counts} first (the graph has no masks)")
        logger.warning("ONNX export: removed %s first (the graph has no masks).", counts)
    return work, removed, notes


def _sample(vocab: int, batch: int = 2, length: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, min(vocab, 1000), (batch, length), generator=torch.Generator().manual_seed(seed))
    return ids, torch.ones_like(ids)


def export(model: nn.Module, tokenizer: PreTrainedTokenizerBase | None, out: str | os.PathLike,
           *, verify: bool = True, note: dict[str, Any] | None = None, **_: Any) -> OnnxExportResult:
    """Write `out/model.onnx` (prefill graph), the tokenizer and the pruning record, atomically.

    Works on a copy: the caller's model keeps its masks. With `verify`, ONNX Runtime runs the written
    graph on a fixed prompt and its logits are compared with the pruned torch model's.
    """
    work, removed, notes = _prepared(model)
    family = model_heads(work).adapter.family
    blocks = [{"layer": s.layer, "heads": s.heads, "kv_heads": s.kv_heads, "mlp_width": s.mlp_width}
              for s in block_shapes(work)]
    param = next(work.parameters())
    ids, mask = _sample(work.config.vocab_size)
    ids, mask = ids.to(param.device), mask.to(param.device)
    with torch.no_grad():   # a head model's logits, else the encoder's own last_hidden_state
        outputs = work(input_ids=ids, attention_mask=mask)
    output = "logits" if getattr(outputs, "logits", None) is not None else "last_hidden_state"
    wrapper = _Prefill(work, output).eval()
    with_past = (_WithPast(work, len(blocks)).eval() if output == "logits" and not _is_encoder(work)
                 and getattr(outputs, "past_key_values", None) is not None else None)
    size = sum(p.numel() * p.element_size() for p in work.parameters())
    external = size > EXTERNAL_DATA_BYTES
    record = pruning_record(work, {"export": {"format": "onnx", "graph": "prefill", "output": output,
                                              "inputs": ["input_ids", "attention_mask"], "opset": OPSET},
                                   **(note or {})})

    def write(staging: Path) -> None:
        target = staging / MODEL_FILE
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.onnx.export(
                wrapper, (ids, mask), str(target), dynamo=False, opset_version=OPSET,
                input_names=["input_ids", "attention_mask"], output_names=[output],
                dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                              output: {0: "batch", 1: "sequence"}})
        for w in caught:
            logger.debug("torch.onnx.export: %s", w.message)
        if with_past is not None:
            _export_with_past(with_past, ids, staging / PAST_FILE)
        if external:  # re-save with the weights beside each graph (protobuf cannot hold >2 GiB)
            import onnx

            for name in (MODEL_FILE, PAST_FILE) if with_past is not None else (MODEL_FILE,):
                proto = onnx.load(str(staging / name))
                onnx.save_model(proto, str(staging / name), save_as_external_data=True,
                                all_tensors_to_one_file=True, location=name + ".data")
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        work.config.save_pretrained(staging)
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
        write_model_card(staging, work, record, note, fmt="onnx")

    try:
        import onnx  # noqa: F401  (torch.onnx needs it)
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'sentinel[export]' "
                          "(or onnx and onnxruntime).") from None
    target = replace_folder_atomically(out, write, kind="model")
    result = OnnxExportResult(path=str(target), family=family, inputs=["input_ids", "attention_mask"], output=output,
                              opset=OPSET, external_data=external, blocks=blocks, masked_removed=removed, notes=notes,
                              kv_cache=with_past is not None)
    if verify:
        result.verified_max_abs_diff = verify_onnx(wrapper, target / MODEL_FILE)
        if with_past is not None:
            result.verified_with_past_max_abs_diff = verify_with_past(with_past, target / PAST_FILE)
    return result


def _cache_of(model: nn.Module, prefix: torch.Tensor, blocks: int) -> list[torch.Tensor]:
    """The model's own KV cache for `prefix`, flattened [key0, value0, key1, ...] (the config may count more
    layers than the blocks left; their cache slots stay empty)."""
    with torch.no_grad():
        cache = model(input_ids=prefix, attention_mask=torch.ones_like(prefix), use_cache=True).past_key_values
    return [t for layer in cache.layers[:blocks] for t in (layer.keys, layer.values)]


def _export_with_past(with_past: _WithPast, ids: torch.Tensor, path: Path) -> None:
    """Trace the decoding graph with a 3-token past; batch, new tokens and past length are dynamic axes."""
    past = _cache_of(with_past.model, ids[:, :3], with_past.blocks)
    new = ids[:, 3:]
    mask = torch.ones(ids.shape, dtype=torch.long, device=ids.device)
    names, present = _past_names(with_past.blocks, "past"), _past_names(with_past.blocks, "present")
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"},
            "logits": {0: "batch", 1: "sequence"}, **{n: {0: "batch", 2: "past"} for n in names},
            **{n: {0: "batch", 2: "total"} for n in present}}
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(with_past, (new, mask, *past), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input_ids", "attention_mask", *names], output_names=["logits", *present],
                          dynamic_axes=axes)
    for w in caught:
        logger.debug("torch.onnx.export: %s", w.message)


def verify_with_past(with_past: _WithPast, path: Path) -> float:
    """Decode 4 tokens after a 6-token past in ORT (and after an empty past) vs the model on the whole prefix."""
    import onnxruntime

    model = with_past.model
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = _past_names(with_past.blocks, "past")
    device = next(model.parameters()).device
    ids, _ = _sample(model.config.vocab_size, batch=2, length=10, seed=2)
    worst = 0.0
    for plen in (0, 6):
        prefix, new = ids[:, :plen], ids[:, plen:]
        with torch.no_grad():
            expected = model(input_ids=ids.to(device)).logits[:, plen:].float().cpu()
        if plen:
            past = [t.float().cpu() for t in _cache_of(model, prefix.to(device), with_past.blocks)]
        else:
            shapes = [t.shape for t in _cache_of(model, ids[:, :1].to(device), with_past.blocks)]
            past = [torch.zeros(s[0], s[1], 0, s[3]) for s in shapes]
        feed = {"input_ids": new.numpy(), "attention_mask": torch.ones_like(ids).numpy(),
                **{n: t.numpy() for n, t in zip(names, past)}}
        got = torch.from_numpy(session.run(None, feed)[0]).float()
        diff = float((expected - got).abs().max())
        bound = VERIFY_ATOL if next(model.parameters()).dtype == torch.float32 else 1e-2
        if diff > bound * max(1.0, float(expected.abs().max())):
            raise ExportError(f"The cached decoding graph at {path} differs from the pruned model by {diff:.3g} "
                              f"(past of {plen} tokens); do not use it, and please report this.")
        worst = max(worst, diff)
    return worst


def verify_onnx(wrapper: nn.Module, path: Path) -> float:
    """Run `path` in ONNX Runtime on a fixed prompt (one row left-padded) and compare with `wrapper`'s output."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("Verifying the ONNX export needs onnxruntime: pip install 'sentinel[export]', or pass "
                          "--no-verify.") from None
    model = wrapper.model
    ids, mask = _sample(model.config.vocab_size, batch=2, length=11, seed=1)
    mask[1, :3] = 0
    device = next(model.parameters()).device
    with torch.no_grad():
        expected = wrapper(ids.to(device), mask.to(device)).float().cpu()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]).float()
    rows = mask.bool()                 # padded positions' outputs are not meaningful; compare real tokens only
    diff = float((expected - got).abs()[rows].max())
    dtype = next(model.parameters()).dtype
    bound = VERIFY_ATOL if dtype == torch.float32 else 1e-2
    if diff > bound * max(1.0, float(expected.abs().max())):
        raise ExportError(f"ONNX Runtime's logits differ from the pruned model's by {diff:.3g}; the graph written at "
                          f"{path} is not faithful; do not use it, and please report this.")
    return diff
