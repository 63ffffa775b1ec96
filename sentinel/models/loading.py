"""load_model / save_model: the one way a model enters and leaves Sentinel.

A saved model is an ordinary Hugging Face folder (config, safetensors weights, tokenizer) plus
`sentinel_pruning.json`, which says which original heads, neurons, parts and blocks each layer keeps
or masks and how they were chosen; `load_model` rebuilds those shapes before loading the weights.
Record format 2 adds neurons and layers to format 1 (heads only); both are read. Its `weight_sparsity`
(absent in older folders) names, per matrix, that its zeros are a mask (pattern, method, sparsity): the
loaded model carries it in its pruning state, and every fine-tune holds those zeros (sentinel.sparsity.record).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_model as safetensors_save_from
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, PreTrainedTokenizerBase

from sentinel.data import carry_own_text
from sentinel.device import parse_dtype, pick_device
from sentinel.errors import CorruptModelError, ModelLoadError, UnsafeModelError, UnsupportedModelError
from sentinel.models.card import write_model_card
from sentinel.files import refuse_unsafe_folder, replace_folder_atomically
from sentinel.models.adapters.base import PART_NAMES
from sentinel.models.bundled import (BUNDLED_MODEL_DIR, BUNDLED_MODEL_ENV, BUNDLED_MODEL_NAME,  # noqa: F401
                                     REPOSITORY_MODEL_DIR, bundled_model_dir)
from sentinel.models.hub import hub_reachable
from sentinel.models.int8 import is_int8, is_int8_folder, load_int8_weights, read_int8_record
from sentinel.models.layout import HeadLayout
from sentinel.models.state import model_state

logger = logging.getLogger(__name__)

RECORD_FILE = "sentinel_pruning.json"
WEIGHTS_FILE = "model.safetensors"
RECORD_FORMAT = 2
READABLE_FORMATS = (1, 2)


@dataclass
class LoadedModel:
    """A model ready for Sentinel: the module, its tokenizer, its head layout and where it came from."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    layout: HeadLayout
    device: torch.device
    source: str
    load_seconds: float
    record: dict[str, Any] = field(default_factory=dict)


def load_model(
    name_or_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load a hub id, a local Hugging Face folder or a Sentinel-saved pruned model (None: the bundled model,
    found by `bundled_model_dir`: $SENTINEL_BUNDLED_MODEL, else the repository's assets/models).

    Never runs remote code. The device defaults to cuda > mps > cpu; the dtype to float32 on CPU
    and the checkpoint's own dtype elsewhere.
    """
    start = time.perf_counter()
    source = str(bundled_model_dir() if name_or_path is None else name_or_path)
    target = pick_device(device)
    torch_dtype = parse_dtype(dtype)
    if torch_dtype is None and target.type == "cpu":
        torch_dtype = torch.float32
    local = Path(source).expanduser()
    if local.exists() and not local.is_dir():
        raise ModelLoadError(f"{source} is a file; give the folder that holds config.json and the weights.")
    if local.is_dir() and not (local / "config.json").is_file():
        raise ModelLoadError(f"{source} has no config.json; it is not a Hugging Face model folder.")
    if local.is_dir():
        refuse_unsafe_folder(local)   # pickle-only weights are refused before anything is read
    offline = not local.is_dir() and not _looks_like_path(source) and not hub_reachable()
    if offline:   # use the local cache only: one clear error in seconds instead of retries
        logger.info("The Hugging Face hub cannot be reached; loading %s from the local cache only", source)
    record_path = local / RECORD_FILE
    record: dict[str, Any] = {}
    if local.is_dir() and is_int8_folder(local):
        target = _int8_device(source, device, target, torch_dtype)
        model, layout, record = _load_int8(local, attn_implementation)
    elif local.is_dir() and record_path.is_file():
        record = _read_record(record_path)
        model = _load_pruned(local, record, torch_dtype, attn_implementation)
    else:
        model = _from_pretrained(source, torch_dtype, attn_implementation, offline)
    model.to(target)
    model.eval()
    tokenizer = _load_tokenizer(source, offline)
    if not is_int8(model):          # an int8 model's layout was read from its fp32 skeleton (_load_int8)
        layout = model_state(model).layout()
    seconds = time.perf_counter() - start
    logger.info("Loaded %s (%s, %d layers x %d heads) on %s in %.2fs", source, layout.family,
                layout.num_layers, layout.num_heads, target, seconds)
    return LoadedModel(model, tokenizer, layout, target, source, seconds, record)


def _model_class(config: Any) -> type:
    """The transformers class named by the config, else the causal-LM (or masked-LM) auto class."""
    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            return cls
    encoder_only = type(config) in AutoModelForMaskedLM._model_mapping and not getattr(config, "is_decoder", False)
    return AutoModelForMaskedLM if encoder_only else AutoModelForCausalLM


def _config(source: str | Path, attn_implementation: str | None, offline: bool = False) -> Any:
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False, local_files_only=offline)
    except OSError as err:
        raise ModelLoadError(_not_available(source, err, offline)) from None
    except ValueError as err:
        if _asks_for_remote_code(err):
            raise _remote_code_refused(source) from None
        raise ModelLoadError(f"Cannot read the config of {source}: {_first_line(err)}") from None
    if attn_implementation:
        config._attn_implementation = attn_implementation
    return config


def _from_pretrained(source: str, dtype: torch.dtype | None, attn_implementation: str | None,
                     offline: bool = False) -> nn.Module:
    config = _config(source, attn_implementation, offline)
    cls = _model_class(config)
    kwargs: dict[str, Any] = {"trust_remote_code": False, "use_safetensors": True, "local_files_only": offline,
                              "dtype": dtype if dtype is not None else "auto"}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return cls.from_pretrained(source, config=config, **kwargs)
    except OSError as err:
        raise ModelLoadError(_not_available(source, err, offline)) from None
    except (SafetensorError, RuntimeError, ValueError) as err:   # truncated file, or shapes not the config's
        detail = "weight shapes differ from config.json" if "mismatched" in str(err) else _first_line(err)
        raise CorruptModelError(f"The weights of {source} cannot be loaded ({detail}); the file is truncated, "
                                "corrupt or does not match config.json. Re-download or re-save it.") from None


def _build_pruned(folder: Path, record: dict, dtype: torch.dtype | None, attn_implementation: str | None) -> nn.Module:
    """The model built from its config and cut to the record's shapes (weights not loaded yet)."""
    config = _config(folder, attn_implementation)
    for key, value in record.get("original_config", {}).items():  # an exported folder: back to original shapes
        setattr(config, key, value)
    cls = _model_class(config)
    dtype = dtype if dtype is not None else getattr(config, "dtype", None)
    model = cls.from_config(config, dtype=dtype) if cls.__name__.startswith("AutoModel") else cls._from_config(
        config, dtype=dtype
    )
    if record:
        state = model_state(model)
        _rebuild_shapes(state, record)
        state.state.history[:] = list(record.get("history", []))
        state.state.weights.update({str(k): dict(v) for k, v in (record.get("weight_sparsity") or {}).items()})
    return model


def _int8_device(source: str, asked: str | torch.device | None, target: torch.device,
                 dtype: torch.dtype | None) -> torch.device:
    """int8 dynamic modules run on the CPU only: 'auto' means the CPU here; another explicit device is an error."""
    if dtype not in (None, torch.float32):
        raise ModelLoadError(f"{source} holds int8 weights with float32 activations; load it without a dtype "
                             "(or with float32).")
    if target.type != "cpu" and asked not in (None, "auto"):
        raise ModelLoadError(f"{source} holds int8 dynamic-quantized weights, which run on the CPU only; load it "
                             "with device 'cpu' (or 'auto'), or load the fp32 sparse copy on the GPU.")
    return torch.device("cpu")


def _load_int8(folder: Path, attn_implementation: str | None) -> tuple[nn.Module, HeadLayout, dict[str, Any]]:
    """An int8 folder (sentinel.models.int8): fp32 skeleton cut to the saved shapes, its layout, then int8 weights."""
    int8 = read_int8_record(folder)
    record = dict(int8.get("pruning") or {})
    if record and (record.get("format") not in READABLE_FORMATS or "kept" not in record):
        raise ModelLoadError(f"{folder}: its int8 record carries a pruning record this version cannot read.")
    skeleton = _build_pruned(folder, record, torch.float32, attn_implementation)
    state = model_state(skeleton)
    if record:
        _apply_masks(state, record)
    layout = state.layout()
    model = load_int8_weights(skeleton, folder, int8)
    return model, layout, {**record, "int8": {k: v for k, v in int8.items() if k != "pruning"}}


def _load_pruned(folder: Path, record: dict, dtype: torch.dtype | None, attn_implementation: str | None) -> nn.Module:
    """Build the model from its config, cut it to the saved shapes, then load the saved weights."""
    model = _build_pruned(folder, record, dtype, attn_implementation)
    state = model_state(model)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"{folder} has no {WEIGHTS_FILE} (Sentinel never loads pickle files).")
    try:
        missing, unexpected = stream_weights_into(model, weights)
    except SafetensorError as err:
        raise CorruptModelError(f"{weights} is truncated or corrupt ({_first_line(err)}); save the model again.") from None
    except RuntimeError as err:  # shape mismatch: the weights were not cut the way the record says
        raise CorruptModelError(
            f"The weights in {folder} do not match its pruning record ({str(err).splitlines()[0]}); "
            "the folder is damaged or was edited by hand."
        ) from None
    if missing or unexpected:
        raise CorruptModelError(
            f"The weights in {folder} do not match its pruning record (missing: {list(missing)[:5]}, "
            f"unexpected: {list(unexpected)[:5]}); the folder is damaged or was edited by hand."
        )
    _apply_masks(state, record)
    return model


def stream_weights_into(model: nn.Module, weights: Path) -> tuple[list[str], list[str]]:
    """Copy a safetensors file into the model's parameters and buffers one tensor at a time, so loading never
    holds a second full copy of the weights; (missing, unexpected) names as `safetensors.torch.load_model`
    gives them (a tied tensor stored once under one of its names is not missing)."""
    targets = model.state_dict(keep_vars=True)       # the live tensors, under every name they have
    same: dict[tuple[int, tuple[int, ...]], list[str]] = {}
    for name, tensor in targets.items():
        same.setdefault((tensor.data_ptr(), tuple(tensor.shape)), []).append(name)
    loaded: set[str] = set()
    unexpected: list[str] = []
    # pread, not mmap: a mapped file's pages would stay resident beside the copies (twice the weights in RSS)
    with safe_open(str(weights), framework="pt", device="cpu", backend="pread") as handle, torch.no_grad():
        for key in handle.keys():
            target = targets.get(key)
            if target is None:
                unexpected.append(key)
                continue
            tensor = handle.get_tensor(key)
            if tensor.shape != target.shape:
                raise RuntimeError(f"size mismatch for {key}: the file holds {tuple(tensor.shape)}, the model "
                                   f"{tuple(target.shape)}")
            target.copy_(tensor)
            loaded.add(key)
    covered = {name for names in same.values() if loaded.intersection(names) for name in names}
    return [name for name in targets if name not in covered], unexpected


def _as_plan(data: dict) -> dict[int, list]:
    return {int(k): list(v) for k, v in data.items() if v}


def _rebuild_shapes(state: Any, record: dict) -> None:
    """Cut a freshly built model to the record's shapes: blocks, parts, neurons, then heads."""
    layers = record.get("layers", {})
    blocks = [int(layer) for layer in layers.get("removed_blocks", [])]
    if blocks:
        state.remove_blocks(blocks)
    parts = {layer: [PART_NAMES.index(p) for p in names] for layer, names in _as_plan(layers.get(
        "removed_parts", {})).items()}
    if parts:
        state.remove_parts(parts)
    neurons = _as_plan(record.get("neurons", {}).get("removed", {}))
    if neurons:
        state.remove("neuron", neurons)
    kept = {int(k): list(v) for k, v in record["kept"].items()}
    heads = {layer: [h for h in state.present(layer) if h not in kept.get(layer, [])]
             for layer in state.present_blocks()}
    state.remove("head", {layer: hs for layer, hs in heads.items() if hs})


def _apply_masks(state: Any, record: dict) -> None:
    state.mask("head", _as_plan(record.get("masked", {})))
    state.mask("neuron", _as_plan(record.get("neurons", {}).get("masked", {})))
    state.mask("part", {layer: [PART_NAMES.index(p) for p in names]
                        for layer, names in _as_plan(record.get("layers", {}).get("masked_parts", {})).items()})


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"Cannot read {path}: {err}") from None
    if record.get("format") not in READABLE_FORMATS or "kept" not in record:
        raise ModelLoadError(f"{path} is not a Sentinel pruning record of a format this version reads "
                             f"({', '.join(map(str, READABLE_FORMATS))}); update Sentinel or re-save the model.")
    return record


def _load_tokenizer(source: str, offline: bool = False) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, local_files_only=offline)
    except OSError as err:
        raise ModelLoadError(_not_available(source, err, offline)) from None
    except ValueError as err:
        if _asks_for_remote_code(err):
            raise _remote_code_refused(source) from None
        raise CorruptModelError(f"The tokenizer of {source} cannot be read ({_first_line(err)}); "
                                "re-save or re-download it.") from None
    except Exception as err:   # tokenizers/sentencepiece raise plain Exceptions on a corrupt file
        raise CorruptModelError(f"The tokenizer of {source} cannot be read ({type(err).__name__}: "
                                f"{_first_line(err)}); re-save or re-download it.") from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _asks_for_remote_code(err: ValueError) -> bool:
    return "trust_remote_code" in str(err) or "custom code" in str(err)


def _remote_code_refused(source: str | Path) -> UnsafeModelError:
    return UnsafeModelError(f"{source} needs its own Python code to load (auto_map / custom architecture); "
                            "Sentinel never runs code from a model folder. Use a model of a built-in "
                            "transformers architecture.")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _looks_like_path(source: str | Path) -> bool:
    return str(source).startswith(("/", ".", "~")) or str(source).count("/") > 1


def _not_available(source: str | Path, err: Exception, offline: bool = False) -> str:
    if Path(source).expanduser().is_dir():
        return f"Cannot load {source}: {_first_line(err)}"
    if _looks_like_path(source):
        return f"No model folder at {source}; check the path."
    if offline:
        return (f"Model {source!r} is not in the local Hugging Face cache and the hub cannot be reached "
                "(offline); give a local folder, or download it on a machine with network.")
    return (
        f"Model {source!r} is not available locally and could not be fetched from the Hugging Face hub "
        f"(offline, or no such repository). Give a local folder, or download it on a machine with network. ({_first_line(err)})"
    )


def pruning_record(model: nn.Module, note: dict | None = None) -> dict[str, Any]:
    """The JSON record save_model writes: per layer the kept and masked original heads, the removed and
    masked neurons, the removed blocks and parts, masked parts, and the history of steps."""
    state = model_state(model)
    layout = state.layout()
    layers = range(state.num_layers)
    every = range(state.num_neurons)
    return {
        "format": RECORD_FORMAT,
        "family": layout.family,
        "num_layers": layout.num_layers,
        "num_heads": layout.num_heads,
        "num_kv_heads": layout.num_kv_heads,
        "num_neurons": state.num_neurons,
        "kept": {str(layer): state.present(layer) for layer in layers},
        "masked": {str(layer): state.masked(layer) for layer in layers if state.masked(layer)},
        "neurons": {
            "removed": {str(layer): sorted(set(every) - set(state.present(layer, "neuron")))
                        for layer in state.present_blocks() if len(state.present(layer, "neuron")) < state.num_neurons},
            "masked": {str(layer): state.masked(layer, "neuron") for layer in layers if state.masked(layer, "neuron")},
        },
        "layers": {
            "removed_blocks": [layer for layer in layers if not state.block_present(layer)],
            "removed_parts": {str(layer): [PART_NAMES[p] for p in range(len(PART_NAMES))
                                           if p not in state.present(layer, "part")]
                              for layer in state.present_blocks() if len(state.present(layer, "part")) < len(PART_NAMES)},
            "masked_parts": {str(layer): [PART_NAMES[p] for p in state.masked(layer, "part")]
                             for layer in layers if state.masked(layer, "part")},
        },
        "history": list(state.state.history),
        "weight_sparsity": _weight_sparsity(state),
        "note": note or {},
    }


def _weight_sparsity(state: Any) -> dict[str, dict[str, Any]]:
    """Per matrix whose zeros are a sparsity mask: its pattern and method, and the zero share it has now."""
    found = {}
    for key, entry in sorted(state.state.weights.items()):
        module = state.weight_module(key)
        if module is None:
            continue
        weight = module.weight_orig * module.weight_mask if hasattr(module, "weight_mask") else module.weight
        zeros = int((weight == 0).sum())
        found[key] = {**entry, "sparsity": zeros / weight.numel() if weight.numel() else 0.0}
    return found


def save_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None,
    path: str | os.PathLike,
    note: dict | None = None,
    config: Any | None = None,
    also_write: Callable[[Path], None] | None = None,
) -> Path:
    """Write a Hugging Face folder with safetensors weights and the pruning record, atomically.

    `path` must be new, empty, or an earlier Sentinel model (sentinel.files.check_output_folder; anything else
    is InvalidOutputError and nothing is touched). The folder is written aside and swapped in, so `path` always
    holds the old complete model or the new complete one. `config` (used by export) is written instead of
    `model.config`; the original values it changes go into the record's `original_config`, so load_model can rebuild.
    `also_write(staging)` adds further files of Sentinel's own (e.g. a compressed sparse checkpoint) to the same
    atomic write, so they are part of the model folder and its marker.
    """

    masked = [name for name, module in model.named_modules()
              if hasattr(module, "weight_orig") and hasattr(module, "weight_mask")]
    if masked:   # the weights would be written as weight_orig / weight_mask, which no loader reads back
        raise UnsupportedModelError(
            f"The model still carries weight-level sparsity masks ({len(masked)} modules, e.g. {masked[0]}); "
            "call sentinel.sparsity.make_permanent(model) before saving (its zeros stay).")

    def write(staging: Path) -> None:
        # Config through transformers; weights under the module's own parameter names, one safetensors
        # file, shared (tied) tensors stored once. Plain transformers can load it when nothing was removed.
        (config if config is not None else model.config).save_pretrained(staging)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(staging)
        safetensors_save_from(model, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        record = pruning_record(model, note)
        if config is not None:
            original, written = model.config.to_dict(), config.to_dict()
            record["original_config"] = {k: v for k, v in original.items() if k in written and written[k] != v}
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
        carry_own_text(getattr(model.config, "name_or_path", None) or None, staging)
        write_model_card(staging, model, record, note)
        if also_write is not None:
            also_write(staging)

    return replace_folder_atomically(path, write, kind="model")
