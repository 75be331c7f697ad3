from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:  # list it before make_napari_viewer: a skip after a viewer exists breaks napari's teardown
    """../shared/data (real de-identified CTs); tests that use it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present (real-data tests run only in the development checkout)")
    return SHARED_DATA
