"""Activation recomputation (same gradients, fewer activations held) and mixed precision (fp32 master
weights track the fp32 run; the bytes of each copy)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dlcourse.models import MLP, make_model
from dlcourse.precision import MixedPrecision, bytes_per_parameter
from dlcourse.recompute import Recomputed, activation_bytes, recompute_segments, segment_bounds
from dlcourse.train import make_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def _loss_bytes(n: int) -> int:
    """What cross-entropy saves: log-softmax's output (n x 10 float32), the targets (int64), a scalar."""
    return n * 10 * 4 + n * 8 + 4


# ------------------------------------------------------------------ recomputation


@pytest.mark.parametrize("name", ["cnn", "mlp"])
@pytest.mark.parametrize("segments", [1, 2, 3, 4])
def test_recomputation_gives_exactly_the_same_gradients(name, segments):
    """The same operations on the same inputs, run again: bit for bit the same gradients."""
    X, y = _batch(16)
    model = make_model(name, seed=0)
    activation_bytes(model, X, y)
    plain = _grads(model)
    model.zero_grad(set_to_none=True)
    activation_bytes(recompute_segments(model, segments), X, y)
    for a, b in zip(plain, _grads(model)):
        assert torch.equal(a, b)


def test_recomputation_holds_fewer_activations_on_the_lecture_cnn():
    """Held from forward to backward: only each segment's input (and the loss's) instead of every
    layer's; the peak (plus one segment rebuilt) stays at most what the plain step holds."""
    n = 32
    X, y = _batch(n)
    model = make_model("cnn", seed=0)
    plain = activation_bytes(model, X, y)
    assert plain.rebuilt == 0 and plain.peak == plain.held
    one = activation_bytes(recompute_segments(model, 1), X, y)
    # one segment: the network's input is all that is held (and what the loss saves)
    assert one.held == X.numel() * 4 + _loss_bytes(n)
    assert one.held < plain.held / 40
    assert one.peak == plain.peak  # ... but backward rebuilds the whole network at once
    held = [activation_bytes(recompute_segments(model, s), X, y) for s in (2, 4, 8)]
    for r in held:
        assert one.held < r.held < plain.held
        assert r.peak < plain.peak  # segment inputs + one segment alive: less than everything


def test_the_mlp_activations_held_and_rebuilt_are_its_tensors():
    """The MLP on 100 digits: plain holds X, the hidden ReLU output and the loss's tensors;
    recomputed in one segment it holds X and the loss's, and rebuilds the hidden layer."""
    n, hidden = 100, 64
    X, y = _batch(n)
    model = MLP(hidden)
    plain = activation_bytes(model, X, y)
    assert plain.held == n * 784 * 4 + n * hidden * 4 + _loss_bytes(n)
    one = activation_bytes(recompute_segments(model, 1), X, y)
    assert one.held == n * 784 * 4 + _loss_bytes(n)
    assert one.rebuilt == n * hidden * 4
    assert one.peak == plain.peak


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(["cnn", "mlp"]), n=st.integers(1, 16), data=st.data())
def test_measured_activation_bytes_equal_the_memory_formula(name, n, data):
    """dlcourse.memory's tensor-by-tensor count predicts what is held and rebuilt, plain and with
    every number of segments; the measurement has one more scalar (cross-entropy's total weight)."""
    from dlcourse.memory import activation_parts

    model = make_model(name, seed=0)
    segments = data.draw(st.integers(1, len(model)))
    X, y = _batch(n)
    plain = activation_bytes(model, X, y)
    assert (plain.held - 4, plain.rebuilt) == activation_parts(name, n)
    measured = activation_bytes(recompute_segments(model, segments), X, y)
    assert (measured.held - 4, measured.rebuilt) == activation_parts(
        name, n, recompute=True, segments=segments
    )


def test_a_recomputed_model_in_eval_mode_is_the_plain_model():
    X, _ = _batch(8)
    model = make_model("cnn", seed=0)
    wrapped = recompute_segments(model, 3).eval()
    assert torch.equal(wrapped(X), model.eval()(X))
    assert list(wrapped.parameters()) == list(model.parameters())


@given(num_layers=st.integers(1, 40), data=st.data())
def test_segment_bounds_cover_every_layer_once_in_near_equal_parts(num_layers, data):
    segments = data.draw(st.integers(1, num_layers))
    bounds = segment_bounds(num_layers, segments)
    assert len(bounds) == segments and bounds[0][0] == 0 and bounds[-1][1] == num_layers
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [b - a for a, b in bounds]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_recomputation_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="segments must be <= 8"):
        recompute_segments(make_model("cnn"), 9)
    with pytest.raises(ValueError, match="segments must be >= 1"):
        Recomputed(make_model("mlp"), 0)
    with pytest.raises(ValueError, match="model must be an nn.Sequential"):
        Recomputed(nn.Linear(2, 2), 1)
    with pytest.raises(ValueError, match="X and y must be tensors with the same number"):
        activation_bytes(make_model("mlp"), *_batch(4)[:1], torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        activation_bytes("cnn", *_batch(4))


# ------------------------------------------------------------------ mixed precision


def test_bytes_per_parameter_of_each_copy():
    """The ZeRO paper's count: mixed-precision Adam is 2 + 2 + K (K = 4 + 4 + 4) = 16 bytes."""
    assert bytes_per_parameter("adam") == {
        "weights": 2,
        "gradients": 2,
        "master": 4,
        "optimizer": 8,
        "total": 16,
    }
    assert bytes_per_parameter("sgd")["total"] == 8
    assert bytes_per_parameter("momentum")["total"] == 12
    assert bytes_per_parameter("adam", mixed=False) == {
        "weights": 4,
        "gradients": 4,
        "master": 0,
        "optimizer": 8,
        "total": 16,
    }


@settings(max_examples=10, deadline=None)
@given(hidden=st.integers(1, 48), optimizer=st.sampled_from(["sgd", "momentum", "adam"]))
def test_measured_bytes_of_each_copy_equal_the_formula(hidden, optimizer):
    """After a step: bf16 weights and gradients 2 bytes each, fp32 master + optimizer state."""
    trainer = MixedPrecision(MLP(hidden), optimizer, lr=1e-3)
    trainer.step(*_batch(4))
    p = sum(x.numel() for x in trainer.master)
    per = bytes_per_parameter(optimizer)
    held = trainer.state_bytes()
    assert held.parameters == per["weights"] * p
    assert held.gradients == per["gradients"] * p
    assert held.optimizer == (per["master"] + per["optimizer"]) * p
    assert held.state == per["total"] * p


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_bytes_per_copy_add_up_to_the_memory_modules_bytes_per_parameter(optimizer):
    """The copy-by-copy count here and dlcourse.memory's ZeRO formula (stage 0, one rank) agree."""
    from dlcourse import memory

    for mixed, precision in ((True, "mixed"), (False, "fp32")):
        assert bytes_per_parameter(optimizer, mixed=mixed)["total"] == memory.bytes_per_parameter(
            0, 1, optimizer=optimizer, precision=precision
        )


def _fp32_run(name, optimizer, lr, batches):
    model = make_model(name, seed=0)
    opt = make_optimizer(optimizer, model.parameters(), lr)
    losses = []
    for X, y in batches:
        loss = F.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


@pytest.mark.parametrize(
    "name, optimizer, lr", [("mlp", "sgd", 0.1), ("mlp", "adam", 1e-3), ("cnn", "sgd", 0.1)]
)
def test_bf16_compute_with_fp32_master_weights_tracks_the_fp32_run(mnist, name, optimizer, lr):
    """Ten steps on real digits: losses within 1% of fp32's, weights within 3% (relative)."""
    batches = [(mnist.train.X[i : i + 32], mnist.train.y[i : i + 32]) for i in range(0, 320, 32)]
    reference, ref_losses = _fp32_run(name, optimizer, lr, batches)
    trainer = MixedPrecision(make_model(name, seed=0), optimizer, lr=lr)
    losses = [trainer.step(X, y) for X, y in batches]
    assert all(p.dtype == torch.bfloat16 for p in trainer.model.parameters())
    assert losses != ref_losses  # really computed in bf16 ...
    for a, b in zip(losses, ref_losses):
        assert a == pytest.approx(b, rel=1e-2)  # ... and close to fp32 all the same
    assert losses[-1] < losses[0]
    for master, p in zip(trainer.master, reference.parameters()):
        assert master.dtype == torch.float32
        assert ((master - p.detach()).norm() / p.detach().norm()).item() <= 3e-2


def test_the_master_copy_keeps_the_updates_that_bf16_weights_lose(mnist):
    """Small updates (lr 1e-3, plain SGD) are below bf16's resolution near most weights: updated
    in bf16 directly they mostly vanish; the fp32 master copy keeps them (Micikevicius et al.)."""
    batches = [(mnist.train.X[i : i + 32], mnist.train.y[i : i + 32]) for i in range(0, 320, 32)]
    lr = 1e-3
    reference, _ = _fp32_run("mlp", "sgd", lr, batches)
    start = [p.detach().clone() for p in make_model("mlp", seed=0).parameters()]
    moved = [(p.detach() - s) for p, s in zip(reference.parameters(), start)]

    trainer = MixedPrecision(make_model("mlp", seed=0), "sgd", lr=lr)
    for X, y in batches:
        trainer.step(X, y)
    bf16_only = make_model("mlp", seed=0).to(torch.bfloat16)
    opt = torch.optim.SGD(bf16_only.parameters(), lr=lr)
    for X, y in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(bf16_only(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def kept(params):  # share of the fp32 run's movement each run kept, over all weights
        got = torch.cat([(p.detach().float() - s).flatten() for p, s in zip(params, start)])
        want = torch.cat([m.flatten() for m in moved])
        return (got @ want / (want @ want)).item()

    assert kept(trainer.master) == pytest.approx(1.0, abs=0.05)
    assert kept(bf16_only.parameters()) < 0.5


def test_mixed_precision_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="model must be a torch.nn.Module"):
        MixedPrecision("mlp")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        MixedPrecision(MLP(), "lamb")
    with pytest.raises(ValueError, match="lr must be > 0"):
        MixedPrecision(MLP(), "sgd", lr=0)
    with pytest.raises(ValueError, match="X and y must be tensors"):
        MixedPrecision(MLP()).step(torch.zeros(2, 1, 28, 28), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        bytes_per_parameter("rmsprop")
    with pytest.raises(ValueError, match="mixed must be one of"):
        bytes_per_parameter("adam", mixed="yes")
