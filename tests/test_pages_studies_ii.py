"""The other study pages in Chromium, offline: drawn, within 2,500,000 bytes, exact (see test_pages_studies.py)."""

from __future__ import annotations

from test_pages_draw import check_studies

NAMES = ["infinite_width", "scaling_laws", "optimisation", "superposition"]


def test_these_study_pages_draw_offline_within_the_size_limit(tmp_path):
    check_studies(tmp_path, NAMES)
