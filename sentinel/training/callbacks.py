"""Trainer callbacks: progress events, cancellation, checkpoints, and the unit-slice guard.

The guard is what keeps pruning honest during training: masked heads' Q/K/V/O slices, masked neurons'
rows and columns, and every weight of a masked attention / MLP part are restored after every
optimizer step (their gradients are already exactly zero through the 0 gate, so this only undoes
weight decay), and units that are fading in after growth get their update scaled by their
`lr_multiplier` — the same as a separate optimizer parameter group with lr × multiplier, which cannot be
made for a slice of a weight matrix. Their gates are advanced one step after every optimizer step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from sentinel.jobs import ProgressEvent
from sentinel.models.adapters.base import submodule
from sentinel.models.state import model_state
from sentinel.pruning.growth import advance_growth, growing_heads

logger = logging.getLogger(__name__)


class ProgressCallback(TrainerCallback):
    """Turns Trainer logs into ProgressEvents (step, loss, validation perplexity, tokens/s, ETA) and keeps curves."""

    def __init__(self, total_steps: int, start_step: int, tokens_per_step: int,
                 on_event: Callable[[ProgressEvent], None] | None = None,
                 loss_parts: Callable[[], tuple[float, float]] | None = None) -> None:
        self.total_steps = total_steps
        self.start_step = start_step
        self.tokens_per_step = tokens_per_step
        self.on_event = on_event
        self.loss_parts = loss_parts
        self.losses: list[tuple[int, float]] = []
        self.evaluations: list[tuple[int, float]] = []
        self.distill_parts: list[tuple[int, float, float]] = []   # (step, KL term, LM loss) when distilling
        self.train_seconds = 0.0
        self._began = 0.0
        self._step_began = 0.0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        self._began = time.perf_counter()

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        self._step_began = time.perf_counter()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        self.train_seconds += time.perf_counter() - self._step_began

    def tokens_per_second(self, state: TrainerState) -> float:
        return state.global_step * self.tokens_per_step / self.train_seconds if self.train_seconds > 0 else 0.0

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kw) -> None:
        """Every process keeps the curves; only the first one reports events."""
        if not logs:
            return
        step = self.start_step + state.global_step
        eta = None
        if state.global_step > 0:
            eta = (time.perf_counter() - self._began) / state.global_step * max(self.total_steps - step, 0)
        event = ProgressEvent(step=step, total_steps=self.total_steps, eta_seconds=eta,
                              tokens_per_second=self.tokens_per_second(state))
        if "loss" in logs:
            event.loss = float(logs["loss"])
            event.learning_rate = float(logs.get("learning_rate", 0.0))
            self.losses.append((step, event.loss))
            if self.loss_parts is not None:
                self.distill_parts.append((step, *self.loss_parts()))
        elif "eval_perplexity" in logs:
            event.tokens_per_second = None      # already reported with this step's loss
            event.val_perplexity = float(logs["eval_perplexity"])
            event.message = "evaluation"
            self.evaluations.append((step, event.val_perplexity))
        else:
            return
        if self.on_event is not None and state.is_world_process_zero:
            self.on_event(event)


class StopCallback(TrainerCallback):
    """Stops training at the end of the current step when `should_stop()` turns true; saves checkpoints."""

    def __init__(self, should_stop: Callable[[], bool] | None, checkpoint_every: int, start_step: int,
                 save: Callable[[int], None] | None) -> None:
        self.should_stop = should_stop
        self.checkpoint_every = checkpoint_every
        self.start_step = start_step
        self.save = save
        self.cancelled = False

    def _check(self, control: TrainerControl) -> None:
        if self.should_stop is not None and self.should_stop():
            self.cancelled = True
            control.should_training_stop = True

    def on_substep_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        self._check(control)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        step = self.start_step + state.global_step
        if self.save is not None and self.checkpoint_every and step % self.checkpoint_every == 0:
            self.save(step)
        self._check(control)


@dataclass
class _Slice:
    view: torch.Tensor              # a view into a parameter
    saved: torch.Tensor             # frozen value (masked heads) or pre-step value (growing heads)
    scale: float                    # 0: restore `saved`; m: keep m x this step's update
    owner: tuple[int, int, str]     # (layer, unit, kind) it belongs to


def _slices(parts: list[torch.Tensor | None], scale: float, owner: tuple[int, int, str], seen: set) -> list[_Slice]:
    """Slices for the given views, skipping ones already taken (K/V shared by grouped query heads)."""
    found = []
    for view in parts:
        key = None if view is None else (view.data_ptr(), tuple(view.shape), tuple(view.stride()))
        if view is not None and key not in seen:
            seen.add(key)
            found.append(_Slice(view, view.detach().clone(), scale, owner))
    return found


class HeadSliceGuard(TrainerCallback):
    """Keeps masked heads', neurons' and parts' weights unchanged and boosts/advances units fading in (module doc)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.frozen: list[_Slice] = []
        self.boosted: list[_Slice] = []

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        # Views are taken here, after the Trainer has moved the model to its device.
        heads = model_state(self.model)
        size = heads.kv_group_size
        seen: set = set()
        self.frozen = []
        for layer in heads.present_blocks():
            block = heads.block(layer)
            for index in heads.masked(layer, "part"):     # a masked part: all its projections stay as they are
                unit = heads.spec.units[heads.spec.parts[index].units]
                modules = [submodule(block, ".".join(p for p in (unit.root, s.path) if p)) for s in unit.slices]
                params = [p for m in modules for p in (getattr(m, "weight_orig", m.weight), m.bias)   # weight_orig:
                          if isinstance(p, nn.Parameter)]                                       # a sparse model's
                self.frozen += _slices(params, 0.0, (layer, index, "part"), seen)
            for neuron in heads.masked(layer, "neuron"):
                views = heads.views(layer, "neuron", neuron)
                self.frozen += _slices(list(views.values()), 0.0, (layer, neuron, "neuron"), seen)
        for layer in range(heads.num_layers):
            masked = set(heads.masked(layer))
            for head in sorted(masked):
                views = heads.head_weights(layer, head)
                group = set(range((head // size) * size, (head // size + 1) * size)) & set(heads.present(layer))
                parts = [views.q, views.o, views.q_bias]
                if group <= masked:   # K/V shared with an active query head keep training for that head
                    parts += [views.k, views.v, views.k_bias, views.v_bias]
                self.frozen += _slices(parts, 0.0, (layer, head, "head"), seen)
        self.boosted = []
        fades = growing_heads(self.model)
        for fade in fades:
            if fade.lr_multiplier == 1.0:
                continue
            if fade.kind != "head":
                views = heads.views(fade.layer, fade.kind, fade.head)
                self.boosted += _slices(list(views.values()), fade.lr_multiplier, (fade.layer, fade.head, fade.kind),
                                        seen)
                continue
            views = heads.head_weights(fade.layer, fade.head)
            group = set(range((fade.head // size) * size, (fade.head // size + 1) * size))
            fading = {f.head for f in fades if f.layer == fade.layer}
            parts = [views.q, views.o, views.q_bias]
            if group & set(heads.present(fade.layer)) <= fading:
                parts += [views.k, views.v, views.k_bias, views.v_bias]
            self.boosted += _slices(parts, fade.lr_multiplier, (fade.layer, fade.head, "head"), seen)
        if self.frozen or self.boosted:
            logger.info("Guarding %d masked and boosting %d growing weight slices", len(self.frozen), len(self.boosted))

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                              **kw) -> None:
        with torch.no_grad():
            for item in self.boosted:
                item.saved.copy_(item.view)

    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                          **kw) -> None:
        with torch.no_grad():
            for item in self.frozen:
                item.view.copy_(item.saved)
            for item in self.boosted:
                item.view.add_((item.scale - 1.0) * (item.view - item.saved))

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw) -> None:
        if growing_heads(self.model):
            still = {(f.layer, f.head, f.kind) for f in advance_growth(self.model)}
            self.boosted = [item for item in self.boosted if item.owner in still]
