"""Training objectives, one registry entry each: the (beta-)ELBO, the IWAE bound, beta-TCVAE and
FactorVAE.

Every objective is a function with one signature,

    objective(ctx: ObjectiveContext, model, x: (N, *event), condition: (N,) | None, step: int) -> Breakdown

and returns a :class:`Breakdown`: the scalar to minimise and the per-point terms (nats) that
training logs. The capabilities of an entry tell the rest of the library what it needs and gives
(see :data:`CAPABILITIES`); nothing outside this module compares an objective's name.
:func:`register_objective` adds one from a user's own code.

The maths lives below: the bounds in :mod:`klvae.bounds`, the total-correlation pieces in
:mod:`klvae.total_correlation` (both re-exported here).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.distributions import Distribution

from klvae.bounds import ElboTerms, IwaeTerms, elbo, given, iwae_bound, iwae_objective, log_weights
from klvae.errors import KlvaeError
from klvae.kl import kl
from klvae.registry import Registry
from klvae.total_correlation import Discriminator, TCTerms, permute_dims, tc_decomposition

__all__ = ["CAPABILITIES", "OBJECTIVES", "Breakdown", "Discriminator", "ElboTerms", "IwaeTerms", "ObjectiveContext",
           "TCTerms", "elbo", "given", "iwae_bound", "iwae_objective", "log_weights", "objective_column",
           "objective_of", "permute_dims", "register_objective", "tc_decomposition"]

# capability: (default, meaning); every entry carries all of them
CAPABILITIES: dict[str, tuple[Any, str]] = {
    "kl_weighted": (False, "the loss weighs the KL by the KL schedule and floors it by free bits"),
    "beta_weighs": (None, "what --beta weighs: 'kl', 'tc' (total correlation) or None (beta must stay 1)"),
    "needs_factorised_posterior": (False, "needs q(z|x) Independent over the D latent dims (--latent gaussian)"),
    "monitor": ("val_elbo", "the metrics.csv column that picks the best epoch and early-stops"),
    "train_extra": (None, "the metrics.csv column of the objective's own per-point extra, e.g. train_iwae"),
    "critic": (None, "model -> a critic nn.Module trained by a second optimiser on Breakdown.critic_loss"),
    "allows_dreg": (False, "accepts --dreg (the doubly reparameterised encoder gradient)"),
    "conditional": (False, "trains a conditional model (passes the class labels on)"),
}

OBJECTIVES = Registry("objective", "--objective")


@dataclass
class Breakdown:
    """What an objective returns for a batch of N points; every per-point term in nats.

    ``extras`` holds named per-point extras (N,), e.g. ``"iwae"`` (the K-sample bound) or ``"tc"``
    (the total correlation); the metrics columns ``train_<name>`` / ``val_<name>`` that an entry's
    ``train_extra`` / ``monitor`` name are read from them."""

    loss: torch.Tensor  # () the scalar the optimiser minimises
    elbo: torch.Tensor  # (N,) recon - kl, the true bound (beta = 1)
    recon: torch.Tensor  # (N,) E_q[log p(x|z)]: minus the distortion
    kl: torch.Tensor  # (N,) KL(q(z|x) || p(z)): the rate
    kl_per_dim: torch.Tensor | None = None  # (N, D) when the KL factorises over latent dims
    kl_per_layer: torch.Tensor | None = None  # (N, L) for a model with L latent layers
    q: Distribution | None = None  # q(z|x): its mean gives active units, its family other diagnostics
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    critic_loss: torch.Tensor | None = None  # () the critic's own loss (objectives with a critic)

    def __post_init__(self) -> None:
        n = self.elbo.shape
        shapes = {"recon": self.recon.shape, "kl": self.kl.shape, **{k: v.shape for k, v in self.extras.items()}}
        if len(n) != 1 or self.loss.dim() != 0 or any(s != n for s in shapes.values()):
            raise KlvaeError(f"an objective must return a 0-dim loss and per-point terms of shape (N,); got loss "
                             f"{tuple(self.loss.shape)}, elbo {tuple(n)}, " + ", ".join(f"{k} {tuple(s)}" for k, s in shapes.items()))

    @property
    def distortion(self) -> torch.Tensor:
        """-E_q[log p(x|z)], (N,) nats."""
        return -self.recon

    @property
    def rate(self) -> torch.Tensor:
        return self.kl

    def value(self, name: str) -> torch.Tensor:
        """The per-point value a metrics column ``<stage>_<name>`` reads: ``elbo``, ``recon``, ``kl``
        or an extra."""
        if name in ("elbo", "recon", "kl"):
            return getattr(self, name)
        if name not in self.extras:
            raise KlvaeError(f"the objective gives no {name!r}; its extras are: {', '.join(self.extras) or 'none'}")
        return self.extras[name]

    @classmethod
    def of(cls, terms: ElboTerms, loss: torch.Tensor, critic_loss: torch.Tensor | None = None,
           **extras: torch.Tensor) -> "Breakdown":
        """From the ELBO terms of the batch (hierarchical models add ``kl_per_layer``)."""
        return cls(loss, terms.elbo, terms.recon, terms.kl, terms.kl_per_dim, getattr(terms, "kl_per_layer", None),
                   terms.q, extras, critic_loss)


@dataclass
class ObjectiveContext:
    """What an objective may read besides the model and the batch: the training configuration
    (flat attributes: beta, k, dreg, kl_estimator, kl_samples, free_bits_group, ...), the KL
    schedule, the size N of the training set, the free-bits floor now in force (nats; raised by
    --on-collapse free-bits) and the critic of an objective that has one."""

    config: Any
    schedule: Any  # klvae.schedules.KLSchedule
    dataset_size: int = 1
    free_bits: float = 0.0
    critic: torch.nn.Module | None = None


Objective = Callable[[ObjectiveContext, Any, torch.Tensor, "torch.Tensor | None", int], Breakdown]


def register_objective(name: str, description: str, objective: Objective, *, replace: bool = False,
                       **capabilities: Any) -> Objective:
    """Add an objective; capabilities not given take their defaults (see :data:`CAPABILITIES`)."""
    monitor, extra = capabilities.get("monitor", "val_elbo"), capabilities.get("train_extra")
    if not str(monitor).startswith("val_") or (extra is not None and not str(extra).startswith("train_")):
        raise KlvaeError(f"objective {name!r}: monitor must name a val_* column and train_extra a train_* column "
                         f"(or None); got {monitor!r}, {extra!r}")
    caps = {k: default for k, (default, _) in CAPABILITIES.items()} | capabilities
    return OBJECTIVES.register(name, description, objective, replace=replace, **caps)


def objective_of(config):
    """The registry entry of the objective a training configuration names: ``config.objective``,
    a name or a section holding it as ``name``."""
    chosen = config.objective
    return OBJECTIVES[getattr(chosen, "name", chosen)]


def objective_column(config) -> str:
    """The metrics.csv column that picks the best epoch and early-stops: the validation value of
    the trained objective (val_elbo, or val_iwae with the training K)."""
    return objective_of(config).get("monitor", "val_elbo")


def _elbo(ctx: ObjectiveContext, model, x: torch.Tensor, condition, step: int) -> Breakdown:
    cfg, schedule = ctx.config, ctx.schedule
    terms = elbo(model, x, cfg.kl_estimator, cfg.kl_samples, cfg.k, condition)
    loss = terms.loss(schedule.weight(step), schedule.capacity(step), ctx.free_bits, cfg.free_bits_group)
    return Breakdown.of(terms, loss)


def _iwae(ctx: ObjectiveContext, model, x: torch.Tensor, condition, step: int) -> Breakdown:
    cfg = ctx.config
    out = iwae_objective(model, x, cfg.k, cfg.dreg, cfg.kl_estimator, cfg.kl_samples)
    first = out.first
    if not model.training and hasattr(model, "elbo_terms"):  # in evaluation: the model's own terms, per layer
        first = elbo(model, x, cfg.kl_estimator, cfg.kl_samples)
    return Breakdown.of(first, out.loss(), iwae=out.bound)


def _tcvae(ctx: ObjectiveContext, model, x: torch.Tensor, condition, step: int) -> Breakdown:
    """beta-TCVAE: -(recon - MI - beta * TC - dimension-wise KL), batch mean."""
    q = model.encode(x)
    z = q.rsample()
    recon = model.decode(z).log_prob(x)
    prior = model.prior()
    parts = tc_decomposition(q, z, prior, ctx.dataset_size)
    k = kl(q, prior)
    loss = -(recon - parts.mi - ctx.config.beta * parts.tc - parts.dim_kl).mean()
    return Breakdown.of(ElboTerms(recon, k.value, k.per_dim, k.method, q), loss, tc=parts.tc)


def _factorvae(ctx: ObjectiveContext, model, x: torch.Tensor, condition, step: int) -> Breakdown:
    """FactorVAE: -(ELBO - beta * TC) with TC from the critic; the critic learns to tell z from
    its dimension-wise permutation (its loss only while gradients are on)."""
    q = model.encode(x)
    z = q.rsample()
    recon = model.decode(z).log_prob(x)
    k = kl(q, model.prior())
    tc = ctx.critic.total_correlation(z)
    loss = -(recon - k.value - ctx.config.beta * tc).mean()
    critic_loss = ctx.critic.loss(z) if torch.is_grad_enabled() else None
    return Breakdown.of(ElboTerms(recon, k.value, k.per_dim, k.method, q), loss, critic_loss, tc=tc)


def _factorvae_critic(model) -> Discriminator:
    return Discriminator(model.latent_dim)


register_objective("elbo", "the beta-ELBO: recon - beta * KL, KL weighted by the schedule, floored by free bits",
                   _elbo, kl_weighted=True, beta_weighs="kl", conditional=True)
register_objective("iwae", "the K-sample importance-weighted bound (Burda et al. 2015)", _iwae,
                   monitor="val_iwae", train_extra="train_iwae", allows_dreg=True)
register_objective("tcvae", "beta-TCVAE: beta weighs the total correlation of the KL's split (Chen et al. 2018)",
                   _tcvae, beta_weighs="tc", needs_factorised_posterior=True, train_extra="train_tc")
register_objective("factorvae", "FactorVAE: beta weighs a critic's total correlation (Kim & Mnih 2018)",
                   _factorvae, beta_weighs="tc", needs_factorised_posterior=True, train_extra="train_tc",
                   critic=_factorvae_critic)
