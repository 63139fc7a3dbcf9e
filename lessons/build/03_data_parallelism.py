# ruff: noqa: E501  (markdown paragraphs stay one line each, so the notebook reflows them)
"""Builds lessons/03_data_parallelism.ipynb (committed without outputs): run it from the repository root.

    .venv/bin/python lessons/build/03_data_parallelism.py

Edit this file, not the notebook: the notebook is generated from it.
"""

from __future__ import annotations

from lesson import Cells, write

cells = Cells()
md, code = cells.md, cells.code


md("""
# 03 · Data parallelism: replicas, shards and parameter averaging

**After this lesson you will be able to** split a training set into shards and train one replica of the model on each, in real processes; run the lecture's parameter-averaging procedure and check, number for number, when it is the same as training on one machine; say which of the lecture's three conditions breaks that equivalence and by how much; explain why averaging too rarely hurts, with the loss landscape between two replicas in front of you; count the bytes a ring all-reduce moves per step; and see the "last executor" make every worker wait.

**The lecture's picture, in words.** In the data-parallelism figure every worker machine holds *the whole network*: a complete copy, called a **replica**. The training data is cut into pieces, one per worker, called **shards**. Each worker trains its replica on its own shard, and an arrow from every worker goes to one place where the results are combined into a single set of parameters, which goes back to every worker. Model parallelism (lesson 02) cuts the *network*; data parallelism cuts the *data*.

Throughout (the course's [notation](00_start_here.ipynb#The-notation)): **N** is the number of workers, **lambda** (`lr`) the learning rate, and **H** the averaging period, the number of mini-batches a worker trains on its own between two averages.

Where this sits on [the map of approaches](00_start_here.ipynb#The-map-of-approaches): synchronous data parallelism, first by parameter averaging, then update-based (gradients averaged by an all-reduce among the workers, no server).
""")

md("""
## 1. Replicas and shards

Every worker gets an equal, disjoint slice of the training set. To keep the real runs of this lesson quick, we train the small multilayer perceptron (`mlp`, one hidden layer of 64 units) on the first 2,000 training digits.
""")

md("""
**Predict.** Cut the first 2,000 digits into 4 shards of 500. Will every shard hold all ten digits?
""")

code("""
import copy
import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from dlcourse.averaging import parameter_distance, train_averaging, train_reference
from dlcourse.collectives import parameter_bytes, ring_allreduce_bytes
from dlcourse.data import load_mnist, shard
from dlcourse.data_parallel import DataParallelConfig, train_ddp, train_sync_sgd
from dlcourse.models import count_parameters, make_model
from dlcourse.train import evaluate

split = load_mnist()
train = split.train[:2000]
shards = shard(train, 4)
print(shards)
for n, s in enumerate(shards):
    print(f"worker {n}: {len(s)} examples, digits per class {np.bincount(s.y.numpy(), minlength=10)}")
print(make_model("mlp"), "- every worker holds this whole network")
""")

md("""
Four shards of 500 digits, no digit in two shards, every class present in each (the next cell checks it): the shards look alike, but they are *different* data. If each replica simply trained on its own shard and never talked to the others, we would end with four different networks. The whole question of data parallelism is how to combine them.
""")

code("""
\"\"\"Checks the shards: four of 500 digits, together exactly the 2,000, and all ten classes in each.\"\"\"
assert [len(s) for s in shards] == [500] * 4, shards
assert torch.equal(torch.cat([s.y for s in shards]).sort().values, train.y.sort().values)
assert all(len(np.unique(s.y.numpy())) == 10 for s in shards)
""")

md("""
## 2. The lecture's parameter averaging, on real processes

The procedure from the lecture, step by step:

1. randomly initialize the network's parameters;
2. give each worker a copy of the current parameters;
3. let each worker train on its shard (here: for H mini-batches);
4. set the global parameters to the average of the workers' parameters;
5. while there is data left, go back to step 2.

`train_averaging` starts N real processes joined by `torch.distributed`; step 2 is a `broadcast` from rank 0 and step 4 an `all_reduce` followed by a division by N. We use the global mini-batch of 100 examples, so each of the N = 4 workers takes 25 per step, plain SGD with lr = 0.1, and H = 1 (average after every mini-batch). We compute in float64 so that rounding cannot hide or fake a difference.

`train_reference` is the oracle: **one** process and **one** model that, at step t, takes a single SGD step on the *concatenation* of the four workers' t-th mini-batches. That is "training on a single machine" with exactly the examples the workers saw.
""")

md("""
**Predict.** After 20 steps, how far apart (largest difference in any single weight) will the averaged model and the single-machine model be? About 0.1? 0.001? Or zero up to rounding?
""")

code("""
base = DataParallelConfig(model="mlp", epochs=1, batch_size=100, lr=0.1, optimizer="sgd", dtype="float64")
averaged = train_averaging(train, 4, base)
reference = train_reference(train, 4, base)
gap = parameter_distance(averaged.parameters, reference.parameters)
print(averaged)
print(f"largest |W_averaged - W_single| after {averaged.updates} steps: {gap:.2e}")
""")

code("""
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(reference.step_loss, "o-", ms=4, label="single machine (reference)")
ax.plot(averaged.step_loss, "x--", label="4 workers, averaged every step")
ax.set(xlabel="step", ylabel="training loss of the global batch", title="Two ways, one training run")
ax.legend();
""")

md("""
The two loss curves lie on top of each other: every cross sits inside a circle.
""")

code("""
from IPython.display import Markdown, display

display(Markdown(f"After {averaged.updates} steps the largest difference in any weight is **{gap:.1e}**: the rounding of float64, whose steps are 2.2e-16 near 1."))
""")

code("""
\"\"\"Checks that parameter averaging after every step equals single-machine SGD: weights at float64 rounding (under 1e-12), losses within 1e-9.\"\"\"
assert averaged.updates == reference.updates == 20
assert gap < 1e-12, gap
assert np.allclose(averaged.step_loss, reference.step_loss, atol=1e-9)
""")

md("""
Why is it exact? Write W for the parameters every worker received in step 2, and g_n for worker n's gradient on its 25 examples. After one SGD step worker n holds W - lambda g_n, and the average is

W - lambda (g_1 + ... + g_N) / N.

Because every worker's batch has the same size, the mean of the N batch means *is* the mean gradient over all 100 examples, which is exactly what one machine computes on the concatenated batch. Three things were needed, and the lecture lists them: average **after every mini-batch**; an optimizer with **no internal state** (plain SGD: the step is a linear function of the gradient); and **the same number of examples** on every worker.
""")

md("""
### Your own step 4, in real worker processes

The library's `average_parameters` is four lines of `torch.distributed`. You can write your own and hand it to `train_averaging(..., average=...)`: the launcher ships a function defined in a notebook cell to the worker processes. Here it is, run by two real processes.

From here on we use N = 2 workers and two epochs (40 steps), to keep the real runs short; everything else stays as above. The three conditions still hold, so your average should again reproduce single-machine SGD.
""")

code("""
import torch.distributed as dist


@torch.no_grad()
def my_average(model):
    \"\"\"Step 4: every worker's parameters become the mean over all workers.\"\"\"
    for p in model.parameters():
        dist.all_reduce(p, op=dist.ReduceOp.SUM)
        p /= dist.get_world_size()


two = dataclasses.replace(base, epochs=2)
mine = train_averaging(train, 2, two, average=my_average)
single = train_reference(train, 2, two)
mine_gap = parameter_distance(mine.parameters, single.parameters)
print(f"{mine}: distance from single-machine SGD {mine_gap:.1e}")
""")

code("""
\"\"\"Checks that the notebook's own average, run in two worker processes, reproduces single-machine SGD.\"\"\"
assert mine.num_workers == 2 and mine.updates == single.updates == 40
assert mine_gap < 1e-6, mine_gap
""")

md("""
## 3. Breaking each condition in turn

Now we break the three conditions, one at a time, with N = 2 workers and two epochs as in your own run, and measure how far each run ends from its own single-machine reference.

- **Adam** keeps a running mean and a running variance per weight, and divides one by the square root of the other. Averaging the parameters of two Adam optimizers is not the Adam step of the averaged gradient, because that division is not linear.
- **Unequal shards**: worker 0 gets 1,400 examples and worker 1 only 600. Both still take the same number of steps, so worker 0's mini-batches are larger, but the plain average gives both replicas equal weight.
- **H = 5**: each worker takes five steps on its own before the average. After the first local step the workers compute gradients at *different* points, so their sum is no longer the gradient of the global batch at one point.
""")

md("""
**Predict.** Rank the three broken runs by their distance from the single-machine model. Which do you expect to be furthest away, and roughly how far compared with the 1e-16 of the last section?
""")

code("""
breaks = {
    "Adam": (dataclasses.replace(two, optimizer="adam", lr=1e-3), None),
    "unequal shards": (two, [1400, 600]),
    "H = 5": (dataclasses.replace(two, average_every=5), None),
}
distance = {"all three hold": mine_gap}
results = {}
for name, (config, sizes) in breaks.items():
    t0 = time.perf_counter()
    results[name] = train_averaging(train, 2, config, shard_sizes=sizes)
    oracle = train_reference(train, 2, config, shard_sizes=sizes)
    distance[name] = parameter_distance(results[name].parameters, oracle.parameters)
    print(f"{name:15s} distance {distance[name]:.2e}   ({time.perf_counter() - t0:.1f} s)")
""")

code("""
fig, ax = plt.subplots(figsize=(7, 3))
names = list(distance)
ax.barh(names, [max(distance[k], 1e-17) for k in names], color=["C2", "C3", "C3", "C3"])
ax.axvline(1e-6, color="grey", ls="--", label="1e-6: equivalence")
ax.set(xscale="log", xlabel="largest |W_averaged - W_single|")
ax.set_title("Break one condition, lose the equivalence")
ax.invert_yaxis()
ax.legend(loc="lower right");
""")

md("""
Look at the logarithmic axis: the green bar sits at the rounding floor, far left of the dashed 1e-6 line; each red bar lies to the right of it, by the factor printed below. Breaking a condition does not make training *bad* (section 4 measures the accuracy of H = 5), but it is no longer single-machine training.
""")

code("""
closest = min(breaks, key=distance.get)
display(Markdown(
    f"The closest broken run, **{closest}**, is {distance[closest] / 1e-6:,.0f} times the 1e-6 line; "
    f"the run with all three conditions is {distance['all three hold']:.1e}."
))
""")

code("""
\"\"\"Checks that breaking any one of the three conditions moves the result at least 100 times beyond 1e-6.\"\"\"
for name in breaks:
    assert distance[name] > 1e-4, (name, distance[name])
assert distance["all three hold"] < 1e-12
""")

md("""
A remark on the first condition: "no internal update of the optimizer" is *sufficient*, not necessary. Heavy-ball momentum has internal state, but that state is itself a linear sum of past gradients, so averaging after every step still matches one machine. Exercise 1 lets you check that.
""")

md("""
## 4. Averaging too rarely

Averaging after every mini-batch is costly: every step, every worker sends its whole parameter vector. The obvious saving is to average less often, every H steps. The lecture warns about what happens then: the replicas drift apart between averages, and the average of two points that are far apart can be a poor model.

We compare H = 1 (your run), 5 (from above) and 40 (the workers train alone for the whole run and are averaged once, at the end) and measure the distance from single-machine SGD and the test accuracy of the averaged model.
""")

md("""
**Predict.** As H grows from 1 to 40, will the distance from the single-machine model grow steadily, and will the test accuracy fall with it?
""")

code("""
sweep = {1: mine, 5: results["H = 5"]}
sweep[40] = train_averaging(train, 2, dataclasses.replace(two, average_every=40))


def accuracy_of(parameters):
    model = make_model("mlp")
    model.load_state_dict(parameters)  # float64 weights, copied into a float32 model
    return evaluate(model, split.test)["accuracy"]


Hs = sorted(sweep)
k_distance = [parameter_distance(sweep[k].parameters, single.parameters) for k in Hs]
k_accuracy = [accuracy_of(sweep[k].parameters) for k in Hs]
k_bytes = [sweep[k].bytes_sent for k in Hs]
for k, d, a, b in zip(Hs, k_distance, k_accuracy, k_bytes):
    print(f"H = {k:2d}: distance {d:.2e}, test accuracy {a:.3f}, {b / 1e6:.2f} MB sent")
print(f"single machine: test accuracy {accuracy_of(single.parameters):.3f}")
""")

code("""
fig, (ax_d, ax_a, ax_b) = plt.subplots(1, 3, figsize=(12, 3))
ax_d.plot(Hs, [max(d, 1e-17) for d in k_distance], "o-")
ax_d.set(xscale="log", yscale="log", xlabel="H (steps between averages)")
ax_d.set_ylabel("distance from single machine")
ax_a.plot(Hs, k_accuracy, "o-", label="averaged replicas")
ax_a.axhline(accuracy_of(single.parameters), color="grey", ls="--", label="single machine")
ax_a.set(xscale="log", xlabel="H", ylabel="test accuracy", ylim=(min(k_accuracy) - 0.2, 1.0))
ax_a.legend()
ax_b.plot(Hs, [b / 1e6 for b in k_bytes], "o-", color="C1")
ax_b.set(xscale="log", yscale="log", xlabel="H", ylabel="MB sent in all")
fig.tight_layout()
""")

md("""
On the left, the distance from single-machine SGD climbs from rounding noise at H = 1 by many orders of magnitude. In the middle, the test accuracy of the averaged model; on the right, the bytes sent.
""")

code("""
saving = k_bytes[0] / k_bytes[-1]
display(Markdown(
    f"Averaging once at the end (H = 40) instead of after every step cut the bytes by **{saving:.0f}x**, not 40x: "
    "every run also sends one copy of the model at the start (step 2's broadcast), so H = 1 sent 1 + 40 x 2 = 81 copies' worth "
    "(each all-reduce of N = 2 sends two) and H = 40 sent 1 + 2 = 3. "
    f"The test accuracy went from **{k_accuracy[0]:.3f}** to **{k_accuracy[-1]:.3f}** "
    f"(single machine: {accuracy_of(single.parameters):.3f}): with only two workers that started from *the same* weights "
    "and trained for 40 steps, the replicas did not wander far. How far they may wander is what the loss landscape below shows."
))
""")

code("""
\"\"\"Checks that the replicas end further from single-machine SGD the more rarely they are averaged, and that H = 40 sent 81/3 = 27x fewer bytes.\"\"\"
assert k_distance[0] < 1e-6 < k_distance[1] < k_distance[2], k_distance
assert k_bytes[0] > k_bytes[1] > k_bytes[2], k_bytes
assert abs(k_bytes[0] / k_bytes[2] - 81 / 3) < 1e-9, k_bytes
""")

md("""
### The loss landscape between two replicas

"The average of multiple different local minima is not guaranteed to be a local minimum." We can look at that directly. `dlcourse.landscape` evaluates the training loss along the straight line between two trained networks W_a and W_b, at (1 - alpha) W_a + alpha W_b; alpha = 0.5 is exactly their parameter average. The **barrier** is how far the loss on that line rises above the straight chord between its two end points.

Two cases: two replicas that start from the **same** weights and train on different shards (what parameter averaging keeps you close to), and three networks trained from **different** random initializations (replicas that have drifted as far apart as they can).
""")

md("""
**Predict.** In which case will the midpoint (the average) have a higher loss than both end points?
""")

code("""
from dlcourse.landscape import LandscapeConfig, loss_landscape
from dlcourse.models import MLP
from dlcourse.train import fit
from dlcourse.viz import landscape_plot

data = train[:1000]
config = LandscapeConfig(seeds=(0, 1, 2), epochs=10, grid_points=17)
apart = loss_landscape(data, config)  # three minima from three random initializations

torch.manual_seed(0)
start = MLP(config.hidden)
replicas = [copy.deepcopy(start), copy.deepcopy(start)]  # one starting point, two shards
for replica, part in zip(replicas, shard(data, 2)):
    fit(replica, part, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, optimizer="sgd",
        progress=False)
together = loss_landscape(data, dataclasses.replace(config, grid_points=0), models=replicas)
print("different initializations:", apart)
print("same initialization:      ", together)
landscape_plot(apart)
""")

md("""
Left panel: the loss along the line between two networks trained from different initializations. Both ends are low, the middle (the red cross, their average) is far higher: a ridge between two valleys. Right panel: the plane through three such minima, with the log-loss as colour; each minimum sits in its own dark basin, and the dashed segment between two of them crosses bright, high-loss ground.
""")

code("""
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(apart.alphas, apart.line_loss, label=f"different initializations (barrier {apart.barrier:.2f})")
ax.plot(together.alphas, together.line_loss, label=f"same initialization (barrier {together.barrier:.2f})")
ax.axvline(0.5, color="grey", ls=":", label="alpha = 0.5: the average")
ax.set(xlabel="alpha", ylabel="training loss", yscale="log")
ax.legend(fontsize="small");
""")

code("""
\"\"\"Checks that averaging two independent minima climbs a barrier, unlike two replicas from one start.\"\"\"
assert apart.midpoint_loss > max(apart.end_losses), apart
assert apart.barrier > together.barrier, (apart.barrier, together.barrier)
""")

md("""
Replicas that share their starting point stay in one basin: their average is as good as either of them (the orange curve is nearly flat between 0 and 1). Networks trained independently land in different basins; their hidden units can be arranged in any order without changing what the network computes, so averaging them mixes unrelated units and the loss at the average shoots up. Frequent averaging keeps the replicas in the first situation; averaging too rarely drifts towards the second. That is why H is a trade-off between bytes and quality.
""")

md("""
## 5. Update-based synchronous SGD and DDP, and the bytes they move

Instead of averaging the *parameters* after each worker's step, the workers can average their *gradients* (the updates) and then all take the same step. The lecture notes that, with synchronous updates, this update-based approach is equivalent to parameter averaging. `train_sync_sgd` writes it out (one `all_reduce` of each gradient tensor); `train_ddp` uses PyTorch's `DistributedDataParallel`, which does the same in buckets that start sending while the backward pass is still running.
""")

md("""
**Predict.** With the settings of your own run (N = 2, H = 1, plain SGD, two epochs), will synchronous SGD and DDP end at the same parameters as parameter averaging, up to rounding?
""")

code("""
sync = train_sync_sgd(train, 2, two)
ddp = train_ddp(train, 2, two)
for run in (sync, ddp):
    apart_from_averaging = parameter_distance(run.parameters, mine.parameters)
    print(f"{run.strategy:8s} distance from averaging {apart_from_averaging:.1e}, {run.bytes_sent:,} B sent")
""")

md("""
How many bytes is that? In a **ring all-reduce** (Patarasuk and Yuan) the N workers sit on a ring; each tensor is cut into N chunks that travel round the ring twice, once to add up and once to hand out the sum. Each worker sends 2 (N - 1) / N times the tensor's size, so all N together send 2 (N - 1) times it. Per worker that is almost flat in N: adding workers barely adds to each worker's traffic.
""")

code("""
nbytes = parameter_bytes(make_model("mlp").double())
# one broadcast at the start, then one all-reduce per step
expected = (2 - 1) * nbytes + sync.updates * ring_allreduce_bytes(nbytes, 2)
print(f"{count_parameters(make_model('mlp')):,} parameters = {nbytes:,} bytes in float64")
print(f"expected {expected:,} bytes, sync SGD counted {sync.bytes_sent:,}, DDP {ddp.bytes_sent:,}")

Ns = [2, 4, 8, 16, 32]
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(Ns, [ring_allreduce_bytes(nbytes, n) / n / nbytes for n in Ns], "o-", label="per worker")
ax.plot(Ns, [ring_allreduce_bytes(nbytes, n) / nbytes for n in Ns], "s--", label="all workers together")
ax.set(xscale="log", yscale="log", xlabel="N", ylabel="bytes per step / model bytes")
ax.set_title("Ring all-reduce traffic")
ax.set_xticks(Ns, [str(n) for n in Ns])
ax.legend();
""")

md("""
The blue line approaches 2: each worker sends about two copies of the model per step, whether there are 4 workers or 32 (with our N = 2, exactly one copy each: half goes out in each of the two rounds). The total (orange) grows linearly with N, which is what a shared network link has to carry.
""")

code("""
\"\"\"Checks that gradient averaging (written out, and DDP) equals parameter averaging; and the ring bytes.\"\"\"
assert parameter_distance(sync.parameters, mine.parameters) < 1e-6
assert parameter_distance(ddp.parameters, sync.parameters) < 1e-6
assert sync.bytes_sent == ddp.bytes_sent == expected
""")

md("""
### The ring's latency steps: an alpha-beta model fitted on this machine

Bytes are half the cost. The ring moves its chunks in 2(N-1) steps, one after the other, and every step is a message that pays a fixed **latency** (alpha seconds: software, a round trip) before its bytes flow at **bandwidth** beta. The alpha-beta model (Hockney 1994; Thakur, Rabenseifner and Gropp 2005) prices a ring all-reduce of B bytes on N workers at

2(N-1) alpha + 2(N-1)/N x B / beta.

The next cell times gloo's all-reduce (and its two halves, reduce-scatter and all-gather) on two real processes for tensors from 1 KB to 4 MB, takes the slowest process's median of seven runs, and fits alpha and beta to those times.
""")

md("""
**Predict.** Will an all-reduce of 1 KB take about 4,000 times less time than one of 4 MB, or much more than that? For a ring of 32 workers and our MLP's 0.4 MB, which will cost more: the 62 latencies or the bytes?
""")

code("""
from dlcourse.collectives import fit, measure_collectives

times = measure_collectives(2, repeats=7)  # {(op, bytes): seconds}, gloo on 2 real processes
model = fit(times, 2)
sizes = sorted({b for op, b in times if op == "all_reduce"})
measured_ar = [times["all_reduce", b] for b in sizes]
print(model)
for b, t in zip(sizes, measured_ar):
    print(f"all-reduce of {b / 1024:7,.0f} KB: measured {t * 1e3:7.3f} ms, model {model.time('all_reduce', b, 2) * 1e3:7.3f} ms")

ring_Ns = [2, 4, 8, 16, 32, 64]
latency_part = [2 * (n - 1) * model.alpha_s for n in ring_Ns]
bytes_part = [2 * (n - 1) / n * nbytes / model.beta_bytes_per_s for n in ring_Ns]
fig, (ax_fit, ax_ring) = plt.subplots(1, 2, figsize=(11, 3.2))
ax_fit.plot(sizes, [t * 1e3 for t in measured_ar], "o", label="measured (gloo, N = 2)")
ax_fit.plot(sizes, [model.time("all_reduce", b, 2) * 1e3 for b in sizes], "-", label="alpha-beta fit")
ax_fit.set(xscale="log", yscale="log", xlabel="bytes", ylabel="ms", title="all-reduce on this machine")
ax_fit.legend(fontsize="small")
ax_ring.plot(ring_Ns, [t * 1e3 for t in latency_part], "o-", label="2(N-1) alpha: latency steps")
ax_ring.plot(ring_Ns, [t * 1e3 for t in bytes_part], "s--", label="2(N-1)/N B / beta: bytes")
ax_ring.set(xscale="log", yscale="log", xlabel="N", ylabel="ms per all-reduce", title=f"the MLP's {nbytes / 1e6:.2f} MB, ring of N")
ax_ring.set_xticks(ring_Ns, [str(n) for n in ring_Ns])
ax_ring.legend(fontsize="small");
""")

md("""
Left: the measured times (dots) and the fitted model (line); small messages sit on a floor, the latency, and only large ones grow with their bytes. Right: the fitted model extrapolated to rings of N workers for our MLP: the bytes per worker level off below two copies of the model, while the latency steps keep growing like N.
""")

code("""
crossing = next((n for n, lat, byt in zip(ring_Ns, latency_part, bytes_part) if lat > byt), None)
display(Markdown(
    f"Fitted here: alpha = **{model.alpha_s * 1e6:.0f} us** per message, beta = **{model.beta_bytes_per_s / 1e9:.2f} GB/s**. "
    f"The 4 MB all-reduce took {measured_ar[-1] / measured_ar[0]:.1f} times as long as the 1 KB one; were time proportional to bytes, it would be 4,096 times: "
    f"the 1 KB one took {measured_ar[0] / (1024 / model.beta_bytes_per_s):,.0f} times what its bytes cost at beta, the floor is the latency. "
    "(A busy machine makes these timings noisy: run the cell again to see them move.) "
    + (f"For the MLP, the latency steps outweigh the bytes from N = {crossing} on." if crossing else
       f"For the MLP, the bytes outweigh the latency steps up to N = {ring_Ns[-1]}.")
))
""")

code("""
\"\"\"Checks the measured 1 KB all-reduce: it cost over 10x what its bytes cost at the fitted bandwidth, so latency, not bytes, sets small messages' time.\"\"\"
assert measured_ar[0] > 10 * (1024 / model.beta_bytes_per_s), (measured_ar[0], model)
""")

md("""
## 6. The last executor

A synchronous step ends only when *every* worker has delivered: the fast ones wait for the slowest, the "last executor". We slow rank 1 down by 0.1 s per step (as if it shared its machine with another job) and look at where each worker's time goes: its own work, and the time it spends inside the all-reduce waiting for the others.
""")

md("""
**Predict.** Rank 0 is not slowed. Will its steps take about as long as its own compute, or about 0.1 s?
""")

code("""
slow = train_sync_sgd(train, 2, dataclasses.replace(base, slow_worker=1, slow_delay=0.1))  # 20 steps
for w in slow.per_worker:
    print(f"rank {w['rank']}: step {w['step_s'] * 1e3:6.1f} ms = compute {w['compute_s'] * 1e3:6.1f} ms "
          f"+ waiting in all-reduce {w['sync_s'] * 1e3:6.1f} ms (slowed by {w['delay_s'] * 1e3:.0f} ms)")

fig, ax = plt.subplots(figsize=(7, 2.2))
ranks = [f"rank {w['rank']}" for w in slow.per_worker]
ax.barh(ranks, [w["compute_s"] * 1e3 for w in slow.per_worker], label="own work (incl. the sleep)")
own = [w["compute_s"] * 1e3 for w in slow.per_worker]
ax.barh(ranks, [w["sync_s"] * 1e3 for w in slow.per_worker], left=own, label="waiting in all-reduce")
ax.set(xlabel="ms per step")
ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1));
""")

md("""
Both bars have the same total length: the step time of the whole system is the slow worker's. Rank 0 finishes its own work quickly and then spends the rest of every step waiting inside the all-reduce.
""")

code("""
\"\"\"Checks that the slowest worker sets every worker's step time: the fast rank waits out the delay, longer than it works.\"\"\"
fast, slowed = slow.per_worker
assert fast["compute_s"] < fast["sync_s"], fast
assert fast["step_s"] >= 0.8 * slowed["delay_s"], fast
assert fast["sync_s"] > 0.5 * slowed["delay_s"], fast
assert abs(fast["step_s"] - slowed["step_s"]) < 0.25 * slowed["step_s"], (fast, slowed)
""")

md("""
With two workers one slow machine is easy to spot. With many, the chance that *some* worker straggles in a given step grows quickly: if each of N workers straggles with probability p, a step is slow with probability 1 - (1 - p)^N, already 0.81 for p = 0.1 and N = 16. The panel below runs the simulated cluster (real gradients, virtual time) for synchronous and asynchronous SGD side by side. Move **workers N** up to 32 and the straggler sliders: the top timeline (synchronous) shows the grey waiting bars of the fast workers, the one below it (asynchronous) has none, and the bars at the bottom left give each worker's share of idle time.
""")

code("""
from dlcourse.viz import StragglerExplorer

panel = StragglerExplorer(num_workers=16, straggler_prob=0.1, straggler_slowdown=4.0)
panel
""")

code("""
\"\"\"Checks on the simulated cluster that sync workers idle more than async ones, at N = 16 and 32.\"\"\"
for n in (16, 32):
    panel.num_workers.value = n  # the same as moving the slider
    sync_idle = np.mean(panel.results["sync"].idle_fraction)
    async_idle = np.mean(panel.results["async"].idle_fraction)
    print(f"N = {n}: mean idle fraction sync {sync_idle:.2f}, async {async_idle:.2f}")
    assert sync_idle > async_idle, (n, sync_idle, async_idle)
""")

md("""
This is why the lecture says synchronous systems become less viable as the number of workers grows, and why lesson 04 turns to asynchronous updates, which have a price of their own: stale gradients.
""")

md("""
## What this lesson showed

Data parallelism gives every worker a full replica and a shard of the data. Averaging the replicas' parameters after every mini-batch, with plain SGD and equal shards, is *exactly* single-machine training on the union of the workers' batches: we measured a difference at the level of float64 rounding. Each of the three conditions matters: Adam, unequal shards and H > 1 each moved the result by many orders of magnitude more. Averaging rarely saves bytes in proportion to H, but lets the replicas drift apart, and the loss landscape shows what drifting far means: the average of two unrelated minima is not a minimum. Averaging gradients instead of parameters (synchronous SGD, DDP) gives the same parameters, and a ring all-reduce makes each worker's traffic nearly independent of N. What it cannot fix is that every step waits for the slowest worker.
""")

md("""
## Exercises

1. Run the equivalence check of section 2 with `optimizer="momentum"`. Momentum has internal state: does the equivalence survive? Explain why (or why not) in one sentence.

<details><summary>Hint</summary>

Each worker keeps its own momentum buffer v_n, and the buffers differ: each has summed only its own shard's gradients (averaging touches the parameters, not the optimizer's state). What matters is their mean. With H = 1 every worker computes its gradient at the same averaged parameters, and `v_n = mu v_n + g_n` is linear, so the mean buffer follows `mean v = mu (mean v) + mean g`: exactly the single machine's buffer on the global batch. The averaged parameters `W - lambda mean(v_n)` are then the single machine's. Compare with `train_reference(train, 4, config)` for the same config.
</details>

2. Fix the unequal shards: write `weighted_average(model)` that weights each worker's parameters by the size of its mini-batch, and pass it as `average=`. How close to `train_reference(..., shard_sizes=[1400, 600])` do you get?

<details><summary>Hint</summary>

Each worker can compute its own weight from `dist.get_rank()` (worker 0 takes 116 examples per step, worker 1 takes 50); multiply the parameters by `batch_n / sum of batches` before an `all_reduce` with `SUM`, and do not divide by N afterwards. The distance should drop to rounding.
</details>

3. Repeat the H sweep of section 4 with N = 4 workers and H = 1, 2, 5, 10, 20. Does the accuracy of the averaged model fall faster with more workers? Plot bytes sent against test accuracy.

<details><summary>Hint</summary>

`train_averaging(train, 4, dataclasses.replace(two, average_every=H))` and `accuracy_of(result.parameters)`; `result.bytes_sent` falls roughly as 1/H.
</details>

4. In the straggler panel, set the straggler probability to 0 and move N from 1 to 32. Then set it to 0.1. For each setting, at what N does the synchronous cluster spend more than half of its time idle?

<details><summary>Hint</summary>

Read `panel.results["sync"].idle_fraction` after each move, or set `panel.num_workers.value` and `panel.straggler_prob.value` in a loop.
</details>

5. How many bytes would one step of the lecture's CNN (`make_model("cnn")`, float32) send over a ring all-reduce with 8 workers, in all and per worker? At 1 Gbit/s per link, how long would the transfer take, compared with the 0.1 s a CPU needs for one mini-batch?

<details><summary>Hint</summary>

`ring_allreduce_bytes(parameter_bytes(make_model("cnn")), 8)`; each worker sends its share in parallel with the others, so divide by N for the time on one link.
</details>
""")

md("""
## References

- J. Dean et al., "Large Scale Distributed Deep Networks", NIPS 2012 (model replicas on data shards).
- R. McDonald, K. Hall, G. Mann, "Distributed Training Strategies for the Structured Perceptron", NAACL 2010 (iterative parameter mixing, the analysis of parameter averaging).
- P. Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017 (synchronous all-reduce SGD at scale).
- S. Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020 (DDP, gradient buckets overlapping backward).
- P. Patarasuk and X. Yuan, "Bandwidth Optimal All-reduce Algorithms for Clusters of Workstations", JPDC 2009 (the ring all-reduce).
- I. Goodfellow, O. Vinyals, A. Saxe, "Qualitatively Characterizing Neural Network Optimization Problems", ICLR 2015 (the loss along a line between two networks).
- T. Garipov et al., "Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs", NeurIPS 2018; J. Frankle et al., "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML 2020 (barriers between minima).
""")

write("03_data_parallelism.ipynb", cells)
