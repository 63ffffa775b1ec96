"""Text is streamed (issue 9, item 5): reading stops at the token budget, memory does not grow with the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.data import PIECE_CHARS, load_file_texts, load_text_blocks
from sentinel.errors import DataError
from sentinel.models import save_model
from tests.conftest import TINY_TEXTS, make_tiny_lm

REPO = Path(__file__).resolve().parents[2]


def _files(tmp_path: Path) -> dict[str, Path]:
    txt = tmp_path / "a.txt"
    txt.write_text("\n\n".join(TINY_TEXTS), encoding="utf-8")
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t}) for t in TINY_TEXTS) + "\n", encoding="utf-8")
    csv = tmp_path / "a.csv"
    csv.write_text("id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(TINY_TEXTS)), encoding="utf-8")
    return {"txt": txt, "jsonl": jsonl, "csv": csv}


@pytest.mark.parametrize("kind", ["txt", "jsonl", "csv"])
def test_streamed_tokens_are_the_first_tokens_of_the_whole_read(tmp_path, tiny_tokenizer, kind):
    path = _files(tmp_path)[kind]
    whole = load_text_blocks(tiny_tokenizer, str(path), 16).stream()
    streamed = load_text_blocks(tiny_tokenizer, str(path), 16, max_tokens=50)
    assert streamed.stream() == whole[:50]
    uploaded = load_text_blocks(tiny_tokenizer, None, 16, data=path.read_bytes(), filename=path.name, max_tokens=50)
    assert uploaded.stream() == whole[:50]


def test_only_what_the_budget_needs_is_tokenised(tmp_path, tiny_tokenizer):
    path = tmp_path / "big.txt"
    path.write_text("Return the value of the attribute named by the string.\n" * 40_000, encoding="utf-8")  # 2.2 MB
    seen: list[int] = []

    class Counting:
        eos_token_id, pad_token_id = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id

        def __call__(self, text, **kwargs):
            seen.append(len(text))
            return tiny_tokenizer(text, **kwargs)

    blocks = load_text_blocks(Counting(), str(path), 32, max_tokens=64)
    assert blocks.num_tokens == 64
    assert sum(seen) <= 2 * PIECE_CHARS < path.stat().st_size // 10


@pytest.mark.parametrize("content,message", [
    (b"good text\x00bad", "NUL bytes"),
    (b"caf\xe9 au lait", "not valid UTF-8"),
    (b"   \n  ", "empty"),
])
def test_streamed_txt_is_checked_like_a_whole_file(tmp_path, tiny_tokenizer, content, message):
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_text_blocks(tiny_tokenizer, str(path), 16, max_tokens=32)


@pytest.mark.parametrize("name,content,message", [
    ("t.jsonl", '{"text": "fine"}\nnot json\n', "Line 2 of .* is not valid JSON"),
    ("t.jsonl", '{"other": "x"}\n', "has no column 'text'"),
    ("t.csv", "id,body\n1,hello\n", "has no column 'text'"),
    ("t.xml", "<a/>", "Unsupported file type"),
])
def test_streamed_rows_are_checked_like_a_whole_file(tmp_path, tiny_tokenizer, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_text_blocks(tiny_tokenizer, str(path), 16, max_tokens=10_000)


def test_size_limit_message_uses_the_unit_it_checks(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"a" * (2 * 2**20 + 1))
    with pytest.raises(DataError, match=r"2\.0 MiB, over the 2\.0 MiB limit"):
        load_file_texts(path, max_bytes=2 * 2**20)


def _peak_rss_kib(*runs: list[str]) -> list[int]:
    """Peak resident memory of `python -m sentinel ...` processes (run side by side), each from its own rusage."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    children = [subprocess.Popen([sys.executable, "-m", "sentinel", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, env=env) for args in runs]
    peaks = []
    for child in children:
        _, status, usage = os.wait4(child.pid, 0)
        err = child.stderr.read().decode()
        child.stderr.close()
        assert os.waitstatus_to_exitcode(status) == 0, err
        peaks.append(usage.ru_maxrss)
    return peaks


def test_analyze_on_a_19_mb_file_peaks_within_1_3x_of_a_100_kb_file(tmp_path):
    model, tokenizer = make_tiny_lm()
    folder = save_model(model, tokenizer, tmp_path / "m")
    line = " ".join(TINY_TEXTS[:4]) + "\n"
    small, big = tmp_path / "small.txt", tmp_path / "big.txt"
    small.write_text(line * (100_000 // len(line)), encoding="utf-8")
    big.write_text(line * (19_000_000 // len(line)), encoding="utf-8")
    assert big.stat().st_size > 18_500_000
    args = ["analyze", "--model", str(folder), "--device", "cpu", "--samples", "2", "--seq-len", "32",
            "--metrics", "entropy", "--text"]
    peak_small, peak_big = _peak_rss_kib([*args, str(small)], [*args, str(big)])
    assert peak_big <= 1.3 * peak_small, (peak_small, peak_big)
