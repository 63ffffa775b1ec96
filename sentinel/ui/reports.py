"""Review reports kept in the data folder's reports store (`Store.save_report`): what the Review page keeps, the
table Experiments lists them in, and the part of a report's HTML a page embeds (plain Python, no Streamlit)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from sentinel.store import ReportRecord, Store

if TYPE_CHECKING:                    # types only: sentinel.review imports torch
    from sentinel.review import Review

REPORT_PARAM = "report"              # the Experiments page's query parameter: ?report=<id> shows that report alone
REPORTS_PAGE = "app_pages/experiments.py"


def report_title(review: Review) -> str:
    """'Review of stories-gpt2: pruned fails (2026-12-08 00:10 UTC)' — the base, each verdict, when."""
    words = {"pass": "passes", "fail": "fails", "inconclusive": "is inconclusive"}
    verdicts = ", ".join(f"{v.label} {words[v.status]}" for v in review.verdicts)
    return f"Review of {review.base.name}: {verdicts} ({review.created})"


def keep_report(store: Store, review: Review, page: str) -> str:
    """Keep the report the Review page offers for download (the same HTML) in the reports store; returns its id."""
    return store.save_report(report_title(review), page)


def reports_frame(reports: Iterable[ReportRecord]) -> pd.DataFrame:
    """One row per kept report, newest first: id, title, when."""
    rows = [{"id": r.id, "title": r.title, "kept": datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M")}
            for r in reports]
    return pd.DataFrame(rows, columns=["id", "title", "kept"])


def embeddable(page: str) -> str:
    """A report's own style and body, to show inside a dashboard page (st.html) without a second html/head."""
    style = page[page.index("<style>"):page.index("</style>") + len("</style>")]
    return style + page[page.index("<body>") + len("<body>"):page.index("</body>")]
