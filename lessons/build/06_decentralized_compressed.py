# ruff: noqa: E501  (markdown paragraphs stay one line each, so the notebook reflows them)
"""Builds lessons/06_decentralized_compressed.ipynb (committed without outputs): run it from the repository root.

    .venv/bin/python lessons/build/06_decentralized_compressed.py

Edit this file, not the notebook: the notebook is generated from it.
"""

from __future__ import annotations

from lesson import Cells, write

cells = Cells()
md, code = cells.md, cells.code


md("""
# 06 · Decentralized SGD with compressed updates

Lessons 04 and 05 sent every update through a parameter server. This lesson removes the server. Every worker keeps its own full copy of the model and sends its updates straight to its peers, and because there is no server to absorb the traffic, each update is squeezed first: most of it is not sent at all, what is sent is one bit per number, and even the positions of those numbers are packed with an entropy code. This is the scheme of Strom (Interspeech 2015) that the lecture presents as *decentralized async SGD*.

The lecture's figure shows a handful of machines joined to each other by arrows, with no box in the middle: each arrow carries a compressed update vector $\\delta_{i,n}$ from one learner to another. Keep that picture in mind; everything below is one of those arrows, looked at closely.

After this lesson you will be able to

- run decentralized SGD on real processes, all-to-all and around a ring, and say what each topology costs;
- follow one update from 32 bits per number down to a few bits per *sent* number, and compare the code with the entropy of what it encodes;
- show with an assert that the residual delays information but never loses it, and what happens to accuracy when it is dropped;
- choose the threshold $\\tau$ as a trade-off between bytes and accuracy;
- put the traffic next to fp16 and PowerSGD, measure what compressing costs in time, and start training with fewer workers.

**Notation.** $N$ is the number of workers (here: peers). $\\lambda$ is the learning rate; worker $n$'s update at its step $i$ is $\\Delta W_{i,n} = -\\lambda\\,\\nabla L$, what it actually sends is the compressed $\\delta_{i,n}$, and $\\mathbf r_n$ is its residual. $\\tau$ is the threshold: the one value every sent number takes, with a sign.
""")

code("""
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from dlcourse.collectives import flat_parameters, peers
from dlcourse.data import batch_order, load_mnist
from dlcourse.models import count_parameters, make_model

split = load_mnist("subset")
shapes = [tuple(p.shape) for p in make_model("mlp", seed=0).parameters()]
numel = count_parameters(make_model("mlp", seed=0))  # elements of one dense update
print(f"{len(split.train):,} training digits, {len(split.test):,} test digits")
print(f"the MLP: {numel:,} parameters, shapes {shapes}")
for topology in ("all", "ring"):
    print(f"{topology:>4}: rank -> the peers it sends to", {rank: peers(rank, 4, topology) for rank in range(4)})
""")

md("""
## 1. Peers instead of a server

With a parameter server, a worker pushes its update to one place and pulls the model back. Without one, a worker has to tell every other replica what it changed, so that all $N$ copies of the model keep describing the same network. There are two simple ways to wire that:

- **all-to-all**: the worker sends its message to each of the $N-1$ others itself;
- **ring**: the worker sends it only to the next rank, which applies it and passes it on, until it has gone round.

Either way nobody waits: after a step a worker sends its message, adds whatever messages from peers have arrived so far, and starts the next step. A worker applies to its own replica exactly the compressed update it sends, not its uncompressed one, so once every message has arrived everywhere all replicas hold the same sum and agree.

### Run it for real

`train_decentralized` starts $N$ real processes (gloo, one thread each); a background thread in each receives peer messages from whichever peer sends first.

**Predict.** With $N = 4$ workers training for one epoch, which topology puts more bytes on the wire in total: all-to-all, where each worker sends $N-1$ copies, or the ring, where each sends one? And which one delivers a peer's update *later*?
""")

code("""
from dlcourse.decentralized import DecentralizedConfig, train_decentralized

N_REAL = 4  # real processes: at most 4 in these lessons
TAU = 3e-3  # the threshold of section 2 onwards
real = {}
for topology in ("all", "ring"):
    config = DecentralizedConfig(tau=TAU, topology=topology, model="mlp", lr=0.1, epochs=1, batch_size=50)
    real[topology] = run = train_decentralized(config, N_REAL)
    print(
        f"{topology:>4}: accuracy {run.test_accuracy:.3f}, {run.updates} updates, {run.messages} messages, "
        f"{run.bytes_sent:,} bytes on the wire ({run.compression_ratio:.0f}x below dense float32), "
        f"mean staleness {np.mean(run.staleness):.2f} steps, replicas differ by {run.replica_divergence:.1e}"
    )
""")

code("""
fig, (ax_bytes, ax_stale) = plt.subplots(1, 2, figsize=(10, 3.4))
names = list(real)
ax_bytes.bar(names, [real[t].bytes_sent / N_REAL / 1e3 for t in names], color=["C0", "C1"])
ax_bytes.set(ylabel="kB sent per worker (1 epoch)", title="traffic: the same in both topologies")
top = max(max(r.staleness) for r in real.values())
for i, name in enumerate(names):
    counts = np.bincount(real[name].staleness, minlength=top + 1)
    ax_stale.bar(np.arange(top + 1) + (i - 0.5) * 0.4, counts, width=0.4, label=name)
ax_stale.set(xlabel="staleness of an applied peer update (local steps)", ylabel="count", title="how late peer updates arrive")
ax_stale.legend()
fig.tight_layout()
""")

md("""
Look at the left panel first: the bars are (nearly) the same height. Every update has to reach $N-1$ other replicas, and in both wirings that takes exactly $N-1$ messages: all-to-all sends the copies from the origin, the ring forwards one copy $N-1$ times. What differs is *who* sends them and *when* they arrive: in the ring a worker talks to one neighbour only (one link, no fan-out), but an update needs up to $N-1$ hops to reach the replica just behind its origin. The right panel counts, for every peer update a replica applied, how many of its own steps it had taken since the update was made: its staleness, in the sense of lessons 04 and 05. On real processes these numbers depend on the scheduling of this machine, so they move from run to run.
""")

code("""
\"\"\"Checks that both topologies sent N-1 messages per update and that the replicas agree once all have arrived.\"\"\"
for topology, run in real.items():
    assert run.messages == run.updates * (N_REAL - 1), (topology, run.messages, run.updates)
    assert run.replica_divergence < 1e-5, (topology, run.replica_divergence)
    assert run.test_accuracy > 0.5, (topology, run.test_accuracy)
""")

md("""
Now the same question where the clock is under our control. The simulator of lesson 04 has a decentralized policy, `dlcourse.sim.DecentralizedSimConfig`: the same replicas, real gradients and real compressed messages, but time is virtual (a link needs `latency + bytes / bandwidth` per message), so a run is the same on every machine and $N$ can go beyond the four processes we may start here. Its staleness of a step counts the updates already made somewhere in the cluster that have not yet reached this worker's replica.
""")

code("""
from dlcourse.sim import simulate
from dlcourse.sim.decentralized import DecentralizedSimConfig

SIM = dict(batch_size=50, bandwidth=1e7, lr=0.1, epochs=1)  # 10 MB/s links: a slow network
sims = {}  # (N, topology, tau, variant) -> SimResult, so that no setting runs twice


def simulated(num_workers=4, topology="all", tau=TAU, variant="full", **more):
    key = (num_workers, topology, tau, variant, tuple(sorted(more.items())))
    if key not in sims:
        config = DecentralizedSimConfig(num_workers=num_workers, topology=topology, tau=tau, variant=variant, **{**SIM, **more})
        sims[key] = simulate(config)
    return sims[key]


sizes = (4, 8, 16)
mean_staleness = {t: [float(np.mean(simulated(n, t).staleness)) for n in sizes] for t in ("all", "ring")}
for t, values in mean_staleness.items():
    print(f"{t:>4}: mean staleness", dict(zip(sizes, np.round(values, 2))))
""")

code("""
fig, ax = plt.subplots(figsize=(5, 3.2))
for t, values in mean_staleness.items():
    ax.plot(sizes, values, "o-", label=t)
ax.set(xlabel="workers N", ylabel="mean staleness (updates)", title="simulated: ring vs all-to-all", xticks=sizes)
ax.legend()
fig.tight_layout()
""")

md("""
The ring's line climbs steeply with $N$: an update crosses up to $N-1$ links in turn before the last replica gets it, and meanwhile that replica keeps computing on a model without it. All-to-all stays near one update at every $N$ here: each message takes a single hop, and the compressed messages are so small that even fifteen copies leave the sender's link quickly. (Uncompressed messages are 200 times larger: try `simulated(16, "all", None)` and compare its staleness.)
""")

code("""
\"\"\"Checks that the ring's staleness grows with N, is at least all-to-all's at every N, and far above it at N = 16.\"\"\"
ring, everyone = mean_staleness["ring"], mean_staleness["all"]
assert all(a < b for a, b in zip(ring, ring[1:])), ring
assert all(r >= e for r, e in zip(ring, everyone)), (ring, everyone)
assert ring[-1] > 2 * everyone[-1], (ring, everyone)
""")

md("""
## 2. From a dense update to a few bits per number

One message, step by step. A dense update of the MLP is 50,890 float32 numbers, 32 bits each. The lecture squeezes it in three moves:

1. **Sparse.** Send only the entries that are large enough, $|r| \\ge \\tau$, and treat the others as 0. A sent entry now needs its position as well as its value: an integer index (32 bits) and a float (32 bits), so 64 bits per *sent* number.
2. **1-bit.** Do not send the value either: every sent entry is $+\\tau$ or $-\\tau$, with the same $\\tau$ for the whole message, so one sign bit is enough. 33 bits per sent number (index plus sign).
3. **Entropy-coded indexes.** Sorted positions are better sent as the *gaps* between them, and the gaps are small and repetitive (sent entries cluster: whole rows of a weight matrix cross $\\tau$ together). A variable-length code (Golomb-Rice or Exp-Golomb, with the parameter fitted to each message by `dlcourse.compression.best_coder`) gives short gaps short codewords.

How good can step 3 be? Shannon's entropy of the gap values, $H = -\\sum_g p(g)\\log_2 p(g)$ bits per gap, is the least any code for gaps drawn independently with those frequencies can spend on average. We compare the coder with it.

Below, one worker trains the MLP for half an epoch (40 steps). Its updates $\\Delta W_{i,n}$ go through a `Compressor` (the residual scheme of section 3), the worker adds to its model exactly what the compressor sends, and at every step we count the bits of each representation of that step's message. A second compressor without residual (`variant="onebit"`) watches the same stream of updates, for section 3.

**Predict.** With $\\tau = 0.003$ and $\\lambda = 0.1$, roughly what fraction of the 50,890 entries crosses the threshold in a step: 50%, 5% or 0.05%? And how many bits will the entropy-coded position of one sent entry take: closer to 32, to 16 or to 5?
""")

code("""
from dlcourse.compression import Compressor, best_coder, coded_bits, encode, gap_entropy_bits, gaps_of

model = make_model("mlp", seed=0)
flat = flat_parameters(model)  # one vector the model's parameters are views of
lr = 0.1
full = Compressor(numel, tau=TAU)  # the lecture's scheme: residual kept
onebit = Compressor(numel, tau=TAU, variant="onebit")  # the same updates, no residual
update_sum, sent_sum, onebit_sum = torch.zeros(numel), torch.zeros(numel), torch.zeros(numel)
steps = []  # per step: sent count, entropy of gaps, coded bits per gap, message bytes, residual max
all_gaps, all_coded_bits = [], 0  # every gap of the epoch, and the bits the coder spent on them
for idx in batch_order(len(split.train), 50, epoch=0, seed=0, worker=0)[:40]:
    loss = F.cross_entropy(model(split.train.X[idx]), split.train.y[idx])
    model.zero_grad(set_to_none=True)
    loss.backward()
    update = -lr * torch.cat([p.grad.reshape(-1) for p in model.parameters()])  # Delta W
    message = full.compress(update)
    onebit.compress(update)
    with torch.no_grad():
        flat += full.last_sent  # the worker applies what it sends, like its peers
    update_sum += update
    sent_sum += full.last_sent
    onebit_sum += onebit.last_sent
    positions = full.last_sent.nonzero().squeeze(1).numpy()
    gaps = gaps_of(positions)
    coder, k = best_coder(gaps)
    count = max(1, len(positions))
    all_gaps.append(gaps)
    all_coded_bits += coded_bits(gaps, coder, k)
    steps.append((len(positions), gap_entropy_bits(gaps), coded_bits(gaps, coder, k) / count, len(message), float(full.residual.abs().max())))

sent, entropy, coded, nbytes, residual_max = map(np.array, zip(*steps))
density = sent / numel
bits_per_parameter = {  # bits per element of the update, i.e. per model parameter
    "dense float32": np.full(len(steps), 32.0),
    "sparse: index + float32": 64 * density,
    "1-bit: index + sign": 33 * density,
    "coded gaps + sign": (coded + 1) * density,
    "entropy of gaps + sign": (entropy + 1) * density,
    "the whole message (header, crc)": 8 * nbytes / numel,
}
last = len(steps) - 1
print(f"last step: {sent[last]:,} of {numel:,} entries sent ({density[last]:.1%}); coder {coder}(k={k})")
print(f"{'representation':>32} {'bits/parameter':>15} {'bits/sent entry':>16}")
for name, bits in bits_per_parameter.items():
    print(f"{name:>32} {bits[last]:>15.3f} {bits[last] / density[last]:>16.2f}")
epoch_gaps = np.concatenate(all_gaps)
epoch_entropy, epoch_coded = gap_entropy_bits(epoch_gaps), all_coded_bits / len(epoch_gaps)
# the last message is exactly these positions and signs, coded: rebuild it from them
rebuilt = encode(positions, numel, tau=TAU, negative=(full.last_sent[positions] < 0).numpy())
print(f"last message: {nbytes[last]:,} bytes; encode(positions, signs) gives {len(rebuilt):,} bytes")
print(f"all {len(steps)} messages: {len(epoch_gaps):,} gaps, entropy {epoch_entropy:.2f} bits per gap, coded {epoch_coded:.2f}")
""")

code("""
fig, ax = plt.subplots(figsize=(8, 3.6))
for name, bits in bits_per_parameter.items():
    ax.plot(np.arange(1, len(bits) + 1), bits, ls="--" if "entropy" in name else "-", label=name)
ax.set_yscale("log")
ax.set(xlabel="step", ylabel="bits per parameter", title="one worker's message, each step, four ways")
ax.legend(fontsize="small", loc="center right")
fig.tight_layout()
""")

md("""
Read the plot from the top. Dense float32 is the flat line at 32 bits per parameter. Dropping the small entries alone brings it down by more than an order of magnitude, though each sent entry then costs 64 bits. The sign bit instead of a float halves that. Coding the gaps takes off most of what is left: the sent positions cost about 5-6 bits each instead of 32, which puts the whole update below one bit per parameter. The dashed entropy line hugs the coded line from below; the real message, header and checksum included, lies right on top of the coded line.

How close to the entropy is the code? Per message the measured entropy is a poor yardstick when a message is short: $n$ gaps can show at most $\\log_2 n$ bits of entropy however spread out they are (the very first message sends only a handful of entries), so a single small message makes any code look wasteful. Over all 40 messages, with tens of thousands of gaps, the frequencies are reliable, and that is what the check below compares: the coder's bits per gap against the entropy of all the gaps together. (The coder fits its parameter to each message, so it could in principle even beat the pooled figure.)
""")

code("""
\"\"\"Checks that over all messages the coded gaps take within one bit of the gaps' entropy, and a message < 1 bit/parameter.\"\"\"
assert len(epoch_gaps) > 10_000, len(epoch_gaps)
assert epoch_entropy <= epoch_coded + 0.5 and epoch_coded <= epoch_entropy + 1.0, (epoch_entropy, epoch_coded)
busy = sent >= 100  # all but the first few steps
assert busy.sum() >= 0.9 * len(steps), busy.sum()
assert np.all(bits_per_parameter["the whole message (header, crc)"][busy] < 1.0)
assert rebuilt == message  # the Compressor's message is nothing but the coded positions and signs
""")

md("""
## 3. The residual: delayed, not lost

Sending only $\\pm\\tau$ throws information away at every step: the entries below $\\tau$, and the part of a large entry beyond $\\tau$. Strom's remedy is the residual vector $\\mathbf r_n$ on each worker. The update is added to it, the message is cut from it, and what was not sent stays in it for the next step:

$$\\mathbf r_n \\leftarrow \\mathbf r_n + \\Delta W_{i,n},\\qquad \\delta_{i,n} = \\tau\\,\\mathrm{sign}(\\mathbf r_n)\\,[|\\mathbf r_n| \\ge \\tau],\\qquad \\mathbf r_n \\leftarrow \\mathbf r_n - \\delta_{i,n}.$$

An entry whose update is always a quarter of $\\tau$ is sent once every four steps; an entry whose update is $2.5\\,\\tau$ is sent at every step, one $\\tau$ at a time, and its residual keeps growing. In either case nothing disappears, so at any moment *everything sent so far plus the residual equals the sum of all updates*. Without the residual (`onebit`), the small entries are never sent at all.

Here is the rule on four numbers, with $\\tau = 1$ to keep the arithmetic exact: `quantize` is the threshold, `residual_step` the three lines above.

**Predict.** The `onebit` compressor saw the same updates. What share of their sum (by norm) did it fail to deliver: a few percent, or most of it?
""")

code("""
from dlcourse.compression import quantize, residual_step

print("quantize([0.4, -1.2, 2.5], tau=1) =", quantize(torch.tensor([0.4, -1.2, 2.5]), 1.0).tolist())
toy_update = torch.tensor([0.25, -0.75, 2.5, 0.0])  # the same update at every step, in units of tau
toy_residual, toy_sent = torch.zeros(4), torch.zeros(4)
for step in range(1, 5):
    delta = residual_step(toy_residual, toy_update, 1.0)  # r += update; delta = quantize(r); r -= delta
    toy_sent += delta
    print(f"step {step}: sent {delta.tolist()}, residual now {toy_residual.tolist()}")
""")

code("""
gap_full = (update_sum - sent_sum).norm() / update_sum.norm()
gap_onebit = (update_sum - onebit_sum).norm() / update_sum.norm()
print(f"with the residual:    {gap_full:.1%} of the summed update not sent yet (it is in the residual)")
print(f"without the residual: {gap_onebit:.1%} of the summed update never sent")
print(f"the residual's largest entry is {residual_max[-1] / TAU:.0f} tau: that weight is that many steps behind")

sample = np.random.default_rng(0).choice(numel, 3000, replace=False)
fig, ax = plt.subplots(figsize=(5, 4))
ax.scatter(update_sum[sample], onebit_sum[sample], s=4, alpha=0.5, label="sent, no residual (onebit)")
ax.scatter(update_sum[sample], sent_sum[sample], s=4, alpha=0.5, label="sent, with residual")
lim = float(update_sum[sample].abs().max())
ax.plot([-lim, lim], [-lim, lim], "k--", lw=1, label="everything delivered")
ax.set(xlabel="sum of the updates of one parameter", ylabel="sum of what was sent", title="40 steps, 3,000 parameters")
ax.legend(fontsize="small")
fig.tight_layout()
""")

md("""
Each dot is one parameter after the 40 steps: across, the sum of its updates; up, the sum of what was sent for it. With the residual the dots sit on the diagonal, at most a few $\\tau$ away from it (that is the residual still waiting). Without it they lie along the horizontal axis: those parameters' updates were smaller than $\\tau$ at every step and were dropped every time, and the ones that were sent were clipped to $\\tau$.
""")

code("""
\"\"\"Checks conservation on the run just made: sent + residual == sum of updates; onebit loses most of it.\"\"\"
assert torch.allclose(sent_sum + full.residual, update_sum, atol=1e-5), (sent_sum + full.residual - update_sum).abs().max()
assert full.residual.abs().max() > TAU  # not all of it was sent: some is delayed
assert gap_onebit > 0.5 and gap_full < 0.5 * gap_onebit, (gap_full, gap_onebit)
assert onebit.residual.numel() == 0  # the onebit variant keeps nothing
assert torch.equal(toy_sent + toy_residual, 4 * toy_update)  # exactly, in the toy
""")

md("""
## 4. Tau is a trade-off

Two things limit a compressed update, and $\\tau$ moves them in opposite directions.

- **Small $\\tau$: a weight can move only $\\tau$ per step.** Every sent entry is exactly $\\pm\\tau$, so one message moves a weight by at most $\\tau$, however large its gradient. Above, with $\\tau = 0.003$, one residual entry had already piled up many times $\\tau$ after 40 steps: that weight wanted to move much faster than the code allows. Make $\\tau$ ten times smaller and the backlog grows, and the messages get *bigger*, since many more entries cross the lower bar.
- **Large $\\tau$: too little is sent.** Few entries reach the bar; most of the update sits in the residual for many steps and arrives late, in coarse jumps of $\\tau$.

**Predict.** The simulator runs one epoch with $N = 4$ for six thresholds from $10^{-4}$ to $3\\cdot10^{-2}$. Which $\\tau$ reaches the best test accuracy: the smallest, the largest, or one in between? And how do the bytes change along the sweep?
""")

code("""
taus = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
sweep = [simulated(4, "all", tau) for tau in taus]
dense = simulated(4, "all", None)
accuracy = [run.test.accuracy for run in sweep]
traffic = [run.bytes_sent for run in sweep]
for tau, acc, b in zip(taus, accuracy, traffic):
    print(f"tau {tau:.0e}: accuracy {acc:.3f}, {b:>10,} bytes ({dense.bytes_sent / b:,.0f}x below dense)")
print(f"dense:      accuracy {dense.test.accuracy:.3f}, {dense.bytes_sent:>10,} bytes")

fig, (ax_acc, ax_b) = plt.subplots(1, 2, figsize=(10, 3.4))
ax_acc.plot(taus, accuracy, "o-", label="compressed (residual)")
ax_acc.axhline(dense.test.accuracy, color="grey", ls="--", label="dense")
ax_acc.set(xscale="log", xlabel="tau", ylabel="test accuracy after 1 epoch", title="accuracy")
ax_b.plot(taus, traffic, "o-", label="compressed (residual)")
ax_b.axhline(dense.bytes_sent, color="grey", ls="--", label="dense")
ax_b.set(xscale="log", yscale="log", xlabel="tau", ylabel="bytes on the wire", title="traffic")
for ax in (ax_acc, ax_b):
    ax.legend(fontsize="small")
fig.tight_layout()
""")

md("""
The right panel is monotone: the higher the bar, the fewer entries cross it and the fewer bytes travel. The left panel is a hill. At the small end the cap of one $\\tau$ per step slows training down (and the traffic is far from the savings we want); at the large end too little gets through in one epoch. Near the top of the hill the compressed runs match the dense run's accuracy with 70 to 200 times less traffic. Where the top lies depends on the size of the updates, that is on $\\lambda$ and the gradients: a rule of thumb is a $\\tau$ of the order of a typical large entry of $\\lambda \\nabla L$.
""")

code("""
\"\"\"Checks that bytes fall as tau grows and that the best accuracy lies strictly inside the sweep.\"\"\"
assert all(a > b for a, b in zip(traffic, traffic[1:])), traffic
best = int(np.argmax(accuracy))
assert 0 < best < len(taus) - 1, (best, accuracy)
assert accuracy[best] - accuracy[0] > 0.05 and accuracy[best] - accuracy[-1] > 0.05, accuracy
""")

md("""
Now steer it yourself. The panel runs the same simulation with the $\\tau$ of the slider, and draws the bytes of every message (left, log scale) and the test accuracy (right) next to the uncompressed run. Untick *keep the residual* to switch to the `onebit` variant; each setting is computed once and kept, so going back is instant.
""")

code("""
from dlcourse.viz import CompressionExplorer

panel = CompressionExplorer(tau=TAU, residual=True, num_workers=4)
panel
""")

md("""
Look at the left plot: the uncompressed line sits two orders of magnitude above the compressed one, at every step. Then move the slider to the extremes and watch the accuracy curve sag at both ends, as in the sweep. The cell below unticks the residual for you; look at the right plot again.
""")

code("""
with_residual = panel.result
panel.residual.value = False  # what a student's click does: the onebit variant, same tau
without_residual = panel.result
print(f"tau {TAU}: accuracy {with_residual.test.accuracy:.3f} with the residual, {without_residual.test.accuracy:.3f} without")
""")

code("""
\"\"\"Checks that dropping the residual (onebit) costs accuracy at the same tau.\"\"\"
assert without_residual.config.variant == "onebit" and with_residual.config.variant == "full"
assert without_residual.test.accuracy < with_residual.test.accuracy - 0.2, (with_residual.test, without_residual.test)
""")

md("""
Without the residual, training barely leaves the starting point: most of the gradient signal is below $\\tau$ at any single step, and it is simply thrown away. With the residual the same small signals add up over steps until they cross $\\tau$, and are then delivered. That is the whole point of $\\mathbf r_n$.

## 5. Orders of magnitude below dense, fp16 and PowerSGD

How does this compare with what people use in practice? Per worker and step, a gradient (or update) message of the MLP costs:

- **dense float32**: 4 bytes per parameter;
- **fp16** (PyTorch DDP's `fp16_compress_hook`): 2 bytes per parameter, half of dense;
- **PowerSGD of rank $r$** (Vogels et al., NeurIPS 2019; DDP's `powerSGD_hook`): each weight matrix $M$ of shape $m \\times n$ is replaced by two thin float32 factors $P$ ($m \\times r$) and $Q$ ($n \\times r$) with $M \\approx P Q^\\top$, so it costs $r(m+n)$ numbers instead of $mn$; vectors (the biases), and matrices where $r(m+n)$ would not be smaller, go uncompressed, as the hook does. The numbers below come from the MLP's layer shapes: a $64 \\times 784$ and a $10 \\times 64$ matrix and two bias vectors. (`benchmarks/compression.py` makes the same comparison for the lecture's CNN.)
- **ours**: the mean of the real all-to-all run's messages in section 1 (rank 0's, header and checksum included).

**Predict.** By what factor is our message smaller than fp16? Than PowerSGD of rank 1?
""")

code("""
def powersgd_message_bytes(shapes, rank):
    \"\"\"float32 bytes of P and Q for each matrix, r*(m+n) numbers; vectors and small matrices dense.\"\"\"
    total = 0
    for shape in shapes:
        m, n = shape[0], int(np.prod(shape[1:], dtype=np.int64))
        total += 4 * (rank * (m + n) if len(shape) >= 2 and rank * (m + n) < m * n else m * n)
    return total


ours = float(np.mean(real["all"].bytes_per_step))
per_step = {
    "dense float32": 4 * numel,
    "fp16": 2 * numel,
    "PowerSGD r=4": powersgd_message_bytes(shapes, 4),
    "PowerSGD r=1": powersgd_message_bytes(shapes, 1),
    f"1-bit, tau={TAU}": ours,
}
for name, b in per_step.items():
    print(f"{name:>18}: {b:>10,.0f} bytes per message   ({b / ours:>6.1f}x ours)")

fig, ax = plt.subplots(figsize=(7, 3.2))
ax.barh(list(per_step), list(per_step.values()), color=["grey", "C7", "C2", "C2", "C0"])
ax.set(xscale="log", xlabel="bytes per worker and step (log scale)", title="one update of the MLP, five ways")
fig.tight_layout()
""")

md("""
The bars are on a log scale: each grid line is ten times the one before. fp16 halves dense and no more. PowerSGD exploits the fact that a gradient matrix is nearly low-rank and wins a factor of 14 (rank 4) to 50 (rank 1) here. The thresholded 1-bit message is smaller again, although the ratio to PowerSGD is modest for a network this small: its advantage grows with the size of the layers, since PowerSGD's cost grows with $m+n$ per matrix while ours grows with the number of entries that matter. (In an all-to-all setting each message is sent $N-1$ times; an all-reduce of dense, fp16 or PowerSGD data moves about twice its size per worker, `dlcourse.collectives.ring_allreduce_bytes`. The per-message comparison is the fair one.)
""")

code("""
\"\"\"Checks the real run's traffic: >= 100x below dense float32, below fp16 and below PowerSGD rank 1.\"\"\"
assert real["all"].compression_ratio >= 100 and real["ring"].compression_ratio >= 100
assert per_step["dense float32"] / ours >= 100, per_step["dense float32"] / ours
assert per_step["fp16"] == per_step["dense float32"] / 2
assert ours < per_step["PowerSGD r=1"] < per_step["PowerSGD r=4"] < per_step["fp16"]
""")

md("""
## 6. Compressing is not free

The lecture's warning: compression and quantization add computation to every mini-batch and a little memory on every worker. The memory is the residual, one float per parameter: as much as a second copy of the model. The time we measure: for twenty mini-batches, the plain step (forward, backward, the update vector), then compressing it (residual, threshold, gap code), then what a receiving peer does (parse the message and add it to its replica). On this machine, shared with others, the absolute times jump around; the ratio is what to read.
""")

code("""
from dlcourse.compression import read_message

timer = Compressor(numel, tau=TAU)
times = {"plain step": [], "compress": [], "decode + add": []}
for idx in batch_order(len(split.train), 50, epoch=1, seed=0, worker=0)[:20]:
    start = time.perf_counter()
    loss = F.cross_entropy(model(split.train.X[idx]), split.train.y[idx])
    model.zero_grad(set_to_none=True)
    loss.backward()
    update = -lr * torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    step_done = time.perf_counter()
    message = timer.compress(update)
    compressed = time.perf_counter()
    with torch.no_grad():
        read_message(message).add_to(flat)
    times["plain step"].append(step_done - start)
    times["compress"].append(compressed - step_done)
    times["decode + add"].append(time.perf_counter() - compressed)
median_ms = {name: 1e3 * float(np.median(t)) for name, t in times.items()}
for name, ms in median_ms.items():
    print(f"{name:>12}: {ms:6.2f} ms  ({ms / median_ms['plain step']:.2f}x a plain step)")
print(f"residual: {timer.residual.numel():,} floats = {timer.residual.nbytes:,} bytes, the size of the model")
""")

md("""
For this small MLP, compressing takes a sizeable fraction of a training step (on an idle machine with one thread per process, about as long as the step itself): the network does little computation per parameter, so the overhead shows. Most of it is on the sender's side, which scans the residual and fits the gap code; the receiver only unpacks the bits and adds a few thousand numbers. For a network with more computation per parameter (the lecture's CNN shares its convolution weights across the whole image) the step grows much faster than the compression, and the overhead shrinks in proportion. Compression pays when the network is the bottleneck; on a fast link with a small model it can cost more time than it saves.
""")

code("""
\"\"\"Checks the costs just measured: compression took time each step and its residual is one float per parameter.\"\"\"
assert min(times["compress"]) > 0 and min(times["decode + add"]) > 0
assert timer.residual.numel() == numel and timer.residual.nbytes == 4 * numel
assert timer.elements_sent < 20 * numel  # and yet it sent only a small share of the entries
""")

md("""
## 7. Fewer workers early in training

The lecture's last remark on this scheme: convergence can suffer in the early stages of training, and it may help to use fewer nodes for part of the first epoch. Early on the gradients are large and the model changes quickly, so an update computed on an old replica points in an outdated direction, and at the very start all $N$ workers compute from the *same* initial weights: their first $N$ updates land together like one step $N$ times as long. With `warmup_workers` and `warmup_fraction` only the first few workers train for that fraction of the first epoch; the others only apply the incoming updates and join afterwards.

**Predict.** $N = 16$ simulated workers, batches of 25. Which run has the higher test accuracy after the first eighth of an epoch: all 16 from the start, or 2 workers alone for the first half epoch?
""")

code("""
early = dict(batch_size=25, evals_per_epoch=8, lr=0.2)
from_start = simulated(16, "all", TAU, **early)
warm = simulated(16, "all", TAU, warmup_workers=2, warmup_fraction=0.5, **early)

fig, ax = plt.subplots(figsize=(6, 3.4))
for label, run in (("16 from the start", from_start), ("2 alone for half an epoch, then 16", warm)):
    ax.plot([p.epoch for p in run.evals], [p.accuracy for p in run.evals], "o-", label=label)
ax.set(xlabel="epochs of data applied", ylabel="test accuracy", title="fewer workers early (simulated, N = 16)")
ax.legend(fontsize="small")
fig.tight_layout()
first = {name: run.evals[1] for name, run in (("from start", from_start), ("warm-up", warm))}
for name, point in first.items():
    print(f"{name:>10}: accuracy {point.accuracy:.3f} after {point.epoch:.3f} epochs")
""")

md("""
The x-axis counts the data applied, so both runs are compared after the same number of examples. The warm-up run climbs faster at first: its few workers see each other's updates almost at once, so every step starts from a fresh model. The run that starts with all sixteen first spends a round of updates computed from the same initial weights. The warm-up run's curve ends earlier, since its late workers skipped their part of the warm-up; later in training, when the model changes slowly, many workers cost little in accuracy and bring their speed.
""")

code("""
\"\"\"Checks that two workers alone early reach a higher accuracy after the first eval than sixteen from the start.\"\"\"
assert abs(first["warm-up"].epoch - first["from start"].epoch) < 0.02, first
assert first["warm-up"].accuracy > first["from start"].accuracy, first
""")

md("""
## What this lesson showed

- Without a server, every update still has to reach $N-1$ replicas: all-to-all and the ring put the same number of messages on the wire; the ring trades fan-out for more hops and so more staleness.
- One message went from 32 bits per parameter to below one: sparse, then $\\pm\\tau$ in one bit, then gaps coded within a bit of their entropy.
- The residual makes the compression lossless over time (an exact identity, checked above); without it most of the signal is lost and training stalls.
- $\\tau$ trades bytes for accuracy, with a best value in between; the traffic is orders of magnitude below dense and fp16 and below PowerSGD, at a cost in computation and one model's worth of memory.
- Starting with fewer workers helps the first, fastest-changing part of training.

## Exercises

1. **Your own quantizer.** Write `def my_quantize(r, tau)` that sends $\\pm\\tau$ only where $|r| \\ge 2\\tau$, plug it into `Compressor(numel, tau=TAU, quantizer=my_quantize)`, and rerun the loop of section 2 with it. Does the conservation assert still hold? How do the bytes and the residual change?
<details><summary>Hint</summary>Start from <code>torch.where(r.abs() >= 2 * tau, torch.sign(r) * tau, torch.zeros_like(r))</code>. Conservation holds for <i>any</i> quantizer, because the residual is updated with whatever was sent; only how long things stay in the residual changes. <code>DecentralizedSimConfig(quantizer=my_quantize)</code> runs it in the simulator too.</details>

2. **Tau and the learning rate.** Repeat the sweep of section 4 with `lr=0.05` and `lr=0.2` (pass `lr=` to `simulated`). Does the best $\\tau$ move? In which direction, and by roughly what factor?
<details><summary>Hint</summary>The update is $\\lambda\\nabla L$: doubling $\\lambda$ doubles every entry, so the same entries cross a $\\tau$ twice as large. Expect the hill to shift right by about the same factor.</details>

3. **A ring on a slow, long link.** In the simulator, compare ring and all-to-all at $N = 16$ with `latency=1e-2` (10 ms per message). What happens to the staleness and to the virtual time of an epoch (`run.virtual_s`)? Which topology would you choose for workers spread over two data centres?
<details><summary>Hint</summary>Pass <code>latency=1e-2</code> to <code>simulated</code>. Every hop costs the latency again, and an update needs up to N-1 hops to go round the ring. All-to-all also puts N-1 messages on the sender's link, one after another, but each reaches its receiver in one hop. Let the numbers decide.</details>

4. **Bits for the lecture's CNN.** Compute `powersgd_message_bytes` for the CNN's shapes (`make_model("cnn")`, 1,111,946 parameters) at rank 1 and 4, and compare with a 1-bit message at 1% density coded at 6 bits per sent entry. Does the gap to PowerSGD grow or shrink compared with the MLP?
<details><summary>Hint</summary>The convolution kernels are reshaped to (out_channels, everything else), as the DDP hook does; the big one is the 1024 x 1024 dense layer. 1% of 1,111,946 entries at about 6-7 bits is under 10 kB.</details>

5. **How long a warm-up?** Sweep `warmup_fraction` over 0.1, 0.25, 0.5 and 1.0 with two and with four warm-up workers (two epochs, so that everyone trains in the second). Which setting reaches 80% test accuracy with the fewest examples?
<details><summary>Hint</summary>Pass <code>epochs=2</code> along with <code>warmup_workers</code> and <code>warmup_fraction</code>, and read <code>[(p.epoch, p.accuracy) for p in run.evals]</code>. The late workers skip their warm-up share, so compare at the same epoch of data applied.</details>

## References

- N. Strom, "Scalable distributed DNN training using commodity GPU cloud computing", Interspeech 2015 (the scheme of this lesson: threshold, 1-bit, residual, entropy-coded indexes).
- F. Seide, H. Fu, J. Droppo, G. Li, D. Yu, "1-bit stochastic gradient descent and its application to data-parallel distributed training of speech DNNs", Interspeech 2014 (1-bit quantization with error feedback).
- T. Vogels, S. P. Karimireddy, M. Jaggi, "PowerSGD: Practical low-rank gradient compression for distributed optimization", NeurIPS 2019.
- X. Lian, C. Zhang, H. Zhang, C.-J. Hsieh, W. Zhang, J. Liu, "Can decentralized algorithms outperform centralized algorithms? A case study for decentralized parallel stochastic gradient descent", NeurIPS 2017.
- Y. Lin, S. Han, H. Mao, Y. Wang, W. J. Dally, "Deep gradient compression: reducing the communication bandwidth for distributed training", ICLR 2018.
- S. W. Golomb, "Run-length encodings", IEEE Transactions on Information Theory, 1966; P. Elias, "Universal codeword sets and representations of the integers", IEEE Transactions on Information Theory, 1975 (the gap codes).
- P. Patarasuk, X. Yuan, "Bandwidth optimal all-reduce algorithms for clusters of workstations", Journal of Parallel and Distributed Computing, 2009 (ring all-reduce).
- S. Li et al., "PyTorch Distributed: experiences on accelerating data parallel training", VLDB 2020 (DDP and its communication hooks).
- J. Dean et al., "Large scale distributed deep networks", NIPS 2012.
""")

write("06_decentralized_compressed.ipynb", cells)
