"""Where Efficient-CapsNet's training step spends its time: torch.profiler over 10 steps.

    .venv/bin/python benchmarks/efficient_capsnet_profile.py [--batch-size 64]

Prints the operators by self CPU time (docs/efficient_capsnet.md quotes the shares of the
convolutions, their backward pass and BatchNorm).
"""

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from capslab.losses import capsule_loss
from capslab.models import create_model
from capslab.optim import create_optimizer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--batch-size", type=int, default=64)
args = parser.parse_args()
model = create_model("efficient-capsnet")
optimizer = create_optimizer("adam", model.parameters(), 1e-3)
x, y = torch.rand(args.batch_size, 1, 28, 28), torch.randint(0, 10, (args.batch_size,))


def step():
    out = model(x, y)
    loss = capsule_loss(out.lengths, y, out.reconstruction, x)[0]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


for _ in range(5):
    step()
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for _ in range(10):
        step()
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
