"""How many real worker processes fit this machine, and a sentence that says why.

A real worker costs about 185 MB (measured: ``dlcourse train --strategy async-ps --workers 16
--model mlp`` peaks at 3.1 GB PSS over its 18 processes). On mybinder.org a session has one
CPU and 2 GB, so a run of 16 workers would be killed there. Everything that starts processes
on a student's behalf asks :func:`fit_workers` first::

    >>> n, why = fit_workers(16)
    >>> print(why)   # on Binder
    16 workers asked, 4 run here: this machine has 1 CPU and 2 GB (at most 4 workers per CPU)

The machine is what this process may use, not what the host has: the CPU affinity mask
(``os.sched_getaffinity``), the cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``) and
the cgroup memory limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) with its current use,
else ``/proc/meminfo``. Containers (Binder, Docker, CI) set the cgroup; ``os.cpu_count()`` and
PyTorch's thread pool see the host's cores instead.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dlcourse._validate import check_float, check_int

PER_PROCESS_MB = 185  # measured PSS of one real worker (torch, the model, its shard, gloo)
WORKERS_PER_CPU = 4  # 16 workers took ~55 s on 2 cores: 4 per CPU keeps a real run near 30 s
HEADROOM_MB = 256  # left for the notebook's kernel to grow while the run goes (results, figures)
_UNLIMITED = 2**60  # cgroup v1 writes "no limit" as 9223372036854771712


@dataclass(frozen=True)
class Machine:
    """What this process may use; read by :func:`probe_machine`."""

    cpus: float  # CPUs to run on: the affinity mask, capped by the cgroup quota (may be fractional)
    memory_mb: float | None  # memory limit: the cgroup's, else physical memory; None if unknown
    free_mb: float | None  # of that, available now (page cache counts as available); None if unknown

    def __repr__(self) -> str:
        free = "unknown" if self.free_mb is None else f"{self.free_mb:.0f} MB"
        return f"Machine(cpus={self.cpus:g}, memory={_size(self.memory_mb)}, free={free})"

    def describe(self) -> str:
        """'1 CPU and 2 GB', as the sentences of :func:`fit_workers` say it."""
        cpus = f"{self.cpus:g} CPU" + ("" if self.cpus <= 1 else "s")
        return f"{cpus} and {_size(self.memory_mb)}"


def _size(mb: float | None) -> str:
    if mb is None:
        return "memory of unknown size"
    if mb >= 1024:
        return f"{round(mb / 1024, 1):g} GB"
    return f"{mb:.0f} MB"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _int_or_none(text: str | None) -> int | None:
    if text is None or not re.fullmatch(r"-?\d+", text):
        return None  # "max" (no limit) or a missing file
    return int(text)


def _stat_field(text: str | None, name: str) -> int:
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return 0


def _cgroup_dirs(cgroup_root: Path, proc_cgroup: Path, controller: str) -> list[Path]:
    """The cgroup directories whose limits bind this process, innermost first.

    A limit set on any ancestor binds too, so callers take the smallest. Inside a container the
    path in /proc/self/cgroup may name the host's hierarchy, absent here: those are skipped, and
    the mount's root (the container's own cgroup) is always tried.
    """
    dirs: list[Path] = []
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controller == "" and controllers == "":  # cgroup v2: "0::/path"
            bases = [cgroup_root]
        elif controller and controller in controllers.split(","):  # v1: "4:memory:/path"
            bases = [cgroup_root / controllers, cgroup_root / controller]
        else:
            continue
        for base in bases:
            here = base / rel.lstrip("/")
            while True:
                if here.is_dir() and here not in dirs:
                    dirs.append(here)
                if here == base:
                    break
                here = here.parent
    for base in [cgroup_root] if controller == "" else [cgroup_root / controller]:
        if base.is_dir() and base not in dirs:
            dirs.append(base)
    return dirs


def cpu_quota(
    cgroup_root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | Path = "/proc/self/cgroup"
) -> float | None:
    """The cgroup CPU quota in CPUs (1.0 on Binder), or None where no quota is set."""
    root, proc = Path(cgroup_root), Path(proc_cgroup)
    quotas = []
    for d in _cgroup_dirs(root, proc, ""):  # v2: "200000 100000" or "max 100000"
        fields = (_read(d / "cpu.max") or "").split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit() and int(fields[1]) > 0:
            quotas.append(int(fields[0]) / int(fields[1]))
    for d in _cgroup_dirs(root, proc, "cpu"):  # v1: quota -1 means none
        quota = _int_or_none(_read(d / "cpu.cfs_quota_us"))
        period = _int_or_none(_read(d / "cpu.cfs_period_us"))
        if quota is not None and quota > 0 and period:
            quotas.append(quota / period)
    return min(quotas) if quotas else None


def _meminfo(path: Path) -> tuple[float | None, float | None]:
    """(MemTotal, MemAvailable) in MB from /proc/meminfo; sysconf where that file is missing."""
    text = _read(path)
    if text is not None:
        fields = {}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                fields[key] = int(value.split()[0]) / 1024
        total, free = fields.get("MemTotal"), fields.get("MemAvailable", fields.get("MemFree"))
        if total is not None:
            return total, free
    try:  # macOS has no /proc; its free memory is not read here (the cap is then by CPU)
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20, None
    except (AttributeError, ValueError, OSError):
        return None, None


def memory_mb(
    cgroup_root: str | Path = "/sys/fs/cgroup",
    proc_cgroup: str | Path = "/proc/self/cgroup",
    meminfo: str | Path = "/proc/meminfo",
) -> tuple[float | None, float | None]:
    """(limit, available) in MB: the tightest cgroup limit and physical memory, and what is free of it.

    Available counts reclaimable page cache (``inactive_file``) as free, as the kernel does
    before it kills anything.
    """
    root, proc = Path(cgroup_root), Path(proc_cgroup)
    total, free = _meminfo(Path(meminfo))
    limits = [] if total is None else [(total, free)]
    for d in _cgroup_dirs(root, proc, ""):  # v2
        limit = _int_or_none(_read(d / "memory.max"))
        if limit is not None and limit < _UNLIMITED:
            used = _int_or_none(_read(d / "memory.current")) or 0
            used -= _stat_field(_read(d / "memory.stat"), "inactive_file")
            limits.append((limit / 2**20, max(0, limit - max(used, 0)) / 2**20))
    for d in _cgroup_dirs(root, proc, "memory"):  # v1
        limit = _int_or_none(_read(d / "memory.limit_in_bytes"))
        if limit is not None and limit < _UNLIMITED:
            used = _int_or_none(_read(d / "memory.usage_in_bytes")) or 0
            used -= _stat_field(_read(d / "memory.stat"), "total_inactive_file")
            limits.append((limit / 2**20, max(0, limit - max(used, 0)) / 2**20))
    if not limits:
        return None, None
    frees = [f for _, f in limits if f is not None]
    return min(t for t, _ in limits), (min(frees) if frees else None)


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def probe_machine(
    cgroup_root: str | Path = "/sys/fs/cgroup",
    proc_cgroup: str | Path = "/proc/self/cgroup",
    meminfo: str | Path = "/proc/meminfo",
    affinity: int | None = None,
) -> Machine:
    """Read this machine's CPUs and memory (the arguments point elsewhere for tests)."""
    cpus = float(_affinity() if affinity is None else check_int("affinity", affinity, low=1))
    quota = cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, quota)
    limit, free = memory_mb(cgroup_root, proc_cgroup, meminfo)
    return Machine(cpus=cpus, memory_mb=limit, free_mb=free)


def fit_workers(
    requested: int, per_process_mb: float = PER_PROCESS_MB, *, machine: Machine | None = None
) -> tuple[int, str]:
    """How many of ``requested`` worker processes to start here, and a sentence saying why.

    At most :data:`WORKERS_PER_CPU` per CPU (at least one in all), and as many as fit in the
    free memory less :data:`HEADROOM_MB` at ``per_process_mb`` each. The answer is 0 when not
    even one worker fits: callers then refuse to start, with the sentence as the error.
    """
    check_int("requested", requested, low=1)
    check_float("per_process_mb", per_process_mb, low=0, low_open=True)
    if machine is None:
        machine = probe_machine()
    elif not isinstance(machine, Machine):
        raise ValueError(f"machine must be a Machine (from probe_machine()), got {machine!r}")
    by_cpu = max(1, math.floor(machine.cpus * WORKERS_PER_CPU))
    by_memory = None
    if machine.free_mb is not None:
        by_memory = max(0, math.floor((machine.free_mb - HEADROOM_MB) / per_process_mb))
    allowed = min(requested, by_cpu, requested if by_memory is None else by_memory)
    asked = f"{requested} worker{'s' if requested != 1 else ''} asked"
    has = f"this machine has {machine.describe()}"
    if allowed == 0:
        return 0, (
            f"{asked}, none can run here: {has}, of which {machine.free_mb:.0f} MB is free "
            f"and a worker needs about {per_process_mb:g} MB (with {HEADROOM_MB} MB kept for the notebook)"
        )
    if allowed == requested:
        return allowed, f"{asked}, {'all ' if requested > 1 else ''}{allowed} run here: {has}"
    if by_memory is not None and by_memory < by_cpu:
        why = f"{machine.free_mb / 1024:.1f} GB free at about {per_process_mb:g} MB per worker"
    else:
        why = f"at most {WORKERS_PER_CPU} workers per CPU"
    return allowed, f"{asked}, {allowed} run here: {has} ({why})"
