"""A toy with a known density for the samplers' tests (the fixture ``toy`` in conftest.py): a 2-D
mixture of three Gaussians (one elongated), seeded, with its exact log-density. Fitted densities
are judged by the held-out NLL against the true one and by their samples' moments."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal


@dataclass
class Toy:
    train: torch.Tensor  # (4000, 2)
    test: torch.Tensor  # (2000, 2)
    density: MixtureSameFamily  # the true density

    def true_nll(self, z: torch.Tensor) -> float:
        """Mean -log p(z) in nats under the true density."""
        return -self.density.log_prob(z).mean().item()


def mixture() -> MixtureSameFamily:
    means = torch.tensor([[-3.0, 0.0], [2.0, 2.0], [2.0, -2.5]])
    covs = torch.stack([torch.tensor([[1.0, 0.0], [0.0, 0.3]]),
                        torch.tensor([[0.5, 0.35], [0.35, 0.5]]),
                        torch.tensor([[0.2, 0.0], [0.0, 0.2]])])
    return MixtureSameFamily(Categorical(probs=torch.tensor([0.4, 0.35, 0.25])), MultivariateNormal(means, covs))


def moments_close(samples: torch.Tensor, reference: torch.Tensor, mean_tol: float = 0.15, cov_tol: float = 0.25) -> None:
    """The samples' mean and covariance match the reference's within absolute tolerances."""
    assert samples.shape[1:] == reference.shape[1:] and torch.isfinite(samples).all()
    assert (samples.mean(0) - reference.mean(0)).abs().max() < mean_tol, (samples.mean(0), reference.mean(0))
    assert (torch.cov(samples.T) - torch.cov(reference.T)).abs().max() < cov_tol, (torch.cov(samples.T),
                                                                                    torch.cov(reference.T))


LOG_2PI = math.log(2 * math.pi)
