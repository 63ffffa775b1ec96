"""GPU check: one prepared run that proves every GPU path of Sentinel and times it, in a few minutes.

    PYTHONPATH=. python bench/gpu_check.py [--out FILE.json] [--quick] [--only STEP,...]

Steps, each printing one line with its result; a failing step prints why (exception type and message)
and the run goes on to the next, exiting 1 if any step failed:

  1. environment       GPU name and memory, torch / CUDA / transformers versions, TF32 and bf16 support
  2. load              the bundled model through `sentinel.load_model(device=, dtype=)` (also with the
                       dashboard selector's "auto" choices), a GPT-2-small-shaped and a Llama-shaped GQA
                       random model (built from configs, no downloads), in fp32, fp16 and bf16 (where supported)
  3. masked_vs_removed for every unit kind (50% of heads, 50% of neurons, 25% of blocks): masking them equals
                       removing them, for a forward pass and for cached greedy `generate()`, with a tolerance
                       per dtype; unmasking restores the unpruned output exactly
  4. analysis_vs_cpu   entropy (eager attention), magnitude and gradient importance on the device, compared
                       with the same run on the CPU (stated tolerance per metric)
  5. finetune          10 steps with mixed precision (bf16 where supported, else fp16) through the CLI's own
                       path (`sentinel.training.job.run_finetune` -> the Trainer) from a saved model with half
                       its neurons masked, heads pruned (mask) by the job: masked heads' and neurons' weights
                       unchanged, masked outputs still zero (masked == removed after training)
  6. timings           the transformer body of both random models at batch 16 x 512, unpruned vs 50% heads,
                       50% neurons, 50% heads + 50% neurons and 25% blocks, each masked and removed (CUDA events, warm-up,
                       interleaved rounds, medians), decode tokens/s, and measured vs FLOP-predicted speedup
  7. evaluate_cli      `python -m sentinel evaluate --device cuda` as a subprocess (and on the CPU, to compare
                       perplexities)
  8. sparse_2of4       2:4 weight sparsity on the GPU: every Linear of the Llama-shaped body masked 2:4 by
                       `sentinel.sparsity.masks.nm_mask` (largest |w| of each 4), then run through torch's
                       semi-structured sparse kernels (`torch.sparse.to_sparse_semi_structured`, fp16/bf16, compute
                       capability 8.0+) against the same masked weights stored dense: the outputs agree within
                       SPARSE_24_TOL and the body is timed both ways (interleaved, medians). Without CUDA only the
                       2:4 mask is checked (the sparse kernels exist on CUDA only) and the step says so.

Everything goes into one JSON file (--out) and a short table is printed. Without a CUDA device the same
steps run on the CPU at tiny sizes (--quick implied), the run says no CUDA device was found, and exits 0
when every step passed: tests/bench/test_gpu_check.py runs it that way, so the script cannot rot.

Unit kinds: the masked-vs-removed and timing steps loop over UNIT_KINDS (heads, neurons, blocks: a plan and the
library's mask / unmask / remove for each) and TIMING_VARIANTS; the predicted speed-up is the ratio of
`sentinel.models.flops.forward_flops` with `lm_head=False` (the body), which reads the model's actual shapes
(GQA, gated MLPs, removed units).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:   # run as `python bench/gpu_check.py` from a checkout
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402
from torch import nn  # noqa: E402

import sentinel  # noqa: E402
from sentinel import (load_model, mask_heads, mask_layers, mask_neurons, remove_heads, remove_layers,  # noqa: E402
                      remove_neurons, unmask_heads, unmask_layers, unmask_neurons)
from sentinel.evaluation.size import parameter_count  # noqa: E402
from sentinel.models.heads import model_heads  # noqa: E402
from sentinel.models.state import model_state  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "gpu_check.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# Masked vs removed: max |masked - removed| / max |removed| over the logits, per dtype. Both compute the same
# sums; only the accumulation order differs (the removed model's matrices are narrower), so the gap is a few
# roundings of the dtype's last bit, compounded over the layers.
MASKED_VS_REMOVED_TOL = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
# Unmasking drops the gate altogether, so the unpruned computation comes back bit for bit.
UNMASK_TOL = 0.0
# Device vs CPU scores (both fp32): max |device - cpu| / max |cpu| per metric; pruned heads must be NaN on both.
ANALYSIS_TOL = {"entropy": 1e-4, "entropy_normalized": 1e-4, "magnitude": 1e-6, "gradient": 1e-3}
# `sentinel evaluate` perplexity on the device vs on the CPU (fp32 both), relative.
PERPLEXITY_TOL = 1e-3
# 2:4 sparse kernels vs the same masked weights stored dense (fp16/bf16 body output), relative: the kernels sum the
# kept products in another order.
SPARSE_24_TOL = {"float16": 1e-2, "bfloat16": 5e-2}


# ----------------------------------------------------------------------------------------------- sizes

@dataclass(frozen=True)
class Sizes:
    """Every size the run uses; FULL for a GPU, QUICK for the CPU dry run.

    FULL is estimated (never yet run on a GPU) at about 4 minutes on one H200, the larger part in the timings step:
    2 models x 2 dtypes x 9 variants = 36 bodies of ~1.5-1.6 TFLOP each (16 x 512 tokens, `forward_flops` of the
    body), 18 calls each, under 15 s in all even at fp32 without TF32; decode dominates: 36 x 3 generate() runs x
    33 cached steps at batch 16, launch-bound at ~25 ms a step, about 90 s. The other steps: ~2 s for each of 27
    masked-vs-removed cases (~55 s), ~40 s for the two `sentinel evaluate` subprocesses, ~50 s for loading,
    analysis and fine-tuning.
    """

    gpt2: dict[str, Any]                 # GPT2Config kwargs of the GPT-2-small-shaped model
    llama: dict[str, Any]                # LlamaConfig kwargs of the Llama-shaped GQA model
    gen_batch: int                       # masked vs removed: prompts, prompt length and new tokens
    gen_prompt: int
    gen_new: int
    analysis_batches: int                # analysis: batches x sequences x tokens
    analysis_batch: int
    analysis_seq: int
    finetune_batch: int
    finetune_block: int
    finetune_eval_tokens: int
    finetune_docs: int | None            # None: the bundled corpus; N: a .txt of N bundled documents (`--text`)
    time_batch: int                      # timings: the body at batch x seq
    time_seq: int
    time_warmup: int
    time_repeats: int
    decode_batch: int
    decode_prompt: int
    decode_new: int
    decode_runs: int
    evaluate_args: tuple[str, ...]       # extra `sentinel evaluate` arguments


FULL = Sizes(
    gpt2=dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257),
    llama=dict(num_hidden_layers=8, hidden_size=1024, num_attention_heads=16, num_key_value_heads=4, head_dim=64,
               intermediate_size=2816, vocab_size=32000, max_position_embeddings=2048),
    gen_batch=2, gen_prompt=32, gen_new=16,
    analysis_batches=2, analysis_batch=4, analysis_seq=256,
    finetune_batch=16, finetune_block=256, finetune_eval_tokens=4096, finetune_docs=None,
    time_batch=16, time_seq=512, time_warmup=3, time_repeats=15,
    decode_batch=16, decode_prompt=128, decode_new=32, decode_runs=2,
    evaluate_args=("--runs", "3"),
)
QUICK = Sizes(
    gpt2=dict(n_layer=2, n_head=4, n_embd=64, n_positions=128, vocab_size=512),
    llama=dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=8, num_key_value_heads=2, head_dim=8,
               intermediate_size=176, vocab_size=512, max_position_embeddings=128),
    gen_batch=2, gen_prompt=8, gen_new=4,
    analysis_batches=2, analysis_batch=2, analysis_seq=16,
    finetune_batch=4, finetune_block=32, finetune_eval_tokens=64, finetune_docs=60,
    time_batch=2, time_seq=32, time_warmup=1, time_repeats=3,
    decode_batch=2, decode_prompt=8, decode_new=4, decode_runs=1,
    evaluate_args=("--runs", "1", "--max-tokens", "512", "--prompt-tokens", "16", "--new-tokens", "4"),
)


# ----------------------------------------------------------------------------------------------- unit kinds

def half_heads_plan(model: nn.Module) -> dict[int, list[int]]:
    """Half of every layer's heads: every other K/V group (every other head without GQA), so removal is allowed."""
    heads = model_heads(model)
    size = heads.kv_group_size
    chosen = [h for kv in range(0, heads.num_kv_heads, 2) for h in range(kv * size, (kv + 1) * size)]
    return {layer: list(chosen) for layer in range(heads.num_layers)}


def half_neurons_plan(model: nn.Module) -> dict[int, list[int]]:
    """Half of every layer's MLP neurons: every other one (original indices)."""
    state = model_state(model)
    return {layer: list(range(0, state.num_neurons, 2)) for layer in state.present_blocks()}


def quarter_blocks_plan(model: nn.Module) -> list[int]:
    """A quarter of the blocks (layers 1, 5, 9, ...: never the first); at least one, so 1 of 2 in the dry run."""
    return [layer for layer in range(model_state(model).num_layers) if layer % 4 == 1]


@dataclass(frozen=True)
class UnitKind:
    """One kind of prunable unit as this check exercises it: a plan (`share` of the kind's units) and the
    library's mask / unmask / remove for it."""

    name: str
    share: str
    plan: Callable[[nn.Module], Any]
    mask: Callable[[nn.Module, Any], Any]
    unmask: Callable[[nn.Module, Any], Any]
    remove: Callable[[nn.Module, Any], Any]


UNIT_KINDS: tuple[UnitKind, ...] = (
    UnitKind("heads", "50%", half_heads_plan, mask_heads, unmask_heads, remove_heads),
    UnitKind("neurons", "50%", half_neurons_plan, mask_neurons, unmask_neurons, remove_neurons),
    UnitKind("blocks", "25%", quarter_blocks_plan, mask_layers, unmask_layers, remove_layers),
)
KINDS = {kind.name: kind for kind in UNIT_KINDS}
# Each entry is timed masked and removed: 50% heads, 50% neurons, both, 25% blocks.
TIMING_VARIANTS: tuple[tuple[str, ...], ...] = (("heads",), ("neurons",), ("heads", "neurons"), ("blocks",))


def apply_units(model: nn.Module, kinds: tuple[str, ...], how: str) -> dict[str, Any]:
    """Mask or remove each named unit kind's plan (plans taken before any change, original indices); returns them."""
    plans = {name: KINDS[name].plan(model) for name in kinds}
    for name, plan in plans.items():
        getattr(KINDS[name], how)(model, plan)
    return plans


# ----------------------------------------------------------------------------------------------- helpers

def body_flops(model: nn.Module, batch: int, seq: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of the transformer body at batch x seq: the library's own per-token count
    (sentinel.models.flops.forward_flops with lm_head=False, read off the model's shapes, so GQA, gated MLPs and
    removed heads, neurons and blocks are all counted) times the tokens. Masked units still run, so they still count."""
    from sentinel.models.flops import forward_flops

    return batch * seq * forward_flops(model, seq, lm_head=False)


def rel_diff(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value - reference| / max |reference| in float32 (inf when either holds a non-finite number)."""
    a, b = value.detach().float(), reference.detach().float()
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
        return math.inf
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def random_ids(vocab: int, batch: int, seq: int, seed: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, seq), generator=generator).to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory() -> None:
    """Give the GPU memory of dropped models back between cases (on the CPU refcounting frees them already)."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def supported_dtypes(device: torch.device) -> list[str]:
    """fp32 and fp16 everywhere; bf16 on the CPU and on GPUs that support it."""
    names = ["float32", "float16"]
    if device.type == "cpu" or torch.cuda.is_bf16_supported():
        names.append("bfloat16")
    return names


class CheckFailed(AssertionError):
    """One or more comparisons of a step were outside their tolerance; `rows` holds every comparison made."""

    def __init__(self, message: str, rows: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.rows = rows


@dataclass
class Checks:
    """The comparisons a step made, each with its value and tolerance; the step fails if any is off."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def within(self, what: str, value: float, tol: float) -> bool:
        ok = math.isfinite(value) and value <= tol
        self.rows.append({"check": what, "value": value, "tolerance": tol, "ok": ok})
        return ok

    def true(self, what: str, ok: bool, detail: Any = None) -> bool:
        self.rows.append({"check": what, "ok": bool(ok), "detail": detail})
        return bool(ok)

    def error(self, what: str, err: BaseException) -> None:
        """A case that raised: recorded as a failed check with its type and message (the step goes on)."""
        self.rows.append({"check": what, "ok": False, "error": f"{type(err).__name__}: {err}",
                          "traceback": traceback.format_exc(limit=-4)})

    def raise_if_failed(self) -> None:
        bad = [r for r in self.rows if not r["ok"]]
        if bad:
            first = bad[0]
            why = first.get("error") or (f"{first['value']:.3g} > {first['tolerance']:g}" if "value" in first
                                         else first.get("detail"))
            raise CheckFailed(f"{len(bad)} of {len(self.rows)} checks failed; first: {first['check']}: {why}",
                              self.rows)


# ----------------------------------------------------------------------------------------------- context

class Context:
    """The device, sizes and the random models (built once on the CPU in fp32, seeded) that steps share."""

    def __init__(self, device: torch.device, sizes: Sizes, quick: bool) -> None:
        self.device = device
        self.sizes = sizes
        self.quick = quick
        self._base: dict[str, nn.Module] = {}
        self.timings: list[dict[str, Any]] = []

    def base_model(self, name: str) -> nn.Module:
        """The fp32 CPU original of a random model ("gpt2-small" or "llama-gqa"), with non-zero biases."""
        if name not in self._base:
            if name == "gpt2-small":
                config = transformers.GPT2Config(**self.sizes.gpt2, bos_token_id=0, eos_token_id=0)
                cls: type = transformers.GPT2LMHeadModel
            elif name == "llama-gqa":
                config = transformers.LlamaConfig(**self.sizes.llama, bos_token_id=0, eos_token_id=0, pad_token_id=0)
                cls = transformers.LlamaForCausalLM
            else:
                raise KeyError(f"no random model {name!r}")
            config._attn_implementation = "sdpa"
            torch.manual_seed(0)
            model = cls(config)
            with torch.no_grad():   # GPT-2 initialises biases to 0; random ones make bias handling count
                for pname, param in model.named_parameters():
                    if pname.endswith("bias"):
                        param.normal_(0, 0.02)
            self._base[name] = model.eval()
        return self._base[name]

    def model(self, name: str, dtype: str, device: torch.device | None = None) -> nn.Module:
        """A fresh copy of a model on the device (default: the run's) in `dtype`; "bundled" goes through load_model."""
        device = device or self.device
        if name == "bundled":
            return load_model(None, device=str(device), dtype=dtype).model
        return copy.deepcopy(self.base_model(name)).to(device=device, dtype=DTYPES[dtype]).eval()

    @property
    def model_names(self) -> list[str]:
        return ["bundled", "gpt2-small", "llama-gqa"]


# ----------------------------------------------------------------------------------------------- steps

def step_environment(ctx: Context) -> tuple[str, dict[str, Any]]:
    """Versions, device and number formats; says so when no CUDA device was found."""
    info: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "processor": platform.processor(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "transformers": transformers.__version__,
        "sentinel": sentinel.__version__, "cpu_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "git_commit": _git_commit(),
    }
    try:
        import accelerate
        info["accelerate"] = accelerate.__version__
    except ImportError as err:   # the Trainer needs it; step 5 will fail and say so
        info["accelerate"] = f"missing ({err})"
    if ctx.device.type != "cuda":
        info["note"] = "no CUDA device found: CPU dry run at tiny sizes (--quick implied)"
        return f"no CUDA device found; CPU dry run, torch {torch.__version__}, transformers " \
               f"{transformers.__version__}, {info['cpu_threads']} threads", info
    props = torch.cuda.get_device_properties(ctx.device)
    info.update({
        "gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "compute_capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
        "gpu_count": torch.cuda.device_count(), "cudnn": torch.backends.cudnn.version(),
        "bf16_supported": torch.cuda.is_bf16_supported(),
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    })
    return (f"{props.name}, {info['gpu_memory_gib']} GiB, CUDA {torch.version.cuda}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, bf16 {'yes' if info['bf16_supported'] else 'no'}"), info


def _git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as err:
        return f"unknown ({type(err).__name__}: {err})"
    return done.stdout.strip() if done.returncode == 0 else f"unknown (git: {done.stderr.strip()[:80]})"


def step_load(ctx: Context) -> tuple[str, dict[str, Any]]:
    """Each model in each dtype on the device: parameters where and what they should be, a finite forward."""
    checks = Checks()
    cases: list[dict[str, Any]] = []
    dtypes = supported_dtypes(ctx.device)
    # The dashboard's Model page passes its selector's strings straight to load_model ("auto" dtype -> None).
    # The device is named as a user names it ("cuda"), as `sentinel --device cuda` and the selector do.
    choices = [("bundled", d, ctx.device.type, d) for d in dtypes] + [("bundled", "auto", "auto", None)]
    choices += [(name, d, ctx.device.type, d) for name in ("gpt2-small", "llama-gqa") for d in dtypes]
    for name, label, device_name, dtype in choices:
        what = f"{name} {label} on {device_name}"
        try:
            start = time.perf_counter()
            if name == "bundled":
                loaded = load_model(None, device=device_name, dtype=dtype)
                model, expect_dtype = loaded.model, DTYPES[dtype] if dtype else torch.float32
            else:
                model, expect_dtype = ctx.model(name, dtype), DTYPES[dtype]
            synchronize(ctx.device)
            seconds = time.perf_counter() - start
            params = list(model.parameters())
            devices = {p.device.type for p in params}
            dtypes_seen = {str(p.dtype).removeprefix("torch.") for p in params}
            ids = random_ids(model.config.vocab_size, 2, 16, seed=1, device=params[0].device)
            with torch.inference_mode():
                logits = model(input_ids=ids).logits
            ok = checks.true(f"{what}: parameters on {ctx.device.type}", devices == {ctx.device.type}, sorted(devices))
            ok &= checks.true(f"{what}: parameters in {expect_dtype}", dtypes_seen == {str(expect_dtype)[6:]},
                              sorted(dtypes_seen))
            ok &= checks.true(f"{what}: finite logits", bool(torch.isfinite(logits).all()))
            cases.append({"model": name, "dtype": label, "device": device_name, "seconds": seconds, "ok": ok,
                          "parameters": parameter_count(model), "config": _shape(model)})
            del model, logits
        except Exception as err:   # noqa: BLE001 - recorded as a failed case, the step fails below
            checks.error(what, err)
        free_memory()
    checks.raise_if_failed()
    return f"{len(cases)} loads ok ({', '.join(dtypes)}; bundled, gpt2-small, llama-gqa)", {
        "cases": cases, "checks": checks.rows}


def _shape(model: nn.Module) -> dict[str, Any]:
    layout = model_heads(model).layout()
    return {"family": layout.family, "layers": layout.num_layers, "heads": layout.num_heads,
            "kv_heads": layout.num_kv_heads, "head_dim": layout.head_dim, "hidden": layout.hidden_size,
            "vocab": model.config.vocab_size}


def _generate(model: nn.Module, ids: torch.Tensor, new: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached greedy generation of exactly `new` tokens.

    Returns (sequences [batch, prompt + new], logits [new, batch, vocab]).
    """
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                         do_sample=False, use_cache=True, pad_token_id=0, output_logits=True,
                         return_dict_in_generate=True)
    return out.sequences, torch.stack(out.logits)


def compare_generations(checks: Checks, what: str, got: tuple[torch.Tensor, torch.Tensor],
                        ref: tuple[torch.Tensor, torch.Tensor], prompt: int, tol: float) -> dict[str, Any]:
    """Same tokens and logits within `tol`; a divergence is accepted only at a near tie of the reference's top two.

    Greedy decoding flips between two tokens whose logits differ by less than the numerical error, so a
    divergence where the reference's top-2 gap is within 2 * tol * max |logit| is reported, not failed; the
    logits must still agree up to and including that step.
    """
    (seq, logits), (ref_seq, ref_logits) = got, ref
    new_tokens, ref_new = seq[:, prompt:], ref_seq[:, prompt:]
    differs = (new_tokens != ref_new).any(dim=0).nonzero().flatten()
    upto = int(differs[0]) + 1 if len(differs) else logits.shape[0]
    diff = rel_diff(logits[:upto], ref_logits[:upto])
    checks.within(f"{what}: generate logits", diff, tol)
    info: dict[str, Any] = {"generate_logits_rel_diff": diff, "same_tokens": not len(differs)}
    if len(differs):
        step = int(differs[0])
        rows = (new_tokens[:, step] != ref_new[:, step]).nonzero().flatten()
        top2 = ref_logits[step, rows].float().topk(2, dim=-1).values          # [rows, 2]
        gap = float((top2[:, 0] - top2[:, 1]).max())
        allowed = 2 * tol * float(ref_logits.float().abs().max())
        info.update({"diverged_at_step": step, "top2_gap": gap, "near_tie_allowed_gap": allowed})
        checks.within(f"{what}: generate diverged at step {step} (top-2 gap vs allowed)", gap, allowed)
    return info


def step_masked_vs_removed(ctx: Context) -> tuple[str, dict[str, Any]]:
    """For every model, dtype and unit kind: masked == removed (forward, cached generate); unmask restores exactly."""
    checks = Checks()
    cases: list[dict[str, Any]] = []
    s = ctx.sizes
    for name in ctx.model_names:
        for dtype in supported_dtypes(ctx.device):
            for kind in UNIT_KINDS:
                what = f"{name} {dtype} {kind.name}"
                tol = MASKED_VS_REMOVED_TOL[dtype]
                try:
                    model = ctx.model(name, dtype)
                    ids = random_ids(model.config.vocab_size, s.gen_batch, s.gen_prompt, seed=2, device=ctx.device)
                    with torch.no_grad():
                        ref_logits = model(input_ids=ids, use_cache=False).logits
                        ref_gen = _generate(model, ids, s.gen_new)
                        plan = kind.plan(model)
                        removed = copy.deepcopy(model)
                        kind.remove(removed, plan)
                        kind.mask(model, plan)
                        masked_logits = model(input_ids=ids, use_cache=False).logits
                        removed_logits = removed(input_ids=ids, use_cache=False).logits
                        forward = rel_diff(masked_logits, removed_logits)
                        checks.within(f"{what}: forward masked vs removed", forward, tol)
                        gen = compare_generations(checks, f"{what} masked vs removed", _generate(model, ids, s.gen_new),
                                                  _generate(removed, ids, s.gen_new), s.gen_prompt, tol)
                        checks.true(f"{what}: removal shrinks the model",
                                    parameter_count(removed) < parameter_count(model))
                        kind.unmask(model, plan)
                        unmasked = rel_diff(model(input_ids=ids, use_cache=False).logits, ref_logits)
                        checks.within(f"{what}: unmask restores the forward", unmasked, UNMASK_TOL)
                        back = _generate(model, ids, s.gen_new)
                        checks.true(f"{what}: unmask restores generate()", torch.equal(back[0], ref_gen[0]) and
                                    torch.equal(back[1], ref_gen[1]))
                    cases.append({"model": name, "dtype": dtype, "kind": kind.name, "share": kind.share, "tolerance": tol,
                                  "forward_rel_diff": forward, "unmask_rel_diff": unmasked, **gen})
                    del model, removed
                except Exception as err:   # noqa: BLE001 - recorded as a failed case, the step fails below
                    checks.error(what, err)
                free_memory()
    checks.raise_if_failed()
    worst = {d: max((c["forward_rel_diff"] for c in cases if c["dtype"] == d), default=math.nan)
             for d in supported_dtypes(ctx.device)}
    ties = sum(1 for c in cases if not c["same_tokens"])
    summary = ("masked == removed, " + ", ".join(f"{d} max {v:.1e} (tol {MASKED_VS_REMOVED_TOL[d]:g})"
                                                  for d, v in worst.items())
               + f"; unmask exact; {len(cases)} cases, kinds {', '.join(KINDS)}"
               + (f"; {ties} generations parted at a near tie" if ties else ""))
    return summary, {"tolerances": {"masked_vs_removed": MASKED_VS_REMOVED_TOL, "unmask": UNMASK_TOL,
                                    "measure": "max |a - b| / max |b| over logits"},
                     "cases": cases, "checks": checks.rows}


def _analysis_batches(ctx: Context, name: str, vocab: int) -> list[dict[str, torch.Tensor]]:
    """Token batches for the analysis: the bundled validation text for the bundled model, random ids otherwise."""
    s = ctx.sizes
    if name == "bundled":
        from sentinel.data import cut_blocks, join_documents, load_texts

        tokenizer = load_model(None, device="cpu").tokenizer
        blocks = cut_blocks(join_documents(tokenizer, load_texts("bundled:validation")), s.analysis_seq)
        need = s.analysis_batches * s.analysis_batch
        if len(blocks) < need:
            raise ValueError(f"the bundled validation text gives {len(blocks)} blocks of {s.analysis_seq}; need {need}")
        ids = torch.tensor(blocks[:need], dtype=torch.long)
    else:
        ids = random_ids(vocab, s.analysis_batches * s.analysis_batch, s.analysis_seq, seed=3,
                         device=torch.device("cpu"))
    return [{"input_ids": chunk} for chunk in ids.split(s.analysis_batch)]


def step_analysis_vs_cpu(ctx: Context) -> tuple[str, dict[str, Any]]:
    """Entropy, magnitude and gradient scores on the device vs the same run on the CPU (fp32, some heads masked)."""
    from sentinel.metrics import compute_scores

    checks = Checks()
    cases: list[dict[str, Any]] = []
    cpu = torch.device("cpu")
    for name in ("bundled", "llama-gqa"):
        try:
            scores = {}
            batches = None
            for where in (ctx.device, cpu):
                model = ctx.model(name, "float32", where)
                heads = model_heads(model)
                first = list(range(heads.kv_group_size)) if heads.kv_group_size > 1 else [0, 1]
                mask_heads(model, {0: first})             # masked heads must come out NaN on both devices
                if batches is None:
                    batches = _analysis_batches(ctx, name, model.config.vocab_size)
                start = time.perf_counter()
                result = compute_scores(model, ["entropy", "magnitude", "gradient"], batches)
                synchronize(ctx.device)
                scores[where.type] = (result, time.perf_counter() - start)
                del model
                free_memory()
            (dev, dev_s), (ref, ref_s) = scores[ctx.device.type], scores["cpu"]
            case: dict[str, Any] = {"model": name, "device_seconds": dev_s, "cpu_seconds": ref_s}
            for metric, tol in ANALYSIS_TOL.items():
                a, b = dev[metric].values, ref[metric].values
                same_nan = torch.equal(torch.isnan(a), torch.isnan(b))
                checks.true(f"{name} {metric}: the same heads unscored (NaN) on both", same_nan and bool(
                    torch.isnan(b).any()))
                live = ~torch.isnan(b)
                diff = rel_diff(torch.where(live, a, 0), torch.where(live, b, 0)) if same_nan else math.inf
                checks.within(f"{name} {metric}: device vs CPU", diff, tol)
                case[f"{metric}_rel_diff"] = diff
            cases.append(case)
        except Exception as err:   # noqa: BLE001 - recorded as a failed case, the step fails below
            checks.error(name, err)
        free_memory()
    checks.raise_if_failed()
    worst = {m: max(c[f"{m}_rel_diff"] for c in cases) for m in ANALYSIS_TOL}
    return ("device == CPU: " + ", ".join(f"{m} {v:.1e} (tol {ANALYSIS_TOL[m]:g})" for m, v in worst.items())
            + (" [dry run: CPU vs CPU]" if ctx.device.type == "cpu" else "")), {
        "tolerances": {**ANALYSIS_TOL, "measure": "max |device - cpu| / max |cpu| over scored heads"},
        "cases": cases, "checks": checks.rows}


def _weights_change(before: nn.Module, after: nn.Module, kind: str, plan: dict[int, list[int]]
                    ) -> tuple[float, float]:
    """Max |change| of the masked units' weight slices (and biases) of `kind`, and of the active ones."""
    old_state, new_state = model_state(before), model_state(after)
    frozen, trained = 0.0, 0.0
    for layer in old_state.present_blocks():
        for unit in old_state.present(layer, kind):
            old, new = old_state.views(layer, kind, unit), new_state.views(layer, kind, unit)
            change = max(float((new[r].detach().cpu().float() - old[r].detach().float()).abs().max())
                         for r in old if old[r] is not None)
            if unit in plan.get(layer, []):
                frozen = max(frozen, change)
            else:
                trained = max(trained, change)
    return frozen, trained


def step_finetune(ctx: Context) -> tuple[str, dict[str, Any]]:
    """10 steps of mixed-precision fine-tuning through the CLI's job path, starting from a saved model with half the
    neurons masked and pruning heads 0 and 3 of every layer (mask) before training: masked heads and neurons stay
    exactly as they were."""
    from sentinel import apply_plan, save_model
    from sentinel.pruning import masked_heads
    from sentinel.pruning.units import masked_neurons
    from sentinel.training.config import FineTuneConfig
    from sentinel.training.job import FineTuneJob, run_finetune

    s = ctx.sizes
    checks = Checks()
    bf16 = ctx.device.type == "cpu" or torch.cuda.is_bf16_supported()
    precision = "bf16" if bf16 else "fp16"
    loaded = load_model(None, device="cpu")
    original = loaded.model                                           # the weights before training, fp32
    plan = {layer: [0, 3] for layer in range(model_heads(original).num_layers)}
    neuron_plan = half_neurons_plan(original)
    config = FineTuneConfig(max_steps=10, learning_rate=1e-4, batch_size=s.finetune_batch, block_size=s.finetune_block,
                            warmup_ratio=0.0, eval_every=0, eval_max_tokens=s.finetune_eval_tokens,
                            eval_batch_size=s.finetune_batch, checkpoint_every=0, mixed_precision=precision, seed=0)
    with tempfile.TemporaryDirectory(prefix="gpu-check-finetune-") as tmp:
        start_model = copy.deepcopy(original)                         # `sentinel finetune --model DIR` of a model
        mask_neurons(start_model, neuron_plan)                        # saved with masked neurons
        start_dir = save_model(start_model, loaded.tokenizer, Path(tmp) / "start")
        del start_model
        text = None                                                   # the bundled corpus, as the CLI's default
        if s.finetune_docs is not None:                               # dry run: a small --text file, faster to tokenize
            from sentinel.data import load_texts

            text = str(Path(tmp) / "train.txt")
            Path(text).write_text("\n\n".join(load_texts("bundled:validation")[:s.finetune_docs]), encoding="utf-8")
        job = FineTuneJob(out=str(Path(tmp) / "run"), config=config, model=str(start_dir), text=text,
                          prune_plan={str(k): v for k, v in plan.items()}, prune_mode="mask")
        start = time.perf_counter()
        summary = run_finetune(job, str(ctx.device))
        seconds = time.perf_counter() - start
        curves = json.loads((Path(tmp) / "run" / "result.json").read_text(encoding="utf-8"))
        tuned = load_model(summary["model"], device=str(ctx.device)).model
    checks.true("stopped after 10 completed steps", summary["stopped"] == "completed" and summary["steps"] == 10,
                {"stopped": summary["stopped"], "steps": summary["steps"]})
    losses = [loss for _, loss in curves["losses"]]
    checks.true("training losses finite", bool(losses) and all(math.isfinite(x) for x in losses), losses)
    checks.true("perplexity finite before and after", all(
        math.isfinite(summary[k]) for k in ("perplexity_before", "perplexity_after")))
    checks.true("the saved model still masks the planned heads", masked_heads(tuned) == plan,
                {str(k): v for k, v in masked_heads(tuned).items()})
    checks.true("the saved model still masks the planned neurons", masked_neurons(tuned) == neuron_plan,
                {str(k): len(v) for k, v in masked_neurons(tuned).items()})
    # Masked units' slices (heads: Q, K, V rows and biases, O columns; neurons: input rows and bias, output column)
    # must be bit-for-bit unchanged; active ones trained.
    changes = {kind: _weights_change(original, tuned, kind, p) for kind, p in (("head", plan), ("neuron", neuron_plan))}
    for kind, (frozen, trained) in changes.items():
        checks.within(f"masked {kind}s' weights unchanged (max |change|)", frozen, 0.0)
        checks.true(f"active {kind}s' weights trained", trained > 0, trained)
    # Masked units' outputs still zero: the tuned masked model equals a copy with those heads and neurons removed.
    removed = copy.deepcopy(tuned)
    apply_plan(removed, {"heads": plan, "neurons": neuron_plan}, "remove")
    ids = random_ids(tuned.config.vocab_size, 2, 32, seed=4, device=ctx.device)
    with torch.no_grad():
        diff = rel_diff(tuned(input_ids=ids).logits, removed(input_ids=ids).logits)
    checks.within("masked outputs still zero (tuned masked vs removed, fp32)", diff, MASKED_VS_REMOVED_TOL["float32"])
    checks.raise_if_failed()
    return (f"{precision} mixed precision, 10 steps in {summary['seconds']:.1f}s train time, loss {losses[0]:.3f} -> "
            f"{losses[-1]:.3f}, {summary['train_tokens_per_second']:,.0f} tok/s; masked heads' and neurons' weights "
            f"unchanged, masked == removed {diff:.1e}"), {
        "mixed_precision": precision, "seconds_total": seconds, "summary": summary, "losses": curves["losses"],
        "masked_plan": {str(k): v for k, v in plan.items()},
        "masked_neurons": {str(k): len(v) for k, v in neuron_plan.items()},
        "trained_max_change": {f"{kind}s": trained for kind, (_, trained) in changes.items()},
        "tolerances": {"masked_weights_change": 0.0, "masked_vs_removed_fp32": MASKED_VS_REMOVED_TOL["float32"]},
        "checks": checks.rows}


def time_calls(calls: dict[str, Callable[[], Any]], device: torch.device, warmup: int, repeats: int
               ) -> dict[str, list[float]]:
    """Seconds per call of each function: warm-up, then `repeats` rounds in rotating order (CUDA events on GPU)."""
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                calls[name]()
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end) / 1000)
            else:
                began = time.perf_counter()
                calls[name]()
                times[name].append(time.perf_counter() - began)
    return times


def step_timings(ctx: Context) -> tuple[str, dict[str, Any]]:
    """Body time at batch x seq and decode tokens/s, unpruned vs 50% masked / removed per variant; FLOP-predicted."""
    from sentinel.evaluation.speed import measure_speed

    s = ctx.sizes
    checks = Checks()
    rows: list[dict[str, Any]] = []
    dtypes = ["float32", "bfloat16" if "bfloat16" in supported_dtypes(ctx.device) else "float16"]
    for name in ("gpt2-small", "llama-gqa"):
        for dtype in dtypes:
            what = f"{name} {dtype}"
            try:
                models = {"unpruned": ctx.model(name, dtype)}
                for kinds in TIMING_VARIANTS:
                    label = "+".join(kinds)
                    for how, done in (("mask", "masked"), ("remove", "removed")):
                        variant = copy.deepcopy(models["unpruned"])
                        apply_units(variant, kinds, how)
                        models[f"{label} {done}"] = variant
                ids = random_ids(models["unpruned"].config.vocab_size, s.time_batch, s.time_seq, seed=5,
                                 device=ctx.device)

                def body_call(model: nn.Module) -> Callable[[], Any]:
                    def call() -> Any:
                        with torch.inference_mode():
                            return model.base_model(input_ids=ids, use_cache=False)
                    return call

                times = time_calls({k: body_call(m) for k, m in models.items()}, ctx.device, s.time_warmup,
                                   s.time_repeats)
                flops = {k: body_flops(m, s.time_batch, s.time_seq) for k, m in models.items()}
                base_t = statistics.median(times["unpruned"])
                for variant, model in models.items():
                    t = statistics.median(times[variant])
                    speed = measure_speed(model, None, prompt_tokens=s.decode_prompt, new_tokens=s.decode_new,
                                          runs=s.decode_runs, warmup=1, batch_size=s.decode_batch)
                    measured, predicted = base_t / t, flops["unpruned"] / flops[variant]
                    rows.append({
                        "model": name, "dtype": dtype, "variant": variant, "batch": s.time_batch, "seq": s.time_seq,
                        "body_ms_median": t * 1000, "body_ms_min": min(times[variant]) * 1000,
                        "body_ms_max": max(times[variant]) * 1000, "repeats": len(times[variant]),
                        "body_tflops": flops[variant] / t / 1e12, "flops": flops[variant],
                        "speedup_measured": measured, "speedup_predicted": predicted,
                        "measured_over_predicted": measured / predicted, "params": parameter_count(model),
                        "decode_tokens_per_s": speed.decode_tokens_per_s,
                        "prefill_tokens_per_s": speed.prefill_tokens_per_s,
                        "decode_batch": s.decode_batch, "decode_prompt": s.decode_prompt, "decode_new": s.decode_new,
                    })
                    checks.true(f"{what} {variant}: timings and throughput positive and finite",
                                t > 0 and math.isfinite(speed.decode_tokens_per_s) and speed.decode_tokens_per_s > 0)
                del models
            except Exception as err:   # noqa: BLE001 - recorded as a failed case, the step fails below
                checks.error(what, err)
            free_memory()
    ctx.timings = rows
    checks.raise_if_failed()
    removed = [r for r in rows if r["variant"].endswith("removed")]
    return "removed/unpruned body speedup " + ", ".join(
        f"{r['model']} {r['dtype']} {r['variant']} {r['speedup_measured']:.2f}x (FLOPs {r['speedup_predicted']:.2f}x)"
        for r in removed), {
        "method": ("body = model.base_model (embeddings, blocks, final norm; no LM head), inference_mode, "
                   + ("CUDA events" if ctx.device.type == "cuda" else "perf_counter")
                   + f", {s.time_warmup} warm-up calls each, {s.time_repeats} rounds in rotating order, medians; "
                   "decode: sentinel.evaluation.speed.measure_speed (greedy, cached)"),
        "rows": rows, "checks": checks.rows}


def step_evaluate_cli(ctx: Context) -> tuple[str, dict[str, Any]]:
    """`python -m sentinel evaluate --device <device> --json` as a subprocess; on a GPU also on the CPU to compare."""
    checks = Checks()
    runs: dict[str, dict[str, Any]] = {}
    devices = [ctx.device.type] + (["cpu"] if ctx.device.type != "cpu" else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    for device in devices:
        args = [sys.executable, "-m", "sentinel", "evaluate", "--device", device, "--json", *ctx.sizes.evaluate_args]
        if device == "cpu" and ctx.device.type != "cpu":
            args += ["--runs", "1"]       # the CPU run is for the perplexity; its speed is not the point
        start = time.perf_counter()
        done = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - start
        if not checks.true(f"evaluate --device {device} exits 0", done.returncode == 0,
                           {"returncode": done.returncode, "stderr": done.stderr[-2000:]}):
            continue
        result = json.loads(done.stdout)
        runs[device] = {"seconds": seconds, "command": " ".join(args[1:]), "result": result}
        checks.true(f"evaluate --device {device} ran on {device}", str(result["device"]).startswith(device),
                    result["device"])
        checks.true(f"evaluate --device {device}: finite perplexity", math.isfinite(result["perplexity"]))
    if "cpu" in runs and ctx.device.type in runs and ctx.device.type != "cpu":
        a, b = runs[ctx.device.type]["result"]["perplexity"], runs["cpu"]["result"]["perplexity"]
        checks.within(f"perplexity {ctx.device.type} vs cpu (relative)", abs(a - b) / b, PERPLEXITY_TOL)
    checks.raise_if_failed()
    head = runs[ctx.device.type]["result"]
    return (f"perplexity {head['perplexity']:.3f} over {head['tokens_evaluated']:,} tokens, prefill "
            f"{head['prefill_tokens_per_s']:,.0f} tok/s, decode {head['decode_tokens_per_s']:,.1f} tok/s on "
            f"{head['device']}" + (f" (CPU perplexity {runs['cpu']['result']['perplexity']:.3f})"
                                  if ctx.device.type != "cpu" else "")), {
        "tolerances": {"perplexity_vs_cpu": PERPLEXITY_TOL}, "runs": runs, "checks": checks.rows}


def _mask_2of4(model: nn.Module) -> list[str]:
    """Zero all but the 2 largest-|w| weights of every 4 inputs in each body Linear (in place); their names."""
    from sentinel.sparsity.masks import nm_mask

    names = []
    with torch.no_grad():
        for name, module in model.base_model.named_modules():
            if isinstance(module, nn.Linear) and module.in_features % 4 == 0:
                module.weight.mul_(nm_mask(module.weight.abs().float(), 2, 4).to(module.weight.dtype))
                names.append(name)
    return names


def step_sparse_2of4(ctx: Context) -> tuple[str, dict[str, Any]]:
    """2:4 sparse kernels vs dense storage of the same masked weights: equal outputs, timed body (CUDA only)."""
    s = ctx.sizes
    checks = Checks()
    model = copy.deepcopy(ctx.base_model("llama-gqa"))
    names = _mask_2of4(model)
    for name, module in model.base_model.named_modules():
        if name in names:
            groups = (module.weight.reshape(module.out_features, -1, 4) != 0).sum(dim=2)
            checks.true(f"{name}: at most 2 non-zero weights in every group of 4", bool((groups <= 2).all()))
    if ctx.device.type != "cuda":
        checks.raise_if_failed()
        return (f"2:4 masks checked on {len(names)} matrices; sparse kernels not timed (no CUDA device: "
                "torch's semi-structured sparse kernels run on CUDA only)"), {"matrices": len(names),
                                                                             "checks": checks.rows}
    major, minor = torch.cuda.get_device_capability(ctx.device)
    if major < 8:
        raise RuntimeError(f"2:4 sparse kernels need compute capability 8.0 or newer; this GPU has {major}.{minor}")
    from torch.sparse import to_sparse_semi_structured

    dtype = "bfloat16" if "bfloat16" in supported_dtypes(ctx.device) else "float16"
    dense = model.to(device=ctx.device, dtype=DTYPES[dtype]).eval()
    sparse = copy.deepcopy(dense)
    for name, module in sparse.base_model.named_modules():
        if name in names:
            module.weight = nn.Parameter(to_sparse_semi_structured(module.weight.detach()), requires_grad=False)
    ids = random_ids(dense.config.vocab_size, s.time_batch, s.time_seq, seed=6, device=ctx.device)

    def body(m: nn.Module) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                return m.base_model(input_ids=ids, use_cache=False).last_hidden_state
        return call

    checks.within(f"2:4 sparse vs dense-stored body output ({dtype}), relative", rel_diff(body(sparse)(),
                  body(dense)()), SPARSE_24_TOL[dtype])
    times = time_calls({"dense": body(dense), "sparse_2of4": body(sparse)}, ctx.device, s.time_warmup,
                       s.time_repeats)
    dense_t, sparse_t = statistics.median(times["dense"]), statistics.median(times["sparse_2of4"])
    checks.raise_if_failed()
    return (f"2:4 sparse body {dense_t / sparse_t:.2f}x dense ({dtype}, batch {s.time_batch} x {s.time_seq}, "
            f"{len(names)} matrices)"), {
        "dtype": dtype, "matrices": len(names), "batch": s.time_batch, "seq": s.time_seq,
        "dense_ms": [t * 1000 for t in times["dense"]], "sparse_ms": [t * 1000 for t in times["sparse_2of4"]],
        "speedup_median": dense_t / sparse_t, "checks": checks.rows}


STEPS: tuple[tuple[str, Callable[[Context], tuple[str, dict[str, Any]]]], ...] = (
    ("environment", step_environment),
    ("load", step_load),
    ("masked_vs_removed", step_masked_vs_removed),
    ("analysis_vs_cpu", step_analysis_vs_cpu),
    ("finetune", step_finetune),
    ("timings", step_timings),
    ("evaluate_cli", step_evaluate_cli),
    ("sparse_2of4", step_sparse_2of4),
)
STEP_NAMES = [name for name, _ in STEPS]


# ----------------------------------------------------------------------------------------------- runner

@dataclass
class StepResult:
    """What one step reported: passed or not, how long it took, its one-line summary or error, and its details."""

    name: str
    ok: bool
    seconds: float
    summary: str
    error: str | None = None
    traceback: str | None = None
    peak_gpu_mib: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def run_step(name: str, fn: Callable[[Context], tuple[str, dict[str, Any]]], ctx: Context) -> StepResult:
    """Run one step; any exception fails the step with its type and message (recorded, never swallowed)."""
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    start = time.perf_counter()
    try:
        summary, details = fn(ctx)
        result = StepResult(name, True, 0.0, summary, details=details)
    except Exception as err:   # noqa: BLE001 - the one place a broad catch is right: record it, run the next step
        result = StepResult(name, False, 0.0, f"{type(err).__name__}: {err}", error=f"{type(err).__name__}: {err}",
                            traceback=traceback.format_exc(),
                            details={"checks": err.rows} if isinstance(err, CheckFailed) else {})
    result.seconds = time.perf_counter() - start
    if ctx.device.type == "cuda":
        result.peak_gpu_mib = torch.cuda.max_memory_allocated(ctx.device) / 2**20
    free_memory()
    print(f"[{'ok' if result.ok else 'FAIL':4s}] {name:18s} {result.seconds:6.1f}s  {result.summary}", flush=True)
    return result


def print_table(results: list[StepResult], timings: list[dict[str, Any]]) -> None:
    """The short summary table: steps, then the timing rows."""
    print("\nstep                 result  seconds  peak GPU MiB")
    for r in results:
        peak = f"{r.peak_gpu_mib:,.0f}" if r.peak_gpu_mib is not None else "-"
        print(f"{r.name:20s} {'ok' if r.ok else 'FAIL':6s} {r.seconds:8.1f}  {peak:>12s}")
    if timings:
        print("\nmodel       dtype     variant                body ms  speedup  FLOP-pred  meas/pred  decode tok/s")
        for t in timings:
            print(f"{t['model']:11s} {t['dtype']:9s} {t['variant']:21s} {t['body_ms_median']:8.2f} "
                  f"{t['speedup_measured']:7.2f}x {t['speedup_predicted']:9.2f}x {t['measured_over_predicted']:10.2f} "
                  f"{t['decode_tokens_per_s']:13,.1f}")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a temporary sibling file, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, default=str)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file to write (default: {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (implied without a CUDA device)")
    parser.add_argument("--only", default=None, metavar="STEP,...",
                        help=f"run only these steps, e.g. to redo a failed one (default: all: {', '.join(STEP_NAMES)})")
    args = parser.parse_args(argv)
    steps = STEPS
    if args.only:
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in STEP_NAMES]
        if unknown or not wanted:
            parser.error(f"unknown step {', '.join(unknown) or '(none given)'}; choose from {', '.join(STEP_NAMES)}")
        steps = tuple((name, fn) for name, fn in STEPS if name in wanted)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    quick = args.quick or not cuda
    if not cuda:
        print("No CUDA device found: running the CPU dry run at tiny sizes (--quick implied).", flush=True)
    ctx = Context(device, QUICK if quick else FULL, quick)
    started = datetime.now(timezone.utc)
    began = time.perf_counter()
    results = [run_step(name, fn, ctx) for name, fn in steps]
    total = time.perf_counter() - began
    passed = all(r.ok for r in results)
    data = {
        "script": "bench/gpu_check.py", "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "started_utc": started.isoformat(timespec="seconds"), "seconds": total, "device": str(device), "cuda": cuda,
        "quick": quick, "note": None if cuda else "no CUDA device found: CPU dry run at tiny sizes (--quick implied)",
        "unit_kinds": list(KINDS), "timing_variants": ["+".join(v) for v in TIMING_VARIANTS],
        "sizes": asdict(ctx.sizes),
        "tolerances": {"masked_vs_removed": MASKED_VS_REMOVED_TOL, "unmask": UNMASK_TOL,
                       "analysis_vs_cpu": ANALYSIS_TOL, "perplexity_vs_cpu": PERPLEXITY_TOL,
                       "sparse_2of4": SPARSE_24_TOL},
        "all_passed": passed, "steps": [asdict(r) for r in results],
    }
    write_json(args.out, data)
    print_table(results, ctx.timings)
    print(f"\n{sum(r.ok for r in results)}/{len(results)} steps passed in {total:.0f}s on {device}"
          f"{'' if cuda else ' (no CUDA device: CPU dry run)'}; JSON: {args.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
