"""Shared fixtures; GPU tests skip (with the reason printed) where CUDA is missing."""

from __future__ import annotations

import os

import psutil
import pytest
import torch

# Keep every test process to its share of the 2 cores: tests start worker processes (under
# xdist, one thread: see the conftest.py at the root).
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: no GPU on this machine (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """In-process reference models are tiny: extra threads only fight the worker processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def mnist():
    """The default data (the shipped 5,000-digit subset unless full MNIST is present)."""
    from dlcourse.data import load_mnist

    return load_mnist("subset")


def worker_processes() -> list[psutil.Process]:
    """This process's live descendants that are workers.

    Not multiprocessing's resource tracker, nor the launcher's forkserver (a child of this
    process, kept for the next run); the workers forked from it share its command line but
    are its children, so they still count.
    """
    me = psutil.Process()
    found = []
    for child in me.children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            parent = child.ppid()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if "resource_tracker" in cmd or ("multiprocessing.forkserver" in cmd and parent == me.pid):
            continue
        found.append(child)
    return found


@pytest.fixture
def no_orphans():
    """Asserts after the test that it left no worker process behind."""
    yield
    left = worker_processes()
    for p in left:  # clean up so that one failure does not cascade
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    assert not left, f"processes outlived the run: {[p.pid for p in left]}"
