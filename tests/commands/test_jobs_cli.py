"""`sentinel jobs list` with the job kinds the dashboard added (longer names than the CLI's own)."""

from __future__ import annotations

from sentinel.cli import main
from sentinel.jobs import JOB_KINDS
from sentinel.store import Store


def test_jobs_list_keeps_its_columns_for_every_job_kind(tmp_path, monkeypatch, capsys):
    store = Store(tmp_path / "sentinel.db")
    kinds = sorted(JOB_KINDS, key=len)
    assert max(map(len, kinds)) > len("finetune")         # dashboard-finetune, strategy-compare
    for kind in kinds:
        job = store.create_job(kind, {}, "cpu")
        store.set_job_state(job, "failed", error="test")
    monkeypatch.setenv("SENTINEL_HOME", str(tmp_path))
    assert main(["jobs", "list"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert len(rows) == len(kinds)
    column = header.index("state")
    for row in rows:                                      # the state column starts under its heading in every row
        assert row[column:].startswith("failed"), (header, row)
