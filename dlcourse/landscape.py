"""The loss landscape between two minima: why the average of two minima need not be one.

The lecture ("Problems of Parameter Averaging"): if workers average infrequently their
parameters diverge, and "the average of multiple different local minima is not guaranteed
to be a local minimum." This module makes that visible. Train two networks from different
seeds to two minima ``W_a`` and ``W_b``, then evaluate the loss

- along the straight line ``W(alpha) = (1 - alpha) W_a + alpha W_b`` (Goodfellow, Vinyals,
  Saxe, "Qualitatively characterizing neural network optimization problems", ICLR 2015);
  ``alpha = 0.5`` is exactly the parameter average of the two;
- in the 2-D plane through ``W_a``, ``W_b`` and a third minimum ``W_c`` (Garipov et al.,
  "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018).

The **barrier** is how far the loss on the segment rises above the straight line joining
its two end losses, ``max_alpha L(W(alpha)) - ((1 - alpha) L(W_a) + alpha L(W_b))`` (Frankle
et al., "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML 2020). Two runs
from the same initial weights (what averaging every step keeps you at) have almost none;
two runs from different seeds have a large one: hidden units can be permuted without
changing the function, and averaging mixes unrelated units.

Usage::

    split = load_mnist()
    result = loss_landscape(split.train[:1000], LandscapeConfig())
    result.barrier, result.midpoint_loss

Drawing lives in :func:`dlcourse.viz.landscape_plot`; this module imports no display code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from dlcourse._validate import check_float, check_int
from dlcourse.data import Dataset
from dlcourse.models import MLP
from dlcourse.train import fit


@dataclass
class LandscapeConfig:
    """How to find the minima and where to evaluate the loss around them."""

    seeds: tuple[int, ...] = (0, 1, 2)  # initialisation + shuffle seed of each minimum (2 or 3)
    hidden: int = 64  # hidden units of the MLP (small, so the whole picture costs seconds)
    epochs: int = 10  # training epochs per minimum (enough for a low training loss)
    batch_size: int = 50  # examples per SGD step
    lr: float = 0.2  # plain SGD learning rate
    line_points: int = 41  # points on the line W(alpha), alpha in [alpha_min, alpha_max]
    alpha_min: float = -0.25  # a little beyond W_a, so the minimum's walls show
    alpha_max: float = 1.25  # a little beyond W_b
    grid_points: int = 21  # the plane is a grid_points x grid_points grid (0: skip the plane)
    margin: float = 0.25  # the plane extends this fraction of its size beyond the minima

    def __post_init__(self) -> None:
        if not isinstance(self.seeds, (tuple, list)) or len(self.seeds) not in (2, 3):
            raise ValueError(f"seeds must be a tuple of 2 or 3 seeds, got {self.seeds!r}")
        for s in self.seeds:
            check_int("seeds", s, low=0)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must differ (else the minima coincide), got {self.seeds!r}")
        check_int("hidden", self.hidden, low=1)
        check_int("epochs", self.epochs, low=0)
        check_int("batch_size", self.batch_size, low=1)
        check_float("lr", self.lr, low=0.0, low_open=True)
        check_int("line_points", self.line_points, low=2)
        check_float("alpha_min", self.alpha_min, high=0.0)
        check_float("alpha_max", self.alpha_max, low=1.0)
        if self.grid_points != 0:
            check_int("grid_points", self.grid_points, low=2)
        if self.grid_points and len(self.seeds) != 3:
            raise ValueError(f"the plane needs 3 seeds (three minima), got seeds={self.seeds!r}")
        check_float("margin", self.margin, low=0.0)


@dataclass(repr=False)
class Landscape:
    """The loss along the line between two minima and (optionally) in a plane through three."""

    alphas: np.ndarray  # (line_points,) positions on the line; 0 is W_a, 1 is W_b
    line_loss: np.ndarray  # (line_points,) loss at W(alpha) on the evaluation data
    line_accuracy: np.ndarray  # (line_points,) accuracy at W(alpha)
    barrier: float  # max rise of the loss above the chord between the end losses, alpha in [0, 1]
    midpoint_loss: float  # loss of the parameter average (alpha = 0.5)
    end_losses: tuple[float, float]  # losses at W_a and W_b
    plane_x: np.ndarray | None = None  # (grid,) coordinate along W_b - W_a, in units of |W_b - W_a|
    plane_y: np.ndarray | None = None  # (grid,) coordinate along the orthogonal direction, same unit
    plane_loss: np.ndarray | None = None  # (grid, grid) loss, indexed [y, x] (matplotlib's order)
    minima_xy: list[tuple[float, float]] = field(default_factory=list)  # minima in plane coordinates

    def __repr__(self) -> str:
        plane = f", plane={self.plane_loss.shape}" if self.plane_loss is not None else ""
        return (
            f"Landscape(end_losses=({self.end_losses[0]:.3f}, {self.end_losses[1]:.3f}), "
            f"midpoint_loss={self.midpoint_loss:.3f}, barrier={self.barrier:.3f}{plane})"
        )


def flat_params(model: nn.Module) -> torch.Tensor:
    """All of ``model``'s parameters as one 1-D vector (a copy; the point W in weight space)."""
    return parameters_to_vector(model.parameters()).detach().clone()


@torch.no_grad()
def losses_at(model: nn.Module, points: torch.Tensor, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Loss and accuracy on ``data`` of ``model``'s architecture at each row of ``points``.

    ``points`` is ``(P, D)`` with D the number of parameters. ``model`` is used as scratch
    space on a deep copy, so the caller's model keeps its weights.
    """
    if len(data) == 0:
        raise ValueError("data must hold at least one example, got an empty Dataset")
    scratch = copy.deepcopy(model).eval()
    size = sum(p.numel() for p in scratch.parameters())
    if points.ndim != 2 or points.shape[1] != size:
        raise ValueError(f"points must have shape (P, {size}), got {tuple(points.shape)}")
    losses, accs = [], []
    for w in points:
        vector_to_parameters(w, scratch.parameters())
        logits = scratch(data.X)
        losses.append(float(F.cross_entropy(logits, data.y)))
        accs.append(float((logits.argmax(1) == data.y).float().mean()))
    return np.asarray(losses), np.asarray(accs)


def interpolate(w_a: torch.Tensor, w_b: torch.Tensor, alphas: np.ndarray | list[float]) -> torch.Tensor:
    """Rows ``(1 - alpha) w_a + alpha w_b``: the straight line between two points."""
    if w_a.shape != w_b.shape or w_a.ndim != 1:
        raise ValueError(
            f"w_a and w_b must be 1-D of equal shape, got {tuple(w_a.shape)}, {tuple(w_b.shape)}"
        )
    a = torch.as_tensor(np.asarray(alphas, dtype=np.float64), dtype=w_a.dtype)[:, None]
    return (1 - a) * w_a + a * w_b


def barrier_height(alphas: np.ndarray, losses: np.ndarray) -> float:
    """``max_{alpha in [0,1]} L(alpha) - ((1 - alpha) L(0) + alpha L(1))`` (0 if convex).

    ``alphas`` must contain 0 and 1; the end losses are read there.
    """
    alphas, losses = np.asarray(alphas, dtype=float), np.asarray(losses, dtype=float)
    if alphas.shape != losses.shape or alphas.ndim != 1:
        raise ValueError(f"alphas and losses must be 1-D of equal length, got {alphas.shape}, {losses.shape}")
    at = {}
    for end in (0.0, 1.0):
        hits = np.flatnonzero(np.isclose(alphas, end))
        if len(hits) == 0:
            raise ValueError(f"alphas must contain {end}, got {alphas.min():.3g}..{alphas.max():.3g}")
        at[end] = losses[hits[0]]
    inside = (alphas >= 0) & (alphas <= 1)
    chord = (1 - alphas[inside]) * at[0.0] + alphas[inside] * at[1.0]
    return float(max(0.0, np.max(losses[inside] - chord)))


def train_minimum(data: Dataset, seed: int, config: LandscapeConfig) -> nn.Module:
    """One MLP trained from ``seed`` (initial weights and shuffle order) with plain SGD."""
    torch.manual_seed(seed)
    model = MLP(config.hidden)
    fit(
        model,
        data,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        optimizer="sgd",
        seed=seed,
        progress=False,
    )
    return model


def plane_basis(w_a: torch.Tensor, w_b: torch.Tensor, w_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthogonal directions ``(u, v)`` of the plane through three points, both of length |w_b - w_a|.

    ``u = w_b - w_a``; ``v`` is the part of ``w_c - w_a`` orthogonal to u (Gram-Schmidt),
    rescaled, so ``W(x, y) = w_a + x u + y v`` puts W_a at (0, 0) and W_b at (1, 0).
    """
    u = w_b - w_a
    norm = u.norm()
    if norm == 0:
        raise ValueError("w_a and w_b must differ to span a plane")
    d = w_c - w_a
    v = d - (d @ u) / (norm**2) * u
    if v.norm() == 0:
        raise ValueError("w_c must not lie on the line through w_a and w_b")
    return u, v / v.norm() * norm


def loss_landscape(
    data: Dataset,
    config: LandscapeConfig | None = None,
    *,
    eval_data: Dataset | None = None,
    models: list[nn.Module] | None = None,
) -> Landscape:
    """Train the minima (or take ``models``) and evaluate the loss along the line and the plane.

    ``eval_data`` (default: ``data``) is where the loss is measured: the training loss is
    the landscape the optimizer walked on.
    """
    config = LandscapeConfig() if config is None else config
    if not isinstance(config, LandscapeConfig):
        raise ValueError(f"config must be a LandscapeConfig or None, got {type(config).__name__}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: extra threads only wait for each other (10x slower here)
    try:
        return _landscape(data, config, eval_data, models)
    finally:
        torch.set_num_threads(threads)


def _landscape(
    data: Dataset, config: LandscapeConfig, eval_data: Dataset | None, models: list[nn.Module] | None
) -> Landscape:
    eval_data = data if eval_data is None else eval_data
    if models is None:
        if len(data) == 0:
            raise ValueError("data must hold at least one example, got an empty Dataset")
        models = [train_minimum(data, s, config) for s in config.seeds]
    elif len(models) not in (2, 3):
        raise ValueError(f"models must hold 2 or 3 networks, got {len(models)}")
    points = [flat_params(m) for m in models]
    alphas = np.linspace(config.alpha_min, config.alpha_max, config.line_points)
    alphas = np.union1d(alphas, [0.0, 0.5, 1.0])  # the minima and their average are always on it
    line_loss, line_acc = losses_at(models[0], interpolate(points[0], points[1], alphas), eval_data)
    at = {a: float(line_loss[np.isclose(alphas, a)][0]) for a in (0.0, 0.5, 1.0)}
    result = Landscape(
        alphas=alphas,
        line_loss=line_loss,
        line_accuracy=line_acc,
        barrier=barrier_height(alphas, line_loss),
        midpoint_loss=at[0.5],
        end_losses=(at[0.0], at[1.0]),
    )
    if config.grid_points and len(points) == 3:
        w_a, w_b, w_c = points
        u, v = plane_basis(w_a, w_b, w_c)
        norm2 = float(u @ u)
        c_xy = (float((w_c - w_a) @ u) / norm2, float((w_c - w_a) @ v) / norm2)
        xs_pts, ys_pts = [0.0, 1.0, c_xy[0]], [0.0, 0.0, c_xy[1]]
        pad_x = config.margin * (max(xs_pts) - min(xs_pts))
        pad_y = config.margin * max(abs(c_xy[1]), 1e-3)
        xs = np.linspace(min(xs_pts) - pad_x, max(xs_pts) + pad_x, config.grid_points)
        ys = np.linspace(min(ys_pts) - pad_y, max(ys_pts) + pad_y, config.grid_points)
        gx, gy = np.meshgrid(xs, ys)  # [y, x] order, as imshow/contour expect
        grid = w_a + torch.as_tensor(gx.reshape(-1, 1), dtype=w_a.dtype) * u
        grid = grid + torch.as_tensor(gy.reshape(-1, 1), dtype=w_a.dtype) * v
        plane_loss, _ = losses_at(models[0], grid, eval_data)
        result.plane_x, result.plane_y = xs, ys
        result.plane_loss = plane_loss.reshape(gy.shape)
        result.minima_xy = [(0.0, 0.0), (1.0, 0.0), c_xy]
    return result
