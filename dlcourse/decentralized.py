"""Decentralized asynchronous SGD with compressed updates (Strom 2015), on real processes.

Nikko Strom, "Scalable distributed DNN training using commodity GPU cloud computing",
Interspeech 2015. There is **no parameter server**: every worker holds a full replica of
the model. After each step a worker

1. computes its update ``-lr * gradient`` on its own shard,
2. compresses it (:class:`dlcourse.compression.Compressor`: residual, +-tau, coded gaps),
3. applies to its own replica exactly what it sends, and
4. sends the message bytes to its peers: all of them (``topology="all"``) or only the
   next rank of a ring (``topology="ring"``), where every worker forwards what it
   receives until the message has gone round,

and then applies whatever messages from peers have arrived, **without waiting** for the
others. Messages are received by a background thread (gloo's ``dist.recv(src=None)``
takes the next message from any peer) and queued; the training thread drains the queue
between steps. Since every replica adds the same set of messages, the replicas agree once
all messages are in, up to the order of floating-point additions.

``warmup_workers`` lets only the first few workers train for ``warmup_fraction`` of the
first epoch (Strom: "fewer nodes early", when the model changes fastest and many nodes
would mostly add staleness); the others apply their updates meanwhile and join after.

Run it with::

    from dlcourse.decentralized import DecentralizedConfig, train_decentralized
    result = train_decentralized(DecentralizedConfig(tau=0.01), num_workers=2)
    result.test_accuracy, result.bytes_sent

or ``dlcourse train --strategy decentralized --workers 4 --tau 0.01 --topology ring``.
Leave ``tau`` out (``None``) to send the updates uncompressed, for comparison.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F

from dlcourse._validate import check_choice, check_float, check_int
from dlcourse.collectives import TOPOLOGIES, flat_parameters, peers
from dlcourse.compression import CompressionSettings, read_message
from dlcourse.data import Dataset, batch_order, load_mnist, shard
from dlcourse.divergence import check_finite, find_diverged
from dlcourse.launcher import WorkerError, launch
from dlcourse.metrics import run_metrics
from dlcourse.models import make_model
from dlcourse.staleness import staleness_summary
from dlcourse.train import evaluate

_HEADER_TAG, _PAYLOAD_TAG = 1, 2
_FRAME_BYTES = 3 * 8  # the int64 header (origin, step, length) sent before each message


@dataclass
class DecentralizedConfig(CompressionSettings):
    """Everything that decides a decentralized run: the compression (tau, variant, coder and a
    student's quantizer or residual step: :class:`~dlcourse.compression.CompressionSettings`)
    and the fields below."""

    topology: str = "all"  # "all": send to every peer; "ring": to the next rank, which forwards
    model: str = "mlp"  # "mlp" (fast) or "cnn" (the lecture's network)
    lr: float = 0.1  # learning rate of plain SGD; the update is -lr * gradient
    epochs: int = 1  # passes of each worker over its shard
    batch_size: int = 50  # examples per worker step
    warmup_workers: int | None = None  # workers that train alone at first (None: all from the start)
    warmup_fraction: float = 0.0  # fraction of the first epoch during which only they train
    seed: int = 0  # seeds the model (same on every replica) and the shuffles (differ per rank)

    def __post_init__(self) -> None:
        self.check_compression()
        check_choice("topology", self.topology, TOPOLOGIES)
        check_choice("model", self.model, ("mlp", "cnn"))
        self.lr = check_float("lr", self.lr, low=0.0, low_open=True)
        check_int("epochs", self.epochs, low=1)
        check_int("batch_size", self.batch_size, low=1)
        if self.warmup_workers is not None:
            check_int("warmup_workers", self.warmup_workers, low=1)
        self.warmup_fraction = check_float("warmup_fraction", self.warmup_fraction, low=0.0, high=1.0)
        check_int("seed", self.seed, low=0)


@dataclass(repr=False)
class DecentralizedResult:
    """What a run measured: accuracy of the replicas, traffic, staleness."""

    config: DecentralizedConfig  # what was run
    num_workers: int  # N
    test_accuracy: float  # of rank 0's replica on the test set
    test_loss: float
    test_macro_f1: float
    replica_divergence: float  # max |W_rank - W_0| over ranks and parameters, once all messages are in
    updates: int  # local steps taken, all workers together
    bytes_sent: int  # every message and its frame, forwarded copies included, all workers together
    elements_sent: int  # sent elements of all messages (numel per step when uncompressed)
    numel: int  # parameters of the model (elements of one dense update)
    wall_s: float  # seconds of the slowest worker's training loop
    examples: int  # training examples processed, all workers together
    staleness: list[int] = field(default_factory=list)  # local steps since each applied peer update was made
    bytes_per_step: list[int] = field(default_factory=list)  # rank 0's message bytes per step
    messages: int = 0  # messages on the wire (forwarded copies included)

    @property
    def examples_per_s(self) -> float:
        """Training examples per second of the slowest worker's loop, all workers together."""
        return self.examples / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def compression_ratio(self) -> float:
        """Bytes the messages would take as dense float32 over their real bytes (frames left out)."""
        payload = self.bytes_sent - self.messages * _FRAME_BYTES
        return self.messages * self.numel * 4 / payload if payload > 0 else math.inf

    def metrics(self) -> dict:
        """The CLI's metrics (DESIGN.md): test_*, examples_per_s, wall_s, updates, bytes_sent, staleness."""
        return run_metrics(
            "decentralized",
            {"loss": self.test_loss, "accuracy": self.test_accuracy, "macro_f1": self.test_macro_f1},
            examples_per_s=self.examples_per_s,
            wall_s=self.wall_s,
            updates=self.updates,
            bytes_sent=self.bytes_sent,
            staleness=staleness_summary(self.staleness),
            workers=self.num_workers,
            model=self.config.model,
            compression=self.config.compressor_variant,
            tau=self.config.tau,
            topology=self.config.topology,
            compression_ratio=self.compression_ratio,
            replica_divergence=self.replica_divergence,
            bytes_per_step=self.bytes_per_step,
            config={**asdict(self.config), **self.config.rule_names()},  # a student's rules by name
        )

    def __repr__(self) -> str:
        return (
            f"DecentralizedResult(num_workers={self.num_workers}, "
            f"compression={self.config.compressor_variant!r}, tau={self.config.tau}, "
            f"test_accuracy={self.test_accuracy:.4f}, bytes_sent={self.bytes_sent:,}, "
            f"ratio={self.compression_ratio:.1f}x)"
        )


# --------------------------------------------------------------------------------------
# One worker


class _Receiver(threading.Thread):
    """Receives ``expected`` messages from any peer and queues them; errors are kept for the trainer."""

    def __init__(self, expected: int):
        super().__init__(daemon=True, name="dlcourse-receiver")
        self.expected = expected
        self.inbox: queue.Queue = queue.Queue()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in range(self.expected):
                header = torch.zeros(3, dtype=torch.int64)
                src = dist.recv(header, src=None, tag=_HEADER_TAG)  # from whichever peer is first
                payload = torch.empty(int(header[2]), dtype=torch.uint8)
                dist.recv(payload, src=src, tag=_PAYLOAD_TAG)
                self.inbox.put((int(header[0]), int(header[1]), payload))
        except BaseException as e:  # noqa: BLE001 - the training thread re-raises it
            self.error = e


class _Peer:
    """One worker of decentralized SGD: its replica, compressor, outgoing and incoming updates."""

    def __init__(self, rank: int, world_size: int, config: DecentralizedConfig, train: Dataset) -> None:
        self.rank, self.config = rank, config
        self.model = make_model(config.model, seed=config.seed)  # same seed: identical replicas
        self.flat = flat_parameters(self.model)
        self.data = shard(train, world_size)[rank]
        steps_per_epoch = math.ceil(len(self.data) / config.batch_size)
        total_steps = config.epochs * steps_per_epoch
        # the first `active` workers train alone for `warmup` steps; the others join then
        self.active = config.warmup_workers if config.warmup_workers is not None else world_size
        self.warmup = int(config.warmup_fraction * steps_per_epoch) if self.active < world_size else 0
        expected = sum(total_steps - (self.warmup if r >= self.active else 0) for r in range(world_size))
        self.compressor = config.compressor(self.flat.numel())
        self.to = peers(rank, world_size, config.topology)
        own = total_steps - (self.warmup if rank >= self.active else 0)
        self.receiver = _Receiver(expected - own)
        self.receiver.start()
        self.pending: list = []  # (work, tensor) of sends in flight; tensors must live until sent
        self.applied_from = [0] * world_size
        self.staleness: list[int] = []
        self.bytes_per_step: list[int] = []
        self.bytes_sent = self.messages = self.steps_done = self.examples = 0

    def send(self, origin: int, step: int, message: torch.Tensor) -> None:
        """Start sending ``origin``'s update (of its step ``step``) to this worker's peers."""
        header = torch.tensor([origin, step, message.numel()], dtype=torch.int64)
        for peer in self.to:
            if self.config.topology == "ring" and peer == origin:
                continue  # it has gone round the ring
            self.pending.append((dist.isend(header, dst=peer, tag=_HEADER_TAG), header))
            self.pending.append((dist.isend(message, dst=peer, tag=_PAYLOAD_TAG), message))
            self.bytes_sent += message.numel() + _FRAME_BYTES
            self.messages += 1

    def apply_arrived(self, block_s: float | None = None) -> int:
        """Add every peer update that has arrived; with ``block_s``, wait up to that long for one."""
        count = 0
        while True:
            if self.receiver.error is not None:
                raise RuntimeError(f"rank {self.rank}: receiving from peers failed: {self.receiver.error}")
            try:
                inbox = self.receiver.inbox
                origin, step, payload = inbox.get(timeout=block_s) if block_s else inbox.get_nowait()
            except queue.Empty:
                return count
            block_s = None
            read_message(payload.numpy().tobytes()).add_to(self.flat)
            # updates this worker made since the origin made this one: how late it arrives
            self.staleness.append(max(0, self.steps_done - step))
            self.applied_from[origin] += 1
            count += 1
            if self.config.topology == "ring":
                self.send(origin, step, payload)

    def wait_for_warmup(self, deadline: float, timeout: float) -> None:
        """A late joiner waits until the warm-up workers have done their warm-up steps."""
        while min(self.applied_from[r] for r in range(self.active)) < self.warmup:
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank {self.rank}: the warm-up workers did not finish in {timeout} s")
            self.apply_arrived(block_s=0.1)

    def step(self, idx: torch.Tensor) -> None:
        """One SGD step on this replica; the compressed update goes to the peers."""
        # the previous step's sends have had a whole step to finish: free their buffers
        for work, _ in self.pending:
            work.wait()
        self.pending.clear()
        loss = F.cross_entropy(self.model(self.data.X[idx]), self.data.y[idx])
        # a replica whose loss blew up stops the run (Diverged: this worker's step)
        check_finite(loss, runtime="decentralized", where="step", index=self.steps_done + 1, worker=self.rank)
        self.model.zero_grad(set_to_none=True)
        loss.backward()
        grad = torch.cat([p.grad.reshape(-1) for p in self.model.parameters()])
        message = self.compressor.compress(-self.config.lr * grad)
        with torch.no_grad():
            self.flat += self.compressor.last_sent  # the same update the peers will apply
        self.steps_done += 1
        self.examples += len(idx)  # the last batch of a shard may be short
        self.send(self.rank, self.steps_done, torch.frombuffer(bytearray(message), dtype=torch.uint8))
        self.bytes_per_step.append(len(message))
        self.apply_arrived()

    def drain(self, deadline: float, timeout: float) -> None:
        """Every replica must add every update: wait for the rest (bounded by the timeout)."""
        while self.receiver.is_alive() or not self.receiver.inbox.empty():
            if time.monotonic() > deadline:
                missing = self.receiver.expected - sum(self.applied_from)
                raise TimeoutError(
                    f"rank {self.rank}: {missing} peer messages still missing after {timeout} s"
                )
            if self.apply_arrived(block_s=0.1):
                deadline = time.monotonic() + timeout
        self.apply_arrived()
        for work, _ in self.pending:
            work.wait()


def _worker(rank: int, world_size: int, config: DecentralizedConfig, train: Dataset, timeout: float) -> dict:
    peer = _Peer(rank, world_size, config, train)
    late = rank >= peer.active  # a late joiner skips the warm-up part of the first epoch
    start = time.perf_counter()
    deadline = time.monotonic() + timeout
    for epoch in range(config.epochs):
        order = batch_order(len(peer.data), config.batch_size, epoch=epoch, seed=config.seed, worker=rank)
        for i, idx in enumerate(order):
            if epoch == 0 and late and i < peer.warmup:
                continue  # not started yet: only apply the others' updates (in wait_for_warmup)
            if epoch == 0 and late and peer.warmup and i == peer.warmup:
                peer.wait_for_warmup(deadline, timeout)
            peer.step(idx)
            deadline = time.monotonic() + timeout  # progress was made
    wall_s = time.perf_counter() - start
    peer.drain(deadline, timeout)
    dist.barrier()  # nobody leaves while a peer may still read from it
    return {
        "rank": rank,
        "params": peer.flat.clone(),
        "steps": peer.steps_done,
        "examples": peer.examples,
        "bytes_sent": peer.bytes_sent,
        "messages": peer.messages,
        "elements_sent": peer.compressor.elements_sent,
        "wall_s": wall_s,
        "staleness": peer.staleness,
        "bytes_per_step": peer.bytes_per_step,
    }


# --------------------------------------------------------------------------------------
# The run


def train_decentralized(
    config: DecentralizedConfig,
    num_workers: int,
    *,
    train: Dataset | None = None,
    test: Dataset | None = None,
    timeout: float = 60.0,
    run_timeout: float | None = None,
) -> DecentralizedResult:
    """Train ``config`` on ``num_workers`` real processes; evaluate rank 0's replica on ``test``.

    ``train`` / ``test`` default to the shipped MNIST subset. ``timeout`` (seconds) bounds
    any wait on a peer; ``run_timeout`` the whole run.
    """
    if not isinstance(config, DecentralizedConfig):
        raise ValueError(f"config must be a DecentralizedConfig, got {type(config).__name__}")
    check_int("num_workers", num_workers, low=1)
    check_float("timeout", timeout, low=0.0, low_open=True)
    if config.warmup_workers is not None and config.warmup_workers > num_workers:
        raise ValueError(
            f"warmup_workers must be <= num_workers ({num_workers}), got {config.warmup_workers}"
        )
    for name, data in (("train", train), ("test", test)):
        if data is not None and not isinstance(data, Dataset):
            raise ValueError(f"{name} must be a Dataset or None, got {type(data).__name__}")
    if train is None or test is None:
        split = load_mnist("subset")
        train = split.train if train is None else train
        test = split.test if test is None else test
    if len(train) < num_workers:
        raise ValueError(f"train must hold at least num_workers ({num_workers}) examples, got {len(train)}")
    try:
        outs = launch(
            _worker,
            num_workers,
            config,
            train,
            timeout,
            backend="gloo",  # any-source receive is gloo's; NCCL has none (messages are small anyway)
            timeout=timeout,
            run_timeout=run_timeout,
            threads_per_worker=1,
        )
    except WorkerError as e:
        diverged = find_diverged(e)  # a replica's loss blew up: say where, not how the launcher saw it
        if diverged is None:
            raise
        raise diverged from None
    model = make_model(config.model, seed=config.seed)
    flat = flat_parameters(model)
    with torch.no_grad():
        flat.copy_(outs[0]["params"])
    scores = evaluate(model, test)
    divergence = max(float((o["params"] - outs[0]["params"]).abs().max()) for o in outs)
    return DecentralizedResult(
        config=config,
        num_workers=num_workers,
        test_accuracy=scores["accuracy"],
        test_loss=scores["loss"],
        test_macro_f1=scores["macro_f1"],
        replica_divergence=divergence,
        updates=sum(o["steps"] for o in outs),
        bytes_sent=sum(o["bytes_sent"] for o in outs),
        elements_sent=sum(o["elements_sent"] for o in outs),
        numel=flat.numel(),
        wall_s=max(o["wall_s"] for o in outs),
        examples=sum(o["examples"] for o in outs),
        staleness=[t for o in outs for t in o["staleness"]],
        bytes_per_step=outs[0]["bytes_per_step"],
        messages=sum(o["messages"] for o in outs),
    )
