"""The lecture's networks and the metrics (scikit-learn as the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score

from dlcourse import metrics
from dlcourse.models import MLP, MnistCNN, SharedLSTM, count_parameters, make_model


def test_mnist_cnn_matches_the_lecture():
    model = MnistCNN()
    assert count_parameters(model) == 1_111_946
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Flatten", "Linear", "ReLU", "Linear"]
    assert model[0].out_channels == 32 and model[0].kernel_size == (5, 5)
    assert model[2].out_channels == 64 and model[5].out_features == 1024
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_mlp_and_make_model():
    assert make_model("mlp")(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    a, b = make_model("cnn", seed=3), make_model("cnn", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="model must be one of"):
        make_model("resnet")
    with pytest.raises(ValueError, match="hidden"):
        MLP(hidden=0)


def test_shared_lstm_is_one_lstm_for_both_branches():
    model = SharedLSTM()
    a, b = torch.randn(2, 140, 256), torch.randn(2, 140, 256)
    out = model(a, b)
    assert out.shape == (2, 1)
    # sharing: swapping the sequences swaps the halves of the concatenated code
    code = torch.cat([model.encode(b), model.encode(a)], dim=1)
    assert torch.allclose(model.head(code), model(b, a))
    assert count_parameters(model) == 4 * (256 * 64 + 64 * 64 + 2 * 64) + 128 + 1


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), min_size=1, max_size=200))
def test_metrics_match_sklearn(pairs):
    y = torch.tensor([p[0] for p in pairs])
    y_hat = torch.tensor([p[1] for p in pairs])
    labels = list(range(10))
    assert metrics.accuracy(y_hat, y) == pytest.approx(float((y == y_hat).float().mean()))
    assert np.array_equal(metrics.confusion_matrix(y_hat, y).numpy(), sk_confusion(y, y_hat, labels=labels))
    expected = f1_score(y, y_hat, labels=labels, average="macro", zero_division=0)
    assert metrics.macro_f1(y_hat, y) == pytest.approx(expected, abs=1e-12)


def test_metrics_take_logits():
    logits = torch.tensor([[0.1, 2.0], [3.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([1, 0, 0])
    assert metrics.accuracy(logits, y) == pytest.approx(2 / 3)
    assert metrics.confusion_matrix(logits, y, num_classes=2).tolist() == [[1, 1], [0, 1]]


def test_metrics_bad_input():
    with pytest.raises(ValueError, match="one prediction per label"):
        metrics.accuracy(torch.tensor([1, 2]), torch.tensor([1]))
    with pytest.raises(ValueError, match="labels must lie"):
        metrics.confusion_matrix(torch.tensor([0]), torch.tensor([12]), num_classes=10)


@pytest.mark.parametrize("bad", [-1, 3])
def test_out_of_range_predictions_are_refused(bad):
    # a negative prediction used to be counted in another class's cell (a wrong F1, silently)
    y = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"predicted labels must lie in \[0, 3\)"):
        metrics.macro_f1(torch.tensor([0, 1, bad]), y, num_classes=3)
    # logits wider than num_classes can predict a class that does not exist
    logits = torch.zeros(3, 4)
    logits[:, 3] = 1.0
    with pytest.raises(ValueError, match="predicted labels must lie"):
        metrics.confusion_matrix(logits, y, num_classes=3)
