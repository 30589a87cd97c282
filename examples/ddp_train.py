"""Train a model with an npgrad_scipy.Conv2d layer under DistributedDataParallel.

Launch with torchrun, which starts the processes and sets their rank and world size:

    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py --steps 20

Each process computes its share of the batch (NumPy on its own CPU cores); DDP averages the
gradients over gloo (CPU tensors; use NCCL for CUDA ones). With ``--check-gradients`` rank 0
also computes the gradients of one process on the whole batch and checks they equal DDP's.
"""

from __future__ import annotations

import argparse
import gc
import os

import torch
import torch.distributed as dist
from torch import nn

from npgrad_scipy import Conv2d

BATCH = 8  # the global batch, split evenly over the processes


def make_model() -> nn.Module:
    torch.manual_seed(0)  # every rank starts from the same weights
    return nn.Sequential(Conv2d(1, 4, 3, mode="same"), nn.Tanh(), nn.Flatten(), nn.LazyLinear(1))


def make_data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    images = torch.randn(BATCH, 1, 12, 12, generator=generator)
    return images, images.mean((1, 2, 3)).unsqueeze(1) * 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--check-gradients", action="store_true")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    model = make_model()
    model(make_data(0)[0][:1])  # materialise the lazy layer before wrapping
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=0.01)
    share = BATCH // world
    losses = []
    for step in range(args.steps):
        images, targets = make_data(step)
        mine = slice(rank * share, (rank + 1) * share)
        loss = nn.functional.mse_loss(ddp(images[mine]), targets[mine])
        optimizer.zero_grad()
        loss.backward()
        if args.check_gradients and step == 0:
            check_against_one_process(model, images, targets, rank)
        optimizer.step()
        losses.append(loss.item())
    if rank == 0:
        head, tail = losses[: len(losses) // 4 or 1], losses[-(len(losses) // 4 or 1) :]
        print(
            f"rank 0 of {world}: mean loss {sum(head) / len(head):.4f} over the first steps, "
            f"{sum(tail) / len(tail):.4f} over the last ({args.steps} steps)"
        )
    # Tear down in order while every rank is here: DDP's reducer first, then the group. Left to
    # interpreter exit, gloo's worker thread can wait for the GIL that the exiting main thread
    # holds while joining it (a torch teardown deadlock).
    dist.barrier()
    del ddp, optimizer
    gc.collect()
    dist.destroy_process_group()


def check_against_one_process(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, rank: int
) -> None:
    """Compare DDP's averaged gradients with one process's on the whole batch."""
    reference = make_model()
    reference(images[:1])
    reference.load_state_dict(model.state_dict())
    nn.functional.mse_loss(reference(images), targets).backward()
    for (name, ours), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert ours.grad is not None
        assert theirs.grad is not None
        torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-5, rtol=1e-4, msg=name)
    if rank == 0:
        print("gradients equal to one process on the whole batch: OK")


if __name__ == "__main__":
    main()
