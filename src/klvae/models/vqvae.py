"""VQ-VAE (van den Oord et al. 2017) and its soft-to-hard relaxation.

The encoder maps x to ``positions`` code positions of dimension D = ``latent_dim``, z_e: (N, P, D);
each position takes one of K = ``codes`` codebook vectors e_1..e_K. The latent of the library's
interface is the code choice as one-hot vectors z: (N, P, K); ``decode(z)`` decodes z @ codebook,
so a relaxed (soft) one-hot decodes a convex mixture of codes and a path between two one-hots a
blend. q(z|x) is a categorical per position (``Independent(OneHotCategorical, 1)``, batch (N,),
event (P, K)); its ``mean`` is the code probabilities, so "active units" count (position, code)
pairs whose use varies with x.

``quantizer``:

* ``vq-ema`` (default): the nearest code, a straight-through gradient to the encoder, the commitment
  loss ``commitment * ||z_e - sg(e)||^2``, and the codebook moved by exponential moving averages of
  its assigned encoder outputs (decay 0.99, Laplace-smoothed counts; the paper's appendix).
* ``vq``: the same, the codebook learnt by the codebook loss ``||sg(z_e) - e||^2`` instead.
* ``gumbel``: q(z|x) has logits -||z_e - e_k||^2, so its mode is VQ's nearest code. Training
  draws relaxed one-hot samples (Gumbel-softmax; Jang et al. 2017, Maddison et al. 2017) at a
  temperature annealed exponentially from ``temperature`` to 0.1 over ``temperature_steps``
  training steps, then hard ones with a straight-through gradient: the posterior hardens into VQ.
  Its loss is the ELBO with KL(q || uniform categorical), weighted as the KL schedule says.

Squared distances are summed over the P x D coordinates of a data point, as the reconstruction is
summed over its pixels (nats per data point). The codebook starts on encoder outputs of the first
training batch; every 20 training steps, the codes that got less than 3% of a uniform share of
the assignments since the last check restart on random encoder outputs of the batch (the restart
of Dhariwal et al. 2020). The steps are counted by the model in training mode, in a buffer
saved with the weights.

The prior p(z) is a categorical per position with the codes' frequencies over training (the same
moving average of the counts; uniform at the start) — the baseline prior over codes, refitted on
any data by :meth:`VQVAE.fit_prior`. The ELBO's KL, the IWAE weights and ``sample`` use it; for a
hard posterior KL(q || p) = -log p(codes).

The quantizer's pieces (the terms, perplexity, the EMA and restart updates, the code family) live
in :mod:`klvae.models.quantizers` and are re-exported here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Distribution, Independent, OneHotCategorical

from klvae import checks
from klvae.checks import doc
from klvae.errors import KlvaeError
from klvae.kl import kl
from klvae.models.parts import build_decoding, check_input, decode_with
from klvae.models.quantizers import (
    DEAD_SHARE, EMA_DECAY, EMA_EPSILON, FINAL_TEMPERATURE, QUANTIZERS, RESTART_EVERY, CodeFamily, VQElboTerms,
    code_perplexity, count_codes, ema_codebook, restart_points, take_dead_codes,
)
from klvae.models.vae import VAEConfig
from klvae.nets import make_encoder

__all__ = ["DEAD_SHARE", "EMA_DECAY", "EMA_EPSILON", "FINAL_TEMPERATURE", "PRIOR_FLOOR", "QUANTIZERS", "RESTART_EVERY",
           "VQVAE", "CodeFamily", "VQElboTerms", "VQVAEConfig", "check_vqvae", "code_perplexity"]

PRIOR_FLOOR = 1e-2  # counts added to every code of the prior, so log p stays finite


def check_vqvae(spec) -> None:
    """The options of --model vqvae; a one-line KlvaeError naming the fix."""
    for name, least in (("codes", 2), ("positions", 1), ("temperature_steps", 1)):
        value = getattr(spec, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise KlvaeError(f"{name} must be an integer >= {least}; got {value!r}")
    if not spec.commitment >= 0 or not spec.temperature > 0 or math.isinf(spec.commitment + spec.temperature):
        raise KlvaeError(f"commitment must be >= 0 and temperature > 0 (finite); got {spec.commitment}, {spec.temperature}")
    if spec.changed("latent", "prior"):  # the latent is the code choice, the prior over codes
        raise KlvaeError(f"model vqvae has its own categorical latent and prior over codes; got latent {spec.latent!r}, "
                         f"prior {spec.prior!r}; drop --latent and --prior")


@dataclass
class VQVAEConfig(VAEConfig):
    """A VQ-VAE's architecture: the VAE's network options and its codebook."""

    name: str = field(default="vqvae", metadata=doc("the model", internal=True))
    codes: int = field(default=512, metadata=doc("codebook size K; the code dimension is --latent-dim"))
    positions: int = field(default=16, metadata=doc(
        "codes per data point (the encoder outputs positions x latent_dim values)"))
    commitment: float = field(default=0.25, metadata=doc(
        "weight of the commitment loss (van den Oord et al.'s beta; --beta weighs the KL)"))
    quantizer: str = field(default="vq-ema", metadata=doc(
        "vq-ema: EMA codebook; vq: codebook loss; gumbel: relaxed, hardening into VQ", choices=QUANTIZERS))
    temperature: float = field(default=1.0, metadata=doc(
        "gumbel: the starting temperature, annealed exponentially to 0.1 over --temperature-steps"))
    temperature_steps: int = field(default=10_000, metadata=doc(
        "gumbel: training steps of the annealing; then hard straight-through samples"))

    def validate(self) -> None:
        super().validate()  # the quantizer among its declared choices, the networks' options
        checks.number(self, "commitment", "temperature")
        check_vqvae(self)


class VQVAE(nn.Module):
    """x: (N, *event_shape) -> q(z|x), a categorical over K codes at each of P positions;
    z: (*S, P, K) one-hot (or relaxed) -> p(x | z @ codebook) with batch (*S)."""

    code_perplexity = staticmethod(code_perplexity)  # probs (..., K) -> exp(H) of code usage (val_perplexity)

    def __init__(self, spec):
        super().__init__()
        self.spec, self.event_shape = spec, tuple(spec.event_shape)
        self.latent_dim, self.codes, self.positions = spec.latent_dim, spec.codes, spec.positions
        self.quantizer = spec.quantizer
        flat = self.positions * self.latent_dim
        self.encoder = make_encoder(spec.net, self.event_shape, spec.hidden, flat, spec.activation)
        self.decoder, self.likelihood, self.out_shape = build_decoding(spec, flat)
        codebook = torch.randn(self.codes, self.latent_dim)
        if self.quantizer == "vq-ema":
            self.register_buffer("codebook", codebook)
            self.register_buffer("cluster_size", torch.ones(self.codes))
            self.register_buffer("embed_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("code_counts", torch.ones(self.positions, self.codes))  # the prior's moving counts
        self.register_buffer("recent_counts", torch.zeros(self.codes))  # assignments since the last restart check
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # training steps seen
        self.family = CodeFamily()

    # --- the library's interface ------------------------------------------------------------------
    def encoder_output(self, x: torch.Tensor) -> torch.Tensor:
        """z_e: (N, P, D)."""
        check_input(x, self.event_shape)
        return self.encoder(x).view(len(x), self.positions, self.latent_dim)

    def code_logits(self, z_e: torch.Tensor) -> torch.Tensor:
        """-||z_e - e_k||^2: (N, P, K)."""
        return -(z_e.pow(2).sum(-1, keepdim=True) - 2 * z_e @ self.codebook.t() + self.codebook.pow(2).sum(-1))

    def posterior(self, logits: torch.Tensor) -> Distribution:
        """q(z|x) from the code logits: the nearest code for VQ, the categorical for gumbel."""
        if self.quantizer == "gumbel":
            return Independent(OneHotCategorical(logits=logits, validate_args=False), 1, validate_args=False)
        nearest = F.one_hot(logits.argmax(-1), self.codes).to(logits.dtype)
        return Independent(OneHotCategorical(probs=nearest, validate_args=False), 1, validate_args=False)

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z|x): batch_shape (N,), event_shape (P, K)."""
        return self.posterior(self.code_logits(self.encoder_output(x)))

    def prior(self) -> Distribution:
        """p(z): a categorical per position with the codes' moving frequencies; batch (), event (P, K)."""
        probs = self.code_counts + PRIOR_FLOOR
        return Independent(OneHotCategorical(probs=probs / probs.sum(-1, keepdim=True), validate_args=False), 1,
                           validate_args=False)

    def uniform_prior(self) -> Distribution:
        logits = torch.zeros_like(self.code_counts)
        return Independent(OneHotCategorical(logits=logits, validate_args=False), 1, validate_args=False)

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x | z @ codebook) for one-hot (or relaxed) codes z: (*S, P, K)."""
        if tuple(z.shape[-2:]) != (self.positions, self.codes):
            raise KlvaeError(f"z must hold one-hot codes of shape (..., {self.positions}, {self.codes}); got {tuple(z.shape)}")
        return self._decode_vectors(z @ self.codebook)

    def _decode_vectors(self, z_q: torch.Tensor) -> Distribution:
        """p(x | z_q) for code vectors z_q: (*S, P, D)."""
        return decode_with(self, z_q.reshape(*z_q.shape[:-2], self.positions * self.latent_dim))

    @torch.no_grad()
    def fit_prior(self, x: torch.Tensor, batch_size: int = 1000) -> "VQVAE":
        """Refit the prior to the codes of x: (N, *event): their counts per position."""
        counts = torch.zeros_like(self.code_counts)
        for start in range(0, len(x), batch_size):
            counts += self.encode(x[start:start + batch_size].to(counts.device)).mean.sum(0)
        self.code_counts.copy_(counts)
        return self

    # --- the objective ----------------------------------------------------------------------------
    def temperature(self) -> float:
        """gumbel: temperature ** (1 - s) * 0.1 ** s at s = step / temperature_steps (capped at 1)."""
        s = min(int(self.steps) / self.spec.temperature_steps, 1.0)
        return self.spec.temperature ** (1 - s) * FINAL_TEMPERATURE ** s

    def elbo_terms(self, x: torch.Tensor, kl_estimator: str = "auto", kl_samples: int = 1,
                   samples: int = 1) -> VQElboTerms:
        """recon (N,) log p(x | z); kl (N,) = KL(q || p) per position summed; in training mode the
        straight-through (VQ) or relaxed (gumbel) sample and the quantizer's updates, else the
        nearest code (VQ) or ``samples`` hard draws from q (gumbel)."""
        z_e = self.encoder_output(x)
        learning = self.training and torch.is_grad_enabled()
        if learning:
            self._start_or_restart(z_e.detach())
        logits = self.code_logits(z_e)
        q = self.posterior(logits)
        hard = q.base_dist.probs if self.quantizer != "gumbel" else None
        penalty = loss_kl = temperature = None
        if self.quantizer != "gumbel":
            z_q = hard @ self.codebook  # (N, P, D)
            penalty = self.spec.commitment * (z_e - z_q.detach()).pow(2).sum((-2, -1))
            if self.quantizer == "vq":
                penalty = penalty + (z_e.detach() - z_q).pow(2).sum((-2, -1))
            recon = self._decode_vectors(z_e + (z_q - z_e).detach()).log_prob(x)  # straight-through
        elif learning:
            temperature = self.temperature()
            z = F.gumbel_softmax(logits, tau=temperature, hard=int(self.steps) >= self.spec.temperature_steps)
            recon = self._decode_vectors(z @ self.codebook).log_prob(x)
            loss_kl = kl(q, self.uniform_prior()).value
        else:
            z = q.sample(torch.Size([samples]) if samples > 1 else torch.Size())
            recon = self._decode_vectors(z @ self.codebook).log_prob(x)
            recon = recon.mean(0) if samples > 1 else recon
        usage = q.base_dist.probs if hard is None else hard
        if learning:
            self._update(z_e.detach(), F.one_hot(logits.argmax(-1), self.codes).to(z_e.dtype))
        k = kl(q, self.prior(), kl_estimator, kl_samples)
        return VQElboTerms(recon, k.value, k.per_dim, k.method, q, penalty, loss_kl, code_perplexity(usage.detach()),
                           temperature)

    def log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x|z) + log p(z) - log q(z|x) for K codes z ~ q(z|x) (all the nearest one for VQ): (K, N)."""
        q = self.encode(x)
        z = q.sample((k,))  # (K, N, P, K_codes)
        return self.decode(z).log_prob(x) + self.prior().log_prob(z) - q.log_prob(z)

    # --- the quantizer's own updates (training mode) -----------------------------------------------
    @torch.no_grad()
    def _update(self, z_e: torch.Tensor, one_hot: torch.Tensor) -> None:
        """The moving code counts (the prior), the EMA codebook, the step count."""
        if not torch.isfinite(z_e).all():
            return
        count_codes(self.code_counts, self.recent_counts, one_hot)
        if self.quantizer == "vq-ema":
            ema_codebook(self.codebook, self.cluster_size, self.embed_sum, z_e, one_hot)
        self.steps += 1

    @torch.no_grad()
    def _start_or_restart(self, z_e: torch.Tensor) -> None:
        """At step 0 every code, every RESTART_EVERY steps the dead ones, onto random rows of z_e."""
        step = int(self.steps)
        if step % RESTART_EVERY or not torch.isfinite(z_e).all():
            return
        dead = take_dead_codes(self.recent_counts, every=step == 0)
        if not dead.any():
            return
        picked = restart_points(z_e, int(dead.sum()))
        self.codebook[dead] = picked
        if self.quantizer == "vq-ema":
            self.embed_sum[dead] = picked
            self.cluster_size[dead] = 1.0
        self.code_counts[:, dead] = self.code_counts.sum(-1, keepdim=True) / self.codes  # a uniform share
