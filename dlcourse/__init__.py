"""dlcourse: distributed deep learning you can run, from the lecture "Distributed Deep Learning".

The package is the lecture, one concept per module, in floors: each uses only those below.

The rules and parts (pure functions and small classes; no processes, no clock)
    data           MNIST offline, equal disjoint shards, the one batch order of every runtime
    models         the lecture's CNN (Conv32-Pool-Conv64-Pool-Dense1024-Dense10), an MLP, the shared LSTM
    metrics        accuracy, a correct macro F1, and ``run_metrics``: the metrics every run reports
    train          single-machine SGD: the baseline every distributed run is compared with
    staleness      sigma, lambda_n = lambda / max(1, sigma), soft sync (S of N), SSP and sigma_max gates
    compression    sparse + 1-bit +-tau updates with a residual, entropy-coded indices
    collectives    parameter averaging, all-reduce; reduce-scatter and all-gather on a ring, their
                   bytes per rank, the alpha-beta model fitted to measured gloo times
    memory         bytes per device: measured (storages, autograd's saved tensors) and predicted
                   (ZeRO's 2+2+K per parameter, tensor and pipeline parallelism, activations)
    scaling        one synchronous step's time and speedup: a server's one link vs a ring all-reduce
    landscape      the loss between two replicas (is the average of two minima a minimum?)
    divergence     a run whose loss blew up stops, saying where and what to try
    environment    what this machine offers: cores, GPUs, backends
    resources      how many real processes fit here (CPU quota, memory), said in words
    recompute      activation recomputation: keep segment inputs, recompute the rest in backward
    precision      mixed precision: bf16 compute, fp32 master weights, the bytes of each copy

The real runtime (processes on torch.distributed: gloo on CPUs, NCCL on GPUs, or torchrun)
    launcher           start N processes from a script or a notebook cell; errors name the rank
    worker_run         one data-parallel worker: its shard, batches, clocks, checkpoints
    checkpoint         save and resume a run after a crash
    data_parallel      replicas and shards: synchronous SGD written out, and PyTorch DDP
    averaging          the lecture's parameter averaging every K steps
    sharding           ZeRO stages 1-3: optimizer state, gradients, parameters sharded over N ranks
    replication        multi_gpu_model with cpu_relocation: one process, one replica per device
    parameter_server   servers and workers exchanging real messages: async SGD, soft sync, bounds
                       (parameter_server.config: the run, its sharding; parameter_server.protocol:
                       the processes and their messages)
    decentralized      peer-to-peer compressed updates without a server
    ddp_compression    DDP's fp16 and PowerSGD all-reduce hooks, to compare with the peers' 1-bit updates
    model_parallel     layers on different devices or processes
    pipeline           GPipe and 1F1B micro-batch schedules, and the bubble
    hybrid             model parallelism inside, data parallelism across
    tensor_parallel    Megatron's column- and row-parallel layers: one weight matrix over N ranks

The simulated cluster (:mod:`dlcourse.sim`: the same rules, real gradients, virtual time)
    sim.config, sim.cluster, sim.result, sim.parameter_server, sim.decentralized

Figures and panels (:mod:`dlcourse.viz`; nothing above imports them)
    viz.figure, viz.runs, viz.techniques, viz.panel, viz.stragglers, viz.staleness,
    viz.compression, viz.pipeline, viz.speedup, viz.planner (memory per device and step time),
    viz.approach (which approach, and why, for a model, N, bandwidth and stragglers)

The command line: :mod:`dlcourse.commands` (options -> a run) and :mod:`dlcourse.cli`.

The graded assignments: :mod:`dlcourse.grading` (what their test cells import, and the judge
and sandbox of the isolated regrade; nothing in the library imports it; A5's helpers, which run
a student's ZeRO-1 step and tensor-parallel layers on real processes, are
:mod:`dlcourse.grading_a5`, re-exported there); :mod:`dlcourse.cohort`
grades a class's submissions in parallel, each in isolation, and merges their grades.
"""

__version__ = "0.1.0"
