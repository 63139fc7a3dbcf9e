"""Widget panels: move a slider, watch the simulated cluster change.

Four explorers for the lecture's questions, each an ipywidgets 8 box you display in a
notebook cell (``StalenessExplorer()`` as the last line of a cell shows it):

- :class:`StragglerExplorer`: N, straggler probability and slowdown; synchronous and
  asynchronous SGD side by side (the "last executor" effect; Dean et al., NIPS 2012).
- :class:`StalenessExplorer`: N, soft-sync S, staleness bound, lr policy, server shards
  (Zhang et al., IJCAI 2016; Ho et al., NIPS 2013). It takes a student's own lr rule
  ``f(lr, tau) -> lambda_n`` and has a "Run it for real" button that runs the same
  configuration on the real parameter server and overlays what really happened.
- :class:`CompressionExplorer`: threshold tau and residual on/off (Strom, Interspeech 2015).
- :class:`PipelineExplorer`: stages K and micro-batches M of a GPipe / 1F1B pipeline
  (Huang et al., NeurIPS 2019).

Each explorer is one module, on the frame of :mod:`dlcourse.panel_base` (how the panels
stay fast, and how errors reach the student):

- :mod:`dlcourse.panel_stragglers`, :mod:`dlcourse.panel_staleness`,
  :mod:`dlcourse.panel_compression`, :mod:`dlcourse.panel_pipeline`.
"""

from __future__ import annotations

from dlcourse.panel_base import PANEL_DEFAULTS, Panel, SimPanel, sim_config, slider
from dlcourse.panel_compression import CompressionExplorer, message_bytes_per_step
from dlcourse.panel_pipeline import PipelineExplorer
from dlcourse.panel_staleness import RealRun, StalenessExplorer, run_for_real_default
from dlcourse.panel_stragglers import StragglerExplorer

__all__ = [  # every panel, wherever it lives
    "PANEL_DEFAULTS",
    "CompressionExplorer",
    "Panel",
    "PipelineExplorer",
    "RealRun",
    "SimPanel",
    "StalenessExplorer",
    "StragglerExplorer",
    "message_bytes_per_step",
    "run_for_real_default",
    "sim_config",
    "slider",
]
