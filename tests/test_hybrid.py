"""Hybrid: 2 pipeline stages x 2 DDP replicas (4 processes) equal one process on the full batch."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dlcourse.cli import main
from dlcourse.data import Dataset
from dlcourse.hybrid import HybridConfig, grid_position, run_hybrid
from dlcourse.models import count_parameters, make_model
from dlcourse.train import fit


@given(K=st.integers(1, 8), R=st.integers(1, 8))
def test_grid_positions_are_a_bijection(K, R):
    cells = [grid_position(rank, K) for rank in range(K * R)]
    assert sorted(cells) == [(r, s) for r in range(R) for s in range(K)]


@pytest.mark.multiprocess
def test_hybrid_equals_single_process_training_on_the_full_batch(no_orphans):
    # momentum has state, so a wrong step would show up in later steps too
    settings = dict(epochs=2, batch_size=32, lr=0.1, optimizer="momentum", seed=13)
    model = make_model("mlp", seed=11)
    g = torch.Generator().manual_seed(12)
    X, y = torch.rand(64, 1, 28, 28, generator=g), torch.randint(0, 10, (64,), generator=g)
    result = run_hybrid(model, X, y, num_replicas=2, config=HybridConfig(num_stages=2, **settings))
    reference = copy.deepcopy(model)
    history = fit(reference, Dataset(X, y), **settings, progress=False)  # the same settings, one process
    assert result.replicas_agree  # DDP kept the two replicas of each stage identical
    assert result.steps == 4
    # per step: each replica's (16, 64) activations forward and their gradients back, and a
    # ring all-reduce of every float32 parameter between the 2 replicas (2 copies)
    per_step = 2 * 2 * 16 * 64 * 4 + 2 * (2 - 1) * count_parameters(model) * 4
    assert result.bytes_sent == 4 * per_step
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(result.state_dict[k], v, atol=1e-5, rtol=0, msg=k)
    assert result.step_loss == pytest.approx(history.step_loss, abs=1e-5)
    assert "K=2 x R=2" in repr(result)


@pytest.mark.multiprocess
def test_cli_hybrid_runs_four_processes(tmp_path, no_orphans):
    out = tmp_path / "hybrid.json"
    argv = ["train", "--strategy", "hybrid", "--model", "mlp", "--stages", "2", "--workers", "2"]
    assert main([*argv, "--epochs", "1", "--no-progress", "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["test_accuracy"] > 0.5 and metrics["updates"] == 40
    assert metrics["replicas_agree"] is True
    for key in ("test_loss", "test_macro_f1", "examples_per_s", "wall_s", "bytes_sent", "staleness"):
        assert key in metrics


def test_bad_hybrid_input_names_the_argument():
    model = make_model("mlp")
    X, y = torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)
    with pytest.raises(ValueError, match="num_stages must be <= the model's 4 layers, got 5"):
        run_hybrid(model, X, y, 2, HybridConfig(num_stages=5, batch_size=8))
    with pytest.raises(ValueError, match=r"batch_size \(8\) must be divisible by num_replicas=3"):
        run_hybrid(model, X, y, 3, HybridConfig(batch_size=8))
    with pytest.raises(ValueError, match="num_replicas"):
        run_hybrid(model, X, y, 0, HybridConfig(batch_size=8))
    with pytest.raises(ValueError, match="batch_size"):
        run_hybrid(model, X, y, 2, HybridConfig(batch_size=16))  # more than the data holds
    with pytest.raises(ValueError, match="optimizer"):
        HybridConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="lr"):
        HybridConfig(lr=0.0)
    with pytest.raises(ValueError, match="momentum"):
        HybridConfig(momentum=1.5)
    with pytest.raises(ValueError, match="seed"):
        HybridConfig(seed=-1)
    with pytest.raises(ValueError, match="nn.Sequential"):
        run_hybrid(torch.nn.Linear(784, 10), X, y, 2, HybridConfig(batch_size=8))
