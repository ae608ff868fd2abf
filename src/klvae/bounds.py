"""The bounds on log p(x) as functions of a model's distributions: the ELBO's terms and the IWAE
bound, each per data point in nats. :mod:`klvae.objectives` turns them into training objectives.

This module sits just above :mod:`klvae.kl` and below the models (which subclass
:class:`ElboTerms`); it imports no model code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Distribution

from klvae.kl import kl


def given(condition: torch.Tensor | None) -> dict:
    """Keyword arguments passing ``condition`` to a model, none when there is none."""
    return {} if condition is None else {"condition": condition}


@dataclass
class ElboTerms:
    """Per-data-point terms in nats. ``elbo = recon - kl`` (beta = 1, the true bound)."""

    recon: torch.Tensor  # (N,) E_q[log p(x|z)], one-sample estimate
    kl: torch.Tensor  # (N,) KL(q(z|x) || p(z))
    kl_per_dim: torch.Tensor | None  # (N, D) when the KL factorises, else None
    kl_method: str  # "analytic" or "mc"
    q: Distribution  # q(z|x) itself: its mean gives active units, its family other diagnostics

    @property
    def elbo(self) -> torch.Tensor:
        return self.recon - self.kl

    def loss(self, beta: float = 1.0, capacity: float | None = None, free_bits: float = 0.0,
             group: int = 1) -> torch.Tensor:
        """The minimised scalar, from batch means: -(recon - beta * R) with R the KL, or |KL - C|
        under capacity control (Burgess et al. 2018, beta in the role of gamma).

        Free bits (Kingma et al. 2016): with ``free_bits`` = lambda > 0 the KL in R is
        sum_g max(lambda, mean_x KL_g) over groups of ``group`` latent dimensions, so a group below
        its floor gets no gradient pushing it further down; a KL that does not factorise over
        dimensions is one group. The reported ELBO is unchanged."""
        kl = self.kl.mean() if free_bits <= 0 else self.floored_kl(free_bits, group)
        penalty = kl if capacity is None else (kl - capacity).abs()
        return -(self.recon.mean() - beta * penalty)

    def floored_kl(self, free_bits: float, group: int = 1) -> torch.Tensor:
        """sum_g max(free_bits, mean over the batch of KL_g) (see :meth:`loss`)."""
        if self.kl_per_dim is None:
            return self.kl.mean().clamp_min(free_bits)
        groups = self.kl_per_dim.mean(0).split(group)
        return torch.stack([g.sum() for g in groups]).clamp_min(free_bits).sum()


def elbo(model, x: torch.Tensor, kl_estimator: str = "auto", kl_samples: int = 1, samples: int = 1,
         condition: torch.Tensor | None = None) -> ElboTerms:
    """The reconstruction term averaged over ``samples`` reparameterised z ~ q(z|x) per point (the
    "VAE with k samples" of Burda et al. 2015); the KL from :func:`klvae.kl.kl`. A model with
    more than one latent layer supplies its own ``elbo_terms`` (same arguments, same result).
    ``condition``: the class labels (N,) of a conditional model, giving the bound on log p(x|y)."""
    c = given(condition)
    if hasattr(model, "elbo_terms"):
        return model.elbo_terms(x, kl_estimator, kl_samples, samples, **c)
    q = model.encode(x, **c)
    if samples == 1:
        recon = model.decode(q.rsample(), **c).log_prob(x)
    else:
        recon = model.decode(q.rsample((samples,)), **c).log_prob(x).mean(0)
    k = kl(q, model.prior(**c), kl_estimator, kl_samples)
    return ElboTerms(recon, k.value, k.per_dim, k.method, q)


def log_weights(model, x: torch.Tensor, k: int, q=None, condition: torch.Tensor | None = None,
                prior_below: int = 0) -> torch.Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x); shape (K, N).
    ``q`` may pass q(z|x) already computed for this x. A model with more than one latent layer
    supplies its own ``log_weights(x, k)`` from the joint densities (with ``prior_below``, its
    lowest levels at their conditional prior's mode). ``condition``: the class labels (N,) of a
    conditional model (every density then given y)."""
    c = given(condition)
    if prior_below:
        return model.log_weights(x, k, prior_below=prior_below)
    if hasattr(model, "log_weights"):
        return model.log_weights(x, k, **c)
    q = model.encode(x, **c) if q is None else q
    z = q.sample((k,))  # (K, N, D)
    return model.decode(z, **c).log_prob(x) + model.prior(**c).log_prob(z) - q.log_prob(z)


@torch.no_grad()
def iwae_bound(model, x: torch.Tensor, k: int, chunk: int | None = None,
               condition: torch.Tensor | None = None, prior_below: int = 0, seed: int | None = None) -> torch.Tensor:
    """log p(x) >= log (1/K) sum_k w_k (Burda et al. 2015), per data point: (N,) nats; with the
    class labels ``condition`` (N,) of a conditional model, the bound on log p(x|y); with
    ``prior_below`` = k, a hierarchy's bound L^{>k} (see :func:`log_weights`).

    The K samples are drawn in chunks of ``chunk`` (default: all at once) and combined with a
    running logsumexp, so memory stays O(chunk * N) for any K. With ``seed``, chunk i draws from
    ``torch.manual_seed(seed + i)``: two bounds of one x then share the draws they have in common.
    """
    chunk = chunk or k
    q = None if hasattr(model, "log_weights") else model.encode(x, **given(condition))
    total = None
    for i, start in enumerate(range(0, k, chunk)):
        if seed is not None:
            torch.manual_seed(seed + i)
        lw = log_weights(model, x, min(chunk, k - start), q, condition, prior_below).logsumexp(0)  # (N,)
        total = lw if total is None else torch.logaddexp(total, lw)
    return total - math.log(k)


@dataclass
class IwaeTerms:
    """The K-sample IWAE bound of each data point and, from its first sample, the ELBO terms
    that the diagnostics read (recon, KL, q)."""

    bound: torch.Tensor  # (N,) log (1/K) sum_k w_k
    first: ElboTerms

    def loss(self) -> torch.Tensor:
        return -self.bound.mean()


def iwae_objective(model, x: torch.Tensor, k: int, dreg: bool = False, kl_estimator: str = "auto",
                   kl_samples: int = 1) -> IwaeTerms:
    """The IWAE bound (Burda et al. 2015) with K reparameterised samples, to maximise.

    ``dreg``: the encoder's gradient is the doubly reparameterised estimator of Tucker et al.
    (2018), sum_k w~_k^2 d log w_k / d z_k dz_k / d phi, with log q evaluated at parameters that
    carry no gradient; the decoder's gradient is IWAE's own. One backward pass gives both: the
    loss is IWAE's, and a hook on z scales each sample's gradient by w~_k once more."""
    h = model.encoder_output(x)
    q = model.family.posterior(h)
    z = q.rsample((k,))  # (K, N, D)
    log_px = model.decode(z).log_prob(x)
    prior = model.prior()
    log_q = (model.family.posterior(h.detach()) if dreg else q).log_prob(z)
    log_w = log_px + prior.log_prob(z) - log_q  # (K, N)
    if dreg and z.requires_grad:
        w = torch.softmax(log_w.detach(), dim=0).unsqueeze(-1)
        z.register_hook(lambda grad: grad * w)
    bound = log_w.logsumexp(0) - math.log(k)
    kl_first = kl(q, prior, kl_estimator, kl_samples)
    return IwaeTerms(bound, ElboTerms(log_px[0], kl_first.value, kl_first.per_dim, kl_first.method, q))
