"""The test sample world's fixed size and last day (shared by conftest.py and the tests)."""

from __future__ import annotations

import datetime as dt

TEST_END_DATE = dt.date(2026, 6, 30)
TEST_SCALE = 0.1  # 2,000 customers
