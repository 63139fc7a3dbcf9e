"""The data module: shapes, ranges, balance, sharding properties, the IDX parser."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcourse.data import Dataset, download_mnist, load_mnist, read_idx, shard, write_idx


def test_subset_shapes_dtypes_ranges(mnist):
    assert mnist.source == "subset"
    assert mnist.train.X.shape == (4000, 1, 28, 28) and mnist.test.X.shape == (1000, 1, 28, 28)
    assert mnist.train.X.dtype == torch.float32 and mnist.train.y.dtype == torch.int64
    assert float(mnist.train.X.min()) == 0.0 and float(mnist.train.X.max()) == 1.0
    # stratified: 400 train and 100 test examples of every digit
    assert torch.bincount(mnist.train.y).tolist() == [400] * 10
    assert torch.bincount(mnist.test.y).tolist() == [100] * 10


def test_split_is_deterministic_and_disjoint(mnist):
    again = load_mnist("subset")
    assert torch.equal(again.train.X, mnist.train.X) and torch.equal(again.test.y, mnist.test.y)
    train_rows = {r.numpy().tobytes() for r in mnist.train.X.flatten(1)}
    assert not any(r.numpy().tobytes() in train_rows for r in mnist.test.X.flatten(1))


def test_other_seed_gives_other_split(mnist):
    other = load_mnist("subset", seed=1)
    assert not torch.equal(other.train.y, mnist.train.y)


def _dataset(n: int) -> Dataset:
    return Dataset(
        torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, 28, 28), torch.arange(n)
    )


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300), data=st.data())
def test_shard_properties(n, data):
    num_workers = data.draw(st.integers(1, n))
    ds = _dataset(n)
    shards = shard(ds, num_workers)
    sizes = {len(s) for s in shards}
    assert len(shards) == num_workers and sizes == {n // num_workers}
    ids = torch.cat([s.y for s in shards]).tolist()
    assert len(ids) == len(set(ids))  # disjoint
    assert (
        len(ids) + shards.dropped == n and shards.dropped == n % num_workers
    )  # covers all but the remainder
    assert [s.y.tolist() for s in shard(ds, num_workers)] == [s.y.tolist() for s in shards]  # deterministic


@pytest.mark.parametrize("num_workers", [0, -1, 11, 2.5])
def test_shard_rejects_bad_worker_counts(num_workers):
    with pytest.raises(ValueError, match="num_workers"):
        shard(_dataset(10), num_workers)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 5) % 250).astype(dtype).reshape(2, 3, 5)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype and np.array_equal(back, array)


def test_idx_known_bytes(tmp_path):
    # header by hand: magic 0x00000801 (uint8, 1 dim), size 3, then 3 bytes
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 9]))
    assert read_idx(path).tolist() == [7, 2, 9]


@pytest.mark.parametrize(
    "raw, match",
    [
        (bytes([1, 0, 8, 1, 0, 0, 0, 1, 5]), "magic"),
        (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 5]), "type code"),
        (bytes([0, 0, 8, 2, 0, 0]), "truncated"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 4, 5, 6]), "corrupt"),
    ],
)
def test_idx_corrupt_files(tmp_path, raw, match):
    path = tmp_path / "bad"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=match):
        read_idx(path)


def _write_fake_full_mnist(folder, n_train=30, n_test=20, gz=True):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    write_idx(
        folder / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    )
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", (np.arange(n_train) % 10).astype(np.uint8))
    write_idx(
        folder / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    )
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", (np.arange(n_test) % 10).astype(np.uint8))


def test_full_source_reads_idx_files(tmp_path, monkeypatch):
    _write_fake_full_mnist(tmp_path)
    split = load_mnist("full", tmp_path)
    assert split.source == "full" and len(split.train) == 30 and len(split.test) == 20
    assert split.train.X.shape == (30, 1, 28, 28) and split.train.X.max() <= 1.0
    monkeypatch.setenv("DLCOURSE_DATA", str(tmp_path))
    assert load_mnist().source == "full"  # auto takes full MNIST when it is there


def test_auto_falls_back_to_subset(tmp_path):
    assert load_mnist("auto", tmp_path).source == "subset"


def test_full_source_missing_or_corrupt(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        load_mnist("full", tmp_path)
    _write_fake_full_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="corrupt"):
        load_mnist("full", tmp_path)


def test_unknown_source():
    with pytest.raises(ValueError, match="source must be one of"):
        load_mnist("imagenet")


def test_download_verifies_checksums(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _write_fake_full_mnist(mirror)
    target = tmp_path / "data"
    # the fake files cannot match MNIST's published checksums: the download must refuse them
    with pytest.raises(ValueError, match="checksum mismatch"):
        download_mnist(target, mirror=mirror.as_uri() + "/")
    assert not any(target.glob("*.gz")), "a file failing its checksum must not be kept"
    # with the checksums of our files, the same download succeeds and loads
    import dlcourse.data as data

    sums = {k: (stem, data._md5(mirror / f"{stem}.gz")) for k, (stem, _) in data.MNIST_FILES.items()}
    monkeypatch.setattr(data, "MNIST_FILES", sums)
    download_mnist(target, mirror=mirror.as_uri() + "/")
    assert load_mnist("full", target).source == "full"
    with gzip.open(target / "t10k-labels-idx1-ubyte.gz") as f:
        assert f.read(4) == bytes([0, 0, 8, 1])
