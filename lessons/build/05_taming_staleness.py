"""Build lessons/05_taming_staleness.ipynb (no outputs): the three remedies for stale gradients.

Run: .venv/bin/python lessons/build/05_taming_staleness.py
The notebook is generated: edit this file, not the notebook.
"""

from __future__ import annotations

from lesson import code_cell as code
from lesson import markdown as md
from lesson import write

cells = [
    md(
        """# 05 · Taming stale gradients

Lesson 04 ended with a problem: asynchronous SGD keeps every worker busy, but with N workers each
update is about N − 1 server versions old when it is applied, and with 16 workers the model
learned far less per epoch. The lecture lists three ways to deal with stale gradients, and adds a
fourth concern, the server itself. This lesson puts them on one panel and measures each.

By the end you will be able to:

- scale each update's learning rate by its staleness (λ_n = λ / tau), and plug in your own rule
  f(λ, tau), in the simulator and on a real parameter server;
- use **soft synchronization** (wait for S of the N updates) and read the trade-off between
  throughput and staleness as S moves;
- **bound staleness** (stale synchronous parallel), state the guarantee it gives and measure the
  waiting it costs;
- show that a single central server becomes the bottleneck on a slow network, and that k server
  shards relieve it.

**The lecture's formulas, in words.** The server updates the parameters with
W_{i+1} = W_i − Σ_n λ_n ΔW_{i,n}: each worker's update ΔW_{i,n} gets its *own* learning rate
λ_n, so a stale update can be given less weight. With soft synchronization the sum runs over S
updates from any of the N workers (1 ≤ S ≤ N) before the server changes W. And with bounded
staleness the fast workers are delayed "when necessary to ensure that the maximum staleness is
below a certain threshold".

Reminders: **N** workers; **λ** (`lr`) the base learning rate; **tau** the staleness of an update,
the number of server versions applied between its worker's pull and its own application;
**S** the updates per server step; **b** the staleness bound; **k** the number of server
shards."""
    ),
    code(
        '''
from dataclasses import replace

import matplotlib.pyplot as plt

from dlcourse import viz
from dlcourse.divergence import Diverged
from dlcourse.parameter_server import PSConfig, run_parameter_server
from dlcourse.sim import SimConfig, simulate

# 16 simulated workers on MNIST with the MLP, two epochs; compute-bound workers (device_flops=1e9)
# and random stragglers: each step has a 10% chance to take 4x longer
base = SimConfig(
    num_workers=16, policy="async", batch_size=50, epochs=2, lr=0.1, device_flops=1e9, straggler_prob=0.1
)


def variant(**changes):
    """Simulate base with changes; a run that diverges returns what it recorded before it stopped."""
    try:
        return simulate(replace(base, **changes))
    except Diverged as e:
        print("diverged:", str(e).split(":")[0])
        return e.partial
'''
    ),
    md(
        """## The panel: N, S, staleness bound, lr policy, server shards

Every control of the lecture's remedies is on this one panel. It simulates two epochs with the
settings you choose and shows the staleness histogram (left) and the test loss and accuracy per
epoch (middle, right). Untick *bound staleness* to use soft sync; tick it (with S = 1) to bound
staleness. **Run it for real** runs the same settings on real processes and overlays the result;
keep N ≤ 3 for that on a laptop or Binder. We will move its sliders from code as we go; in
JupyterLab you can drag them."""
    ),
    code(
        """
panel = viz.StalenessExplorer(num_workers=16, softsync=1, base=base)
panel
"""
    ),
    md(
        """## 1. A learning rate per update: λ_n = λ / tau

The first remedy keeps asynchronous SGD as it is and changes only how hard each update pushes:
an update that is tau versions old gets λ_n = λ / max(1, tau) (Zhang et al. 2016). A fresh update
counts fully; one computed 15 versions ago counts one fifteenth.

**Predict.** With 16 asynchronous workers and λ = 0.3, a learning rate that suits a single
worker, which run reaches the best test accuracy after two epochs: a constant λ, the
staleness-scaled λ / tau, or a constant rate equal to the *average* step λ / tau gives? And does
a single worker reach a good accuracy at λ = 0.3?"""
    ),
    code(
        """
one_worker = variant(num_workers=1, lr=0.3)
constant = variant(lr=0.3)
scaled = variant(lr=0.3, lr_policy="staleness")
mean_step = sum(0.3 / max(1, tau) for tau in scaled.staleness) / len(scaled.staleness)
same_mean = variant(lr=mean_step)  # a constant lr with the same average step as lambda / tau
lr_runs = {
    "1 worker, lr 0.3": one_worker,
    "16, constant lr 0.3": constant,
    "16, lr 0.3 / tau": scaled,
    f"16, constant lr {mean_step:.3f}": same_mean,
}
for name, r in lr_runs.items():
    print(f"{name:22s} accuracy after 2 epochs {r.test.accuracy:.3f}")
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
viz.curves(lr_runs, x="epoch", metrics=("accuracy",), axes=[axes[0]])
per_second = {}
for name, r in lr_runs.items():
    seconds, accuracy = r.time_curve("accuracy")
    per_second[name] = {"x": seconds[1:], "accuracy": accuracy[1:]}  # time 0 has no place on a log axis
viz.curves(per_second, x="second", metrics=("accuracy",), axes=[axes[1]])
axes[1].set_xscale("log")
plt.show()
"""
    ),
    md(
        """On the left, per epoch: one worker at λ = 0.3 learns quickly. Sixteen workers at the same
constant λ do not learn at all: every update is about 15 versions stale, and the big stale steps
keep undoing each other. With λ / tau the same 16 workers learn again. On the right, per virtual
second (a log axis), the 16-worker runs finish their two epochs in a fraction of the single
worker's time: the two runs with smaller steps reach 70% accuracy several times sooner than one
worker does, though one worker ends higher."""
    ),
    code(
        '''
"""Checks that lambda / tau rescues 16 stale workers at a learning rate that suits one worker."""
assert one_worker.test.accuracy > 0.85, one_worker.test.accuracy
assert scaled.test.accuracy > constant.test.accuracy + 0.2, (scaled.test.accuracy, constant.test.accuracy)
assert scaled.virtual_s < one_worker.virtual_s / 4  # and it finishes much sooner in time
'''
    ),
    md(
        """Now the honest control: the fourth run uses a *constant* learning rate equal to the average
step that λ / tau took. It lands close to the scaled run. So in this setting most of the benefit
comes from taking smaller steps on average, not from giving each update its own rate; the
project's own tests find the same ("a wash"). Per-update scaling earns more when staleness varies
a lot between updates, for example when a few workers are much slower than the rest, because
then a single constant rate is either too big for the stalest updates or too small for the
fresh ones. Exercise 1 lets you test that.

Move the panel's *lr policy* menu to `staleness` and watch its accuracy curve change:"""
    ),
    code(
        """
before_lr = (panel.image.value, panel.result.test.accuracy)
panel.lr_policy.value = "staleness"  # what choosing it in the menu does
panel
"""
    ),
    code(
        '''
"""Checks that choosing lambda / tau in the panel re-ran the simulation with it and redrew it."""
assert panel.result.config.lr_policy == "staleness" and panel.last_error is None
assert panel.image.value != before_lr[0] and panel.result.test.accuracy != before_lr[1]
'''
    ),
    md(
        """## 2. Soft synchronization: S of N

The second remedy changes *when* the server applies updates. It waits until S updates have
arrived, from any of the N workers, then applies their average as one step:
W_{i+1} = W_i − (1/S) Σ_{s=1..S} λ_n ΔW_{i,n}. S = 1 is asynchronous SGD; S = N is synchronous
SGD. In between, a worker's update waits for S − 1 others, and the server's version moves once
per S updates, so there are fewer versions to fall behind.

**Predict.** With N = 16 workers, what mean staleness do you expect for S = 1, 2, 4, 8 and 16?
(Hint from lesson 04: while one worker computes, the others push about N − 1 updates. How many
versions is that when each version takes S of them?) And which S gives the most examples per
second?"""
    ),
    code(
        """
N = base.num_workers
Ss = (1, 2, 4, 8, 16)
by_s = {}
for S in Ss:  # S = 1 is async, S = N is sync
    policy = "async" if S == 1 else "sync" if S == N else "softsync"
    by_s[S] = variant(policy=policy, softsync=S if policy == "softsync" else None)
for S, r in by_s.items():
    print(
        f"S = {S:2d}: staleness mean {r.staleness_summary()['mean']:5.2f} (N/S - 1 = {N / S - 1:5.2f}), "
        f"{r.examples_per_s:7,.0f} examples/s, accuracy {r.test.accuracy:.3f}"
    )

fig, (ax_tau, ax_trade) = plt.subplots(1, 2, figsize=(12, 3.6))
means = [r.staleness_summary()["mean"] for r in by_s.values()]
speeds = [r.examples_per_s for r in by_s.values()]
ax_tau.plot(Ss, means, "o-", label="measured")
ax_tau.plot(Ss, [N / S - 1 for S in Ss], "k:", label="N/S - 1")
ax_tau.set(xscale="log", xlabel="S", ylabel="mean staleness", title="staleness falls as S grows")
ax_tau.set_xticks(Ss, [str(S) for S in Ss])
ax_tau.legend()
ax_trade.plot(means, speeds, "o-")
for S, x, y in zip(Ss, means, speeds):
    ax_trade.annotate(f"S={S}", (x, y), textcoords="offset points", xytext=(5, -12))
ax_trade.set(xlabel="mean staleness", ylabel="examples per virtual second")
ax_trade.set_title("throughput vs staleness as S moves")
plt.show()
"""
    ),
    md(
        """The left figure follows N/S − 1 closely: in steady state, while one worker computes, the
other N − 1 push about one update each, and the server turns every S of them into one version.
The right figure is the trade-off the lecture describes: moving S from 1 towards N walks down and
to the left, from many examples per second with stale gradients to no staleness at all with
fewer examples per second. With stragglers, S = N pays the most, because every step waits for
the slowest of all 16. Moderate values (S = 4 here) keep most of the throughput with a fraction
of the staleness. (Zhang et al. count the update itself, so their n-softsync mean is N/S.)"""
    ),
    code(
        '''
"""Checks that soft sync's staleness falls as S grows, close to N/S - 1, and S = N is the slowest."""
assert all(a > b for a, b in zip(means, means[1:])), means
assert all(abs(m - (N / S - 1)) <= 1.0 for S, m in zip(Ss, means)), means
assert speeds[-1] < speeds[0] and speeds[-1] == min(speeds), speeds
'''
    ),
    md("""Move the panel's **soft sync S** slider from 1 to 4: the histogram moves left."""),
    code(
        """
before_s = panel.result.staleness_summary()["mean"]
panel.softsync.value = 4
panel
"""
    ),
    code(
        '''
"""Checks that moving the S slider to 4 ran soft sync and lowered the staleness the panel shows."""
assert panel.result.config.policy == "softsync" and panel.result.config.softsync == 4
assert panel.result.staleness_summary()["mean"] < before_s, (panel.result.staleness_summary(), before_s)
'''
    ),
    md(
        """## 3. Bounded staleness: delay the fastest workers

The third remedy keeps S = 1 but stops any worker from running too far ahead (stale synchronous
parallel, Ho et al. 2013). Each worker has a **clock**, the number of its own steps the server has
applied. A worker may start its next step only while its clock is at most **b** ahead of the
slowest worker's. The guarantee has two forms:

- in clocks: an update's **clock lag** (how far the slowest clock moved between its pull and its
  application) is at most b;
- in server versions: with S = 1, an update's staleness is at most tau ≤ (2b + 1)(N − 1), because
  while a worker computes step c, each of the others can have steps c − b to c + b applied.

Bound 0 makes the workers clock-synchronous (nobody starts step c before everyone's step c − 1 is
applied), but it is not synchronous SGD: each gradient is still applied on its own, at up to
N − 1 versions of staleness.

**Predict.** With N = 16 and stragglers, how will the workers' waiting time change from b = 0 to
b = 8? Will the largest staleness you measure reach the guarantee?"""
    ),
    code(
        """
bounds = (0, 1, 2, 4, 8)
by_b = {b: variant(policy="bounded", staleness_bound=b) for b in bounds}
unbounded = by_s[1]  # plain async, from the soft-sync sweep
guarantee = {b: (2 * b + 1) * (N - 1) for b in bounds}
idle = {b: sum(r.idle_fraction) / N for b, r in by_b.items()}
for b, r in by_b.items():
    s = r.staleness_summary()
    print(
        f"b = {b}: max tau {s['max']:3d} (guarantee {guarantee[b]:3d}), max clock lag {max(r.clock_lag)}, "
        f"idle {idle[b]:.0%}, {r.examples_per_s:7,.0f} examples/s"
    )
async_idle = sum(unbounded.idle_fraction) / N
print(f"no bound: max tau {unbounded.staleness_summary()['max']}, idle {async_idle:.0%}")

fig, (ax_max, ax_idle) = plt.subplots(1, 2, figsize=(12, 3.6))
ax_max.plot(bounds, [by_b[b].staleness_summary()["max"] for b in bounds], "o-", label="max tau measured")
ax_max.plot(bounds, [guarantee[b] for b in bounds], "k:", label="guarantee (2b+1)(N-1)")
ax_max.plot(bounds, [by_b[b].staleness_summary()["mean"] for b in bounds], "s--", label="mean tau")
ax_max.set(xlabel="staleness bound b", ylabel="staleness tau", title="the guarantee holds")
ax_max.legend()
ax_idle.plot(bounds, [idle[b] for b in bounds], "o-", label="bounded")
ax_idle.axhline(async_idle, color="grey", ls=":", label="no bound (async)")
ax_idle.set(xlabel="staleness bound b", ylabel="mean idle fraction", title="the waiting it costs")
ax_idle.legend()
plt.show()
"""
    ),
    md(
        """On the left the measured maximum never crosses the dotted guarantee. At b = 0 it reaches it
exactly (N − 1 = 15: while one worker computes, each of the others can push once); for larger b
there is room to spare, because the bound is a worst case. The mean staleness rises as b
loosens, towards async's N − 1.

On the right is the cost: with b = 0 the workers spend most of their time waiting for the
slowest, almost like synchronous SGD; each step of the bound lets the fast workers run further
ahead and wait less, until at b = 8 the bound almost never bites and the run is plain async."""
    ),
    code(
        '''
"""Checks that bounded staleness keeps its guarantee and a tighter bound costs more waiting."""
for b, r in by_b.items():
    assert max(r.clock_lag) <= b, (b, max(r.clock_lag))
    assert r.staleness_summary()["max"] <= guarantee[b], (b, r.staleness_summary())
assert all(idle[a] >= idle[b] for a, b in zip(bounds, bounds[1:])), idle
assert idle[0] > async_idle + 0.2
'''
    ),
    md("""On the panel: set S back to 1, tick **bound staleness** and set the bound to 1."""),
    code(
        """
panel.softsync.value = 1
panel.bounded.value = True
panel.staleness_bound.value = 1
panel
"""
    ),
    code(
        '''
"""Checks that the panel now runs bounded staleness with b = 1 and its run keeps the guarantee."""
r = panel.result
assert r.config.policy == "bounded" and r.config.staleness_bound == 1 and panel.last_error is None
assert max(r.clock_lag) <= 1 and r.staleness_summary()["max"] <= 3 * (N - 1)
'''
    ),
    md(
        """## 4. The remedies side by side: per epoch and per second

The lecture's two ways to judge a method are accuracy per epoch (what each example is worth) and
accuracy for a given amount of time. Here are plain async, the three remedies and synchronous SGD,
all with N = 16, λ = 0.1 and the same stragglers."""
    ),
    code(
        """
side_by_side = {
    "async": unbounded,
    "async, lr / tau": variant(lr_policy="staleness"),
    "soft sync S = 4": by_s[4],
    "bounded b = 1": by_b[1],
    "sync": by_s[16],
}
fig, (ax_epoch, ax_second) = plt.subplots(1, 2, figsize=(12, 3.6))
viz.curves(side_by_side, x="epoch", metrics=("accuracy",), axes=[ax_epoch])
viz.curves(side_by_side, x="second", metrics=("accuracy",), axes=[ax_second])
plt.show()
"""
    ),
    md(
        """Per epoch (left), plain async with 16 workers wobbles and ends low. λ / tau and soft sync with
S = 4 lift it clearly. Bounded staleness with b = 1 keeps the workers in step, but it still
applies each gradient alone at the full λ, with staleness up to more than twice N, so at this λ it
wobbles like async. Synchronous SGD gives the smoothest curve but climbs slowly per epoch: one
step averages 16 gradients of 50 examples, so an epoch of 4,000 examples is only 5 steps.
Per second (right), synchronous SGD is the last to finish, because every step waits for the
slowest worker, while soft sync with S = 4 reaches a good accuracy early. This is the lecture's
conclusion: asynchronous SGD is a good option *as long as gradient staleness is appropriately
handled*. Which remedy is best depends on N, the stragglers
and the learning rate: try them on the panel."""
    ),
    code(
        '''
"""Checks that sync SGD, waiting for the slowest worker, takes the longest for two epochs."""
times = {name: r.virtual_s for name, r in side_by_side.items()}
assert max(times, key=times.get) == "sync", times
'''
    ),
    md(
        """## 5. Your own rule f(λ, tau), simulated and run for real

Any function `f(lr, tau)` that returns a learning rate ≥ 0 can replace λ / tau. Here is one to
start with: it shrinks the step more gently, with the square root of the staleness. Edit it and
re-run the cells below.

**Predict.** Will the gentler rule learn faster or slower per epoch than λ / tau at N = 16? And on
three real workers, will the staleness the real server measures look like the simulator's?"""
    ),
    code(
        '''
def my_rule(lr, tau):
    """lambda_n for an update that is tau versions stale: lr / sqrt(1 + tau)."""
    return lr / (1 + tau) ** 0.5


mine = viz.StalenessExplorer(num_workers=16, lr_policy=my_rule, base=base)
mine
'''
    ),
    md(
        """Your rule is now the selected entry of the panel's *lr policy* menu, next to `constant` and
`staleness`. The same function runs on the real parameter server: `PSConfig(lr_policy=my_rule)`
sends it to the server process (with cloudpickle), which calls it for every update it applies.
Three workers and one server are four processes; the simulator runs the same configuration next
to it."""
    ),
    code(
        """
real_mine = run_parameter_server(
    PSConfig(num_workers=3, softsync=1, lr=0.1, lr_policy=my_rule, model="mlp", batch_size=50, steps=20)
)
sim_mine = simulate(SimConfig(num_workers=3, policy="async", lr=0.1, lr_policy=my_rule, batch_size=50))
print(real_mine)
print(sim_mine)
viz.staleness_histogram(sim_mine, real=real_mine.staleness)
"""
    ),
    md(
        """Compare the panel's accuracy with the "async, lr / tau" curve of section 4, which used the same
settings with λ / tau.

The bars are the simulator's staleness histogram and the black outline the real server's, both
for three asynchronous workers. The simulator's peaks at N − 1 = 2. The real one is spread wider
and its peak moves from run to run: on a small shared machine the processes do not get the CPU in
a steady rotation, so the number of other updates that land during one worker's step varies far
more than the simulator's 10% spread of compute times allows. (`benchmarks/parameter_server.py`
replays a real run's measured compute times in the simulator and comes much closer.) The
**Run it for real** button of the panel does the same for the panel's settings (choose N ≤ 3
first)."""
    ),
    code(
        '''
"""Checks that your rule drives the panel, and the real server applied it to every update and learned."""
assert mine.result.config.lr_policy is my_rule and mine.lr_policy.value == "yours: my_rule"
assert len(real_mine.staleness) == real_mine.updates == 3 * 20
assert real_mine.test_accuracy > 0.3, real_mine.test_accuracy
'''
    ),
    md(
        """## 6. The central server is a bottleneck; k shards relieve it

So far the network was fast (1 GB/s). But every update crosses the server's link twice (the push
in, the new parameters out), and one server has one link. The lecture: "an asynchronous SGD
implementation using a centralized parameter server may introduce a communication bottleneck",
and the fix, "N parameter servers, each handling an equal fraction of the total parameters". With
k server shards each worker sends 1/k of the update to each shard, over k links in parallel.

**Predict.** On a slow network (1 MB/s) with 16 asynchronous workers, how does throughput change
from k = 1 to 2 to 4 shards? And on the fast network?"""
    ),
    code(
        """
ks = (1, 2, 4)
networks = {"slow network, 1 MB/s": 1e6, "fast network, 1 GB/s": 1e9}
by_k = {net: {k: variant(servers=k, bandwidth=bw, epochs=1) for k in ks} for net, bw in networks.items()}
for net, runs in by_k.items():
    for k, r in runs.items():
        links = ", ".join(f"{u:.0%}" for u in r.link_utilization)
        print(f"{net}: k = {k}: {r.examples_per_s:9,.0f} examples/s, server links busy {links}")

fig, (ax_slow, ax_fast) = plt.subplots(1, 2, figsize=(12, 3.6))
for ax, (net, runs) in zip((ax_slow, ax_fast), by_k.items()):
    ax.plot(ks, [runs[k].examples_per_s for k in ks], "o-")
    ax.set(xticks=ks, xlabel="server shards k", ylabel="examples per virtual second", title=net)
    ax.set_ylim(bottom=0)
plt.show()
"""
    ),
    md(
        """On the slow network the server's link is busy all the time with one shard: it, not the
workers, sets the pace. Two shards give two links and double the throughput, four give four. On
the fast network the link is busy only part of the time and the workers' compute sets the pace,
so sharding changes little: split the server only where it is the bottleneck. (The panel's
*server shards k* slider sets k for its simulations too.)"""
    ),
    code(
        '''
"""Checks: on a slow network 4 server shards at least double one's throughput; on a fast one they do not."""
slow, fast = by_k["slow network, 1 MB/s"], by_k["fast network, 1 GB/s"]
assert slow[4].examples_per_s >= 2 * slow[1].examples_per_s
assert fast[4].examples_per_s < 1.3 * fast[1].examples_per_s
'''
    ),
    md(
        """## What we saw

- **λ_n = λ / tau** let 16 stale workers learn at a learning rate that made plain async fail. A
  constant rate with the same average step did about as well here: the data says the smaller
  average step does most of the work.
- **Soft sync S** moves along a trade-off: staleness about N/S − 1, throughput falling as S
  approaches N, with S = N (synchronous) the slowest when there are stragglers.
- **Bounded staleness b** guarantees a clock lag of at most b and a staleness of at most
  (2b + 1)(N − 1) versions; the tighter the bound, the longer the fast workers wait.
- Your own rule plugs into the panel, the simulator and the real parameter server alike.
- **A single central server** caps throughput on a slow network; k shards give k links.

From a terminal:

```
dlcourse simulate --policy softsync --softsync 4 --workers 16 --epochs 2
dlcourse simulate --policy bounded --staleness-bound 1 --workers 16
dlcourse train --strategy async-ps --workers 3 --servers 2 --lr-policy staleness --model mlp
```"""
    ),
    md(
        """## Exercises

1. Make the workers unequal: `worker_speeds=(0.25,) * 4 + (1.0,) * 12` in `base`. Compare λ / tau
   with the constant rate of the same average step again. Does per-update scaling win now?

<details><summary>Hint</summary>

`variant(worker_speeds=..., lr=0.3, lr_policy="staleness")`, then compute `mean_step` from its
`staleness` as in section 1 and run the constant. The slow workers' updates are much staler than
the fast ones', so one might expect a single constant rate to suit neither. When we tried it, the
two still came out about even: can you find settings (fewer or slower slow workers, a larger λ)
where they do not?
</details>

2. Write a rule that drops any update staler than 2(N − 1) (returns 0) and keeps λ otherwise.
   Plug it into a new panel and into a real run. What fraction of updates does it drop at N = 16?

<details><summary>Hint</summary>

The rule only sees `lr` and `tau`, so write N into it: `def drop_stale(lr, tau): return 0.0 if tau
> 30 else lr`. Then `viz.StalenessExplorer(num_workers=16, lr_policy=drop_stale, base=base)`, and
count `sum(t > 30 for t in r.staleness) / len(r.staleness)` on its `result`.
</details>

3. For N = 16, which S gives the best accuracy after one virtual second? Use `r.time_curve("accuracy")`
   on the soft-sync sweep.

<details><summary>Hint</summary>

For each S take the last evaluation whose time is at most 1.0 (the runs have different lengths in
virtual time; pick the threshold so that every run has a point before it).
</details>

4. Bound 0 and synchronous SGD both keep all workers in step. Run both at λ = 0.1 and compare
   accuracy per epoch. Why are they different?

<details><summary>Hint</summary>

Under bound 0 each gradient is still applied alone, at full λ and with staleness up to N − 1;
synchronous SGD averages N fresh gradients into one step. Compare their `staleness_summary()`.
</details>

5. On the slow network, does sharding help *synchronous* SGD as much as asynchronous?

<details><summary>Hint</summary>

`variant(policy="sync", servers=k, bandwidth=1e6, epochs=1)` for k = 1, 2, 4. Every synchronous step
still sends N pushes and N pulls through the server's links.
</details>"""
    ),
    md(
        """## References

- W. Zhang, S. Gupta, X. Lian, J. Liu. *Staleness-aware Async-SGD for Distributed Deep Learning.*
  IJCAI 2016 (λ / tau, n-softsync).
- Q. Ho, J. Cipar, H. Cui, et al. *More Effective Distributed ML via a Stale Synchronous Parallel
  Parameter Server.* NIPS 2013 (bounded staleness, clocks).
- J. Dean, G. Corrado, R. Monga, et al. *Large Scale Distributed Deep Networks.* NIPS 2012
  (parameter server shards).
- M. Li, D. G. Andersen, J. W. Park, et al. *Scaling Distributed Machine Learning with the
  Parameter Server.* OSDI 2014.
- S. Gupta, W. Zhang, F. Wang. *Model Accuracy and Runtime Tradeoff in Distributed Deep Learning:
  A Systematic Study.* ICDM 2016.
- Lecture: *Distributed Deep Learning* (L. Dong), parts "Approaches to Dealing with Stale
  Gradients" and "Centralized versus Decentralized Async SGD"."""
    ),
]


write("05_taming_staleness.ipynb", cells)
