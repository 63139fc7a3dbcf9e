"""dlcourse: distributed deep learning you can run, from the lecture "Distributed Deep Learning".

One lecture concept per module:

- :mod:`dlcourse.data` (MNIST, sharding), :mod:`dlcourse.models` (the lecture's networks),
  :mod:`dlcourse.metrics`, :mod:`dlcourse.train` (the single-machine baseline);
- :mod:`dlcourse.launcher` (N real processes on ``torch.distributed``).

Later parts (data parallelism, parameter averaging, the parameter server, the staleness
rules and the simulated cluster, model parallelism and pipelining, compressed
decentralized SGD, plots and panels) each add a module of their own.
"""

__version__ = "0.1.0"
