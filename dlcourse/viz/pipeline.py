"""The pipeline bubble: K stages, M micro-batches, GPipe or 1F1B, on a virtual clock.

A pipeline of K stages idles while it fills and drains: with M micro-batches a fraction
``(K-1)/(M+K-1)`` of stage time is bubble (Huang et al., "GPipe", NeurIPS 2019). The
schedule comes from :func:`dlcourse.pipeline.simulate_schedule` and is cheap, so the
sliders follow the mouse.
"""

from __future__ import annotations

import ipywidgets as W

from dlcourse._validate import check_choice, check_int
from dlcourse.viz.panel import Panel, slider
from dlcourse.viz.techniques import BubblePlot


class PipelineExplorer(Panel):
    """The pipeline bubble: K stages, M micro-batches, GPipe or 1F1B, on a virtual clock."""

    title = "Pipelining: stages K, micro-batches M, and the bubble"

    def __init__(self, num_stages: int = 4, num_microbatches: int = 4, schedule: str = "gpipe") -> None:
        check_int("num_stages", num_stages, low=1, high=8)
        check_int("num_microbatches", num_microbatches, low=1, high=32)
        check_choice("schedule", schedule, ("gpipe", "1f1b"))
        self.num_stages = slider(W.IntSlider, "stages K", num_stages, 1, 8)
        self.num_microbatches = slider(W.IntSlider, "micro-batches M", num_microbatches, 1, 32)
        # the schedule is cheap to compute, so these sliders may follow the mouse
        self.num_stages.continuous_update = self.num_microbatches.continuous_update = True
        self.schedule = W.ToggleButtons(options=["gpipe", "1f1b"], value=schedule, description="schedule")
        self.bubble_plot = BubblePlot()
        self.bubble_plot.fig.set_size_inches(10, 3.5)
        self.timeline = None
        super().__init__([self.num_stages, self.num_microbatches, self.schedule], self.bubble_plot.fig)
        self._watch(self.num_stages, self.num_microbatches, self.schedule)
        self.refresh()

    def compute(self) -> str:
        from dlcourse.pipeline import simulate_schedule

        K, M = self.num_stages.value, self.num_microbatches.value
        self.timeline = t = simulate_schedule(K, M, self.schedule.value)
        self.bubble_plot.update(t, M)
        return (
            f"{self.schedule.value}: bubble {t.bubble_fraction:.1%} of stage time "
            f"(formula (K-1)/(M+K-1) = {t.expected_bubble:.1%}); "
            f"most micro-batches' activations held by a stage: {max(t.peak_inflight)}"
        )
