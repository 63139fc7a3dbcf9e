"""Classification metrics: accuracy, confusion matrix, macro F1.

The lecture's Keras ``f1_score`` computes ``sum(y_true * y_pred) / sum(y_true)`` and calls
it *precision*, and ``... / sum(y_pred)`` and calls it *recall*: the two are swapped
(precision is TP / predicted positives, recall is TP / actual positives). F1 is symmetric
in them, so the value survives the swap, but it is computed on softmax scores, batch by
batch, and averaged over batches, which is not the F1 of the whole test set. Here macro
F1 is computed from the confusion matrix of the whole set: per class
``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``, averaged over classes (a class that never
occurs and is never predicted scores 0, as in scikit-learn's ``zero_division=0``).
"""

from __future__ import annotations

from typing import Any

import torch

from dlcourse._validate import check_float, check_int
from dlcourse.staleness import staleness_summary


def _labels(y_hat: torch.Tensor) -> torch.Tensor:
    """Predicted labels from labels ``(n,)`` or scores/logits ``(n, classes)``."""
    return y_hat.argmax(dim=1) if y_hat.ndim == 2 else y_hat


def _check_pair(y: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    pred = _labels(y_hat)
    if pred.shape != y.shape:
        raise ValueError(
            f"y_hat must give one prediction per label: y has {tuple(y.shape)}, y_hat {tuple(y_hat.shape)}"
        )
    return pred


def _check_range(name: str, labels: torch.Tensor, num_classes: int) -> None:
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), got range [{int(labels.min())}, {int(labels.max())}]"
        )


def accuracy(y_hat: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of correct predictions (``y_hat``: labels or logits)."""
    pred = _check_pair(y, y_hat)
    return float((pred == y).float().mean()) if len(y) else 0.0


def confusion_matrix(y_hat: torch.Tensor, y: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """``C[i, j]`` = number of examples of true class ``i`` predicted as ``j``."""
    check_int("num_classes", num_classes, low=1)
    pred = _check_pair(y, y_hat)
    # both must be checked: an out-of-range prediction would land in another cell of the
    # flattened matrix (a wrong count, not an error) or overflow it
    _check_range("labels", y, num_classes)
    _check_range("predicted labels", pred, num_classes)
    flat = y.long() * num_classes + pred.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def macro_f1(y_hat: torch.Tensor, y: torch.Tensor, num_classes: int = 10) -> float:
    """Macro-averaged F1 over ``num_classes`` classes, from the whole set's confusion matrix."""
    cm = confusion_matrix(y_hat, y, num_classes).double()
    tp = cm.diag()
    denom = 2 * tp + (cm.sum(0) - tp) + (cm.sum(1) - tp)  # 2TP + FP + FN
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    return float(f1.mean())


def run_metrics(
    strategy: str,
    test: dict[str, float],
    *,
    examples_per_s: float,
    wall_s: float,
    updates: int,
    bytes_sent: int,
    staleness: dict[str, Any] | None = None,
    **details: Any,
) -> dict[str, Any]:
    """The metrics dict of DESIGN.md that every ``dlcourse train`` strategy returns.

    ``test`` is :func:`dlcourse.train.evaluate`'s dict; ``staleness`` defaults to that of a
    synchronous run (every update is computed from the parameters it is applied to:
    staleness 0). ``details`` (model, workers, data_source, ...) are added as they are.
    """
    if not isinstance(test, dict) or not {"loss", "accuracy", "macro_f1"} <= set(test):
        raise ValueError(f"test must be evaluate()'s dict with loss, accuracy, macro_f1; got {test!r}")
    check_float("examples_per_s", examples_per_s, low=0.0)
    check_float("wall_s", wall_s, low=0.0)
    check_int("updates", updates, low=0)
    check_int("bytes_sent", bytes_sent, low=0)
    return {
        "strategy": strategy,
        **details,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "test_macro_f1": test["macro_f1"],
        "examples_per_s": examples_per_s,
        "wall_s": wall_s,
        "updates": updates,
        "bytes_sent": bytes_sent,
        "staleness": staleness_summary([0] * updates) if staleness is None else staleness,
    }
