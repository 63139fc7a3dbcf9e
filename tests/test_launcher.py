"""The launcher: results by rank, errors with rank and traceback, no orphans."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist

from dlcourse.launcher import WorkerError, WorkerLost, launch, report

pytestmark = [pytest.mark.multiprocess, pytest.mark.serial]  # bounds on how fast a failure is seen


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


def _surroundings(rank, world_size):
    return os.environ.get("DLCOURSE_PROBE"), os.getcwd(), sys.path[0]


def test_workers_get_the_callers_environment_folder_and_path_of_the_call(tmp_path, monkeypatch, no_orphans):
    """Workers fork from a forkserver started earlier: they must still see the caller as it is now."""
    launch(_sum_of_ranks, 1)  # the forkserver exists before the caller changes anything
    monkeypatch.setenv("DLCOURSE_PROBE", "set after the forkserver started")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "student_modules"))
    expected = ("set after the forkserver started", str(tmp_path), str(tmp_path / "student_modules"))
    assert launch(_surroundings, 2) == [expected, expected]


def test_phases_say_where_the_seconds_went(no_orphans):
    phases: dict[str, float] = {}
    start = time.perf_counter()
    launch(_sleep_then_return, 2, 0.3, phases=phases)
    total = time.perf_counter() - start
    assert set(phases) == {"start_s", "process_group_s", "run_s", "teardown_s"}
    assert all(v >= 0 for v in phases.values()), phases
    assert phases["run_s"] >= 0.3  # fn slept 0.3 s on each rank
    assert abs(sum(phases.values()) - total) < 0.25, (phases, total)  # the phases cover the call
    with pytest.raises(ValueError, match="phases must be a dict"):
        launch(_sum_of_ranks, 1, phases=[])


def _sleep_then_return(rank, world_size, seconds):
    time.sleep(seconds)
    return rank


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


# ------------------------------------------------------------------ may_fail and report()


def _rank_1_dies(rank, world_size, how):
    if rank == 1:
        if how == "signal":
            os.kill(os.getpid(), 9)
        raise KeyError("lost shard")
    time.sleep(2.5)  # outlive rank 1's death by more than the parent needs to notice it
    return rank * 10


@pytest.mark.parametrize("how", ["signal", "exception"])
def test_a_may_fail_rank_that_dies_is_reported_and_the_others_return(how, no_orphans):
    start = time.monotonic()
    results = launch(_rank_1_dies, 3, how, may_fail={1})
    assert time.monotonic() - start < 30
    assert results[0] == 0 and results[2] == 20
    lost = results[1]
    assert isinstance(lost, WorkerLost) and lost.rank == 1
    if how == "signal":
        assert lost.signal == "SIGKILL" and "SIGKILL" in lost.reason and lost.worker_traceback == ""
    else:
        assert lost.signal is None and "KeyError" in lost.reason and "_rank_1_dies" in lost.worker_traceback
    assert "rank=1" in repr(lost)


def _optional_dies_then_required_raises(rank, world_size):
    if rank == 2:
        os.kill(os.getpid(), 9)
    if rank == 1:
        time.sleep(2.0)  # after the parent has seen rank 2 die: rank 2 is not the cause
        raise ValueError("bad batch")
    time.sleep(60)


def test_a_rank_not_in_may_fail_still_ends_the_run(no_orphans):
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        launch(_optional_dies_then_required_raises, 3, may_fail=[2])
    assert time.monotonic() - start < 30  # rank 0's 60 s sleep was cut short
    assert info.value.rank == 1 and "ValueError: bad batch" in info.value.message
    assert [(x.rank, x.signal) for x in info.value.lost] == [(2, "SIGKILL")]
    assert "meanwhile lost rank 2" in str(info.value)


def _stall_on_rank_1(rank, world_size):
    if rank == 1:
        time.sleep(600)
    return "done"


def test_a_may_fail_rank_still_running_after_the_others_is_stopped(no_orphans):
    start = time.monotonic()
    results = launch(_stall_on_rank_1, 2, may_fail=(1,))
    assert time.monotonic() - start < 40
    assert results[0] == "done" and isinstance(results[1], WorkerLost) and "stopped" in results[1].reason


def _report_then_wait_for_the_parent(rank, world_size, flag_dir):
    for i in range(20):
        report((rank, i))
    # the parent writes this file when it hears "waiting": only a live channel lets us return
    report("waiting")
    flag = os.path.join(flag_dir, f"heard-{rank}")
    give_up = time.monotonic() + 20
    while not os.path.exists(flag) and time.monotonic() < give_up:
        time.sleep(0.05)
    return os.path.exists(flag)


def test_reports_arrive_live_and_in_order_per_rank(tmp_path, no_orphans):
    seen: list[tuple[int, object]] = []

    def on_message(rank, obj):
        seen.append((rank, obj))
        if obj == "waiting":
            (tmp_path / f"heard-{rank}").touch()

    results = launch(_report_then_wait_for_the_parent, 2, str(tmp_path), on_message=on_message)
    assert results == [True, True]  # each worker heard back while it was still running
    for rank in (0, 1):
        mine = [obj for r, obj in seen if r == rank]
        assert mine == [(rank, i) for i in range(20)] + ["waiting"]


def _report_only(rank, world_size):
    report({"rank": rank})  # nobody listens: a no-op
    return rank


def test_report_without_on_message_is_a_no_op(no_orphans):
    report("outside any run")  # and outside a worker
    assert launch(_report_only, 2) == [0, 1]


def test_an_error_in_on_message_stops_the_run(no_orphans):
    def on_message(rank, obj):
        raise RuntimeError(f"progress bar broke on {obj!r}")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="progress bar broke"):
        launch(_report_then_wait_for_the_parent, 2, "/nonexistent", on_message=on_message)
    assert time.monotonic() - start < 20  # not the workers' 20 s wait


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"may_fail": {2}}, "may_fail must hold ranks from 0 to num_workers - 1 = 1, got 2"),
        ({"may_fail": [-1]}, "may_fail"),
        ({"may_fail": "01"}, "may_fail must be a collection"),
        ({"may_fail": 1}, "may_fail must be a collection"),
        ({"on_message": "print"}, "on_message"),
    ],
)
def test_bad_may_fail_or_on_message_before_any_process(kwargs, match, no_orphans):
    with pytest.raises(ValueError, match=match):
        launch(_sum_of_ranks, 2, **kwargs)


def test_under_torchrun_report_calls_on_message_in_process(tmp_path, no_orphans):
    # one rank with torchrun's environment: launch() runs fn here, no process is spawned
    script = tmp_path / "one_rank.py"
    script.write_text(
        "import os\n"
        "from dlcourse.launcher import launch, report\n"
        "def fn(rank, world_size):\n"
        "    report(('pid', os.getpid()))\n"
        "    return rank\n"
        "seen = []\n"
        "out = launch(fn, 1, may_fail={0}, on_message=lambda rank, obj: seen.append((rank, obj)))\n"
        "print(out, seen == [(0, ('pid', os.getpid()))])\n"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
    env["MASTER_PORT"] = str(port)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[0]", "True"]


def _required_raises_then_optional_dies(rank, world_size):
    if rank == 0:
        raise KeyError("bad shard")
    time.sleep(2.0)  # after rank 0's failure: launch waits for this may_fail rank's fate
    os.kill(os.getpid(), 9)


def test_a_failure_waits_for_the_may_fail_ranks_fate(no_orphans):
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        launch(_required_raises_then_optional_dies, 2, may_fail={1}, timeout=10)
    assert time.monotonic() - start < 14  # the death was seen, not waited out (timeout + 5 s)
    assert info.value.rank == 0 and [(x.rank, x.signal) for x in info.value.lost] == [(1, "SIGKILL")]
