"""Compressed, quantized updates with a residual (Strom 2015).

Nikko Strom, "Scalable distributed DNN training using commodity GPU cloud computing",
Interspeech 2015. Each worker keeps a **residual** vector ``r`` of what it has not sent yet::

    r += update                       # the step this worker just computed
    sent = sign(r) * tau  where |r| >= tau, else 0
    r -= sent                         # "delayed but not lost"

Only the few elements at or above the threshold ``tau`` travel, each as one sign bit; the
receiver knows ``tau`` from the header. Their positions are sent as the **gaps** between
consecutive indexes, entropy-coded, because sent positions are sparse and cluster (many
gaps are 1). A message is real bytes::

    header | unary stream | mantissa stream | sign bits | (values) | crc32

- header: magic ``b"SQ"``, version, variant, coder, coder parameter ``k``, dtype, ``tau``
  (in the update's dtype, so ``+-tau`` decodes bit-exactly), then the count of sent
  elements and the length of the update as varints.
- gaps ``g >= 1`` are coded as ``n = g - 1`` by one of two families, each with its
  parameter ``k`` fitted to the message (the smallest total size wins):
  **Golomb-Rice(k)**: ``n >> k`` in unary, then the low ``k`` bits;
  **Exp-Golomb(k)**: ``w = n + 2**k`` has ``k + 1 + L`` bits; ``L`` in unary, then the
  ``k + L`` bits of ``w`` below its leading 1 (``k = 0`` is Elias-gamma).
  The unary parts of all gaps come first and then all fixed parts, so both encoder and
  decoder are a handful of vectorized numpy operations, no per-element Python loop.
- crc32 of everything before it, so a truncated or corrupted message is caught.

Variants for the lesson: ``"full"`` (the scheme above), ``"onebit"`` (+-tau with no
residual: what falls below tau is lost), ``"sparse"`` (residual, but the sent elements
carry their full float value) and ``"dense"`` (no compression: the raw update).
``benchmarks/compression.py`` compares the coders with the entropy of the gaps.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from dlcourse._validate import check_choice, check_float, check_int

VARIANTS = ("full", "onebit", "sparse", "dense")
COMPRESSIONS = VARIANTS[:3]  # what a run may choose with a tau; "dense" is the run without one
CODERS = ("auto", "rice", "expgolomb", "gamma")
MAGIC = b"SQ"
VERSION = 1
# varint-coded lengths stay well inside int64 and inside what a bit shift can address
MAX_NUMEL = 2**62

_VARIANT_CODE = {name: i for i, name in enumerate(VARIANTS)}
_CODER_CODE = {"rice": 0, "expgolomb": 1, "gamma": 2}
_CODER_NAME = {code: name for name, code in _CODER_CODE.items()}
_DTYPES = [torch.float32, torch.float64, torch.float16]
_NUMPY_DTYPE = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}
_HEAD = struct.Struct("<2sBBBBB")  # magic, version, variant, coder, k, dtype
_CRC = struct.Struct("<I")


# --------------------------------------------------------------------------------------
# The rule, as a pure function on tensors (what students implement in assignment A3)


def quantize(r: torch.Tensor, tau: float) -> torch.Tensor:
    """``sign(r) * tau`` where ``|r| >= tau``, else 0: what one step of the scheme sends."""
    tau = check_float("tau", tau, low=0.0, low_open=True)
    _check_finite("r", r)
    tau_t = torch.tensor(tau, dtype=r.dtype)
    return torch.where(r.abs() >= tau_t, torch.sign(r) * tau_t, torch.zeros((), dtype=r.dtype))


def sparsify(r: torch.Tensor, tau: float) -> torch.Tensor:
    """``r`` where ``|r| >= tau``, else 0: the "sparse" variant sends full values, not +-tau."""
    tau = check_float("tau", tau, low=0.0, low_open=True)
    _check_finite("r", r)
    return torch.where(r.abs() >= torch.tensor(tau, dtype=r.dtype), r, torch.zeros((), dtype=r.dtype))


Quantizer = Callable[[torch.Tensor, float], torch.Tensor]  # quantize(r, tau) -> what is sent


# residual_fn(residual, update, tau) -> (sent, new_residual): the residual step as a student writes it
ResidualFn = Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]


def check_quantizer(quantizer: object) -> Quantizer | None:
    """``quantizer`` if it is None or a function ``quantize(r, tau) -> tensor``, else ValueError."""
    if quantizer is not None and not callable(quantizer):
        raise ValueError(f"quantizer must be a function quantize(r, tau) -> tensor, got {quantizer!r}")
    return quantizer


def check_residual_fn(residual_fn: object, variant: str) -> ResidualFn | None:
    """``residual_fn`` if None, or a function used by a variant that keeps a residual, else ValueError."""
    if residual_fn is None:
        return None
    if not callable(residual_fn):
        raise ValueError(
            f"residual_fn must be a function residual_step(residual, update, tau) -> (sent, new_residual), "
            f"got {residual_fn!r}"
        )
    if variant not in ("full", "sparse"):
        raise ValueError(
            f"residual_fn needs a residual: variant 'full' or 'sparse' with a tau, got variant {variant!r}"
        )
    return residual_fn


def residual_step(residual: torch.Tensor, update: torch.Tensor, tau: float, quantizer: Quantizer = quantize):
    """One step of the residual scheme, in place on ``residual``; returns what is sent.

    ``r += update; sent = quantizer(r, tau); r -= sent``: nothing of ``update`` is lost,
    what is not sent now stays in ``r`` for a later step ("delayed, not lost"), so after
    any number of steps ``sum(sent) + r == sum(update)``. ``quantizer`` is
    :func:`quantize` by default; :class:`Compressor` calls this with a student's own.
    """
    if not isinstance(residual, torch.Tensor) or not isinstance(update, torch.Tensor):
        raise ValueError(
            f"residual and update must be tensors, got {type(residual).__name__}, {type(update).__name__}"
        )
    if residual.shape != update.shape:
        raise ValueError(
            f"update must have the residual's shape {tuple(residual.shape)}, got {tuple(update.shape)}"
        )
    residual += update
    sent = quantizer(residual, tau)
    if not isinstance(sent, torch.Tensor) or sent.shape != residual.shape:
        raise ValueError(f"quantizer must return a tensor of shape {tuple(residual.shape)}, got {sent!r:.80}")
    residual -= sent
    return sent


# --------------------------------------------------------------------------------------
# Bit-level helpers (numpy, vectorized)


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Number of bits of each non-negative int64 (0 for 0), exact up to 2**63."""
    x = np.asarray(x, dtype=np.int64)
    _, e = np.frexp(x.astype(np.float64))
    e = e.astype(np.int64)
    if x.size == 0 or x.max() < 2**53:
        return e  # float64 holds these exactly, and frexp(0) gives 0
    # float64 rounds values near a power of two up: correct those by one
    e = np.minimum(e, 63)
    shifted = np.left_shift(np.int64(1), np.maximum(e - 1, 0))
    e -= ((x > 0) & (shifted > x)).astype(np.int64)
    return np.where(x > 0, e, 0)


def _unary_bits(q: np.ndarray) -> np.ndarray:
    """``q[i]`` ones followed by a zero, for every i, as one uint8 bit array."""
    total = int(q.sum()) + len(q)
    bits = np.ones(total, dtype=np.uint8)
    bits[np.cumsum(q + 1) - 1] = 0
    return bits


def _bit_layout(widths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For fields of ``widths`` bits laid end to end: each bit's field, its shift, each field's start."""
    owner = np.repeat(np.arange(len(widths)), widths)
    starts = np.cumsum(widths) - widths
    shift = widths[owner] - 1 - (np.arange(int(widths.sum())) - starts[owner])
    return owner, shift, starts


def _fixed_bits(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The low ``widths[i]`` bits of ``values[i]``, most significant first, concatenated."""
    if int(widths.sum()) == 0:
        return np.zeros(0, dtype=np.uint8)
    owner, shift, _ = _bit_layout(widths)
    return ((values[owner] >> shift) & 1).astype(np.uint8)


def _read_fixed(bits: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_fixed_bits`: ``bits`` holds exactly ``widths.sum()`` bits."""
    values = np.zeros(len(widths), dtype=np.int64)
    if int(widths.sum()) == 0:
        return values
    _, shift, starts = _bit_layout(widths)
    contrib = bits.astype(np.int64) << shift
    nonempty = widths > 0
    # every segment is non-empty, so reduceat sums exactly each element's bits
    values[nonempty] = np.add.reduceat(contrib, starts[nonempty])
    return values


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("message is truncated or corrupted: bad length field in the header")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


# --------------------------------------------------------------------------------------
# The gap coders


def gaps_of(indices: np.ndarray) -> np.ndarray:
    """Gaps ``g >= 1`` between sorted distinct indexes (the first gap counts from -1)."""
    indices = np.asarray(indices, dtype=np.int64)
    return np.diff(indices, prepend=np.int64(-1))


def coded_bits(gaps: np.ndarray, coder: str, k: int) -> int:
    """Bits that ``coder`` with parameter ``k`` spends on ``gaps`` (signs not included)."""
    check_choice("coder", coder, _CODER_CODE)
    check_int("k", k, low=0, high=62)
    n = np.asarray(gaps, dtype=np.int64) - 1
    if coder == "rice":
        return int((n >> k).sum()) + len(n) * (1 + k)
    if coder == "gamma" and k != 0:
        raise ValueError(f"k must be 0 for the gamma coder, got {k}")
    return int((2 * _bit_length(n + (1 << k)) - 1 - k).sum())


def fit_k(gaps: np.ndarray, coder: str) -> int:
    """The parameter ``k`` that makes ``coder`` spend the fewest bits on ``gaps``."""
    check_choice("coder", coder, _CODER_CODE)
    n = np.asarray(gaps, dtype=np.int64) - 1
    if coder == "gamma" or len(n) == 0:
        return 0
    ks = np.arange(int(_bit_length(n.max())) + 1)
    if coder == "rice":
        cost = (n[None, :] >> ks[:, None]).sum(axis=1) + len(n) * (1 + ks)
    else:
        cost = (2 * _bit_length(n[None, :] + (1 << ks[:, None])) - 1 - ks[:, None]).sum(axis=1)
    return int(np.argmin(cost))


def best_coder(gaps: np.ndarray) -> tuple[str, int]:
    """``(coder, k)`` with the fewest bits for ``gaps`` (ties go to Rice: simpler)."""
    options = [(c, fit_k(gaps, c)) for c in ("rice", "expgolomb")]
    return min(options, key=lambda ck: coded_bits(gaps, *ck))


def gap_entropy_bits(gaps: np.ndarray) -> float:
    """Empirical entropy of the gap values, in bits per gap: the bound to compare coders with."""
    gaps = np.asarray(gaps, dtype=np.int64)
    if len(gaps) == 0:
        return 0.0
    _, counts = np.unique(gaps, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _encode_gaps(gaps: np.ndarray, coder: str, k: int) -> np.ndarray:
    n = gaps - 1
    if coder == "rice":
        widths = np.full(len(n), k, dtype=np.int64)
        return np.concatenate([_unary_bits(n >> k), _fixed_bits(n, widths)])
    w = n + (1 << k)
    lengths = _bit_length(w) - 1 - k  # L: unary part
    return np.concatenate([_unary_bits(lengths), _fixed_bits(w, lengths + k)])


def _decode_gaps(bits: np.ndarray, count: int, coder: str, k: int) -> tuple[np.ndarray, int]:
    """Gaps and the number of bits they used, from the start of ``bits``."""
    if count == 0:
        return np.zeros(0, dtype=np.int64), 0
    # the unary stream of `count` values ends at its count-th zero
    ends = np.flatnonzero(bits == 0)[:count]
    if len(ends) < count:
        raise ValueError("message is truncated or corrupted: fewer index codes than its count")
    q = np.diff(ends, prepend=-1) - 1
    pos = int(ends[-1]) + 1
    widths = np.full(count, k, dtype=np.int64) if coder == "rice" else q + k
    if widths.max() > 62:
        raise ValueError("message is corrupted: an index code is longer than any valid index")
    fixed_len = int(widths.sum())
    if pos + fixed_len > len(bits):
        raise ValueError("message is truncated or corrupted: index codes run past its end")
    low = _read_fixed(bits[pos : pos + fixed_len], widths)
    if coder == "rice":
        if q.max() > 62 - k:
            raise ValueError("message is corrupted: an index code is longer than any valid index")
        n = (q << k) | low
    else:
        n = ((np.int64(1) << widths) | low) - (1 << k)
    return n + 1, pos + fixed_len


# --------------------------------------------------------------------------------------
# Messages


@dataclass(repr=False)
class SparseUpdate:
    """A decoded message before it is scattered into a dense tensor."""

    indices: np.ndarray  # int64 positions of the sent elements, increasing
    values: torch.Tensor  # their values (+-tau, or the full values of "sparse")
    numel: int  # length of the flattened update the message is for
    tau: float  # threshold (0 for "dense")
    variant: str  # one of VARIANTS
    coder: str  # gap coder used ("rice", "expgolomb", "gamma"; "none" for "dense")
    k: int  # the coder's parameter
    nbytes: int  # size of the message in bytes

    @torch.no_grad()
    def add_to(self, flat: torch.Tensor) -> None:
        """Add this update to a flat parameter vector in place (what a receiving peer does)."""
        if self.variant == "dense":
            flat.add_(self.values)
        else:
            flat.index_add_(0, torch.from_numpy(self.indices), self.values)

    def to_dense(self) -> torch.Tensor:
        out = torch.zeros(self.numel, dtype=self.values.dtype)
        out[torch.from_numpy(self.indices)] = self.values
        return out

    def __repr__(self) -> str:
        return (
            f"SparseUpdate(variant={self.variant!r}, sent={len(self.indices):,} of {self.numel:,}, "
            f"tau={self.tau:g}, coder={self.coder}(k={self.k}), nbytes={self.nbytes:,})"
        )


def _check_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype}")
    return dtype


def _check_finite(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must be finite: it holds {bad} NaN or Inf value(s)")


def encode(
    indices: np.ndarray | torch.Tensor,
    numel: int,
    *,
    tau: float,
    negative: np.ndarray | torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    coder: str = "auto",
    variant: str | None = None,
) -> bytes:
    """The message for a sparse update of length ``numel``.

    ``indices`` are the sent positions (strictly increasing). Give ``negative`` (bools:
    which of them are ``-tau``) for the 1-bit variants, or ``values`` (their full values)
    for the ``"sparse"`` variant. ``coder="auto"`` picks the smallest coder. ``variant``
    only labels the message (default ``"full"``, or ``"sparse"`` with ``values``).
    """
    check_int("numel", numel, low=0, high=MAX_NUMEL)
    tau = check_float("tau", tau, low=0.0, low_open=True)
    _check_dtype(dtype)
    check_choice("coder", coder, CODERS)
    idx = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices, dtype=np.int64)
    if idx.ndim != 1:
        raise ValueError(f"indices must be 1-D, got shape {idx.shape}")
    if len(idx) and (idx[0] < 0 or idx[-1] >= numel):
        raise ValueError(f"indices must lie in [0, numel={numel}), got {idx[0]}..{idx[-1]}")
    gaps = gaps_of(idx)
    if (gaps < 1).any():
        raise ValueError("indices must be strictly increasing")
    if (negative is None) == (values is None):
        raise ValueError("give exactly one of negative (1-bit variants) or values ('sparse')")
    payload = values is not None
    if payload:
        _check_finite("values", values)
        if values.shape != (len(idx),):
            raise ValueError(f"values must have shape ({len(idx)},), got {tuple(values.shape)}")
        sign_bits = np.zeros(0, dtype=np.uint8)
    else:
        sign_bits = np.asarray(negative, dtype=np.uint8).reshape(-1)
        if len(sign_bits) != len(idx):
            raise ValueError(f"negative must have {len(idx)} entries, got {len(sign_bits)}")
    if coder == "auto":
        coder, k = best_coder(gaps)
    else:
        k = fit_k(gaps, coder)
    bits = np.concatenate([_encode_gaps(gaps, coder, k), sign_bits])
    variant = "sparse" if payload else check_choice("variant", variant or "full", ("full", "onebit"))
    head = _HEAD.pack(MAGIC, VERSION, _VARIANT_CODE[variant], _CODER_CODE[coder], k, _DTYPES.index(dtype))
    parts = [
        head,
        np.array([tau], dtype=_NUMPY_DTYPE[dtype]).tobytes(),  # rounds as torch does: to nearest
        _varint(len(idx)),
        _varint(numel),
        np.packbits(bits).tobytes(),
    ]
    if payload:
        parts.append(values.to(dtype).numpy().astype(_NUMPY_DTYPE[dtype]).tobytes())
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def encode_dense(update: torch.Tensor) -> bytes:
    """The uncompressed message: header and the raw values (compression off)."""
    _check_finite("update", update)
    dtype = _check_dtype(update.dtype)
    flat = update.detach().reshape(-1).cpu()
    head = _HEAD.pack(MAGIC, VERSION, _VARIANT_CODE["dense"], 0, 0, _DTYPES.index(dtype))
    body = head + _varint(flat.numel()) + flat.numpy().tobytes()
    return body + _CRC.pack(zlib.crc32(body))


def message_size(gaps_bits: int, count: int, numel: int, dtype: torch.dtype, payload: bool) -> int:
    """Bytes of a message whose gap codes take ``gaps_bits`` bits: the coder's own accounting."""
    itemsize = torch.tensor([], dtype=_check_dtype(dtype)).element_size()
    sign_bits = 0 if payload else count
    return (
        _HEAD.size
        + itemsize
        + len(_varint(count))
        + len(_varint(numel))
        + (gaps_bits + sign_bits + 7) // 8
        + (count * itemsize if payload else 0)
        + _CRC.size
    )


def read_message(message: bytes) -> SparseUpdate:
    """Parse and check a message; raises ``ValueError`` if it is truncated or corrupted."""
    if not isinstance(message, (bytes, bytearray, memoryview)):
        raise ValueError(f"message must be bytes, got {type(message).__name__}")
    message = bytes(message)
    if len(message) < _HEAD.size + _CRC.size:
        raise ValueError(f"message is truncated: {len(message)} bytes is shorter than any header")
    body, (crc,) = message[: -_CRC.size], _CRC.unpack(message[-_CRC.size :])
    if zlib.crc32(body) != crc:
        raise ValueError("message is truncated or corrupted: its crc32 checksum does not match")
    magic, version, variant_code, coder_code, k, dtype_code = _HEAD.unpack_from(body)
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"not a compressed update (magic {magic!r}, version {version})")
    if variant_code >= len(VARIANTS) or dtype_code >= len(_DTYPES):
        raise ValueError("message is corrupted: unknown variant or dtype in its header")
    variant, dtype = VARIANTS[variant_code], _DTYPES[dtype_code]
    np_dtype = np.dtype(_NUMPY_DTYPE[dtype])
    pos = _HEAD.size
    if variant == "dense":
        numel, pos = _read_varint(body, pos)
        if len(body) - pos != numel * np_dtype.itemsize:
            raise ValueError("message is truncated or corrupted: dense payload has the wrong length")
        values = torch.from_numpy(np.frombuffer(body, dtype=np_dtype, offset=pos).copy())
        return SparseUpdate(np.arange(numel), values, numel, 0.0, "dense", "none", 0, len(message))
    tau = float(np.frombuffer(body, dtype=np_dtype, count=1, offset=pos)[0])
    pos += np_dtype.itemsize
    count, pos = _read_varint(body, pos)
    numel, pos = _read_varint(body, pos)
    coder = _CODER_NAME.get(coder_code)
    if coder is None or count > numel or numel > MAX_NUMEL:
        raise ValueError("message is corrupted: bad coder or lengths in its header")
    payload = variant == "sparse"
    value_bytes = count * np_dtype.itemsize if payload else 0
    bits = np.unpackbits(np.frombuffer(body, dtype=np.uint8, offset=pos, count=len(body) - pos - value_bytes))
    gaps, used = _decode_gaps(bits, count, coder, k)
    indices = np.cumsum(gaps) - 1
    if count and indices[-1] >= numel:
        raise ValueError("message is corrupted: an index lies beyond the update's length")
    if payload:
        values = torch.from_numpy(np.frombuffer(body, dtype=np_dtype, offset=len(body) - value_bytes).copy())
    else:
        if used + count > len(bits):
            raise ValueError("message is truncated or corrupted: sign bits run past its end")
        negative = torch.from_numpy(bits[used : used + count].astype(bool))
        tau_t = torch.tensor(tau, dtype=dtype)
        values = torch.where(negative, -tau_t, tau_t)
    return SparseUpdate(indices, values, numel, tau, variant, coder, k, len(message))


def decode(message: bytes, shape: torch.Size | tuple[int, ...] | int) -> torch.Tensor:
    """The dense update of ``shape`` that ``message`` carries (exactly what was sent)."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    numel = int(np.prod(shape, dtype=np.int64))
    update = read_message(message)
    if update.numel != numel:
        raise ValueError(
            f"message is for an update of {update.numel:,} elements, not shape {shape} ({numel:,})"
        )
    return update.to_dense().reshape(shape)


# --------------------------------------------------------------------------------------
# The per-worker state


@dataclass(repr=False)
class Compressor:
    """One worker's compressor: keeps the residual and turns each update into a message.

    ``compress(update)`` returns the message bytes; ``last_sent`` is the dense update the
    message carries (what peers will add), so the worker can apply the same to itself.
    """

    numel: int  # length of the flattened update (all parameters)
    tau: float | None = None  # threshold; None only for variant "dense"
    variant: str = "full"  # "full", "onebit" (no residual), "sparse" (full values), "dense" (off)
    coder: str = "auto"  # gap coder: "auto" picks the smallest of Rice and Exp-Golomb
    dtype: torch.dtype = torch.float32  # dtype of updates and of the residual
    quantizer: Quantizer | None = None  # quantize(r, tau); None: quantize (sparsify for "sparse")
    residual_fn: ResidualFn | None = None  # (residual, update, tau) -> (sent, new r); None: residual_step
    residual: torch.Tensor = field(init=False)  # what has not been sent yet
    bytes_sent: int = field(init=False, default=0)  # total message bytes produced
    elements_sent: int = field(init=False, default=0)  # total elements sent

    def __post_init__(self) -> None:
        check_int("numel", self.numel, low=0, high=MAX_NUMEL)
        check_choice("variant", self.variant, VARIANTS)
        check_choice("coder", self.coder, CODERS)
        _check_dtype(self.dtype)
        check_quantizer(self.quantizer)
        check_residual_fn(self.residual_fn, self.variant)
        if self.variant != "dense" or self.tau is not None:
            self.tau = check_float("tau", self.tau, low=0.0, low_open=True)
        self.residual = torch.zeros(self.numel if self.variant in ("full", "sparse") else 0, dtype=self.dtype)
        self.last_sent = torch.zeros(0, dtype=self.dtype)

    def compress(self, update: torch.Tensor) -> bytes:
        """Add ``update`` to the residual, send what reaches ``tau``, keep the rest."""
        _check_finite("update", update)
        if update.numel() != self.numel or update.dtype != self.dtype:
            raise ValueError(
                f"update must have {self.numel:,} elements of {self.dtype}, "
                f"got {update.numel():,} of {update.dtype}"
            )
        flat = update.detach().reshape(-1)
        if self.variant == "dense":
            self.last_sent = flat.clone()
            message = encode_dense(flat)
            self.elements_sent += self.numel  # every element travels
        else:
            rule = self.quantizer or (sparsify if self.variant == "sparse" else quantize)
            if self.variant == "onebit":
                sent = rule(flat, self.tau)  # no memory: whatever is below tau this step is lost
            elif self.residual_fn is not None:
                sent = self._plugged_residual_step(flat)
            else:
                sent = residual_step(self.residual, flat, self.tau, rule)
            idx = sent.nonzero().squeeze(1)
            if self.variant == "sparse":
                message = encode(
                    idx, self.numel, tau=self.tau, values=sent[idx], dtype=self.dtype, coder=self.coder
                )
            else:
                picked = sent[idx]
                if not bool((picked.abs() == torch.tensor(self.tau, dtype=self.dtype)).all()):
                    raise ValueError(
                        f"quantizer must send +-tau ({self.tau}) or 0 in variant {self.variant!r}, "
                        f"got values {picked[:3].tolist()}"
                    )
                message = encode(
                    idx,
                    self.numel,
                    tau=self.tau,
                    negative=(picked < 0).numpy(),
                    dtype=self.dtype,
                    coder=self.coder,
                    variant=self.variant,
                )
            self.last_sent = sent
            self.elements_sent += len(idx)
        self.bytes_sent += len(message)
        return message

    def _plugged_residual_step(self, flat: torch.Tensor) -> torch.Tensor:
        """A student's residual step on copies; its answer is checked, then kept as the residual."""
        out = self.residual_fn(self.residual.clone(), flat.clone(), self.tau)
        shape = tuple(self.residual.shape)
        if not (
            isinstance(out, (tuple, list))
            and len(out) == 2
            and all(isinstance(t, torch.Tensor) and tuple(t.shape) == shape for t in out)
        ):
            raise ValueError(
                f"residual_fn must return (sent, new_residual), two tensors of shape {shape}, got {out!r:.80}"
            )
        sent, new_residual = (t.detach().to(self.dtype) for t in out)
        self.residual.copy_(new_residual)
        return sent

    def __repr__(self) -> str:
        return (
            f"Compressor(variant={self.variant!r}, tau={self.tau}, numel={self.numel:,}, "
            f"coder={self.coder!r}, bytes_sent={self.bytes_sent:,})"
        )


@dataclass
class CompressionSettings:
    """How every worker of a decentralized run compresses its updates.

    The fields that the real run (:class:`dlcourse.decentralized.DecentralizedConfig`) and
    the simulated one (:class:`dlcourse.sim.decentralized.DecentralizedSimConfig`) share,
    checked once here; ``compressor(numel)`` builds one worker's :class:`Compressor`.
    """

    tau: float | None = None  # threshold of the compressed updates; None sends them uncompressed
    variant: str = "full"  # with tau: "full" (residual), "onebit" (no residual), "sparse" (full values)
    coder: str = "auto"  # gap coder of the messages
    quantizer: Quantizer | None = None  # a student's quantize(r, tau); None: quantize (sparsify)
    residual_fn: ResidualFn | None = None  # a student's residual step, (residual, update, tau) -> (sent, r)

    def check_compression(self) -> None:
        """Check the compression fields (the configs call this from their ``__post_init__``)."""
        if self.tau is not None:
            self.tau = check_float("tau", self.tau, low=0.0, low_open=True)
        check_choice("variant", self.variant, COMPRESSIONS)
        check_choice("coder", self.coder, CODERS)
        check_quantizer(self.quantizer)
        check_residual_fn(self.residual_fn, self.compressor_variant)

    @property
    def compressor_variant(self) -> str:
        """The variant a worker runs: ``"dense"`` (no compression) without a tau."""
        return "dense" if self.tau is None else self.variant

    def compressor(self, numel: int, dtype: torch.dtype = torch.float32) -> Compressor:
        """One worker's compressor for an update of ``numel`` elements."""
        return Compressor(
            numel,
            tau=self.tau,
            variant=self.compressor_variant,
            coder=self.coder,
            dtype=dtype,
            quantizer=self.quantizer,
            residual_fn=self.residual_fn,
        )

    def rule_names(self) -> dict:
        """``{"quantizer": name, "residual_fn": name}`` of a student's rules (None: the library's)."""
        return {k: None if v is None else getattr(v, "__name__", "custom") for k, v in self._rules().items()}

    def _rules(self) -> dict:
        return {"quantizer": self.quantizer, "residual_fn": self.residual_fn}
