"""Architecture adapters, one per family, chosen by the attention modules a model actually has."""

from __future__ import annotations

import logging

from torch import nn

from sentinel.errors import UnsupportedModelError
from sentinel.models.adapters.base import FamilyAdapter
from sentinel.models.adapters.bert import BertAdapter
from sentinel.models.adapters.falcon import FalconAdapter
from sentinel.models.adapters.gpt2 import GPT2Adapter
from sentinel.models.adapters.gpt_neox import GPTNeoXAdapter
from sentinel.models.adapters.gptj import GPTJAdapter
from sentinel.models.adapters.llama import LlamaAdapter
from sentinel.models.adapters.opt import OPTAdapter
from sentinel.models.adapters.phi import PhiAdapter
from sentinel.models.adapters.phi3 import Phi3Adapter

logger = logging.getLogger(__name__)

ADAPTERS: tuple[FamilyAdapter, ...] = (GPT2Adapter(), BertAdapter(), LlamaAdapter(), OPTAdapter(), GPTNeoXAdapter(),
                                   Phi3Adapter(), PhiAdapter(), GPTJAdapter(), FalconAdapter())

SUPPORTED_FAMILIES = "; ".join(a.examples for a in ADAPTERS)


def find_adapter(model: nn.Module) -> tuple[FamilyAdapter, list[nn.Module]]:
    """The adapter whose module layout the model has, with the model's attention modules in layer order."""
    adapter, _ = find_blocks(model)
    return adapter, adapter.attention_modules(model)


def find_blocks(model: nn.Module) -> tuple[FamilyAdapter, nn.ModuleList]:
    """The adapter whose block layout the model has, with the model's ModuleList of blocks."""
    for adapter in ADAPTERS:
        blocks = adapter.blocks(model)
        if blocks is not None:
            config = getattr(model, "config", None)
            if config is None:
                raise UnsupportedModelError(
                    f"{type(model).__name__} has {adapter.family}-style attention but no Hugging Face config; "
                    "load it through sentinel.load_model or transformers."
                )
            model_type = getattr(config, "model_type", "?")
            if model_type not in adapter.tested_model_types:
                logger.warning(
                    "Model type %r has %s-style attention modules; treating it as that family (tested: %s).",
                    model_type, adapter.family, ", ".join(adapter.tested_model_types),
                )
            return adapter, blocks
    raise UnsupportedModelError(
        f"{type(model).__name__} has no attention layout Sentinel can prune. Supported families: "
        f"{SUPPORTED_FAMILIES}."
    )


__all__ = ["ADAPTERS", "FamilyAdapter", "SUPPORTED_FAMILIES", "find_adapter", "find_blocks"]
