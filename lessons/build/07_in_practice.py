# ruff: noqa: E501  (markdown paragraphs stay one line each, so the notebook reflows them)
"""Builds lessons/07_in_practice.ipynb (committed without outputs): run it from the repository root.

    .venv/bin/python lessons/build/07_in_practice.py

Edit this file, not the notebook: the notebook is generated from it.
"""

from __future__ import annotations

from lesson import Cells, write

cells = Cells()
code = cells.code
md = cells.md_split


md("""
# 07 · Distributed training in practice

**After this lesson you will be able to** compare every strategy of the course on the same data by the lecture's criteria (examples per second, bytes on the wire, accuracy per epoch and per second) and choose one for a given model, $N$ and network; run the lecture's Keras multi-GPU MNIST example as PyTorch DDP and report a *correct* F1; explain what `multi_gpu_model(..., cpu_relocation=True)` and TensorFlow device scopes did, and what replaced them; combine model and data parallelism; survive a crash with checkpoints; take the same code to a multi-GPU server or a cluster with `torchrun`; serve a trained model in parallel; and say why tuning gets harder with $N$.

**The lecture's pictures, in words.** The closing part of the lecture, "Distributed Neural Network Training", chooses among approaches with two kinds of charts: bars of *training speed* (examples per second, or time per epoch) for each approach, and curves of *accuracy per epoch* and *accuracy per second*, where synchronous methods look good per epoch and asynchronous ones per second. Then come the practical slides: a Keras script that trains the MNIST CNN on several GPUs, the same with the weights kept on the CPU, and a shared LSTM whose two branches run on two GPUs.

**Notation** (the course's, lesson 00): $N$ workers, each on its own shard of the data; $\\lambda$ the learning rate; $H$ the averaging period (local steps between two parameter averages); $K$ pipeline stages; $\\sigma$ the staleness of an update. Lesson 00's **map of approaches** (averaging vs update-based, synchronous vs asynchronous, centralized vs decentralized) is the frame of this lesson: every strategy below is one cell of that map, and section 1 puts them side by side.
""")

md("""
## 1. Every strategy on the same data, side by side

To keep this section to seconds, every strategy trains the small MLP on the same 2,000 training digits for two epochs, with a global mini-batch of 100 examples, plain SGD at lr = 0.1, and N = 2 worker processes. The single-process run is the baseline.

- **sync SGD**: gradients averaged by an all-reduce every step (lesson 03);
- **DDP**: the same with PyTorch's `DistributedDataParallel`;
- **averaging, H = 5**: the lecture's parameter averaging every five steps;
- **async PS**: a parameter server process and two workers that push gradients without waiting (lesson 04);
- **decentralized, 1-bit**: peers send each other sparse $\\pm\\tau$ updates with a residual, no server (lesson 06).

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


def add_row(name, test_result, examples, wall_s, bytes_sent):
    rows.append({"strategy": name, "examples/s": examples / wall_s, "MB sent": bytes_sent / 1e6,
                 "test accuracy": test_result["accuracy"], "train seconds": wall_s})


model = make_model("mlp", seed=0)
history = fit(model, train, epochs=2, batch_size=100, lr=0.1, optimizer="sgd", progress=False)
add_row("single process", evaluate(model, test), history.examples, history.wall_s, 0)

for name, train_fn, config in [
    ("sync SGD", train_sync_sgd, cfg),
    ("DDP", train_ddp, cfg),
    ("averaging H=5", train_averaging, dataclasses.replace(cfg, average_every=5)),
]:
    runs[name] = train_fn(train, 2, config, test=test)
    add_row(name, runs[name].test, runs[name].examples, runs[name].wall_s, runs[name].bytes_sent)

ps_config = PSConfig(num_workers=2, lr=0.1, batch_size=50, epochs=2, train_examples=2000, model="mlp")
ps = run_parameter_server(ps_config)
add_row("async PS", ps.test, ps.examples, ps.wall_s, ps.bytes_sent)

dec_config = DecentralizedConfig(tau=0.003, lr=0.1, batch_size=50, epochs=2)
dec = train_decentralized(dec_config, 2, train=train, test=test)
add_row("decentralized 1-bit", {"accuracy": dec.test_accuracy}, dec.examples, dec.wall_s, dec.bytes_sent)

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
sync, ddp, avg = runs["sync SGD"], runs["DDP"], runs["averaging H=5"]
nbytes = parameter_bytes(make_model("mlp"))
assert sync.bytes_sent == ddp.bytes_sent == nbytes + sync.updates * ring_allreduce_bytes(nbytes, 2)
assert avg.bytes_sent < sync.bytes_sent / 3
assert dec.bytes_sent < sync.bytes_sent / 10
assert parameter_distance(sync.parameters, ddp.parameters) < 1e-5  # two implementations, one algorithm
assert table["test accuracy"].min() > 0.5, table
""")

md("""
### Accuracy per epoch and per second, on a cluster

Real processes on a shared laptop cannot show what a cluster's clock would say. The simulated cluster can: every worker computes real gradients on this same data, only the time is simulated (each worker on its own machine, one mini-batch in a virtual second, a 10% chance that a step straggles four times longer). Eight workers, the same two epochs. A fifth run is the fix synchronous training needs: its server averages $N = 8$ gradients into one step, so its global batch is 8 times a worker's, and Goyal et al. (2017) scale $\\lambda$ with the global batch: $8 \\times 0.1$.

**Predict.** Per *epoch*, will synchronous or asynchronous SGD reach the higher accuracy at the same $\\lambda$? With $\\lambda$ scaled? Per *second*?
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
    "sync, lambda x 8": SimConfig(policy="sync", **{**common, "lr": 0.1 * 8}),  # Goyal et al.: lambda ~ global batch
    "async": SimConfig(policy="async", **common),
    "soft sync S=4": SimConfig(policy="softsync", softsync=4, **common),
    "bounded, b = 2": SimConfig(policy="bounded", staleness_bound=2, **common),
}
simulated = {name: simulate(config, same_data) for name, config in policies.items()}
for name, r in simulated.items():
    print(f"{name:20s} {r.examples_per_s:6.1f} examples per virtual second, accuracy {r.test.accuracy:.3f}")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
curves(simulated, x="epoch", metrics=("accuracy",), axes=[axes[0]])
curves(simulated, x="second", metrics=("accuracy",), axes=[axes[1]])
per_epoch = {name: float(np.mean(r.epoch_curve("accuracy"))) for name, r in simulated.items()}  # mean over epochs
print("mean accuracy per epoch:", {name: round(a, 3) for name, a in per_epoch.items()})
print(
    f"scaling lambda lifts sync by {per_epoch['sync, lambda x 8'] - per_epoch['sync']:+.3f} per epoch; "
    f"async is then {per_epoch['async'] - per_epoch['sync, lambda x 8']:+.3f} from it; "
    f"async's mean staleness sigma = {np.mean(simulated['async'].staleness):.1f}"
);
""")

md("""
Left: accuracy against epochs, the lecture's "accuracy per epoch" chart. Every gradient is fresh in the synchronous run, but its server averages the $N = 8$ gradients of a round into *one* step, so with the same $\\lambda$ it takes eight times fewer steps per epoch than the asynchronous server, which applies each (possibly stale: the printed mean $\\sigma$) gradient as it arrives. Scaling $\\lambda$ with the global batch (printed above) lifts synchronous SGD clearly, yet on this short run the asynchronous server still matches or leads it per epoch (with this seed; over seeds 0 to 4 it leads on four and trails by 0.07 on one): fresh gradients are not automatically better per epoch; the step size matters as much. Right: the same runs against virtual seconds; the synchronous runs need about twice as long for their two epochs, because every round waits for its slowest worker, and stragglers are common among eight. The lecture's point is that the criterion decides: examples per second, accuracy per epoch and accuracy per second can each crown a different strategy.
""")

code("""
\"\"\"Checks the simulated runs: async is faster per second; scaled lambda lifts sync per epoch, and async still is not behind it.\"\"\"
assert simulated["async"].examples_per_s > 1.5 * simulated["sync"].examples_per_s
assert per_epoch["sync"] < per_epoch["async"], per_epoch  # cell 8's claim: same lambda, async ahead per epoch
assert per_epoch["sync, lambda x 8"] > per_epoch["sync"] + 0.05, per_epoch
assert per_epoch["async"] > per_epoch["sync, lambda x 8"] - 0.03, per_epoch
""")

md("""
### Choosing an approach, as a panel

The same choice for machines you do not have. The panel takes the model's size, $N$, the bandwidth of one link and the chance that a step straggles, and draws the training examples per second of one device, synchronous all-reduce, an asynchronous parameter server (one server, or sharded over $N$), and decentralized 1-bit peers; the dark bar is its choice, and the line above the figure says why. The numbers come from a small cost model of **ours**, written out in `dlcourse.viz.approach` (compute of about 6 operations per parameter and example, the ring all-reduce after the slowest worker, one server link carrying every push and pull, 1-bit messages 200 times below dense). It asks an asynchronous approach for twice sync's examples per second before it gives up fresh gradients, since staleness costs accuracy per epoch; and a model whose training state does not fit a device gets model parallelism.

**Predict.** Start at the lecture's CNN (about $10^6$ parameters) with $N = 8$: which approach wins, and why? Now raise the parameters to $10^8$ and the link to $10^{10}$ bytes/s, then move the straggler chance from 0 to 0.3. When does synchronous SGD lose its place?
""")

code("""
from dlcourse.viz import ApproachExplorer, choose_approach

approach_panel = ApproachExplorer(params=1.1e6, num_workers=8, bandwidth=1.25e9, straggler=0.1)
approach_panel
""")

md("""
For the small CNN synchronous SGD's all-reduce moves the whole model every step, far longer than the little compute: the ratio of transfers to computation is high, the lecture's warning about small networks, and only updates that move 200 times fewer bytes pay off. A model of $10^8$ parameters on a fast link ($10^{10}$ bytes/s) flips the choice to synchronous SGD, until a straggler chance of 0.1 makes every round of eight wait for its last executor. Past about five billion parameters (16 bytes each, an 80 GB device) the training state no longer fits and the answer is a split model. The cell below checks these four sentences against the cost model.
""")

code("""
\"\"\"Checks the sentences above against the panel's cost model: small CNN, big model calm and with stragglers, too big to fit.\"\"\"
assert choose_approach(1.1e6, 8, 1.25e9, 0.1)[0] == "decentralized 1-bit"
assert choose_approach(1e8, 8, 1e10, 0.0)[0] == "sync all-reduce"
assert "stragglers" in choose_approach(1e8, 8, 1e10, 0.1)[1]
assert choose_approach(6e9, 8, 1e10, 0.0)[0] == "model parallelism + data parallelism"
""")

md("""
## 2. The lecture's Keras multi-GPU example, as PyTorch DDP

The lecture builds its CNN (two convolutions, two max-pools, a dense layer of 1,024 units, ten outputs) under `tf.device('/cpu:0')`, wraps it with `multi_gpu_model(model, gpus=2)`, and trains with `fit(x_train, y_train, epochs=5, batch_size=100)`. Keras splits each batch of 100 into two halves, one per GPU, and merges the results. In PyTorch the same is two processes running `DistributedDataParallel`, each taking 50 of the 100 examples; here both run on the CPU (with two GPUs and NCCL, each would take its own GPU and nothing else changes). The lecture's slide shows `fit` and `evaluate` but not the `compile` line, so the optimizer is **our** choice: Adam with $\\lambda = 10^{-3}$, a common default for this network (not the lecture's). Two epochs instead of five, to stay quick.

**Predict.** Two processes each see half of every batch of 100. Will the test accuracy after two epochs be closer to 0.8, 0.9 or 0.98?
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

**Predict.** After one epoch, how far apart will the CPU-hosted, twice-replicated model and the plain one be: about $10^{-1}$, $10^{-3}$ or rounding ($10^{-7}$)?
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
""")

md("""
Every step copies the whole model to every replica and every gradient back. With one Python thread driving all devices this is simple, but slow on many GPUs; PyTorch's `nn.DataParallel` worked the same way and was replaced by DDP, one process per device, which keeps a replica on each device and only exchanges gradients (Li et al., VLDB 2020). That is what section 2 ran.
""")

md("""
## 4. Device parallelism: a shared LSTM with a branch per device

The lecture's last Keras example encodes two sequences (140 steps of 256 features each) with *one* shared LSTM of 64 units, puts the first branch on one GPU and the second on another, and concatenates the two codes on the CPU. This is model parallelism by branches: it suits networks with parallel branches. `BranchParallelLSTM` runs each branch on its own device with the one set of shared weights; both branches' gradients add up in those weights, as if one device had run both.

**Predict.** The shared LSTM's weights get a gradient from each branch. On two devices, is the sum of the two the same as one device's gradient, up to rounding?
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
assert hybrid_gap < 1e-5, hybrid_gap
""")

md("""
Stage 0 of a replica talks to its own stage 1 (activations forward, gradients of those activations backward) and to stage 0 of the other replica (the all-reduce of its weight gradients). The lecture's figure puts the model split inside a machine and data parallelism between machines. Large-model training today refines that by what each form sends: **tensor parallelism** (each layer's matrices split over devices, lesson 08) needs an all-reduce inside every layer, forward and backward, so it stays **inside a node** on the fastest links; **pipeline stages** exchange only the activations at their boundaries, once per micro-batch, so they may **cross nodes**; **data parallelism** all-reduces gradients once per step and spans the rest (Narayanan et al., SC 2021, "Megatron-LM" on GPU clusters).
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
workers = []  # the ranks: children of this kernel (spawn), or of the forkserver they are forked from
for child in psutil.Process().children():
    command = " ".join(child.cmdline())
    workers += [child] if "spawn_main" in command else child.children() if "forkserver" in command else []
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
The dead worker took the whole synchronous job down with it: its partner would otherwise wait forever inside the next all-reduce (the launcher noticed and stopped everything). Nothing after the last checkpoint was kept, and nothing before it was lost; the resumed run ends where the uninterrupted one did.

So which data parallelism has the "good fault tolerance" of the lecture's comparison (lesson 02)? Not the synchronous form: every step needs every worker's gradient, so one lost worker stops all until a restart from a checkpoint. The **asynchronous parameter server** does: the server applies whatever updates arrive, so a lost worker only means fewer updates per second (and its shard goes unvisited until it returns); the other workers never wait for it. The server itself remains a single point of failure, which is why real systems replicate its state (Li et al., OSDI 2014). Model parallelism has neither property: every stage holds a part of the only model.
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

**Predict.** Going from this laptop to two machines with four GPUs each, which of these change: the training loop, the backend, N, the global batch per rank, the checkpoints' format?

**What changes:** who starts the processes (`dlcourse` or `torchrun`), the rendezvous (a private file store, localhost, or a c10d endpoint on one machine), the backend that `auto` picks (gloo on CPUs, NCCL when every rank has a GPU), the device each rank computes on (`cuda:<local rank>`), and N (`--workers`, or `nnodes x nproc-per-node`). **What stays:** the training code, the shards and mini-batches (so the same settings give the same numbers), the global batch size split evenly over the N ranks, and the checkpoints (on a cluster, put them on a shared file system). After a preemption, submit the same job with `--resume`.
""")

code("""
from dlcourse.launcher import device_for, resolve_backend, under_torchrun

print("started by torchrun here?", under_torchrun())
print("backend 'auto' picks for 2 ranks:", resolve_backend("auto", 2))
print("rank 0 computes on:", device_for(0), "| GPUs visible:", torch.cuda.device_count())
""")

md("""
## 8. Parallel inference: replicas that serve, and a model split

The lecture's opening slide says that different aspects of *training and inference* can be modified to increase concurrency. Inference has the same two forms as training, without any gradient to synchronize. **Data-parallel serving**: every replica holds a full copy of the trained model and answers its share of the requests; replicas never talk to each other, so adding one adds throughput, and losing one loses only its share. **Model-parallel inference**: a model too large for one device is split into stages, as in lesson 02, and a request flows through them; with a stream of requests the stages work on different requests at once, like a pipeline. Below, the CNN of section 2 serves 400 test digits from two real processes, each answering every second request, and then from a model split in two stages.

**Predict.** Will the two serving replicas and the split model give the same answers as the one model? Where could they differ at all?
""")

code("""
import copy

from dlcourse.launcher import launch
from dlcourse.model_parallel import ModelParallel


def serve_replica(rank, world_size, state, requests):
    \"\"\"One serving replica: a full copy of the model answers every world_size-th request.\"\"\"
    replica = make_model("cnn")
    replica.load_state_dict(state)
    replica.eval()
    with torch.no_grad():
        return replica(requests[rank::world_size]).argmax(1)


requests = test.X[:400]
answers = launch(serve_replica, 2, cnn_run.parameters, requests, threads_per_worker=1)
served = torch.empty(len(requests), dtype=torch.long)
for rank, part in enumerate(answers):
    served[rank::2] = part  # put each replica's answers back in request order
with torch.no_grad():
    one_model = cnn(requests).argmax(1)
    split_model = ModelParallel(copy.deepcopy(cnn), ["cpu", "cpu"])  # with two GPUs: ["cuda:0", "cuda:1"]
    split_answers = split_model(requests).argmax(1)
print(split_model)
print(f"served by 2 replicas: {int((served == one_model).sum())} of {len(requests)} answers as one model's; "
      f"split in 2 stages: {int((split_answers == one_model).sum())}; accuracy {float((served == test.y[:400]).float().mean()):.3f}")
""")

code("""
\"\"\"Checks that two serving replicas and a two-stage split answer the 400 requests as the one model does.\"\"\"
assert float((served == one_model).float().mean()) > 0.995, (served != one_model).sum()
assert float((split_answers == one_model).float().mean()) > 0.995, (split_answers != one_model).sum()
""")

md("""
The answers agree: serving needs no synchronization at all, which is why data-parallel serving scales as far as there are requests. (They could differ only by rounding: a convolution over a batch of 200 may add in another order than over 400.) Speed is not shown here, since both processes share this machine's cores; on real servers each replica has its own device.

## 9. Tuning is harder at scale

The lecture warns that setup and hyperparameter tuning can be more complex in distributed systems. One reason is that a tuned value does not carry over when $N$ changes. The simulator sweeps $\\lambda$ for one worker, for eight synchronous workers (one step per round of eight gradients) and for eight asynchronous ones (stale gradients, $\\sigma \\approx 7$), one epoch each on the same data.

**Predict.** Take the $\\lambda$ that is best for one worker. Is it still good for eight synchronous workers? For eight asynchronous ones?
""")

code("""
from dlcourse.divergence import Diverged

lrs = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
setups = {"N = 1": ("sync", 1), "N = 8, sync": ("sync", 8), "N = 8, async": ("async", 8)}
tuning = {}
for label, (policy, n) in setups.items():
    tuning[label] = []
    for lr in lrs:
        try:
            run = simulate(SimConfig(policy=policy, num_workers=n, model="mlp", epochs=1, batch_size=50, lr=lr), same_data)
            tuning[label].append(run.test.accuracy)
        except Diverged:  # the loss blew up: no accuracy to report
            tuning[label].append(float("nan"))
best_lr = {label: lrs[int(np.nanargmax(acc))] for label, acc in tuning.items()}
for label, acc in tuning.items():
    print(f"{label:>13}: best lambda {best_lr[label]}, accuracy", [round(a, 3) for a in acc])

fig, ax = plt.subplots(figsize=(6, 3.4))
for label, acc in tuning.items():
    ax.plot(lrs, acc, "o-", label=label)
ax.set(xscale="log", xlabel="learning rate lambda", ylabel="test accuracy after 1 epoch", title="the same sweep at N = 1 and N = 8")
ax.legend(fontsize="small")
fig.tight_layout()
""")

code("""
\"\"\"Checks that the lambda best at N = 1 is not best asynchronously at N = 8, where it loses >= 0.1 accuracy and larger ones diverge.\"\"\"
async8, single = tuning["N = 8, async"], tuning["N = 1"]
assert best_lr["N = 8, async"] < best_lr["N = 1"], best_lr
at_single_best = np.nan_to_num(async8[lrs.index(best_lr["N = 1"])])
assert at_single_best < np.nanmax(async8) - 0.1, (at_single_best, async8)
assert any(np.isnan(a) and s > 0.5 for a, s in zip(async8, single)), (async8, single)
""")

md("""
Asynchronous workers want a *smaller* $\\lambda$: eight stale gradients land on the model in the time one fresh one would, and the largest rates that train one worker well blow up. Synchronous workers take one step per eight gradients and can take a larger one. So every change of $N$ means a new sweep, each point of which costs a distributed run; the staleness-aware $\\lambda_n$ of lesson 05 and the linear scaling of section 1 are ways to carry a tuned value over rather than search again.
""")

md("""
## What this lesson showed

Choosing an approach means fixing the criterion first (lesson 00's map names the choices). On the same data the synchronous strategies (sync SGD, DDP) are one algorithm with one traffic bill, averaging every $H$ steps divides that bill by about $H$, a parameter server moves gradients up and parameters down, and compressed decentralized updates cut bytes by orders of magnitude. Per epoch, at the same $\\lambda$, the asynchronous server led the synchronous one; scaling $\\lambda$ with the global batch lifted synchronous SGD but did not put it ahead on this short run; per second the asynchronous runs win when machines straggle. The lecture's Keras example is two lines of DDP in PyTorch, but its F1 metric measured the mean probability of the true class, not F1. Hosting weights on the CPU and running branches on separate devices are single-process forms of data and model parallelism; hybrid runs combine both (tensor parallelism inside a node, pipeline stages and data parallelism across). Synchronous jobs stop when a worker dies and resume from checkpoints; the asynchronous parameter server is the fault-tolerant form. Inference parallelizes the same two ways, without synchronization. A tuned $\\lambda$ does not carry over to another $N$. `torchrun` takes the same code from a laptop to a cluster with only the launcher's settings changing.
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
- P. Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017 (lambda scaled with the global batch).
- D. Narayanan et al., "Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", SC 2021 (tensor parallelism inside a node, pipelines across).
- PyTorch documentation, "torchrun (Elastic Launch)" and "Distributed checkpointing"; C. J. Van Rijsbergen, *Information Retrieval*, 1979 (the F-measure).
""")

write("07_in_practice.ipynb", cells)
