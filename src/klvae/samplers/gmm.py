"""A Gaussian mixture over the codes (Ghosh et al. 2020; pythae's GMM sampler): scikit-learn's
``GaussianMixture`` fitted by EM, kept as torch tensors."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from klvae import checks
from klvae.checks import doc
from klvae.errors import KlvaeError
from klvae.samplers.density import CodeDensity, SamplerConfig


@dataclass
class GMMConfig(SamplerConfig):
    components: int = field(default=10, metadata=doc("Gaussians of the mixture (pythae's GMM sampler uses 10)"))
    covariance: str = field(default="full", metadata=doc("each Gaussian's covariance", choices=("full", "diag")))

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.positive_int(self, "components")


class GMMDensity(CodeDensity):
    """K Gaussians with full (or diagonal) covariances; k-means start seeded with the config's seed."""

    config_class = GMMConfig

    def __init__(self, dim: int, config: GMMConfig):
        super().__init__(dim, config)
        k = config.components
        self.register_buffer("weights", torch.full((k,), 1 / k))
        self.register_buffer("means", torch.zeros(k, dim))
        self.register_buffer("scale_tril", torch.eye(dim).expand(k, dim, dim).clone())

    def _fit(self, u: torch.Tensor) -> dict:
        from sklearn.mixture import GaussianMixture

        k = self.config.components
        if len(u) < max(k, 2):
            raise KlvaeError(f"a mixture of {k} Gaussians needs at least {max(k, 2)} codes; got {len(u)}: fit to more "
                             "points or lower --components")
        gmm = GaussianMixture(k, covariance_type=self.config.covariance, random_state=self.config.seed,
                              reg_covar=1e-6).fit(u.double().numpy())
        cov = torch.as_tensor(gmm.covariances_)
        cov = torch.diag_embed(cov) if self.config.covariance == "diag" else cov
        self.weights.copy_(torch.as_tensor(gmm.weights_))
        self.means.copy_(torch.as_tensor(gmm.means_))
        self.scale_tril.copy_(torch.linalg.cholesky(cov))  # in float64, then stored in float32
        return {"converged": bool(gmm.converged_), "iterations": int(gmm.n_iter_)}

    def mixture(self) -> MixtureSameFamily:
        return MixtureSameFamily(Categorical(probs=self.weights), MultivariateNormal(self.means, scale_tril=self.scale_tril))

    def _log_prob(self, u: torch.Tensor) -> torch.Tensor:
        return self.mixture().log_prob(u)

    def _sample(self, n: int) -> torch.Tensor:
        return self.mixture().sample((n,))
