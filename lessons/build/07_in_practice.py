# ruff: noqa: E501  (markdown paragraphs stay one line each, so the notebook reflows them)
"""Builds lessons/07_in_practice.ipynb (committed without outputs): run it from the repository root.

    .venv/bin/python lessons/build/07_in_practice.py

Edit this file, not the notebook: the notebook is generated from it.
"""

from __future__ import annotations

from lesson import Cells, write

cells = Cells()
md, code = cells.md, cells.code


md("""
# 07 · Distributed training in practice

**After this lesson you will be able to** compare every strategy of the course on the same data by the lecture's criteria (examples per second, bytes on the wire, accuracy per epoch and per second); run the lecture's Keras multi-GPU MNIST example as PyTorch DDP and report a *correct* F1; explain what `multi_gpu_model(..., cpu_relocation=True)` and TensorFlow device scopes did, and what replaced them; combine model and data parallelism; survive a crash with checkpoints; and take the same code to a multi-GPU server or a cluster with `torchrun`.

**The lecture's pictures, in words.** The closing part of the lecture, "Distributed Neural Network Training", chooses among approaches with two kinds of charts: bars of *training speed* (examples per second, or time per epoch) for each approach, and curves of *accuracy per epoch* and *accuracy per second*, where synchronous methods look good per epoch and asynchronous ones per second. Then come the practical slides: a Keras script that trains the MNIST CNN on several GPUs, the same with the weights kept on the CPU, and a shared LSTM whose two branches run on two GPUs.

Terms used below: **N** workers, each on its own shard of the data; **K** pipeline stages (model parallelism) or, for averaging, steps between averages; **lambda** the learning rate.
""")

md("""
## 1. Every strategy on the same data, side by side

To keep this section to seconds, every strategy trains the small MLP on the same 2,000 training digits for two epochs, with a global mini-batch of 100 examples, plain SGD at lr = 0.1, and N = 2 worker processes. The single-process run is the baseline.

- **sync SGD**: gradients averaged by an all-reduce every step (lesson 03);
- **DDP**: the same with PyTorch's `DistributedDataParallel`;
- **averaging, K = 5**: the lecture's parameter averaging every five steps;
- **async PS**: a parameter server process and two workers that push gradients without waiting (lesson 04);
- **decentralized, 1-bit**: peers send each other sparse +-tau updates with a residual, no server (lesson 06).

**Predict.** Which strategy will send the fewest bytes? Which will process the most examples per second on *this* machine, where all processes share a couple of cores?
""")

code("""
import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from dlcourse.averaging import parameter_distance, train_averaging
from dlcourse.collectives import parameter_bytes, ring_allreduce_bytes
from dlcourse.data import load_mnist
from dlcourse.data_parallel import DataParallelConfig, train_ddp, train_sync_sgd
from dlcourse.decentralized import DecentralizedConfig, train_decentralized
from dlcourse.models import make_model
from dlcourse.parameter_server import PSConfig, run_parameter_server
from dlcourse.train import evaluate, fit

split = load_mnist()
train, test = split.train[:2000], split.test
cfg = DataParallelConfig(model="mlp", epochs=2, batch_size=100, lr=0.1, optimizer="sgd")

rows, runs = [], {}


def add(name, test_result, examples, wall_s, bytes_sent):
    rows.append({"strategy": name, "examples/s": examples / wall_s, "MB sent": bytes_sent / 1e6,
                 "test accuracy": test_result["accuracy"], "train seconds": wall_s})


model = make_model("mlp", seed=0)
history = fit(model, train, epochs=2, batch_size=100, lr=0.1, optimizer="sgd", progress=False)
add("single process", evaluate(model, test), history.examples, history.wall_s, 0)

for name, train_fn, config in [
    ("sync SGD", train_sync_sgd, cfg),
    ("DDP", train_ddp, cfg),
    ("averaging K=5", train_averaging, dataclasses.replace(cfg, average_every=5)),
]:
    runs[name] = train_fn(train, 2, config, test=test)
    add(name, runs[name].test, runs[name].examples, runs[name].wall_s, runs[name].bytes_sent)

ps_config = PSConfig(num_workers=2, lr=0.1, batch_size=50, epochs=2, train_examples=2000, model="mlp")
ps = run_parameter_server(ps_config)
add("async PS", ps.test, ps.examples, ps.wall_s, ps.bytes_sent)

dec_config = DecentralizedConfig(tau=0.003, lr=0.1, batch_size=50, epochs=2)
dec = train_decentralized(dec_config, 2, train=train, test=test)
add("decentralized 1-bit", {"accuracy": dec.test_accuracy}, dec.examples, dec.wall_s, dec.bytes_sent)

table = pd.DataFrame(rows).set_index("strategy")
table.round(3)
""")

code("""
fig, (ax_speed, ax_bytes, ax_acc) = plt.subplots(1, 3, figsize=(13, 3.5))
names = list(table.index)
colors = [f"C{i}" for i in range(len(names))]
ax_speed.barh(names, table["examples/s"], color=colors)
ax_speed.set(xlabel="training examples per second (this machine)")
ax_speed.invert_yaxis()
ax_bytes.barh(names, table["MB sent"].clip(lower=1e-3), color=colors)
ax_bytes.set(xscale="log", xlabel="MB sent over the whole run (log)")
ax_bytes.invert_yaxis()
ax_bytes.set_yticklabels([])
for y, mb in enumerate(table["MB sent"]):
    if mb == 0:
        ax_bytes.text(1.5e-3, y, "nothing sent", va="center")
for name, c in zip(names, colors):
    seconds, accuracy = table.loc[name, "train seconds"], table.loc[name, "test accuracy"]
    ax_acc.plot(seconds, accuracy, "o", color=c, ms=9, label=name)
ax_acc.set(xlabel="seconds of training", ylabel="test accuracy after 2 epochs")
ax_acc.legend(fontsize="x-small")
fig.tight_layout()
""")

md("""
Read the three panels from left to right. The speed bars are *this* machine's, measured while every process shares its few CPU cores with everything else running: they move from run to run, and more processes need not mean more speed (on a cluster each worker has a machine of its own). Start-up is not counted: the bars time the training loops only. The bytes panel is on a log scale: the single process sends nothing, sync SGD and DDP send exactly the same (the ring all-reduce of every gradient), averaging every 5 steps sends about a fifth of that, the parameter server sends every gradient up and the parameters back, and the 1-bit decentralized updates are orders of magnitude smaller. The right panel puts the accuracy each reached after two epochs against the seconds it took.
""")

code("""
\"\"\"Checks the bytes of the runs just made: sync SGD = DDP, fewer for averaging, far fewer for 1-bit.\"\"\"
sync, ddp, avg = runs["sync SGD"], runs["DDP"], runs["averaging K=5"]
nbytes = parameter_bytes(make_model("mlp"))
assert sync.bytes_sent == ddp.bytes_sent == nbytes + sync.updates * ring_allreduce_bytes(nbytes, 2)
assert avg.bytes_sent < sync.bytes_sent / 3
assert dec.bytes_sent < sync.bytes_sent / 10
assert parameter_distance(sync.parameters, ddp.parameters) < 1e-5  # two implementations, one algorithm
assert table["test accuracy"].min() > 0.5, table
""")

md("""
### Accuracy per epoch and per second, on a cluster

Real processes on a shared laptop cannot show what a cluster's clock would say. The simulated cluster can: every worker computes real gradients on this same data, only the time is simulated (each worker on its own machine, one mini-batch in a virtual second, a 10% chance that a step straggles four times longer). Eight workers, the same two epochs.

**Predict.** Per *epoch*, will synchronous or asynchronous SGD reach the higher accuracy? Per *second*?
""")

code("""
from dlcourse.data import MnistSplit
from dlcourse.sim import SimConfig, simulate
from dlcourse.viz import curves

same_data = MnistSplit(train, test, split.source)
common = dict(num_workers=8, model="mlp", epochs=2, batch_size=50, lr=0.1, compute_mean=1.0)
common.update(straggler_prob=0.1, straggler_slowdown=4.0)
policies = {
    "sync": SimConfig(policy="sync", **common),
    "async": SimConfig(policy="async", **common),
    "soft sync S=4": SimConfig(policy="softsync", softsync=4, **common),
    "bounded staleness 2": SimConfig(policy="bounded", staleness_bound=2, **common),
}
simulated = {name: simulate(config, same_data) for name, config in policies.items()}
for name, r in simulated.items():
    print(f"{name:20s} {r.examples_per_s:6.1f} examples per virtual second, accuracy {r.test.accuracy:.3f}")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
curves(simulated, x="epoch", metrics=("accuracy",), axes=[axes[0]])
curves(simulated, x="second", metrics=("accuracy",), axes=[axes[1]]);
""")

md("""
Left: accuracy against epochs, the lecture's "accuracy per epoch" chart. Every gradient here is fresh in the synchronous run, but its server averages the N = 8 gradients of a round into *one* step, so with the same lambda it takes eight times fewer steps per epoch than the asynchronous server, which applies each (possibly stale) gradient as it arrives; soft sync (S = 4) sits in between, and bounding the staleness makes fast workers wait. Right: the same runs against virtual seconds; the synchronous run needs about twice as long for its two epochs, because every round waits for its slowest worker, and stragglers are common among eight. The lecture's point is that the criterion decides: examples per second, accuracy per epoch and accuracy per second can each crown a different strategy, and tuning (a larger lambda for larger synchronous batches, a staleness-aware lambda for asynchronous updates, lesson 05) moves the curves.
""")

code("""
\"\"\"Checks on the simulated cluster that async SGD processes more examples per second than sync SGD.\"\"\"
assert simulated["async"].examples_per_s > simulated["sync"].examples_per_s
assert simulated["async"].virtual_s < simulated["sync"].virtual_s
""")

md("""
## 2. The lecture's Keras multi-GPU example, as PyTorch DDP

The lecture builds its CNN (two convolutions, two max-pools, a dense layer of 1,024 units, ten outputs) under `tf.device('/cpu:0')`, wraps it with `multi_gpu_model(model, gpus=2)`, and trains with `fit(x_train, y_train, epochs=5, batch_size=100)`. Keras splits each batch of 100 into two halves, one per GPU, and merges the results. In PyTorch the same is two processes running `DistributedDataParallel`, each taking 50 of the 100 examples; here both run on the CPU (with two GPUs and NCCL, each would take its own GPU and nothing else changes). Adam, as the Keras example compiles it; two epochs instead of five, to stay quick.
""")

code("""
keras_like = DataParallelConfig(model="cnn", epochs=2, batch_size=100, lr=1e-3, optimizer="adam")
cnn_run = train_ddp(split.train, 2, keras_like, test=test)
print(cnn_run)
loss_value, accuracy, f1 = (cnn_run.test[k] for k in ("loss", "accuracy", "macro_f1"))
print(f"Loss: {loss_value:.4f}  Accuracy: {accuracy:.4f}  macro F1: {f1:.4f}")
""")

md("""
### Why the lecture's `f1_score` is not an F1 score

The lecture's metric, written out below in PyTorch exactly as it stands, has three problems (the docstring of `dlcourse.metrics` lists them):

1. It calls `TP / (actual positives)` *precision* and `TP / (predicted positives)` *recall*; the names are swapped. F1 is symmetric, so the value survives, but the code misleads.
2. It multiplies the true one-hot labels by the **softmax scores**, not by predicted labels. Each row of softmax scores sums to 1 and each one-hot row sums to 1, so both denominators are just the batch size, and the "F1" collapses to the average probability the network gives the true class: a soft accuracy, with nothing per class in it.
3. Keras evaluates it **batch by batch** and averages the batch values, but F1 is not an average of batch F1s; it must come from the counts of the whole test set.

`dlcourse.metrics.macro_f1` counts true positives, false positives and false negatives per class over the whole set (the confusion matrix), computes each class's F1 = 2 TP / (2 TP + FP + FN), and averages over the ten classes.

**Predict.** Will the lecture's number come out above or below the correct macro F1 for this network?
""")

code("""
import torch.nn.functional as F

from dlcourse.metrics import confusion_matrix, macro_f1


def lecture_f1(y_true, y_pred):
    \"\"\"The lecture's Keras f1_score, line by line (y_true one-hot, y_pred softmax scores).\"\"\"
    sum_true_pos = (y_true * y_pred).sum()
    sum_true = y_true.sum()
    sum_pred = y_pred.sum()
    precision = sum_true_pos / sum_true  # the lecture's name; this is recall
    recall = sum_true_pos / sum_pred  # the lecture's name; this is precision
    return float(2 * precision * recall / (precision + recall))


cnn = make_model("cnn")
cnn.load_state_dict(cnn_run.parameters)
cnn.eval()
with torch.no_grad():
    scores = F.softmax(cnn(test.X), dim=1)
batches = range(0, len(test), 100)
lecture = np.mean([lecture_f1(F.one_hot(test.y[i:i + 100], 10).float(), scores[i:i + 100]) for i in batches])
batchwise_macro = np.mean([macro_f1(scores[i:i + 100], test.y[i:i + 100]) for i in batches])
correct = macro_f1(scores, test.y)
true_class_probability = float(scores[torch.arange(len(test)), test.y].mean())
print(f"lecture's f1_score, batch-wise:      {lecture:.4f}")
print(f"mean probability of the true class:  {true_class_probability:.4f}")
print(f"macro F1 per batch, then averaged:   {batchwise_macro:.4f}")
print(f"macro F1 of the whole test set:      {correct:.4f}")

cm = confusion_matrix(scores, test.y).double()
tp = cm.diag()
per_class = (2 * tp / (2 * tp + (cm.sum(0) - tp) + (cm.sum(1) - tp))).numpy()
fig, ax = plt.subplots(figsize=(8, 3))
ax.bar(range(10), per_class, color="C0", label="F1 of each digit (whole test set)")
ax.axhline(correct, color="C2", label=f"macro F1 = their mean ({correct:.3f})")
ax.axhline(lecture, color="C3", ls="--", label=f"the lecture's f1_score ({lecture:.3f})")
ax.set(xticks=range(10), xlabel="digit", ylabel="F1", ylim=(min(per_class.min(), lecture) - 0.05, 1.0))
ax.legend(fontsize="small", loc="lower right");
""")

md("""
The blue bars are what F1 is for: they show which digits the network confuses. The green line is their mean, the macro F1 that `evaluate` reports. The red dashed line, the lecture's number, is the mean probability of the right answer: it penalizes a correct but unconfident prediction and says nothing about any class.
""")

code("""
\"\"\"Checks that the lecture's f1_score is the mean true-class probability; batch-wise F1 is not the set's.\"\"\"
assert abs(lecture - true_class_probability) < 1e-5, (lecture, true_class_probability)
assert abs(batchwise_macro - correct) > 1e-3, (batchwise_macro, correct)
assert abs(correct - cnn_run.test["macro_f1"]) < 1e-6
assert cnn_run.test["accuracy"] > 0.9, cnn_run.test
""")

md("""
## 3. Weights hosted on the CPU: `cpu_relocation`

The lecture's second Keras variant passes `cpu_relocation=True`: the weights live in CPU memory; at every step each GPU gets a copy of them and a slice of the batch, runs forward and backward, and the gradients are merged on the CPU where the weights are. That is data parallelism inside *one* process. `dlcourse.replication.ReplicatedModel` is that wrapper in PyTorch; on this machine its two "devices" are both the CPU, which shows the mechanics (not the speed).

Because the replicas' outputs are concatenated before the loss, the merged gradient is exactly the gradient of the whole batch: the wrapped model should train like the plain one.
""")

code("""
from dlcourse.replication import ReplicatedModel, replica_devices

devices = replica_devices(2)  # ["cuda:0", "cuda:1"] on a two-GPU machine, else two CPU replicas
hosted = make_model("mlp", seed=0)  # the weights stay here, on the CPU
pmodel = ReplicatedModel(hosted, devices)
print(pmodel)
replicated_history = fit(pmodel, train, epochs=1, batch_size=100, lr=0.1, optimizer="sgd", progress=False)
plain = make_model("mlp", seed=0)
fit(plain, train, epochs=1, batch_size=100, lr=0.1, optimizer="sgd", progress=False)
hosted_gap = parameter_distance(hosted.state_dict(), plain.state_dict())
copied = 2 * len(devices) * parameter_bytes(hosted) * len(replicated_history.step_loss)
print(f"distance from the plain model: {hosted_gap:.1e}; weights and gradients copied: {copied / 1e6:.1f} MB")
""")

code("""
\"\"\"Checks that CPU-hosted weights with two replicas train like one model on the whole batch.\"\"\"
assert hosted_gap < 1e-5, hosted_gap
assert len(replicated_history.step_loss) == len(train) // 100
""")

md("""
Every step copies the whole model to every replica and every gradient back. With one Python thread driving all devices this is simple, but slow on many GPUs; PyTorch's `nn.DataParallel` worked the same way and was replaced by DDP, one process per device, which keeps a replica on each device and only exchanges gradients (Li et al., VLDB 2020). That is what section 2 ran.
""")

md("""
## 4. Device parallelism: a shared LSTM with a branch per device

The lecture's last Keras example encodes two sequences (140 steps of 256 features each) with *one* shared LSTM of 64 units, puts the first branch on one GPU and the second on another, and concatenates the two codes on the CPU. This is model parallelism by branches: it suits networks with parallel branches. `BranchParallelLSTM` runs each branch on its own device with the one set of shared weights; both branches' gradients add up in those weights, as if one device had run both.
""")

code("""
from dlcourse.model_parallel import BranchParallelLSTM
from dlcourse.models import SharedLSTM

torch.manual_seed(0)
lstm = SharedLSTM()
# with two GPUs: devices=["cuda:0", "cuda:1"]
branches = BranchParallelLSTM(lstm, devices=["cpu", "cpu"], merge_device="cpu")
seq_a, seq_b = torch.randn(4, 140, 256), torch.randn(4, 140, 256)
one_device, two_branches = lstm(seq_a, seq_b), branches(seq_a, seq_b)
one_device.sum().backward()
two_branches.sum().backward()
print(branches)
print(f"outputs differ by {float((one_device - two_branches).detach().abs().max()):.1e}")
""")

code("""
\"\"\"Checks that the branch-parallel shared LSTM gives the outputs and gradients of one device.\"\"\"
assert torch.allclose(one_device, two_branches, atol=1e-6)
for (name, p), q in zip(lstm.named_parameters(), branches.model.parameters()):
    assert torch.allclose(p.grad, q.grad, atol=1e-5), name
""")

md("""
## 5. Model and data parallelism combined

The lecture's multi-GPU cluster figure uses model parallelism inside each machine and data parallelism between machines. `run_hybrid` builds that grid with K = 2 pipeline stages times 2 data-parallel replicas: four processes. Each row is a two-stage model-parallel pipeline working on half of the batch; each column holds the same stage in both replicas and averages its gradients with DDP. The result should be single-machine SGD on the whole batch.

**Predict.** How many processes does each replica's first stage exchange data with, and what crosses each link: activations, gradients, or both?
""")

code("""
from dlcourse.hybrid import HybridConfig, run_hybrid

hybrid_config = HybridConfig(num_stages=2, epochs=1, batch_size=100, lr=0.1)
hybrid = run_hybrid(make_model("mlp", seed=0), train.X, train.y, 2, hybrid_config)
one = make_model("mlp", seed=0)
fit(one, train, epochs=1, batch_size=100, lr=0.1, optimizer="sgd", seed=0, progress=False)
hybrid_gap = parameter_distance(hybrid.state_dict, one.state_dict())
print(hybrid, f"- distance from one process: {hybrid_gap:.1e}, {hybrid.bytes_sent / 1e6:.1f} MB sent")
""")

code("""
\"\"\"Checks that 2 stages x 2 replicas agree with each other and with one process on the whole batch.\"\"\"
assert hybrid.replicas_agree
assert hybrid.num_stages * hybrid.num_replicas == 4
assert hybrid_gap < 1e-5, hybrid_gap
""")

md("""
Stage 0 of a replica talks to its own stage 1 (activations forward, gradients of those activations backward) and to stage 0 of the other replica (the all-reduce of its weight gradients). That is the general pattern of large-model training: pipeline or tensor parallelism inside a node, where links are fast, and data parallelism across nodes.
""")

md("""
## 6. Checkpoints, and resuming after a crash

A long run will be interrupted: a machine dies, a job hits its time limit. With `checkpoint_dir` and `checkpoint_every`, rank 0 writes the model, the optimizer state and the step count every few steps (to a temporary file, renamed into place, so a crash mid-write never leaves a torn checkpoint). A run started with `resume=True` continues from there. Because the mini-batches of every step are a function of (seed, epoch, rank) alone, the resumed run sees exactly the examples the lost one would have.

Here is a real crash: we start the sync SGD run of section 1 with checkpoints every 5 steps (and one worker slowed down, so that we can catch it mid-run), and as soon as the first checkpoint is on disk we kill one worker process with `SIGKILL`, as the operating system would.

**Predict.** After resuming, will the final parameters equal those of the uninterrupted sync SGD run of section 1 exactly, approximately, or not at all?
""")

code("""
import tempfile
import threading

import psutil

from dlcourse.checkpoint import checkpoint_path, load_checkpoint

ckpt_dir = tempfile.mkdtemp(prefix="dlcourse-checkpoint-")
checkpointed = dataclasses.replace(cfg, checkpoint_dir=ckpt_dir, checkpoint_every=5)
crashing = dataclasses.replace(checkpointed, slow_worker=1, slow_delay=0.2)
outcome = {}


def crashing_run():
    try:
        outcome["result"] = train_sync_sgd(train, 2, crashing)
    except Exception as error:  # the launcher reports the dead worker here
        outcome["error"] = error


thread = threading.Thread(target=crashing_run)
thread.start()
while thread.is_alive() and not checkpoint_path(ckpt_dir).exists():
    time.sleep(0.02)
workers = [p for p in psutil.Process().children() if "spawn_main" in " ".join(p.cmdline())]
workers[-1].kill()  # SIGKILL: no chance to clean up
thread.join()
saved = load_checkpoint(ckpt_dir)
print("the run ended with:", str(outcome.get("error", "no error")).splitlines()[0])
print(f"last checkpoint: {saved}")

resumed = train_sync_sgd(train, 2, dataclasses.replace(checkpointed, resume=True), test=test)
resume_gap = parameter_distance(resumed.parameters, sync.parameters)
print(f"resumed at step {saved.step}, trained {resumed.per_worker[0]['steps']} more steps; "
      f"distance from the uninterrupted run: {resume_gap:.1e}")
""")

code("""
\"\"\"Checks that the run crashed, and that the resumed run ends at the uninterrupted run's parameters.\"\"\"
assert "error" in outcome and "result" not in outcome, outcome
assert 0 < saved.step < sync.updates
assert resumed.per_worker[0]["steps"] == sync.updates - saved.step
assert resume_gap < 1e-6, resume_gap
""")

md("""
The dead worker took the whole synchronous job down with it: its partner would otherwise wait forever inside the next all-reduce (the launcher noticed and stopped everything). Nothing after the last checkpoint was kept, and nothing before it was lost; the resumed run ends where the uninterrupted one did. A checkpoint written by a run with other settings (another N, batch size, learning rate, seed) is refused with a message naming the setting.
""")

md("""
## 7. The same code on a multi-GPU server and on a cluster

Everything above started its own processes. On a server or a cluster, `torchrun` starts them instead, one per GPU; `dlcourse`'s launcher notices the variables `torchrun` sets (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`) and runs its rank in place. `docs/scaling-out.md` has the full recipes; the essentials:

```bash
# this laptop: dlcourse starts 2 processes itself (gloo, CPU)
dlcourse train --strategy ddp --workers 2 --model cnn --epochs 5 --batch-size 100

# one server with 4 GPUs: torchrun starts 4 processes, NCCL, one GPU each
torchrun --standalone --nproc-per-node 4 -m dlcourse train \\
    --strategy ddp --model cnn --epochs 5 --batch-size 400 --json run.json

# two machines with 4 GPUs each: run this on both; they meet at node01
torchrun --nnodes 2 --nproc-per-node 4 \\
    --rdzv-backend c10d --rdzv-endpoint node01.example.org:29500 --rdzv-id mnist-ddp-1 \\
    -m dlcourse train --strategy ddp --model cnn --epochs 5 --batch-size 800 \\
    --checkpoint-dir /shared/ckpt --checkpoint-every 200 --timeout 120
```

**What changes:** who starts the processes (`dlcourse` or `torchrun`), the rendezvous (a private file store, localhost, or a c10d endpoint on one machine), the backend that `auto` picks (gloo on CPUs, NCCL when every rank has a GPU), the device each rank computes on (`cuda:<local rank>`), and N (`--workers`, or `nnodes x nproc-per-node`). **What stays:** the training code, the shards and mini-batches (so the same settings give the same numbers), the global batch size split evenly over the N ranks, and the checkpoints (on a cluster, put them on a shared file system). After a preemption, submit the same job with `--resume`.
""")

code("""
from dlcourse.launcher import device_for, resolve_backend, under_torchrun

print("started by torchrun here?", under_torchrun())
print("backend 'auto' picks for 2 ranks:", resolve_backend("auto", 2))
print("rank 0 computes on:", device_for(0), "| GPUs visible:", torch.cuda.device_count())
""")

md("""
## What this lesson showed

Choosing an approach means fixing the criterion first. On the same data the synchronous strategies (sync SGD, DDP) are one algorithm with one traffic bill, averaging every K steps divides that bill by K, a parameter server moves gradients up and parameters down, and compressed decentralized updates cut bytes by orders of magnitude; per epoch the fresh gradients of synchronous training are hard to beat, per second the asynchronous ones win when machines straggle. The lecture's Keras example is two lines of DDP in PyTorch, but its F1 metric measured the mean probability of the true class, not F1. Hosting weights on the CPU and running branches on separate devices are single-process forms of data and model parallelism; hybrid runs combine both across processes and still equal single-machine SGD. Checkpoints turn a crash into a resume that loses nothing, and `torchrun` takes the same code from a laptop to a cluster with only the launcher's settings changing.
""")

md("""
## Exercises

1. Add `momentum` (`optimizer="momentum"`) to every strategy of section 1 that takes it, and redo the table. Which strategies' accuracy improves most?

<details><summary>Hint</summary>

`dataclasses.replace(cfg, optimizer="momentum")` for the data-parallel runs; the parameter server and the decentralized peers apply plain SGD updates, so leave them as they are and note it in your table.
</details>

2. In the simulated comparison, raise `num_workers` to 16 and 32. At which N does the soft-sync run overtake the synchronous one in accuracy per virtual second?

<details><summary>Hint</summary>

Change `common["num_workers"]`, rebuild `policies`, and compare `r.time_curve("accuracy")` of the runs at the same virtual time.
</details>

3. Evaluate the lecture's `f1_score` with batches of 32 (Keras' default for `evaluate`) and of 1,000. Does it change? Does the batch-wise macro F1 change? Explain both.

<details><summary>Hint</summary>

The lecture's value is a mean of per-example probabilities, so batching barely matters; macro F1 per batch is computed on a few examples of each class, and its average drifts further from the whole-set value as batches shrink.
</details>

4. Kill the crashing run of section 6 later (after the third checkpoint) and resume it twice, each time killing it again. Does the final distance from the uninterrupted run stay at zero?

<details><summary>Hint</summary>

Wait until `load_checkpoint(ckpt_dir).step` reaches 15 before the kill; keep `resume=True` and the slowed worker for the second interrupted run.
</details>
""")

md("""
## References

- J. Dean et al., "Large Scale Distributed Deep Networks", NIPS 2012.
- S. Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020.
- P. Patarasuk and X. Yuan, "Bandwidth Optimal All-reduce Algorithms for Clusters of Workstations", JPDC 2009.
- M. Li et al., "Scaling Distributed Machine Learning with the Parameter Server", OSDI 2014.
- W. Zhang, S. Gupta, X. Lian, J. Liu, "Staleness-aware Async-SGD for Distributed Deep Learning", IJCAI 2016.
- Q. Ho et al., "More Effective Distributed ML via a Stale Synchronous Parallel Parameter Server", NIPS 2013.
- N. Strom, "Scalable Distributed DNN Training Using Commodity GPU Cloud Computing", Interspeech 2015.
- Y. Huang et al., "GPipe: Efficient Training of Giant Neural Networks using Pipeline Parallelism", NeurIPS 2019; A. Krizhevsky, "One weird trick for parallelizing convolutional neural networks", 2014 (model and data parallelism combined).
- PyTorch documentation, "torchrun (Elastic Launch)" and "Distributed checkpointing"; C. J. Van Rijsbergen, *Information Retrieval*, 1979 (the F-measure).
""")

write("07_in_practice.ipynb", cells)
