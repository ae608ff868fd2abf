"""The pieces of a conditional VAE (Sohn et al. 2015, "Learning structured output representation
using deep conditional generative models"): q(z|x, y), p(x|z, y) and p(z|y) for a class label y.

The label enters every network as a one-hot vector joined to its dense input: the flattened image
of the MLP encoder, the conv stack's features of the conv encoder, the decoder input of z (every
decoder body, the autoregressive one included, starts with a dense layer on z). The prior is the
latent family's standard one, or with ``conditional_prior`` a learned Gaussian p(z|y) with a mean
and a scale per class (Gaussian latents).

A condition is given as class labels (N,) int64 in 0..C-1, or as class probabilities (N, C)
float (e.g. a soft label between two classes, as an interpolation walks from one to the other).
With ``condition: attributes`` it is the vector of F binary attributes (N, F) (CelebA's 40), joined
to the same inputs as the one-hot label is.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Distribution

from klvae.bounds import given  # noqa: F401  (re-exported: the models' home of it)
from klvae.data.dataset import Dataset, attribute_count, class_count
from klvae.distributions import diagonal_normal, scale_from_raw
from klvae.errors import KlvaeError
from klvae.latents import latent_family
from klvae.nets import encoder_features, mlp
from klvae.priors import PRIORS


@dataclass(frozen=True)
class Condition:
    """What a model is conditioned on: ``width(data)`` gives the condition vector's width C from
    the data (KlvaeError naming the fix when they have no such labels), ``read(labels)`` turns the
    labels of a batch into what the model reads (class labels (N,), (N, C) floats, or None for no
    condition), and ``per_class_prior`` says whether --conditional-prior fits it."""

    description: str
    width: Callable[[Dataset], int]
    read: Callable[[torch.Tensor | None], torch.Tensor | None]
    per_class_prior: bool


def _no_width(data: Dataset) -> int:
    return 0


def _attributes(labels: torch.Tensor | None) -> torch.Tensor:
    if labels is None or labels.is_floating_point() or labels.ndim != 2:
        got = "none" if labels is None else f"labels of shape {tuple(labels.shape)} ({labels.dtype})"
        raise KlvaeError(f"this model is conditioned on attributes and needs (N, F) binary attribute labels; got {got}; "
                         "give it data with attributes (e.g. celeba)")
    return labels.float()


def _classes(labels: torch.Tensor | None) -> torch.Tensor:
    if labels is None or labels.is_floating_point() or labels.ndim != 1:
        raise KlvaeError("this run is a conditional model (condition label) and needs the class labels of the data; "
                         "give it labelled data of the classes it was trained on")
    return labels


CONDITIONS = {
    "none": Condition("no condition", _no_width, lambda labels: None, False),
    "label": Condition("encoder, decoder (and with --conditional-prior the prior) see the one-hot class label",
                       class_count, _classes, True),
    "attributes": Condition("encoder and decoder see the vector of binary attributes (CelebA's 40)",
                            attribute_count, _attributes, False),
}


def check_condition(condition: str, conditional_prior: bool, latent: str, prior: str,
                    num_classes: int | None = None) -> None:
    """The condition must be known and fit the latent family and the prior; ``num_classes`` (None:
    not known yet, before the data are loaded) must give at least two classes."""
    if condition not in CONDITIONS:
        raise KlvaeError(f"condition must be one of {', '.join(CONDITIONS)}; got {condition!r}")
    if condition == "none":
        if conditional_prior:
            raise KlvaeError("conditional_prior needs a condition; add --condition label or drop --conditional-prior")
        return
    if conditional_prior and not CONDITIONS[condition].per_class_prior:
        raise KlvaeError(f"conditional_prior learns p(z|y) per class and does not fit condition {condition!r}; drop "
                         "--conditional-prior")
    if num_classes is not None and num_classes < 2:
        raise KlvaeError(f"condition {condition!r} needs at least 2 classes; got num_classes {num_classes}")
    if not PRIORS[prior].get("conditional", True):
        raise KlvaeError(f"prior {prior} carries no class label (e.g. the VampPrior's pseudo-inputs); use --prior "
                         "standard or mog with --condition label")
    family = latent_family(latent)
    if conditional_prior and not (family.geometry == "euclidean" and family.factorised and PRIORS[prior].get("own")):
        raise KlvaeError(f"conditional_prior is a Gaussian p(z|y) in place of the standard prior; it needs --latent "
                         f"gaussian and --prior standard (got latent {latent!r}, prior {prior!r})")


def is_conditional(model) -> bool:
    """True for a model trained with ``condition: label`` (it needs class labels to run)."""
    spec = getattr(model, "spec", None)
    return getattr(spec, "condition", "none") != "none"


def condition_of(model, labels: torch.Tensor | None) -> torch.Tensor | None:
    """The condition a model runs on data with these labels: the labels as the model reads them
    for a conditional model (KlvaeError when the data have none of its kind), None for any other."""
    return CONDITIONS[getattr(getattr(model, "spec", None), "condition", "none")].read(labels)


def one_hot(condition: torch.Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Class labels (*B,) int -> (*B, C) one-hot of ``dtype``; class probabilities (*B, C) pass
    through (as ``dtype``). A label outside 0..C-1 is a KlvaeError naming the range."""
    if condition.is_floating_point():
        if condition.shape[-1:] != (num_classes,):
            raise KlvaeError(f"class probabilities must have shape (..., {num_classes}); got {tuple(condition.shape)}")
        return condition.to(dtype)
    if condition.numel() and (int(condition.min()) < 0 or int(condition.max()) >= num_classes):
        bad = int(condition.min()) if int(condition.min()) < 0 else int(condition.max())
        raise KlvaeError(f"class label {bad} is out of range; this model knows classes 0..{num_classes - 1}")
    return F.one_hot(condition.long(), num_classes).to(dtype)


def join(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """h: (*S, F) and one-hot y: (*B, C), *B a suffix of *S (e.g. K importance samples first)
    -> (*S, F + C)."""
    lead = h.shape[:-1]
    try:
        y = y.expand(*lead, y.shape[-1])
    except RuntimeError:
        raise KlvaeError(f"the condition has batch shape {tuple(y.shape[:-1])}; it must match the data's or z's "
                         f"batch {tuple(lead)} (one label per data point)") from None
    return torch.cat([h, y], dim=-1)


class ConditionalEncoder(nn.Module):
    """(x: (N, *event), one-hot y: (N, C)) -> the encoder output (N, out): the features of x (x
    flattened for the MLP, the conv stack's output for the conv net) joined to y, then a dense head
    of widths ``hidden``."""

    def __init__(self, net: str, event_shape: tuple[int, ...], hidden: list[int], out: int, activation: str,
                 num_classes: int):
        super().__init__()
        self.features, width = encoder_features(net, event_shape, activation)
        self.head = mlp([width + num_classes, *hidden, out], activation)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.head(join(self.features(x), y))


class ClassGaussianPrior(nn.Module):
    """p(z|y) = N(means_y, diag(scales_y^2)): a learned mean and scale per class (C, D); for class
    probabilities y: (N, C), the probability-weighted mean and scale. Starts as N(0, I) for every
    class (means 0, scales 1); the KL with a Gaussian posterior stays analytic and per dimension."""

    def __init__(self, num_classes: int, latent_dim: int, min_scale: float = 1e-3):
        super().__init__()
        self.min_scale = min_scale
        self.means = nn.Parameter(torch.zeros(num_classes, latent_dim))
        self.raw_scale = nn.Parameter(torch.full((num_classes, latent_dim), math.log(math.expm1(1.0 - min_scale))))

    def forward(self, y: torch.Tensor) -> Distribution:
        """y: (*B, C) one-hot or probabilities -> batch_shape (*B), event_shape (D,)."""
        scale = scale_from_raw(self.raw_scale, self.min_scale)
        return diagonal_normal(y @ self.means, y @ scale)
