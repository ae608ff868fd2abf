"""VQ-VAE's quantizer apart from the model (:mod:`klvae.models.vqvae`): the choices, the terms it
trains on, code perplexity, the codebook's moving averages and dead-code restarts, and the latent
"family" of one-hot codes.

The updates work in place on the model's buffers, under no_grad: the moving code counts (the
prior's, and those since the last restart check), the EMA codebook of ``vq-ema`` (decay 0.99,
Laplace-smoothed cluster sizes; van den Oord et al. 2017, appendix), and restarts of the codes
that got less than 3% of a uniform share of the assignments onto random encoder outputs
(Dhariwal et al. 2020).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributions import Distribution

from klvae.bounds import ElboTerms
from klvae.errors import KlvaeError
from klvae.latents import LatentFamily
from klvae.paths import lerp, slerp

QUANTIZERS = ("vq-ema", "vq", "gumbel")
EMA_DECAY = 0.99  # codebook and code-count moving averages
EMA_EPSILON = 1e-5  # Laplace smoothing of the EMA cluster sizes
RESTART_EVERY = 20  # training steps between dead-code checks
DEAD_SHARE = 0.03  # a code is dead when it got less than this fraction of a uniform share of them
FINAL_TEMPERATURE = 0.1  # gumbel: the annealing's end; then samples are hard (straight-through)


@dataclass
class VQElboTerms(ElboTerms):
    """ElboTerms plus what VQ trains on: ``penalty`` (N,) the commitment (and codebook) loss,
    ``loss_kl`` (N,) the KL to the uniform prior that the gumbel quantizer's loss weighs (None for
    VQ), ``perplexity`` exp(entropy) of the batch's code usage (0-dim), ``temperature`` (gumbel)."""

    penalty: torch.Tensor | None = None
    loss_kl: torch.Tensor | None = None
    perplexity: torch.Tensor | None = None
    temperature: float | None = None

    def loss(self, beta: float = 1.0, capacity: float | None = None, free_bits: float = 0.0,
             group: int = 1) -> torch.Tensor:
        """VQ: -recon + penalty (a hard posterior's KL carries no gradient; ``beta`` is unused).
        Gumbel: -(recon - beta * KL(q || uniform)). Batch means."""
        if self.loss_kl is None:
            return -self.recon.mean() + self.penalty.mean()
        return -(self.recon.mean() - beta * self.loss_kl.mean())


def code_perplexity(probs: torch.Tensor) -> torch.Tensor:
    """exp(H) of the mean code distribution of probs: (..., K) one-hot or soft; K when all codes are
    used equally, 1 when one code is used everywhere."""
    mean = probs.reshape(-1, probs.shape[-1]).double().mean(0)
    return torch.exp(-(mean * mean.clamp_min(1e-30).log()).sum()).to(probs.dtype)


@torch.no_grad()
def count_codes(code_counts: torch.Tensor, recent_counts: torch.Tensor, one_hot: torch.Tensor) -> None:
    """Add the assignments one_hot (N, P, K) to the prior's moving counts code_counts (P, K) and to
    recent_counts (K,), the assignments since the last restart check."""
    code_counts.mul_(EMA_DECAY).add_(one_hot.sum(0), alpha=1 - EMA_DECAY)
    recent_counts += one_hot.sum((0, 1))


@torch.no_grad()
def ema_codebook(codebook: torch.Tensor, cluster_size: torch.Tensor, embed_sum: torch.Tensor,
                 z_e: torch.Tensor, one_hot: torch.Tensor) -> None:
    """Move the EMA statistics cluster_size (K,) and embed_sum (K, D) towards the assignments
    one_hot (N, P, K) of the encoder outputs z_e (N, P, D), and set codebook (K, D) to their
    Laplace-smoothed means."""
    codes = codebook.shape[0]
    flat, hot = z_e.reshape(-1, z_e.shape[-1]), one_hot.reshape(-1, codes)
    cluster_size.mul_(EMA_DECAY).add_(hot.sum(0), alpha=1 - EMA_DECAY)
    embed_sum.mul_(EMA_DECAY).add_(hot.t() @ flat, alpha=1 - EMA_DECAY)
    n = cluster_size.sum()
    size = (cluster_size + EMA_EPSILON) / (n + codes * EMA_EPSILON) * n
    codebook.copy_(embed_sum / size[:, None])


@torch.no_grad()
def take_dead_codes(recent_counts: torch.Tensor, every: bool = False) -> torch.Tensor:
    """The dead codes (K,) bool by recent_counts (K,): those below DEAD_SHARE of the mean (every
    code when ``every``, as at step 0). Zeroes recent_counts for the next check."""
    recent = recent_counts.clone()
    recent_counts.zero_()
    return torch.ones_like(recent, dtype=torch.bool) if every else recent < DEAD_SHARE * recent.mean()


@torch.no_grad()
def restart_points(z_e: torch.Tensor, n: int) -> torch.Tensor:
    """n random rows (n, D) of the encoder outputs z_e (N, P, D), slightly jittered so that restarts
    on one row do not coincide."""
    flat = z_e.reshape(-1, z_e.shape[-1])
    picked = flat[torch.randint(len(flat), (n,), device=flat.device)]
    return picked + 1e-3 * flat.std() * torch.randn_like(picked)


class CodeFamily(LatentFamily):
    """The latent "family" of VQ-VAE in the interface of ``klvae.latents`` (point and path)."""

    geometry = "discrete"

    def __init__(self):  # the model holds the sizes
        pass

    def traversal(self, steps, span, device):
        raise KlvaeError("traversals sweep continuous latent coordinates, and model vqvae has discrete codes; "
                         "use sample or interpolate instead")

    def point(self, q: Distribution) -> torch.Tensor:
        """The mode of q: one-hot codes (N, P, K)."""
        probs = q.base_dist.probs
        return F.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)

    def path(self, za: torch.Tensor, zb: torch.Tensor, t: torch.Tensor, spherical: bool) -> torch.Tensor:
        """A blend of the two code choices: (S, P, K), each row of codes summing to 1."""
        flat = (slerp if spherical else lerp)(za.flatten(), zb.flatten(), t).clamp_min(0)
        path = flat.view(len(t), *za.shape)
        return path / path.sum(-1, keepdim=True)
