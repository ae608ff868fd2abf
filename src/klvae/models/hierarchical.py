"""A hierarchical VAE with top-down inference: the Ladder VAE (Sønderby et al. 2016).

Latent layers z_1 .. z_L (``latent_dims``, bottom to top), generative model

    p(z_L) = N(0, I),   p(z_l | z_{l+1}) = N(mu_l(z_{l+1}), sigma_l(z_{l+1})^2),   p(x | z_1)

and inference along the same top-down path: a deterministic bottom-up pass d_1 = f_1(x),
d_{l+1} = f_{l+1}(d_l) gives Gaussian "evidence" N(mu^_l, sigma^_l^2) per layer; then
q(z_L | x) = N(mu^_L, sigma^_L^2) and, for l < L, q(z_l | x, z_{l+1}) is either

* Sønderby's precision-weighted merge of the evidence with p(z_l | z_{l+1}) (the default), or
* with ``residual``, NVAE's parameterisation (Vahdat & Kautz 2020): q's mean and log-scale are
  offsets of the prior's, [d mu, d s] = A_l d_l + B_l h_l with h_l the top-down features, so q = p
  where the offsets vanish.

Architecture (Burda et al. 2015's 2-layer setting, 784-200-200-100 | 100-100-50, is ``hidden
[200, 200]``, ``latent_dims [100, 50]``): f_1 is the VAE's encoder body with ``hidden`` widths,
p(x | z_1) the VAE's decoder from z_1; the nets between z_l and z_{l+1} (bottom-up f_{l+1} and
top-down mu_l, sigma_l) have ``len(hidden)`` layers of width ``latent_dims[l]``, the size of the
lower layer. No batch norm (Sønderby et al. use it). Measured on MNIST with Burda's tanh nets: the
merge lets the KL switch a layer's evidence off (its precision -> 0, where the evidence's gradient
vanishes with the merge weight) and trains slowly even with a KL warm-up; ``residual`` trains
faster, and ReLU helps both (see configs/burda-2layer-*.yaml).

The latent z of the library's interface is the concatenation (z_1, .., z_L): (N, sum(latent_dims)).
``encode(x)`` is the whole top-down posterior q(z_1..z_L | x), ``prior()`` the whole hierarchical
prior; both are distributions over that concatenation with ancestral ``rsample`` and the joint
``log_prob``, so every generic consumer (IWAE, mutual information, sampling) works unchanged. Their
``mean`` is the *mean path*: the top layer's mean, then each layer's mean given the layer above at
its mean (exact for the top layer; for the others the mean of z_l given that point) — the
posterior means of active units and the point that ``reconstruct`` and ``interpolate`` decode.
``decode(z)`` reads z_1, the first ``latent_dims[0]`` coordinates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn as nn
from torch.distributions import Distribution, Independent, constraints

from klvae import checks
from klvae.checks import doc
from klvae.distributions import diagonal_normal, scale_from_raw, standard_normal
from klvae.errors import KlvaeError
from klvae.kl import kl
from klvae.latents import LatentFamily
from klvae.models.parts import build_decoding, check_input, decode_with
from klvae.models.vae import VAEConfig
from klvae.nets import ACTIVATIONS, make_encoder, mlp
from klvae.bounds import ElboTerms

UNIT_RAW = math.log(math.e - 1)  # softplus(UNIT_RAW) = 1: a residual scale offset of 0 at raw 0
BALANCE_FLOOR = 0.01  # nats added to each layer's KL before balancing (NVAE's), so no weight is 0
PER_DIM_LIMIT = 1024  # latent units up to which the ELBO's terms carry each unit's KL (metrics.csv's kl_dim_i)


@dataclass
class HierarchicalElboTerms(ElboTerms):
    """ElboTerms plus the KL of each layer: ``kl_per_layer`` (N, L) in nats, bottom to top, summing
    to ``kl``; ``kl_per_dim`` is the concatenation over layers, (N, sum(latent_dims))."""

    kl_per_layer: torch.Tensor | None = None
    layer_dims: tuple[int, ...] = ()
    balance: bool = False  # NVAE's KL balancing while the KL weight is below 1 (see ``loss``)

    def loss(self, beta: float = 1.0, capacity: float | None = None, free_bits: float = 0.0,
             group: int = 1) -> torch.Tensor:
        """ElboTerms.loss; with ``balance`` and a KL weight ``beta`` < 1 (a warm-up), the KL in it is
        sum_l gamma_l KL_l with gamma_l proportional to the batch's mean KL of layer l per latent
        unit (plus 0.01 nats), normalised to mean 1 and carrying no gradient (Vahdat & Kautz 2020):
        a layer with little KL is pressed less, so layers do not collapse while the weight is low."""
        if not self.balance or beta >= 1 or capacity is not None or free_bits > 0:
            return super().loss(beta, capacity, free_bits, group)
        per_layer = self.kl_per_layer.mean(0)  # (L,)
        share = (per_layer.detach().abs() + BALANCE_FLOOR) / per_layer.new_tensor(self.layer_dims)
        gamma = share / share.mean()
        return -(self.recon.mean() - beta * (gamma * per_layer).sum())


class Step(NamedTuple):
    """One level of the top-down walk: z_l, q(z_l | x, above) (None for the prior, or a level that
    takes its prior's mode), p(z_l | above), and the state the levels below read (z_l itself for
    the Markov chain; a deterministic top-down feature for :mod:`klvae.models.deep_hierarchical`)."""

    level: int
    z: torch.Tensor
    q: Distribution | None
    p: Distribution
    state: Any


class _TopDown(Distribution):
    """A distribution over the concatenation (z_1, .., z_L) defined by the model's top-down walk:
    the posterior when ``bottom_up`` is given, else the prior. batch_shape: that of the evidence
    (N,) for the posterior, () for the prior; event_shape (sum(latent_dims),)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, model: "HierarchicalVAE", bottom_up: list[torch.Tensor] | None, like: torch.Tensor):
        self.model, self.bottom_up, self.like = model, bottom_up, like
        batch = bottom_up[0].shape[:-1] if bottom_up is not None else torch.Size()
        super().__init__(batch, torch.Size([model.latent_dim]), validate_args=False)

    def _layers(self, sample_shape=torch.Size(), z=None, at_mean=False) -> list:
        return list(self.model.walk(self.bottom_up, torch.Size(sample_shape), z, at_mean, self.like))

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """Ancestral, reparameterised: (*sample_shape, *batch_shape, D)."""
        return torch.cat([step.z for step in reversed(self._layers(sample_shape))], -1)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """The joint log-density, sum over layers; z: (..., D) broadcast against batch_shape."""
        return sum((s.p if s.q is None else s.q).log_prob(s.z) for s in self._layers(z=z))

    @property
    def mean(self) -> torch.Tensor:
        """The mean path (see the module's docstring), (*batch_shape, D)."""
        return torch.cat([step.z for step in reversed(self._layers(at_mean=True))], -1)


class HierarchicalFamily(LatentFamily):
    """The latent "family" of a hierarchical model, in the interface of ``klvae.latents``: the
    encoder output h (N, F) is the bottom-up evidence of every level, flattened and concatenated
    (``model.evidence_shapes``, bottom to top)."""

    def __init__(self, model: "TopDownHierarchy"):  # the model holds the sizes
        self.model = model
        self.dims = model.dims
        self.params, self.decoder_dim = sum(math.prod(s) for s in model.evidence_shapes), model.latent_dim

    def posterior(self, h: torch.Tensor) -> Distribution:
        return _TopDown(self.model, self.model.split_evidence(h), h)

    def prior(self, like: torch.Tensor) -> Distribution:
        return _TopDown(self.model, None, like)

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        return z


def _stack(width_in: int, widths: list[int], activation: str) -> nn.Sequential:
    """Linear layers in_width -> widths, each followed by the activation."""
    return nn.Sequential(mlp([width_in, *widths], activation), ACTIVATIONS[activation]())


def check_hierarchical(spec) -> None:
    """The options a hierarchical model needs; a one-line KlvaeError naming the fix."""
    dims = spec.latent_dims
    if not isinstance(dims, (list, tuple)) or not dims or any(
        not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in dims
    ):
        raise KlvaeError(f"latent_dims must list the latent sizes of --model hvae, bottom to top, like [100, 50]; "
                         f"got {dims!r}")
    if spec.changed("latent", "prior"):  # the layers are Gaussian, the prior hierarchical
        raise KlvaeError(f"model hvae has Gaussian layers and its own hierarchical prior; got latent {spec.latent!r}, "
                         f"prior {spec.prior!r}; use --latent gaussian --prior standard")
    checks.boolean(spec, "residual", "kl_balance")


@dataclass
class HVAEConfig(VAEConfig):
    """A hierarchical VAE's architecture: the VAE's options and its layers."""

    name: str = field(default="hvae", metadata=doc("the model", internal=True))
    latent_dims: list[int] = field(default_factory=list, metadata=doc(
        "latent layer sizes, bottom to top, e.g. 100 50; latent_dim becomes their sum"))
    residual: bool = field(default=False, metadata=doc(
        "q(z_l|x,z_l+1) as offsets of p(z_l|z_l+1) (NVAE), not the precision-weighted merge"))
    kl_balance: bool = field(default=False, metadata=doc(
        "while the KL weight is below 1, weigh each layer's KL by its share (NVAE)"))

    def validate(self) -> None:
        check_hierarchical(self)
        self.latent_dim = sum(self.latent_dims)  # the size of the concatenated latent (z_1, .., z_L)
        super().validate()


class TopDownHierarchy(nn.Module):
    """What every top-down hierarchy shares: the walk, the library's interface (encode, prior,
    decode), the ELBO's terms with the KL of each level, and the importance weights, some levels
    optionally at their conditional prior's mode (the bound L^{>k} of Havtorn et al. 2021).

    A subclass sets ``dims`` (the flat size of each level, bottom to top), ``evidence_shapes`` (the
    shape of each level's bottom-up evidence) and ``family``, and defines ``encoder_output(x)`` (the
    evidence, concatenated flat), ``_top_state``, ``_prior``, ``_posterior``, ``_descend`` and
    ``_decode_state`` (see :meth:`walk`)."""

    dims: tuple[int, ...]
    evidence_shapes: list[tuple[int, ...]]

    def split_evidence(self, h: torch.Tensor) -> list[torch.Tensor]:
        """The evidence of each level from the flat concatenation h: (..., F), bottom to top."""
        sizes = [math.prod(s) for s in self.evidence_shapes]
        return [part.reshape(*h.shape[:-1], *shape) for part, shape in zip(h.split(sizes, -1), self.evidence_shapes)]

    def walk(self, bottom_up: list[torch.Tensor] | None, sample_shape=torch.Size(), z: torch.Tensor | None = None,
             at_mean: bool = False, like: torch.Tensor | None = None, prior_below: int = 0):
        """The top-down walk from z_L to z_1: yields a :class:`Step` per level, with p_l = p(z_l | above)
        and q_l = q(z_l | x, above) (None without ``bottom_up``, each level's evidence). z_l is read
        from ``z`` (..., sum(dims)) when given, else the mean of q_l (or p_l) with ``at_mean``, else
        drawn, reparameterised (``sample_shape`` in front of the top level's draw). The levels below
        ``prior_below`` take the mode of their conditional prior and have no q."""
        parts = z.split(list(self.dims), -1) if z is not None else None
        like = like if like is not None else next(self.parameters())
        state, top = self._top_state(like), len(self.dims) - 1
        for level in reversed(range(len(self.dims))):
            p, context = self._prior(level, state, like)
            q = None if bottom_up is None or level < prior_below else self._posterior(level, bottom_up[level], p, context)
            source = p if q is None else q
            if parts is not None:
                z_level = parts[level]
            elif at_mean or level < prior_below:
                z_level = source.mean
            else:
                z_level = source.rsample(sample_shape if level == top else torch.Size())
            state = self._descend(level, state, z_level)
            yield Step(level, z_level, q, p, state)

    # --- the library's interface ------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z_1..z_L | x): batch_shape (N,), event_shape (sum(dims),)."""
        return self.family.posterior(self.encoder_output(x))

    def prior(self) -> Distribution:
        """p(z_1..z_L): batch_shape (), event_shape (sum(dims),); ``sample`` is ancestral."""
        return self.family.prior(next(self.parameters()))

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x | z) for z: (*S, sum(dims)), the levels concatenated bottom to top."""
        if z.shape[-1] != self.latent_dim:
            raise KlvaeError(f"z must have shape (..., {self.latent_dim}) (z_1..z_L concatenated); got {tuple(z.shape)}")
        *_, last = self.walk(None, z=z, like=z)
        return self._decode_state(last.state)

    def elbo_terms(self, x: torch.Tensor, kl_estimator: str = "auto", kl_samples: int = 1,
                   samples: int = 1) -> HierarchicalElboTerms:
        """The ELBO's terms, averaged over ``samples`` ancestral draws per data point: recon (N,),
        kl (N,) = sum over levels of KL(q(z_l | x, above) || p(z_l | above)) at the drawn levels above
        (each by :func:`klvae.kl.kl`: analytic for these Gaussians, or Monte Carlo with "mc"),
        kl_per_layer (N, L) and kl_per_dim (N, sum(dims)), bottom to top (None past
        :data:`PER_DIM_LIMIT` units: a convolutional hierarchy's thousands of columns)."""
        h = self.encoder_output(x)
        shape = torch.Size([samples]) if samples > 1 else torch.Size()
        kls, last = {}, None
        for step in self.walk(self.split_evidence(h), shape):
            kls[step.level] = kl(step.q, step.p, kl_estimator, kl_samples)
            last = step
        recon = self._decode_state(last.state).log_prob(x)  # (*S, N)
        layers = [kls[level] for level in range(len(self.dims))]  # the top level's KL has no sample dims: expand
        per_layer = torch.stack([k.value.expand(recon.shape) for k in layers], -1)  # (*S, N, L)
        per_dim = torch.cat([k.per_dim.expand(*recon.shape, -1) for k in layers], -1) if all(
            k.per_dim is not None for k in layers) and self.latent_dim <= PER_DIM_LIMIT else None
        if samples > 1:
            recon, per_layer = recon.mean(0), per_layer.mean(0)
            per_dim = per_dim.mean(0) if per_dim is not None else None
        method = "mc" if any(k.method == "mc" for k in layers) else "analytic"
        return HierarchicalElboTerms(recon, per_layer.sum(-1), per_dim, method, self.family.posterior(h),
                                     per_layer, self.dims, self.balance)

    def log_weights(self, x: torch.Tensor, k: int, prior_below: int = 0) -> torch.Tensor:
        """log w = log p(x | z) + sum_l [log p(z_l | above) - log q(z_l | x, above)] for K ancestral
        draws from q: (K, N). With ``prior_below`` = k, the lowest k levels take the mode of their
        conditional prior and drop their terms: the weights of Havtorn et al.'s bound L^{>k}."""
        if not 0 <= prior_below < len(self.dims):
            raise KlvaeError(f"the levels at their prior's mode must number 0 to {len(self.dims) - 1} (this model has "
                             f"{len(self.dims)} latent layers); got {prior_below}")
        log_w, last = 0.0, None
        for step in self.walk(self.split_evidence(self.encoder_output(x)), torch.Size([k]), prior_below=prior_below):
            if step.q is not None:
                log_w = log_w + step.p.log_prob(step.z) - step.q.log_prob(step.z)
            last = step
        return log_w + self._decode_state(last.state).log_prob(x)


class HierarchicalVAE(TopDownHierarchy):
    """The Markov chain p(z_L) p(z_{L-1} | z_L) .. p(x | z_1) of the module's docstring.
    x: (N, *event_shape) -> q(z_1..z_L | x) with batch (N,); z: (*S, sum(latent_dims)) -> p(x | z_1)."""

    def __init__(self, spec):
        super().__init__()
        self.spec, self.event_shape = spec, tuple(spec.event_shape)
        self.dims = tuple(spec.latent_dims)
        self.latent_dim = sum(self.dims)
        self.evidence_shapes = [(2 * d,) for d in self.dims]
        self.residual, self.balance, self.min_scale = spec.residual, spec.kl_balance, spec.min_scale
        act, depth, hidden = spec.activation, len(spec.hidden), list(spec.hidden)
        self.encoder = nn.Sequential(make_encoder(spec.net, self.event_shape, hidden[:-1], hidden[-1], act),
                                     ACTIVATIONS[act]())  # d_1 = f_1(x): (N, hidden[-1])
        widths = [hidden[-1], *self.dims[:-1]]  # the width of d_l
        self.up = nn.ModuleList([_stack(widths[l - 1], [self.dims[l - 1]] * depth, act) for l in range(1, len(self.dims))])
        self.evidence = nn.ModuleList([nn.Linear(w, 2 * d) for w, d in zip(widths, self.dims)])
        self.down = nn.ModuleList([_stack(self.dims[l + 1], [self.dims[l]] * depth, act) for l in range(len(self.dims) - 1)])
        self.conditional = nn.ModuleList([nn.Linear(d, 2 * d) for d in self.dims[:-1]])  # p(z_l | z_{l+1})
        self.offsets = nn.ModuleList([nn.Linear(d, 2 * d, bias=False) for d in self.dims[:-1]]) if self.residual else None
        self.decoder, self.likelihood, self.out_shape = build_decoding(spec, self.dims[0])
        self.family = HierarchicalFamily(self)

    def encoder_output(self, x: torch.Tensor) -> torch.Tensor:
        """Each layer's evidence [mu^_l, raw sigma^_l] (or, with ``residual``, its part A_l d_l of q's
        offsets) concatenated bottom to top: (N, 2 sum(latent_dims))."""
        check_input(x, self.event_shape)
        d = self.encoder(x)
        evidence = [self.evidence[0](d)]
        for up, head in zip(self.up, self.evidence[1:]):
            d = up(d)
            evidence.append(head(d))
        return torch.cat(evidence, -1)

    def _top_state(self, like: torch.Tensor) -> None:
        return None

    def _prior(self, level: int, z_above: torch.Tensor | None, like: torch.Tensor) -> tuple[Independent, torch.Tensor | None]:
        """p(z_l | z_{l+1}) for z_above: (..., D_{l+1}) (the top: N(0, I)), and the top-down part
        B_l h_l of q's offsets."""
        if level == len(self.dims) - 1:
            return standard_normal(self.dims[-1], like), None
        h = self.down[level](z_above)
        loc, raw = self.conditional[level](h).chunk(2, -1)
        return diagonal_normal(loc, scale_from_raw(raw, self.min_scale)), (
            self.offsets[level](h) if self.residual else None)

    def _posterior(self, level: int, evidence: torch.Tensor, p: Independent, top_down: torch.Tensor | None) -> Independent:
        """q(z_l | x, z_{l+1}) from the layer's evidence and p(z_l | z_{l+1}); shapes broadcast."""
        if level == len(self.dims) - 1:
            loc, raw = evidence.chunk(2, -1)
            return diagonal_normal(loc, scale_from_raw(raw, self.min_scale))
        prior_loc, prior_scale = p.base_dist.loc, p.base_dist.scale
        if self.residual:  # NVAE: q's mean and log-scale as offsets of p's
            d_loc, d_raw = (evidence + top_down).chunk(2, -1)
            return diagonal_normal(prior_loc + d_loc, prior_scale * scale_from_raw(d_raw + UNIT_RAW, self.min_scale))
        loc, raw = evidence.chunk(2, -1)
        scale = scale_from_raw(raw, self.min_scale)
        # precision-weighted merge: 1/s_q^2 = 1/s^2 + 1/s_p^2, mu_q = w mu + (1 - w) mu_p, w = s^-2 / (s^-2 + s_p^-2),
        # in the stable form w = sigmoid(2 (log s_p - log s)), s_q = s s_p / sqrt(s^2 + s_p^2)
        w = torch.sigmoid(2 * (prior_scale.log() - scale.log()))
        return diagonal_normal(w * loc + (1 - w) * prior_loc, scale * prior_scale * torch.rsqrt(scale**2 + prior_scale**2))

    def _descend(self, level: int, state, z_level: torch.Tensor) -> torch.Tensor:
        return z_level  # the chain: the level below reads z_l alone

    def _decode_state(self, z1: torch.Tensor) -> Distribution:
        return decode_with(self, z1)
