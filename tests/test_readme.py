"""The README's two set-up commands stay true: CI runs its test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one():
    commands = _setup_commands()
    assert len(commands) == 2
    assert "streamlit run app.py" in commands[0]
    assert "pytest" in commands[1]
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[1] in ci_lines


def test_torch_is_pinned_so_no_cuda_wheels_are_pulled():
    requirements = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert "torch==2.13.0" in requirements


def _table_cells(line: str) -> int:
    """Cells in one Markdown table row: unescaped pipes split cells (as on GitHub, inside code spans too)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return len(re.split(r"(?<!\\)\|", body))


def _tables(text: str) -> list[list[tuple[int, str]]]:
    """Every Markdown table outside code fences, as its (line number, line) rows, header first."""
    tables: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and line.lstrip().startswith("|"):
            current.append((number, line))
            continue
        if current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def test_every_table_row_has_the_headers_cell_count():
    tables = _tables((ROOT / "README.md").read_text(encoding="utf-8"))
    assert tables, "the README has tables (the page table at least)"
    for rows in tables:
        width = _table_cells(rows[0][1])
        wrong = [f"line {n}: {_table_cells(line)} cells" for n, line in rows if _table_cells(line) != width]
        assert not wrong, f"README table at line {rows[0][0]} has {width} columns; {wrong} (a stray '|'?)"


def test_the_cell_counter_sees_a_stray_pipe():
    assert _table_cells("| page | what you do there |") == 2
    assert _table_cells("| **Maps** | heads … CSV download |; **neurons:** … |") == 3
    assert _table_cells(r"| a | b \| c |") == 2
