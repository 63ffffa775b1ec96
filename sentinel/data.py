"""Text in, fixed-length token blocks out.

Sources: the bundled demo corpus, a local .txt/.jsonl/.csv file, uploaded bytes, or a hub dataset spec
`name:config:split` loaded with `datasets`. Documents are joined with eos, concatenated and cut into blocks.

With a token budget (`max_tokens`), text is streamed: files are read line by line, long documents are tokenised
piece by piece (cut at line ends), and reading stops once the budget is reached, so memory does not grow with
the file.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sentinel.errors import DataError

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20 * 1024 * 1024   # 20 MiB; messages say MiB, the unit checked
PIECE_CHARS = 64 * 1024                 # a long document is tokenised in pieces of about this many characters
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
    eos = _separator(tokenizer)
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
        raise DataError(_too_large(name, len(data), max_bytes))
    if not data.strip():
        raise DataError(f"{name} is empty; give a file that contains text.")
    if b"\x00" in data:
        raise DataError(f"{name} contains NUL bytes, so it is binary, not text; give a .txt, .jsonl or .csv file.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{name} is not valid UTF-8 (byte {err.start}); re-save it as UTF-8.") from None
    return text


def _too_large(name: str, size: int, max_bytes: int) -> str:
    return (f"{name} is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.1f} MiB limit; "
            "use a smaller file or raise the limit.")


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
        rows = [row for _, row in _jsonl_rows(text.splitlines(), name)]
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
        raise DataError(_too_large(str(path), path.stat().st_size, max_bytes))
    if path.suffix.lower() == ".gz":     # e.g. a demo folder's corpus/train.jsonl.gz: the limit is on the text
        return parse_texts(decode_upload(read_gzip(path, max_bytes), str(path), max_bytes), path.stem, text_column)
    return parse_texts(decode_upload(path.read_bytes(), str(path), max_bytes), path.name, text_column)


def read_gzip(path: Path, max_bytes: int) -> bytes:
    """The decompressed bytes of a gzip file, reading at most one byte past `max_bytes` (so a small file that
    expands enormously is refused, not unpacked)."""
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except (OSError, EOFError) as err:
        raise DataError(f"{path} is not a readable gzip file ({err}); give the uncompressed .jsonl/.txt/.csv "
                        "instead.") from err
    if len(data) > max_bytes:
        raise DataError(_too_large(f"{path} (uncompressed)", len(data), max_bytes))
    return data


def load_bundled_texts(split: str = "validation", model_dir: str | Path | None = None) -> list[str]:
    """Documents of the bundled demo corpus split the demo model was trained ('train') or validated on."""
    if split not in BUNDLED_SPLITS:
        raise DataError(f"Unknown bundled split {split!r}; use 'train' or 'validation'.")
    from sentinel.demo.build import load_corpus_split
    from sentinel.models.loading import bundled_model_dir

    return load_corpus_split(model_dir or bundled_model_dir(), split)


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
    """Join documents with eos, optionally keep the first `max_tokens` (tokenising only what is needed), and cut
    the stream into blocks."""
    if max_tokens is None:
        ids, documents = join_documents(tokenizer, texts), len([t for t in texts if t and t.strip()])
    else:
        pieces = (piece for text in texts if text and text.strip() for piece in split_document(text))
        ids, documents = stream_token_ids(tokenizer, pieces, max_tokens)
    return _blocks(tokenizer, ids, block_size, source, documents)


def _blocks(tokenizer: Any, ids: list[int], block_size: int, source: str, documents: int) -> TextBlocks:
    blocks = cut_blocks(ids, block_size, keep_remainder=True)
    if not blocks:
        raise DataError("The text is shorter than 2 tokens; give more text.")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    logger.info("%s: %d documents, %d tokens, %d blocks of %d", source, documents, len(ids), len(blocks), block_size)
    return TextBlocks(blocks, block_size, source, documents, pad)


# -- streaming: documents as pieces, tokenised until the budget is reached ------------------------------------------

def split_document(text: str, piece_chars: int = PIECE_CHARS) -> Iterator[tuple[str, bool]]:
    """(piece, ends_document) pairs of one document, cut after a newline roughly every `piece_chars` characters."""
    start = 0
    while len(text) - start > piece_chars:
        cut = text.rfind("\n", start, start + piece_chars) + 1
        if cut <= start:
            cut = start + piece_chars
        yield text[start:cut], False
        start = cut
    yield text[start:], True


def stream_token_ids(tokenizer: Any, pieces: Iterable[tuple[str, bool]], max_tokens: int) -> tuple[list[int], int]:
    """(the first `max_tokens` token ids, documents read): pieces are tokenised one at a time, an eos (or sep)
    after each document, and nothing more is read once the budget is reached."""
    eos = _separator(tokenizer)
    ids: list[int] = []
    documents, in_document = 0, False
    for piece, ends in pieces:
        if not in_document:
            documents, in_document = documents + 1, True
        if piece:
            ids.extend(tokenizer(piece, add_special_tokens=False)["input_ids"])
        if ends:
            ids.append(eos)
            in_document = False
        if len(ids) >= max_tokens:
            break
    if not ids:
        raise DataError("No text to tokenise: every document is empty.")
    return ids[:max_tokens], documents


def _separator(tokenizer: Any) -> int:
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else getattr(tokenizer, "sep_token_id", None)
    if eos is None:
        raise DataError("The tokenizer has neither an eos nor a sep token to separate documents; "
                        "set tokenizer.eos_token first.")
    return eos


def iter_text_pieces(source: str | Path | None = None, *, data: bytes | None = None, filename: str | None = None,
                     text_column: str = "text", max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[tuple[str, bool]]:
    """The documents of a source (as `load_texts` reads it) as (piece, ends_document) pairs, read lazily:
    a local file or an upload is decoded and parsed as it is consumed, never read whole."""
    if data is not None:
        name = filename or "upload.txt"
        if len(data) > max_bytes:
            raise DataError(_too_large(name, len(data), max_bytes))
        yield from _stream_pieces(io.BytesIO(data), name, Path(name).suffix.lower(), text_column)
        return
    if source is not None and not str(source).startswith("bundled:"):
        path = Path(str(source)).expanduser()
        # a gzipped file (a demo folder's corpus/train.jsonl.gz) is read in memory below, its size checked unpacked
        if path.suffix.lower() != ".gz" and (path.exists() or path.suffix.lower() in TEXT_SUFFIXES):
            if not path.is_file():
                raise DataError(f"Text file {path} does not exist; check the path.")
            if path.stat().st_size > max_bytes:
                raise DataError(_too_large(str(path), path.stat().st_size, max_bytes))
            try:
                handle = path.open("rb")
            except OSError as err:
                raise DataError(f"Cannot read {path}: {err.strerror}.") from None
            with handle:
                yield from _stream_pieces(handle, str(path), path.suffix.lower(), text_column)
            return
    for text in load_texts(source, text_column=text_column, max_bytes=max_bytes):   # bundled or hub: in memory
        yield from split_document(text)


def _stream_pieces(raw: io.BufferedIOBase, name: str, suffix: str, text_column: str) -> Iterator[tuple[str, bool]]:
    """Pieces of an open binary file: .txt in chunks (one document), .jsonl/.csv one document per row."""
    if suffix not in ("", ".txt", ".text", ".md", ".jsonl", ".csv"):
        raise DataError(f"Unsupported file type {suffix!r} for {name}; use .txt, .jsonl or .csv.")
    found = False
    if suffix in (".jsonl", ".csv"):
        rows = _jsonl_rows(_text_lines(raw, name), name) if suffix == ".jsonl" else _csv_rows(raw, name, text_column)
        for number, row in rows:
            value = _cell(row, text_column, name, number)
            if value and value.strip():
                found = True
                yield from split_document(value)
        if not found:
            raise DataError(f"{name} contains no text (column {text_column!r} is empty everywhere).")
        return
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    buffer, offset = "", 0
    while True:
        chunk = raw.read(PIECE_CHARS)
        final = not chunk
        buffer += _decode(decoder, chunk, final, name, offset)
        offset += len(chunk)
        found = found or bool(buffer.strip())
        if final:
            break
        if len(buffer) >= PIECE_CHARS:
            cut = buffer.rfind("\n") + 1 or len(buffer)
            yield buffer[:cut], False
            buffer = buffer[cut:]
    if not found:
        raise DataError(f"{name} is empty; give a file that contains text.")
    yield buffer, True


def _decode(decoder: codecs.IncrementalDecoder, chunk: bytes, final: bool, name: str, offset: int) -> str:
    if b"\x00" in chunk:
        raise DataError(f"{name} contains NUL bytes, so it is binary, not text; give a .txt, .jsonl or .csv file.")
    try:
        return decoder.decode(chunk, final=final)
    except UnicodeDecodeError as err:
        raise DataError(f"{name} is not valid UTF-8 (byte {offset + err.start}); re-save it as UTF-8.") from None


def _text_lines(raw: io.BufferedIOBase, name: str) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    offset = 0
    for line in raw:
        yield _decode(decoder, line, False, name, offset)
        offset += len(line)
    tail = _decode(decoder, b"", True, name, offset)
    if tail:
        yield tail


def _jsonl_rows(lines: Iterable[str], name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON Lines text; one clear DataError for a bad line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"Line {number} of {name} is not valid JSON ({err.msg}); one object per line.") from None
        if not isinstance(row, dict):
            raise DataError(f"Line {number} of {name} is a JSON {type(row).__name__}, not an object.")
        yield number, row


def _csv_rows(raw: io.BufferedIOBase, name: str, text_column: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(_text_lines(raw, name))
    if reader.fieldnames is None or text_column not in reader.fieldnames:
        raise DataError(f"{name} has no column {text_column!r}; its columns are {reader.fieldnames or []}. "
                        "Pass text_column=...")
    for number, row in enumerate(reader, start=1):
        yield number, row


def _cell(row: dict[str, Any], column: str, name: str, number: int) -> str | None:
    if column not in row:
        raise DataError(f"Row {number} of {name} has no column {column!r}; every row needs it.")
    value = row[column]
    if value is not None and not isinstance(value, str):
        raise DataError(f"Row {number} of {name}: column {column!r} holds {type(value).__name__}, not text.")
    return value


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
    """Tokenise a source (see `load_texts`), join documents with eos and cut the stream into blocks.

    With `max_tokens`, the source is streamed and read only until the budget is reached.
    """
    name = describe_source(source, filename, data is not None)
    if max_tokens is None:
        texts = load_texts(source, data=data, filename=filename, text_column=text_column, max_bytes=max_bytes)
        return blocks_from_texts(tokenizer, texts, block_size, name)
    pieces = iter_text_pieces(source, data=data, filename=filename, text_column=text_column, max_bytes=max_bytes)
    ids, documents = stream_token_ids(tokenizer, pieces, max_tokens)
    return _blocks(tokenizer, ids, block_size, name, documents)


OWN_VALIDATION_FILE = Path("corpus") / "validation.jsonl"   # the held-out split a demo model folder was built with
OWN_TEXT_ORIGIN = Path("corpus") / "origin.json"           # in a copy: which model that split belongs to
OWN_TRAIN_FILE = Path("corpus") / "train.jsonl.gz"          # the split a demo model folder was trained on


def own_training_text(model_source: str | Path | None) -> Path | None:
    """A model folder's own train split (what it was trained on), or None when the folder carries none."""
    if model_source is None:
        return None
    path = Path(model_source) / OWN_TRAIN_FILE
    return path if path.is_file() else None


@dataclass(frozen=True)
class EvalText:
    """The text a model's perplexity is measured on: its source for `load_texts`, the name shown beside the
    number, and whether it is the model folder's own held-out split."""

    source: str | None
    name: str
    own: bool


def evaluation_text(model_source: str | Path | None, chosen: str | None = None,
                    chosen_name: str | None = None) -> EvalText:
    """One rule for the CLI and the dashboard: a chosen text wins; otherwise a model folder that carries its own
    corpus is scored on its validation split; otherwise the bundled validation text."""
    if chosen is not None:
        return EvalText(chosen, chosen_name or str(chosen), own=False)
    if model_source is not None:
        folder = Path(model_source)
        own = folder / OWN_VALIDATION_FILE
        if own.is_file():
            return EvalText(str(own), f"{own_text_owner(folder)}'s own validation split ({OWN_VALIDATION_FILE})",
                            own=True)
    return EvalText(None, "the bundled validation text", own=False)


def own_text_owner(folder: Path) -> str:
    """The model whose held-out split `folder` carries: its own name, or the base it was pruned from."""
    origin = folder / OWN_TEXT_ORIGIN
    if origin.is_file():
        name = json.loads(origin.read_text(encoding="utf-8")).get("model")
        if not isinstance(name, str) or not name:
            raise DataError(f"{origin} does not name the model its validation split belongs to; delete the file "
                            "or write {\"model\": \"<name>\"} into it.")
        return name
    return folder.name


def calibration_text_for(model_source: str | Path | None, chosen: str | None = None) -> str:
    """The calibration text for a model: the chosen one, else its folder's own train split, else the bundled train
    split. One rule for recovery, weight sparsity, compress and the dashboard's jobs."""
    if chosen is not None:
        return chosen
    own = own_training_text(model_source)
    return str(own) if own is not None else "bundled:train"


def finetune_text_sources(model_source: str | Path | None, text: str | None = None,
                          validation_text: str | None = None) -> tuple[str | None, str | None]:
    """(train, validation) sources a fine-tune of `model_source` uses: the chosen ones; without a chosen training
    text, the model folder's own train split and its own held-out split where it carries them (None: the bundled
    corpus's). One rule for `sentinel finetune` and the dashboard, so neither trains a model on another's text."""
    if text is not None:
        return text, validation_text
    train = own_training_text(model_source)
    if validation_text is None:
        held = evaluation_text(model_source)
        validation_text = held.source if held.own else None
    return (str(train) if train is not None else None), validation_text


def carry_own_text(model_source: str | Path | None, target: Path) -> bool:
    """Copy the held-out split (and the train split, where there is one) of the folder a model came from into
    `target` (a folder being written), so a pruned or fine-tuned copy is scored on the same text as its base and
    fine-tuned on the text its base was trained on; False when the source carries no held-out split."""
    text = evaluation_text(model_source)
    if not text.own:
        return False
    (target / OWN_VALIDATION_FILE).parent.mkdir(parents=True, exist_ok=True)
    (target / OWN_VALIDATION_FILE).write_bytes(Path(str(text.source)).read_bytes())
    train = own_training_text(model_source)
    if train is not None:
        (target / OWN_TRAIN_FILE).write_bytes(train.read_bytes())
    (target / OWN_TEXT_ORIGIN).write_text(json.dumps({"model": own_text_owner(Path(str(model_source)))}),
                                          encoding="utf-8")
    return True
