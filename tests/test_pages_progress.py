"""progress_measures's page in Chromium, offline: drawn, within 2,500,000 bytes, exact (see test_pages_studies.py)."""

from __future__ import annotations

from test_pages_draw import check_studies

NAMES = ["progress_measures"]  # the slowest study: 200 training steps at p = 113


def test_these_study_pages_draw_offline_within_the_size_limit(tmp_path):
    check_studies(tmp_path, NAMES)
