"""Toy 2-D densities: the point clouds of the normalizing-flow and diffusion papers.

The flow and diffusion notebooks start here, where a whole density fits in one scatter plot: a model
either bends its Gaussian into two moons or visibly fails to. The four sets follow FFJORD's toy data
(Grathwohl et al., 2019, https://arxiv.org/abs/1810.01367), scaled to lie roughly within [-4, 4] with
mean near zero. Two have a density in closed form (`toy2d_log_prob`), so a notebook can put a model's
log-likelihood next to the true one.
"""
import math

import torch

from .shapes import check_int, pick, uniform_table

TOY2D = ("two_moons", "eight_gaussians", "swiss_roll", "checkerboard")
EIGHT_RADIUS = 2 * math.sqrt(2)       # FFJORD: centres at radius 4, then everything / 1.414
EIGHT_STD = 0.5 / math.sqrt(2)        # FFJORD: std 0.5, then / 1.414
CHECKER_CELL = 2.0                    # 8 filled 2x2 cells of a 4x4 board on [-4, 4]^2


def _normal(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Box-Muller: two uniform tensors -> one standard normal tensor (1 - u1 is never 0)."""
    return torch.sqrt(-2 * torch.log1p(-u1)) * torch.cos(2 * math.pi * u2)


def _two_moons(u: torch.Tensor) -> torch.Tensor:
    """sklearn's make_moons(noise=0.1), centred and doubled: x in about [-3, 3], y in [-2, 2]."""
    t = math.pi * u[:, 1]
    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)              # (n, 2)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)     # (n, 2)
    points = torch.where(u[:, :1] < 0.5, upper, lower)
    noise = torch.stack([_normal(u[:, 2], u[:, 3]), _normal(u[:, 4], u[:, 5])], 1)  # (n, 2)
    return 2 * (points + 0.1 * noise - torch.tensor([0.5, 0.25]))


def _eight_centres() -> torch.Tensor:
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    return (EIGHT_RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], 1)).float()  # (8, 2)


def _eight_gaussians(u: torch.Tensor) -> torch.Tensor:
    noise = torch.stack([_normal(u[:, 1], u[:, 2]), _normal(u[:, 3], u[:, 4])], 1)  # (n, 2)
    return _eight_centres()[pick(u[:, 0], 8)] + EIGHT_STD * noise


def _swiss_roll(u: torch.Tensor) -> torch.Tensor:
    """sklearn's make_swiss_roll(noise=1) seen from above, / 5, minus its exact mean: within about [-3, 3]."""
    t = 1.5 * math.pi * (1 + 2 * u[:, 0])
    noise = torch.stack([_normal(u[:, 1], u[:, 2]), _normal(u[:, 3], u[:, 4])], 1)  # (n, 2)
    mean = torch.tensor([2.0, 2 / (3 * math.pi)])  # E[t cos t], E[t sin t] for t ~ U(1.5 pi, 4.5 pi)
    return (torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) + noise - mean) / 5


def _checkerboard(u: torch.Tensor) -> torch.Tensor:
    """Uniform on the 8 cells of a 4x4 board whose row + column is even, scaled to [-4, 4]."""
    x = 4 * u[:, 0] - 2                                        # column: uniform on [-2, 2)
    y = u[:, 1] + 2 * pick(u[:, 2], 2) - 2                    # [-2, -1) or [0, 1)
    y = y + torch.floor(x).remainder(2)                        # odd columns shift up one cell
    return CHECKER_CELL * torch.stack([x, y], 1)


SAMPLERS = {"two_moons": (_two_moons, 6), "eight_gaussians": (_eight_gaussians, 5),
            "swiss_roll": (_swiss_roll, 5), "checkerboard": (_checkerboard, 3)}  # name -> (fn, uniforms per point)


def _check_name(name: str) -> None:
    if name not in TOY2D:
        raise ValueError(f"name must be one of {TOY2D}, got {name!r}")


def sample_toy2d(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """n points (n, 2) float32 from the toy density `name`; a pure function of (name, n, seed)."""
    _check_name(name)
    fn, k = SAMPLERS[name]
    return fn(uniform_table(check_int("n", n, 1), k, seed)).float()


def toy2d_log_prob(name: str, x: torch.Tensor) -> torch.Tensor:
    """Exact log-density of points x (..., 2) under `name`; -inf off the checkerboard's cells.

    Only eight_gaussians (a mixture of 8 equal isotropic Gaussians) and checkerboard (uniform on 8
    cells of area 4, density 1/32) have one in closed form; the moons and the roll are noisy curves.
    """
    _check_name(name)
    if x.shape[-1] != 2:
        raise ValueError(f"x must have shape (..., 2), got {tuple(x.shape)}")
    if name == "eight_gaussians":
        d2 = (x[..., None, :] - _eight_centres().to(x)).pow(2).sum(-1)      # (..., 8)
        log_n = -d2 / (2 * EIGHT_STD**2) - math.log(2 * math.pi * EIGHT_STD**2)
        return torch.logsumexp(log_n, -1) - math.log(8)
    if name == "checkerboard":
        cell = torch.floor(x / CHECKER_CELL)                                # (..., 2)
        inside = ((x >= -4) & (x < 4)).all(-1) & (cell.sum(-1).remainder(2) == 0)
        return torch.where(inside, -math.log(32.0), -math.inf).to(x.dtype)
    raise NotImplementedError(f"{name} has no closed-form density; only eight_gaussians and checkerboard do")
