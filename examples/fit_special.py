"""Fit a model through a SciPy special function: the decay of a modified Bessel function.

Noisy samples of ``y = amplitude * K_1.5(scale * x)`` are fitted by gradient descent on the
amplitude and the scale; the gradient with respect to the scale flows through
``npgrad_scipy.special.kv``'s closed-form derivative in x.

Run: python examples/fit_special.py [--steps N]
"""

from __future__ import annotations

import argparse

import torch

from npgrad_scipy.special import kv


def main(steps: int) -> tuple[float, float]:
    """Fit, print progress, and return the fitted (amplitude, scale)."""
    torch.manual_seed(0)
    x = torch.linspace(0.3, 4.0, 200, dtype=torch.float64)
    order = torch.tensor(1.5, dtype=torch.float64)
    truth = 2.0 * kv(order, 1.3 * x)
    y = truth + 0.01 * torch.randn_like(truth)
    amplitude = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([amplitude, scale], lr=0.1)
    for step in range(steps):
        loss = torch.mean((amplitude * kv(order, scale * x) - y) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(steps // 5, 1) == 0:
            print(f"step {step:4d}  loss {loss.item():.2e}")
    print(
        f"fitted amplitude {amplitude.item():.3f} (true 2.0), scale {scale.item():.3f} (true 1.3)"
    )
    return amplitude.item(), scale.item()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    main(parser.parse_args().steps)
