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
        ("lambda not scaled", "a2_2", "return lr / max(1, tau)", "return lr", ["test_a2_2"]),
        (
            "soft sync sums instead of averaging",
            "a2_3",
            "new.append(w - step / S)",
            "new.append(w - step)",
            ["test_a2_3"],
        ),
        ("gate bound off by one", "a2_4", "<= bound", "< bound", ["test_a2_4"]),
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
    ],
}
