"""Shared fixtures: tiny models of every supported family, built from configs in code (no downloads)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

TINY_VOCAB = 128
_COMMON = dict(vocab_size=TINY_VOCAB, hidden_size=32, num_attention_heads=4, num_hidden_layers=3)

TINY_MODELS: dict[str, tuple[str, str, dict]] = {
    # name: (config class, model class, config kwargs)
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(vocab_size=TINY_VOCAB, n_embd=32, n_head=4, n_layer=3, n_positions=64)),
    "bert": ("BertConfig", "BertForMaskedLM", dict(_COMMON, intermediate_size=64, max_position_embeddings=64)),
    "roberta": ("RobertaConfig", "RobertaForMaskedLM",
                dict(_COMMON, intermediate_size=64, max_position_embeddings=70, pad_token_id=1)),
    "llama": ("LlamaConfig", "LlamaForCausalLM",
              dict(_COMMON, num_attention_heads=8, num_key_value_heads=2, intermediate_size=64,
                   max_position_embeddings=64)),
    "mistral": ("MistralConfig", "MistralForCausalLM",
                dict(_COMMON, num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM",
              dict(_COMMON, num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64)),
    "opt": ("OPTConfig", "OPTForCausalLM",
            dict(_COMMON, ffn_dim=64, word_embed_proj_dim=32, max_position_embeddings=64)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(_COMMON, intermediate_size=64,
                                                             max_position_embeddings=64)),
    # attention and MLP in parallel from one layer norm, rotary on half of each head's channels
    "gptj": ("GPTJConfig", "GPTJForCausalLM", dict(vocab_size=TINY_VOCAB, n_embd=32, n_head=4, n_layer=3, n_inner=64,
                                                   n_positions=64, rotary_dim=4)),
    "phi": ("PhiConfig", "PhiForCausalLM", dict(_COMMON, intermediate_size=64, max_position_embeddings=64,
                                                partial_rotary_factor=0.5)),
    # Falcon's new decoder: fused query_key_value grouped per K/V head ([q q k v] x 2)
    "falcon": ("FalconConfig", "FalconForCausalLM", dict(_COMMON, new_decoder_architecture=True, num_kv_heads=2,
                                                         ffn_hidden_size=64, bias=True)),
}

CAUSAL_FAMILIES = ["gpt2", "llama", "mistral", "qwen2", "opt", "gpt_neox", "gptj", "phi", "falcon"]
ALL_FAMILIES = list(TINY_MODELS)


def make_tiny_model(name: str, seed: int = 0, attn_implementation: str = "eager") -> torch.nn.Module:
    """A randomly initialised tiny model of the named family, in eval mode, with biases made non-zero."""
    config_cls, model_cls, kwargs = TINY_MODELS[name]
    config = getattr(transformers, config_cls)(**kwargs)
    config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config)
    with torch.no_grad():  # random biases, so bias handling is exercised, not hidden by zeros
        for pname, param in model.named_parameters():
            if pname.endswith("bias"):
                param.normal_(0, 0.02)
    return model.eval()


@pytest.fixture(params=ALL_FAMILIES)
def tiny_any(request) -> tuple[str, torch.nn.Module]:
    return request.param, make_tiny_model(request.param)


@pytest.fixture(params=CAUSAL_FAMILIES)
def tiny_causal(request) -> tuple[str, torch.nn.Module]:
    return request.param, make_tiny_model(request.param)


@pytest.fixture
def tiny_gpt2() -> torch.nn.Module:
    return make_tiny_model("gpt2")


def make_char_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A character-level tokenizer over printable ASCII (97 tokens, fits TINY_VOCAB), eos = pad = id 0."""
    from tokenizers import Tokenizer, decoders, models

    vocab = {"<|endoftext|>": 0, "<unk>": 1}
    for code in range(32, 127):
        vocab[chr(code)] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="<unk>"
    )


@pytest.fixture
def tiny_gpt2_dir(tmp_path):
    """A tiny GPT-2 with its tokenizer saved as a Sentinel/Hugging Face folder."""
    from sentinel.models import save_model

    model = make_tiny_model("gpt2")
    model.config.eos_token_id = model.config.bos_token_id = model.config.pad_token_id = 0
    return save_model(model, make_char_tokenizer(), tmp_path / "tiny-gpt2")


def sample_ids(vocab: int = 96, batch: int = 2, length: int = 12, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=generator)


# --- Tiny byte-level BPE tokenizer + matching tiny GPT-2 (demo/data/evaluation/generation/command tests) ---

TINY_TEXTS = [
    "Return the value of the attribute named by the string.",
    "Create a new dictionary with keys from the iterable and values set to value.",
    "This module provides functions for working with paths and files.",
    "Raise ValueError if the argument is not a valid integer.",
] * 4


def make_tiny_tokenizer(vocab_size: int = 300):
    """A byte-level BPE tokenizer trained in code on a few sentences; eos=bos=<|endoftext|>, pad=<|pad|>."""
    from sentinel.demo.build import train_tokenizer

    return train_tokenizer(TINY_TEXTS, vocab_size=vocab_size, model_max_length=64)


def make_tiny_lm(seed: int = 0):
    """(model, tokenizer): a random 2-layer GPT-2 whose vocabulary matches the tiny tokenizer."""
    tokenizer = make_tiny_tokenizer()
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_head=4, n_layer=2, n_positions=64,
                                     eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                                     pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(config).eval(), tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture
def tiny_lm():
    return make_tiny_lm()


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory):
    """A tiny GPT-2 + tokenizer saved as a Hugging Face folder (for load_model and command tests)."""
    model, tokenizer = make_tiny_lm()
    folder = tmp_path_factory.mktemp("tiny_lm")
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_text_file(tmp_path):
    """The tiny corpus (three times over) as a .txt file, for fine-tuning and experiment tests."""
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(TINY_TEXTS * 3), encoding="utf-8")
    return path
