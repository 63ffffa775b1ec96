"""What a dashboard session chooses — the model, the sample text, how the maps sample it — as plain data.

Standard library only (no torch, no pandas), so the Maps page can find a new session's cached first map
(`sentinel.ui.maps_cache.first_visit_maps`) while torch and the model are still loading. The rest of
the session's state (`sentinel.ui.state.DashboardState`) starts from these defaults.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from sentinel.defaults import ANALYSIS_SAMPLES, ANALYSIS_SEQ_LEN
from sentinel.errors import DataError
from sentinel.files import visitor_name
from sentinel.models.bundled import BUNDLED_MODEL_DIR

STATE_KEY = "sentinel_dashboard"   # where st.session_state keeps a session's DashboardState
URL_KEY = "s"                      # the query parameter that carries a session's snapshot
MAP_SAMPLES = ANALYSIS_SAMPLES     # blocks of sample text the maps run on: the CLI's default, so both choose alike
MAP_SEQ_LEN = ANALYSIS_SEQ_LEN     # tokens per block
MAP_METRIC = "entropy_normalized"  # the head map a session shows first
MIN_STABLE_TOKENS = 256            # fewer tokens than this give maps that change a lot with the text
UPLOAD_LIMIT_MB = 5                # the largest sample text the maps accept

TextKind = Literal["bundled", "pasted", "uploaded"]


@dataclass(frozen=True)
class ModelChoice:
    """Which model a session works on: a folder or hub id (None = the bundled model), device and dtype."""

    source: str | None = None
    device: str = "auto"
    dtype: str = "auto"

    def label(self) -> str:
        """The model as visitors see it named: never a folder path of the server (`visitor_name`)."""
        return f"bundled demo model ({BUNDLED_MODEL_DIR.name})" if self.source is None else visitor_name(self.source)


@dataclass(frozen=True)
class SampleText:
    """The text the maps and perplexity run on: the bundled validation split, pasted text or an uploaded file."""

    kind: TextKind = "bundled"
    name: str = "bundled validation text"
    data: bytes | None = None

    @property
    def digest(self) -> str:
        """Identifies the text in cache keys."""
        return hashlib.sha1(self.kind.encode() + self.name.encode() + (self.data or b"")).hexdigest()[:12]

    def blocks(self, tokenizer: Any, block_size: int, max_tokens: int) -> Any:
        """Token blocks (`sentinel.data.TextBlocks`) of this text (raises DataError for too large, empty, binary or
        non-UTF-8 input, or a table without a 'text' column, in words a non-programmer can act on)."""
        from sentinel.data import load_text_blocks      # imports torch: only once text is tokenised

        if self.kind == "bundled":
            return load_text_blocks(tokenizer, None, block_size, max_tokens=max_tokens)
        check_upload(self.name, self.data or b"")
        return load_text_blocks(tokenizer, None, block_size, data=self.data, filename=self.name,
                                max_bytes=UPLOAD_LIMIT_MB * 1024 * 1024, max_tokens=max_tokens)


def check_upload(name: str, data: bytes) -> None:
    """Refuse, in user terms, a file that is too large or a table with no 'text' column."""
    limit = UPLOAD_LIMIT_MB * 1024 * 1024
    if len(data) > limit:
        raise DataError(f"{name} is {len(data) / 1024 / 1024:.1f} MB; sample texts can be at most {UPLOAD_LIMIT_MB} MB. "
                        "Upload a shorter excerpt (a few thousand words are plenty for the maps).")
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    first = next((line for line in data.decode("utf-8-sig", errors="replace").splitlines() if line.strip()), "")
    columns: list[str] | None = None
    if suffix == "csv":
        columns = next(csv.reader([first]), [])
    elif suffix == "jsonl":
        try:
            row = json.loads(first)
        except json.JSONDecodeError:
            return                               # the reader names the broken line
        columns = list(row) if isinstance(row, dict) else None
    if columns is not None and "text" not in columns:
        found = ", ".join(repr(c) for c in columns) or "none"
        raise DataError(f"{name} has no column named 'text', so there is nothing to read. Columns found: {found}. "
                        "Rename the column that holds your text to 'text' and upload it again.")
