"""The two-stage VAE (Dai & Wipf 2019, "Diagnosing and enhancing VAE models"): a second VAE fitted
to the standardised codes u: (N, D). Its latent v has u's dimension D and the prior N(0, I);
q(v|u) is a diagonal Gaussian, p(u|v) = N(f(v), gamma I) with one learned scalar variance gamma
(which goes towards 0 as the fit improves). ``log_prob`` is the importance-weighted (IWAE, Burda
et al. 2016) lower bound on log p(u) with ``iwae_k`` samples; samples are f(v), v ~ N(0, I)
(or draws of p(u|v) with ``decoder_noise``)."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence

from klvae import checks
from klvae.checks import doc
from klvae.errors import KlvaeError
from klvae.samplers.density import MIN_SCALE, CodeDensity, SamplerConfig, adam_fit, finite, reset

ROWS, K_CHUNK = 1024, 32  # the IWAE bound is computed over blocks of codes x importance samples


# Dai & Wipf's second stage: 3 hidden layers of 1024 units, Adam at lr 1e-4 halved every 300 epochs,
# batches of 64, 800 epochs. These defaults are sized for ~60k codes of 16 dimensions on one CPU
# core (a second one gains nothing on a shared machine): an epoch (235 steps) takes 2-3 s, so
# 30 epochs take 1-1.5 min.
@dataclass
class TwoStageConfig(SamplerConfig):
    hidden: list[int] = field(default_factory=lambda: [256, 256], metadata=doc(
        "hidden layer widths of the encoder and the decoder (Dai & Wipf: 1024 1024 1024)"))
    epochs: int = field(default=30, metadata=doc("passes over the codes"))
    batch_size: int = field(default=256, metadata=doc("codes per Adam step"))
    lr: float = field(default=1e-3, metadata=doc("Adam's learning rate"))
    iwae_k: int = field(default=100, metadata=doc("importance samples of the bound log_prob gives (1: the ELBO)"))
    decoder_noise: bool = field(default=False, metadata=doc(
        "draw u from p(u|v) (as Dai & Wipf's code does) instead of taking its mean f(v) (as pythae does)"))

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.positive_int(self, "epochs", "batch_size", "iwae_k")
        checks.int_list(self, "hidden", "positive layer widths like [256, 256]")
        checks.within(self, "lr", 0, 1)
        checks.boolean(self, "decoder_noise")


class SkipMLP(nn.Module):
    """x: (*, d_in) -> (*, d_out): ReLU layers of widths ``hidden``, then a linear layer on the
    last hidden layer joined to x (Dai & Wipf's second-stage networks)."""

    def __init__(self, d_in: int, hidden: list[int], d_out: int):
        super().__init__()
        widths = [d_in, *hidden]
        self.body = nn.Sequential(*(m for a, b in itertools.pairwise(widths) for m in (nn.Linear(a, b), nn.ReLU())))
        self.head = nn.Linear(d_in + widths[-1], d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([x, self.body(x)], -1))


class TwoStageDensity(CodeDensity):
    """A VAE over u: (N, D) with latent v: (N, D); initial weights are drawn in ``fit`` (seeded)."""

    config_class = TwoStageConfig
    exact = False

    def __init__(self, dim: int, config: TwoStageConfig):
        super().__init__(dim, config)
        self.encoder = SkipMLP(dim, config.hidden, 2 * dim)
        self.decoder = SkipMLP(dim, config.hidden, dim)
        self.log_gamma = nn.Parameter(torch.zeros(()))  # log of p(u|v)'s variance

    @property
    def gamma(self) -> float:
        """The learned variance of p(u|v) (in standardised units)."""
        return self.log_gamma.exp().item()

    def posterior(self, u: torch.Tensor) -> Independent:
        """q(v|u): batch (N,), event (D,)."""
        loc, scale = self.encoder(u).chunk(2, -1)
        return Independent(Normal(loc, F.softplus(scale) + MIN_SCALE, validate_args=False), 1)  # checked by finite()

    def likelihood(self, v: torch.Tensor) -> Independent:
        """p(u|v): batch v.shape[:-1], event (D,)."""
        loc = self.decoder(v)
        return Independent(Normal(loc, (0.5 * self.log_gamma).exp().expand_as(loc), validate_args=False), 1)

    def prior(self) -> Independent:
        zero = self.log_gamma.new_zeros(self.dim)
        return Independent(Normal(zero, zero + 1), 1)

    def _fit(self, u: torch.Tensor) -> dict:
        """``loss``: the last epoch's mean -ELBO of the standardised codes (nats per code);
        ``gamma``: the learned variance of p(u|v)."""
        reset(self)
        nn.init.zeros_(self.log_gamma)
        prior = self.prior()

        def loss(x: torch.Tensor) -> torch.Tensor:  # the negative ELBO, one v per code
            q = self.posterior(x)
            return -(self.likelihood(q.rsample()).log_prob(x) - kl_divergence(q, prior)).mean()

        final = adam_fit(self, u, self.config, loss, "two-stage VAE")
        return {"loss": final, "gamma": self.gamma, "epochs": self.config.epochs}

    @torch.no_grad()
    def iwae(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """The IWAE lower bound on log p(z) with k importance samples (k = 1: the ELBO): (N,)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise KlvaeError(f"k must be a positive integer; got {k!r}")
        return self._bound(self.standardise(self._codes(z)), k) - self.scale.log().sum()

    def _log_prob(self, u: torch.Tensor) -> torch.Tensor:
        return self._bound(u, self.config.iwae_k)

    def _bound(self, u: torch.Tensor, k: int) -> torch.Tensor:
        """log (1/k) sum_i p(u, v_i) / q(v_i|u), v_i ~ q(v|u): (N,), a running logsumexp over
        chunks of the k samples (from torch's random state)."""
        prior, out = self.prior(), []
        for rows in u.split(ROWS):
            q, total = self.posterior(rows), rows.new_full((len(rows),), -math.inf)
            for size in [K_CHUNK] * (k // K_CHUNK) + [k % K_CHUNK] * (k % K_CHUNK > 0):
                v = q.sample((size,))  # (size, n, D)
                w = self.likelihood(v).log_prob(rows) + prior.log_prob(v) - q.log_prob(v)  # (size, n)
                total = torch.logaddexp(total, w.logsumexp(0))
            out.append(total - math.log(k))
        return finite(torch.cat(out), "two-stage VAE")

    def _sample(self, n: int) -> torch.Tensor:
        p = self.likelihood(self.prior().sample((n,)))
        return finite(p.sample() if self.config.decoder_noise else p.mean, "two-stage VAE")
