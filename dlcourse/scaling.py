"""How far synchronous data parallelism scales: one step's time, parameter server vs ring all-reduce.

The lecture: "distributed training tends to be more efficient when the ratio of transfers to
computation is low". This module puts numbers on that for one synchronous step of N
workers, each computing the gradient of its own mini-batch (``compute_s``) and exchanging
one copy of the model (``nbytes``) over links of ``bandwidth`` bytes/s, each message paying
``latency`` seconds on top (the alpha-beta model: alpha = latency, beta = 1 / bandwidth;
Hockney, Parallel Computing 1994).

- ``"parameter-server"``: one server with **one** link (Dean et al., NIPS 2012). The N pulls
  and the N pushes queue on that link, so the traffic through it grows like N:
  ``T = max(compute + latency + (N+1) B/bw, 2 N B/bw) + latency + apply_s``. This is the
  simulator's timing (:func:`dlcourse.sim.simulate`, policy ``sync``) without its spread of
  compute times; the tests hold the two together.
- ``"ring"``: a ring all-reduce (Patarasuk and Yuan, JPDC 2009). Each worker sends
  2 (N-1) chunks of B/N bytes, in 2 (N-1) steps that each pay the latency:
  ``T = compute + 2 (N-1) (latency + B / (N bw))``. The bytes per worker stay below 2 B
  whatever N; the latency steps grow like N.

The **speedup** at N is N workers' throughput over one machine that sends nothing:
``N compute / T(N)``.
"""

from __future__ import annotations

from dlcourse._validate import check_choice, check_float, check_int

DESIGNS = ("parameter-server", "ring")  # how the workers combine their gradients


def step_time(
    design: str,
    num_workers: int,
    *,
    compute_s: float,
    nbytes: float,
    bandwidth: float,
    latency: float = 0.0,
    apply_s: float = 0.0,
) -> float:
    """Seconds of one synchronous step of ``num_workers`` workers (see the module docstring).

    ``apply_s``: the server's time to apply one update (parameter server only; assumed no
    longer than one message, as in the simulator's defaults).
    """
    check_choice("design", design, DESIGNS)
    n = check_int("num_workers", num_workers, low=1)
    check_float("compute_s", compute_s, low=0.0)
    check_float("nbytes", nbytes, low=0.0)
    check_float("bandwidth", bandwidth, low=0.0, low_open=True)
    check_float("latency", latency, low=0.0)
    check_float("apply_s", apply_s, low=0.0)
    message = nbytes / bandwidth  # one copy of the model through one link
    if design == "parameter-server":
        # N pulls queue on the server's link, then each worker computes and pushes: the last
        # push lands after the later of (its own pull + compute + push) and (2 N messages)
        return max(compute_s + latency + (n + 1) * message, 2 * n * message) + latency + apply_s
    return compute_s + 2 * (n - 1) * (latency + message / n)


def speedup(design: str, num_workers: int, **timing: float) -> float:
    """N workers' examples per second over one machine's that sends nothing: ``N compute / T(N)``.

    ``timing``: the keyword arguments of :func:`step_time` (``compute_s`` must be > 0).
    """
    compute_s = check_float("compute_s", timing.get("compute_s"), low=0.0, low_open=True)
    return num_workers * compute_s / step_time(design, num_workers, **timing)
