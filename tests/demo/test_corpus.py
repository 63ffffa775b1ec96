"""The stdlib docstring corpus: deterministic, split by module, and built without importing anything."""

from __future__ import annotations

import json
import subprocess
import sys

from sentinel.demo.corpus import build_corpus, extract_docstrings, is_validation_module, list_source_files


def test_build_is_deterministic_and_split_by_module():
    first = build_corpus(max_files=40, validation_fraction=0.2)
    second = build_corpus(max_files=40, validation_fraction=0.2)
    assert first.train == second.train and first.validation == second.validation
    assert first.train and first.validation
    assert not set(first.train_modules) & set(first.validation_modules)
    assert all(is_validation_module(m, 0.2) for m in first.validation_modules)


def test_test_and_third_party_folders_are_skipped():
    from pathlib import Path
    import sysconfig

    files = [p.as_posix() for p in list_source_files(Path(sysconfig.get_paths()["stdlib"]))]
    assert files == sorted(files)
    assert not any("site-packages" in f or "/test/" in f or f.startswith("test/") or "idle_test" in f
                   or "/tests/" in f for f in files)


def test_docstrings_in_walk_order():
    source = '"""Module doc."""\nclass A:\n    """Class doc."""\n    def f(self):\n        """Method doc."""\n'
    assert extract_docstrings(source) == ["Module doc.", "Class doc.", "Method doc."]


def test_building_imports_no_stdlib_module():
    code = (
        "import sys, json, sysconfig\n"
        "import sentinel.demo.corpus as c\n"
        "stdlib = sysconfig.get_paths()['stdlib']  # loads sysconfig's own data module first\n"
        "before = set(sys.modules)\n"
        "c.build_corpus(stdlib, max_files=60, validation_fraction=0.2)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
