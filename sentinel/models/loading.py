"""load_model / save_model: the one way a model enters and leaves Sentinel.

A saved model is an ordinary Hugging Face folder (config, safetensors weights, tokenizer) plus
`sentinel_pruning.json`, which says which original heads each layer keeps or masks and how they
were chosen; `load_model` rebuilds those shapes before loading the weights.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import load_model as safetensors_load_into
from safetensors.torch import save_model as safetensors_save_from
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, PreTrainedTokenizerBase

from sentinel.device import parse_dtype, pick_device
from sentinel.errors import ModelLoadError, SentinelError
from sentinel.models.heads import model_heads
from sentinel.models.layout import HeadLayout
from sentinel.pruning.masks import mask_heads, pruning_history
from sentinel.pruning.removal import keep_only

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_MODEL_NAME = "stories-gpt2"  # the default model; assets/models/stdlib-gpt2 stays bundled beside it
BUNDLED_MODEL_DIR = Path(os.environ.get("SENTINEL_BUNDLED_MODEL", REPO_ROOT / "assets" / "models" / BUNDLED_MODEL_NAME))
RECORD_FILE = "sentinel_pruning.json"
WEIGHTS_FILE = "model.safetensors"
RECORD_FORMAT = 1


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
    """Load a hub id, a local Hugging Face folder or a Sentinel-saved pruned model (None: the bundled model).

    Never runs remote code. The device defaults to cuda > mps > cpu; the dtype to float32 on CPU
    and the checkpoint's own dtype elsewhere.
    """
    start = time.perf_counter()
    source = str(BUNDLED_MODEL_DIR if name_or_path is None else name_or_path)
    if name_or_path is None and not BUNDLED_MODEL_DIR.is_dir():
        raise ModelLoadError(f"The bundled model is missing at {BUNDLED_MODEL_DIR}; run `sentinel build-demo-model`.")
    target = pick_device(device)
    torch_dtype = parse_dtype(dtype)
    if torch_dtype is None and target.type == "cpu":
        torch_dtype = torch.float32
    local = Path(source).expanduser()
    if local.exists() and not local.is_dir():
        raise ModelLoadError(f"{source} is a file; give the folder that holds config.json and the weights.")
    if local.is_dir() and not (local / "config.json").is_file():
        raise ModelLoadError(f"{source} has no config.json; it is not a Hugging Face model folder.")
    record_path = local / RECORD_FILE
    record: dict[str, Any] = {}
    if local.is_dir() and record_path.is_file():
        record = _read_record(record_path)
        model = _load_pruned(local, record, torch_dtype, attn_implementation)
    else:
        model = _from_pretrained(source, torch_dtype, attn_implementation)
    model.to(target)
    model.eval()
    tokenizer = _load_tokenizer(source)
    layout = model_heads(model).layout()
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


def _config(source: str | Path, attn_implementation: str | None) -> Any:
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except OSError as err:
        raise ModelLoadError(_not_available(source, err)) from None
    except ValueError as err:
        raise ModelLoadError(f"Cannot read the config of {source}: {err}") from None
    if attn_implementation:
        config._attn_implementation = attn_implementation
    return config


def _from_pretrained(source: str, dtype: torch.dtype | None, attn_implementation: str | None) -> nn.Module:
    config = _config(source, attn_implementation)
    cls = _model_class(config)
    kwargs: dict[str, Any] = {"trust_remote_code": False, "dtype": dtype if dtype is not None else "auto"}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return cls.from_pretrained(source, config=config, **kwargs)
    except OSError as err:
        raise ModelLoadError(_not_available(source, err)) from None


def _load_pruned(folder: Path, record: dict, dtype: torch.dtype | None, attn_implementation: str | None) -> nn.Module:
    """Build the model from its config, cut it to the saved shapes, then load the saved weights."""
    config = _config(folder, attn_implementation)
    cls = _model_class(config)
    dtype = dtype if dtype is not None else getattr(config, "dtype", None)
    model = cls.from_config(config, dtype=dtype) if cls.__name__.startswith("AutoModel") else cls._from_config(
        config, dtype=dtype
    )
    kept = {int(k): list(v) for k, v in record["kept"].items()}
    keep_only(model, kept)
    pruning_history(model).clear()
    pruning_history(model).extend(record.get("history", []))
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"{folder} has no {WEIGHTS_FILE} (Sentinel never loads pickle files).")
    try:
        missing, unexpected = safetensors_load_into(model, str(weights), strict=False)
    except RuntimeError as err:  # shape mismatch: the weights were not cut the way the record says
        raise ModelLoadError(
            f"The weights in {folder} do not match its pruning record ({str(err).splitlines()[0]}); "
            "the folder is damaged or was edited by hand."
        ) from None
    if missing or unexpected:
        raise ModelLoadError(
            f"The weights in {folder} do not match its pruning record (missing: {list(missing)[:5]}, "
            f"unexpected: {list(unexpected)[:5]}); the folder is damaged or was edited by hand."
        )
    masked = {int(k): list(v) for k, v in record.get("masked", {}).items()}
    if masked:
        mask_heads(model, masked)
        del pruning_history(model)[len(record.get("history", [])):]
    return model


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"Cannot read {path}: {err}") from None
    if record.get("format") != RECORD_FORMAT or "kept" not in record:
        raise ModelLoadError(f"{path} is not a Sentinel pruning record of format {RECORD_FORMAT}.")
    return record


def _load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except OSError as err:
        raise ModelLoadError(_not_available(source, err)) from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _not_available(source: str | Path, err: Exception) -> str:
    if Path(source).expanduser().is_dir():
        return f"Cannot load {source}: {err}"
    if str(source).startswith(("/", ".", "~")) or str(source).count("/") > 1:
        return f"No model folder at {source}; check the path."
    return (
        f"Model {source!r} is not available locally and could not be fetched from the Hugging Face hub "
        f"(offline, or no such repository). Give a local folder, or download it on a machine with network. ({err})"
    )


def pruning_record(model: nn.Module, note: dict | None = None) -> dict[str, Any]:
    """The JSON record save_model writes: kept and masked original heads per layer, and their history."""
    heads = model_heads(model)
    layout = heads.layout()
    return {
        "format": RECORD_FORMAT,
        "family": layout.family,
        "num_layers": layout.num_layers,
        "num_heads": layout.num_heads,
        "num_kv_heads": layout.num_kv_heads,
        "kept": {str(layer): list(heads.present(layer)) for layer in range(heads.num_layers)},
        "masked": {str(layer): list(heads.masked(layer)) for layer in range(heads.num_layers) if heads.masked(layer)},
        "history": list(pruning_history(model)),
        "note": note or {},
    }


def save_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None,
    path: str | os.PathLike,
    note: dict | None = None,
) -> Path:
    """Write a Hugging Face folder with safetensors weights and the pruning record, atomically.

    Everything is written into a temporary sibling folder which then replaces `path`, so a reader
    never sees a half-written model.
    """
    target = Path(path).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise SentinelError(f"Cannot save to {target}: it is a file. Choose a folder path.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as err:
        raise SentinelError(f"Cannot write to {target.parent}: {err.strerror}. Choose a writable folder.") from None
    try:
        # Config through transformers; weights under the module's own parameter names, one safetensors
        # file, shared (tied) tensors stored once. Plain transformers can load it when nothing was removed.
        model.config.save_pretrained(staging)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(staging)
        safetensors_save_from(model, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        (staging / RECORD_FILE).write_text(json.dumps(pruning_record(model, note), indent=2), encoding="utf-8")
        _replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _replace_folder(staging: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)
