# ruff: noqa: E501  (markdown paragraphs stay one line each, so the notebook reflows them)
"""Builds lessons/08_sharding_and_memory.ipynb (committed without outputs): run it from the repository root.

    .venv/bin/python lessons/build/08_sharding_and_memory.py

Edit this file, not the notebook: the notebook is generated from it.
"""

from __future__ import annotations

from lesson import Cells, write

cells = Cells()
md, code = cells.md, cells.code


md("""
# 08 · Sharding and memory: fitting a model that does not fit

The lecture stops at parameter servers, asynchronous SGD and compressed updates. It never asks the question every large model raises first: **does it fit?** A 7-billion-parameter model trained with Adam in mixed precision needs 112 GB for its training state alone, before a single activation, and the largest accelerators hold 80 GB. Every approach so far (lesson 00's [map of approaches](00_start_here.ipynb#The-map-of-approaches)) keeps a whole copy of that state on every worker, so adding workers does not help.

**After this lesson you will be able to** predict, to the byte, what a training process holds (parameters, gradients, optimizer state, activations) and check it on a real run; explain what ZeRO stages 1, 2 and 3 shard and what each costs in communication; split an MLP's layers over devices (tensor parallelism) and say why that stays inside one node; trade memory for time with recomputation and bf16; and plan a layout for a model that does not fit on one device.

**Notation** (lesson 00's, plus one letter): **N** data-parallel workers, **K** pipeline stages, **M** micro-batches per mini-batch, **λ** the learning rate, and **T** the tensor-parallel degree (devices that split each layer). A layout uses N × T × K devices. The ZeRO paper calls the optimizer's bytes per parameter "K"; since K is our pipeline stages, we write it **k_opt** here.
""")

md("""
## 1. Where the memory goes

Training a model keeps four kinds of tensors alive on each device:

- **parameters** W, one number per weight;
- **gradients** ΔW, one per weight, from backward until the update;
- **optimizer state**: nothing for plain SGD, one buffer for momentum, two for Adam (its first and second moments); in mixed precision also an fp32 master copy of the weights. These are the paper's k_opt bytes per parameter;
- **activations**: the tensors the forward pass saves for the backward pass (a layer's input, a ReLU's output, a max-pool's indices), which grow with the batch.

The first three are `dlcourse.memory`'s formulas: in fp32 with Adam, 4 + 4 + 8 = 16 bytes per parameter. The activations follow the layers one by one. We predict all four for the MLP (784 → 64 → 10) and the lecture's CNN, with Adam and a batch of 100, then run one training step of each and measure what it really holds: the storages of its tensors (`memory.state_bytes`) and every tensor autograd saves for backward (`memory.SavedActivations`), not the process's resident memory, which is noisy and includes the runtime itself.
""")

md("""
**Predict.** Which kind dominates for the MLP, and which for the CNN? (The CNN has about 22 times as many parameters, but its first convolution's output is 32 × 24 × 24 numbers per image.)
""")

code("""
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

from dlcourse import memory
from dlcourse.data import load_mnist
from dlcourse.models import make_model
from dlcourse.train import make_optimizer

split = load_mnist()
# clone: a slice is a view of all 4,000 images, and autograd would hold that whole storage
X, y = split.train.X[:100].clone(), split.train.y[:100].clone()
KINDS = ["parameters", "gradients", "optimizer", "activations"]

measured, predicted = {}, {}
for kind in ("mlp", "cnn"):
    model = make_model(kind, seed=0)
    optimizer = make_optimizer("adam", model.parameters(), 1e-3, 0.9)
    with memory.SavedActivations(model) as saved:
        loss = F.cross_entropy(model(X), y)
    loss.backward()
    optimizer.step()  # Adam's moments exist from the first step on
    held = memory.state_bytes(model, optimizer)
    measured[kind] = memory.MemoryBreakdown(held.parameters, held.gradients, held.optimizer, saved.peak)
    layout = memory.Layout(model=model, optimizer="adam", precision="fp32", model_kind=kind, batch=100)
    predicted[kind] = memory.predict(layout)

rows = {}
for kind in ("mlp", "cnn"):
    for source, m in (("predicted", predicted[kind]), ("measured", measured[kind])):
        rows[(kind, source)] = {k: v / 1e6 for k, v in m.as_dict().items()}
table = pd.DataFrame(rows).T
print("MB per process (one step, Adam, batch 100)")
table.round(3)
""")

code("""
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
colors = {"parameters": "#4C72B0", "gradients": "#DD8452", "optimizer": "#55A868", "activations": "#8172B3"}
for ax, kind in zip(axes, ("mlp", "cnn")):
    bottom = [0.0, 0.0]
    for part in KINDS:
        heights = [getattr(predicted[kind], part) / 1e6, getattr(measured[kind], part) / 1e6]
        ax.bar(["predicted", "measured"], heights, bottom=bottom, color=colors[part], label=part)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set(title=f"{kind.upper()}: MB per process", ylabel="MB")
axes[1].legend(fontsize="small")
fig.tight_layout()
mlp_share = measured["mlp"].state / measured["mlp"].total
cnn_share = measured["cnn"].activations / measured["cnn"].total
display(Markdown(
    f"Measured: the MLP's parameters, gradients and Adam state are **{mlp_share:.0%}** of what it holds; "
    f"the CNN's activations alone are **{cnn_share:.0%}** of its total, with a batch of only 100."
))
""")

code("""
\"\"\"Checks the formulas against the step just run: state exact to the byte, activations within 5%.\"\"\"
for kind in ("mlp", "cnn"):
    p, m = predicted[kind], measured[kind]
    assert (p.parameters, p.gradients, p.optimizer) == (m.parameters, m.gradients, m.optimizer), kind
    assert abs(p.activations - m.activations) <= 0.05 * m.activations, (kind, p.activations, m.activations)
    params = sum(t.numel() for t in make_model(kind).parameters())
    assert m.state == 16 * params  # fp32 Adam: 4 + 4 + 8 bytes per parameter
""")

md("""
The bars agree because the formulas count the same storages the measurement finds: every parameter tensor once, its gradient once, and Adam's two moments (the scalar step counters are left out, as the ZeRO paper does). The activations are an estimate that follows the layers (a Linear keeps its input, a ReLU its output, a max-pool its input and int64 indices of the maxima) and lands within a few per cent of what autograd really saves.

Now scale the first three up. In mixed precision (bf16 weights and gradients, fp32 master weights and Adam moments) a parameter costs 2 + 2 + 12 = 16 bytes: the ZeRO paper's arithmetic (Rajbhandari et al. 2020). For 7 billion parameters that is 112 GB per worker under plain data parallelism, more than an 80 GB device holds. Section 5's planner does this sum for any layout.
""")

md("""
## 2. ZeRO: shard the training state over the workers

Data parallelism keeps N identical copies of parameters, gradients and optimizer state. ZeRO (Rajbhandari et al. 2020) keeps one: each of the N workers *owns* 1/N of a flat vector of the parameters.

- **Stage 1** shards the optimizer state. After backward the gradients are *reduce-scattered* (worker n receives the sum of chunk n only), each worker updates its own chunk, and an *all-gather* gives everyone the new parameters. A ring all-reduce is exactly a reduce-scatter followed by an all-gather, so this sends the same bytes as data parallelism.
- **Stage 2** also shards the gradients: each layer's gradient is reduce-scattered as soon as backward produced it, and the full gradient is dropped.
- **Stage 3** also shards the parameters: a layer's parameters are all-gathered just before its forward, freed after it, gathered again for its backward. Two all-gathers and a reduce-scatter: 1.5 times data parallelism's bytes.

We run all three on real processes, N = 2 and N = 4, the MLP with Adam, 3 steps on a global mini-batch of 100, next to plain data parallelism (PyTorch's DDP) on the same batches, all in one launch per N. Every byte our ring collectives send goes through `torch.distributed.isend`; the function below counts them on each worker.
""")

md("""
**Predict.** At N = 4, what fraction of DDP's per-worker bytes does each stage hold? Which stage sends the most?
""")

code("""
import torch.distributed as dist

from dlcourse.averaging import parameter_distance
from dlcourse.collectives import fit_alpha_beta, ring_allreduce_bytes
from dlcourse.data_parallel import ddp_worker
from dlcourse.launcher import launch
from dlcourse.sharding import shard_layout, step_bytes, unit_sizes, zero_worker
from dlcourse.worker_run import DataParallelConfig, collect


def runs_with_bytes_sent(rank, world_size, train, test, runs):
    \"\"\"Each (name, worker, config) in turn on this worker, with the bytes its isend calls carried.\"\"\"
    sent, real_isend = [0], dist.isend

    def counting_isend(tensor, *args, **kwargs):
        sent[0] += tensor.numel() * tensor.element_size()
        return real_isend(tensor, *args, **kwargs)

    dist.isend = counting_isend
    out = {}
    try:
        for name, worker, config, kwargs in runs:
            sent[0] = 0
            out[name] = {**worker(rank, world_size, train, test, config, None, **kwargs), "wire": sent[0]}
    finally:
        dist.isend = real_isend
    return out


STEPS = 3
zero_train = split.train[:400]
cfg = DataParallelConfig(model="mlp", batch_size=100, lr=1e-3, optimizer="adam", max_steps=STEPS)
plan_of_runs = [("DDP", ddp_worker, cfg, {})] + [
    (f"ZeRO-{s}", zero_worker, cfg, {"stage": s}) for s in (1, 2, 3)
]
zero, wire = {}, {}
for n in (2, 4):
    outputs = launch(runs_with_bytes_sent, n, zero_train, None, plan_of_runs, threads_per_worker=1, run_timeout=300)
    for name, *_ in plan_of_runs:
        zero[name, n] = collect(name, [o[name] for o in outputs])
        wire[name, n] = sum(o[name]["wire"] for o in outputs)

mlp = make_model("mlp")
P = sum(t.numel() for t in mlp.parameters())
rows = {}
for (name, n), r in zero.items():
    if name == "DDP":
        held = measured["mlp"]  # a DDP worker holds what one process holds (section 1)
        state = {k: getattr(held, k) for k in ("parameters", "gradients", "optimizer")}
    else:
        state = {k: r.extra["memory"][0][k] for k in ("parameters", "gradients", "optimizer")}
    rows[(name, n)] = {**{k: v / 1e3 for k, v in state.items()}, "bytes per parameter": sum(state.values()) / P}
held_table = pd.DataFrame(rows).T
print("KB held by worker 0 after training (measured), and bytes per parameter of the model")
held_table.round(2)
""")

code("""
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), sharey=True)
names = ["DDP", "ZeRO-1", "ZeRO-2", "ZeRO-3"]
for ax, n in zip(axes, (2, 4)):
    bottom = [0.0] * len(names)
    for part in ("parameters", "gradients", "optimizer"):
        heights = [held_table.loc[(name, n), part] for name in names]
        ax.bar(names, heights, bottom=bottom, color=colors[part], label=part)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set(title=f"N = {n}: KB held per worker (measured)", ylabel="KB")
axes[0].legend(fontsize="small")
fig.tight_layout()
""")

code("""
\"\"\"Checks every worker's measured bytes against the formula, the 1/N fall, and that ZeRO trains like DDP.\"\"\"
for (name, n), r in zero.items():
    if name == "DDP":
        continue
    stage = r.extra["stage"]
    layout = memory.Layout(model=mlp, num_workers=n, zero_stage=stage, optimizer="adam",
                           units=tuple(unit_sizes(mlp, stage)))
    formula = memory.predict(layout)
    for rank, held in enumerate(r.extra["memory"]):
        assert (held["parameters"], held["gradients"], held["optimizer"]) == (
            formula.parameters, formula.gradients, formula.optimizer), (name, n, rank)
    # the same updates as plain data parallelism on the same batches (float32 rounding only)
    assert parameter_distance(r.parameters, zero["DDP", n].parameters) < 1e-5, (name, n)
# the sharded parts fall as 1/N: exactly, up to the padding of each unit to a multiple of N
for name, stage, part, copies in (("ZeRO-1", 1, "optimizer", 2), ("ZeRO-2", 2, "gradients", 1), ("ZeRO-3", 3, "parameters", 1)):
    units = unit_sizes(mlp, stage)
    shard = {n: sum(shard_layout(u, n)[0] for u in units) for n in (2, 4)}  # ceil(u / N) of each unit
    at = {n: zero[name, n].extra["memory"][0][part] for n in (2, 4)}
    assert at == {n: 4 * copies * shard[n] for n in (2, 4)}, (name, at)  # Adam: 2 moments per element
    assert at[4] < at[2] and 2 * at[4] - at[2] <= 4 * copies * len(units), (name, at)  # half, up to padding
# unsharded parts stay whole: ZeRO-1 holds every parameter and gradient
assert zero["ZeRO-1", 4].extra["memory"][0]["parameters"] >= 4 * P
""")

md("""
The bars fall exactly as the paper says: stage 1 cuts only the optimizer state (Adam's two moments, the green part) by N; stage 2 the gradients too; stage 3 everything, so that at N = 4 a worker holds about a quarter of what a DDP worker holds. The last few bytes of difference are padding: each flat unit is padded with zeros to a multiple of N, so that every worker owns a chunk of the same size. And the parameters after three steps equal DDP's: sharding changes *where* the state lives, never the arithmetic.

### What each stage sends, and what that costs

The price is in communication. We counted every byte that left a worker; below they are set against the formulas of `dlcourse.sharding.step_bytes`, and turned into seconds with an **alpha-beta model** (a message costs α seconds of latency plus bytes / β) fitted to collectives measured on this machine a moment ago.
""")

md("""
**Predict.** ZeRO-1 sends the same bytes as DDP. Will its predicted time per step be the same too?
""")

code("""
net = fit_alpha_beta(2, sizes=(4096, 65536, 1 << 20), repeats=3)
print("fitted on this machine:", net)


def predicted_seconds(name, n):
    \"\"\"The alpha-beta model's communication seconds of one step (each unit is its own collective).\"\"\"
    if name == "DDP":
        return net.time("all_reduce", 4 * P, n)
    stage = int(name[-1])
    gathers = 2 if stage == 3 else 1
    return sum(
        net.time("reduce_scatter", 4 * shard_layout(u, n)[1], n) + gathers * net.time("all_gather", 4 * shard_layout(u, n)[1], n)
        for u in unit_sizes(mlp, stage)
    )


comm_rows = {}
for (name, n), r in zero.items():
    if name == "DDP":
        per_step = ring_allreduce_bytes(4 * P, n)  # gloo's all-reduce inside DDP: the ring formula
    else:
        final = (n - 1) * 4 * sum(shard_layout(u, n)[1] for u in unit_sizes(mlp, 3)) if name == "ZeRO-3" else 0
        per_step = (wire[name, n] - final) / STEPS  # stage 3 gathers once more after training
    comm_rows[(name, n)] = {
        "KB sent per step (all workers)": per_step / 1e3,
        "vs DDP": per_step / ring_allreduce_bytes(4 * P, n),
        "predicted ms per step": predicted_seconds(name, n) * 1e3,
        "measured ms per step": r.per_worker[0]["step_s"] * 1e3,
    }
comm_table = pd.DataFrame(comm_rows).T
comm_table.round(3)
""")

code("""
\"\"\"Checks the bytes counted at isend: the formula exactly; ZeRO-1 and 2 send DDP's bytes, ZeRO-3 half as much again.\"\"\"
for name, n in zero:
    if name == "DDP":
        continue
    stage = int(name[-1])
    formula = STEPS * step_bytes(unit_sizes(mlp, stage), n, stage)
    final = (n - 1) * 4 * sum(shard_layout(u, n)[1] for u in unit_sizes(mlp, 3)) if stage == 3 else 0
    assert wire[name, n] == formula + final, (name, n, wire[name, n], formula)
    ratio = comm_table.loc[(name, n), "vs DDP"]
    assert abs(ratio - (1.5 if stage == 3 else 1.0)) < 1e-3, (name, n, ratio)
""")

md("""
Same bytes need not mean the same time. DDP all-reduces the gradients in one collective; our ZeRO-2 and ZeRO-3 run one reduce-scatter and one or two all-gathers *per layer*, and every collective on a ring pays its (N − 1) latencies α again. For a small model on a laptop the latencies dominate; for a large model on a fast network, bandwidth does, and the bytes ratio (1, 1, 1.5) is what you pay. The measured times in the last column include the compute and every other rank sharing two cores: read them as this machine's, not as a law.
""")

md("""
## 3. Tensor parallelism: split the layers, not the data

ZeRO-3 still runs every layer whole on every worker; it only stores it in pieces. **Tensor parallelism** (Megatron-LM, Shoeybi et al. 2019) splits the arithmetic of a layer. For an MLP block Y = ReLU(X A) B on T devices:

- the first matrix A is split by **columns**: device t computes ReLU(X A_t), its share of the hidden units, from the whole input, with no communication (ReLU acts element by element);
- the second matrix B is split by **rows**: device t computes ReLU(X A_t) B_t, a partial sum of the output, and **one all-reduce** adds the T partial sums. Backward needs one all-reduce too (of the input's gradient), when the input needs a gradient.

Every device sees the *same* batch: what is split is the layer. We train the MLP split over T = 2 processes for 3 steps and compare it with one process training the dense MLP on the same batches.
""")

md("""
**Predict.** How many bytes does one step all-reduce for the MLP at batch 100? Will the split model's losses differ from the dense model's?
""")

code("""
from dlcourse.tensor_parallel import TensorParallelConfig, mlp_block_bytes, tp_parameters_per_rank, train_tensor_parallel
from dlcourse.worker_run import worker_batches

tp_train = split.train[:400]
tp_cfg = TensorParallelConfig(model="mlp", batch_size=100, lr=0.1, optimizer="sgd", max_steps=STEPS)
tp_run = train_tensor_parallel(tp_train, 2, tp_cfg, threads_per_worker=1, run_timeout=300)

# one process, the dense MLP, the same batches (worker 0's order of the whole data, as every TP worker uses)
dense = make_model("mlp", seed=0)
dense_optimizer = make_optimizer("sgd", dense.parameters(), 0.1, 0.9)
order = worker_batches(len(tp_train), len(tp_train) // 100, 0, 0, 0)
dense_losses = []
for t in range(STEPS):
    loss = F.cross_entropy(dense(tp_train.X[order[t]]), tp_train.y[order[t]])
    dense_optimizer.zero_grad()
    loss.backward()
    dense_optimizer.step()
    dense_losses.append(loss.item())

per_rank = tp_run.extra["per_rank"]
block = mlp_block_bytes(100, 784, 10, 2, input_grad=False)  # the MLP's input is the pixels: no gradient
print(pd.DataFrame({"T = 2 (split)": tp_run.step_loss, "dense, one process": dense_losses}, index=range(1, STEPS + 1)))
print(f"parameters per worker: {per_rank[0]['parameter_count']:,} of the dense model's {P:,}")
print(f"bytes all-reduced per step, measured: {per_rank[0]['allreduced_bytes']['forward'] / STEPS:,.0f} forward, "
      f"{per_rank[0]['allreduced_bytes']['backward'] / STEPS:,.0f} backward; formula: {block['forward']:,} and {block['backward']:,}")
""")

code("""
\"\"\"Checks the split MLP against the dense one: same losses and parameters; one all-reduce of batch x 10 per step.\"\"\"
assert max(abs(a - b) for a, b in zip(tp_run.step_loss, dense_losses)) < 1e-5, (tp_run.step_loss, dense_losses)
assert parameter_distance(tp_run.parameters, dense.state_dict()) < 1e-5
for rank in per_rank:
    assert rank["parameter_count"] == tp_parameters_per_rank(mlp, 2) < P
    assert rank["allreduced_bytes"] == {"forward": STEPS * block["forward"], "backward": 0}
""")

md("""
The split model's losses are the dense model's, step for step, and so are its parameters after training: the column and row split compute the same sums in a different order. Each worker holds half of the block's two weight matrices. The all-reduce carries activations, not parameters: batch × 10 numbers after the second layer (the MLP's input needs no gradient, so backward sends nothing).

### Why tensor parallelism stays inside a node

Data parallelism (and ZeRO) sends the parameters' and gradients' bytes once per step, whatever the batch, and can overlap them with backward. Tensor parallelism sends *activations*, inside every layer's forward and backward, and the next layer waits for them: for a transformer four all-reduces per layer (two forward, two backward) of seq_len × batch × width numbers, which grow with the batch. Take a 7B GPT-like model (32 layers, width 4096, sequences of 1,024 tokens) on 8 devices, mixed precision, and one step of the same 64 sequences: ZeRO-3 with N = 8 (8 sequences per replica) against tensor parallelism with T = 8 (one replica of 64). The planner's formulas give the bytes and the seconds, once on a node's fast links and once on a network between nodes.
""")

md("""
**Predict.** Which layout moves more bytes per device per step? Over the slow network, whose step suffers more?
""")

code("""
from dlcourse.collectives import AlphaBeta, allreduce_bytes_per_rank

links = {
    "inside a node (NVLink-class, 300 GB/s)": AlphaBeta(alpha_s=5e-6, beta_bytes_per_s=300e9),
    "between nodes (25 GB/s)": AlphaBeta(alpha_s=2e-5, beta_bytes_per_s=25e9),
}
gpt = dict(num_params=7e9, precision="mixed", model_kind="gpt", seq_len=1024, d_model=4096, layers=32)
layouts = {"ZeRO-3, N = 8": dict(num_workers=8, zero_stage=3, batch=8), "tensor T = 8": dict(tp=8, batch=64)}
sent_per_device = {  # bytes one device sends per step: ZeRO-3 1.5 all-reduces of the bf16 gradients ...
    "ZeRO-3, N = 8": 1.5 * allreduce_bytes_per_rank(2 * 7e9, 8),
    # ... tensor parallelism four all-reduces of (tokens x width) bf16 activations per layer
    "tensor T = 8": 32 * 4 * allreduce_bytes_per_rank(64 * 1024 * 4096 * 2, 8),
}
tp_rows = {}
for link, ab in links.items():
    for name, extra in layouts.items():
        p = memory.plan(memory.Layout(**gpt, **extra), alpha_beta=ab, device_flops=4e14)
        tp_rows[(link, name)] = {
            "GB sent per device": sent_per_device[name] / 1e9,
            "compute s": p.compute_s,
            "communication s": p.communication_s,
            "communication share": p.communication_s / p.step_s,
        }
tp_table = pd.DataFrame(tp_rows).T
tp_table.round(3)
""")

code("""
\"\"\"Checks the planner's verdict: for the same 64 sequences, T = 8 moves more bytes and waits longer than ZeRO-3 across nodes.\"\"\"
fast, slow = list(links)
tp_bytes_ratio = sent_per_device["tensor T = 8"] / sent_per_device["ZeRO-3, N = 8"]
assert tp_bytes_ratio > 1
assert tp_table.loc[(slow, "tensor T = 8"), "communication s"] > tp_table.loc[(slow, "ZeRO-3, N = 8"), "communication s"]
assert tp_table.loc[(slow, "tensor T = 8"), "communication share"] > tp_table.loc[(fast, "tensor T = 8"), "communication share"]
assert tp_table.loc[(fast, "tensor T = 8"), "compute s"] == tp_table.loc[(fast, "ZeRO-3, N = 8"), "compute s"]
display(Markdown(f"Tensor parallelism sends **{tp_bytes_ratio:.1f}x** ZeRO-3's bytes per device for the same step."))
""")

md("""
The compute is the same (the same 64 sequences on 8 devices). The bytes are not: tensor parallelism all-reduces activations in every layer, and their size grows with the tokens per step, while ZeRO-3 moves the parameters and gradients, a fixed amount per step that real systems prefetch and overlap with compute. Inside a node the links are fast enough that tensor parallelism's share of the step stays moderate; between nodes it dominates. That is why Megatron-LM keeps T within the 8 GPUs of one server and uses data (or ZeRO) and pipeline parallelism across servers. (On the MLP above the opposite held: a batch × 10 output is tiny next to 50,890 gradients. Tensor parallelism pays when layers are wide and batches of tokens small relative to the weights.)
""")

md("""
## 4. Recomputation and precision: trade time or bits for memory

Two more levers, both inside one device.

**Recomputation** (Chen et al. 2016): keep only the inputs of a few *segments* of the network, and during backward run each segment's forward again to rebuild its activations. Memory held between forward and backward falls; the step does an extra forward. We cut the lecture's CNN into 2 segments and measure the saved bytes (`SavedActivations`) and the time of a training step, median of 5.

**Precision** (Micikevicius et al. 2018): compute in bfloat16 (2 bytes) but keep fp32 master weights for the update, because a small update vanishes when added to a bf16 weight.
""")

md("""
**Predict.** How much of the CNN's activation memory does recomputation with 2 segments save, and how much longer will a step take: 10%, 30%, 100%?
""")

code("""
import statistics

from dlcourse.precision import MixedPrecision
from dlcourse.recompute import activation_bytes, recompute_segments

cnn = make_model("cnn", seed=0)
recomputed = recompute_segments(make_model("cnn", seed=0), 2)
Xc, yc = X, y
plain_bytes, recomputed_bytes = activation_bytes(cnn, Xc, yc), activation_bytes(recomputed, Xc, yc)


def step_seconds(model, repeats=5):
    \"\"\"Median seconds of a forward and backward pass of model on the batch.\"\"\"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        F.cross_entropy(model(Xc), yc).backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


plain_s, recomputed_s = step_seconds(cnn), step_seconds(recomputed)
held_formula = memory.activation_parts("cnn", 100, recompute=True, segments=2)
display(Markdown(
    f"Held between forward and backward: **{plain_bytes.held / 1e6:.2f} MB** plain, "
    f"**{recomputed_bytes.held / 1e6:.2f} MB** with 2 recomputed segments "
    f"({1 - recomputed_bytes.held / plain_bytes.held:.0%} less); the peak of the step, with one segment rebuilt: "
    f"{recomputed_bytes.peak / 1e6:.2f} MB. A step took **{recomputed_s / plain_s:.2f}x** as long "
    f"({plain_s * 1e3:.0f} ms vs {recomputed_s * 1e3:.0f} ms, median of 5, this machine)."
))
""")

code("""
\"\"\"Checks that recomputation held fewer activation bytes, as the formula predicts within 5%.\"\"\"
assert recomputed_bytes.held < 0.6 * plain_bytes.held, (recomputed_bytes, plain_bytes)
assert recomputed_bytes.peak <= plain_bytes.peak
assert abs(held_formula[0] - recomputed_bytes.held) <= 0.05 * recomputed_bytes.held, (held_formula, recomputed_bytes)
""")

code("""
mixed = MixedPrecision(make_model("mlp", seed=0), "adam", lr=1e-3)
mixed.step(X, y)
mixed_bytes = mixed.state_bytes()
fp32_bytes = measured["mlp"]
per_param = {
    "fp32 Adam": {k: getattr(fp32_bytes, k) / P for k in ("parameters", "gradients", "optimizer")},
    "bf16 + fp32 master, Adam": {k: getattr(mixed_bytes, k) / P for k in ("parameters", "gradients", "optimizer")},
}
one = torch.tensor(1.0, dtype=torch.bfloat16)
lost = (one + torch.tensor(2.0**-9, dtype=torch.bfloat16)).item()
print(f"in bfloat16, 1 + 2^-9 = {lost}: an update that small is lost on a bf16 weight, kept on the fp32 master")
pd.DataFrame(per_param).T
""")

code("""
\"\"\"Checks the bf16 run's bytes: 2 + 2 + 12 per parameter, as memory predicts for mixed precision.\"\"\"
layout = memory.Layout(model=make_model("mlp"), optimizer="adam", precision="mixed")
formula = memory.predict(layout)
assert (mixed_bytes.parameters, mixed_bytes.gradients, mixed_bytes.optimizer) == (
    formula.parameters, formula.gradients, formula.optimizer)
assert mixed_bytes.state == 16 * P == fp32_bytes.state
assert lost == 1.0
""")

md("""
Mixed precision does *not* shrink Adam's training state: 2 + 2 + 12 is the same 16 bytes per parameter as fp32's 4 + 4 + 8. What it halves is the activations and the bytes every collective moves, and on accelerators it runs much faster. That is why the ZeRO paper's 16 bytes per parameter is the starting point of every memory plan, and why sharding the 12 bytes of optimizer state (stage 1) is the first thing ZeRO does.
""")

md("""
## 5. The planner: will it fit, and what will a step cost?

The panel below puts every lever of this lesson together: a model (a GPT-like shape of any size, the lecture's CNN, the MLP, or just a parameter count), the devices (N × T × K), data parallelism or ZeRO stage 1-3, tensor parallelism T, pipeline parallelism with K stages, M micro-batches and a GPipe or 1F1B schedule (lesson 02), recomputation and precision. It draws the memory per device as stacked bars, for all four data-parallel choices side by side (the chosen one outlined), against a dashed line at the device's memory, and the predicted time of one step split into compute and communication, with the network fitted on this machine in section 2. Every number is `dlcourse.memory.plan`, a formula: a change redraws at once.
""")

md("""
**Predict.** 7B parameters on 8 devices of 80 GB, mixed-precision Adam. Plain data parallelism does not fit. Which ZeRO stage is the first that fits the *training state*? And once activations are counted, which other lever do you need?
""")

code("""
from dlcourse.viz import MemoryPlanner

planner = MemoryPlanner(model="mlp", devices=2, precision="fp32", optimizer="adam", batch=50, alpha_beta=net, device_flops=1e10)
planner
""")

code("""
\"\"\"Checks the planner against every run of this lesson: ZeRO at N = 2 and 4, and section 1's single process.\"\"\"
for n in (2, 4):
    planner.batch.value = 100 // n
    planner.num_workers.value = n
    for stage in (1, 2, 3):
        held = zero[f"ZeRO-{stage}", n].extra["memory"]
        planned = planner.plans[stage].memory
        for rank in range(n):
            assert (planned.parameters, planned.gradients, planned.optimizer) == (
                held[rank]["parameters"], held[rank]["gradients"], held[rank]["optimizer"]), (stage, n, rank)
planner.num_workers.value, planner.batch.value = 1, 100
single = planner.plans[0].memory
assert (single.parameters, single.gradients, single.optimizer) == (
    measured["mlp"].parameters, measured["mlp"].gradients, measured["mlp"].optimizer)
assert abs(single.activations - measured["mlp"].activations) <= 0.05 * measured["mlp"].activations
""")

code("""
\"\"\"Checks the planner on 7B over 8 x 80 GB: 16 bytes per parameter, 112 GB with plain data parallelism.\"\"\"
planner.device_flops = 4e14  # an accelerator's FLOP/s, not this laptop's ...
planner.alpha_beta = links["between nodes (25 GB/s)"]  # ... and section 3's network between nodes
planner.model.value = "size"
planner.params.value = 7e9
planner.precision.value = "mixed"
planner.num_workers.value = 8
planner.zero_stage.value = 0
planner.batch.value = 8
dp = planner.plans[0]
assert dp.memory.state == 112e9 and dp.memory.state / 7e9 == 16
assert not dp.fits and planner.plans[3].fits and planner.plans[3].memory.state == 14e9  # 16 / N bytes per parameter
print(dp.table())
print()
print(planner.plans[3].table())
planner.model.value = "gpt"  # now with a GPT-like shape's activations: try recompute, T and K
""")

md("""
The planner's bytes for the MLP are the bytes the runs above held, byte for byte, because it uses the same formulas and the same flat units as `dlcourse.sharding`; for the 7B model it reproduces the ZeRO paper's arithmetic: 16 bytes per parameter, 112 GB per device with plain data parallelism, 14 GB with ZeRO-3 over 8 devices. For the 7B model the panel now assumes accelerators of 400 TFLOP/s and section 3's 25 GB/s network between nodes (`planner.device_flops`, `planner.alpha_beta`); for the MLP it used this machine's fitted network. Its step times are a model (no overlap of communication and compute, a fixed FLOP rate): use them to compare layouts, not to promise seconds. The pipeline's K and M, which the best-known public memory calculators leave out, change what a stage holds: GPipe keeps all M micro-batches' activations, 1F1B at most K (lesson 02).
""")

md("""
## 6. Back to the lecture: who holds the parameters?

The lecture's parameter server already sharded the parameters: with k server shards, each server holds and updates 1/k of the model (lesson 05's "sharded servers"). But every *worker* still pulled and held the whole model, its whole gradient, and did its whole forward and backward. ZeRO moves the sharding from separate servers into the workers themselves: worker n is also the "server" of chunk n, the reduce-scatter plays the role of the push, the all-gather of the pull, and there is no server machine at all.
""")

md("""
**Predict.** With N = 8 workers and k = 8 server shards, how many bytes per parameter does a *worker* hold under the parameter server (mixed-precision Adam, the optimizer on the servers), and how many under ZeRO-3?
""")

code("""
k = 8
k_opt = memory.optimizer_bytes_per_parameter("adam", "mixed")  # 12: fp32 master weights and Adam's two moments
ps_worker = memory.bytes_per_parameter(0, 1, optimizer="adam", precision="mixed") - k_opt  # bf16 weights and gradients
ps_server = k_opt / k  # a server shard keeps the optimizer state of its 1/k of the parameters
zero3_worker = memory.bytes_per_parameter(3, k, optimizer="adam", precision="mixed")
display(Markdown(
    f"Bytes per parameter of the model: a parameter-server **worker** holds {ps_worker:g} (the whole model and gradient; "
    f"the optimizer state lives on the servers, a server {ps_server:g}), a **ZeRO-3 worker** {zero3_worker:g} "
    f"with N = {k}: the {ps_worker:g} bytes that every worker repeated are gone too."
))
""")

md("""
## What this lesson showed

- A training step holds parameters, gradients, optimizer state and activations; the first three are exact formulas (16 bytes per parameter for Adam, in fp32 or mixed precision) and the last follows the layers. For 7B parameters that is 112 GB before activations: more than a device holds.
- ZeRO shards the state over the N data-parallel workers: stage 1 the optimizer state, stage 2 the gradients, stage 3 the parameters, each falling as 1/N; the training is unchanged, stage 1 and 2 send the bytes of an all-reduce, stage 3 half as much again.
- Tensor parallelism splits each layer; it needs an all-reduce of activations in every layer, which is why it lives on a node's fast links.
- Recomputation trades a forward pass for activation memory; mixed precision halves the activations and the messages, not Adam's state.
- The planner combines all of them, with pipeline stages and micro-batches, into memory per device and a step time.

Assignment A5 (`a5_sharding`) asks you to write the ZeRO-1 step, the column- and row-parallel layers with their all-reduces, and the memory formula; the library's runtimes run your code on real processes and compare it with one process.

## Exercises

1. Move the planner to 70B parameters on 64 devices. Find a layout that fits in 80 GB with a batch of 8 sequences per replica, and report its communication share. <details><summary>Hint</summary>Start with ZeRO-3 and T = 8; then try K > 1 with M ≥ K and the 1F1B schedule, and recomputation. Compare the communication share of your candidates.</details>
2. In section 2, run ZeRO-3 with plain SGD instead of Adam. Which part of the bars disappears, and what does ZeRO-1 save then? <details><summary>Hint</summary>SGD keeps no optimizer state (k_opt = 0): stage 1 shards nothing. Check with `memory.bytes_per_parameter(1, 4, optimizer="sgd", precision="fp32")`.</details>
3. Why does the ZeRO-3 runtime gather every layer's parameters *twice* per step? Could it keep them from the forward until the backward, and what would that cost in memory? <details><summary>Hint</summary>Keeping them is what stage 2 does. Count the peak: `result.extra["peak_state"]` next to `result.extra["memory"]`.</details>
4. Recompute the CNN with 1, 2, 4 and 8 segments (`recompute_segments(model, s)`): plot held and peak activation bytes against s, and the step time. Where is Chen et al.'s sqrt(layers) rule on this network? <details><summary>Hint</summary>`activation_bytes(model, X, y)` returns `held` and `rebuilt`; the peak is their sum. On this CNN one layer (the first convolution's output) dominates.</details>

## References

- S. Rajbhandari, J. Rasley, O. Ruwase, Y. He. *ZeRO: Memory Optimizations Toward Training Trillion Parameter Models.* SC 2020.
- M. Shoeybi et al. *Megatron-LM: Training Multi-Billion Parameter Language Models Using Model Parallelism.* 2019.
- V. Korthikanti et al. *Reducing Activation Recomputation in Large Transformer Models.* 2022.
- T. Chen, B. Xu, C. Zhang, C. Guestrin. *Training Deep Nets with Sublinear Memory Cost.* 2016.
- P. Micikevicius et al. *Mixed Precision Training.* ICLR 2018.
- R. Thakur, R. Rabenseifner, W. Gropp. *Optimization of Collective Communication Operations in MPICH.* 2005 (the alpha-beta model).
- Y. Zhao et al. *PyTorch FSDP: Experiences on Scaling Fully Sharded Data Parallel.* VLDB 2023.
""")

write("08_sharding_and_memory.ipynb", cells)
