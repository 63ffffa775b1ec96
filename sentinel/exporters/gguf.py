"""The `gguf` export format: one model.gguf that llama.cpp runs, per-layer shapes included (Llama family).

Llama-family models (Llama, Mistral, Qwen2 where its biases fit) are always written as llama.cpp's `deci`
architecture, whose head counts, K/V head counts and MLP widths are per-layer arrays (0 = part removed),
so uniform and non-uniform prunings take the same path. Two llama.cpp limits are worked around with
exact zero-weight stand-ins: a layer with attention but no MLP gets a zero MLP of width 32 (deci.cpp
skips the residual update of an MLP-less layer), and a first layer without attention gets one zero head
(llama.cpp takes the head size from layer 0). Q/K rows get the rotary interleave permutation per layer.
Layers with neither part are left out. GPT-2 is written as llama.cpp's `gpt2` architecture, which takes
one shape for every block (all heads, one MLP width, blocks removed); other families are refused.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sentinel.export import ExportError
from sentinel.files import replace_folder_atomically
from sentinel.models.card import write_model_card
from sentinel.models.loading import pruning_record
from sentinel.models.heads import model_heads

logger = logging.getLogger(__name__)

GGUF_FILE = "model.gguf"
QUANTS = ("f32", "f16", "q8_0")
ARCH = "deci"
ZERO_FFN_WIDTH = 32        # one q8_0 block, so the stand-in MLP quantises like the rest
ROPE_TYPES = (None, "default")
# tokenizers' split patterns llama.cpp knows by a pre-tokenizer name
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                 r"\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
_KNOWN_SPLITS = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}


@dataclass
class GGUFLayer:
    """One written layer: its original index and what llama.cpp reads for it (0 = part absent)."""

    layer: int
    heads: int
    kv_heads: int
    mlp_width: int
    stand_in: str = ""          # "zero MLP" / "zero head" where a zero-weight stand-in was written


@dataclass
class GGUFExportResult:
    """What the GGUF export wrote."""

    path: str
    file: str
    architecture: str
    quant: str
    layers: list[GGUFLayer]
    skipped_layers: list[int]                    # original layers left out: removed, or with neither part
    tokenizer: dict[str, Any]
    tensors: int
    bytes: int
    verified: bool = False                       # read back with gguf's reader, values compared
    verified_max_abs_diff: float | None = None   # largest weight difference after read-back (quantisation)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        check = ("not verified" if not self.verified
                 else f"read back, max weight difference {self.verified_max_abs_diff:.2g}")
        heads = ",".join(str(layer.heads) for layer in self.layers)
        widths = ",".join(str(layer.mlp_width) for layer in self.layers)
        notes = "".join(f"; note: {n}" for n in self.notes)
        return (f"exported {len(self.layers)} layers as GGUF ({self.architecture}, {self.quant}) to {self.file}: "
                f"heads {heads}, MLP widths {widths}; {check}{notes}")


def export(model: nn.Module, tokenizer: Any, out: str | os.PathLike, *, verify: bool = True,
           note: dict[str, Any] | None = None, quant: str = "f16", **_: Any) -> GGUFExportResult:
    """Write `model` (masked units removed first, on a copy) and its tokenizer as `out`/model.gguf."""
    import gguf

    if quant not in QUANTS:
        raise ExportError(f"Unknown GGUF quantisation {quant!r}; choose one of {', '.join(QUANTS)}.")
    work, notes = _unmasked_copy(model)
    heads = model_heads(work)
    config = work.config
    arch = _check_family(work, heads)
    vocab = _tokenizer_keys(tokenizer, config.vocab_size, notes)
    if arch == "gpt2":
        layers, skipped, tensors = _gpt2_tensors(work, heads)
    else:
        layers, skipped, tensors = _layer_tensors(work, heads, notes)
        tensors = _global_tensors(work) + tensors
    head_dim = heads.head_dim
    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[quant]
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[quant]
    fallback: list[str] = []
    written: list[tuple[str, np.ndarray, Any]] = []
    for name, array in tensors:
        kind = qtype if array.ndim == 2 else gguf.GGMLQuantizationType.F32   # norms and biases stay f32
        if kind == gguf.GGMLQuantizationType.Q8_0 and array.shape[-1] % 32:
            kind = gguf.GGMLQuantizationType.F16
            fallback.append(name)
        written.append((name, array, kind))
    if fallback:
        notes.append(f"{len(fallback)} tensors whose rows are not a multiple of 32 were written as f16, not q8_0")

    def write(staging: Path) -> None:
        writer = gguf.GGUFWriter(str(staging / GGUF_FILE), arch)
        writer.add_name(str(getattr(config, "_name_or_path", "") or "sentinel-pruned"))
        writer.add_file_type(int(ftype))
        writer.add_block_count(len(layers))
        writer.add_context_length(int(config.max_position_embeddings))
        writer.add_embedding_length(int(config.hidden_size))
        if arch == "gpt2":              # uniform shapes (checked): plain numbers
            writer.add_feed_forward_length(layers[0].mlp_width)
            writer.add_head_count(layers[0].heads)
            writer.add_layer_norm_eps(float(config.layer_norm_epsilon))
        else:
            writer.add_feed_forward_length([layer.mlp_width for layer in layers])
            writer.add_head_count([layer.heads for layer in layers])
            writer.add_head_count_kv([layer.kv_heads for layer in layers])
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
            writer.add_rope_dimension_count(head_dim)
            writer.add_rope_freq_base(float(_rope_theta(config)))
            writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_vocab_size(int(config.vocab_size))
        _write_tokenizer(writer, vocab)
        if note:
            writer.add_string("general.source.sentinel", json.dumps(note, default=str))
        for name, array, kind in written:
            data = gguf.quants.quantize(array, kind)
            writer.add_tensor(name, data, raw_dtype=kind if kind == gguf.GGMLQuantizationType.Q8_0 else None)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        write_model_card(staging, work, pruning_record(work, note), note, fmt="gguf")

    target = replace_folder_atomically(out, write)
    file = target / GGUF_FILE
    result = GGUFExportResult(
        path=str(target), file=str(file), architecture=arch, quant=quant, layers=layers, skipped_layers=skipped,
        tokenizer={k: vocab[k] for k in ("model", "pre")} | {"tokens": len(vocab["tokens"])},
        tensors=len(written), bytes=file.stat().st_size, notes=notes)
    for line in notes:
        logger.info("GGUF export: %s", line)
    if verify:
        result.verified_max_abs_diff = verify_gguf(file, written, layers, arch)
        result.verified = True
    return result


# --- what is written ---------------------------------------------------------------------------------------

def _unmasked_copy(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy with every masked head, neuron, part and block removed (a GGUF file has no masks)."""
    from sentinel.pruning.masks import gate_scales, masked_heads
    from sentinel.pruning.removal import remove_heads
    from sentinel.pruning.units import masked_neurons, remove_layers, remove_neurons

    for kind in ("head", "neuron", "part"):
        if gate_scales(model, kind):
            raise ExportError(f"Some {kind}s are still fading in (fractional gate scales); a GGUF file cannot hold "
                              "a scale. Finish the growth (scale 1) or mask them, then export.")
    work = copy.deepcopy(model)
    notes: list[str] = []
    reason = {"how": "export", "reason": "masked units are removed before GGUF export"}
    state = model_heads(work)
    parts = {layer: [("attention", "mlp")[p] for p in state.masked(layer, "part")]
             for layer in range(state.num_layers) if state.masked(layer, "part")}
    if parts:
        for layer, names in parts.items():
            for name in names:
                remove_layers(work, [layer], part=name, note=reason)
        notes.append(f"removed masked parts first ({sum(len(v) for v in parts.values())})")
    heads = masked_heads(work)
    if heads:
        remove_heads(work, heads, note=reason)
        notes.append(f"removed {sum(len(v) for v in heads.values())} masked heads first")
    neurons = masked_neurons(work)
    if neurons:
        remove_neurons(work, neurons, note=reason)
        notes.append(f"removed {sum(len(v) for v in neurons.values())} masked MLP neurons first")
    return work, notes


def _rope_theta(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _check_family(model: nn.Module, heads: Any) -> None:
    """Refuse, before anything is written, what llama.cpp's deci architecture cannot run the same way."""
    family = heads.adapter.family
    config = model.config
    if family == "gpt2":
        _check_gpt2(model, heads)
        return "gpt2"
    if family != "llama":
        raise ExportError(f"GGUF export supports the Llama family (Llama, Mistral, Qwen2) and GPT-2, not {family}; "
                          "export with --format hf instead.")
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if params.get("rope_type", params.get("type")) not in ROPE_TYPES:
        raise ExportError(f"GGUF export writes plain rotary embeddings only; this model uses rope type "
                          f"{params.get('rope_type', params.get('type'))!r}. Export with --format hf instead.")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ExportError(f"GGUF export needs a SiLU-gated MLP; this model uses {config.hidden_act!r}.")
    if getattr(config, "mlp_bias", False):
        raise ExportError("GGUF export does not write MLP biases (mlp_bias=True); export with --format hf instead.")
    hidden = int(config.hidden_size)
    for layer in heads.present_blocks():
        attn = heads.block(layer).get_submodule(heads.adapter.attention_path)
        bias = attn.q_proj.bias
        if bias is not None and bias.numel() not in (0, hidden):
            raise ExportError(f"Layer {layer} keeps {len(heads.present(layer))} query heads with a query bias of "
                              f"{bias.numel()} values, but llama.cpp's deci architecture takes a query bias of exactly "
                              f"hidden size {hidden}; keep all query heads in layers of a model with attention biases "
                              "(Qwen2), or export with --format hf.")
    sliding = getattr(config, "sliding_window", None)
    if sliding and getattr(config, "use_sliding_window", True) and sliding < config.max_position_embeddings:
        raise ExportError(f"This model attends through a sliding window of {sliding} tokens, which llama.cpp's deci "
                          "architecture does not; export with --format hf instead.")
    return ARCH


def _check_gpt2(model: nn.Module, heads: Any) -> None:
    """llama.cpp's gpt2 architecture: one head count (all heads: it derives head size) and one MLP width."""
    config = model.config
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if getattr(config, flag, False):
            raise ExportError(f"GPT-2 with {flag}=True computes attention differently from llama.cpp; export with "
                              "--format hf instead.")
    if getattr(config, "activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ExportError(f"llama.cpp's gpt2 uses tanh GELU; this model uses {config.activation_function!r}.")
    problems = []
    parts = [layer for layer in heads.present_blocks() if len(heads.present(layer, "part")) < 2]
    if parts:
        problems.append(f"blocks {', '.join(map(str, parts))} lost their attention or MLP part")
    cut = [str(layer) for layer in heads.present_blocks() if len(heads.present(layer)) != heads.num_heads]
    if cut:
        problems.append(f"blocks {', '.join(cut)} lost attention heads (llama.cpp derives GPT-2's head size from "
                        "hidden size / heads)")
    widths = {len(heads.present(layer, "neuron")) for layer in heads.present_blocks()}
    if len(widths) > 1:
        problems.append("blocks keep different MLP widths")
    if problems:
        raise ExportError("llama.cpp's gpt2 architecture takes one shape for every block, but " + "; ".join(problems)
                          + ". Prune GPT-2 by MLP neurons with a uniform allocation or by whole blocks for GGUF, or "
                          "keep the Sentinel format.")


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).contiguous().numpy()


def _rotary_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder each head's rows from the halves rotary layout (HF) to llama.cpp's interleaved one."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def _global_tensors(model: nn.Module) -> list[tuple[str, np.ndarray]]:
    embed = model.get_input_embeddings().weight
    out = [("token_embd.weight", _np(embed)), ("output_norm.weight", _np(model.base_model.norm.weight))]
    head = model.get_output_embeddings()
    if head is not None and head.weight.data_ptr() != embed.data_ptr():
        out.append(("output.weight", _np(head.weight)))
    return out


def _gpt2_tensors(model: nn.Module, heads: Any) -> tuple[list[GGUFLayer], list[int], list]:
    """GPT-2 under llama.cpp's gpt2 names; Conv1D weights are (in, out), so they are transposed."""
    base = model.base_model
    embed = _np(base.wte.weight)
    tensors = [("token_embd.weight", embed), ("position_embd.weight", _np(base.wpe.weight)),
               ("output_norm.weight", _np(base.ln_f.weight)), ("output_norm.bias", _np(base.ln_f.bias)),
               ("output.weight", _np(model.get_output_embeddings().weight))]
    layers = []
    for i, layer in enumerate(heads.present_blocks()):
        block, blk = heads.block(layer), f"blk.{i}."
        for name, module in (("attn_norm", block.ln_1), ("ffn_norm", block.ln_2)):
            tensors += [(blk + f"{name}.weight", _np(module.weight)), (blk + f"{name}.bias", _np(module.bias))]
        for name, module in (("attn_qkv", block.attn.c_attn), ("attn_output", block.attn.c_proj),
                             ("ffn_up", block.mlp.c_fc), ("ffn_down", block.mlp.c_proj)):
            tensors += [(blk + f"{name}.weight", _np(module.weight).T.copy()), (blk + f"{name}.bias", _np(module.bias))]
        layers.append(GGUFLayer(layer, heads.num_heads, heads.num_heads, int(block.mlp.c_fc.weight.shape[1])))
    skipped = [layer for layer in range(heads.num_layers) if not heads.block_present(layer)]
    return layers, skipped, tensors


def _layer_tensors(model: nn.Module, heads: Any, notes: list[str]) -> tuple[list[GGUFLayer], list[int], list]:
    """Each kept layer's tensors under llama.cpp names, its shape entry, and the layers left out."""
    hidden = int(model.config.hidden_size)
    d = heads.head_dim
    layers: list[GGUFLayer] = []
    skipped = [layer for layer in range(heads.num_layers) if not heads.block_present(layer)]
    tensors: list[tuple[str, np.ndarray]] = []
    for layer in heads.present_blocks():
        block = heads.block(layer)
        attn = block.get_submodule(heads.adapter.attention_path)
        mlp = block.mlp
        n_head, n_kv = len(heads.present(layer)), len(heads.present_kv(layer))
        n_ff = int(mlp.down_proj.weight.shape[1])
        if n_head == 0 and n_ff == 0 and (attn.o_proj.bias is None or not attn.o_proj.bias.any()):
            skipped.append(layer)        # the residual passes through unchanged
            continue
        if n_head == 0 and attn.o_proj.bias is not None and attn.o_proj.bias.any():
            raise ExportError(f"Layer {layer} has no heads but a non-zero attention output bias, which llama.cpp "
                              "cannot add without heads; export with --format hf instead.")
        i = len(layers)
        entry = GGUFLayer(layer, n_head, n_kv, n_ff)
        blk = f"blk.{i}."
        if n_head == 0 and i == 0:
            entry.heads, entry.kv_heads, entry.stand_in = 1, 1, "zero head"
            tensors += [(blk + "attn_norm.weight", _np(block.input_layernorm.weight))]
            tensors += [(blk + f"attn_{p}.weight", np.zeros((d, hidden), np.float32)) for p in "qkv"]
            tensors.append((blk + "attn_output.weight", np.zeros((hidden, d), np.float32)))
            notes.append(f"layer {layer} has no attention; llama.cpp needs heads in the first layer, so one head "
                         "with zero weights stands in (exact)")
        elif n_head:
            tensors.append((blk + "attn_norm.weight", _np(block.input_layernorm.weight)))
            tensors.append((blk + "attn_q.weight", _rotary_permute(_np(attn.q_proj.weight), n_head)))
            tensors.append((blk + "attn_k.weight", _rotary_permute(_np(attn.k_proj.weight), n_kv)))
            tensors.append((blk + "attn_v.weight", _np(attn.v_proj.weight)))
            tensors.append((blk + "attn_output.weight", _np(attn.o_proj.weight)))
            for proj, name, count in ((attn.q_proj, "attn_q", n_head), (attn.k_proj, "attn_k", n_kv),
                                      (attn.v_proj, "attn_v", 0), (attn.o_proj, "attn_output", 0)):
                if proj.bias is not None:
                    bias = _np(proj.bias)
                    tensors.append((blk + f"{name}.bias", _rotary_permute(bias, count) if count else bias))
        if n_ff == 0 and entry.heads:
            entry.mlp_width, entry.stand_in = ZERO_FFN_WIDTH, "zero MLP"
            tensors.append((blk + "ffn_norm.weight", np.ones(hidden, np.float32)))
            tensors += [(blk + f"ffn_{p}.weight", np.zeros((ZERO_FFN_WIDTH, hidden), np.float32)) for p in ("gate", "up")]
            tensors.append((blk + "ffn_down.weight", np.zeros((hidden, ZERO_FFN_WIDTH), np.float32)))
            notes.append(f"layer {layer} has attention but no MLP; llama.cpp drops such a layer's attention output, "
                         f"so a zero MLP of width {ZERO_FFN_WIDTH} stands in (exact)")
        elif n_ff:
            tensors.append((blk + "ffn_norm.weight", _np(block.post_attention_layernorm.weight)))
            tensors.append((blk + "ffn_gate.weight", _np(mlp.gate_proj.weight)))
            tensors.append((blk + "ffn_up.weight", _np(mlp.up_proj.weight)))
            tensors.append((blk + "ffn_down.weight", _np(mlp.down_proj.weight)))
        layers.append(entry)
    if not layers:
        raise ExportError("No layer keeps attention or an MLP; there is nothing for llama.cpp to run.")
    return layers, sorted(skipped), tensors


# --- tokenizer ---------------------------------------------------------------------------------------------

def _tokenizer_keys(tokenizer: Any, vocab_size: int, notes: list[str]) -> dict[str, Any]:
    """The tokenizer.ggml.* values for a byte-level BPE tokenizer; ExportError for any other kind."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError("GGUF export needs the model's fast (tokenizer.json) tokenizer, and this model has "
                          "none; save the model with its tokenizer and export again.")
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    pre = spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    byte_level = [p for p in parts if p.get("type") == "ByteLevel"]
    if model.get("type") != "BPE" or not byte_level:
        raise ExportError(f"GGUF export writes byte-level BPE tokenizers (GPT-2 / Llama 3 / Qwen2 style) only; this "
                          f"one is {model.get('type')} with pre-tokenizer {pre.get('type')}. Export with --format hf.")
    splits = [p for p in parts if p.get("type") == "Split"]
    if not splits and byte_level[0].get("use_regex", True):
        pre_name = "gpt-2"
    elif len(splits) == 1 and splits[0].get("pattern", {}).get("Regex") in _KNOWN_SPLITS:
        pre_name = _KNOWN_SPLITS[splits[0]["pattern"]["Regex"]]
    else:
        pre_name = "default"
        notes.append("the tokenizer's pre-tokenizer is not one llama.cpp names; wrote 'default', so llama.cpp may "
                     "split text differently (token ids given directly are unaffected)")
    vocab: dict[str, int] = dict(model.get("vocab", {}))
    special = {t["id"]: t for t in spec.get("added_tokens", [])}
    for t in special.values():
        vocab[t["content"]] = t["id"]
    if vocab and max(vocab.values()) >= vocab_size:
        raise ExportError(f"The tokenizer has ids up to {max(vocab.values())} but the model only {vocab_size} "
                          "embeddings; the two do not belong together.")
    by_id = {i: tok for tok, i in vocab.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(5)                        # unused
        else:
            tokens.append(by_id[i])
            types.append(1 if i not in special else (3 if special[i].get("special") else 4))  # normal/control/user
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    ids = {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "unk", "pad")}
    probe = tokenizer("a").input_ids if callable(tokenizer) else []
    add_bos = bool(ids["bos"] is not None and probe and probe[0] == ids["bos"])
    return {"model": "gpt2", "pre": pre_name, "tokens": tokens, "types": types, "merges": merges, "ids": ids,
            "add_bos": add_bos}


def _write_tokenizer(writer: Any, vocab: dict[str, Any]) -> None:
    writer.add_tokenizer_model(vocab["model"])
    writer.add_tokenizer_pre(vocab["pre"])
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    if vocab["merges"]:
        writer.add_token_merges(vocab["merges"])
    for name, value in vocab["ids"].items():
        if value is not None:
            getattr(writer, f"add_{name}_token_id")(int(value))
    writer.add_add_bos_token(vocab["add_bos"])


# --- read-back check ---------------------------------------------------------------------------------------

def verify_gguf(file: Path, written: list[tuple[str, np.ndarray, Any]], layers: list[GGUFLayer],
                arch: str = ARCH) -> float:
    """Read `file` back with gguf's reader: per-layer arrays, tensor names and shapes, and values must match."""
    import gguf

    reader = gguf.GGUFReader(str(file))
    checks = ((f"{arch}.attention.head_count", [x.heads for x in layers]),
              (f"{arch}.attention.head_count_kv", [x.kv_heads for x in layers]),
              (f"{arch}.feed_forward_length", [x.mlp_width for x in layers]))
    for key, want in checks if arch == ARCH else checks[::2]:
        value = reader.get_field(key).contents()
        got = [int(v) for v in value] if isinstance(value, list) else [int(value)] * len(layers)
        if got != want:
            raise ExportError(f"The GGUF file at {file} reads back {key} = {got}, not {want}; do not use it, and "
                              "please report this.")
    found = {t.name: t for t in reader.tensors}
    worst = 0.0
    for name, array, kind in written:
        t = found.get(name)
        if t is None:
            raise ExportError(f"The GGUF file at {file} lacks tensor {name}; do not use it, and please report this.")
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(array.shape)
        diff = float(np.abs(values - array).max()) if array.size else 0.0
        bound = {gguf.GGMLQuantizationType.F32: 0.0, gguf.GGMLQuantizationType.F16: 1e-3}.get(kind, 1e-2)
        if diff > bound * max(1.0, float(np.abs(array).max()) if array.size else 1.0):
            raise ExportError(f"Tensor {name} in {file} reads back {diff:.3g} off; do not use the file, and please "
                              "report this.")
        worst = max(worst, diff)
    return worst
