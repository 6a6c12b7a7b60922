import os

import torch
from hypothesis import HealthCheck, settings

# Deterministic and deadline-free so CI on 2 shared cores is stable; `dev` explores more.
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# One intra-op thread: the suite is many small kernels, and on 2 shared cores a second thread
# only adds synchronisation (measured 5-40x slower under load by three of us).
torch.set_num_threads(1)
