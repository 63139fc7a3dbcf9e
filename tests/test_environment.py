"""The machine report, and what "equal" means across devices (TF32 off: full_float32)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse.environment import describe, full_float32, report, round_to_tf32
from dlcourse.models import make_model

finite_floats = st.floats(
    min_value=-(2.0**100),
    max_value=2.0**100,
    allow_nan=False,
    allow_infinity=False,
    allow_subnormal=False,
    width=32,
)


def test_describe_names_the_backends():
    facts = describe()
    assert "gloo" in facts["backends"] and facts["cpu_cores"] >= 1
    assert "torch" in report()


def test_full_float32_turns_tf32_off_and_restores_the_settings():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with full_float32():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        with pytest.raises(RuntimeError), full_float32():
            raise RuntimeError("a failed comparison still restores the settings")
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@settings(max_examples=300, deadline=None)
@given(st.lists(finite_floats, min_size=1, max_size=50))
def test_tf32_rounding_keeps_ten_mantissa_bits(values):
    x = torch.tensor(values, dtype=torch.float32)
    r = round_to_tf32(x)
    # nearest of the TF32 numbers: at most half a unit in the 10th bit, 2**-11 relative
    assert torch.all((r - x).abs() <= x.abs() * 2.0**-11)
    assert torch.equal(round_to_tf32(r), r)  # TF32 numbers are their own rounding
    assert torch.all((r.view(torch.int32) & ((1 << 13) - 1)) == 0)  # the 13 low bits are gone


def test_tf32_rounding_ties_to_even_and_rejects_other_dtypes():
    x = torch.tensor([1 + 2.0**-11, 1 + 3 * 2.0**-11, float("inf"), float("-inf")])
    assert round_to_tf32(x).tolist() == [1.0, 1 + 2 * 2.0**-10, float("inf"), float("-inf")]
    assert torch.isnan(round_to_tf32(torch.tensor([float("nan")]))).all()
    with pytest.raises(ValueError, match="x must be a float32 tensor, got torch.float64"):
        round_to_tf32(torch.zeros(2, dtype=torch.float64))


def test_tf32_moves_the_cnn_beyond_the_float32_tolerance():
    """Why the GPU tests turn TF32 off: emulated on the CPU, it breaks a 1e-5 comparison."""
    torch.manual_seed(0)
    model = make_model("cnn", seed=0)
    X = torch.rand(8, 1, 28, 28)
    tf32 = copy.deepcopy(model)
    with torch.no_grad():
        for p in tf32.parameters():
            p.copy_(round_to_tf32(p))
    exact, rounded = model(X), tf32(round_to_tf32(X))
    relative = ((rounded - exact).norm() / exact.norm()).item()
    assert relative > 1e-5, relative  # what the GPU tests would have to tolerate with TF32 on
    assert relative < 1e-2, relative  # and still the same model, to TF32's precision
