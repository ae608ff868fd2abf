"""Total correlation: beta-TCVAE's split of the KL (Chen et al. 2018) and FactorVAE's critic
(Kim & Mnih 2018). :mod:`klvae.objectives` builds the two objectives from these pieces."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from klvae.errors import KlvaeError

CRITIC_LR, CRITIC_BETAS = 1e-4, (0.5, 0.9)  # Kim & Mnih's Adam settings for the critic


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


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each latent dimension shuffled independently across the batch: samples of the product of
    the marginals prod_d q(z_d) (Kim & Mnih 2018). z: (N, D) -> (N, D)."""
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

    def optimizer(self, fused: bool = False) -> torch.optim.Optimizer:
        """Kim & Mnih's Adam for the critic (lr 1e-4, betas (0.5, 0.9))."""
        return torch.optim.Adam(self.parameters(), lr=CRITIC_LR, betas=CRITIC_BETAS, fused=fused)
