"""Text in, fixed-length token blocks out.

Sources: the bundled demo corpus, a local .txt/.jsonl/.csv file, uploaded bytes, or a hub dataset spec
`name:config:split` loaded with `datasets`. Documents are joined with eos, concatenated and cut into blocks.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sentinel.errors import DataError

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
TEXT_SUFFIXES = (".txt", ".jsonl", ".csv")
BUNDLED_SPLITS = ("train", "validation")


@dataclass
class TextBlocks:
    """Consecutive token blocks of `block_size` (the last one may be shorter); together they are the token stream."""

    input_ids: list[list[int]]
    block_size: int
    source: str
    num_documents: int
    pad_token_id: int
    num_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.num_tokens = sum(len(b) for b in self.input_ids)

    def stream(self) -> list[int]:
        """All tokens in order (for sliding-window perplexity)."""
        return [token for block in self.input_ids for token in block]

    def to_dataset(self) -> Any:
        """The blocks as a `datasets.Dataset` with an `input_ids` column."""
        import datasets

        return datasets.Dataset.from_dict({"input_ids": self.input_ids})

    def dataloader(self, batch_size: int = 8, shuffle: bool = False, seed: int = 0) -> torch.utils.data.DataLoader:
        """Batches of {input_ids, attention_mask, labels}; a short last block is padded with labels -100."""
        generator = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(self.input_ids, batch_size=batch_size, shuffle=shuffle,
                                           generator=generator, collate_fn=self._collate)

    def _collate(self, blocks: list[list[int]]) -> dict[str, torch.Tensor]:
        """Right-pad to the longest block; padding is masked out of attention and labels."""
        width = max(len(b) for b in blocks)
        input_ids = torch.full((len(blocks), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(blocks), width), dtype=torch.long)
        for row, block in enumerate(blocks):
            input_ids[row, :len(block)] = torch.tensor(block, dtype=torch.long)
            attention_mask[row, :len(block)] = 1
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def join_documents(tokenizer: Any, texts: Iterable[str]) -> list[int]:
    """Token ids of all documents, each followed by a separator (no special tokens otherwise).

    The separator is the eos token, or [SEP] for encoder tokenizers (BERT/RoBERTa) that have no eos.
    """
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else getattr(tokenizer, "sep_token_id", None)
    if eos is None:
        raise DataError("The tokenizer has neither an eos nor a sep token to separate documents; "
                        "set tokenizer.eos_token first.")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise DataError("No text to tokenise: every document is empty.")
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    for doc in encoded:
        ids.extend(doc)
        ids.append(eos)
    return ids


def cut_blocks(ids: list[int], block_size: int, offset: int = 0, keep_remainder: bool = False) -> list[list[int]]:
    """Consecutive blocks of `block_size` tokens from `offset`; the short remainder is dropped unless kept."""
    if block_size < 2:
        raise DataError(f"block_size must be at least 2, got {block_size}.")
    usable = (len(ids) - offset) // block_size
    blocks = [ids[offset + i * block_size: offset + (i + 1) * block_size] for i in range(usable)]
    remainder = ids[offset + usable * block_size:]
    if keep_remainder and len(remainder) >= 2:
        blocks.append(remainder)
    return blocks


def decode_upload(data: bytes, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """UTF-8 text of uploaded or file bytes; DataError when too large, empty, binary or not UTF-8."""
    if len(data) > max_bytes:
        raise DataError(f"{name} is {len(data) / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB limit; "
                        "use a smaller file or raise the limit.")
    if not data.strip():
        raise DataError(f"{name} is empty; give a file that contains text.")
    if b"\x00" in data:
        raise DataError(f"{name} contains NUL bytes, so it is binary, not text; give a .txt, .jsonl or .csv file.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{name} is not valid UTF-8 (byte {err.start}); re-save it as UTF-8.") from None
    return text


def _column_values(rows: list[dict[str, Any]], column: str, name: str) -> list[str]:
    """The string values of `column` in parsed rows; DataError if the column is missing or not text."""
    if rows and column not in rows[0]:
        raise DataError(f"{name} has no column {column!r}; its columns are {sorted(rows[0])}. Pass text_column=...")
    texts = []
    for number, row in enumerate(rows, start=1):
        if column not in row:
            raise DataError(f"Row {number} of {name} has no column {column!r}; every row needs it.")
        value = row[column]
        if value is None:
            continue
        if not isinstance(value, str):
            raise DataError(f"Row {number} of {name}: column {column!r} holds {type(value).__name__}, not text.")
        texts.append(value)
    return texts


def parse_texts(text: str, name: str, text_column: str = "text") -> list[str]:
    """Documents of a decoded file: a .txt is one document, a .jsonl/.csv has one per row in `text_column`."""
    suffix = Path(name).suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"Line {number} of {name} is not valid JSON ({err.msg}); one object per line.") from None
            if not isinstance(row, dict):
                raise DataError(f"Line {number} of {name} is a JSON {type(row).__name__}, not an object.")
            rows.append(row)
        texts = _column_values(rows, text_column, name)
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or text_column not in reader.fieldnames:
            raise DataError(f"{name} has no column {text_column!r}; its columns are {reader.fieldnames or []}. "
                            "Pass text_column=...")
        texts = _column_values(list(reader), text_column, name)
    elif suffix in ("", ".txt", ".text", ".md"):
        texts = [text]
    else:
        raise DataError(f"Unsupported file type {suffix!r} for {name}; use .txt, .jsonl or .csv.")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise DataError(f"{name} contains no text (column {text_column!r} is empty everywhere).")
    return texts


def load_file_texts(path: str | Path, text_column: str = "text", max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """Documents of a local .txt/.jsonl/.csv file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"Text file {path} does not exist; check the path.")
    if path.stat().st_size > max_bytes:
        raise DataError(f"{path} is {path.stat().st_size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB limit; "
                        "use a smaller file or raise the limit.")
    return parse_texts(decode_upload(path.read_bytes(), str(path), max_bytes), path.name, text_column)


def load_bundled_texts(split: str = "validation", model_dir: str | Path | None = None) -> list[str]:
    """Documents of the bundled demo corpus split the demo model was trained ('train') or validated on."""
    if split not in BUNDLED_SPLITS:
        raise DataError(f"Unknown bundled split {split!r}; use 'train' or 'validation'.")
    from sentinel.demo.build import load_corpus_split
    from sentinel.models import BUNDLED_MODEL_DIR

    return load_corpus_split(model_dir or BUNDLED_MODEL_DIR, split)


def load_hub_texts(spec: str, text_column: str = "text") -> list[str]:
    """Documents of a hub dataset `name:config:split` (or `name:split`) via datasets.load_dataset."""
    parts = spec.split(":")
    if len(parts) == 3:
        name, config, split = parts
    elif len(parts) == 2:
        (name, split), config = parts, ""
    else:
        raise DataError(f"Dataset spec {spec!r} is not name:config:split (e.g. wikitext:wikitext-2-raw-v1:validation).")
    if not name or not split:
        raise DataError(f"Dataset spec {spec!r} needs a dataset name and a split, e.g. wikitext:wikitext-2-raw-v1:test.")
    import datasets

    try:
        dataset = datasets.load_dataset(name, config or None, split=split)
    except (OSError, ValueError) as err:
        raise DataError(f"Dataset {spec!r} is not available locally and could not be downloaded ({err}); "
                        "download it while online, or use --text FILE instead.") from None
    if text_column not in dataset.column_names:
        raise DataError(f"Dataset {spec!r} has no column {text_column!r}; its columns are {dataset.column_names}.")
    texts = [t for t in dataset[text_column] if isinstance(t, str) and t.strip()]
    if not texts:
        raise DataError(f"Dataset {spec!r} has no text in column {text_column!r}.")
    return texts


def load_texts(
    source: str | Path | None = None,
    *,
    data: bytes | None = None,
    filename: str | None = None,
    text_column: str = "text",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[str]:
    """Documents from one source: uploaded `data` (+ `filename` for the format), a file path, 'bundled:<split>'
    (None means the bundled validation split), or a hub spec name:config:split."""
    if data is not None:
        name = filename or "upload.txt"
        return parse_texts(decode_upload(data, name, max_bytes), name, text_column)
    if source is None:
        return load_bundled_texts("validation")
    source_text = str(source)
    if source_text.startswith("bundled:"):
        return load_bundled_texts(source_text.split(":", 1)[1])
    path = Path(source_text).expanduser()
    if path.exists() or path.suffix.lower() in TEXT_SUFFIXES:
        return load_file_texts(path, text_column, max_bytes)
    return load_hub_texts(source_text, text_column)


def blocks_from_texts(tokenizer: Any, texts: list[str], block_size: int = 256, source: str = "",
                      max_tokens: int | None = None) -> TextBlocks:
    """Join documents with eos, optionally keep the first `max_tokens`, and cut the stream into blocks."""
    ids = join_documents(tokenizer, texts)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    blocks = cut_blocks(ids, block_size, keep_remainder=True)
    if not blocks:
        raise DataError("The text is shorter than 2 tokens; give more text.")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    logger.info("%s: %d documents, %d tokens, %d blocks of %d", source, len(texts), len(ids), len(blocks), block_size)
    return TextBlocks(blocks, block_size, source, len(texts), pad)


def describe_source(source: str | Path | None, filename: str | None = None, uploaded: bool = False) -> str:
    """How a text source is named in results: the upload's filename, the path/spec, or bundled:validation."""
    if uploaded:
        return filename or "upload.txt"
    return str(source) if source is not None else "bundled:validation"


def load_text_blocks(
    tokenizer: Any,
    source: str | Path | None = None,
    block_size: int = 256,
    *,
    data: bytes | None = None,
    filename: str | None = None,
    text_column: str = "text",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_tokens: int | None = None,
) -> TextBlocks:
    """Tokenise a source (see `load_texts`), join documents with eos and cut the stream into blocks."""
    texts = load_texts(source, data=data, filename=filename, text_column=text_column, max_bytes=max_bytes)
    return blocks_from_texts(tokenizer, texts, block_size, describe_source(source, filename, data is not None),
                             max_tokens)
