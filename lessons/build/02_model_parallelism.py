# ruff: noqa: E501  (markdown paragraphs stay one line each, so the notebook reflows them)
"""Builds lessons/02_model_parallelism.ipynb (committed without outputs): run it from the repository root.

    .venv/bin/python lessons/build/02_model_parallelism.py

Edit this file, not the notebook: the notebook is generated from it.
"""

from __future__ import annotations

from lesson import Cells, write

cells = Cells()
md, code = cells.md, cells.code


md("""
# 02 · Model parallelism: one network, cut into stages

The lecture's picture of **model parallelism** shows one neural network drawn across several machines: the first layers sit on machine 1, the next ones on machine 2, and so on, with arrows between the machines where the network is cut. Every machine holds only its own part of the parameters; a training example has to visit all of them in turn, forward and then backward.

After this lesson you will be able to:

- cut a network into K **stages** (consecutive groups of layers), run them in K real processes, and say which tensors cross each cut and how many bytes they are;
- explain, from a measured timeline, why plain model parallelism leaves K-1 of K stages idle;
- use GPipe's **micro-batches** (M of them per batch) to shrink that idle time, the *bubble*, to (K-1)/(M+K-1), and check the formula on a real run;
- say why the 1F1B schedule holds fewer activations than GPipe at the same bubble;
- run the lecture's *device-parallel* example, a shared LSTM whose two branches sit on two devices;
- compare the memory a device needs under model parallelism and under data parallelism.

Letters used throughout (the course's [notation](00_start_here.ipynb#The-notation)): **K** stages (one process or device each), **M** micro-batches per batch, **N** replicas when we compare with data parallelism.

Where this sits on [the map of approaches](00_start_here.ipynb#The-map-of-approaches): off the data-parallel map. Model parallelism cuts the network, not the data; lesson 07 combines the two.
""")

code("""
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from dlcourse.data import load_mnist
from dlcourse.models import SharedLSTM, count_parameters, make_model
from dlcourse.resources import fit_workers

split = load_mnist()
X, y = split.train.X[:96], split.train.y[:96]  # one batch of 96 digits: divisible by M = 1, 2, 4, 8
n, why = fit_workers(3)
print(why)
""")

md("""
## 1. Layers on different devices

Cutting a network is simplest when it is a chain of layers. The lecture's CNN is exactly that: two convolution + pooling blocks, then two dense layers, eight layers in all. `ModelParallel` cuts it into one stage per device, in a single process; with GPUs the list would read `["cuda:0", "cuda:1"]`, here both stages sit on the CPU, but the mechanics are the same. The forward pass moves the activations to the next stage's device; autograd follows that move backwards by itself.
""")

code("""
from dlcourse.model_parallel import ModelParallel, split_model, stage_shapes

cnn = make_model("cnn", seed=0)
print(ModelParallel(cnn, ["cpu", "cpu"]))
stages = split_model(cnn, 2)
for k, stage in enumerate(stages):
    print(f"stage {k}: {count_parameters(stage):>9,} parameters  {list(stage)}")
""")

md("""
Across **processes** (or machines) nothing moves by itself: stage 0 must *send* its output to stage 1, and in the backward pass stage 1 must send back the gradient of the loss with respect to that output. `run_model_parallel` does one training step that way, with two real processes joined by `torch.distributed` (point-to-point `send` and `recv`).
""")

md("""
**Predict.** Which tensor crosses the cut between the two stages, what is its shape for our batch of 96 digits, and is it bigger or smaller than the 4.4 MB of parameters that data parallelism would exchange every step?
""")

code("""
from dlcourse.model_parallel import run_model_parallel

mp = run_model_parallel(cnn, X, y, num_stages=2)
cut = stage_shapes(stages, X.shape)[0]  # stage 0's output: what is sent forward
cut_bytes = cut.numel() * 4  # float32
param_bytes = count_parameters(cnn) * 4
print(mp)
print(f"forward across the cut: activations {tuple(cut)} = {cut_bytes:,} bytes")
print(f"backward across the cut: their gradient, the same shape = {cut_bytes:,} bytes")
print(f"for comparison, all parameters: {param_bytes:,} bytes")

# the same step in one process, as the reference
reference = make_model("cnn", seed=0)
ref_loss = F.cross_entropy(reference(X), y)
ref_loss.backward()
grad_gap = max((mp.grads[name] - p.grad).abs().max().item() for name, p in reference.named_parameters())
print(f"largest gradient difference from one process: {grad_gap:.2e}")
""")

code('''
"""Checks that the two-process step has the one-process loss and gradients, within 1e-6."""
assert abs(mp.loss - ref_loss.item()) < 1e-6, (mp.loss, ref_loss.item())
assert set(mp.grads) == {name for name, _ in reference.named_parameters()}
assert grad_gap < 1e-6, grad_gap
assert cut_bytes < param_bytes / 10  # the cut carries far fewer bytes than the parameters
''')

md("""
What crossed the cut was the output of the second pooling layer: 64 feature maps of 4x4 for each of the 96 examples, about 0.4 MB, and the same amount of gradient coming back. The parameters stayed where they were. Model parallelism trades parameter traffic for *activation* traffic, which grows with the batch, not with the model; for this CNN it is ten times less than shipping the parameters. The gradients agree with a single process to rounding error: cutting the network changes where the arithmetic happens, not what it computes.

Notice also how unequal the two stages are: stage 0 holds the convolutions (about 53 thousand parameters), stage 1 the dense layers (over a million). Cutting by layer count is the simplest rule, not the best one; section 6 returns to this.
""")

md("""
## 2. Plain model parallelism idles K-1 of K stages

In a chain, stage k cannot start before stage k-1 has finished its forward pass, and in the backward pass it cannot start before stage k+1 has sent its gradient. With one batch in flight, only one stage works at any moment.
""")

md("""
The next cell runs real pipeline steps of K = 3 processes (a small MLP cut into three stages) for M = 1, 2, 4 and 8 micro-batches. Every forward and backward is padded to 80 ms, so that all stages cost the same and the machine's noise does not decide the picture; the timelines are measured with each process's clock.
""")

md("""
**Predict.** With K = 3 stages and one batch (M = 1), what fraction of the time does each process sit idle? Write a number down before you run the next cell.
""")

code("""
from dlcourse.pipeline import gpipe_bubble, measure_bubble
from dlcourse.viz import bubble

K = 3
MICROBATCHES = (1, 2, 4, 8)
mlp = make_model("mlp", seed=0)
timelines = measure_bubble(mlp, X, y, num_stages=K, microbatches=MICROBATCHES, stage_cost_s=0.08)
for t in timelines:
    print(t)
bubble(timelines[0], 1)
""")

md("""
Each row is one stage; coloured bars are work (forward, then backward), white is waiting. Look at the staircase: stage 0 works, then stage 1, then stage 2, and back up for the backward pass. Each stage is busy for one third of the step.
""")

code('''
"""Checks the M = 1 run: replayed with its own durations its stages idle (K-1)/K of the time, and each measured stage idled longer than it worked."""
plain = timelines[0]
assert plain.num_microbatches == 1
# replay(): the same run with free messages and an idle CPU, so a busy machine cannot move it
assert abs(plain.replay().bubble_fraction - (K - 1) / K) < 0.05, plain.replay()
assert all(idle > busy for idle, busy in zip(plain.idle_s, plain.busy_s)), (plain.idle_s, plain.busy_s)
''')

md("""
So the answer was two thirds: with plain model parallelism, K machines do the work of one, slowly. What model parallelism buys here is *memory* (each device holds a part of the model), not speed. To get speed back, the stages must work on different data at the same time.
""")

md("""
## 3. GPipe: micro-batches fill the pipeline

GPipe (Huang et al., 2019) cuts each batch into M **micro-batches**. Stage 0 pushes micro-batch 1 forward, hands it on, and immediately starts micro-batch 2 while stage 1 works on micro-batch 1. After all M forwards, the backwards flow back the same way; the gradients of the M micro-batches add up, and one optimizer step follows. The idle time that remains, while the pipeline fills and drains, is the **bubble**. With equal stage costs, each stage works M units of time out of M + K - 1, so

$$\\text{bubble} = \\frac{K-1}{M+K-1}.$$
""")

md("""
**Predict.** For K = 3 and M = 8, what does the formula say, and do you expect the measured timeline to match it closely?
""")

code("""
fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
gpipe8 = bubble(timelines[-1], 8, ax=axes[0])
measured = [t.bubble_fraction for t in timelines]
axes[1].plot(MICROBATCHES, measured, "o", ms=8, label="measured (3 processes)")
ms = range(1, 33)
axes[1].plot(ms, [gpipe_bubble(K, m) for m in ms], "-", label="(K-1)/(M+K-1)")
axes[1].set(xscale="log", xlabel="micro-batches M", ylabel="bubble (idle fraction)", title=f"K = {K} stages")
axes[1].legend()
fig.tight_layout()
for t in timelines:
    print(f"M = {t.num_microbatches}: measured {t.bubble_fraction:.3f}, formula {gpipe_bubble(K, t.num_microbatches):.3f}")
""")

md("""
Left, the measured timeline for M = 8: the white triangles at the start (filling) and the end (draining) are the bubble, and the middle is packed. Right, the measured bubble for each M (dots) on the formula's curve.
""")

code('''
"""Checks that every run's replayed bubble is (K-1)/(M+K-1) within 0.05, and that the wall-clock bubble shrank from M = 1 to M = 8."""
replayed = [t.replay().bubble_fraction for t in timelines]
for t, r in zip(timelines, replayed):
    assert abs(r - gpipe_bubble(K, t.num_microbatches)) < 0.05, (t, r)
assert measured[0] > measured[-1] + 0.2, measured
''')

md("""
A word on the two clocks. `bubble_fraction` is read from the wall clock: it includes the time a message takes and the time a process waits for a CPU, which grows when three processes share one or two cores (on Binder, one). `replay()` replays the same run, each stage doing its forwards and backwards in the order it did them and for as long as they took, but with free messages and a CPU always at hand: what remains is the schedule's own bubble, and that is what the formula describes.
""")

md("""
The formula holds on real processes. It also tells you the price: to push the bubble below 10% with K = 8 stages you need M ≥ 64 micro-batches, and each micro-batch must still be big enough to keep a device busy. That is why pipelines are used for large batches of large models.

Now explore it yourself. The panel below runs the same schedules on a virtual clock (a forward costs 1, a backward 2), so it redraws instantly. Drag K and M; switch the schedule between `gpipe` and `1f1b` and watch the status line.
""")

code("""
from dlcourse.viz import PipelineExplorer

PipelineExplorer(num_stages=4, num_microbatches=4)
""")

md("""
## 4. 1F1B: the same bubble, less memory

To run its backward pass, a stage must keep the activations of every micro-batch it has pushed forward and not yet pushed back. GPipe runs all M forwards first, so every stage holds M micro-batches' activations at its peak. **1F1B** (one-forward-one-backward, as in PipeDream-Flush, Narayanan et al., 2021) lets stage k run only K-1-k forwards ahead, then alternates one forward with one backward: as soon as a micro-batch's backward is done its activations are freed.
""")

md("""
**Predict.** With K = 3 stages and M = 8 micro-batches, how many micro-batches' activations does each stage hold at its peak under GPipe, and under 1F1B? Is the bubble different?
""")

code("""
from dlcourse.pipeline import run_pipeline, schedule_steps, simulate_schedule

sim_gpipe = simulate_schedule(K, 8, "gpipe")
sim_1f1b = simulate_schedule(K, 8, "1f1b")
print("virtual clock, GPipe:", sim_gpipe, "peak activations per stage:", sim_gpipe.peak_inflight)
print("virtual clock, 1F1B: ", sim_1f1b, "peak activations per stage:", sim_1f1b.peak_inflight)

steps = schedule_steps("1f1b", K, 8)  # the whole schedule as (stage, micro-batch, "F"/"B")
print("first steps of 1F1B:", steps[:8])
real_1f1b = run_pipeline(mlp, X, y, K, 8, schedule=steps, stage_cost_s=0.02)
print("real processes, 1F1B:", real_1f1b.timeline, "peak:", real_1f1b.timeline.peak_inflight)

mlp_ref = make_model("mlp", seed=0)
F.cross_entropy(mlp_ref(X), y).backward()
grad_gap_1f1b = max((real_1f1b.grads[name] - p.grad).abs().max().item() for name, p in mlp_ref.named_parameters())
print(f"largest gradient difference from one full batch in one process: {grad_gap_1f1b:.2e}")
bubble(real_1f1b.timeline, 8)
""")

md("""
In the timeline of the real 1F1B run, look at stage 0: after two forwards it alternates forward and backward, instead of running all eight forwards first.
""")

code('''
"""Checks 1F1B on real processes: peak activations K-k per stage (GPipe: M), gradients equal to one full batch."""
assert sim_gpipe.peak_inflight == [8] * K
assert real_1f1b.timeline.peak_inflight == [K - k for k in range(K)] == sim_1f1b.peak_inflight
assert abs(sim_gpipe.bubble_fraction - sim_1f1b.bubble_fraction) < 1e-9
assert grad_gap_1f1b < 1e-6, grad_gap_1f1b
''')

md("""
Both schedules have the same bubble on the virtual clock, but 1F1B's stage 0 holds at most 3 micro-batches' activations where GPipe's holds 8: its peak memory depends on K, not on M. That is what lets 1F1B use many micro-batches (a small bubble) without running out of memory. And the accumulated gradient of 8 micro-batches equals the gradient of the whole batch, computed in one process: the schedule changes the order, never the result.
""")

code("""
from IPython.display import Markdown

Markdown(
    f"On the wall clock, this real 1F1B run idled **{real_1f1b.timeline.bubble_fraction:.0%}** of its stage time; replayed with its own durations, "
    f"**{real_1f1b.timeline.replay().bubble_fraction:.0%}**; the formula says **{gpipe_bubble(K, 8):.0%}**. Each step was padded to only 20 ms here, "
    "so the time of messages and of waiting for a CPU counts for more than in section 3."
)
""")

md("""
## 5. Device-parallel branches: the shared LSTM

The lecture's Keras example encodes two sequences (say, two tweets of 140 steps with 256 features each) with **one shared LSTM** of 64 units, runs the first branch on one GPU and the second on another, and concatenates the two codes on the CPU. This is model parallelism of a different shape: not a chain cut into stages, but two independent branches that can run *at the same time*. The weights are shared, so both branches' gradients must end up in the one set of weights.
""")

md("""
**Predict.** Will the branch-parallel model give exactly the same output and the same gradient of the shared LSTM weights as the plain model on one device?
""")

code("""
from dlcourse.model_parallel import BranchParallelLSTM

torch.manual_seed(0)
lstm = SharedLSTM()  # LSTM(256 -> 64) shared by both branches, then a dense layer on the concatenation
a, b = torch.randn(4, 140, 256), torch.randn(4, 140, 256)
branches = BranchParallelLSTM(lstm, devices=("cpu", "cpu"), merge_device="cpu")  # ("cuda:0", "cuda:1") on 2 GPUs
print(lstm)
print(branches)

out_plain, out_branches = lstm(a, b), branches(a, b)
out_plain.sum().backward()
out_branches.sum().backward()
lstm_gap = max(
    (p.grad - q.grad).abs().max().item()
    for p, q in zip(lstm.lstm.parameters(), branches.model.lstm.parameters())
)
print(f"output difference {(out_plain - out_branches).abs().max().item():.2e}, shared-weight gradient difference {lstm_gap:.2e}")
""")

code('''
"""Checks that two device branches give the one-device output and shared-weight gradient, within 1e-6."""
assert torch.allclose(out_plain, out_branches, atol=1e-6)
assert lstm_gap < 1e-6, lstm_gap
''')

md("""
Same output, same gradient. Each branch reads a copy of the shared weights on its own device; because that copy is differentiable, the backward pass adds both branches' gradients into the one weight, exactly as a single device does. On two GPUs the branches overlap in time, which is where the speed comes from; on a CPU they run one after the other, so here you see the correctness, not the speedup.
""")

md("""
## 6. Memory per device: model parallel vs data parallel

Why bother with any of this? Because a model can be too big for one device. Under **data parallelism** (lesson 03) each of N devices holds a full replica of the parameters (and their gradients) and the activations of its 1/N of the batch. Under **model parallelism** each of K devices holds only its stage's parameters, and that stage's activations for the batch. `memory_per_rank` adds these up for one step (on the `meta` device: shapes only, no memory used).
""")

md("""
**Predict.** For the CNN and a batch of 96, which strategy needs less memory on the fullest device with 4 devices? Does the answer change if the model had ten times more parameters?
""")

code("""
from dlcourse.model_parallel import memory_per_rank

ranks = (1, 2, 4)
footprints = {
    strategy: [memory_per_rank(cnn, tuple(X.shape), r, strategy) for r in ranks]
    for strategy in ("model-parallel", "data-parallel")
}
fig, ax = plt.subplots(figsize=(6, 3.2))
width = 0.35
for i, (strategy, fps) in enumerate(footprints.items()):
    ax.bar([j + i * width for j in range(len(ranks))], [fp.max_rank_bytes / 2**20 for fp in fps], width, label=strategy)
    for fp in fps:
        print(fp, "parameter MB per rank:", [round(p / 2**20, 2) for p in fp.parameter_bytes])
ax.set_xticks([j + width / 2 for j in range(len(ranks))], [f"{r} devices" for r in ranks])
ax.set(ylabel="MiB on the fullest device", title="memory of one training step, lecture CNN, batch 96")
ax.legend();
""")

md("""
The bars show what the fullest device must hold: parameters, their gradients and the activations kept for the backward pass.
""")

code('''
"""Checks the counts' claims for this CNN: on 4 devices model parallelism's fullest device needs less than data parallelism's, but more than a quarter of one device's, because one stage holds over 90% of the parameters."""
mp1, mp4, dp4 = footprints["model-parallel"][0], footprints["model-parallel"][-1], footprints["data-parallel"][-1]
assert mp4.max_rank_bytes < dp4.max_rank_bytes, (mp4, dp4)
assert mp4.max_rank_bytes > mp1.max_rank_bytes / 4, (mp1, mp4)
assert max(mp4.parameter_bytes) > 0.9 * param_bytes, mp4.parameter_bytes
''')

md("""
With data parallelism every device pays for the full 4.4 MB of parameters plus as much again for their gradients, however many devices you add; only the activations shrink. With model parallelism the parameter memory is divided, but unevenly here: the stage holding the 1024x1024 dense layer keeps most of it, so the fullest device gains less than 4x. For a model ten times larger the parameters dominate, and model parallelism is the only one of the two that lets the model fit at all: this is the lecture's point that *model parallelism scales to large models*.

The lecture's other half: data parallelism has an "easy implementation, good fault tolerance and cluster utilization". Easy, yes: every worker runs the whole model (lesson 03). The fault tolerance belongs to one form of it, the **asynchronous** one with a parameter server (lesson 04): the server applies whatever updates arrive, so when a worker dies the others go on, and only that worker's shard goes untrained until it is restarted. **Synchronous** data parallelism with an all-reduce has no such slack: every step needs every worker, so one dead worker stops the whole job until it is restarted, from a checkpoint (lesson 07 shows the synchronous job stopping). Model parallelism is worse still: each stage holds the only copy of its layers. Lesson 07 combines model and data parallelism.

### What this lesson showed

- Cutting a network across processes sends activations forward and their gradients back; the result equals the uncut network (checked to 1e-6).
- Plain model parallelism leaves K-1 of K stages idle (measured: about 2/3 for K = 3).
- M micro-batches shrink the idle share to (K-1)/(M+K-1) (measured within 0.05 on real processes).
- 1F1B has GPipe's bubble but holds activations of at most K micro-batches instead of M.
- Device-parallel branches with shared weights give the same result as one device.
- Model parallelism divides parameter memory; data parallelism replicates it. The fault tolerance the lecture credits to data parallelism belongs to its asynchronous form.
""")

md("""
## Exercises

1. Run `measure_bubble` with K = 2 and with K = 4 (four processes at most!) for M = 1, 2, 4, 8 and add the points to the bubble figure. How many micro-batches does each K need for a bubble under 20%?
   <details><summary>Hint</summary>Solve (K-1)/(M+K-1) < 0.2 for M: M > 4(K-1). Check your answer with <code>gpipe_bubble</code> before running the processes.</details>

2. The formula assumes equal stage costs. On the virtual clock, make the backward pass cost three times the forward (`simulate_schedule(K, M, "gpipe", forward_s=1, backward_s=3)`). Does the bubble change? Now imagine one stage twice as slow as the others: which stage sets the pace?
   <details><summary>Hint</summary>Compare <code>bubble_fraction</code> with <code>expected_bubble</code>. For unequal stages, think of the slowest stage as the only one that is never idle in the middle of the pipeline.</details>

3. Section 1 cut the CNN into stages by layer count, and the stages were badly balanced. Using `split_model` and `count_parameters`, find how many parameters each stage holds for K = 2, 3, 4. Where would you cut the CNN to balance *parameters*, and where to balance *compute*?
   <details><summary>Hint</summary>The convolutions have few parameters but cost most of the arithmetic (each 5x5 filter is applied at every position); the first dense layer is the opposite. Balancing memory and balancing time may call for different cuts.</details>

4. Count the bytes that cross the cuts of the CNN for K = 4 and a batch of 96 (use `stage_shapes`). Compare them with the bytes a data-parallel step exchanges (all parameters, lesson 03). At what batch size would model parallelism send more than data parallelism?
   <details><summary>Hint</summary>Activation bytes grow linearly with the batch; parameter bytes do not depend on it. Add forward and backward traffic over all cuts.</details>

5. Write your own schedule as a list of `(stage, micro_batch, "F" or "B")` steps for K = 2, M = 4 (for example, run the backwards in reverse order) and run it with `run_pipeline(mlp, X, y, 2, 4, schedule=your_steps)`. Are the gradients still equal to the full batch's? Assignment A4 builds on this.
   <details><summary>Hint</summary>Every micro-batch needs its forward on every stage before its backward; the library checks the order and tells you what is wrong. Compare <code>result.grads</code> with a plain <code>backward()</code> as in section 4.</details>
""")

md("""
## References

- J. Dean, G. Corrado, R. Monga, et al. "Large Scale Distributed Deep Networks." *NIPS* 2012. (DistBelief: a model partitioned across machines.)
- Y. Huang, Y. Cheng, A. Bapna, et al. "GPipe: Efficient Training of Giant Neural Networks using Pipeline Parallelism." *NeurIPS* 2019.
- D. Narayanan, A. Phanishayee, K. Shi, X. Chen, M. Zaharia. "Memory-Efficient Pipeline-Parallel DNN Training." *ICML* 2021. (PipeDream-Flush, the 1F1B schedule.)
- D. Narayanan, A. Harlap, A. Phanishayee, et al. "PipeDream: Generalized Pipeline Parallelism for DNN Training." *SOSP* 2019.
- S. Li, Y. Zhao, R. Varma, et al. "PyTorch Distributed: Experiences on Accelerating Data Parallel Training." *VLDB* 2020.
- The PyTorch documentation of `torch.distributed.pipelining` (ScheduleGPipe, Schedule1F1B): the same schedules in PyTorch.
""")

write("02_model_parallelism.ipynb", cells)
