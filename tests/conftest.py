from __future__ import annotations

import os
from pathlib import Path

import pytest

# The measuring CPU planner converts and times every new network on first use; unit tests build many small
# networks, so it is off unless a test turns it on (tests/inference/test_cpu_plan.py does, for real).
os.environ.setdefault("MEDSEG_CALIBRATE", "0")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:  # list it before make_napari_viewer: a skip after a viewer exists breaks napari's teardown
    """../shared/data (real de-identified CTs); tests that use it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present (real-data tests run only in the development checkout)")
    return SHARED_DATA
