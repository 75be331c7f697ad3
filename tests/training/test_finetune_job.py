"""The fine-tune job: a Stop at any point saves nothing (or says what it saved), the budget reserves the
measured post-training stages, and steps/min are in the progress messages."""

from __future__ import annotations

import dataclasses

import pytest

from napari_medseg.errors import CancelledError
from napari_medseg.training import versions
from napari_medseg.training.finetune import finetune_steps
from napari_medseg.training.job import MIN_TRAIN_SHARE, SAVE_RESERVE_S, JobClock, job_progress
from napari_medseg.training.loop import TrainProgress

from training_helpers import blob_volumes, ft_config

SLICES = [(0, 8), (0, 12), (0, 16), (0, 20), (0, 24)]
HELD = ((0, 16),)


def _tree(home):
    return sorted(str(p.relative_to(home)) for p in home.rglob("*"))


def _budgeted(steps, budget, **kw):
    cfg = ft_config(steps, holdout_slices=HELD, **kw)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, time_budget_s=budget))


# ------------------------------------------------------------------------------------------ Stop
def test_a_stop_at_any_yield_saves_nothing(tiny_parent, medseg_home):
    """The models home is untouched at every yield (closing the job there leaves it so), and closing the job at
    its last yield, with the package already written, removes it."""
    image, labels = blob_volumes(6)
    before = _tree(medseg_home)
    gen = finetune_steps(image, labels, SLICES, model="tiny", config=_budgeted(3, 600.0))
    stages, hidden = [], []
    for p in gen:
        stages.append(p.stage)
        now = _tree(medseg_home)
        assert versions.list_versions("tiny") == ["v1"] and versions.active_version("tiny") == "v1", p.stage
        extra = sorted(set(now) - set(before))
        assert all(part.startswith(".") for e in extra for part in e.split("/")[2:3]), (p.stage, extra)
        hidden.append(bool(extra))
        if p.stage == "save":
            break
    assert stages[-1] == "save" and hidden[-1] and not any(hidden[:-1])  # only the staged package, only at the end
    gen.close()  # Stop at the last yield
    assert _tree(medseg_home) == before


def test_a_stop_after_the_last_yield_saves_nothing_and_says_so(tiny_parent, medseg_home):
    """The worker reports the last yield, the user presses Stop while the job continues: the job's last cancel
    check (just before the rename) sees it."""
    from napari_medseg.progress import run_steps

    image, labels = blob_volumes(6)
    before = _tree(medseg_home)
    pressed = []
    gen = finetune_steps(image, labels, SLICES, model="tiny", config=_budgeted(3, 600.0), cancel=lambda: bool(pressed))
    with pytest.raises(CancelledError, match="nothing was saved"):
        run_steps(gen, progress=lambda p: pressed.append(1) if p.stage == "save" else None)
    assert _tree(medseg_home) == before


def test_a_job_that_finishes_says_what_it_saved(tiny_parent, medseg_home):
    """Stop pressed too late (after the rename): the result exists and its text names the saved version."""
    from napari_medseg.progress import run_steps

    image, labels = blob_volumes(6)
    res = run_steps(finetune_steps(image, labels, SLICES, model="tiny", config=_budgeted(3, 600.0), cancel=lambda: False))
    assert res.version == "v2" and res.model_path.is_dir() and "v2" in versions.list_versions("tiny")
    assert res.summary().startswith("New model tiny@v2:")
    assert not [p for p in res.model_path.parent.iterdir() if p.name.startswith(".")]  # no staging left


# ------------------------------------------------------------------------------------------ budget
class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _step(stage, step, elapsed, val=None):
    return TrainProgress(step, 100, stage, "", step=step, loss=0.5, val_dice=val, elapsed_s=elapsed)


def test_the_time_left_for_training_sets_aside_the_measured_stages():
    clock = FakeClock()
    job = JobClock(100.0, clock)
    job.reserve["segment (new model)"] = 20.0
    job.reserve["check images"] = 5.0
    clock.t += 30  # e.g. the parent's segmentations took 30 s
    job.start_training()
    assert job.training_budget() == pytest.approx(100 - 30 - 25 - SAVE_RESERVE_S)
    clock.t += 10
    assert job.time_left_for_training() == pytest.approx(100 - 40 - 25 - SAVE_RESERVE_S)
    # the machine got twice as slow during training (judged from the steps): the reserved stages too
    for n in range(1, 7):
        job.observe(_step("t", n, n * 1.0))
    for n in range(7, 13):
        job.observe(_step("t", n, 6.0 + (n - 6) * 2.0))
    assert job.slowdown() == pytest.approx(2.0)
    assert job.time_left_for_training() == pytest.approx(100 - 40 - 2 * 25 - SAVE_RESERVE_S)
    clock.t += 40  # out of time: training stops
    assert job.time_left_for_training() == pytest.approx(100 - 80 - 2 * 25 - SAVE_RESERVE_S)
    # the measured stages leave nothing: training still gets its minimum share of the budget in all
    job.reserve["segment (new model)"] = 500.0
    clock.t = job._train_start + 2
    assert job.time_left_for_training() == pytest.approx(MIN_TRAIN_SHARE * 100 - 2)
    assert JobClock(None, clock).time_left_for_training() == float("inf")


def test_step_durations_exclude_validations_and_stage_changes():
    job = JobClock(None, FakeClock())
    for p in [_step("a", 1, 1.0), _step("a", 2, 2.0), _step("a", 3, 9.0, val=0.8), _step("b", 1, 0.5),
              _step("b", 2, 1.0)]:
        job.observe(p)
    assert job._steps == [1.0, 0.5] and job.steps_per_min() == pytest.approx(80.0)


def test_the_job_reserves_what_the_parent_segmentation_measured(tiny_parent, monkeypatch):
    """The new model's segmentation is reserved at the parent's measured cost: when that cost (as the job's clock
    sees it) eats the budget, training stops by time at its minimum share."""
    import napari_medseg.training.job as job_mod

    clock = FakeClock()
    real = job_mod.segment_whole

    def slow_segment(image, net, card, stage, job):
        res = yield from real(image, net, card, stage, job)
        clock.t += 30.0  # as if this segmentation had taken 30 s
        return res

    monkeypatch.setattr(job_mod, "segment_whole", slow_segment)
    seen_left = []
    real_left = JobClock.time_left_for_training
    monkeypatch.setattr(JobClock, "time_left_for_training", lambda self: seen_left.append(real_left(self)) or seen_left[-1])
    image, labels = blob_volumes(4, shift=(0, -3, 3))
    seen = []
    gen = finetune_steps(image, labels, SLICES, model="tiny", config=_budgeted(10**5, 40.0), clock=clock)
    from napari_medseg.progress import run_steps

    res = run_steps(gen, progress=seen.append)
    t = res.timing
    assert t["reserved_s"]["segment (new model)"] == pytest.approx(30.0, abs=1.0)
    assert t["stages_s"]["segment (parent)"] == pytest.approx(30.0, abs=1.0)
    assert res.card.provenance["hyper_parameters"]["time_budget_s"] == pytest.approx(MIN_TRAIN_SHARE * 40.0)
    # 40 - 30 - (30 + 1) s < 0: the floor (the minimum share of the budget) rules, read before every step
    assert len(seen_left) >= 2 and max(seen_left) <= MIN_TRAIN_SHARE * 40.0
    assert res.card.provenance["steps"] < 10**5
    # steps per minute in the progress messages, as the widget shows them
    msgs = [p.message for p in seen if isinstance(p, TrainProgress) and p.stage == "fine-tune: training"]
    assert any("steps/min" in m for m in msgs)


def test_job_progress_shows_the_step_and_its_pace():
    job = JobClock(60.0, FakeClock())
    steps = iter([_step("t", 1, 1.0), _step("t", 2, 3.0), _step("t", 3, 5.0)])

    def gen():
        yield from steps
        return "log"

    out = list(job_progress(gen(), job))
    assert out[0].message.startswith("step 1 (at most 100)") and "steps/min" not in out[0].message
    assert out[-1].message.startswith("step 3 (at most 100) · 30 steps/min") and out[-1].unit == "s"
