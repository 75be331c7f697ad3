"""`InferenceConfig`: presets, validation naming the field, the keyword API as a thin layer over it, and the
same config from the CLI and the API for the same preset (the widget's: tests/napari/test_segment_widget.py)."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest

from napari_medseg.errors import InputError, MedsegError
from napari_medseg.inference import segment
from napari_medseg.inference.config import PRESETS, ConfigError, InferenceConfig, add_arguments, from_arguments
from napari_medseg.volume import Volume

from test_pipeline import smooth_image, threshold_model


def test_presets_are_frozen_and_named():
    fast, balanced, best = (InferenceConfig.preset(n) for n in ("fast", "balanced", "best"))
    assert (fast.overlap, fast.tta) == (0.25, False)
    assert (balanced.overlap, balanced.tta) == (0.5, False)
    assert (best.overlap, best.tta) == (0.5, True)
    assert best.preset_name == "best" and set(PRESETS) == {"fast", "balanced", "best"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.overlap = 0.9  # type: ignore[misc]
    assert InferenceConfig.preset("fast", device="cpu") == fast.replace(device="cpu")
    assert InferenceConfig().overlap is None  # the model card's overlap


@pytest.mark.parametrize("field, value", [("device", "gpu"), ("overlap", 1.0), ("overlap", -0.1), ("overlap", "half"),
                                          ("tta", "rotations"), ("sw_batch_size", 0), ("amp", "yes"),
                                          ("uncertainty", "everywhere"), ("postprocess", 1)])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field) as err:
        InferenceConfig(**{field: value})
    assert isinstance(err.value, MedsegError) and isinstance(err.value, InputError)


def test_unknown_settings_and_presets_are_refused():
    with pytest.raises(ConfigError, match="overlapp"):
        InferenceConfig().replace(overlapp=0.5)
    with pytest.raises(ConfigError, match="preset"):
        InferenceConfig.preset("quick")
    vol = Volume(smooth_image())
    with pytest.raises(ConfigError, match="windows"):
        segment(vol, threshold_model(), device="cpu", windows=3)


def test_keywords_are_a_thin_layer_over_the_config():
    vol = Volume(smooth_image())
    old = segment(vol, threshold_model(), device="cpu", overlap=0.25, tta=True, return_uncertainty=True)
    assert old.config == InferenceConfig(device="cpu", overlap=0.25, tta=True, uncertainty="source")
    new = segment(vol, threshold_model(), config=old.config)
    np.testing.assert_array_equal(new.labels.array, old.labels.array)
    np.testing.assert_array_equal(new.uncertainty.array, old.uncertainty.array)
    # a keyword overrides the config it is given with
    cfg = InferenceConfig.preset("best", device="cpu")
    assert segment(vol, threshold_model(), config=cfg, tta=False).config == cfg.replace(tta=False)
    assert InferenceConfig.from_keywords(cfg, return_uncertainty=False) == cfg  # "not asked for" keeps it


def _cli_args(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_cli_and_api_give_the_same_config(preset):
    api = InferenceConfig.preset(preset, device="cpu")
    assert from_arguments(_cli_args(["--preset", preset, "--device", "cpu"])) == api
    # the real `medseg predict` parser (its flags come from `add_arguments`)
    from napari_medseg.cli import build_parser

    args = build_parser().parse_args(["predict", "x.nii.gz", "-o", "out", "--preset", preset, "--device", "cpu"])
    assert from_arguments(args) == api
    assert from_arguments(_cli_args(["--preset", preset, "--overlap", "0.75"])) == InferenceConfig.preset(preset, overlap=0.75)
    assert from_arguments(_cli_args([])) == InferenceConfig()  # no preset: the model card's settings, as before


def test_cli_refuses_a_bad_overlap(tmp_path, capsys):
    from napari_medseg.cli import main

    rc = main(["predict", str(tmp_path / "x.nii.gz"), "-o", str(tmp_path / "out"), "--overlap", "1.5", "--quiet"])
    assert rc != 0
    assert "overlap" in capsys.readouterr().err
