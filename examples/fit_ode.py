"""Fit the four rates of a predator-prey model (Lotka-Volterra) to noisy observations.

``dx/dt = a x - b x y``, ``dy/dt = d x y - c y``: SciPy integrates the model
(``npgrad_scipy.integrate.solve_ivp``) and the continuous adjoint gives the gradient of the
misfit in the four rates and the initial populations, which torch's L-BFGS follows.
With ``--plot FILE`` (needs ``npgrad[plot]``) it draws the data and both fits.

Run: python examples/fit_ode.py [--steps N] [--plot fit.png]
"""

from __future__ import annotations

import argparse

import torch

from npgrad_scipy.integrate import solve_ivp

TRUE_RATES = (1.0, 0.4, 0.4, 0.1)  # a, b, c, d
F64 = torch.float64


def predator_prey(t: torch.Tensor, z: torch.Tensor, log_rates: torch.Tensor) -> torch.Tensor:
    a, b, c, d = log_rates.exp()
    x, y = z
    return torch.stack([a * x - b * x * y, d * x * y - c * y])


def simulate(log_rates: torch.Tensor, z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Return the populations at ``t`` (shape (2, len(t)))."""
    return solve_ivp(predator_prey, (0.0, float(t[-1])), z0, log_rates, t_eval=t, rtol=1e-8,
                     atol=1e-10)  # fmt: skip


def main(steps: int, plot: str | None = None) -> tuple[float, ...]:
    """Fit, print progress, and return the fitted rates (a, b, c, d)."""
    torch.manual_seed(0)
    t = torch.linspace(0.0, 15.0, 40, dtype=F64)
    z0_true = torch.tensor([10.0, 5.0], dtype=F64)
    truth = simulate(torch.tensor(TRUE_RATES, dtype=F64).log(), z0_true, t)
    data = truth * (1 + 0.02 * torch.randn_like(truth))

    start = torch.tensor([0.8, 0.3, 0.5, 0.12], dtype=F64)
    log_rates = start.log().requires_grad_()
    z0 = data[:, 0].clone().requires_grad_()  # the initial populations are fitted too
    initial = simulate(log_rates.detach(), z0.detach(), t)
    optimizer = torch.optim.LBFGS([log_rates, z0], line_search_fn="strong_wolfe", max_iter=steps)

    def relative_misfit(rates: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        return ((simulate(rates, z0, t) - data) / data.mean(1, keepdim=True)).pow(2).mean()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = relative_misfit(log_rates, z0)
        loss.backward()
        return loss

    before = float(relative_misfit(log_rates.detach(), z0.detach()))
    optimizer.step(closure)
    after = float(relative_misfit(log_rates.detach(), z0.detach()))
    rates = tuple(float(r) for r in log_rates.detach().exp())
    pairs = zip("abcd", rates, TRUE_RATES, strict=True)
    named = ", ".join(f"{n} {r:.3f} (true {v})" for n, r, v in pairs)
    iterations = optimizer.state[log_rates]["n_iter"]
    print(f"misfit {before:.2e} -> {after:.2e} in {iterations} L-BFGS iterations")
    print(f"fitted rates: {named}")
    if plot:
        _plot(plot, t, data, initial, simulate(log_rates.detach(), z0.detach(), t))
    return rates


def _plot(path: str, t: torch.Tensor, data: torch.Tensor, *fits: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.5))
    for row, (name, colour) in enumerate((("prey", "tab:blue"), ("predators", "tab:red"))):
        axes.plot(t, data[row], "o", color=colour, markersize=3, label=f"{name}: data")
        axes.plot(t, fits[0][row], ":", color=colour, label=f"{name}: start")
        axes.plot(t, fits[1][row], "-", color=colour, label=f"{name}: fitted")
    axes.set_xlabel("t")
    axes.legend(fontsize=7, ncol=3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--plot", help="write a figure of the fit to this file")
    arguments = parser.parse_args()
    main(arguments.steps, arguments.plot)
