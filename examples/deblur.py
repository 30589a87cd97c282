"""An inverse problem: recover an image from its blurred, noisy version through the conv plugin.

The forward model is a known 7x7 Gaussian blur, ``npgrad_scipy.conv2d`` in "same" mode; the image
is found by gradient descent on the data misfit plus a small smoothness penalty. The gradient
of the misfit with respect to the image is the plugin's adjoint (a correlation).

Run: python examples/deblur.py [--steps N] [--size N]
"""

from __future__ import annotations

import argparse

import torch

from npgrad_scipy import conv2d


def gaussian(size: int, sigma: float) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = torch.outer(kernel, kernel)
    return (kernel / kernel.sum())[None, None]


def main(steps: int, size: int) -> float:
    """Deblur a synthetic image; return the final error relative to the blurred image's."""
    torch.manual_seed(0)
    truth = torch.zeros(1, 1, size, size, dtype=torch.float64)
    truth[..., size // 4 : size // 2, size // 4 : 3 * size // 4] = 1.0
    truth[..., 2 * size // 3 :, size // 8 : size // 3] = 0.5
    blur = gaussian(7, 1.5)
    observed = conv2d(truth, blur, mode="same") + 0.01 * torch.randn_like(truth)
    image = observed.clone().requires_grad_()
    optimizer = torch.optim.Adam([image], lr=0.02)
    for step in range(steps):
        misfit = torch.mean((conv2d(image, blur, mode="same") - observed) ** 2)
        smooth = torch.mean(image.diff(dim=-1) ** 2) + torch.mean(image.diff(dim=-2) ** 2)
        loss = misfit + 1e-3 * smooth
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(steps // 5, 1) == 0:
            print(f"step {step:4d}  loss {loss.item():.3e}")
    before = (observed - truth).norm().item()
    after = (image.detach() - truth).norm().item()
    print(f"error to the true image: blurred {before:.3f}, recovered {after:.3f}")
    return after / before


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", type=int, default=48)
    args = parser.parse_args()
    main(args.steps, args.size)
