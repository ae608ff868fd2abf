"""Objectives as functions of the model's distributions: the (beta-)ELBO and the IWAE bound."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Distribution

from klvae.errors import KlvaeError
from klvae.kl import kl
from klvae.models.conditional import given


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


def log_weights(model, x: torch.Tensor, k: int, q=None, condition: torch.Tensor | None = None) -> torch.Tensor:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x); shape (K, N).
    ``q`` may pass q(z|x) already computed for this x. A model with more than one latent layer
    supplies its own ``log_weights(x, k)`` from the joint densities. ``condition``: the class
    labels (N,) of a conditional model (every density then given y)."""
    c = given(condition)
    if hasattr(model, "log_weights"):
        return model.log_weights(x, k, **c)
    q = model.encode(x, **c) if q is None else q
    z = q.sample((k,))  # (K, N, D)
    return model.decode(z, **c).log_prob(x) + model.prior(**c).log_prob(z) - q.log_prob(z)


@torch.no_grad()
def iwae_bound(model, x: torch.Tensor, k: int, chunk: int | None = None,
               condition: torch.Tensor | None = None) -> torch.Tensor:
    """log p(x) >= log (1/K) sum_k w_k (Burda et al. 2015), per data point: (N,) nats; with the
    class labels ``condition`` (N,) of a conditional model, the bound on log p(x|y).

    The K samples are drawn in chunks of ``chunk`` (default: all at once) and combined with a
    running logsumexp, so memory stays O(chunk * N) for any K.
    """
    chunk = chunk or k
    q = None if hasattr(model, "log_weights") else model.encode(x, **given(condition))
    total = None
    for start in range(0, k, chunk):
        lw = log_weights(model, x, min(chunk, k - start), q, condition).logsumexp(0)  # (N,)
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
    log_w = log_px + prior.log_prob(z) - log_q
    if dreg and z.requires_grad:
        w = torch.softmax(log_w.detach(), dim=0).unsqueeze(-1)
        z.register_hook(lambda grad: grad * w)
    bound = log_w.logsumexp(0) - math.log(k)
    kl_first = kl(q, prior, kl_estimator, kl_samples)
    return IwaeTerms(bound, ElboTerms(log_px[0], kl_first.value, kl_first.per_dim, kl_first.method, q))


@dataclass
class TCTerms:
    """KL(q(z|x) || p(z)) split as Chen et al. (2018): index-code mutual information, total
    correlation and dimension-wise KL, each (N,), estimated on the batch by minibatch-weighted
    sampling; they sum to the one-sample estimate log q(z|x) - log p(z)."""

    mi: torch.Tensor
    tc: torch.Tensor
    dim_kl: torch.Tensor


def tc_decomposition(q, z: torch.Tensor, prior, dataset_size: int) -> TCTerms:
    """The decomposition of :class:`TCTerms` for a factorised q (Independent over D dims), with
    z: (M, D) one sample per data point of the batch of M and ``dataset_size`` N, by Chen et al.'s
    minibatch-weighted sampling: log q(z_i) ~ logsumexp_j log q(z_i | x_j) - log(N M), and the same
    per dimension for the product of the marginals. The estimate is biased: where the posteriors of
    the batch overlap, TC reads up to (D - 1) log N too high. The bias is the same for all
    parameters and leaves the gradient alone."""
    base = q.base_dist if hasattr(q, "base_dist") else None
    if base is None or q.reinterpreted_batch_ndims != 1:
        raise KlvaeError("the total-correlation split needs a factorised posterior (--latent gaussian)")
    m = z.shape[0]
    log_norm = math.log(dataset_size * m)
    per_dim = base.log_prob(z.unsqueeze(1))  # (M, M, D): log q(z_i,d | x_j)
    log_qz = per_dim.sum(-1).logsumexp(1) - log_norm
    log_prod = (per_dim.logsumexp(1) - log_norm).sum(-1)
    log_qzx = q.log_prob(z)
    return TCTerms(log_qzx - log_qz, log_qz - log_prod, log_prod - prior.log_prob(z))


def tcvae_loss(model, x: torch.Tensor, beta: float, dataset_size: int) -> tuple[torch.Tensor, ElboTerms, TCTerms]:
    """beta-TCVAE (Chen et al. 2018): -(recon - MI - beta * TC - dimension-wise KL), batch mean;
    also the ELBO terms (analytic KL) for the diagnostics."""
    q = model.encode(x)
    z = q.rsample()
    recon = model.decode(z).log_prob(x)
    prior = model.prior()
    parts = tc_decomposition(q, z, prior, dataset_size)
    k = kl(q, prior)
    loss = -(recon - parts.mi - beta * parts.tc - parts.dim_kl).mean()
    return loss, ElboTerms(recon, k.value, k.per_dim, k.method, q), parts


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each latent dimension shuffled independently across the batch: samples of the product of
    the marginals prod_d q(z_d) (Kim & Mnih 2018)."""
    idx = torch.stack([torch.randperm(z.shape[0], generator=generator, device=z.device) for _ in range(z.shape[1])], 1)
    return z.gather(0, idx)


class Discriminator(torch.nn.Module):
    """FactorVAE's critic (Kim & Mnih 2018): z -> logits of (from q(z), from prod_d q(z_d)); an
    MLP with LeakyReLU, narrower than the paper's 6 x 1000 to suit a CPU."""

    def __init__(self, latent_dim: int, width: int = 256, layers: int = 3):
        super().__init__()
        sizes = [latent_dim] + [width] * layers
        body = [m for a, b in zip(sizes, sizes[1:]) for m in (torch.nn.Linear(a, b), torch.nn.LeakyReLU(0.2))]
        self.net = torch.nn.Sequential(*body, torch.nn.Linear(width, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def total_correlation(self, z: torch.Tensor) -> torch.Tensor:
        """TC(z) ~ log D(z) / (1 - D(z)) per point, (N,): the density-ratio trick."""
        logits = self(z)
        return logits[:, 0] - logits[:, 1]

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of telling z (class 0) from its dimension-wise permutation (class 1)."""
        z = z.detach()
        both = torch.cat([z, permute_dims(z)])
        target = torch.cat([torch.zeros(len(z)), torch.ones(len(z))]).long().to(z.device)
        return torch.nn.functional.cross_entropy(self(both), target)


def factorvae_loss(model, discriminator: Discriminator, x: torch.Tensor, gamma: float
                   ) -> tuple[torch.Tensor, ElboTerms, torch.Tensor, torch.Tensor]:
    """FactorVAE: -(ELBO - gamma * TC) with TC from the discriminator; returns the loss, the ELBO
    terms, the TC estimates (N,) and z (for the discriminator's own step)."""
    q = model.encode(x)
    z = q.rsample()
    recon = model.decode(z).log_prob(x)
    k = kl(q, model.prior())
    tc = discriminator.total_correlation(z)
    loss = -(recon - k.value - gamma * tc).mean()
    return loss, ElboTerms(recon, k.value, k.per_dim, k.method, q), tc, z
