#!/usr/bin/env bash
# Every GPU test of the suite, in one short, bounded run on a machine with CUDA:
#   DDP over NCCL, replication on cuda:0 with CPU-hosted weights, model split over cuda:0 + CPU,
#   the branch-parallel LSTM, parameter-server workers computing on CUDA.
#
#   scripts/gpu_check.sh                 # from the repository root
#   PYTHON=python3 scripts/gpu_check.sh  # choose the interpreter (default: .venv's if it sees CUDA)
#   GPU_TESTS=tests/test_data_parallel.py scripts/gpu_check.sh   # only some files
#
# Packages missing on that machine can come along as wheels in .whl/ (see
# /work/.library/device/README.md): they are installed into /tmp/site, never over the
# system's torch. Exits non-zero if CUDA is missing, a test fails, or it runs past 5 minutes.
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

"$python" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: torch {torch.__version__} sees no CUDA device; nothing to check")
import torch.distributed as dist
print(f"torch {torch.__version__}, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, "
      f"NCCL available: {dist.is_nccl_available()}")
EOF

# -p no:cacheprovider: the checkout may be read-only; --timeout: no single test may hang
timeout 300 "$python" -m pytest -m gpu -rs -q -p no:cacheprovider --timeout 120 \
    ${GPU_TESTS:-tests}
