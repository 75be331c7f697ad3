"""`LossPlot`: the fine-tune widget's live loss and held-out Dice (matplotlib; a text line without it)."""

from __future__ import annotations

import time

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget


class LossPlot(QWidget):
    """Live loss (left axis) and held-out Dice (right axis) against the training step."""

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.dice: list[tuple[int, float]] = []
        self._stage, self._offset = None, 0
        self._last_draw = 0.0
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure
        except ImportError:  # plotting is optional: fall back to a text line
            self.canvas = None
            self.text = QLabel("")
            layout.addWidget(self.text)
            return
        fig = Figure(figsize=(3.6, 2.2), dpi=90, tight_layout=True)
        self.ax = fig.add_subplot(111)
        self.ax2 = self.ax.twinx()
        self.canvas = FigureCanvasQTAgg(fig)
        self.canvas.setMinimumHeight(170)
        layout.addWidget(self.canvas)
        self._draw()

    def clear(self):
        self.steps, self.losses, self.dice = [], [], []
        self._stage, self._offset = None, 0
        self._draw()

    def add(self, step: int, loss, val_dice, stage: str = "") -> None:
        if stage != self._stage:  # a new stage (cross-validation fold, final run) continues the x axis
            self._stage, self._offset = stage, (self.steps[-1] + 1 if self.steps else 0)
        x = int(step) + self._offset
        if loss is not None:
            self.steps.append(x)
            self.losses.append(float(loss))
        if val_dice is not None:
            self.dice.append((x, float(val_dice)))
        if time.monotonic() - self._last_draw > 0.5:
            self._draw()

    def _draw(self):
        self._last_draw = time.monotonic()
        if self.canvas is None:
            last = f"loss {self.losses[-1]:.3f}" if self.losses else ""
            dice = f", held-out Dice {self.dice[-1][1]:.3f}" if self.dice else ""
            self.text.setText(last + dice)
            return
        ax, ax2 = self.ax, self.ax2
        ax.clear()
        ax2.clear()
        ax.plot(self.steps, self.losses, color="tab:blue", lw=1)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("loss", color="tab:blue", fontsize=8)
        if self.dice:
            s, d = zip(*self.dice)
            ax2.plot(s, d, "o-", color="tab:orange", ms=3, lw=1)
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("held-out Dice", color="tab:orange", fontsize=8)
        ax2.yaxis.set_label_position("right")
        for a in (ax, ax2):
            a.tick_params(labelsize=7)
        self.canvas.draw_idle()
