"""Build lessons/05_taming_staleness.ipynb (no outputs): the remedies for stale gradients.

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

*On the map of approaches (lesson 00): update-based, centralized, and in between synchronous and
asynchronous.*

Lesson 04 ended with a problem: asynchronous SGD keeps every worker busy, but with N workers each
update is about N − 1 server versions old when it is applied, and with 16 workers the model
learned far less per epoch. The lecture lists ways to deal with stale gradients, and adds a
further concern, the server itself. This lesson puts them on one panel and measures each.

By the end you will be able to:

- scale each update's learning rate by its staleness (λ_n = λ / max(1, σ), or Zhang et al.'s
  λ / (σ + 1)), and plug in your own rule f(λ, σ), in the simulator and on a real parameter
  server;
- use **soft synchronization** (wait for S of the N updates), say whether the server sums or
  averages them, and read the trade-off between throughput and staleness as S moves;
- **bound staleness** in two ways, the lecture's literal gate on σ and the clock gate of stale
  synchronous parallel, state the guarantee each gives and measure the waiting it costs;
- show that a single central server becomes the bottleneck on a slow network, and that k server
  shards relieve it.

**The lecture's formulas, in words.** The server updates the parameters with
W_{i+1} = W_i − Σ_n λ_n ΔW_{i,n}: each worker's update ΔW_{i,n} (its gradient) gets its *own*
learning rate λ_n, so a stale update can be given less weight. With soft synchronization the sum
runs over S updates from any of the N workers (1 ≤ S ≤ N) before the server changes W. And to
bound staleness the fast workers are delayed "when necessary to ensure that the maximum staleness
is below a certain threshold".

Reminders (lesson 00's notation): **N** workers; **λ** (`lr`) the base learning rate; **σ**
(sigma) the staleness of an update, the number of server versions applied between its worker's
pull and its own application; **S** the updates per server step; **b** the clock bound of stale
synchronous parallel; **σ_max** the staleness gate's threshold; **k** the number of server
shards."""
    ),
    code(
        '''
from dataclasses import replace

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

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


def mean_idle(r):
    """The workers' mean share of the run spent waiting."""
    return sum(r.idle_fraction) / len(r.idle_fraction)
'''
    ),
    md(
        """## The panel: N, S, staleness bound, lr policy, server shards

Every control of the lecture's remedies is on this one panel. It simulates two epochs with the
settings you choose and shows the staleness histogram (left) and the test loss and accuracy per
epoch (middle, right). Untick *bound staleness* to use soft sync; tick it (with S = 1) to bound
the clock lag. **Run it for real** runs the same settings on real processes and overlays the
result; keep N ≤ 3 for that on a laptop or Binder. We will move its sliders from code as we go;
in JupyterLab you can drag them.

**Predict.** The panel opens with N = 16 asynchronous workers (S = 1, no bound). Where will the
staleness histogram peak? Lesson 04 measured it for N = 8."""
    ),
    code(
        """
panel = viz.StalenessExplorer(num_workers=16, softsync=1, base=base)
panel
"""
    ),
    md(
        """## 1. A learning rate per update: λ_n from σ

The first remedy keeps asynchronous SGD as it is and changes only how hard each update pushes.
Which rule, exactly? Zhang et al. (2016) divide λ by the staleness *as they count it*, and they
count the update itself: their τ_Z is our σ + 1, so their rule is **λ_n = λ / (σ + 1)**. The
library has it as `lr_policy="zhang"`. The library's `lr_policy="staleness"` (the one its
command-line parameter server uses by default) runs **λ_n = λ / max(1, σ)**, our variant: the
same division, but an update that is 0 or 1 versions old keeps the full λ, so two asynchronous
workers, whose updates are mostly 1 version old, run plain async SGD at λ. The two differ by the
factor (σ + 1)/σ for σ ≥ 1: a factor 2 at σ = 1, but only 16/15 at σ = 15, the typical staleness
of 16 workers. We run both.

**Predict.** With 16 asynchronous workers and λ = 0.3, a learning rate that suits a single
worker, which run reaches the best test accuracy after two epochs: a constant λ, λ / max(1, σ),
λ / (σ + 1), or a constant rate equal to the *average* step λ / max(1, σ) gives? And does a single
worker reach a good accuracy at λ = 0.3?"""
    ),
    code(
        """
one_worker = variant(num_workers=1, lr=0.3)
constant = variant(lr=0.3)
scaled = variant(lr=0.3, lr_policy="staleness")
zhang = variant(lr=0.3, lr_policy="zhang")
mean_step = sum(0.3 / max(1, sigma) for sigma in scaled.staleness) / len(scaled.staleness)
same_mean = variant(lr=mean_step)  # a constant lr with the same average step as lambda / max(1, sigma)
lr_runs = {
    "1 worker, lr 0.3": one_worker,
    "16, constant lr 0.3": constant,
    "16, lr 0.3 / max(1, σ)": scaled,
    "16, lr 0.3 / (σ + 1)": zhang,
    f"16, constant lr {mean_step:.3f}": same_mean,
}
for name, r in lr_runs.items():
    print(f"{name:24s} accuracy after 2 epochs {r.test.accuracy:.3f}")
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
viz.curves(lr_runs, x="epoch", metrics=("accuracy",), axes=[axes[0]])
per_second = {}
for name, r in lr_runs.items():
    seconds, accuracy = r.time_curve("accuracy")
    per_second[name] = {"x": seconds[1:], "accuracy": accuracy[1:]}  # time 0 has no place on a log axis
viz.curves(per_second, x="second", metrics=("accuracy",), axes=[axes[1]])
axes[1].set_xscale("log")
plt.show()


def seconds_to(r, accuracy=0.7):
    \"\"\"Virtual seconds until the run's test accuracy first reaches ``accuracy`` (inf: never).\"\"\"
    seconds, curve = r.time_curve("accuracy")
    return next((t for t, a in zip(seconds, curve) if a >= accuracy), float("inf"))


sooner = seconds_to(one_worker) / seconds_to(scaled)
display(
    Markdown(
        f"On the left, per epoch: one worker at λ = 0.3 ends at {one_worker.test.accuracy:.0%}. Sixteen "
        f"workers at the same constant λ end at {constant.test.accuracy:.0%}: every update is about 15 "
        "versions stale, and the big stale steps keep undoing each other. With λ / max(1, σ) the same 16 "
        f"workers reach {scaled.test.accuracy:.0%}, and with Zhang et al.'s λ / (σ + 1) "
        f"{zhang.test.accuracy:.0%}: at σ ≈ 15 the two rules are almost the same step. On the right, per "
        f"virtual second (a log axis), the 16-worker runs finish their two epochs in "
        f"{scaled.virtual_s / one_worker.virtual_s:.0%} of the single worker's time, and λ / max(1, σ) "
        f"reaches 70% accuracy {sooner:.1f} times sooner than one worker does, though one worker ends higher."
    )
)
"""
    ),
    code(
        '''
"""Checks: constant lambda fails, both sigma rules rescue it, one worker ends higher but later."""
assert one_worker.test.accuracy > 0.85, one_worker.test.accuracy
assert constant.test.accuracy < 0.35 and scaled.test.accuracy > constant.test.accuracy + 0.2
assert abs(zhang.test.accuracy - scaled.test.accuracy) < 0.05, (zhang.test.accuracy, scaled.test.accuracy)
assert one_worker.test.accuracy > scaled.test.accuracy + 0.05 and sooner > 2.5, sooner
'''
    ),
    md(
        """Now the honest control: the last run uses a *constant* learning rate equal to the average
step that λ / max(1, σ) took. If it lands close to the scaled run, then in this setting most of the
benefit comes from taking smaller steps on average, not from giving each update its own rate.
Per-update scaling can earn more when staleness varies a lot between updates, for example when a
few workers are much slower than the rest, because then a single constant rate is either too big
for the stalest updates or too small for the fresh ones. Exercise 1 lets you test that."""
    ),
    code(
        """
gap = same_mean.test.accuracy - scaled.test.accuracy
display(
    Markdown(
        f"Here: the constant rate {mean_step:.3f} ends at {same_mean.test.accuracy:.1%}, λ / max(1, σ) "
        f"at {scaled.test.accuracy:.1%}, a difference of {100 * gap:+.1f} points (over seeds 0 to 4 of this "
        "configuration the two stayed within 5 points of each other)."
    )
)
"""
    ),
    code(
        '''
"""Checks the control: the constant rate of the same average step lands within 8 points."""
assert abs(gap) < 0.08, (same_mean.test.accuracy, scaled.test.accuracy)
'''
    ),
    md("""Move the panel's *lr policy* menu to `staleness` and watch its accuracy curve change:"""),
    code(
        """
panel.lr_policy.value = "staleness"  # what choosing it in the menu does
panel
"""
    ),
    md(
        """## 2. Soft synchronization: S of N

The second remedy changes *when* the server applies updates. It waits until S updates have
arrived, from any of the N workers, then changes W once. S = 1 is asynchronous SGD; S = N is
synchronous SGD. In between, a worker's update waits for S − 1 others, and the server's version
moves once per S updates, so there are fewer versions to fall behind.

Sum or mean? The lecture writes W_{i+1} = W_i − Σ_{n=1..S} λ_n ΔW_{i,n}, a **sum** of S steps.
The library runs the **mean**, W_{i+1} = W_i − (1/S) Σ λ_n ΔW_{i,n} (`reduce="mean"`, the
default, as Zhang et al.'s n-softsync does), so that S = N with a constant λ is exactly the
synchronous gradient averaging of lessons 03 and 04. `reduce="sum"` runs the lecture's formula
as written. With a constant λ the two are the same rule at different rates: the sum at λ is the
mean at S·λ. The sweep below uses the mean; then both run at S = 4.

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
        f"S = {S:2d}: staleness σ mean {r.staleness_summary()['mean']:5.2f} (N/S - 1 = {N / S - 1:5.2f}), "
        f"{r.examples_per_s:7,.0f} examples/s, accuracy {r.test.accuracy:.3f}"
    )
summed = variant(policy="softsync", softsync=4, reduce="sum")  # the lecture's formula at lambda = 0.1
mean_at_4 = variant(policy="softsync", softsync=4, lr=4 * base.lr)  # the mean at S x lambda
print(
    f"S = 4, sum at lr {base.lr}: accuracy {summed.test.accuracy:.3f}; mean at lr {base.lr}: "
    f"{by_s[4].test.accuracy:.3f}; mean at lr {4 * base.lr:.1f}: {mean_at_4.test.accuracy:.3f}"
)

fig, (ax_sigma, ax_trade) = plt.subplots(1, 2, figsize=(12, 3.6))
means = [r.staleness_summary()["mean"] for r in by_s.values()]
speeds = [r.examples_per_s for r in by_s.values()]
ax_sigma.plot(Ss, means, "o-", label="measured")
ax_sigma.plot(Ss, [N / S - 1 for S in Ss], "k:", label="N/S - 1")
ax_sigma.set(xscale="log", xlabel="S", ylabel="mean staleness σ", title="staleness falls as S grows")
ax_sigma.set_xticks(Ss, [str(S) for S in Ss])
ax_sigma.legend()
ax_trade.plot(means, speeds, "o-")
for S, x, y in zip(Ss, means, speeds):
    ax_trade.annotate(f"S={S}", (x, y), textcoords="offset points", xytext=(5, -12))
ax_trade.set(xlabel="mean staleness σ", ylabel="examples per virtual second")
ax_trade.set_title("throughput vs staleness as S moves")
plt.show()
"""
    ),
    md(
        """The left figure follows N/S − 1 closely: in steady state, while one worker computes, the
other N − 1 push about one update each, and the server turns every S of them into one version.
(Zhang et al. count the update itself, so their n-softsync mean is N/S.) The right figure is the
trade-off the lecture describes: moving S from 1 towards N walks down and to the left, from many
examples per second with stale gradients to no staleness at all with fewer examples per second.
With stragglers, S = N pays the most, because every step waits for the slowest of all 16. The
printed line compares the two formulas: the lecture's sum at λ took exactly the steps of the mean
at 4λ, a different learning rate, not a different rule."""
    ),
    code(
        """
keep = speeds[Ss.index(4)] / speeds[0]
left = means[Ss.index(4)] / means[0]
display(
    Markdown(
        f"S = 4 keeps {keep:.0%} of asynchronous SGD's examples per second with {left:.0%} of its mean "
        f"staleness; S = N = 16 keeps {speeds[-1] / speeds[0]:.0%} of the throughput."
    )
)
"""
    ),
    code(
        '''
"""Checks soft sync: sigma ~ N/S - 1 and throughput fall with S; S = 4's trade; sum = mean at S x lambda."""
assert all(a > b for a, b in zip(means, means[1:])), means
assert all(abs(m - (N / S - 1)) <= 1.0 for S, m in zip(Ss, means)), means
assert all(a > b for a, b in zip(speeds, speeds[1:])), speeds
assert keep > 0.75 and left < 0.3, (keep, left)
assert torch.allclose(summed.params, mean_at_4.params, atol=1e-6)
assert not torch.allclose(summed.params, by_s[4].params, atol=1e-3)  # the 1/S changes the run
'''
    ),
    md("""Move the panel's **soft sync S** slider from 1 to 4: the histogram moves left."""),
    code(
        """
panel.softsync.value = 4
panel
"""
    ),
    md(
        """## 3. Bounded staleness: delay the fastest workers

The third remedy keeps S = 1 but holds back any worker that runs too far ahead. The lecture says
it in terms of staleness itself: "we delay the faster workers when necessary to ensure that the
maximum staleness is below a certain threshold". Two gates do that, and the library runs both, in
the simulator and on the real parameter server.

**The staleness gate** (σ_max, `max_staleness=`) is the lecture's sentence taken literally. The
server answers a worker's pull only if no update could then be applied with a staleness above
σ_max. An update pulled at version p is already v − p versions behind, and every other update in
flight could still land before it, so the server lets a worker go only while
(v − oldest pull in flight) + (updates in flight) ≤ σ_max. Every applied update then has σ ≤ σ_max.
This exact rule is our construction; the lecture states the goal, not a mechanism.

**The clock gate** of stale synchronous parallel (SSP, Ho et al. 2013; `staleness_bound=b`) is
the form parameter-server systems implement. Each worker has a **clock**, the number of its own
steps the server has applied. A worker may start its next step only while its clock is at most
**b** ahead of the slowest worker's. Its guarantee has two forms:

- in clocks: an update's **clock lag** (how far the slowest clock moved between its pull and its
  application) is at most b;
- in server versions: with S = 1, σ ≤ (2b + 1)(N − 1), because while a worker computes step c,
  each of the others can have steps c − b to c + b applied.

Bound 0 makes the workers clock-synchronous (nobody starts step c before everyone's step c − 1 is
applied), but it is not synchronous SGD: each gradient is still applied on its own, at up to
N − 1 versions of staleness.

**Predict.** With N = 16 and stragglers, how will the workers' waiting time change from b = 0 to
b = 8? Which σ_max would you expect to cost the same waiting as b = 0? And will the tighter gates,
which apply fresher gradients at the same λ, learn more per epoch or less?"""
    ),
    code(
        """
bounds = (0, 1, 2, 4, 8)
by_b = {b: variant(policy="bounded", staleness_bound=b) for b in bounds}
sigma_maxes = (3, 7, 15, 31)
by_gate = {m: variant(max_staleness=m) for m in sigma_maxes}
unbounded = by_s[1]  # plain async, from the soft-sync sweep
guarantee = {b: (2 * b + 1) * (N - 1) for b in bounds}
idle = {b: mean_idle(r) for b, r in by_b.items()}
gate_idle = {m: mean_idle(r) for m, r in by_gate.items()}
rows = [(f"clock gate b = {b}", r, f"clock lag <= {b}, σ <= {guarantee[b]}") for b, r in by_b.items()]
rows += [(f"staleness gate σ_max = {m}", r, f"σ <= {m}") for m, r in by_gate.items()]
rows.append(("no gate (async)", unbounded, "none"))
print(f"{'':28s} {'max σ':>6s} {'mean σ':>7s} {'idle':>5s} {'examples/s':>11s} {'accuracy':>8s}  guarantee")
for name, r, promise in rows:
    s = r.staleness_summary()
    print(
        f"{name:28s} {s['max']:6d} {s['mean']:7.2f} {mean_idle(r):5.0%} {r.examples_per_s:11,.0f} "
        f"{r.test.accuracy:8.3f}  {promise}"
    )

fig, (ax_max, ax_idle) = plt.subplots(1, 2, figsize=(12, 3.6))
ax_max.plot(bounds, [by_b[b].staleness_summary()["max"] for b in bounds], "o-", label="max σ measured")
ax_max.plot(bounds, [guarantee[b] for b in bounds], "k:", label="guarantee (2b+1)(N-1)")
ax_max.plot(bounds, [by_b[b].staleness_summary()["mean"] for b in bounds], "s--", label="mean σ")
ax_max.set(xlabel="clock bound b", ylabel="staleness σ", title="the clock gate: σ against its guarantee")
ax_max.legend()
for name, runs, marker in (("clock gate b", by_b, "o-"), ("staleness gate σ_max", by_gate, "s-")):
    xs = [r.staleness_summary()["mean"] for r in runs.values()]
    ax_idle.plot(xs, [mean_idle(r) for r in runs.values()], marker, label=name)
    for setting, x, r in zip(runs, xs, runs.values()):
        ax_idle.annotate(str(setting), (x, mean_idle(r)), textcoords="offset points", xytext=(4, 4))
ax_idle.axhline(mean_idle(unbounded), color="grey", ls=":", label="no gate (async)")
ax_idle.set(xlabel="mean staleness σ", ylabel="mean idle fraction", title="the waiting each gate costs")
ax_idle.legend()
plt.show()
"""
    ),
    md(
        """On the left, the clock gate: the measured maximum stays under the dotted guarantee, with room
to spare once b ≥ 1 because the guarantee is a worst case; the mean staleness rises as b loosens,
towards async's. On the right, both gates on one trade-off: the fresher the gradients (left), the
longer the fast workers wait (up). The staleness gate sets σ_max directly; the clock gate gets
there through b.

Why do systems implement the clock form (Ho et al.'s SSP; the "bounded delay" of Li et al.'s
Parameter Server)? Not because it waits less: on the right the two gates lie on much the same
curve. The clock gate needs only a counter per worker, which a worker can compare with the server
clock it already holds, so a worker with a fresh enough local copy need not ask the server at all,
and it is the quantity their convergence proofs are written in. The staleness gate must be
decided at the server for every pull, knowing every update in flight and assuming the worst order
in which they could land, and (in this library) it needs S = 1: a soft-sync group could wait for
a worker that the gate holds back."""
    ),
    code(
        """
s0 = by_b[0].staleness_summary()
display(
    Markdown(
        f"At b = 0 the largest staleness is {s0['max']} = N − 1: while one worker computes, each of the "
        f"others can push once. The fast workers wait {idle[0]:.0%} of the time at b = 0 and "
        f"{idle[8]:.0%} at b = 8 (async: {mean_idle(unbounded):.0%}). The staleness gate at "
        f"σ_max = N − 1 = 15 waits {gate_idle[15]:.0%}, against {idle[0]:.0%} for b = 0. The tightest "
        f"gate, σ_max = 3, reaches {by_gate[3].test.accuracy:.0%} accuracy after two epochs (async: "
        f"{unbounded.test.accuracy:.0%}) at {by_gate[3].examples_per_s / unbounded.examples_per_s:.0%} "
        "of async's examples per second."
    )
)
"""
    ),
    code(
        '''
"""Checks the gates: b = 0 reaches N - 1; looser waits less; both trade alike; a tight one learns more."""
assert s0["max"] == N - 1, s0
assert all(by_b[b].staleness_summary()["max"] < guarantee[b] for b in bounds[1:])  # room to spare
b_means = [by_b[b].staleness_summary()["mean"] for b in bounds]
assert all(a <= b for a, b in zip(b_means, b_means[1:])), b_means
assert all(idle[a] >= idle[b] for a, b in zip(bounds, bounds[1:])), idle
assert idle[0] > 0.5 and abs(idle[8] - mean_idle(unbounded)) < 0.03, idle
assert all(gate_idle[a] >= gate_idle[b] for a, b in zip(sigma_maxes, sigma_maxes[1:])), gate_idle
assert abs(gate_idle[15] - idle[0]) < 0.1 and abs(gate_idle[31] - idle[1]) < 0.1, (gate_idle, idle)
assert by_gate[3].test.accuracy > unbounded.test.accuracy + 0.1
assert by_gate[3].examples_per_s < 0.5 * unbounded.examples_per_s
'''
    ),
    md(
        """The same gate runs on the real parameter server: the server process holds back a worker's
answer while an update in flight could exceed σ_max. Three workers and one server (four
processes); worker 0 is a straggler that sleeps 50 ms in each step."""
    ),
    code(
        """
real_gate = dict(
    num_workers=3, softsync=1, model="mlp", batch_size=50, steps=12, slow_worker=0, slow_delay=0.05
)
real_free = run_parameter_server(PSConfig(**real_gate))
real_gated = run_parameter_server(PSConfig(**real_gate, max_staleness=1))


def fast_wait(result):
    \"\"\"Seconds the fast workers (1 and 2) spent waiting for the server, together.\"\"\"
    return sum(w["wait_s"] for w in result.worker_stats[1:])


for name, r in (("no gate", real_free), ("σ_max = 1", real_gated)):
    s = r.staleness_summary()
    wait = fast_wait(r)
    print(f"real, {name:9s}: max σ {s['max']:2d}, mean σ {s['mean']:.2f}, fast workers waited {wait:.2f} s")
"""
    ),
    code(
        '''
"""Checks the real runs: ungated, some update was staler than 1; gated, the fast workers waited 2x longer."""
assert real_free.staleness_summary()["max"] > 1, real_free.staleness_summary()
assert fast_wait(real_gated) > 2 * fast_wait(real_free), (fast_wait(real_gated), fast_wait(real_free))
'''
    ),
    md("""On the panel: set S back to 1, tick **bound staleness** and set the clock bound to 1."""),
    code(
        """
panel.softsync.value = 1
panel.bounded.value = True
panel.staleness_bound.value = 1
panel
"""
    ),
    md(
        """## 4. The remedies side by side: per epoch and per second

The lecture's two ways to judge a method are accuracy per epoch (what each example is worth) and
accuracy for a given amount of time. Here are plain async, the remedies and synchronous SGD, all
with N = 16, λ = 0.1 and the same stragglers.

**Predict.** Which of the five ends highest after two epochs, and which is last to finish them in
virtual time?"""
    ),
    code(
        """
side_by_side = {
    "async": unbounded,
    "async, lr / max(1, σ)": variant(lr_policy="staleness"),
    "soft sync S = 4": by_s[4],
    "bounded b = 1": by_b[1],
    "sync": by_s[16],
}
fig, (ax_epoch, ax_second) = plt.subplots(1, 2, figsize=(12, 3.6))
viz.curves(side_by_side, x="epoch", metrics=("accuracy",), axes=[ax_epoch])
viz.curves(side_by_side, x="second", metrics=("accuracy",), axes=[ax_second])
plt.show()


def accuracy_at_epoch(r, epoch=1.0):
    \"\"\"Test accuracy at the first evaluation at or after ``epoch``.\"\"\"
    return next(p.accuracy for p in r.evals if p.epoch >= epoch - 1e-9)


finals = {name: r.test.accuracy for name, r in side_by_side.items()}
times = {name: r.virtual_s for name, r in side_by_side.items()}
for name, r in side_by_side.items():
    print(
        f"{name:24s} accuracy after 1 epoch {accuracy_at_epoch(r):.3f}, after 2 {finals[name]:.3f}, "
        f"{times[name]:.2f} virtual s"
    )
"""
    ),
    md(
        """Per epoch (left), soft sync with S = 4 ends highest here: its updates are about 3 versions
stale instead of 15, and it still applies a step for every 4 gradients. Synchronous SGD climbs
slowly per epoch: one step averages 16 gradients of 50 examples, so an epoch of 4,000 examples is
only 5 steps at λ = 0.1. Bounded staleness with b = 1 keeps the workers in step, but it still
applies each gradient alone at the full λ, with staleness above N. Per second (right),
synchronous SGD is the last to finish, because every step waits for the slowest worker. This is
the lecture's conclusion: asynchronous SGD is a good option *as long as gradient staleness is
appropriately handled*. Which remedy is best depends on N, the stragglers and the learning rate:
try them on the panel."""
    ),
    code(
        '''
"""Checks side by side: S = 4 ends highest; sync finishes last and trails S = 4 after one epoch."""
assert max(finals, key=finals.get) == "soft sync S = 4", finals
assert max(times, key=times.get) == "sync", times
assert accuracy_at_epoch(by_s[16]) < accuracy_at_epoch(by_s[4]) - 0.2
assert by_b[1].staleness_summary()["max"] > N  # b = 1 applies gradients staler than N
'''
    ),
    md(
        """## 5. Your own rule f(λ, σ), simulated and run for real

Any function `f(lr, sigma)` that returns a learning rate ≥ 0 can replace λ / max(1, σ). Here is
one to start with: it shrinks the step more gently, with the square root of the staleness. Edit
it and re-run the cells below.

**Predict.** Will the gentler rule learn faster or slower per epoch than λ / max(1, σ) at N = 16?
And on three real workers, will the staleness the real server measures look like the
simulator's?"""
    ),
    code(
        '''
def my_rule(lr, sigma):
    """lambda_n for an update that is sigma versions stale: lr / sqrt(1 + sigma)."""
    return lr / (1 + sigma) ** 0.5


mine = viz.StalenessExplorer(num_workers=16, lr_policy=my_rule, base=base)
mine
'''
    ),
    md(
        """Your rule is now the selected entry of the panel's *lr policy* menu, next to `constant`,
`staleness` and `zhang`. The same function runs on the real parameter server:
`PSConfig(lr_policy=my_rule)` sends it to the server process (with cloudpickle), which calls it
for every update it applies. Three workers and one server are four processes; the simulator runs
the same configuration next to it."""
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
sim_counts = {int(k): c for k, c in sim_mine.staleness_summary()["histogram"].items()}
sim_peak = max(sim_counts, key=sim_counts.get)
at_peak = {
    "simulated": sim_counts[sim_peak] / len(sim_mine.staleness),
    "real": sum(s == sim_peak for s in real_mine.staleness) / len(real_mine.staleness),
}
print(f"share of updates at σ = {sim_peak}: " + ", ".join(f"{k} {v:.0%}" for k, v in at_peak.items()))
"""
    ),
    md(
        """Compare the panel's accuracy with the "async, lr / max(1, σ)" curve of section 4, which used
the same settings with λ / max(1, σ).

The bars are the simulator's staleness histogram and the black outline the real server's, both
for three asynchronous workers. The simulator's peaks at N − 1 = 2, as lesson 04 predicts for
workers of equal speed. Compare the printed shares: the real server's histogram can be spread
differently, and it changes from run to run, because on a small shared machine the processes do
not get the CPU in a steady rotation, so the number of other updates that land during one
worker's step varies far more than the simulator's 10% spread of compute times allows. The
**Run it for real** button of the panel does the same for the panel's settings (choose N ≤ 3
first)."""
    ),
    code(
        '''
"""Checks your rule's runs: the simulator's staleness peaks at N - 1 = 2; the real server learned."""
assert sim_peak == 2, sim_counts
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
        """On the slow network the server's one link is busy all the time: it, not the workers, sets
the pace. Two shards give two links and double the throughput, four give four. On the fast
network the link is busy only part of the time and the workers' compute sets the pace, so
sharding changes little: split the server only where it is the bottleneck. (The panel's *server
shards k* slider sets k for its simulations too.)"""
    ),
    code(
        '''
"""Checks: slow net, one saturated link, k shards ~k x throughput; fast net, link mostly idle, little gain."""
slow, fast = by_k["slow network, 1 MB/s"], by_k["fast network, 1 GB/s"]
assert slow[1].link_utilization[0] > 0.95 and fast[1].link_utilization[0] < 0.5
assert slow[2].examples_per_s >= 1.9 * slow[1].examples_per_s
assert slow[4].examples_per_s >= 3.6 * slow[1].examples_per_s
assert fast[4].examples_per_s < 1.15 * fast[1].examples_per_s
'''
    ),
    md(
        """## What we saw

- **λ_n from σ** let 16 stale workers learn at a learning rate that made plain async fail; the
  library's λ / max(1, σ) and Zhang et al.'s λ / (σ + 1) ended close together, and a constant
  rate with the same average step did about as well: the smaller average step does most of the
  work here.
- **Soft sync S** moves along a trade-off: staleness about N/S − 1, throughput falling as S
  approaches N, with S = N (synchronous) the slowest when there are stragglers. The library
  averages the S updates; the lecture's sum is the same rule at S times the learning rate.
- **Bounding staleness** has two forms: the lecture's literal gate (σ ≤ σ_max for every update)
  and SSP's clock gate (clock lag ≤ b, σ ≤ (2b + 1)(N − 1)), which systems implement because it
  needs only per-worker counters. Both trade waiting for fresher gradients along much the same
  curve.
- Your own rule plugs into the panel, the simulator and the real parameter server alike.
- **A single central server** caps throughput on a slow network; k shards give k links.

From a terminal:

```
dlcourse simulate --policy softsync --softsync 4 --workers 16 --epochs 2
dlcourse simulate --policy bounded --staleness-bound 1 --workers 16
dlcourse simulate --policy async --max-staleness 3 --workers 16
dlcourse train --strategy async-ps --workers 3 --servers 2 --lr-policy staleness --model mlp
```"""
    ),
    md(
        """## Exercises

1. Make the workers unequal: `worker_speeds=(0.25,) * 4 + (1.0,) * 12` in `base`. Compare
   λ / max(1, σ) with the constant rate of the same average step again. Does per-update scaling
   win now?

<details><summary>Hint</summary>

`variant(worker_speeds=..., lr=0.3, lr_policy="staleness")`, then compute `mean_step` from its
`staleness` as in section 1 and run the constant. The slow workers' updates are much staler than
the fast ones', so one might expect a single constant rate to suit neither. When we tried it, the
two still came out about even: can you find settings (fewer or slower slow workers, a larger λ)
where they do not?
</details>

2. Write a rule that drops any update staler than 2(N − 1) (returns 0) and keeps λ otherwise.
   Plug it into a new panel and into a real run. What fraction of updates does it drop at N = 16?
   How does it compare with the staleness gate at σ_max = 30, which delays instead of dropping?

<details><summary>Hint</summary>

The rule only sees `lr` and `sigma`, so write N into it: `def drop_stale(lr, sigma): return 0.0
if sigma > 30 else lr`. Then `viz.StalenessExplorer(num_workers=16, lr_policy=drop_stale,
base=base)`, and count `sum(s > 30 for s in r.staleness) / len(r.staleness)` on its `result`;
`variant(max_staleness=30)` for the gate.
</details>

3. For N = 16, which S gives the best accuracy after one virtual second? Use `r.time_curve("accuracy")`
   on the soft-sync sweep. Then repeat with `reduce="sum"`: which S wins now, and why?

<details><summary>Hint</summary>

For each S take the last evaluation whose time is at most the threshold (the runs have different
lengths in virtual time; pick the threshold so that every run has a point before it). With the
sum, S = 16 steps at 16 λ.
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
  IJCAI 2016 (λ / τ with τ counting the update itself, n-softsync).
- Q. Ho, J. Cipar, H. Cui, et al. *More Effective Distributed ML via a Stale Synchronous Parallel
  Parameter Server.* NIPS 2013 (the clock gate, SSP).
- J. Dean, G. Corrado, R. Monga, et al. *Large Scale Distributed Deep Networks.* NIPS 2012
  (parameter server shards).
- M. Li, D. G. Andersen, J. W. Park, et al. *Scaling Distributed Machine Learning with the
  Parameter Server.* OSDI 2014 (bounded delay).
- S. Gupta, W. Zhang, F. Wang. *Model Accuracy and Runtime Tradeoff in Distributed Deep Learning:
  A Systematic Study.* ICDM 2016.
- Lecture: *Distributed Deep Learning* (L. Dong), parts "Approaches to Dealing with Stale
  Gradients" and "Centralized versus Decentralized Async SGD"."""
    ),
]


write("05_taming_staleness.ipynb", cells)
