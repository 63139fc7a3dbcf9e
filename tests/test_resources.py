"""dlcourse.resources reads cgroup v1 and v2 limits (fake files here) and sizes runs to them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlcourse.resources import (
    HEADROOM_MB,
    WORKERS_PER_CPU,
    Machine,
    cpu_quota,
    fit_workers,
    memory_mb,
    probe_machine,
)

GB = 2**30
MEMINFO = "MemTotal:       16384000 kB\nMemFree:         1000000 kB\nMemAvailable:   12288000 kB\n"


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def binder_v2(tmp_path):
    """A Binder-like cgroup v2 container: 1 CPU, 2 GB, 500 MB in use of which 100 MB page cache."""
    _write(
        tmp_path,
        {
            "cg/cpu.max": "100000 100000\n",
            "cg/memory.max": f"{2 * GB}\n",
            "cg/memory.current": f"{500 * 2**20}\n",
            "cg/memory.stat": f"anon 1\ninactive_file {100 * 2**20}\nactive_file 5\n",
            "proc_cgroup": "0::/\n",
            "meminfo": MEMINFO,
        },
    )
    return {
        "cgroup_root": tmp_path / "cg",
        "proc_cgroup": tmp_path / "proc_cgroup",
        "meminfo": tmp_path / "meminfo",
    }


def test_v2_binder_limits(binder_v2):
    assert cpu_quota(binder_v2["cgroup_root"], binder_v2["proc_cgroup"]) == 1.0
    limit, free = memory_mb(**binder_v2)
    assert limit == 2048 and free == 2048 - 400  # page cache counts as free
    machine = probe_machine(**binder_v2, affinity=16)  # the host's 16 cores do not count
    assert machine == Machine(cpus=1.0, memory_mb=2048, free_mb=1648)
    assert machine.describe() == "1 CPU and 2 GB"


def test_binder_sentence(binder_v2):
    n, why = fit_workers(16, machine=probe_machine(**binder_v2, affinity=16))
    assert n == WORKERS_PER_CPU == 4
    assert why.startswith("16 workers asked, 4 run here: this machine has 1 CPU and 2 GB")


def test_v2_no_limits_falls_back_to_meminfo_and_affinity(tmp_path):
    _write(tmp_path, {"cg/cpu.max": "max 100000\n", "cg/memory.max": "max\n", "p": "0::/\n", "m": MEMINFO})
    kw = {"cgroup_root": tmp_path / "cg", "proc_cgroup": tmp_path / "p", "meminfo": tmp_path / "m"}
    assert cpu_quota(kw["cgroup_root"], kw["proc_cgroup"]) is None
    assert memory_mb(**kw) == (16000, 12000)
    assert probe_machine(**kw, affinity=3) == Machine(cpus=3.0, memory_mb=16000, free_mb=12000)


def test_v2_nested_cgroup_takes_the_tightest_ancestor(tmp_path):
    _write(
        tmp_path,
        {
            "cg/cpu.max": "50000 100000\n",  # the parent allows half a CPU
            "cg/user/job/cpu.max": "300000 100000\n",
            "cg/user/memory.max": f"{1 * GB}\n",
            "cg/user/memory.current": "0\n",
            "cg/user/job/memory.max": f"{4 * GB}\n",
            "cg/user/job/memory.current": f"{GB // 2}\n",
            "p": "0::/user/job\n",
            "m": MEMINFO,
        },
    )
    kw = {"cgroup_root": tmp_path / "cg", "proc_cgroup": tmp_path / "p", "meminfo": tmp_path / "m"}
    assert cpu_quota(kw["cgroup_root"], kw["proc_cgroup"]) == 0.5
    assert memory_mb(**kw) == (1024, 1024)
    machine = probe_machine(**kw, affinity=8)
    assert machine.cpus == 0.5 and machine.describe() == "0.5 CPU and 1 GB"
    assert fit_workers(8, machine=machine)[0] == 2  # 4 per CPU


def test_v1_quota_and_memory(tmp_path):
    _write(
        tmp_path,
        {
            "cg/cpu,cpuacct/cpu.cfs_quota_us": "200000\n",
            "cg/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            "cg/memory/docker/abc/memory.limit_in_bytes": f"{3 * GB}\n",
            "cg/memory/docker/abc/memory.usage_in_bytes": f"{GB}\n",
            "cg/memory/docker/abc/memory.stat": f"cache 1\ntotal_inactive_file {GB // 2}\n",
            "cg/memory/memory.limit_in_bytes": "9223372036854771712\n",  # v1's "no limit"
            "p": "4:memory:/docker/abc\n2:cpu,cpuacct:/\n0::/\n",
            "m": MEMINFO,
        },
    )
    kw = {"cgroup_root": tmp_path / "cg", "proc_cgroup": tmp_path / "p", "meminfo": tmp_path / "m"}
    assert cpu_quota(kw["cgroup_root"], kw["proc_cgroup"]) == 2.0
    assert memory_mb(**kw) == (3072, 2560)
    assert probe_machine(**kw, affinity=4) == Machine(cpus=2.0, memory_mb=3072, free_mb=2560)


def test_v1_no_quota_and_host_path_missing_in_container(tmp_path):
    _write(
        tmp_path,
        {
            "cg/cpu/cpu.cfs_quota_us": "-1\n",
            "cg/cpu/cpu.cfs_period_us": "100000\n",
            "cg/memory/memory.limit_in_bytes": f"{2 * GB}\n",  # the container's own root
            "cg/memory/memory.usage_in_bytes": "0\n",
            "p": "1:cpu:/kubepods/pod1\n4:memory:/kubepods/pod1/c1\n",  # host paths, absent here
            "m": MEMINFO,
        },
    )
    kw = {"cgroup_root": tmp_path / "cg", "proc_cgroup": tmp_path / "p", "meminfo": tmp_path / "m"}
    assert cpu_quota(kw["cgroup_root"], kw["proc_cgroup"]) is None
    assert memory_mb(**kw) == (2048, 2048)


def test_no_cgroup_and_no_meminfo(tmp_path):
    kw = {"cgroup_root": tmp_path / "none", "proc_cgroup": tmp_path / "none2", "meminfo": tmp_path / "none3"}
    limit, free = memory_mb(**kw)
    assert free is None  # sysconf gives the size, not what is free
    machine = probe_machine(**kw, affinity=2)
    n, why = fit_workers(3, machine=machine)
    assert n == 3 and why.startswith("3 workers asked, all 3 run here: this machine has 2 CPUs and ")


def test_memory_caps_before_cpu():
    machine = Machine(cpus=4.0, memory_mb=2048, free_mb=HEADROOM_MB + 3 * 185 + 10)
    n, why = fit_workers(16, machine=machine)
    assert n == 3
    assert why == (
        "16 workers asked, 3 run here: this machine has 4 CPUs and 2 GB"
        " (0.8 GB free at about 185 MB per worker)"
    )
    assert fit_workers(16, 100, machine=machine)[0] == 5


def test_nothing_fits():
    n, why = fit_workers(2, machine=Machine(cpus=1.0, memory_mb=2048, free_mb=300))
    assert n == 0
    assert why.startswith(
        "2 workers asked, none can run here: this machine has 1 CPU and 2 GB, of which 300 MB is free"
    )


def test_all_fit_and_one_worker():
    machine = Machine(cpus=2.0, memory_mb=8192, free_mb=6000)
    assert fit_workers(8, machine=machine) == (
        8,
        "8 workers asked, all 8 run here: this machine has 2 CPUs and 8 GB",
    )
    assert fit_workers(1, machine=machine) == (
        1,
        "1 worker asked, 1 run here: this machine has 2 CPUs and 8 GB",
    )
    # a fraction of a CPU still runs one worker
    assert fit_workers(4, machine=Machine(cpus=0.1, memory_mb=None, free_mb=None))[0] == 1


@pytest.mark.parametrize("bad", [0, -3, 2.0, "4", True, None])
def test_bad_requested(bad):
    with pytest.raises(ValueError, match="requested"):
        fit_workers(bad, machine=Machine(cpus=1.0, memory_mb=2048, free_mb=2048))


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "185"])
def test_bad_per_process_mb(bad):
    with pytest.raises(ValueError, match="per_process_mb"):
        fit_workers(4, bad, machine=Machine(cpus=1.0, memory_mb=2048, free_mb=2048))


def test_bad_machine_and_affinity():
    with pytest.raises(ValueError, match="machine"):
        fit_workers(4, machine={"cpus": 1})
    with pytest.raises(ValueError, match="affinity"):
        probe_machine(affinity=0)


def test_this_machine():
    machine = probe_machine()
    assert machine.cpus > 0
    n, why = fit_workers(2)
    assert 0 <= n <= 2 and why.startswith("2 workers asked")
    assert "Machine(cpus=" in repr(machine)


def test_the_command_line_warns_past_what_fits_and_refuses_when_nothing_fits(monkeypatch, capsys):
    """N beyond the machine: a warning naming the numbers; not even one process: exit 2, one line."""
    import dlcourse.resources as resources
    from dlcourse import cli, commands

    monkeypatch.setattr(resources, "fit_workers", lambda n, *a, **k: (2, f"{n} workers asked, 2 run here"))
    monkeypatch.setattr(commands, "_data", lambda args: (_ for _ in ()).throw(RuntimeError("stop here")))
    with pytest.raises(RuntimeError, match="stop here"):  # it went on to load the data: it would run
        cli.main(["train", "--strategy", "ddp", "--workers", "8", "--no-progress"])
    assert "warning: 8 workers asked, 2 run here; running all 8 anyway" in capsys.readouterr().err

    none = lambda n, *a, **k: (0, f"{n} workers asked, none can run here")  # noqa: E731
    monkeypatch.setattr(resources, "fit_workers", none)
    assert cli.main(["train", "--strategy", "async-ps", "--workers", "4", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "dlcourse train: error: 5 workers asked, none can run here"
