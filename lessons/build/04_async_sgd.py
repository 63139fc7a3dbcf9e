"""Build lessons/04_async_sgd.ipynb (no outputs): update-based sync vs async SGD, stale gradients.

Run: .venv/bin/python lessons/build/04_async_sgd.py
The notebook is generated: edit this file, not the notebook.
"""

from __future__ import annotations

from lesson import code_cell as code
from lesson import markdown as md
from lesson import write

cells = [
    md(
        """# 04 · Asynchronous SGD and the stale-gradient problem

*On the map of approaches (lesson 00): update-based, centralized, asynchronous (and synchronous, to
compare).*

In lesson 03 the workers sent their *parameters* to be averaged. This lesson follows the lecture
to the next idea: the workers send their *updates* (gradients) to a **parameter server**, and the
server may apply each update the moment it arrives, without waiting for the others. That is
**asynchronous SGD** (Dean et al. 2012).

By the end you will be able to:

- run update-based synchronous and asynchronous SGD on a real parameter server (real processes
  on this machine) and on the simulated cluster, and read the timeline of each: who computes,
  who waits;
- explain why asynchronous SGD keeps its throughput when one worker is slow, and measure it;
- measure how much sooner asynchronous workers incorporate the others' updates;
- say what the staleness **σ** of a gradient is, predict its mean for N workers, and check the
  prediction against a histogram;
- show how convergence per epoch and per second changes as N grows, and what happens over many
  epochs.

**The lecture's picture, in words.** A parameter server sits in the middle and holds the
parameter vector W. Around it are N = 3 workers. Each one pulls W, computes an update
ΔW_{i,n} on its own slice of the data, and pushes it back; the server subtracts λ·ΔW_{i,n} and the
next worker pulls the new W. The lecture's figure of the stale gradient problem says it in one
line: "by the time a worker has finished these calculations and applies the results to the
global parameter vector, the parameters may have been updated several times". (An example of
ours, not the lecture's: worker 1 pulls version 5 of W, computes, and by the time its update lands
the server is at version 8, because workers 2 and 3 pushed in between. That gap of 3 versions is
the *stale gradient*.)

Notation used throughout (lesson 00's table): **N** workers; **W_i** the parameters after i
server updates (its *version* i); **ΔW_{i,n}** worker n's gradient; **λ** (lambda, `lr`) the
learning rate; **S** how many updates the server waits for before it applies them (S = N:
synchronous, S = 1: asynchronous); **σ** (sigma) the staleness of an update."""
    ),
    md(
        """## 1. Synchronous and asynchronous updates on a real parameter server

The library runs a real parameter server: one server process holds W, and N worker processes
each own a shard of the training data. They exchange real messages over `torch.distributed`.
`softsync=S` chooses the rule:

- **synchronous, S = N**: the server waits for one update from every worker, averages them and
  applies the average; every worker then pulls the new W. This is exactly the parameter averaging
  of lesson 03, done with gradients instead of parameters.
- **asynchronous, S = 1**: the server applies each update on arrival:
  W_{i+1} = W_i − λ ΔW_{i,n}. Nobody waits for anybody.

We keep the run small so it fits a laptop or Binder: the MLP (a two-layer network, much cheaper
than the lecture's CNN), N = 3 workers plus the server (4 processes in all), a budget of 12
mini-batches of 50 examples per worker. One worker is a **straggler**: it sleeps 0.25 s in every
step, as if it ran on a much slower or busier machine. `fit_workers` first checks how many
processes this machine can take."""
    ),
    code(
        """
from dataclasses import replace

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from dlcourse import viz
from dlcourse.parameter_server import PSConfig, run_parameter_server
from dlcourse.resources import fit_workers
from dlcourse.sim import SimConfig, simulate
from dlcourse.sim.parameter_server import incorporation_delays

processes, why = fit_workers(4)  # 3 workers + 1 server
print(why)
N_REAL = max(2, min(3, processes - 1))  # real workers we start (the server is one more process)
# worker 0 is the straggler: it sleeps slow_delay seconds in every step. Both rules get the same
# budget, 12 x N_REAL mini-batches; asynchronous workers take theirs from one shared order
real_setup = dict(
    num_workers=N_REAL, model="mlp", batch_size=50, steps=12, lr=0.1, slow_worker=0, slow_delay=0.25
)
"""
    ),
    md(
        """**Predict.** Worker 0 is many times slower than the others (a step of the MLP takes a few
milliseconds; worker 0 adds a quarter of a second). The server keeps a log of the moment it
applies each update. Both rules process the same mini-batches: 12 per worker's shard. In the
asynchronous run the server hands out the next mini-batch of one shared order with the parameters
(what asynchronous modes do by default), so whoever is free takes it. Which rule gets through the whole budget
sooner, end to end? By roughly how much? How many of the mini-batches will the straggler compute in
each run? And in the synchronous run, what
fraction of their time will the fast workers (the one or two besides worker 0: the line printed
above says how many processes this machine takes) spend waiting?"""
    ),
    code(
        """
real = {}
for name, S in (("sync", N_REAL), ("async", 1)):
    real[name] = run_parameter_server(PSConfig(softsync=S, **real_setup))
    print(name, real[name])
"""
    ),
    md(
        """The real parameter server records *when* it applied each update (`update_times`), and each
worker records how long it computed and how long it waited for the server (`worker_stats`). The
left figure is the server's log: updates applied against wall-clock seconds; its slope is the
throughput. The right figure is the share of each worker's time spent waiting."""
    ),
    code(
        '''
def applied_updates(result):
    """(seconds, updates applied so far) from the server's log: one time per applied update."""
    return result.update_times, list(range(1, len(result.update_times) + 1))


def idle_share(result):
    """Fraction of its time each worker waited for the server."""
    return [w["wait_s"] / (w["wait_s"] + w["compute_s"]) for w in result.worker_stats]


fig, (ax_log, ax_idle) = plt.subplots(1, 2, figsize=(11, 3.5))
for name, r in real.items():
    ax_log.step(*applied_updates(r), where="post", label=name)
ax_log.set(xlabel="wall-clock seconds", ylabel="updates applied", title="the server's log (real processes)")
ax_log.legend()
viz.idle_fraction({name: idle_share(r) for name, r in real.items()}, ax=ax_idle)
ax_idle.set_title("real run: time spent waiting (worker 0 is the straggler)")
plt.show()
'''
    ),
    md(
        """Look at the two curves. The asynchronous line shoots up: the fast worker(s) keep pushing while
the straggler is still asleep, and it ends long before the synchronous one. The synchronous line
climbs in equal stairs, one stair per straggler step, because every step waits for the slowest
worker: the **last executor** of lesson 03. On the right, the fast workers of the synchronous
run spend most of their time waiting; in the asynchronous run they wait only for the server to
answer their own messages (on a small shared machine that can still be a good part of their
time, because a step of the MLP takes only milliseconds: the next cell prints both shares).

The end-to-end comparison is fair because both runs process the same examples. In the
synchronous run every worker computes one mini-batch of its own shard per step, 12 steps each.
In the asynchronous run the fast workers take most of the budget and the straggler only a few
mini-batches (printed below): as in Downpour SGD, where workers take the next mini-batch from a
shared pool, and as in the simulator below. Every example is still used once."""
    ),
    code(
        '''
def end_to_end_rate(result):
    """End-to-end throughput: every example processed over the server's first-to-last message."""
    return result.examples / result.wall_s


rates = {name: end_to_end_rate(r) for name, r in real.items()}
fast_idle = {name: sum(idle_share(r)[1:]) / (N_REAL - 1) for name, r in real.items()}
print({k: f"{v:.0f} examples/s" for k, v in rates.items()}, f"ratio {rates['async'] / rates['sync']:.1f}x")
print({k: f"{v:.0%} idle" for k, v in fast_idle.items()}, "(fast workers)")
print({k: r.updates_per_worker for k, r in real.items()}, "mini-batches per worker")
walls = {name: r.wall_s for name, r in real.items()}
print({k: f"{v:.2f} s" for k, v in walls.items()}, "wall time of the whole run")
'''
    ),
    code(
        '''
"""Checks the real runs: with a straggler, async is faster end to end; its fast workers do more, wait less."""
assert rates["async"] > 1.5 * rates["sync"], rates
assert real["async"].examples == real["sync"].examples, "the same budget of examples"
async_steps = real["async"].updates_per_worker
assert async_steps[0] < min(async_steps[1:]), async_steps  # the straggler computed fewer mini-batches
assert fast_idle["sync"] > 0.5 and fast_idle["async"] < fast_idle["sync"], fast_idle
assert real["async"].staleness_summary()["mean"] > 0, "asynchronous updates are stale"

'''
    ),
    md(
        """The last line checks the price of that speed. In the synchronous run every gradient was
computed from the current parameters (staleness 0, by the rule itself: nobody pulls before all N
updates of the step are applied). In the asynchronous run some gradients arrived after other
updates had already changed W: they were *stale*. Section 3 measures how stale.

## 2. The same on the simulated cluster, with its timeline

The real run shows what happens on this machine, but this machine is small and shared, and its
clock is noisy. The simulator (`dlcourse.sim`) runs the same rules with real gradients of the
same MLP, on a **virtual clock**: compute time comes from the model's FLOPs, message time from
bytes and bandwidth. Every run is reproducible, so we can draw each worker's timeline. We copy the
real setup: three workers, worker 0 four times slower (`worker_speeds`). As in the real
asynchronous run, the server deals the same shared order of mini-batches, one per pull, so fast
workers simply do more steps.

**Predict.** In the simulated timeline, what share of their time will workers 1 and 2 wait under
each rule? And after worker 1 pushes an update, how long until another worker first computes with
it, under each rule?"""
    ),
    code(
        """
base = SimConfig(num_workers=3, batch_size=50, epochs=1, lr=0.1, worker_speeds=(0.25, 1.0, 1.0))
sim = {policy: simulate(replace(base, policy=policy)) for policy in ("sync", "async")}
for r in sim.values():
    print(r)

fig, axes = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
for ax, (name, r) in zip(axes, sim.items()):
    viz.timeline(r, ax=ax, title=f"{name}: {r.examples_per_s:,.0f} examples per virtual second")
axes[0].set_xlim(0, max(r.virtual_s for r in sim.values()))  # one time axis: show the longer run whole
axes[0].set_xlabel("")
fig.tight_layout()
plt.show()
"""
    ),
    md(
        """Each lower row is a worker. The two rows on top are the server: its network link (busy
while a push or pull goes through it) and its CPU (busy while it applies an update), each
labelled with the share of the time it was busy. In the synchronous timeline, workers 1 and 2
compute briefly and then sit in long *wait* bars until the straggler (worker 0) pushes: the step
ends when the last executor arrives. In the asynchronous timeline there is almost no waiting:
workers 1 and 2 compute back to back, and the whole epoch ends much earlier on the shared time
axis. The server's link is busier too, because more updates pass through it per second."""
    ),
    code(
        '''
"""Checks the simulator: with a straggler, async beats sync's throughput, idles less, busies the link."""
assert sim["async"].examples_per_s > 1.5 * sim["sync"].examples_per_s
assert min(sim["sync"].idle_fraction[1:]) > 0.5 and max(sim["async"].idle_fraction[1:]) < 0.2
assert sim["async"].link_utilization[0] > 1.5 * sim["sync"].link_utilization[0]
'''
    ),
    md(
        """### Others' updates arrive sooner

The lecture gives asynchronous SGD a second advantage besides throughput: "worker machines can
potentially incorporate information (parameter updates) from other workers sooner than when using
synchronous updating". The simulator can measure it. For every update, `incorporation_delays`
finds the first moment another worker starts computing from parameters that contain it, and
subtracts the moment the update was pushed. In the synchronous run a fast worker's update waits
for the straggler's before the step is applied; in the asynchronous run it is applied on arrival,
and the next pull carries it."""
    ),
    code(
        """
delays = {name: incorporation_delays(r) for name, r in sim.items()}
for name, d in delays.items():
    mean_ms, median_ms = 1e3 * sum(d) / len(d), 1e3 * sorted(d)[len(d) // 2]
    print(f"{name:5s}: another worker computes with an update {mean_ms:.2f} ms after its push on average "
          f"(median {median_ms:.2f} ms, {len(d)} updates)")
fig, ax = plt.subplots(figsize=(6, 3))
ax.hist([[1e3 * x for x in d] for d in delays.values()], bins=20, label=list(delays))
ax.set(xlabel="ms from push to another worker's compute", ylabel="updates")
ax.legend()
plt.show()
"""
    ),
    code(
        '''
"""Checks that the async run's updates reach the other workers sooner, on average, than the sync run's."""
mean_delay = {name: sum(d) / len(d) for name, d in delays.items()}
assert mean_delay["async"] < 0.75 * mean_delay["sync"], mean_delay
'''
    ),
    md(
        """### Explore: the last executor as N grows

The straggler panel runs sync and async side by side. Here stragglers are random: each step has a
10% chance to take 4 times longer. Move the **workers N** slider: with more workers, almost every
synchronous step contains at least one straggler, so sync's idle bars grow, while async's stay
low. (The panel redraws when you release the slider.)"""
    ),
    code(
        """
# device_flops=1e9: workers 10x slower than the default, so that compute dominates the messages
panel_base = SimConfig(batch_size=50, epochs=1, device_flops=1e9)
stragglers = viz.StragglerExplorer(num_workers=4, straggler_prob=0.1, base=panel_base)
stragglers
"""
    ),
    code(
        """
stragglers.num_workers.value = 16  # what moving the slider does
stragglers
"""
    ),
    md(
        """## 3. The stale-gradient problem

A gradient takes time to compute. Worker n pulls W at version v, computes ΔW_{i,n} from it, and
pushes. Meanwhile the other workers keep pushing, and the server keeps applying. When worker n's
update is finally applied the server is at some version v' ≥ v. Its **staleness** is

  σ = v' − v = the number of server versions applied between the pull and the application.

σ = 0 means the gradient was computed on exactly the parameters it now changes (always true in
synchronous SGD). A large σ means the update was computed for a W that no longer exists.
(Zhang et al. 2016 count the update itself as well: their τ is our σ + 1. The lecture gives
staleness no letter; in this course τ is the compression threshold of lesson 06.)

**Predict.** Eight identical workers run asynchronous SGD; each gradient takes about the same
time. What will the mean staleness be? Write a number down before you run the next cell, and a
one-line reason."""
    ),
    code(
        """
# identical workers (no stragglers), compute-bound as in the panel above
sweep_base = dict(policy="async", batch_size=50, epochs=2, lr=0.1, device_flops=1e9)
eight = simulate(SimConfig(num_workers=8, **sweep_base))
summary = eight.staleness_summary()
print(f"N = 8: mean staleness σ {summary['mean']:.2f}, max {summary['max']}")
print("the first 8 updates of the run:", eight.staleness[:8])
viz.staleness_histogram(eight)
"""
    ),
    md(
        """The histogram peaks at 7 = N − 1 and the dashed mean line sits close to it. Here is why. In
steady state every worker is somewhere in its own cycle of pull, compute, push. While worker n
computes one gradient, each of the *other* N − 1 workers finishes about one gradient of its own,
and the server applies each of them on arrival. So N − 1 versions pass between n's pull and the
application of n's update. The spread around N − 1 comes from compute times that vary by about
10% from step to step: a slightly slow step sees one more update go by, a quick one one fewer.
The first N updates of the run (printed) have σ = 0, 1, …, N − 1: the first push finds a
server nobody has updated yet, the second one update, and so on. With real stragglers (exercise 2)
the right tail grows long."""
    ),
    code(
        '''
"""Checks that async SGD's staleness with N = 8 has mean about N - 1, peak N - 1, and starts 0..N-1."""
N = eight.config.num_workers
assert abs(summary["mean"] - (N - 1)) < 1.0, summary["mean"]
counts = {int(sigma): c for sigma, c in summary["histogram"].items()}
assert max(counts, key=counts.get) == N - 1, counts  # the most common staleness is N - 1
assert eight.staleness[:N] == list(range(N)), eight.staleness[:N]
'''
    ),
    md(
        """### Convergence per epoch and per second as N grows

Staleness is the price of asynchronous throughput. Does it matter? We run asynchronous SGD with
N = 1, 2, 4, 8 and 16 workers for two epochs, same learning rate, same data, and plot test
accuracy two ways: per **epoch** (how much the model learns from each example) and per
**virtual second** (how fast the cluster gets there)."""
    ),
    code(
        """
Ns = (1, 2, 4, 8, 16)
by_n = {N: simulate(SimConfig(num_workers=N, **sweep_base)) for N in Ns}
for N, r in by_n.items():
    s = r.staleness_summary()
    print(
        f"N = {N:2d}: staleness σ mean {s['mean']:5.2f}  {r.examples_per_s:8,.0f} examples/s  "
        f"accuracy after 2 epochs {r.test.accuracy:.3f}"
    )

fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
viz.curves({f"N = {N}": r for N, r in by_n.items()}, x="epoch", metrics=("accuracy",), axes=[axes[0]])
per_second = {}
for N, r in by_n.items():
    seconds, accuracy = r.time_curve("accuracy")
    per_second[f"N = {N}"] = {"x": seconds[1:], "accuracy": accuracy[1:]}  # time 0 has no place on a log axis
viz.curves(per_second, x="second", metrics=("accuracy",), axes=[axes[1]])
viz.throughput({"async": (list(Ns), [r.examples_per_s for r in by_n.values()])}, ax=axes[2])
axes[1].set_xscale("log")
plt.show()
"""
    ),
    code(
        """
final = {N: r.test.accuracy for N, r in by_n.items()}
display(
    Markdown(
        "Read the three panels together. On the right, throughput grows almost in proportion to N: "
        f"16 workers process {by_n[16].examples_per_s / by_n[1].examples_per_s:.1f} times as many "
        "examples per second as one, because nobody waits. In the middle, per virtual second (a log "
        f"axis), 16 workers finish two epochs in {by_n[16].virtual_s / by_n[1].virtual_s:.0%} of the "
        "time one worker needs. But on the left, per epoch, the model learns *less from each example* "
        f"as N grows. After two epochs: N = 1 {final[1]:.0%}, N = 2 {final[2]:.0%} (almost the same), "
        f"N = 4 {final[4]:.0%}, N = 8 {final[8]:.0%}, and N = 16, whose updates are about 15 versions "
        f"stale, {final[16]:.0%}. The lecture's warning, “high gradient staleness can significantly "
        "reduce the network convergence speed and even prevent some configurations from converging”, "
        "is visible here: at N = 16 the gain in examples per second is eaten by what each example is worth."
    )
)
"""
    ),
    code(
        '''
"""Checks the sweep: staleness, throughput grow with N; accuracy at 2 epochs: N=1 ~ N=2 > 4 > 8 > 16."""
means = [by_n[N].staleness_summary()["mean"] for N in Ns]
speeds = [by_n[N].examples_per_s for N in Ns]
assert all(a < b for a, b in zip(means, means[1:])), means
assert all(a < b for a, b in zip(speeds, speeds[1:])) and speeds[-1] > 12 * speeds[0], speeds
assert by_n[16].virtual_s < by_n[1].virtual_s / 8
assert abs(final[1] - final[2]) < 0.03 and final[2] > final[4] > final[8] > final[16], final
assert final[16] < final[1] - 0.4, final
'''
    ),
    md(
        """## 4. Accuracy as epochs grow

The lecture's criteria for choosing an approach include the "maximum attainable accuracy as
epochs → ∞". Two epochs say little about that. The simulator can afford a longer run: ten
epochs, synchronous against asynchronous, with N = 8 and N = 16 workers, the same λ = 0.1.

**Predict.** Per epoch, synchronous SGD takes one step per N gradients (their average), while
asynchronous SGD takes N steps of stale gradients. Over ten epochs, which ends higher at N = 8?
At N = 16? Do the curves cross?"""
    ),
    code(
        """
long_runs = {
    f"{policy}, N = {n}": simulate(SimConfig(num_workers=n, **dict(sweep_base, policy=policy, epochs=10)))
    for n in (8, 16)
    for policy in ("sync", "async")
}
fig, ax = plt.subplots(figsize=(8, 3.6))
viz.curves(long_runs, x="epoch", metrics=("accuracy",), axes=[ax])
plt.show()
per_epoch = {name: [p.accuracy for p in r.evals if p.epoch == int(p.epoch)] for name, r in long_runs.items()}
for name, acc in per_epoch.items():
    print(f"{name:14s} " + " ".join(f"{a:.2f}" for a in acc))
"""
    ),
    md(
        """Each row is a run's test accuracy at epochs 0, 1, …, 10. At N = 8 the synchronous run is
ahead at some early epoch, then asynchronous SGD passes it and ends higher: eight updates per
eight gradients, each about 7 versions stale, beat one averaged update per eight fresh ones at
this λ. At N = 16, from the second epoch on, synchronous SGD stays ahead for good: asynchronous
SGD, with staleness about 15, never gets going (it stays below 50%), while synchronous SGD keeps
climbing. "Even prevent some configurations from converging"
is this run. Lesson 05 tames the staleness so that N = 16 can learn asynchronously too."""
    ),
    code(
        '''
"""Checks the long runs: N = 8, sync leads early, async ends higher; N = 16, sync leads from epoch 2 on."""
sync8, async8 = per_epoch["sync, N = 8"], per_epoch["async, N = 8"]
sync16, async16 = per_epoch["sync, N = 16"], per_epoch["async, N = 16"]
assert any(s > a for s, a in zip(sync8[1:4], async8[1:4])) and async8[-1] > sync8[-1] + 0.03, (sync8, async8)
assert max(async16[1:]) < 0.5 and sync16[-1] > async16[-1] + 0.3, (sync16, async16)
assert all(s > a for s, a in zip(sync16[2:], async16[2:])), (sync16, async16)
assert sync16[-1] > sync16[5] + 0.03, sync16  # synchronous SGD is still climbing at epoch 10
'''
    ),
    md(
        """## What we saw

- **Update-based synchronous SGD is parameter averaging in disguise**: with S = N every gradient
  is computed on the same W and none is stale, but every step waits for the last executor.
- **Asynchronous SGD removes the waiting.** On real processes and in the simulator, the fast
  workers kept computing while the straggler was slow, so the server applied more updates per
  second. This is the lecture's "higher throughput: workers spend more time performing useful
  computation instead of waiting".
- **Asynchronous workers incorporate each other's updates sooner**: a fast worker's update reached
  the others' computation in less time than when it had to wait for the step's last executor.
- **The price is staleness.** With N workers of similar speed each update is about N − 1 versions
  old when it is applied. The more workers, the staler the gradients, and the less each epoch
  teaches the model; over ten epochs, eight asynchronous workers overtook synchronous SGD, sixteen
  never learned.

Lesson 05 takes the remedies the lecture lists (a learning rate that shrinks with σ, soft
synchronization with S between 1 and N, and a bound on staleness) and puts them on one panel. The
same runs work from a terminal:

```
dlcourse train --strategy async-ps --workers 3 --softsync 1 --model mlp --epochs 1
dlcourse simulate --policy async --workers 8 --epochs 2 --json async8.json
```"""
    ),
    md(
        """## Exercises

1. Re-run section 1 with `slow_delay=0.0` (no straggler). Does async still beat sync on this
   machine, and by how much? Explain the difference with the straggler run.

<details><summary>Hint</summary>

Without a straggler the synchronous step waits only for ordinary variation between workers and for
the server's averaging. Compare `end_to_end_rate` for both runs and the fast workers' idle shares.
Expect a smaller gap, and a noisy one: the machine is shared.
</details>

2. Predict the mean staleness for N = 4 and N = 32 asynchronous workers, then simulate both with
   `sweep_base`. How close is N − 1? What changes if you add stragglers (`straggler_prob=0.1`)?

<details><summary>Hint</summary>

`simulate(SimConfig(num_workers=32, **sweep_base)).staleness_summary()`, and
`SimConfig(num_workers=8, straggler_prob=0.1, **sweep_base)`. With stragglers the mean stays
near N − 1 but the right tail grows: a slow step lets many more updates pass.
</details>

3. In the simulated straggler run of section 2, which worker's updates are the stalest? Count the
   staleness per worker (the simulator's `apply_log` says which worker each applied update came
   from, in the same order as `staleness`).

<details><summary>Hint</summary>

`from collections import defaultdict`; zip `sim["async"].apply_log` with `sim["async"].staleness`
and average σ per worker. The slow worker sees many fast updates go by while it computes.
</details>

4. Give all N = 16 workers a learning rate 16 times smaller (`lr=0.1 / 16`) in the sweep. Does
   accuracy per epoch recover? What does that suggest about *why* stale gradients hurt?

<details><summary>Hint</summary>

A stale gradient points in a direction that was right for an older W. A smaller step moves less
far in a wrong direction. Lesson 05 makes the step depend on each update's own σ instead.
</details>"""
    ),
    md(
        """## References

- J. Dean, G. Corrado, R. Monga, et al. *Large Scale Distributed Deep Networks.* NIPS 2012
  (Downpour SGD: the parameter server and asynchronous updates).
- M. Li, D. G. Andersen, J. W. Park, et al. *Scaling Distributed Machine Learning with the
  Parameter Server.* OSDI 2014.
- W. Zhang, S. Gupta, X. Lian, J. Liu. *Staleness-aware Async-SGD for Distributed Deep Learning.*
  IJCAI 2016 (staleness, its histogram, n-softsync).
- Q. Ho, J. Cipar, H. Cui, et al. *More Effective Distributed ML via a Stale Synchronous Parallel
  Parameter Server.* NIPS 2013.
- B. Recht, C. Re, S. Wright, F. Niu. *Hogwild!: A Lock-Free Approach to Parallelizing Stochastic
  Gradient Descent.* NIPS 2011.
- Lecture: *Distributed Deep Learning* (L. Dong), parts "Asynchronous Stochastic Gradient Descent"
  and "Problem of Async SGD – Stale Gradient Problem"."""
    ),
]


write("04_async_sgd.ipynb", cells)
