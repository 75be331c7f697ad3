"""Fixtures for model tests: MONAI Model Zoo bundles with briefly fitted weights."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bundle_factory import SPLEEN_INFERENCE, SPLEEN_METADATA, fit_threshold_unet


@pytest.fixture(scope="session")
def spleen_bundle(tmp_path_factory) -> Path:
    """A bundle folder in the exact Model Zoo layout with fitted weights."""
    import torch

    root = tmp_path_factory.mktemp("bundles") / "spleen_ct_segmentation"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    cfg = copy.deepcopy(SPLEEN_INFERENCE)
    args = {k: v for k, v in cfg["network_def"].items() if k != "_target_"}
    net = fit_threshold_unet(args)
    torch.save(net.state_dict(), root / "models" / "model.pt")
    (root / "configs" / "inference.json").write_text(json.dumps(cfg, indent=4))
    (root / "configs" / "metadata.json").write_text(json.dumps(SPLEEN_METADATA, indent=4))
    (root / "LICENSE").write_text("test bundle")
    (root / "docs").mkdir()
    (root / "docs" / "README.md").write_text("test bundle")
    return root
