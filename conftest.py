"""Under ``make test``'s xdist workers, each worker and whatever it starts computes on one thread."""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers share two cores: one thread each, and for the kernels and processes they start
    # (OpenMP threads beyond the cores spin against each other: a CNN epoch took 6x as long)
    os.environ["OMP_NUM_THREADS"] = "1"
