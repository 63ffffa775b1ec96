"""The `compressed-tensors` export format: a sparse model's body matrices bitmask-compressed, as llm-compressor
writes them and vLLM / the compressed-tensors package read them.

Written from the format as the compressed-tensors package (0.13) decodes it, not from its code:

- `model.safetensors`: for each body Linear `<module>` (layout (out, in)), `<module>.shape` (int64),
  `<module>.compressed` (the kept values), `<module>.bitmask` (uint8, one bit per weight, each row packed
  little-endian bit first and padded to whole bytes); unstructured (`sparse-bitmask`) adds
  `<module>.row_offsets` (int64, index of each row's first value) and keeps only non-zeros in a flat tensor;
  2:4 (`sparse-24-bitmask`) keeps exactly 2 of every 4 weights of a row (zeros pad a group with fewer
  non-zeros) as an (out, in/2) tensor and `shape` as a (2, 1) column. Every other tensor is stored dense.
- `config.json`: the stock config plus `quantization_config = {quant_method: "compressed-tensors", format,
  version, sparsity_config: {format, targets: ["Linear"], ignore: ["lm_head"], global_sparsity,
  sparsity_structure}}`.

GPT-2's Conv1D stores (in, out) and is loaded by its own module class, not as Linear: refused rather
than written transposed. Dense models and shapes a stock config cannot hold are refused before writing.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from sentinel.export import ExportError, stock_config
from sentinel.files import replace_folder_atomically
from sentinel.models.card import write_model_card
from sentinel.models.loading import RECORD_FILE, WEIGHTS_FILE, pruning_record
from sentinel.pruning.masks import gate_scales, masked_heads
from sentinel.pruning.removal import remove_heads
from sentinel.sparsity.masks import make_permanent
from sentinel.sparsity.targets import find_targets

logger = logging.getLogger(__name__)

FORMAT_VERSION = "0.13.0"          # the compressed-tensors version whose decoder this layout was checked against
UNSTRUCTURED, TWO_FOUR = "sparse-bitmask", "sparse-24-bitmask"
_LITTLE_BITS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


@dataclass
class CompressedTensorsResult:
    """What the compressed-tensors export wrote."""

    path: str
    format: str                      # sparse-bitmask or sparse-24-bitmask
    sparsity_structure: str          # "unstructured" or "2:4"
    global_sparsity: float           # zeros / weights over the compressed matrices
    matrices: int
    file_bytes: int
    dense_bytes: int                 # the same tensors stored dense
    verified: bool | None = None     # every matrix decoded back from the file bit for bit
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        checked = "not verified" if self.verified is None else "every matrix decodes back bit for bit"
        return (f"exported {self.matrices} matrices as compressed-tensors {self.format} "
                f"({self.sparsity_structure}, {self.global_sparsity:.1%} sparse) to {self.path}; "
                f"{self.file_bytes / 1e6:.2f} MB vs {self.dense_bytes / 1e6:.2f} MB dense; {checked}")


def pack_rows(mask: torch.Tensor) -> torch.Tensor:
    """[rows, cols] bool -> [rows, ceil(cols/8)] uint8, bit j of byte b = column 8b + j (little-endian bits)."""
    rows, cols = mask.shape
    padded = torch.cat([mask.to(torch.uint8), mask.new_zeros(rows, (-cols) % 8, dtype=torch.uint8)], dim=1)
    return (padded.view(rows, -1, 8) * _LITTLE_BITS).sum(-1, dtype=torch.uint8)


def is_two_four(weight: torch.Tensor) -> bool:
    """At most 2 non-zeros in every group of 4 consecutive inputs of each row."""
    rows, cols = weight.shape
    return cols % 4 == 0 and bool(((weight != 0).view(rows, cols // 4, 4).sum(-1) <= 2).all())


def compress_unstructured(name: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """sparse-bitmask: the non-zeros row by row, their bitmask and each row's start in the values."""
    mask = weight != 0
    counts = mask.sum(dim=1)
    return {f"{name}.shape": torch.tensor(list(weight.shape), dtype=torch.int64),
            f"{name}.compressed": weight[mask].contiguous(),
            f"{name}.bitmask": pack_rows(mask),
            f"{name}.row_offsets": (torch.cumsum(counts, 0) - counts).to(torch.int64)}


def compress_two_four(name: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """sparse-24-bitmask: exactly 2 kept per group of 4 (non-zeros first, then the lowest-index zeros)."""
    rows, cols = weight.shape
    groups = (weight != 0).view(rows, cols // 4, 4).to(torch.float32)
    # rank non-zeros above zeros; among equals the lower index first (a stable, documented choice)
    rank = groups * 4 - torch.arange(4, dtype=torch.float32)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, rank.topk(2, dim=-1).indices, True)
    keep = keep.view(rows, cols)
    return {f"{name}.shape": torch.tensor([rows, cols], dtype=torch.int64).reshape(-1, 1),
            f"{name}.compressed": weight[keep].reshape(rows, cols // 2).contiguous(),
            f"{name}.bitmask": pack_rows(keep)}


def _prepared(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy with weight masks made permanent and masked heads removed; refuses what the format cannot hold."""
    if gate_scales(model):
        raise ExportError("Some heads are still fading in (fractional gate scales); finish the growth or mask "
                          "them, then export.")
    work = copy.deepcopy(model)
    notes = []
    if make_permanent(work):
        notes.append("weight-level masks made permanent in the exported copy")
    masked = masked_heads(work)
    if masked:
        remove_heads(work, masked, note={"how": "export", "reason": "masked heads are removed before export"})
        notes.append(f"removed {sum(len(v) for v in masked.values())} masked heads first")
    return work, notes


def export(model: nn.Module, tokenizer: PreTrainedTokenizerBase | None, out: str | os.PathLike,
           *, verify: bool = True, note: dict[str, Any] | None = None, **_: Any) -> CompressedTensorsResult:
    """Write `model` (weight-sparse, uniform shapes) as a compressed-tensors folder; ExportError before writing."""
    work, notes = _prepared(model)
    stock, summary = stock_config(work)       # refuses non-uniform head / width pruning with its reason
    notes.extend(summary["notes"])
    targets = find_targets(work)
    conv = [t.name for t in targets if not isinstance(t.module, nn.Linear)]
    if conv:
        raise ExportError(f"compressed-tensors stores Linear (out, in) weights and its loaders build Linear "
                          f"modules; {conv[0]} is {type(targets[0].module).__name__} (GPT-2), which is not "
                          "written transposed; export a Llama-family model, or use --format hf.")
    with torch.no_grad():
        weights = {t.name: t.module.weight.detach().cpu() for t in targets}
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    size = sum(w.numel() for w in weights.values())
    if zeros == 0:
        raise ExportError("The model has no zero weights in its body matrices: compressed-tensors' sparse "
                          "formats would only add a bitmask; sparsify it first (sentinel sparsify) or use --format hf.")
    two_four = all(is_two_four(w) for w in weights.values())
    fmt, structure = (TWO_FOUR, "2:4") if two_four else (UNSTRUCTURED, "unstructured")
    compress = compress_two_four if two_four else compress_unstructured
    global_sparsity = zeros / size

    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    compressed_params = {f"{name}.weight" for name in weights}
    for key, tensor in work.state_dict().items():
        if tensor.data_ptr() in seen or key in compressed_params:   # tied tensors once
            continue
        seen.add(tensor.data_ptr())
        tensors[key] = tensor.detach().cpu().contiguous()
    for name, weight in weights.items():
        tensors.update(compress(name, weight.contiguous()))

    if not getattr(stock, "architectures", None):
        stock.architectures = [type(work).__name__]
    sparsity_config = {"format": fmt, "targets": ["Linear"], "ignore": ["lm_head"],
                       "global_sparsity": global_sparsity, "sparsity_structure": structure}
    quantization_config = {"quant_method": "compressed-tensors", "format": fmt, "version": FORMAT_VERSION,
                           "sparsity_config": sparsity_config, "config_groups": {}, "transform_config": {}}

    def write(staging: Path) -> None:
        stock.save_pretrained(staging)
        config = json.loads((staging / "config.json").read_text(encoding="utf-8"))
        config["quantization_config"] = quantization_config
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
        if getattr(work, "generation_config", None) is not None:
            work.generation_config.save_pretrained(staging)
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        record = pruning_record(work, {"export": {"format": "compressed-tensors", "sparsity_config": sparsity_config},
                                       **(note or {})})
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
        write_model_card(staging, work, record, note, fmt="compressed-tensors")

    target = replace_folder_atomically(out, write, kind="model")
    dense_bytes = sum(t.numel() * t.element_size() for k, t in work.state_dict().items())
    result = CompressedTensorsResult(
        path=str(target), format=fmt, sparsity_structure=structure, global_sparsity=global_sparsity,
        matrices=len(weights), file_bytes=(target / WEIGHTS_FILE).stat().st_size, dense_bytes=dense_bytes,
        notes=notes)
    if verify:
        result.verified = verify_decoding(target, weights)
    logger.info("%s", result.summary())
    return result


def verify_decoding(folder: Path, weights: dict[str, torch.Tensor]) -> bool:
    """Decode the written file with the format's rules and require every matrix back bit for bit."""
    from safetensors import safe_open

    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
        for name, expected in weights.items():
            shape = [int(v) for v in f.get_tensor(f"{name}.shape").flatten()]
            bits = f.get_tensor(f"{name}.bitmask")
            unpacked = ((bits.unsqueeze(-1) & _LITTLE_BITS) != 0).view(shape[0], -1)[:, :shape[1]]
            dense = torch.zeros(shape, dtype=expected.dtype)
            dense[unpacked] = f.get_tensor(f"{name}.compressed").flatten()
            if not torch.equal(dense, expected):
                raise ExportError(f"{name} does not decode back to the model's weights from {folder}; do not use "
                                  "this export, and please report it.")
    return True
