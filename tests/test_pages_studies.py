"""Study pages in Chromium, offline (as tests/test_pages_draw.py checks the standard pages): every figure and view
draws, each page is at most 2,500,000 bytes, its numbers are exact. The study scripts run their ``--smoke`` plans;
this file takes four, tests/test_pages_studies_ii.py four more and tests/test_pages_progress.py the slowest."""

from __future__ import annotations

import re
from pathlib import Path

from test_pages_draw import bench, check_studies

NAMES = ["grokking_wd_data", "grokfast", "lottery_tickets", "clock_pizza"]


def test_these_study_pages_draw_offline_within_the_size_limit(tmp_path):
    check_studies(tmp_path, NAMES)


def test_the_two_files_cover_every_study_that_writes_a_page():
    from test_pages_progress import NAMES as SLOWEST
    from test_pages_studies_ii import NAMES as REST

    experiments = Path(__file__).resolve().parents[1] / "experiments"
    writers = {p.stem for p in experiments.glob("*.py") if re.search(r"\bverdict_page\(", p.read_text())}
    assert sorted(NAMES + REST + SLOWEST) == sorted(bench().STUDIES) == sorted(writers)
