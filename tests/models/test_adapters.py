"""Architecture detection: each family is recognised by its modules and described by a HeadLayout."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import GPT2Config

from sentinel import get_layout
from sentinel.errors import UnsupportedModelError
from sentinel.models import model_heads
from tests.conftest import ALL_FAMILIES, make_tiny_model

EXPECTED = {
    # name: (family, heads, kv_heads, head_dim, causal)
    "gpt2": ("gpt2", 4, 4, 8, True),
    "bert": ("bert", 4, 4, 8, False),
    "roberta": ("bert", 4, 4, 8, False),
    "llama": ("llama", 8, 2, 4, True),
    "mistral": ("llama", 4, 2, 8, True),
    "qwen2": ("llama", 4, 2, 8, True),
    "opt": ("opt", 4, 4, 8, True),
    "gpt_neox": ("gpt_neox", 4, 4, 8, True),
    "gptj": ("gptj", 4, 4, 8, True),
    "phi": ("phi", 4, 4, 8, True),
    "falcon": ("falcon", 4, 2, 8, True),
}


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_layout_of_each_family(name):
    layout = get_layout(make_tiny_model(name))
    family, heads, kv_heads, head_dim, causal = EXPECTED[name]
    assert (layout.family, layout.num_heads, layout.num_kv_heads, layout.head_dim, layout.is_causal) == (
        family, heads, kv_heads, head_dim, causal
    )
    assert layout.num_layers == 3
    assert layout.present == tuple(tuple(range(heads)) for _ in range(3))
    assert layout.kv_group_size == heads // kv_heads


def test_gqa_group_helpers():
    layout = get_layout(make_tiny_model("llama"))
    assert layout.kv_group_size == 4
    assert [layout.kv_head_of(h) for h in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert layout.kv_group(1) == [4, 5, 6, 7]


def test_detection_uses_modules_not_class_name():
    """A GPT-2 body wrapped in a class of another name is still found by its attention modules."""

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = make_tiny_model("gpt2")
            self.config = self.inner.config

    assert get_layout(Wrapper()).family == "gpt2"


def test_unsupported_model_names_the_supported_families():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = GPT2Config()
            self.layer = nn.Linear(4, 4)

    with pytest.raises(UnsupportedModelError) as err:
        get_layout(Plain())
    message = str(err.value)
    for family in ("GPT-2", "BERT", "Llama", "OPT", "GPT-NeoX"):
        assert family in message


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_head_weights_are_views_of_the_right_slices(name):
    """Writing through a head's Q view changes exactly that head's query output channels."""
    model = make_tiny_model(name)
    heads = model_heads(model)
    layout = heads.layout()
    w = heads.head_weights(1, 2)
    assert w.q.shape == (layout.head_dim, layout.hidden_size)
    assert w.o.shape == (layout.hidden_size, layout.head_dim)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        w.q.add_(1.0)
    changed = {n: int((p.detach() != before[n]).sum()) for n, p in model.named_parameters()}
    changed = {n: c for n, c in changed.items() if c}
    assert list(changed.values()) == [layout.head_dim * layout.hidden_size]
    assert ".1." in next(iter(changed))  # layer 1


def test_gpt2_conv1d_orientation():
    """GPT-2's Conv1D stores (in, out): head h's query rows are columns h*d:(h+1)*d of c_attn.weight."""
    model = make_tiny_model("gpt2")
    attn = model.transformer.h[0].attn
    w = model_heads(model).head_weights(0, 3)
    d, e = 8, 32
    assert torch.equal(w.q, attn.c_attn.weight[:, 3 * d:4 * d].T)
    assert torch.equal(w.k, attn.c_attn.weight[:, e + 3 * d:e + 4 * d].T)
    assert torch.equal(w.v, attn.c_attn.weight[:, 2 * e + 3 * d:2 * e + 4 * d].T)
    assert torch.equal(w.o, attn.c_proj.weight[3 * d:4 * d].T)
