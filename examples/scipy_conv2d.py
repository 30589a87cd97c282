"""PyTorch's "Creating extensions using numpy and scipy" tutorial, written with npgrad.

The tutorial hand-writes an autograd.Function around scipy.signal. Here the op is its math, and
the layer a Layer holding the filter and bias; gradcheck passes as in the tutorial, and the layer
learns a hidden filter.

Run: python examples/scipy_conv2d.py [--steps N]
"""

from __future__ import annotations

import argparse

import torch
from scipy.signal import convolve2d, correlate2d

import npgrad


@npgrad.op("example::scipy_conv2d")
def scipy_conv2d(input, filter, bias):
    """Cross-correlate an image with a filter ("valid") and add a bias."""
    return correlate2d(input, filter, mode="valid") + bias


@scipy_conv2d.backward
def _(grad, input, filter, bias):
    return convolve2d(grad, filter, mode="full"), correlate2d(input, grad, mode="valid"), grad


def main(steps: int) -> float:
    """Run the tutorial's checks, learn a hidden filter, and return the largest filter error."""
    torch.manual_seed(0)
    module = npgrad.Layer(scipy_conv2d, filter=torch.randn(3, 3), bias=torch.randn(1, 1))
    print("Filter and bias:", list(module.parameters()))
    input = torch.randn(10, 10, requires_grad=True)
    output = module(input)
    print("Output from the convolution:", output)
    output.backward(torch.randn(8, 8))
    print("Gradient for the input map:", input.grad)
    double = [torch.randn(20, 20, dtype=torch.double, requires_grad=True)]
    print(
        "Are the gradients correct:", torch.autograd.gradcheck(module, double, eps=1e-6, atol=1e-4)
    )

    hidden = torch.randn(3, 3)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    for _ in range(steps):
        image = torch.randn(24, 24)
        target = torch.from_numpy(correlate2d(image.numpy(), hidden.numpy(), mode="valid"))
        loss = torch.mean((module(image) - target) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    error = (module.get_parameter("filter") - hidden).abs().max().item()
    print(f"Largest error in the learned filter after {steps} steps: {error:.2e}")
    return error


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    main(parser.parse_args().steps)
