"""Single-process training: the baseline every distributed strategy is compared with.

The lecture's Keras example (``model.fit(x_train, y_train, epochs=5, batch_size=100)``)
becomes::

    split = load_mnist()
    model = make_model("cnn", seed=0)
    history = fit(model, split.train, epochs=5, batch_size=100, eval_data=split.test)
    evaluate(model, split.test)   # {'loss': ..., 'accuracy': ..., 'macro_f1': ...}

Batches are index slices of a seeded permutation (no DataLoader), so a fixed seed gives
the same losses on every run on the CPU, and the loop costs no more than a bare one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from dlcourse import metrics
from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.data import Dataset, check_dataset
from dlcourse.divergence import check_finite
from dlcourse.models import check_model

OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclass
class History:
    """What :func:`fit` saw, ready to plot: one entry per step or per epoch."""

    step_loss: list[float] = field(default_factory=list)  # training loss of every mini-batch
    epoch_loss: list[float] = field(default_factory=list)  # mean training loss per epoch
    test_loss: list[float] = field(default_factory=list)  # per epoch, when eval_data is given
    test_accuracy: list[float] = field(default_factory=list)
    test_macro_f1: list[float] = field(default_factory=list)
    examples: int = 0  # training examples processed
    wall_s: float = 0.0  # seconds spent in training steps (evaluation excluded)

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "examples_per_s": self.examples_per_s}

    def __repr__(self) -> str:
        last = f", test_accuracy={self.test_accuracy[-1]:.4f}" if self.test_accuracy else ""
        return f"History(epochs={len(self.epoch_loss)}, steps={len(self.step_loss)}{last})"


def check_training_settings(config) -> None:
    """The checks every training configuration shares: ``config``'s ``epochs``,
    ``batch_size``, ``lr``, ``optimizer``, ``momentum`` and ``seed`` (``ValueError`` naming
    the setting). The data-parallel, pipeline and hybrid configurations call it."""
    check_int("epochs", config.epochs, low=0)
    check_int("batch_size", config.batch_size, low=1)
    check_float("lr", config.lr, low=0.0, low_open=True)
    check_choice("optimizer", config.optimizer, OPTIMIZERS)
    check_float("momentum", config.momentum, low=0.0, high=1.0)
    check_int("seed", config.seed, low=0)


def make_optimizer(name: str, params, lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    """``"sgd"`` (plain, no state), ``"momentum"`` (SGD with ``momentum``) or ``"adam"``."""
    check_choice("optimizer", name, OPTIMIZERS)
    check_float("lr", lr, low=0.0, low_open=True)
    check_float("momentum", momentum, low=0.0, high=1.0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=momentum if name == "momentum" else 0.0)


def batches(n: int, batch_size: int, generator: torch.Generator | None = None):
    """Index tensors of consecutive mini-batches of a permutation of ``range(n)``.

    With ``generator=None`` the order is ``0..n-1`` (no shuffle). A last partial batch is
    kept.
    """
    check_int("batch_size", batch_size, low=1)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return order.split(batch_size)


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, batch_size: int = 1000) -> dict[str, float]:
    """Loss, accuracy and macro F1 of ``model`` on ``data`` (in eval mode, no gradients)."""
    check_model(model)
    check_dataset("data", data)
    check_int("batch_size", batch_size, low=1)
    if len(data) == 0:
        raise ValueError("data must hold at least one example, got an empty Dataset")
    was_training = model.training
    model.eval()
    first = next(model.parameters())
    # the inputs take the model's device and dtype (a float64 model gets float64 images)
    logits = torch.cat(
        [
            model(data.X[i : i + batch_size].to(first.device, first.dtype)).float().cpu()
            for i in range(0, len(data), batch_size)
        ]
    )
    model.train(was_training)
    return {
        "loss": float(F.cross_entropy(logits, data.y)),
        "accuracy": metrics.accuracy(logits, data.y),
        "macro_f1": metrics.macro_f1(logits, data.y),
    }


def fit(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int = 5,
    batch_size: int = 100,
    lr: float = 1e-3,
    optimizer: str = "adam",
    momentum: float = 0.9,
    seed: int = 0,
    eval_data: Dataset | None = None,
    progress: bool = True,
    runtime: str = "single",
) -> History:
    """Train ``model`` on ``data`` with mini-batch ``optimizer``; return its :class:`History`.

    The shuffle order comes from ``seed``, so two runs from the same initial model give
    identical losses on the CPU. ``progress`` shows a tqdm bar (a widget in notebooks).
    A loss that blows up (non-finite, or above :data:`dlcourse.divergence.LOSS_LIMIT`) stops
    training with :class:`~dlcourse.divergence.Diverged` naming the update; ``runtime`` is
    the name its message gives the run (``"single"``, ``"replicated"``).
    """
    check_model(model)
    check_dataset("data", data)
    if eval_data is not None:
        check_dataset("eval_data", eval_data)
    check_int("epochs", epochs, low=0)
    check_int("batch_size", batch_size, low=1)
    check_int("seed", seed, low=0)
    if len(data) == 0:
        raise ValueError("data must hold at least one example, got an empty Dataset")
    opt = make_optimizer(optimizer, model.parameters(), lr, momentum)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    history = History()
    model.train()
    for epoch in range(epochs):
        order = batches(len(data), batch_size, generator)
        bar = tqdm(order, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        losses = []
        start = time.perf_counter()
        for idx in bar:
            X, y = data.X[idx].to(device), data.y[idx].to(device)
            loss = F.cross_entropy(model(X), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            check_finite(losses[-1], runtime=runtime, index=len(history.step_loss) + len(losses))
            if progress:
                bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        history.wall_s += time.perf_counter() - start
        history.examples += len(data)
        history.step_loss += losses
        history.epoch_loss.append(sum(losses) / len(losses))
        if eval_data is not None:
            result = evaluate(model, eval_data)
            history.test_loss.append(result["loss"])
            history.test_accuracy.append(result["accuracy"])
            history.test_macro_f1.append(result["macro_f1"])
    return history
