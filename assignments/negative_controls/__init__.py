"""Plausible wrong implementations, one per row: the cell, a text in its solution, its wrong
replacement, and the test cells it must lose (its task's; plus the cell that runs it in a
runtime, where there is one). tests/test_assignments.py grades each and checks that exactly
those points are lost.
"""

CONTROLS = {
    "a1_data_parallelism": [
        ("shard overlaps", "a1_1", "(n + 1) * m)", "(n + 1) * m + 1)", ["test_a1_1"]),
        (
            "gradients: wrong divisor",
            "a1_2",
            "p.grad.div_(world_size)",
            "p.grad.div_(world_size + 1)",
            ["test_a1_2"],
        ),
        (
            "parameters summed, not averaged",
            "a1_3",
            "p.data.div_(world_size)",
            "p.data.div_(1)",
            ["test_a1_3"],
        ),
        (
            "averaging with the wrong divisor",
            "a1_4",
            "sum(col) / len(finals)",
            "sum(col) / (len(finals) + 1)",
            ["test_a1_4"],
        ),
    ],
    "a2_staleness": [
        (
            "staleness off by one",
            "a2_1",
            "return server_version - pulled_version",
            "return server_version - pulled_version + 1",
            ["test_a2_1"],
        ),
        ("lambda not scaled", "a2_2", "return lr / max(1, sigma)", "return lr", ["test_a2_2"]),
        (
            "soft sync sums instead of averaging",
            "a2_3",
            "new.append(w - step / S)",
            "new.append(w - step)",
            ["test_a2_3"],
        ),
        ("gate bound off by one", "a2_4", "<= bound", "< bound", ["test_a2_4"]),
        # bound 0 is falsy: `if not bound` never blocks at bound 0 (a random draw catches it only by luck)
        ("gate: bound 0 taken for None", "a2_4", "if bound is None:", "if not bound:", ["test_a2_4"]),
    ],
    "a3_compression": [
        (
            "signs flipped",
            "a3_1",
            "torch.sign(r) * tau_t",
            "-torch.sign(r) * tau_t",
            ["test_a3_1", "test_a3_2", "test_a3_5"],
        ),
        (
            "residual dropped",
            "a3_2",
            "return sent, r - sent",
            "return sent, torch.zeros_like(r)",
            ["test_a3_2", "test_a3_5"],  # A3.5 runs the student's residual step in a real run
        ),
        (
            "gaps counted from 0",
            "a3_3",
            "bits, previous = [], -1",
            "bits, previous = [], 0",
            ["test_a3_3", "test_a3_4"],
        ),
        ("entropy in nats", "a3_4", "math.log2(c / len(gaps))", "math.log(c / len(gaps))", ["test_a3_4"]),
        # random inputs never land on the threshold: only a fixed case with |r| == tau catches it
        ("threshold strict: |r| > tau", "a3_1", "r.abs() >= tau_t", "r.abs() > tau_t", ["test_a3_1"]),
    ],
    "a4_pipelines": [
        (
            "later stages get the extra layers",
            "a4_1",
            "(1 if k < extra else 0)",
            "(1 if k >= num_stages - extra else 0)",
            ["test_a4_1"],
        ),
        (
            "schedule out of order: backwards in reverse",
            "a4_2",
            '[("B", m) for m in range(M)]',
            '[("B", m) for m in reversed(range(M))]',
            ["test_a4_2"],
        ),
        ("1F1B without warm-up", "a4_3", "warmup = min(num_stages - 1 - k, M)", "warmup = 0", ["test_a4_3"]),
        ("bubble over one stage's time", "a4_4", "(num_stages * makespan)", "makespan", ["test_a4_4"]),
        # issue 25's classes: each right on some inputs, so only fixed hidden cases fail them surely
        (
            "stages sized ceil(L/K), the last taking the rest",
            "a4_1",
            "stop = start + size + (1 if k < extra else 0)",
            "stop = num_layers if k == num_stages - 1 else start + -(-num_layers // num_stages)",
            ["test_a4_1"],
        ),
        (
            "bubble: the closed form (K-1)/(M+K-1), the schedule never run",
            "a4_4",
            "return 1.0 - sum(busy) / (num_stages * makespan)",
            "return (num_stages - 1) / (len(steps) // (2 * num_stages) + num_stages - 1)",
            ["test_a4_4"],
        ),
        (
            "bubble: every step charged the forward cost",
            "a4_4",
            'cost = forward_s if kind == "F" else backward_s',
            "cost = forward_s",
            ["test_a4_4"],
        ),
    ],
    "a5_sharding": [
        (
            "ZeRO-1: the sum of the gradients not divided by N",
            "a5_1",
            "grad_shard = grad_shard / world_size",
            "grad_shard = grad_shard",
            ["test_a5_1"],
        ),
        (
            "ZeRO-1: the gradients all-gathered instead of the parameters",
            "a5_1",
            "dist.all_gather_single(flat_params, mine.clone())",
            "dist.all_gather_single(flat_params, grad_shard)",
            ["test_a5_1"],
        ),
        (
            "ZeRO-1: the full vector updated instead of the own shard",
            "a5_1",
            "shard_update(mine, grad_shard)",
            "shard_update(flat_params, grad_shard)",
            ["test_a5_1"],
        ),
        (
            "column-parallel: no all-reduce in the backward",
            "a5_2",
            "return F.linear(CopyToRanks.apply(x), weight_shard, bias_shard)",
            "return F.linear(x, weight_shard, bias_shard)",
            ["test_a5_2"],
        ),
        (
            "row-parallel: the bias added on every rank, before the sum",
            "a5_3",
            "y = SumOverRanks.apply(F.linear(x_shard, weight_shard))\n    return y + bias",
            "y = SumOverRanks.apply(F.linear(x_shard, weight_shard, bias))\n    return y",
            ["test_a5_3"],
        ),
        (
            "memory: k_opt = 8 for mixed-precision Adam (the fp32 master weights left out)",
            "a5_4",
            '(4 if precision == "mixed" else 0)',
            "0",
            ["test_a5_4"],
        ),
        (
            "memory: the parameters sharded at stage 2",
            "a5_4",
            "params = shard if zero_stage >= 3 else full",
            "params = shard if zero_stage >= 2 else full",
            ["test_a5_4"],
        ),
    ],
}
