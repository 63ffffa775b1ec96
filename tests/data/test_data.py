"""Text sources to token blocks, and one clear DataError per kind of bad input."""

from __future__ import annotations

import json

import pytest

from sentinel.data import cut_blocks, join_documents, load_text_blocks, load_texts
from sentinel.errors import DataError


def test_jsonl_csv_txt_and_upload_sources(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"body": t, "n": 1}) for t in ["one", "two"]) + "\n")
    (tmp_path / "a.csv").write_text("id,text\n1,first row\n2,\"second, quoted\"\n")
    (tmp_path / "a.txt").write_text("a whole file\n\nis one document\n")
    assert load_texts(tmp_path / "a.jsonl", text_column="body") == ["one", "two"]
    assert load_texts(str(tmp_path / "a.csv")) == ["first row", "second, quoted"]
    assert load_texts(tmp_path / "a.txt") == ["a whole file\n\nis one document\n"]
    assert load_texts(data=b'{"text": "uploaded"}\n', filename="up.jsonl") == ["uploaded"]


def test_documents_are_joined_with_eos_and_cut_into_blocks(tiny_tokenizer):
    ids = join_documents(tiny_tokenizer, ["Return the value.", "Create a new file."])
    eos = tiny_tokenizer.eos_token_id
    assert ids.count(eos) == 2 and ids[-1] == eos
    blocks = load_text_blocks(tiny_tokenizer, None, block_size=4, data=b"Return the value of the string.\n",
                              filename="x.txt")
    assert all(len(b) == 4 for b in blocks.input_ids[:-1]) and 2 <= len(blocks.input_ids[-1]) <= 4
    assert blocks.stream() == join_documents(tiny_tokenizer, ["Return the value of the string.\n"])
    assert cut_blocks(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert cut_blocks(list(range(10)), 4, keep_remainder=True)[-1] == [8, 9]


def test_dataloader_masks_padding_out_of_labels(tiny_tokenizer):
    blocks = load_text_blocks(tiny_tokenizer, None, block_size=8, data=b"Create a new dictionary with keys.",
                              filename="x.txt")
    batch = next(iter(blocks.dataloader(batch_size=len(blocks.input_ids))))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert ((batch["labels"] == -100) == (batch["attention_mask"] == 0)).all()
    assert len(blocks.to_dataset()) == len(blocks.input_ids)


@pytest.mark.parametrize("data, filename, match", [
    (b"", "x.txt", "empty"),
    (b"   \n\t", "x.txt", "empty"),
    (b"abc\x00def", "x.txt", "NUL"),
    (b"caf\xe9", "x.txt", "UTF-8"),
    (b'{"body": "x"}\n', "x.jsonl", "no column 'text'"),
    (b"body\nx\n", "x.csv", "no column 'text'"),
    (b"not json\n", "x.jsonl", "not valid JSON"),
    (b'{"text": ""}\n', "x.jsonl", "no text"),
    (b"x", "x.parquet", "Unsupported file type"),
])
def test_bad_uploads_raise_one_clear_error(data, filename, match):
    with pytest.raises(DataError, match=match):
        load_texts(data=data, filename=filename)


def test_size_limit(tmp_path):
    with pytest.raises(DataError, match="limit"):
        load_texts(data=b"x" * 101, filename="x.txt", max_bytes=100)
    (tmp_path / "big.txt").write_text("y" * 101)
    with pytest.raises(DataError, match="limit"):
        load_texts(tmp_path / "big.txt", max_bytes=100)


def test_missing_file_and_offline_hub_dataset(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_texts(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="not available locally"):
        load_texts("sentinel-no-such-dataset:none:validation")
    with pytest.raises(DataError, match="name:config:split"):
        load_texts("a:b:c:d")


def test_encoder_tokenizers_without_eos_separate_documents_with_sep():
    """BERT-style tokenizers have [SEP] but no eos; documents are still joined, with [SEP]."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from sentinel.data import join_documents

    vocab = {"[UNK]": 0, "[SEP]": 1, "[PAD]": 2, "hello": 3, "world": 4}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", sep_token="[SEP]",
                                        pad_token="[PAD]")
    assert tokenizer.eos_token_id is None
    assert join_documents(tokenizer, ["hello world", "world"]) == [3, 4, 1, 4, 1]
