"""The held-out stopping rule of a training run: keep the best validated weights, stop when they stop improving.

With held-out corrected slices (a fine-tune with 4 or more, or the trial run of one with 2-3) the loop
validates every ``TrainConfig.val_every`` steps. `BestCheckpoint` remembers the weights of the best validation
(the pooled foreground Dice `safety.score`, which the activation decision compares too) and, with
``TrainConfig.stop_patience``, tells the loop to stop once that many validations in a row fell more than
``stop_drop`` below the best: the rest of the budget would only move the model further from what the
held-out slice supports. Only validations from ``TrainConfig.stop_after`` of the run on count (half by
default): a new model for a class the default model does not know (stomach) was stopped at 150 steps with the
weights of step 90 kept, before it had learnt the stomach (Dice 0.007 instead of 0.733 at 300 steps). At the end the loop restores the best weights when they beat the final ones.

The held-out slice then both selected the weights and measures them, so its "after" figure is the best of a
few validations (mildly optimistic); the result records which step was kept (``TrainLog.selected_step``).
"""

from __future__ import annotations


class BestCheckpoint:
    def __init__(self, enabled: bool = True, patience: int = 0, drop: float = 0.02, after: float = 0.0):
        self.enabled, self.patience, self.drop, self.after = enabled, int(patience), float(drop), float(after)
        self.score: float | None = None
        self.step: int | None = None
        self.result: dict | None = None
        self.state: dict | None = None
        self.worse = 0  # validations in a row more than ``drop`` below the best

    def update(self, step: int, result: dict | None, net, frac: float = 1.0) -> None:
        """Note a validation at ``step``; ``frac``: how far the run is (steps or time). Validations before
        ``after`` of the run neither count as the best nor towards stopping: a new class that the first
        steps have not learnt yet scores low on one held-out slice, and an early best would be kept."""
        from napari_medseg.training.safety import score

        s = score(result)
        if not self.enabled or s is None or frac < self.after:
            return
        if self.score is None or s > self.score:
            self.score, self.step, self.result, self.worse = s, step, result, 0
            self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elif s < self.score - self.drop:
            self.worse += 1
        else:
            self.worse = 0

    @property
    def should_stop(self) -> bool:
        return self.enabled and self.patience > 0 and self.worse >= self.patience

    def restore(self, net, final: dict | None, final_step: int) -> tuple[dict | None, int]:
        """Load the best weights into ``net`` when they beat ``final`` (the last validation); returns the
        validation result and step of the weights ``net`` now holds."""
        from napari_medseg.training.safety import score

        f = score(final)
        if self.state is None or self.step == final_step or (f is not None and f >= self.score):
            return final, final_step
        net.load_state_dict(self.state)
        return self.result, int(self.step)
