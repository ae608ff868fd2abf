"""The VAE: encoder x -> q(z|x), prior p(z), decoder z -> p(x|z), all distributions.

The latent family, the prior, the network body, the decoder and the likelihood are registry
entries named in the model's config (:class:`VAEConfig`); nothing else in the library depends on
which they are. Any of the encoder, decoder, prior and likelihood can instead be a module passed
from Python (``VAE(config, encoder=..., decoder=...)``; the config then records "custom").

With ``condition="label"`` the same model is a conditional VAE (klvae.models.conditional):
``encode``, ``decode`` and ``prior`` take the class labels as ``condition`` and give q(z|x, y),
p(x|z, y) and p(z|y).
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

import torch
import torch.nn as nn
from torch.distributions import Distribution

from klvae import checks
from klvae.checks import doc
from klvae.errors import KlvaeError
from klvae.latents import LATENTS, make_latent
from klvae.likelihoods import LIKELIHOODS
from klvae.models.conditional import CONDITIONS, ClassGaussianPrior, ConditionalEncoder, check_condition, join, one_hot
from klvae.models.parts import CUSTOM, build_decoding, check_input, check_parts, decode_with
from klvae.nets import ACTIVATIONS, DECODERS, NETS, check_decoder, make_encoder, pick_net
from klvae.priors import PRIORS, check_prior


@dataclass
class VAEConfig:
    """The architecture of a VAE: what ``model.json`` stores next to the weights. ``event_shape``
    and ``num_classes`` come from the data; the rest are options. Validated on construction."""

    event_shape: list[int] | None = field(default=None, metadata=doc("the data's shape (from the data)", internal=True))
    latent_dim: int = field(default=16, metadata=doc("latent dimensions D"))
    hidden: list[int] = field(default_factory=lambda: [256, 256], metadata=doc(
        "hidden layer widths of the encoder (the decoder mirrors them), e.g. 512 512"))
    net: str = field(default="auto", metadata=doc("network body; auto: conv for square images of 28, 32, 64 or 128 px, else mlp",
                                                  registry=NETS, extra=("auto",), custom=True))
    activation: str = field(default="relu", metadata=doc("activation of the hidden layers", choices=tuple(ACTIVATIONS)))
    likelihood: str = field(default="auto", metadata=doc(
        "p(x|z); auto: bernoulli for binary or binarised data, else gaussian", registry=LIKELIHOODS, extra=("auto",),
        custom=True))
    decoder_scale: float | None = field(default=None, metadata=doc(
        "gaussian likelihood: a fixed scale; unset: learned per data element"))
    min_scale: float = field(default=1e-4, metadata=doc(
        "floor added to softplus scales; keeps log q finite as a scale goes to 0"))
    mixture_components: int = field(default=10, metadata=doc(
        "logistic-mixture likelihood: mixture components per pixel (10 in PixelCNN++ and VDVAE)"))
    loss_scale: float | None = field(default=None, metadata=doc(
        "ssim / ms-ssim / watson losses: the weight of the distance in the objective; unset: the loss's default"))
    latent: str = field(default="gaussian", metadata=doc("latent family of q(z|x) and its prior", registry=LATENTS))
    prior: str = field(default="standard", metadata=doc("p(z): the family's own, or a learned one", registry=PRIORS,
                                                        custom=True))
    prior_components: int = field(default=10, metadata=doc("mog: mixture components; vamp: pseudo-inputs"))
    sparsity: float = field(default=0.5, metadata=doc("spike-slab prior: probability that a latent dimension is on"))
    name: str = field(default="vae", metadata=doc("the model (see `klvae models`)", internal=True))
    decoder: str = field(default="factorised", metadata=doc("how p(x|z) is built from z", registry=DECODERS))
    condition: str = field(default="none", metadata=doc(
        "label: encoder, decoder (and with --conditional-prior the prior) see the one-hot class label; attributes: "
        "they see the binary attributes (CelebA's 40)", choices=tuple(CONDITIONS)))
    num_classes: int = field(default=0, metadata=doc("classes of the condition (from the data)", internal=True))
    conditional_prior: bool = field(default=False, metadata=doc(
        "with --condition label: a learned Gaussian p(z|y) per class instead of the standard p(z)"))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every option of the model, once; those that depend on the data when it is known."""
        checks.positive_int(self, "latent_dim", "prior_components", "mixture_components")
        checks.non_negative_int(self, "num_classes")
        checks.int_list(self, "hidden", "positive layer widths like [256, 256]")
        checks.declared_choices(self)
        checks.within(self, "min_scale", 0, 1)
        checks.within(self, "sparsity", 0, 1)
        checks.boolean(self, "conditional_prior")
        if self.decoder_scale is not None:
            checks.number(self, "decoder_scale")
            if self.decoder_scale <= 0:
                raise KlvaeError(f"decoder_scale must be > 0 (or null for a learned scale); got {self.decoder_scale}")
        if self.loss_scale is not None:
            checks.number(self, "loss_scale")
            if self.loss_scale <= 0:
                raise KlvaeError(f"loss_scale must be > 0 (or null for the loss's default); got {self.loss_scale}")
        if self.prior != CUSTOM:
            check_prior(self.prior, self.latent)
        check_condition(self.condition, self.conditional_prior, self.latent,
                        "standard" if self.prior == CUSTOM else self.prior, self.num_classes or None)
        if self.event_shape is not None:  # the data are known: resolve what "auto" left open
            self.event_shape = [int(n) for n in self.event_shape]
            self.net = pick_net(tuple(self.event_shape), self.net)
            self.likelihood = "bernoulli" if self.likelihood == "auto" else self.likelihood
            if self.likelihood != CUSTOM:
                check_decoder(self.decoder, self.likelihood, self.event_shape)

    def to_dict(self) -> dict:
        return asdict(self)

    def changed(self, *names: str) -> list[str]:
        """Those of ``names`` whose value is not the field's default (options a user set)."""
        defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(VAEConfig)}
        return [n for n in names if getattr(self, n) != defaults[n]]

    @classmethod
    def options(cls) -> list:
        """The fields a user sets (not those filled from the data)."""
        return [f for f in fields(cls) if not f.metadata.get("internal")]


class VAE(nn.Module):
    """x: (N, *event_shape) -> q(z|x) with batch (N,); z: (*S, D) -> p(x|z) with batch (*S).

    ``encoder``, ``decoder``, ``prior``, ``likelihood``: modules passed from Python in place of the
    registered ones (see klvae.models.parts): the encoder maps x to (N, family.params) (for a
    conditional model it is called as encoder(x, y_one_hot)), the decoder maps the family's decoder
    input (B, family.decoder_dim [+ C]) to the likelihood's parameters, the prior's ``forward()``
    gives p(z), the likelihood maps the decoder output to p(x|z).

    A conditional model (``config.condition == "label"``) needs ``condition``, the class labels (N,)
    (or class probabilities (N, C)), in ``encode``, ``decode`` and ``prior``; for ``decode`` the
    labels' batch is a suffix of z's (*S), e.g. (N,) for z: (K, N, D)."""

    def __init__(self, spec: VAEConfig, encoder: nn.Module | None = None, decoder: nn.Module | None = None,
                 prior: nn.Module | None = None, likelihood: nn.Module | None = None):
        super().__init__()
        check_parts(spec, {"encoder": encoder, "decoder": decoder, "prior": prior, "likelihood": likelihood})
        self.spec = spec
        self.event_shape = tuple(spec.event_shape)
        self.latent_dim = spec.latent_dim
        self.num_classes = spec.num_classes if spec.condition != "none" else 0
        self.family = make_latent(spec)
        if encoder is not None:
            self.encoder = encoder
        elif self.num_classes:
            self.encoder = ConditionalEncoder(spec.net, self.event_shape, spec.hidden, self.family.params,
                                              spec.activation, self.num_classes)
        else:
            self.encoder = make_encoder(spec.net, self.event_shape, spec.hidden, self.family.params, spec.activation)
        self.decoder, self.likelihood, self.out_shape = build_decoding(
            spec, self.family.decoder_dim + self.num_classes, decoder, likelihood)
        self.learned_prior = prior if prior is not None else self._learned_prior(spec)

    def _learned_prior(self, spec: VAEConfig) -> nn.Module | None:
        if spec.conditional_prior:
            return ClassGaussianPrior(self.num_classes, spec.latent_dim)
        return PRIORS.build(spec.prior, spec, self)

    def encode(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> Distribution:
        """q(z|x) (or q(z|x, y)): batch_shape (N,), event_shape (D,)."""
        return self.family.posterior(self.encoder_output(x, condition))

    def encoder_output(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's raw output, (N, family.params), from which ``family.posterior`` builds
        q(z|x) (DReG rebuilds q from it detached)."""
        check_input(x, self.event_shape)
        y = self._one_hot(condition, x)
        if y is None:
            h = self.encoder(x)
        elif y.shape[:-1] != x.shape[:1]:
            raise KlvaeError(f"condition must hold one label per data point, ({len(x)},); got {tuple(y.shape[:-1])}")
        else:
            h = self.encoder(x, y)
        if h.shape != (len(x), self.family.params):
            raise KlvaeError(f"the encoder must output (N, {self.family.params}) for latent {self.spec.latent} of "
                             f"dimension {self.latent_dim}; got {tuple(h.shape)}")
        return h

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> Distribution:
        """p(x|z) (or p(x|z, y)) for z: (*S, D): batch_shape (*S), event_shape = the data's."""
        if z.shape[-1] != self.latent_dim:
            raise KlvaeError(f"z must have shape (..., {self.latent_dim}); got {tuple(z.shape)}")
        lead = z.shape[:-1]
        h = self.family.decoder_input(z.reshape(lead.numel(), self.latent_dim))  # numel: z may be empty (D = 0)
        y = self._one_hot(condition, z)
        if y is not None:  # the one-hot of each z's data point, (*S, C), joined to the decoder input
            h = join(h.view(*lead, -1), y).reshape(-1, h.shape[-1] + self.num_classes)
        return decode_with(self, h.view(*lead, h.shape[-1]))

    def prior(self, condition: torch.Tensor | None = None) -> Distribution:
        """p(z): the family's standard prior, or the learned one; p(z|y) with batch_shape (N,) for
        labels (N,) when the model has a conditional prior (the standard p(z) ignores y)."""
        if condition is not None or self.spec.conditional_prior:
            y = self._one_hot(condition, next(self.parameters()))
            if self.spec.conditional_prior:
                return self.learned_prior(y)
        if self.learned_prior is not None:
            return self.learned_prior()
        return self.family.prior(next(self.parameters()))

    def _one_hot(self, condition: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        """The condition as one-hot (N, C) on ``like``'s device and dtype; None for a model
        without one. A missing or unexpected condition is a KlvaeError naming the fix."""
        if not self.num_classes:
            if condition is not None:
                raise KlvaeError("this model was trained without a condition; drop the class labels (condition=None)")
            return None
        if condition is None:
            raise KlvaeError(f"this model is conditioned on class labels (0..{self.num_classes - 1}); pass them "
                             "as condition=labels (N,)")
        return one_hot(condition.to(like.device), self.num_classes, like.dtype)
