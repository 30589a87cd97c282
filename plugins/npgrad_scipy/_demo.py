"""``npgrad demo``: the tutorial's ScipyConv2d with npgrad, then learning a hidden kernel.

The command finds it through this plugin's entry point, as ``demo``: npgrad's core imports
no plugin.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

import npgrad
from npgrad_scipy.conv import ScipyConv2d

# Learning counts as a success when every recovered weight is this close to the hidden one.
_TOLERANCE = 1e-2


def demo(steps: int = 300, seed: int = 0, picture: str | None = "demo.png") -> int:
    """Print the tutorial's walk-through and learn a hidden kernel; return 0 on success, else 1.

    Args:
        steps: gradient-descent steps.
        seed: the random seed.
        picture: where to write the picture of the kernels and the loss curve (with matplotlib
            installed), or None for none.
    """
    torch.manual_seed(seed)
    print("1. The tutorial's layer, with npgrad doing the autograd plumbing")
    module = ScipyConv2d(3, 3)
    print(f"   {module}")
    for name, parameter in module.named_parameters():
        print(f"   {name}: {_fmt(parameter)}")

    input = torch.randn(5, 5, requires_grad=True)
    output = module(input)
    print(f"   output of a 5x5 input: shape {tuple(output.shape)}, grad_fn {output.grad_fn.name()}")
    print(f"   {_fmt(output)}")
    output.backward(torch.randn(output.shape))
    assert input.grad is not None
    print(f"   gradient for the input: {_fmt(input.grad)}")

    double = torch.randn(20, 20, dtype=torch.double, requires_grad=True)
    verdict = torch.autograd.gradcheck(module, (double,), eps=1e-6, atol=1e-4)
    print(f"   gradcheck (20x20 double input, eps=1e-6, atol=1e-4): {verdict}")
    report = npgrad.check(module.op, torch.randn(10, 10), torch.randn(3, 3), torch.randn(1, 1))
    print(f"   npgrad.check: {report}")

    print(f"2. Learning a hidden 3x3 kernel and bias by gradient descent ({steps} steps)")
    hidden = ScipyConv2d(3, 3).requires_grad_(False)
    model = ScipyConv2d(3, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    losses = []
    # A bar in terminals and notebooks; nothing in a log (disable=None: not a terminal).
    progress = tqdm(range(steps), desc="   learning", unit="step", disable=None, leave=False)
    for _ in progress:
        image = torch.randn(32, 32)
        loss = torch.mean((model(image) - hidden(image)) ** 2)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.3e}", refresh=False)
    progress.close()
    print(f"   loss {losses[0]:.3e} at the first step, {losses[-1]:.3e} at the last")
    error = max(
        (model.get_parameter(name) - hidden.get_parameter(name)).abs().max().item()
        for name in ("filter", "bias")
    )
    print(f"   hidden filter:  {_fmt(hidden.get_parameter('filter'))}")
    print(f"   learned filter: {_fmt(model.get_parameter('filter'))}")
    print(f"   largest error in the recovered kernel and bias: {error:.2e}")
    if picture is not None:
        _draw(picture, hidden.get_parameter("filter"), model.get_parameter("filter"), losses)
    if verdict and error < _TOLERANCE:
        print("   recovered: OK")
        return 0
    print(f"   FAILED: expected an error below {_TOLERANCE:g}")
    return 1


def _draw(path: str, hidden: torch.Tensor, learned: torch.Tensor, losses: list[float]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("   (install npgrad[plot] for a picture of the kernels and the loss curve)")
        return
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    hidden, learned = hidden.detach(), learned.detach()
    bound = float(max(hidden.abs().max(), learned.abs().max()))
    for axis, kernel, title in ((axes[0], hidden, "hidden kernel"), (axes[1], learned, "learned")):
        shown = axis.imshow(kernel.numpy(), cmap="RdBu", vmin=-bound, vmax=bound)
        axis.set_title(title)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(shown, ax=axes[:2].tolist(), shrink=0.8)
    axes[2].semilogy(losses)
    axes[2].set_title("loss")
    axes[2].set_xlabel("step")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    print(f"   wrote {path}")


def _fmt(tensor: torch.Tensor) -> str:
    array = tensor.detach().numpy()
    return np.array2string(array, precision=3, floatmode="fixed", max_line_width=200)
