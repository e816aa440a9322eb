"""Suite-wide settings: tests check correctness, not speed.

One torch thread per test process: the models here are tiny, and on a shared 2-core machine
several OpenMP threads per process oversubscribe the cores (seen here: 10x slower examples).
"""

import torch

torch.set_num_threads(1)
