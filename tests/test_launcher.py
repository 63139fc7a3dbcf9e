"""The launcher: results by rank, errors with rank and traceback, no orphans."""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.distributed as dist

from dlcourse.launcher import WorkerError, launch

pytestmark = pytest.mark.multiprocess


def _sum_of_ranks(rank, world_size, offset=0):
    t = torch.tensor([rank])
    dist.all_reduce(t)
    return int(t) + offset, rank, world_size


def test_results_come_back_by_rank(no_orphans):
    assert launch(_sum_of_ranks, 3, offset=10) == [(13, 0, 3), (13, 1, 3), (13, 2, 3)]


def test_runs_a_closure_that_plain_pickle_cannot(no_orphans):
    secret = 7

    def local(rank, world_size):  # a local function, like one defined in a notebook cell
        return rank * secret

    assert launch(local, 2) == [0, 7]


def _raise_on_rank_1(rank, world_size):
    if rank == 1:
        raise KeyError("missing shard")
    time.sleep(30)


def test_worker_exception_names_rank_with_traceback(no_orphans):
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        launch(_raise_on_rank_1, 3)
    assert time.monotonic() - start < 15
    assert info.value.rank == 1
    assert "KeyError" in str(info.value) and "_raise_on_rank_1" in info.value.worker_traceback


def _die_in_collective(rank, world_size):
    if rank == 1:
        os.kill(os.getpid(), 9)
    dist.all_reduce(torch.ones(1))


def test_sigkilled_worker_is_reported(no_orphans):
    start = time.monotonic()
    with pytest.raises(WorkerError, match="SIGKILL") as info:
        launch(_die_in_collective, 2, timeout=30)
    assert info.value.rank == 1 and time.monotonic() - start < 15


def _stall(rank, world_size):
    if rank == 1:
        time.sleep(600)
    dist.all_reduce(torch.ones(1))


def test_stalled_worker_fails_at_the_timeout(no_orphans):
    start = time.monotonic()
    with pytest.raises(WorkerError):
        launch(_stall, 2, timeout=3)
    assert time.monotonic() - start < 20


def test_run_timeout_ends_everything(no_orphans):
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="run_timeout"):
        launch(_stall, 2, timeout=300, run_timeout=4)
    assert time.monotonic() - start < 20


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_workers": 0}, "num_workers"),
        ({"num_workers": 2, "timeout": -1}, "timeout"),
        ({"num_workers": 2, "backend": "mpi"}, "backend"),
    ],
)
def test_bad_arguments_before_any_process(kwargs, match, no_orphans):
    with pytest.raises(ValueError, match=match):
        launch(_sum_of_ranks, **kwargs)
