"""Which weight matrices weight-level sparsity touches: the `nn.Linear` / GPT-2 `Conv1D` weights of the body.

The body is the model's stack of transformer blocks (its largest `nn.ModuleList`); embeddings, the LM head,
norms, poolers and MLM heads are outside it and left alone unless named in `include`. Every score and mask
is computed in the (out, in) orientation of `nn.Linear`; `Target.to_storage` turns it back into the
module's own orientation (GPT-2's `Conv1D` stores (in, out)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from sentinel.errors import SentinelError
from sentinel.models.state import block_layers


class SparsityError(SentinelError, ValueError):
    """A sparsity request is invalid (bad sparsity, pattern, method, schedule) or cannot apply to this model."""


@dataclass(frozen=True)
class Target:
    """One prunable weight matrix: its module path, the module, and the block (layer) it sits in."""

    name: str                 # module path, e.g. "transformer.h.3.attn.c_attn"
    module: nn.Module
    layer: int | None         # original layer of its block (None for modules outside the stack, e.g. an included
                              # lm_head); differs from the module path's index once blocks were removed
    matrix: str               # path inside the block, e.g. "attn.c_attn"

    @property
    def transposed(self) -> bool:
        """True when the module stores its weight as (in, out) (GPT-2's Conv1D)."""
        return isinstance(self.module, Conv1D)

    def to_matrix(self, tensor: torch.Tensor) -> torch.Tensor:
        """A weight-shaped tensor as an (out, in) view."""
        return tensor.t() if self.transposed else tensor

    def to_storage(self, matrix: torch.Tensor) -> torch.Tensor:
        """An (out, in) tensor in the module's own weight orientation (contiguous)."""
        return (matrix.t() if self.transposed else matrix).contiguous()

    def weight(self) -> torch.Tensor:
        """The effective weight as (out, in): under a pruning reparametrization, weight_orig × mask."""
        module = self.module
        if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
            return self.to_matrix(module.weight_orig * module.weight_mask)
        return self.to_matrix(module.weight)

    def parameter(self) -> nn.Parameter:
        """The trainable parameter behind the weight (weight_orig while pruned)."""
        return self.module.weight_orig if hasattr(self.module, "weight_orig") else self.module.weight

    @property
    def numel(self) -> int:
        return self.parameter().numel()


def _is_matrix(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, Conv1D))


def _block_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's transformer block stack: the ModuleList holding the most Linear/Conv1D parameters."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            size = sum(m.weight.numel() for m in module.modules() if _is_matrix(m))
            if size and (best is None or size > best[0]):
                best = (size, name, module)
    if best is None:
        raise SparsityError(f"{type(model).__name__} has no stack of blocks with Linear/Conv1D layers; "
                            "weight-level sparsity supports transformer models (GPT-2, Llama, OPT, BERT ...).")
    return best[1], best[2]


def find_targets(model: nn.Module, include: tuple[str, ...] = ()) -> list[Target]:
    """The body's Linear/Conv1D matrices in module order, plus the modules named in `include` (e.g. "lm_head").

    An included module whose weight is shared with another parameter (a tied LM head) is refused: pruning
    it would also prune the embedding.
    """
    stack_name, stack = _block_stack(model)
    layers = block_layers(stack)
    targets = []
    for index, block in enumerate(stack):
        for sub, module in block.named_modules():
            if _is_matrix(module):
                targets.append(Target(f"{stack_name}.{index}.{sub}", module, layers[index], sub))
    modules = dict(model.named_modules())
    for name in include:
        module = modules.get(name)
        if module is None or not _is_matrix(module):
            raise SparsityError(f"--include {name!r} is not a Linear/Conv1D module of this model.")
        if any(t.name == name for t in targets):
            continue
        weight = module.weight_orig if hasattr(module, "weight_orig") else module.weight
        shared = [n for n, p in model.named_parameters(remove_duplicate=False) if p is weight]
        if len(shared) > 1:
            raise SparsityError(f"{name}.weight is tied to {', '.join(s for s in shared if not s.startswith(name))}; "
                                "pruning it would prune that too. Untie the weights first or leave it out.")
        targets.append(Target(name, module, None, name))
    return targets

