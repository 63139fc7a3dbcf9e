# ruff: noqa: E501  (markdown paragraphs stay one line each, so the notebook reflows them)
"""Builds lessons/06_decentralized_compressed.ipynb (committed without outputs): run it from the repository root.

    .venv/bin/python lessons/build/06_decentralized_compressed.py

Edit this file, not the notebook: the notebook is generated from it.
"""

from __future__ import annotations

from lesson import Cells, write

cells = Cells()
code = cells.code
md = cells.md_split


md("""
# 06 · Decentralized SGD with compressed updates

Lessons 04 and 05 sent every update through a parameter server. This lesson removes the server: every worker keeps a full copy of the model and sends its updates straight to its peers, squeezed first: most of an update is not sent, what is sent is one bit per number, and the positions are entropy-coded. This is Strom's scheme (Interspeech 2015), the lecture's *decentralized async SGD*; on lesson 00's map it is *update-based, asynchronous, decentralized*.

After this lesson you will be able to run decentralized SGD on real processes (all-to-all and ring), follow one update from 32 bits per number to a few bits per *sent* number, show that the residual delays information but never loses it, choose the threshold $\\tau$, and compare the result with fp16 and PowerSGD in bytes and accuracy.

**Notation** (the course's, lesson 00). $N$ is the number of workers (here: peers), $\\lambda$ the learning rate. $\\Delta W_{i,n}$ is the update worker $n$ computes at its step $i$: its **gradient**, as in the lecture's $W_{i+1} = W_i - \\sum_n \\lambda_n \\Delta W_{i,n}$. A peer compresses the step it would take, $-\\lambda\\,\\Delta W_{i,n}$ (we fold $\\lambda$ in, so that $\\tau$ is a size of weight change); what it sends is the compressed $\\delta_{i,n}$, and $\\mathbf r_n$ is its residual. $\\tau$ is the compression threshold and nothing else: the one value every sent number takes, with a sign. Lessons 04-05's staleness $\\sigma$ counts server versions between a pull and a push; without a server there are no versions, so the two lateness measures of this lesson get their own names.
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

Without a server, a worker has to tell every other replica what it changed, so that all $N$ copies keep describing the same network. Two simple wirings:

- **all-to-all**: the worker sends its message to each of the $N-1$ others itself;
- **ring**: the worker sends it only to the next rank, which applies it and passes it on, until it has gone round.

Nobody waits: after a step a worker sends its message, adds the peer messages that have arrived, and goes on. It applies to its own replica exactly the compressed update it sends, so once every message has arrived everywhere, all replicas agree.

### Run it for real

`train_decentralized` starts $N$ real processes; each receives peer messages in the background from whichever peer sends first.

**Predict.** With $N = 4$ workers training for one epoch, which topology puts more bytes on the wire in total: all-to-all, where each worker sends $N-1$ copies, or the ring, where each sends one? And which one delivers a peer's update *later*?
""")

code("""
from dlcourse.decentralized import DecentralizedConfig, train_decentralized

N_REAL = 4  # real processes: at most 4 in these lessons
TAU = 3e-3  # the threshold of section 2 onwards
real = {}
for topology in ("all", "ring"):
    config = DecentralizedConfig(tau=TAU, topology=topology, model="mlp", lr=0.1, epochs=1, batch_size=50)
    real[topology] = run = train_decentralized(config, N_REAL)  # run.staleness: the arrival delays
    print(
        f"{topology:>4}: accuracy {run.test_accuracy:.3f}, {run.updates} updates, {run.messages} messages, "
        f"{run.bytes_sent:,} bytes on the wire ({run.compression_ratio:.0f}x below dense float32), "
        f"mean arrival delay {np.mean(run.staleness):.2f} steps, replicas differ by {run.replica_divergence:.1e}"
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
ax_stale.set(xlabel="arrival delay of a peer update (receiver's steps)", ylabel="count", title="how late peer updates arrive")
ax_stale.legend()
fig.tight_layout()
""")

md("""
Look at the left panel first: the bars are (nearly) the same height. Every update has to reach $N-1$ other replicas, and in both wirings that takes exactly $N-1$ messages: all-to-all sends the copies from the origin, the ring forwards one copy $N-1$ times. What differs is *who* sends them and *when* they arrive: in the ring a worker talks to one neighbour only, but an update needs up to $N-1$ hops to reach the replica just behind its origin. The right panel shows each applied peer update's **arrival delay**: the receiver's step count minus the origin's step count when it made the update (0 if the receiver is behind). It is not lessons 04-05's $\\sigma$, which counts server versions. On real processes it depends on this machine's scheduling and moves from run to run.
""")

code("""
\"\"\"Checks that the replicas agree once all messages arrived, and that both topologies moved about the same bytes.\"\"\"
for topology, run in real.items():
    assert run.replica_divergence < 1e-5, (topology, run.replica_divergence)
    assert run.test_accuracy > 0.5, (topology, run.test_accuracy)
ratio = real["ring"].bytes_sent / real["all"].bytes_sent  # same messages, but the replicas' updates differ a little
assert 0.8 < ratio < 1.25, ratio
""")

md("""
Now the same question where the clock is under our control. The simulator of lesson 04 has a decentralized policy, `DecentralizedSimConfig`: the same replicas, real gradients and real compressed messages, but virtual time (a link needs `latency + bytes / bandwidth` per message), so a run is the same on every machine and $N$ can go beyond four. It measures lateness a third way, closest to $\\sigma$: the **missing updates** of a step, those already made somewhere in the cluster that had not reached this worker's replica when it started the step.
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
missing = {t: [float(np.mean(simulated(n, t).staleness)) for n in sizes] for t in ("all", "ring")}  # per step
for t, values in missing.items():
    print(f"{t:>4}: mean missing updates", {n: round(v, 2) for n, v in zip(sizes, values)})
""")

code("""
fig, ax = plt.subplots(figsize=(5, 3.2))
for t, values in missing.items():
    ax.plot(sizes, values, "o-", label=t)
ax.set(xlabel="workers N", ylabel="mean missing updates per step", title="simulated: ring vs all-to-all", xticks=sizes)
ax.legend()
fig.tight_layout()
""")

md("""
The ring's line climbs steeply with $N$: an update crosses up to $N-1$ links in turn before the last replica gets it, and meanwhile that replica keeps computing on a model without it. All-to-all stays below two missing updates at every $N$ here (checked below): each message takes a single hop, and the compressed messages are so small that even fifteen copies leave the sender's link quickly.
""")

code("""
\"\"\"Checks that the ring's missing updates grow with N and pass all-to-all's, which stay below 2 at every N.\"\"\"
ring, everyone = missing["ring"], missing["all"]
assert all(a < b for a, b in zip(ring, ring[1:])), ring
assert all(r >= e for r, e in zip(ring, everyone)), (ring, everyone)
assert ring[-1] > 2 * everyone[-1], (ring, everyone)
assert max(everyone) < 2, everyone
""")

md("""
## 2. From a dense update to a few bits per number

A dense update of the MLP is 50,890 float32 numbers, 32 bits each. The lecture squeezes it in three moves:

1. **Sparse.** Send only the entries with $|r| \\ge \\tau$. A sent entry needs an index (32 bits) and a value (32 bits): 64 bits per *sent* number.
2. **1-bit.** Every sent entry is $+\\tau$ or $-\\tau$, one $\\tau$ for the whole message, so one sign bit replaces the value: 33 bits.
3. **Entropy-coded indexes.** Sorted positions are sent as the *gaps* between them, which are small and repetitive (whole rows of a weight matrix cross $\\tau$ together); a Golomb-Rice or Exp-Golomb code fitted to each message gives short gaps short codewords. No code for gaps drawn independently with the observed frequencies can beat their entropy, $-\\sum_g p(g)\\log_2 p(g)$ bits per gap, on average: we compare with it.

Below, one worker trains the MLP for 40 steps. Each step $-\\lambda\\Delta W_{i,n}$ goes through a `Compressor` (the residual scheme of section 3), the worker adds what it sends, and we count the bits of each representation of every message. A second compressor without residual (`variant="onebit"`) watches the same steps, for section 3.

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
    update = -lr * torch.cat([p.grad.reshape(-1) for p in model.parameters()])  # the step -lambda * Delta W
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
print(f"so a sent entry costs {epoch_coded + 1:.1f} bits (gap + sign) instead of 64, and the last message {bits_per_parameter['the whole message (header, crc)'][last]:.2f} bits per parameter")
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
Read the plot from the top. Dense float32 is the flat line at 32 bits per parameter. Dropping the small entries brings it down by more than an order of magnitude; the sign bit halves that; coding the gaps takes off most of the rest (the printed bits per sent entry), below one bit per parameter. The dashed entropy line hugs the coded line from below; the real message, header and checksum included, lies on the coded line.

How close to the entropy is the code? A short message is a poor yardstick: $n$ gaps can show at most $\\log_2 n$ bits of entropy, however spread out they are. Over all 40 messages, with tens of thousands of gaps, the frequencies are reliable, and that is what the check below compares.
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
print(f"sent + residual - sum of steps: at most {float((sent_sum + full.residual - update_sum).abs().max()):.1e} (rounding)")
print(f"{float((full.residual.abs() >= TAU).float().mean()):.2%} of the parameters are one tau or more behind")

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
Each dot is one parameter after the 40 steps: across, the sum of its steps; up, the sum of what was sent for it. With the residual the dots sit on the diagonal, and the few off it are the parameters whose residual holds a $\\tau$ or more (the printed share). Sent plus residual equals the sum of the steps up to rounding: that is the residual's definition, so we print it rather than assert it. Without the residual the dots lie along the horizontal axis: those parameters' steps were smaller than $\\tau$ every time and were dropped, and the ones that were sent were clipped to $\\tau$.
""")

code("""
\"\"\"Checks on the 40 steps: onebit never delivered most of the summed update; the residual kept all but a small share waiting.\"\"\"
assert gap_onebit > 0.5, gap_onebit
assert gap_full < 0.5 * gap_onebit, (gap_full, gap_onebit)
behind = float((full.residual.abs() >= TAU).float().mean())  # parameters more than one tau behind
assert behind < 0.05, behind
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
The right panel is monotone: the higher the bar, the fewer entries cross it and the fewer bytes travel. The left panel is a hill. At the small end the cap of one $\\tau$ per step slows training down (and the traffic is far from the savings we want); at the large end too little gets through in one epoch. The cell below says how close the top of the hill comes to the dense run, and at what traffic. Where the top lies depends on the size of the steps, that is on $\\lambda$ and the gradients: a rule of thumb is a $\\tau$ of the order of a typical large entry of $\\lambda \\Delta W$.
""")

code("""
\"\"\"Checks that bytes fall as tau grows, the best tau is inside the sweep, and it nears dense accuracy at >= 50x less traffic.\"\"\"
assert all(a > b for a, b in zip(traffic, traffic[1:])), traffic
best = int(np.argmax(accuracy))
assert 0 < best < len(taus) - 1, (best, accuracy)
assert accuracy[best] - accuracy[0] > 0.05 and accuracy[best] - accuracy[-1] > 0.05, accuracy
saving = dense.bytes_sent / traffic[best]
print(f"best tau {taus[best]:.0e}: accuracy {accuracy[best]:.3f} against dense {dense.test.accuracy:.3f}, with {saving:.0f}x less traffic")
assert accuracy[best] > dense.test.accuracy - 0.05 and saving >= 50, (accuracy[best], dense.test.accuracy, saving)
""")

md("""
Now steer it yourself. The panel runs the same simulation with the $N$, topology and $\\tau$ you choose, and draws the bytes of every message (left, log scale; for a ring, the mean message) and the test accuracy (right) next to the uncompressed run; its status line gives the bytes per worker and step and the mean missing updates. Untick *keep the residual* to switch to the `onebit` variant; each setting is computed once and kept, so going back is instant.

**Predict.** Move $N$ from 4 to 16 with the ring: which grows, the bytes per worker and step or the missing updates? Then switch to all-to-all at $N = 16$.
""")

code("""
from dlcourse.viz import CompressionExplorer

panel = CompressionExplorer(tau=TAU, residual=True, num_workers=4)
panel
""")

md("""
Look at the left plot: the uncompressed line sits two orders of magnitude above the compressed one, at every step. Move $\\tau$ to the extremes and watch the accuracy curve sag at both ends, as in the sweep. The cell below unticks the residual for you; look at the right plot again.
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

## 5. Against fp16 and PowerSGD: bytes per worker and step, and accuracy

Two common rivals keep synchronous data parallelism (lesson 03) and compress what its all-reduce carries:

- **fp16** (PyTorch DDP's `fp16_compress_hook`): every gradient number in 2 bytes instead of 4;
- **PowerSGD of rank $r$** (Vogels et al., NeurIPS 2019; DDP's `powerSGD_hook`): each gradient matrix $M$ of shape $m \\times n$ is all-reduced as two thin factors $P$ ($m \\times r$) and $Q$ ($n \\times r$) with $M \\approx P Q^\\top$, $r(m+n)$ numbers instead of $mn$, with its own residual (error feedback); vectors go uncompressed.

A per-*message* comparison would flatter us: an all-to-all peer sends its message $N-1$ times, while a ring all-reduce of $B$ bytes sends $2(N-1)/N \\cdot B$ per worker. So we compare **bytes per worker and step**, and **accuracy**, on real runs: $N = 2$ processes, one epoch, 50 examples per worker and step. DDP takes one step with the mean of two gradients, while each peer adds both workers' steps, so DDP's $\\lambda$ is scaled with its global batch: $2 \\times 0.1$ (lesson 07). `train_ddp_compressed` is `train_ddp` with the hook registered.

**Predict.** Which will lose accuracy against dense DDP: fp16, PowerSGD of rank 1, our 1-bit peers? And how many bytes per worker and step will each send?
""")

code("""
from dlcourse.data_parallel import DataParallelConfig, train_ddp
from dlcourse.ddp_compression import train_ddp_compressed

N_HOOK = 2
ddp_config = DataParallelConfig(model="mlp", epochs=1, batch_size=50 * N_HOOK, lr=0.1 * N_HOOK)
rivals = {"dense float32": train_ddp(split.train, N_HOOK, ddp_config, test=split.test)}
rivals["fp16"] = train_ddp_compressed(split.train, N_HOOK, ddp_config, hook="fp16", test=split.test)
rivals["PowerSGD r=1"] = train_ddp_compressed(split.train, N_HOOK, ddp_config, hook="powersgd", rank=1, test=split.test)
peers_run = train_decentralized(DecentralizedConfig(tau=TAU, model="mlp", lr=0.1, epochs=1, batch_size=50), N_HOOK)

broadcast = (N_HOOK - 1) * 4 * numel  # DDP's start-up broadcast, not a step
per_step = {name: (run.bytes_sent - broadcast) / (N_HOOK * run.updates) for name, run in rivals.items()}
hook_accuracy = {name: run.test["accuracy"] for name, run in rivals.items()}
ours = f"1-bit peers, tau={TAU}"
per_step[ours] = peers_run.bytes_sent / peers_run.updates  # each update to N-1 peers
hook_accuracy[ours] = peers_run.test_accuracy
for name in per_step:
    print(f"{name:>22}: {per_step[name]:>9,.0f} bytes per worker and step ({per_step['dense float32'] / per_step[name]:>5.0f}x below dense), accuracy {hook_accuracy[name]:.3f}")
# per worker and step, all-to-all pays N-1 messages, a ring all-reduce 2(N-1)/N tensors: the ratio grows like N/2
message = per_step[ours] / (N_HOOK - 1)
powersgd_tensor = per_step["PowerSGD r=1"] / (2 * (N_HOOK - 1) / N_HOOK)
print(f"all-to-all 1-bit sends more than PowerSGD r=1 per worker and step from N = {2 * powersgd_tensor / message:.0f} peers on")

fig, (ax_b, ax_a) = plt.subplots(1, 2, figsize=(11, 3.2))
colors = ["grey", "C7", "C2", "C0"]
ax_b.barh(list(per_step), list(per_step.values()), color=colors)
ax_b.set(xscale="log", xlabel="bytes per worker and step (log scale)", title=f"traffic, N = {N_HOOK}")
ax_b.invert_yaxis()
ax_a.barh(list(hook_accuracy), list(hook_accuracy.values()), color=colors)
ax_a.set(xlim=(0.5, 0.9), xlabel="test accuracy after 1 epoch", title="accuracy")
ax_a.invert_yaxis()
ax_a.set_yticklabels([])
fig.tight_layout()
""")

md("""
The traffic bars are on a log scale: each grid line is ten times the one before. fp16 halves dense and costs no accuracy. PowerSGD exploits the fact that a gradient matrix is nearly low-rank, and saves far more; at rank 1 its approximation is coarse this early in training and it lost accuracy (on five seeds we tried, by 0.006 to 0.16; rank 4 stayed within 0.01 of dense: try `rank=4`). The thresholded 1-bit peers send the fewest bytes and keep the accuracy. At larger $N$ the picture moves: the all-to-all message goes out $N-1$ times while an all-reduce sends less than twice its tensor per worker, which is why the printed $N$ exists; past it, a ring of peers or an all-reduce of compressed data is the better wiring.
""")

code("""
\"\"\"Checks the runs just made: fp16 and the 1-bit peers keep dense accuracy, PowerSGD r=1 loses some; the peers send least.\"\"\"
dense_acc = hook_accuracy["dense float32"]
assert abs(hook_accuracy["fp16"] - dense_acc) < 0.01, hook_accuracy
assert hook_accuracy[ours] > dense_acc - 0.03, hook_accuracy
assert hook_accuracy["PowerSGD r=1"] < dense_acc, hook_accuracy
assert per_step[ours] < per_step["PowerSGD r=1"] < per_step["fp16"] < per_step["dense float32"], per_step
assert per_step["dense float32"] / per_step[ours] >= 100, per_step
""")

md("""
## 6. Compressing is not free

The lecture's warning: compression and quantization add computation to every mini-batch and a little memory on every worker. The memory is the residual, one float per parameter: as much as a second copy of the model. The time we measure: for twenty mini-batches, the plain step (forward, backward, the step vector), then compressing it (residual, threshold, gap code), then what a receiving peer does (parse the message and add it to its replica). On this shared machine the absolute times jump around; the ratios are what to read.

**Predict.** Which costs more: compressing a message on the sender, or decoding and adding it on a receiver? And is compressing cheap next to the training step itself?
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
    update = -lr * torch.cat([p.grad.reshape(-1) for p in model.parameters()])  # -lambda * Delta W
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
For this small MLP, compressing costs a sizeable fraction of a training step (the printed ratio; checked below to be at least a quarter): the network does little computation per parameter, so the overhead shows. Most of it is on the sender's side, which scans the residual and fits the gap code; the receiver only unpacks the bits and adds a few thousand numbers. For a network with more computation per parameter (the lecture's CNN shares its convolution weights across the whole image) the step grows much faster than the compression, and the overhead shrinks in proportion. Compression pays when the network is the bottleneck; on a fast link with a small model it can cost more time than it saves.
""")

code("""
\"\"\"Checks the medians just measured: the sender's compressing costs over twice the receiver's work, and over a quarter of a step.\"\"\"
assert median_ms["compress"] > 2 * median_ms["decode + add"], median_ms
assert median_ms["compress"] > 0.25 * median_ms["plain step"], median_ms
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

- Without a server, every update still has to reach $N-1$ replicas: all-to-all and the ring put the same number of messages on the wire; the ring trades fan-out for more hops, so a step misses more updates.
- One message went from 32 bits per parameter to below one: sparse, then $\\pm\\tau$ in one bit, then gaps coded within a bit of their entropy.
- The residual makes the compression lossless over time: nothing is dropped, only delayed; without it most of the signal is lost and training stalls.
- $\\tau$ trades bytes for accuracy, with a best value in between. Per worker and step at $N = 2$ the 1-bit peers sent orders of magnitude less than dense and fp16, and less than PowerSGD, at dense accuracy; their cost is computation and one model's worth of memory, and all-to-all's $N-1$ copies erode the lead as $N$ grows.
- Starting with fewer workers helps the first, fastest-changing part of training.

## Exercises

1. **Your own quantizer.** Write `def my_quantize(r, tau)` that sends $\\pm\\tau$ only where $|r| \\ge 2\\tau$, plug it into `Compressor(numel, tau=TAU, quantizer=my_quantize)`, and rerun the loop of section 2 with it. Does conservation (the printed check of section 3) still hold? How do the bytes and the residual change?
<details><summary>Hint</summary>Start from <code>torch.where(r.abs() >= 2 * tau, torch.sign(r) * tau, torch.zeros_like(r))</code>. Conservation holds for <i>any</i> quantizer, because the residual is updated with whatever was sent; only how long things stay in the residual changes. <code>DecentralizedSimConfig(quantizer=my_quantize)</code> runs it in the simulator too.</details>

2. **Tau and the learning rate.** Repeat the sweep of section 4 with `lr=0.05` and `lr=0.2` (pass `lr=` to `simulated`). Does the best $\\tau$ move? In which direction, and by roughly what factor?
<details><summary>Hint</summary>The compressed step is $\\lambda\\Delta W$: doubling $\\lambda$ doubles every entry, so the same entries cross a $\\tau$ twice as large. Expect the hill to shift right by about the same factor.</details>

3. **A ring on a slow, long link.** In the simulator, compare ring and all-to-all at $N = 16$ with `latency=1e-2` (10 ms per message). What happens to the missing updates and to the virtual time of an epoch (`run.virtual_s`)? Which topology would you choose for workers spread over two data centres?
<details><summary>Hint</summary>Pass <code>latency=1e-2</code> to <code>simulated</code>. Every hop costs the latency again, and an update needs up to N-1 hops to go round the ring. All-to-all also puts N-1 messages on the sender's link, one after another, but each reaches its receiver in one hop. Let the numbers decide.</details>

## References

- N. Strom, "Scalable distributed DNN training using commodity GPU cloud computing", Interspeech 2015 (the scheme of this lesson: threshold, 1-bit, residual, entropy-coded indexes).
- F. Seide, H. Fu, J. Droppo, G. Li, D. Yu, "1-bit stochastic gradient descent and its application to data-parallel distributed training of speech DNNs", Interspeech 2014 (1-bit quantization with error feedback).
- T. Vogels, S. P. Karimireddy, M. Jaggi, "PowerSGD: Practical low-rank gradient compression for distributed optimization", NeurIPS 2019.
- Y. Lin, S. Han, H. Mao, Y. Wang, W. J. Dally, "Deep gradient compression: reducing the communication bandwidth for distributed training", ICLR 2018.
- S. W. Golomb, "Run-length encodings", IEEE Transactions on Information Theory, 1966; P. Elias, "Universal codeword sets and representations of the integers", IEEE Transactions on Information Theory, 1975 (the gap codes).
""")

write("06_decentralized_compressed.ipynb", cells)
