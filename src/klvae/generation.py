"""Generation from a trained model: samples from the prior or from a density fitted to the codes
(klvae.samplers), reconstructions, latent interpolation and traversals.

Every picture is a decoder mean E[x|z], ``model.decode(z).mean``. For the autoregressive decoder
(klvae.autoregressive) that mean is intractable and ``.mean`` is its deterministic approximation:
the row-by-row pass that feeds each row's probabilities to the next row.

A conditional model (``condition: label``) takes the class labels as ``condition`` everywhere:
labels (N,) int64, or for :func:`sample` one class for all draws.
"""
from __future__ import annotations

import torch
from torch.distributions import Distribution

from klvae.errors import KlvaeError
from klvae.models.conditional import given, one_hot
from klvae.paths import lerp, slerp  # noqa: F401  (re-exported)

def readout(p: Distribution, decoding: str = "mean") -> torch.Tensor:
    """What a decoder distribution shows: its mean, or for a sequence model a ``decoding``
    (greedy, sample, beam) of its token rows."""
    if decoding == "mean":
        return p.mean
    if not hasattr(p, "decode_as"):
        raise KlvaeError(f"decoding {decoding!r} reads token rows out of a sequence model; this model's p(x|z) is "
                         f"{type(p).__name__}: drop --decoding")
    return p.decode_as(decoding)


@torch.no_grad()
def sample(model, n: int, seed: int = 0, condition: int | torch.Tensor | None = None,
           latent: Distribution | None = None, decoding: str = "mean") -> torch.Tensor:
    """Decoder means E[x|z] for n draws z ~ p(z) (any prior family): (n, *event_shape).
    The draw is reproducible from ``seed`` and leaves torch's global random state untouched.

    ``latent``: a distribution over z (event_shape (D,)) to draw from instead of the prior, e.g.
    a fitted sampler's (``klvae.samplers``). ``condition`` (a conditional model):
    one class for every draw, or labels (n,); z then comes from p(z|y) and is decoded with y. A
    conditional model given no condition draws the classes 0..C-1 in turn."""
    if n < 1:
        raise KlvaeError(f"number of samples must be a positive integer; got {n}")
    device = next(model.parameters()).device
    y = _labels(model, n, condition, device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        if latent is not None:
            z = latent.sample((n,)).to(device)
        elif y is not None and model.spec.conditional_prior:
            z = model.prior(y).sample()  # (n, D): one draw from each p(z|y_i)
        else:
            z = model.prior().sample((n,))
        return readout(model.decode(z, **given(y)), decoding)


def _labels(model, n: int, condition, device) -> torch.Tensor | None:
    """The (n,) labels a sample is drawn with: the given ones, one class repeated, the classes in
    turn for a conditional model given none, or None for a model without a condition."""
    if condition is None:
        return torch.arange(n, device=device) % model.num_classes if getattr(model, "num_classes", 0) else None
    y = torch.as_tensor(condition, device=device)
    y = y.expand(n) if y.ndim == 0 else y
    if y.shape != (n,):
        raise KlvaeError(f"condition must be one class or {n} labels (n,); got shape {tuple(y.shape)}")
    return y


@torch.no_grad()
def reconstruct(model, x: torch.Tensor, condition: torch.Tensor | None = None, decoding: str = "mean") -> torch.Tensor:
    """Decoder means at a representative latent point of q(z|x): x: (N, *event) -> (N, *event);
    ``condition``: the labels (N,) of x for a conditional model."""
    c = given(condition)
    return readout(model.decode(model.family.point(model.encode(x, **c)), **c), decoding)


@torch.no_grad()
def interpolate(model, xa: torch.Tensor, xb: torch.Tensor, steps: int, spherical: bool = False,
                condition: torch.Tensor | None = None, decoding: str = "mean") -> torch.Tensor:
    """Decoder means along a latent path between the posterior means of xa and xb (each (*event)):
    (steps, *event), endpoints included. ``condition``: the labels (2,) of xa and xb for a
    conditional model; the decoder's one-hot label moves linearly from ya to yb along the path."""
    if steps < 2:
        raise KlvaeError(f"steps must be at least 2; got {steps}")
    za, zb = model.family.point(model.encode(torch.stack([xa, xb]), **given(condition)))
    t = torch.linspace(0, 1, steps, device=za.device)
    path = {}
    if condition is not None:
        ya, yb = one_hot(condition.to(za.device), model.num_classes, za.dtype)
        path = given(lerp(ya, yb, t))  # (steps, C) class probabilities
    return readout(model.decode(model.family.path(za, zb, t, spherical), **path), decoding)



@torch.no_grad()
def traverse(model, x: torch.Tensor, dims: list[int], steps: int = 10, span: float = 3.0,
             condition: int | torch.Tensor | None = None) -> torch.Tensor:
    """Latent traversals from the posterior point of one data point x: (*event): for each of
    ``dims``, that coordinate swept over [-span, span] (prior standard deviations of a Gaussian or
    spike-and-slab latent) or over the whole circle (von Mises angles), the others fixed; decoder
    means, (len(dims) * steps, *event), one row per dimension. ``condition``: the class of x for a
    conditional model (every image decoded with it)."""
    if steps < 2:
        raise KlvaeError(f"steps must be at least 2; got {steps}")
    values = model.family.traversal(steps, span, x.device)  # the family's own range, or its refusal
    y = None if condition is None else torch.as_tensor(condition, device=x.device).reshape(1)
    z = model.family.point(model.encode(x.unsqueeze(0), **given(y)))[0]
    rows = []
    for d in dims:
        zs = z.repeat(steps, 1)
        zs[:, d] = values
        rows.append(zs)
    zs = torch.cat(rows)
    return model.decode(zs, **given(None if y is None else y.expand(len(zs)))).mean
