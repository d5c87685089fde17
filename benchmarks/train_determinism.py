"""Is the evidence model's training bit-reproducible across thread counts? Train the same
settings with ``torch.set_num_threads(N)`` (``python benchmarks/train_determinism.py N``)
and compare ``/tmp/train_<N>.pt`` between two values of N (docs/performance.md,
"Evaluation on the evidence model")."""

import sys

import torch

from pipeline.data.evidence_dataset import TrainSettings
from pipeline.models.sources.evidence_training import train

torch.set_num_threads(int(sys.argv[1]))
s = TrainSettings(images=64, val_images=16, size=64, seed=0, backgrounds="data/sample")
state, rep = train(s)
torch.save(state, f"/tmp/train_{sys.argv[1]}.pt")
print(rep["accuracy"])
