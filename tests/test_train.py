"""Single-process training: determinism, validation, and the lecture's example."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from dlcourse.models import make_model
from dlcourse.train import evaluate, fit, make_optimizer


def test_fit_is_deterministic(mnist):
    small = mnist.train[:600]
    settings = dict(epochs=2, batch_size=50, lr=0.1, optimizer="momentum", progress=False)
    runs = []
    for _ in range(2):
        model = make_model("mlp", seed=5)
        runs.append((fit(model, small, **settings, seed=7), model))
    assert runs[0][0].step_loss == runs[1][0].step_loss
    assert all(torch.equal(p, q) for p, q in zip(runs[0][1].parameters(), runs[1][1].parameters()))
    other = fit(make_model("mlp", seed=5), small, **settings, seed=8)
    assert other.step_loss != runs[0][0].step_loss  # the seed really drives the shuffle


def test_plain_sgd_step_is_w_minus_lr_grad(mnist):
    model = make_model("mlp", seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    batch = mnist.train[:10]
    loss = torch.nn.functional.cross_entropy(model(batch.X), batch.y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    fit(model, batch, epochs=1, batch_size=10, lr=0.5, optimizer="sgd", progress=False)
    for w0, g, w1 in zip(before, grads, model.parameters()):
        assert torch.allclose(w1, w0 - 0.5 * g, atol=1e-6)


@pytest.mark.slow
def test_lecture_example_reaches_95_percent(mnist):
    """The Keras example (CNN, Adam, batch 100, 5 epochs) reaches >= 0.95 test accuracy."""
    model = make_model("cnn", seed=0)
    history = fit(
        model,
        mnist.train,
        epochs=5,
        batch_size=100,
        lr=1e-3,
        optimizer="adam",
        eval_data=mnist.test,
        progress=False,
    )
    result = evaluate(model, mnist.test)
    assert result["accuracy"] >= 0.95
    assert result["macro_f1"] >= 0.95
    assert history.epoch_loss[-1] < history.epoch_loss[0]


def test_bad_arguments(mnist):
    model = make_model("mlp")
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        fit(model, mnist.train, epochs=-1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("lbfgs", model.parameters(), 0.1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        make_optimizer("sgd", model.parameters(), 0.0)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(model, mnist.test, batch_size=0)


def test_fit_and_evaluate_name_a_wrong_model_or_data(mnist):
    # checked before use: a string model or a bare tensor used to fail deep inside with AttributeError
    model = make_model("mlp")
    with pytest.raises(ValueError, match="model must be a torch.nn.Module, got str"):
        fit("mlp", mnist.train)
    with pytest.raises(ValueError, match="model must be a torch.nn.Module, got str"):
        evaluate("mlp", mnist.test)
    with pytest.raises(ValueError, match="data must be a dlcourse.data.Dataset, got Tensor"):
        fit(model, mnist.train.X)
    with pytest.raises(ValueError, match="eval_data must be a dlcourse.data.Dataset, got tuple"):
        fit(model, mnist.train[:10], eval_data=(mnist.test.X, mnist.test.y))
    with pytest.raises(ValueError, match="data must be a dlcourse.data.Dataset, got Tensor"):
        evaluate(model, mnist.test.X)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "dlcourse", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_single_writes_json(tmp_path):
    out = tmp_path / "m.json"
    r = _cli(
        "train",
        "--strategy",
        "single",
        "--model",
        "mlp",
        "--epochs",
        "1",
        "--no-progress",
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    m = json.loads(out.read_text())
    for key in "test_accuracy test_loss test_macro_f1 examples_per_s wall_s updates bytes_sent".split():
        assert key in m
    assert set(m["staleness"]) >= {"max", "mean", "histogram"}
    assert m["test_accuracy"] > 0.7 and m["updates"] == 40
    assert "test_accuracy" in r.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "--epochs", "-1"], "--epochs"),
        (["train", "--model", "resnet"], "--model"),
        (["train", "--strategy", "telepathy"], "--strategy"),
        (["train", "--lr", "0"], "--lr"),
        (["train", "--json", "/no/such/folder/m.json"], "--json"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(args, needle):
    r = _cli(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr


def test_evaluate_feeds_a_float64_model_float64_inputs(mnist):
    """A model in double precision is evaluated on the same data (converted), with the same result."""
    from dlcourse.models import make_model
    from dlcourse.train import evaluate

    model = make_model("mlp", seed=0)
    single = evaluate(model, mnist.test[:200])
    double = evaluate(model.double(), mnist.test[:200])
    assert double["accuracy"] == single["accuracy"]
    assert abs(double["loss"] - single["loss"]) < 1e-5
