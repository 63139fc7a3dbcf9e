"""Compressed updates with a residual (Strom 2015): round trips, the residual's bookkeeping,
message sizes and bad input."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dlcourse import compression as C
from dlcourse.compression import Compressor, decode, encode, read_message

FAST = settings(max_examples=60, deadline=None)


def sorted_indices(max_numel: int = 5000):
    """Strategy: (numel, strictly increasing indices in [0, numel))."""

    @st.composite
    def build(draw):
        numel = draw(st.integers(1, max_numel))
        chosen = draw(st.sets(st.integers(0, numel - 1), max_size=min(numel, 300)))
        return numel, np.array(sorted(chosen), dtype=np.int64)

    return build()


@FAST
@given(sorted_indices(), st.sampled_from(["auto", "rice", "expgolomb", "gamma"]), st.data())
def test_decode_of_encode_is_exact(numel_idx, coder, data):
    """decode(encode(x)) restores exactly the sparse +-tau vector, for every coder."""
    numel, idx = numel_idx
    negative = np.array(data.draw(st.lists(st.booleans(), min_size=len(idx), max_size=len(idx))), dtype=bool)
    tau = data.draw(st.floats(1e-6, 1e3))
    message = encode(idx, numel, tau=tau, negative=negative, coder=coder)
    got = decode(message, numel)
    tau32 = torch.tensor(tau, dtype=torch.float32)
    want = torch.zeros(numel)
    want[torch.from_numpy(idx)] = torch.where(torch.from_numpy(negative), -tau32, tau32)
    assert torch.equal(got, want)
    assert np.array_equal(read_message(message).indices, idx)


@FAST
@given(sorted_indices(), st.data())
def test_sparse_variant_round_trips_full_values(numel_idx, data):
    """The "sparse" variant carries each sent element's full float value, bit for bit."""
    numel, idx = numel_idx
    values = data.draw(
        arrays(np.float32, len(idx), elements=st.floats(-1e6, 1e6, width=32, allow_subnormal=False))
    )
    message = encode(idx, numel, tau=0.5, values=torch.from_numpy(values))
    update = read_message(message)
    assert np.array_equal(update.indices, idx)
    assert np.array_equal(update.values.numpy(), values)


@FAST
@given(sorted_indices(), st.sampled_from(["rice", "expgolomb", "gamma"]))
def test_message_size_is_what_the_coder_says(numel_idx, coder):
    """len(message) equals the header plus the coder's own bit count, rounded up to bytes."""
    numel, idx = numel_idx
    gaps = C.gaps_of(idx)
    k = C.fit_k(gaps, coder)
    message = encode(idx, numel, tau=0.1, negative=np.zeros(len(idx), bool), coder=coder)
    assert len(message) == C.message_size(C.coded_bits(gaps, coder, k), len(idx), numel, torch.float32, False)
    # "auto" never loses to the coder it could have picked
    auto = encode(idx, numel, tau=0.1, negative=np.zeros(len(idx), bool))
    assert len(auto) <= len(message)


@FAST
@given(sorted_indices(), st.sampled_from(["rice", "expgolomb"]))
def test_fitted_k_is_the_cheapest(numel_idx, coder):
    """fit_k returns the k with the fewest bits among all k that could matter."""
    _, idx = numel_idx
    gaps = C.gaps_of(idx)
    best = C.coded_bits(gaps, coder, C.fit_k(gaps, coder))
    assert all(best <= C.coded_bits(gaps, coder, k) for k in range(0, 20))


@FAST
@given(st.lists(st.integers(0, 2**63 - 1), max_size=50), st.booleans())
def test_bit_length_is_exact(values, small):
    """The vectorized bit length equals Python's int.bit_length, also where float64 rounds."""
    values = [v % 2**53 for v in values] if small else values + [2**53 + 1, 2**62 - 1, 2**63 - 1]
    got = C._bit_length(np.array(values, dtype=np.int64))
    assert got.tolist() == [v.bit_length() for v in values]


def test_coders_agree_with_textbook_codewords():
    """Elias-gamma of 1..5 and Rice(k=2) of 1..6 have the textbook lengths."""
    gaps = np.array([1, 2, 3, 4, 5])
    # gamma: 1 -> "1", 2,3 -> 3 bits, 4..7 -> 5 bits
    assert C.coded_bits(gaps, "gamma", 0) == 1 + 3 + 3 + 5 + 5
    # rice k=2 on n = g-1: (n >> 2) ones + a zero + 2 bits
    assert C.coded_bits(np.array([1, 2, 3, 4, 5, 6]), "rice", 2) == 6 * 3 + 2


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from(["full", "sparse"]))
def test_sent_plus_residual_is_sum_of_updates_exact_in_float64(data, variant):
    """sum(sent) + final residual == sum(updates), exactly: nothing is lost, only delayed.

    Updates and tau are multiples of 2**-10 below 2**10, so every float64 sum here is
    exact and any difference would be a real bookkeeping error.
    """
    numel = data.draw(st.integers(0, 200))
    steps = data.draw(st.integers(1, 8))
    tau = data.draw(st.integers(1, 2**12)) / 2**10
    c = Compressor(numel, tau=tau, variant=variant, dtype=torch.float64)
    total, sent = torch.zeros(numel, dtype=torch.float64), torch.zeros(numel, dtype=torch.float64)
    for _ in range(steps):
        ints = data.draw(arrays(np.int64, numel, elements=st.integers(-(2**20), 2**20)))
        update = torch.from_numpy(ints).double() / 2**10
        total += update
        sent += decode(c.compress(update), numel)
    assert torch.equal(sent + c.residual, total)
    if variant == "sparse":  # full values leave nothing at or above tau behind
        assert bool((c.residual.abs() < tau).all())


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3000), st.integers(1, 10), st.floats(1e-3, 3.0), st.integers(0, 2**31 - 1))
def test_sent_plus_residual_is_sum_of_updates_in_float32(numel, steps, tau, seed):
    """In float32 the same bookkeeping holds to 1e-5 of the updates' size."""
    g = torch.Generator().manual_seed(seed)
    c = Compressor(numel, tau=tau)
    total, sent, scale = torch.zeros(numel, dtype=torch.float64), torch.zeros(numel, dtype=torch.float64), 0.0
    for _ in range(steps):
        update = torch.randn(numel, generator=g)
        total += update.double()
        scale += float(update.abs().max())
        sent += decode(c.compress(update), numel).double()
    assert float((sent + c.residual.double() - total).abs().max()) <= 1e-5 * scale


@FAST
@given(arrays(np.float32, st.integers(0, 500), elements=st.floats(-10, 10, width=32)))
def test_tau_above_max_gives_an_empty_message_of_a_few_bytes(values):
    """tau above max|r|: nothing is sent, the message is ~20 bytes, the residual keeps it all."""
    update = torch.from_numpy(values)
    tau = float(update.abs().max()) * 2 + 1 if len(values) else 1.0
    c = Compressor(len(values), tau=tau)
    message = c.compress(update)
    assert len(message) <= 24
    assert read_message(message).indices.size == 0
    assert torch.equal(decode(message, len(values)), torch.zeros(len(values)))
    assert torch.equal(c.residual, update)


def test_quantize_rule_matches_the_compressor():
    """The pure rule quantize(r, tau) is what one compress() step sends."""
    g = torch.Generator().manual_seed(0)
    update = torch.randn(1000, generator=g)
    c = Compressor(1000, tau=1.0)
    assert torch.equal(decode(c.compress(update), 1000), C.quantize(update, 1.0))
    assert torch.equal(C.quantize(torch.tensor([0.5, -1.0, 2.0, -0.99]), 1.0), torch.tensor([0.0, -1, 1, 0]))


def test_onebit_without_residual_loses_small_updates():
    """With no residual, updates that never reach tau are never sent (the lecture's point)."""
    update = torch.full((10,), 0.4)
    lossy, kept = Compressor(10, tau=1.0, variant="onebit"), Compressor(10, tau=1.0)
    lossy_sent = sum(decode(lossy.compress(update), 10) for _ in range(5))
    kept_sent = sum(decode(kept.compress(update), 10) for _ in range(5))
    assert torch.equal(lossy_sent, torch.zeros(10))
    assert torch.equal(kept_sent, torch.full((10,), 2.0))  # 2.0 of 5 * 0.4 sent, 0.0 left
    assert torch.allclose(kept.residual, torch.zeros(10), atol=1e-6)


def test_dense_variant_sends_the_raw_update():
    """Compression off: the message is the update itself, 4 bytes per float32 and a header."""
    update = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    c = Compressor(1000, variant="dense")
    message = c.compress(update)
    assert torch.equal(decode(message, (10, 100)), update.reshape(10, 100))
    assert 4000 < len(message) < 4020
    c.compress(update)
    assert c.elements_sent == 2 * 1000  # every element of both updates travelled


def test_indexes_beyond_2_to_31():
    """A synthetic sparse update of length 2**41 with indexes past 2**31 round-trips."""
    idx = np.array([0, 7, 2**31 - 1, 2**31, 2**31 + 5, 2**40, 2**41 - 1], dtype=np.int64)
    negative = np.array([1, 0, 1, 0, 1, 1, 0], dtype=bool)
    for coder in ("auto", "rice", "expgolomb", "gamma"):
        update = read_message(encode(idx, 2**41, tau=0.25, negative=negative, coder=coder))
        assert np.array_equal(update.indices, idx)
        assert update.numel == 2**41
        assert torch.equal(update.values, torch.tensor([-0.25, 0.25, -0.25, 0.25, -0.25, -0.25, 0.25]))


def test_empty_tensor_is_fine():
    """An empty update gives a valid empty message."""
    c = Compressor(0, tau=0.1)
    message = c.compress(torch.zeros(0))
    assert decode(message, 0).shape == (0,)
    assert decode(Compressor(0, variant="dense").compress(torch.zeros(0)), (0,)).shape == (0,)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_tau(tau):
    """tau must be a finite number > 0."""
    with pytest.raises(ValueError, match="tau"):
        Compressor(10, tau=tau)
    with pytest.raises(ValueError, match="tau"):
        C.quantize(torch.ones(3), tau)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_in_an_update(bad):
    """NaN or Inf in an update is refused before it poisons the residual."""
    c = Compressor(3, tau=0.1)
    with pytest.raises(ValueError, match="finite"):
        c.compress(torch.tensor([0.0, bad, 1.0]))
    assert torch.equal(c.residual, torch.zeros(3))


def _message() -> bytes:
    update = torch.randn(5000, generator=torch.Generator().manual_seed(2))
    return Compressor(5000, tau=1.5).compress(update)


@pytest.mark.parametrize("cut", [0, 1, 5, 12, 30, -1])
def test_truncated_message(cut):
    """A message cut short anywhere is refused with a clear error."""
    message = _message()
    with pytest.raises(ValueError, match="truncated"):
        decode(message[: cut if cut >= 0 else len(message) + cut], 5000)


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_corrupted_message(data):
    """Flipping any bit of a message is caught."""
    message = bytearray(_message())
    bit = data.draw(st.integers(0, 8 * len(message) - 1))
    message[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ValueError, match="corrupted|not a compressed"):
        decode(bytes(message), 5000)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_garbage_with_a_valid_checksum_is_refused_cleanly(data):
    """Bytes that pass the crc but are not a valid message raise ValueError, never anything else."""
    body = bytearray(_message()[:-4])
    if data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 4))):
            body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    else:
        body = bytearray(C.MAGIC + bytes([C.VERSION]) + data.draw(st.binary(max_size=60)))
    message = bytes(body) + zlib.crc32(bytes(body)).to_bytes(4, "little")
    try:
        update = read_message(message)
    except ValueError:
        return
    assert update.indices.size == len(update.values) <= update.numel  # parsed: self-consistent


def test_message_for_a_different_shape():
    """A message for 5,000 elements cannot be decoded into another shape."""
    with pytest.raises(ValueError, match="5,000 elements"):
        decode(_message(), (10, 10))
    with pytest.raises(ValueError, match="must have 10 elements"):
        Compressor(10, tau=1.0).compress(torch.zeros(11))


def test_bad_arguments_name_what_is_allowed():
    """Bad variants, coders, indices and messages name what is allowed."""
    with pytest.raises(ValueError, match="variant must be one of"):
        Compressor(10, tau=1.0, variant="2bit")
    with pytest.raises(ValueError, match="coder must be one of"):
        Compressor(10, tau=1.0, coder="huffman")
    with pytest.raises(ValueError, match="strictly increasing"):
        encode(np.array([3, 3]), 10, tau=1.0, negative=np.zeros(2, bool))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, numel=10\)"):
        encode(np.array([10]), 10, tau=1.0, negative=np.zeros(1, bool))
    with pytest.raises(ValueError, match="exactly one of"):
        encode(np.array([1]), 10, tau=1.0)
    with pytest.raises(ValueError, match="message must be bytes"):
        decode("hello", 10)
    with pytest.raises(ValueError, match="not a compressed update"):
        body = b"XX" + bytes(30)
        decode(body + zlib.crc32(body).to_bytes(4, "little"), 10)


def test_reprs_say_what_matters():
    """Compressor and SparseUpdate reprs show the variant, tau and sizes."""
    c = Compressor(5000, tau=1.5)
    message = c.compress(torch.randn(5000, generator=torch.Generator().manual_seed(2)))
    assert "variant='full'" in repr(c) and "tau=1.5" in repr(c)
    assert f"nbytes={len(message):,}" in repr(read_message(message))


# --------------------------------------------------------------------------------------
# The residual step, and a student's quantizer inside Compressor


@settings(max_examples=50, deadline=None)
@given(
    steps=st.integers(1, 12),
    n=st.integers(1, 200),
    tau=st.floats(1e-3, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_residual_step_conserves_every_update(steps, n, tau, seed):
    """sum(sent) + r == sum(updates) after any number of steps: delayed, never lost."""
    g = torch.Generator().manual_seed(seed)
    r = torch.zeros(n, dtype=torch.float64)
    total_sent = torch.zeros(n, dtype=torch.float64)
    total_update = torch.zeros(n, dtype=torch.float64)
    for _ in range(steps):
        update = torch.randn(n, generator=g, dtype=torch.float64) * tau
        before = r + update
        sent = C.residual_step(r, update, tau)
        assert set(sent.abs().unique().tolist()) <= {0.0, tau}
        assert torch.equal(sent != 0, before.abs() >= tau)  # sent exactly where |r| reached tau
        total_sent += sent
        total_update += update
    torch.testing.assert_close(total_sent + r, total_update, rtol=0, atol=1e-12)


def test_compressor_calls_the_given_quantizer_and_checks_what_it_sends():
    """quantizer= is what Compressor runs; one that sends other values than +-tau is refused."""
    calls = []

    def mine(r, tau):
        calls.append(r.clone())
        return C.quantize(r, tau)

    update = torch.tensor([0.3, -0.05, -0.2, 0.01])
    ours, theirs = Compressor(4, tau=0.1), Compressor(4, tau=0.1, quantizer=mine)
    assert theirs.compress(update) == ours.compress(update)
    assert len(calls) == 1 and torch.equal(theirs.residual, ours.residual)

    halves = Compressor(4, tau=0.1, quantizer=lambda r, tau: r / 2)
    with pytest.raises(ValueError, match=r"\+-tau"):
        halves.compress(update)
    with pytest.raises(ValueError, match="quantizer must be a function"):
        Compressor(4, tau=0.1, quantizer="sign")


def _student_residual_step(residual, update, tau):
    """The residual step as assignment A3 asks for it: returns (sent, new residual), new tensors."""
    r = residual + update
    sent = C.quantize(r, tau)
    return sent, r - sent


@settings(max_examples=30, deadline=None)
@given(
    steps=st.integers(1, 8), n=st.integers(1, 300), tau=st.floats(1e-3, 1.0), seed=st.integers(0, 2**31 - 1)
)
def test_a_plugged_residual_step_equal_to_the_library_s_sends_the_same_messages(steps, n, tau, seed):
    g = torch.Generator().manual_seed(seed)
    ours, theirs = Compressor(n, tau=tau), Compressor(n, tau=tau, residual_fn=_student_residual_step)
    for _ in range(steps):
        update = torch.randn(n, generator=g) * tau
        assert theirs.compress(update) == ours.compress(update)
        assert torch.equal(theirs.residual, ours.residual) and torch.equal(theirs.last_sent, ours.last_sent)


def test_a_plugged_residual_step_is_what_runs_and_its_answer_is_checked():
    update = torch.tensor([0.3, -0.05, -0.2, 0.01])
    # a residual step that drops the residual: the unsent part is lost, and the compressor keeps that
    dropped = Compressor(
        4, tau=0.1, residual_fn=lambda r, u, tau: (C.quantize(r + u, tau), torch.zeros_like(r))
    )
    dropped.compress(update)
    assert torch.equal(dropped.residual, torch.zeros(4))
    assert torch.equal(Compressor(4, tau=0.1).residual, torch.zeros(4))  # (and the library's would keep it)
    for bad, match in [
        (lambda r, u, tau: C.quantize(r + u, tau), r"residual_fn must return \(sent, new_residual\)"),
        (lambda r, u, tau: (torch.zeros(3), torch.zeros(3)), r"two tensors of shape \(4,\)"),
    ]:
        with pytest.raises(ValueError, match=match):
            Compressor(4, tau=0.1, residual_fn=bad).compress(update)
    with pytest.raises(ValueError, match=r"residual_fn needs a residual.*'onebit'"):
        Compressor(4, tau=0.1, variant="onebit", residual_fn=_student_residual_step)
    with pytest.raises(ValueError, match=r"residual_fn needs a residual.*'dense'"):
        C.CompressionSettings(
            residual_fn=_student_residual_step
        ).check_compression()  # no tau: no compression
    with pytest.raises(
        ValueError, match=r"residual_fn must be a function residual_step\(residual, update, tau\)"
    ):
        Compressor(4, tau=0.1, residual_fn=0.5)
