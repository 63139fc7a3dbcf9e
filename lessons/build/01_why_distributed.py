# ruff: noqa: E501  (markdown paragraphs stay one line each, so the notebook reflows them)
"""Builds lessons/01_why_distributed.ipynb (committed without outputs): run it from the repository root.

    .venv/bin/python lessons/build/01_why_distributed.py

Edit this file, not the notebook: the notebook is generated from it.
"""

from __future__ import annotations

from lesson import Cells, write

cells = Cells()
md, code = cells.md, cells.code


md("""
# 01 · Why distributed training, and when it pays

The lecture opens with a trend: both the amount of data and the size of deep networks keep growing, and even with better GPUs, training stays computationally demanding. Its answer is to train on many machines at once, and it immediately adds the fine print: distributed training has overheads (synchronization, network transfers), it works best when there is much computation per byte sent, and it only makes sense when the size of the network matches the amount of data.

This lesson measures each of those claims on your machine. After it you will be able to:

- estimate how long a training job takes from the cost of one example (its FLOPs) and a measured speed;
- compute the **communication/computation ratio** of a network from its parameters and its FLOPs, and measure it on real processes;
- read a speedup curve (throughput against the number of workers **N**) and say why it bends;
- recognise underfitting and overfitting when the network and the data do not match in size.

There are no distributed ideas yet in the sense of algorithms: this is the lesson that tells you when the later ones are worth their trouble.

Two items of the lecture's fine print are not measured here. It says that "different aspects of training and inference" can be changed to gain concurrency: inference too can be spread, a model too large for one device served in stages (lesson 02's model parallelism) or many requests answered at once by replicas. And it warns that setup (preparing and loading the training data on every machine) and hyperparameter tuning are more complex in distributed systems; lessons 04 and 05 show one instance, a learning rate that must change once updates arrive stale.

Where this sits on [the map of approaches](00_start_here.ipynb#The-map-of-approaches): before the map. It measures the costs every approach pays; section 3 compares the two ways a synchronous step can combine gradients, a central server and an all-reduce among the workers.
""")

code("""
import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

from dlcourse.data import MnistSplit, load_mnist
from dlcourse.models import MLP, count_parameters, flops_per_example, make_model
from dlcourse.train import evaluate, fit

split = load_mnist()
print(split)
""")

md("""
## 1. Training is demanding: time it here

One training example costs a forward pass and a backward pass through the network. We can count that cost in **FLOPs** (floating-point operations; a multiply-add counts as two): `flops_per_example` adds up every layer, and the backward pass costs about twice the forward. Divide by how many FLOPs per second your machine actually achieves, and you have the time per example.

We measure that speed by training the lecture's CNN for one epoch on the 4,000 training digits, and the small MLP the simulator likes for comparison.
""")

code("""
cnn = make_model("cnn", seed=0)
mlp = make_model("mlp", seed=0)
cost = {"cnn": flops_per_example(cnn), "mlp": flops_per_example(mlp)}
params = {"cnn": count_parameters(cnn), "mlp": count_parameters(mlp)}

cnn_run = fit(cnn, split.train, epochs=1, batch_size=100, lr=1e-3, optimizer="adam", progress=False)
mlp_run = fit(mlp, split.train, epochs=1, batch_size=100, lr=1e-3, optimizer="adam", progress=False)
achieved = cost["cnn"] * cnn_run.examples_per_s  # FLOP/s this machine reached on the CNN
for name, run in (("cnn", cnn_run), ("mlp", mlp_run)):
    print(
        f"{name}: {params[name]:>9,} parameters, {cost[name] / 1e6:6.2f} MFLOP per example, "
        f"one epoch of {len(split.train):,} digits in {run.wall_s:.2f} s ({run.examples_per_s:,.0f} examples/s)"
    )
print(f"the CNN ran at {achieved / 1e9:.1f} GFLOP/s on this machine")
""")

md("""
**Predict.** Full MNIST has 60,000 training digits, and the lecture's example trains for 5 epochs. A typical ImageNet job trains ResNet-50 (about 4.1 billion multiply-adds per 224x224 image forward, so roughly 3 x 8.2 GFLOP per training example) on 1.28 million images for 90 epochs. At the speed you just measured, how long would each take: minutes, days or years?
""")

code("""
full_mnist_s = 5 * 60_000 / cnn_run.examples_per_s
resnet50_flops = 3 * 2 * 4.1e9  # forward multiply-adds x 2 FLOPs, x 3 for forward + backward
imagenet_flops = resnet50_flops * 1_281_167 * 90  # ImageNet-1k training set, 90 epochs
imagenet_days = imagenet_flops / achieved / 86_400
print(f"lecture example on full MNIST, 5 epochs: {full_mnist_s / 60:.1f} minutes")
print(f"ResNet-50 on ImageNet, 90 epochs: {imagenet_flops:.1e} FLOP = {imagenet_days:,.0f} days ({imagenet_days / 365:.1f} years)")
print(f"the CNN costs {cost['cnn'] / cost['mlp']:.0f}x the MLP's FLOPs per example, "
      f"and took {mlp_run.examples_per_s / cnn_run.examples_per_s:.0f}x its time")
""")

code('''
"""Checks the measured costs: the CNN is slower per example than the MLP, and ImageNet would take over a month here."""
assert 0 < cnn_run.examples_per_s < mlp_run.examples_per_s, (cnn_run.examples_per_s, mlp_run.examples_per_s)
assert imagenet_days > 30, imagenet_days
''')

md("""
The lecture's MNIST example is a matter of minutes on one machine; an ImageNet-sized job is months or years on it. Even a fast GPU (tens of TFLOP/s) needs days for ResNet-50, which is why Goyal et al. (2017) spread it over 256 GPUs to finish in an hour. The time per example also tracks the FLOPs only roughly: the MLP's per-example cost is about 100x smaller, but it runs fewer times faster than that, because for tiny matrices the fixed cost of each operation dominates.
""")

md("""
## 2. The communication/computation ratio

When N workers share the work, each must exchange something with the others at every step: in data parallelism (lessons 03-05) that is the gradient and the updated parameters, one number per parameter each way. So per step a worker **sends bytes proportional to the parameters**, and **computes FLOPs proportional to FLOPs per example times the batch**. The lecture's rule: distributed training is more efficient when the ratio of transfers to computation is low; small and shallow networks are poor candidates; networks with *parameter sharing* (CNNs, RNNs) are good ones, because every weight of a convolution is used at every position of the image, so each byte sent pays for many FLOPs.
""")

code("""
batch = 100
for name in ("mlp", "cnn"):
    intensity = cost[name] * batch / (4 * params[name])
    print(f"{name}: {4 * params[name]:>10,} bytes of gradient per step, {cost[name] * batch / 1e9:6.3f} GFLOP per step "
          f"-> {intensity:6.0f} FLOP per byte sent")
""")

md("""
The CNN does several times more arithmetic for every byte it would send. Does that show on real processes? The next cell runs synchronous data-parallel SGD for 10 steps on **N = 2 real processes**, once with each network: each worker computes the gradient of its half of the batch, then the two average their gradients with an all-reduce (lesson 03 explains how). Each worker times its compute and its synchronization.
""")

md("""
**Predict.** For which network will the synchronization take a larger share of each step? Will either spend *most* of its step synchronizing?
""")

code("""
from dlcourse.collectives import ring_allreduce_bytes
from dlcourse.data_parallel import DataParallelConfig, train_sync_sgd

real = {
    name: train_sync_sgd(split.train, 2, DataParallelConfig(model=name, batch_size=batch, max_steps=10))
    for name in ("mlp", "cnn")
}
ratio = {}
for name, run in real.items():
    compute = sum(w["compute_s"] for w in run.per_worker) / run.num_workers
    sync = sum(w["sync_s"] for w in run.per_worker) / run.num_workers
    ratio[name] = sync / compute
    per_step = ring_allreduce_bytes(4 * params[name], 2)
    print(f"{name}: compute {compute * 1e3:7.1f} ms, sync {sync * 1e3:6.1f} ms per step "
          f"(sync/compute = {ratio[name]:.2f}); {per_step:,} bytes per step, {run.bytes_sent:,} in all")

fig, ax = plt.subplots(figsize=(6, 2.6))
for i, name in enumerate(("mlp", "cnn")):
    ax.barh(i, 1 / (1 + ratio[name]), color="tab:blue", label="compute" if i == 0 else None)
    ax.barh(i, ratio[name] / (1 + ratio[name]), left=1 / (1 + ratio[name]), color="tab:orange", label="synchronize" if i == 0 else None)
ax.set_yticks([0, 1], ["MLP", "CNN"])
ax.set(xlabel="share of a step (2 real processes)", xlim=(0, 1))
ax.legend(loc="lower right")
share = {name: r / (1 + r) for name, r in ratio.items()}  # synchronizing's share of a step
display(Markdown(
    f"On this run the MLP spent **{share['mlp']:.0%}** of each step synchronizing, the CNN **{share['cnn']:.0%}**."
))
""")

md("""
Each bar is one step of one worker, split into computing (blue) and synchronizing (orange).
""")

code('''
"""Checks the measured runs: the MLP spends most of its step synchronizing, the CNN most of its step computing; the bytes are the ring all-reduce's."""
assert share["mlp"] > 0.5 > share["cnn"], share
for name, run in real.items():
    assert run.updates == 10
    # 10 all-reduces of the gradient plus the initial broadcast of the parameters
    assert run.bytes_sent == 10 * ring_allreduce_bytes(4 * params[name], 2) + 4 * params[name], run.bytes_sent
''')

md("""
On two processes on one machine the "network" is shared memory, as fast as it gets, and still the MLP spends most of each step synchronizing while the CNN spends most of it computing (the sentence above the bars gives this run's shares; the cell before checked them). Between real machines, with a network thousands of times slower than memory, the difference only grows. The absolute milliseconds depend on how busy your machine is.
""")

md("""
## 3. When distributing helps: speedup against N

Two processes on one machine cannot show what 32 machines do. The **simulated cluster** can: it runs synchronous SGD with N workers and a parameter server on a virtual clock. Every gradient is real, but time is modelled: a gradient takes FLOPs per example x batch / `device_flops` virtual seconds (10 GFLOP/s per worker by default, with a 10% random spread), each message takes bytes / `bandwidth` (1 GB/s by default) plus a latency of 0.1 ms, and all messages to and from the server share the server's one link. The **throughput** is training examples per virtual second; the **speedup** at N workers is the throughput at N divided by that of one machine that computes the same mini-batches and sends nothing.

The server is one way to combine gradients. The other is a **ring all-reduce** among the workers, with no server (lesson 03): each worker sends 2(N-1) chunks of 1/N of the model to its neighbour, in 2(N-1) steps that each pay the latency. `dlcourse.scaling` writes both steps' times as formulas; without the random spread, the server's formula is the simulator's step exactly.
""")

md("""
**Predict.** Sketch the speedup curves of the MLP and the CNN for N = 1 to 32 before you run the cell, once with the server and once with the ring. Will either reach 32? Which bends first, and why?
""")

code("""
from dlcourse.scaling import speedup as model_speedup
from dlcourse.sim import SimConfig, simulate
from dlcourse.sim.cluster import SERVER_MEMORY_BANDWIDTH

# 3,200 = 32 x 100 training digits: every N in Ns takes whole steps; a small test set, only time matters
sim_data = MnistSplit(split.train[:3200], split.test[:200], split.source)
Ns = (1, 2, 4, 8, 16, 32)
config = SimConfig()
timing = {  # what the formulas need, from the simulator's settings
    name: dict(compute_s=cost[name] * batch / config.device_flops, nbytes=4 * params[name],
               bandwidth=config.bandwidth, latency=config.latency,
               apply_s=3 * 4 * params[name] / SERVER_MEMORY_BANDWIDTH)  # the server's time to apply one update
    for name in ("mlp", "cnn")
}
sims = {
    name: [simulate(SimConfig(num_workers=n, policy="sync", model=name, batch_size=batch, evals_per_epoch=1), sim_data) for n in Ns]
    for name in ("mlp", "cnn")
}
# over one machine that computes the same mini-batches and sends nothing: batch / compute_s examples per second
speedup = {name: [r.examples_per_s * timing[name]["compute_s"] / batch for r in runs] for name, runs in sims.items()}
formula = {(name, design): [model_speedup(design, n, **timing[name]) for n in Ns]
           for name in ("mlp", "cnn") for design in ("parameter-server", "ring")}
for name in ("mlp", "cnn"):
    print(f"{name}: compute {timing[name]['compute_s'] * 1e3:7.2f} ms, one message {timing[name]['nbytes'] / config.bandwidth * 1e3:5.2f} ms per step")
    print(f"   server, simulated  at N = {Ns}: {[round(s, 1) for s in speedup[name]]}")
    print(f"   server, formula    at N = {Ns}: {[round(s, 1) for s in formula[name, 'parameter-server']]}")
    print(f"   ring all-reduce    at N = {Ns}: {[round(s, 1) for s in formula[name, 'ring']]}")
""")

code("""
from dlcourse.viz import timeline

fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
for name, color in (("mlp", "tab:red"), ("cnn", "tab:blue")):
    axes[0].plot(Ns, speedup[name], "o", color=color, label=f"{name.upper()}: server, simulated")
    axes[0].plot(Ns, formula[name, "parameter-server"], "-", color=color, label=f"{name.upper()}: server, formula")
    axes[0].plot(Ns, formula[name, "ring"], "--", color=color, label=f"{name.upper()}: ring all-reduce")
axes[0].plot(Ns, Ns, ":", color="grey", label="linear (ideal)")
axes[0].set(xscale="log", yscale="log", xlabel="workers N", ylabel="speedup over one machine", title="sync SGD")
axes[0].legend(fontsize="x-small")
axes[0].set_xticks(Ns, [str(n) for n in Ns])
mlp_timeline = timeline(sims["mlp"][3], ax=axes[1], title="MLP, N = 8: who computes, who waits")
cnn_timeline = timeline(sims["cnn"][3], ax=axes[2], title="CNN, N = 8: who computes, who waits")
fig.tight_layout()
""")

md("""
Left: the speedup of each network against N, on log-log axes, with the ideal line: dots are the simulated server, solid lines the server's formula, dashed lines the ring all-reduce. Middle and right: the first steps of N = 8 workers with the server; look at how much of each row is computing and how much is pulling parameters, pushing gradients and waiting for the server's link.
""")

code("""
display(Markdown(
    f"At N = 32 the simulated server reaches **{speedup['mlp'][-1]:.1f}x** for the MLP and **{speedup['cnn'][-1]:.1f}x** for the CNN; "
    f"a ring all-reduce would reach **{formula['mlp', 'ring'][-1]:.1f}x** and **{formula['cnn', 'ring'][-1]:.1f}x**. "
    f"The simulated runs stay within {max(1 - s / f for name in ('mlp', 'cnn') for s, f in zip(speedup[name], formula[name, 'parameter-server'])):.0%} "
    f"of the server's formula: the gap is the last executor, the slowest of N workers' random compute times."
))
""")

code('''
"""Checks the simulated runs: the CNN scales further than the MLP, neither linearly; the formula matches them within the compute spread; the ring beats the one link at N = 32."""
assert speedup["cnn"][-1] > speedup["mlp"][-1] and speedup["cnn"][3] > speedup["mlp"][3], speedup  # N = 32 and 8
assert max(speedup["mlp"]) < 0.5 * Ns[-1] and speedup["cnn"][-1] < Ns[-1], speedup
for name in ("mlp", "cnn"):
    for s, f in zip(speedup[name], formula[name, "parameter-server"]):
        assert 0.75 * f < s < 1.05 * f, (name, s, f)
    assert formula[name, "ring"][-1] > speedup[name][-1], (name, formula[name, "ring"], speedup[name])
''')

md("""
With the server, both curves start near the ideal line and then bend. A synchronous step with N workers costs the compute of one gradient (which does not shrink as N grows: each worker still processes its own batch), plus N pulls and N pushes queued on the server's one link, plus the time for the slowest of N workers to finish (the *last executor*, lesson 03). The useful work grows like N and so does the traffic through the server's link, so the speedup levels off where that traffic catches up with compute: it can never pass compute / (2 x one message). The MLP reaches that point early: its compute per step is tiny next to its messages. The CNN, with many more FLOPs per byte, goes much further. That is the lecture's point that small and shallow networks are not good candidates for distributed training, and CNNs are.

"Communication grows like N" is a property of the **one link**, not of data parallelism. In a ring all-reduce each worker sends less than two copies of the model per step whatever N is, so its bytes per worker are nearly flat; what grows with N is the number of ring steps, 2(N-1), each paying the latency. That is why the dashed curves stay much closer to the ideal line, and why all-reduce (lesson 03) and sharded servers (lesson 05) are how systems scale.

Three knobs move these curves; try them in the panel below. A faster device (a GPU instead of 10 GFLOP/s) shrinks the compute and makes *every* network communication-bound sooner; a faster network pushes the bend to larger N; and the network itself sets the FLOPs per byte.
""")

md("""
**Predict.** Set the compute speed to 1e13 FLOP/s (a GPU) and keep the bandwidth at 1e9 B/s. Which design still gives the CNN a speedup above 10 at N = 32?
""")

code("""
from dlcourse.viz import SpeedupExplorer

explorer = SpeedupExplorer(max_workers=32, bandwidth=config.bandwidth, device_flops=config.device_flops, model="cnn")
explorer
""")

md("""
## 4. Data size vs network size

The lecture's last consideration: distributed training is for large networks or large data sets, but a *mismatch* between them hurts whatever hardware you use. A large network on little data **overfits**: it memorises the training examples and generalises poorly. A small network on lots of data **underfits**: it cannot even fit the training data. We measure both by training MLPs of two sizes (2 hidden units: 1,600 parameters; 256 hidden units: 200,000 parameters) on the first 50, 200, 1,000 and 4,000 training digits, for the same number of steps each, and comparing accuracy on the training subset with accuracy on the 1,000 test digits.
""")

md("""
**Predict.** Which of the eight runs will have the largest gap between training and test accuracy? Which will have the lowest training accuracy?
""")

code("""
sizes = (50, 200, 1000, 4000)
hidden_sizes = (2, 256)
fits = {}
for hidden in hidden_sizes:
    for n in sizes:
        torch.manual_seed(0)
        net = MLP(hidden)
        subset = split.train[:n]
        fit(net, subset, epochs=max(1, 4000 // n), batch_size=50, lr=1e-3, optimizer="adam", progress=False)
        fits[hidden, n] = (evaluate(net, subset)["accuracy"], evaluate(net, split.test)["accuracy"])
        print(f"hidden {hidden:>3} ({count_parameters(net):>7,} parameters), {n:>4} examples: "
              f"train {fits[hidden, n][0]:.3f}, test {fits[hidden, n][1]:.3f}")

fig, ax = plt.subplots(figsize=(6.5, 3.6))
for hidden, color in zip(hidden_sizes, ("tab:red", "tab:blue")):
    ax.plot(sizes, [fits[hidden, n][0] for n in sizes], "o--", color=color, label=f"{hidden} hidden: train")
    ax.plot(sizes, [fits[hidden, n][1] for n in sizes], "s-", color=color, label=f"{hidden} hidden: test")
ax.set(xscale="log", xlabel="training examples", ylabel="accuracy", ylim=(0, 1.02), title="network size vs data size")
ax.set_xticks(sizes, [str(n) for n in sizes])
ax.legend(fontsize="small");
""")

md("""
Dashed lines are accuracy on the data the network trained on, solid lines on unseen test digits; the vertical distance between a dashed and a solid line of one colour is the *generalization gap*.
""")

code('''
"""Checks the mismatch on the runs just made: the large net overfits little data, the tiny net underfits plenty."""
gap = {key: train - test for key, (train, test) in fits.items()}
big, tiny = hidden_sizes[1], hidden_sizes[0]
assert gap[big, sizes[0]] > 0.2 and gap[big, sizes[0]] > gap[big, sizes[-1]], gap
assert fits[tiny, sizes[-1]][0] < fits[big, sizes[-1]][1], fits  # tiny net's training accuracy < big net's test accuracy
assert abs(gap[tiny, sizes[-1]]) < 0.1, gap
''')

md("""
The large network reaches (nearly) perfect accuracy on 50 training digits and far less on the test digits: it has memorised them. With more data its training accuracy drops slightly and its test accuracy climbs; the gap closes. The tiny network is the opposite case: on 4,000 digits its training and test accuracies are about equal and both low, because two hidden units cannot represent ten classes well, and no amount of data or number of machines will fix that.

So before distributing, match the two: more data calls for a network with the capacity to use it, and a big network needs the data to constrain it. Distribution makes the big cases *possible* (lesson 02 for networks too large for one device, lesson 03 onwards for data too large for one machine's time budget); it does not make a mismatched pair generalise.

### What this lesson showed

- A training job's time is roughly FLOPs per example x examples x epochs / achieved FLOP/s: minutes for MNIST, years for ImageNet on one CPU.
- Per step, data parallelism sends bytes in proportion to the parameters and computes FLOPs in proportion to FLOPs per example: the CNN does several times more work per byte than the MLP, and on real processes the MLP spends a larger share of its step synchronizing.
- Simulated speedup curves bend where communication catches up with compute; the CNN scales much further than the MLP, neither linearly. Through a server's one link the traffic grows like N; a ring all-reduce keeps each worker's bytes nearly flat and pays 2(N-1) latencies instead.
- A large network overfits small data; a small network underfits large data.
""")

md("""
## Exercises

1. Repeat the speedup sweep with a 10x faster device (`device_flops=1e11`) and then with a 10x slower network (`bandwidth=1e8`), in the simulator and in the panel. For each, at which N does the CNN's speedup with the server stop growing?
   <details><summary>Hint</summary>The bend comes where the 2N messages on the server's link take about as long as one gradient's compute. Compare <code>cost[name] * batch / device_flops</code> with <code>2 * N * 4 * params[name] / bandwidth</code>.</details>

2. Sending fewer bytes moves the bend too. Use `SimConfig(servers=4, ...)` (four server shards, each with its own link and a quarter of the parameters) and compare the MLP's speedup at N = 16 with one server. Lesson 05 comes back to sharded servers.
   <details><summary>Hint</summary>Each shard carries a quarter of every message on its own link, so the queue at any one link is four times shorter.</details>

3. Use your measured GFLOP/s and `flops_per_example` to estimate how many workers like this machine would be needed to train the lecture's CNN on full MNIST for 5 epochs in 10 seconds, assuming perfect scaling. Then use section 3's curve to say why perfect scaling is unrealistic.
   <details><summary>Hint</summary>Total FLOPs = flops_per_example x 60,000 x 5; divide by 10 s and by the rate of one worker.</details>

4. Add a middle-sized network, `MLP(32)`, to the data-size experiment. Where does it sit between the two others, at 50 examples and at 4,000?
   <details><summary>Hint</summary>Add 32 to <code>hidden_sizes</code>; the figure and the dictionary pick it up. Watch the generalization gap, not just the test accuracy.</details>
""")

md("""
## References

- J. Dean, G. Corrado, R. Monga, et al. "Large Scale Distributed Deep Networks." *NIPS* 2012.
- P. Goyal, P. Dollár, R. Girshick, et al. "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour." arXiv:1706.02677, 2017.
- K. He, X. Zhang, S. Ren, J. Sun. "Deep Residual Learning for Image Recognition." *CVPR* 2016. (ResNet-50's cost per image.)
- M. Li, D. G. Andersen, J. W. Park, et al. "Scaling Distributed Machine Learning with the Parameter Server." *OSDI* 2014.
- S. Li, Y. Zhao, R. Varma, et al. "PyTorch Distributed: Experiences on Accelerating Data Parallel Training." *VLDB* 2020.
- P. Patarasuk, X. Yuan. "Bandwidth Optimal All-reduce Algorithms for Clusters of Workstations." *J. Parallel Distrib. Comput.* 2009.
""")

write("01_why_distributed.ipynb", cells)
