import os
import sys
from pathlib import Path

# No test may reach a model hub; set before any test module imports transformers or
# huggingface_hub (they read it once, at import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

sys.path.insert(
    0, str(Path(__file__).parent)
)  # tiny_models.py; ponder itself is the installed package

# Tiny models gain nothing from a second thread, and on a busy machine OpenMP threads spin-wait
# for a core. Measured here (2 cores shared with other processes): the contract suite took 35 s
# on two threads and 0.8 s on one; 10 epochs of head training 8 s against 0.04 s.
torch.set_num_threads(1)
