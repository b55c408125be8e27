"""Checkers for notebook 02 (the VAE): the KL divergence of two diagonal Gaussians, and reparameterization.

    from minigen.exercises.vae import check_gaussian_kl, check_reparameterize
    check_gaussian_kl(my_kl)            # my_kl(mu_q, logvar_q, mu_p, logvar_p) -> (...) summed over the last dim
    check_reparameterize(my_reparam)    # my_reparam(mu, logvar) -> z, a sample of N(mu, diag(exp(logvar)))

The references are minigen.models.vae.gaussian_kl and reparameterize.
"""
import torch

from ._check import assert_close, checker, solution_for


@checker("vae.gaussian_kl")
def check_gaussian_kl(fn) -> None:
    """fn(mu_q, logvar_q, mu_p, logvar_p) must return KL(q || p) summed over the last dimension."""
    from minigen.models.vae import gaussian_kl

    g = torch.Generator().manual_seed(0)
    mu_q, logvar_q, mu_p, logvar_p = (torch.randn(6, 4, generator=g) for _ in range(4))
    hint = ("Per dimension: 0.5 * (logvar_p - logvar_q + (exp(logvar_q) + (mu_q - mu_p)^2) / exp(logvar_p) - 1), "
            "then sum over the last dimension.")
    got = fn(mu_q, logvar_q, mu_p, logvar_p)
    assert_close("gaussian_kl", got, gaussian_kl(mu_q, logvar_q, mu_p, logvar_p), hint=hint)
    zero = fn(mu_q, logvar_q, mu_q, logvar_q)
    assert_close("gaussian_kl(q, q)", zero, torch.zeros(6), atol=1e-5, hint="KL of a distribution to itself is 0.")


@checker("vae.reparameterize")
def check_reparameterize(fn, n: int = 100_000) -> None:
    """fn(mu, logvar) must return mu + exp(logvar / 2) * eps, eps ~ N(0, I), with gradients to mu and logvar."""
    mu0 = torch.tensor([1.0, -2.0, 0.5])
    var0 = torch.tensor([1.0, 0.25, 4.0])
    mu = mu0.repeat(n, 1).requires_grad_(True)                       # (N, 3): n draws of the same Gaussian
    logvar = var0.log().repeat(n, 1).requires_grad_(True)
    z = fn(mu, logvar)
    if not torch.is_tensor(z) or z.shape != mu.shape:
        shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
        raise AssertionError(f"reparameterize: expected a tensor of shape {tuple(mu.shape)}, got {shape}")
    if not z.requires_grad:
        raise AssertionError("reparameterize: no gradient reaches mu and logvar (did you detach, or sample with "
                             "torch.normal(mu, std)?). Write z = mu + std * eps with eps = torch.randn_like(mu).")
    z.sum().backward()
    if mu.grad is None or logvar.grad is None or not torch.allclose(mu.grad, torch.ones_like(mu)):
        raise AssertionError("reparameterize: the gradient of z with respect to mu should be 1; build z as "
                             "mu + std * eps.")
    z = z.detach()
    hint = "The standard deviation is exp(logvar / 2), not exp(logvar)."
    # standard errors with n = 1e5: mean <= 2 / 316 = 0.006, variance ~0.45 % relative, so these bounds are ~5 sigma
    assert_close("reparameterize: sample mean", z.mean(0), mu0, atol=0.03, rtol=0.0, hint=hint)
    assert_close("reparameterize: sample variance", z.var(0), var0, atol=0.0, rtol=0.03, hint=hint)


# ----------------------------------------------------------------------------------------------------
# Solutions: printed by minigen.exercises.solution("vae.<name>"); tests/test_exercises.py checks them
# ----------------------------------------------------------------------------------------------------

@solution_for("vae.gaussian_kl")
def my_gaussian_kl(mu_q, logvar_q, mu_p, logvar_p):
    per_dim = logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1
    return 0.5 * per_dim.sum(dim=-1)


@solution_for("vae.reparameterize")
def my_reparameterize(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
