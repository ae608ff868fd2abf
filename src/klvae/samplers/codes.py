"""The codes a sampler is fitted to, and how far a density is from the aggregated posterior."""
from __future__ import annotations

import math

import torch

from klvae.diagnostics import pairwise_log_prob
from klvae.errors import KlvaeError
from klvae.models.conditional import given

BATCH = 1000  # data points encoded at a time
KL_POINTS = 2000  # test points whose aggregated posterior the KL is estimated against


def check_euclidean(model) -> None:
    """A sampler is a density over R^D: a latent on the sphere, the torus or a codebook is refused."""
    geometry = model.family.geometry
    if geometry == "discrete":
        raise KlvaeError("a fitted sampler is a density over continuous codes, and this model has discrete codes; "
                         "sample from its prior instead (--from prior)")
    if geometry != "euclidean":
        raise KlvaeError(f"a fitted sampler is a density over R^D, and latent {model.spec.latent!r} lives on a "
                         f"{geometry}; sample from the prior (--from prior), or train with --latent gaussian")


@torch.no_grad()
def encode_codes(model, x: torch.Tensor, labels: torch.Tensor | None = None, kind: str = "mean",
                 seed: int = 0) -> torch.Tensor:
    """The codes of x: (N, *event) (with its labels (N,) for a conditional model): the posterior
    means (``kind`` mean) or one draw of each q(z|x) (sample, seeded), (N, D) float32 on the CPU."""
    check_euclidean(model)
    device = next(model.parameters()).device
    out = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(x), BATCH):
            y = labels[start:start + BATCH].to(device) if labels is not None else None
            q = model.encode(x[start:start + BATCH].to(device), **given(y))
            out.append((model.family.point(q) if kind == "mean" else q.sample()).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def aggregate_kl(model, x: torch.Tensor, log_prob, seed: int = 0, points: int = KL_POINTS) -> float:
    """KL(q(z) || p) in nats, q(z) = (1/M) sum_j q(z|x_j) the aggregated posterior of the first
    ``points`` rows of x, by Monte Carlo: z_i ~ q(z|x_i), log q(z_i) by the mixture over all M
    posteriors. ``log_prob``: z (M, D) -> log p(z) (M,). (For a density whose log_prob is a lower
    bound the result is an upper bound.)"""
    check_euclidean(model)
    x = x[:points]
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        q = model.encode(x.to(device))
        z = q.sample()
    log_q = torch.logsumexp(pairwise_log_prob(q, z).double(), dim=1) - math.log(len(x))
    return (log_q - log_prob(z.float().cpu()).double().to(log_q.device)).mean().item()
