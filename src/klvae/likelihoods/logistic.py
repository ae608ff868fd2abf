"""Discretised logistic likelihoods for 8-bit pixels (Salimans et al. 2017, PixelCNN++; Child 2021, VDVAE).

Data are images in [0, 1] holding the 256 values k/255. Value k/255 owns the bin
[k/255 - 1/510, k/255 + 1/510]; the first bin extends to -inf and the last to +inf, so the
probabilities of the 256 values sum to 1 and ``log_prob`` is a log-probability in nats (not a
density). A value off the grid gets the probability of its bin (it is rounded to the nearest k/255).

- ``logistic``: one discretised logistic per element; the decoder outputs loc and log-scale.
- ``logistic-mixture``: PixelCNN++'s mixture of K discretised logistics per pixel, with the
  channels of a pixel coupled linearly (see :class:`DiscretisedLogisticMixture`).

Numerics: the edge bins use the log-sigmoid forms of PixelCNN++, log F(a) and log(1 - F(b)), with
a, b the standardised upper and lower bin edges. An inner bin is exact in log space:
sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(-(a - b))), so
log p = logsigmoid(a) + logsigmoid(-b) + log(1 - exp(-(a - b))), with a - b = (1/255) / scale
taken directly rather than as a difference, and the last term computed from its log so that no
scale underflows it. PixelCNN++ instead replaces a bin below 1e-5 by the density at its centre
times the bin width, which underestimates the tail bins of the narrowest logistics (scale e^-7)
by up to a half. This form needs no cut-off; log_prob and its gradients stay finite for locs in
[-1e4, 1e4] and log-scales from -50 up.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Categorical, Distribution, Independent, constraints
from torch.distributions.utils import broadcast_all

from klvae.errors import KlvaeError
from klvae.likelihoods import LIKELIHOODS

BINS = 255  # the 256 values k/255 are 255 steps apart
LOG_SCALE_FLOOR = -7.0  # log-scales are floored here, as VDVAE does: scale >= e^-7, about a quarter of a bin


def log_inner_factor(log_scale: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-w)) for w = (1/255) / scale, the factor of an inner bin's probability, from
    log w so that no scale underflows it: below w = e^-10 it is log w - w/2 (error < w^2/24);
    each branch sees clamped inputs, so neither gives the other's gradient a NaN."""
    log_width = -log_scale - math.log(BINS)
    small = log_width.clamp(max=-10.0)
    large = log_width.clamp(min=-10.0, max=20.0)  # beyond w = e^20 the factor is 1 in float32
    return torch.where(log_width < -10.0, small - torch.exp(small) / 2, torch.log(-torch.expm1(-torch.exp(large))))


def bin_log_prob(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(bin of x) in nats under logistic(loc, exp(log_scale)) discretised to the values k/255;
    x is taken to its bin, the nearest k/255. x, loc, log_scale: broadcastable tensors in data units
    -> their broadcast shape."""
    level = torch.round(x * BINS).clamp(0, BINS)  # k; both edges come from it, so neighbours share theirs exactly
    inv_scale = torch.exp(-log_scale)
    upper = ((level + 0.5) / BINS - loc) * inv_scale  # a: the standardised upper edge of the bin
    lower = ((level - 0.5) / BINS - loc) * inv_scale  # b: the standardised lower edge
    log_cdf_upper = F.logsigmoid(upper)  # log F(a): the first bin, (-inf, 1/510]
    log_sf_lower = F.logsigmoid(-lower)  # log(1 - F(b)): the last bin, [1 - 1/510, inf)
    inner = log_cdf_upper + log_sf_lower + log_inner_factor(log_scale)
    return torch.where(level == 0, log_cdf_upper, torch.where(level == BINS, log_sf_lower, inner))


def discretised_mean(loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """The exact mean sum_k (k/255) P(k) of the discretised logistic, by parts:
    1 - (1/255) sum_{k<255} F((k + 1/2)/255). loc, log_scale: broadcastable -> their broadcast shape."""
    loc, log_scale = torch.broadcast_tensors(loc, log_scale)
    inv_scale = torch.exp(-log_scale)
    below = torch.zeros_like(loc)
    for k in range(BINS):  # one edge at a time: memory stays that of loc
        below = below + torch.sigmoid(((k + 0.5) / BINS - loc) * inv_scale)
    return 1 - below / BINS


def sample_on_grid(loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """One draw per element, on the grid k/255: a logistic draw rounded to its bin (the edge bins
    take everything beyond). loc, log_scale: same shape -> that shape."""
    u = torch.rand_like(loc)
    scale = torch.exp(log_scale.clamp(-80.0, 80.0))  # finite and > 0 in float32; beyond, the draw's bin is the same
    draw = loc + scale * (torch.log(u) - torch.log1p(-u))  # u = 0 gives -inf: the first bin
    return torch.round(draw * BINS).clamp(0, BINS) / BINS


class DiscretisedLogistic(Distribution):
    """A logistic(loc, exp(log_scale)) discretised to the 256 values k/255 of 8-bit data in [0, 1].

    loc, log_scale: broadcastable, data units; batch_shape their broadcast shape, event_shape ().
    ``log_prob`` in nats; ``mean`` exact (over the 256 values); ``sample`` on the grid.
    """

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor, validate_args: bool | None = None):
        self.loc, self.log_scale = broadcast_all(loc, log_scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return DiscretisedLogistic(self.loc.expand(shape), self.log_scale.expand(shape),
                                   validate_args=self._validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return bin_log_prob(value, self.loc, self.log_scale)

    @property
    def mean(self) -> torch.Tensor:
        return discretised_mean(self.loc, self.log_scale)

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        return sample_on_grid(self.loc.expand(shape), self.log_scale.expand(shape))


def coupling_index(channel: int, earlier: int) -> int:
    """The index of the coefficient coupling ``channel`` to an ``earlier`` channel among the
    C(C-1)/2 pairs (1,0), (2,0), (2,1), (3,0), ... (PixelCNN++'s order for RGB)."""
    return channel * (channel - 1) // 2 + earlier


def coupled_loc(loc: torch.Tensor, coupling: torch.Tensor, earlier, channel: int) -> torch.Tensor:
    """loc_c + sum_{j<c} coupling_cj x_j for c = ``channel``: loc (*, C, H, W), coupling
    (*, C(C-1)/2, H, W), ``earlier[j]`` the x_j, broadcastable to (*, H, W) -> (*, H, W)."""
    shifted = loc[..., channel, :, :]
    for j in range(channel):
        shifted = shifted + coupling[..., coupling_index(channel, j), :, :] * earlier[j]
    return shifted


class DiscretisedLogisticMixture(Distribution):
    """PixelCNN++'s p(x) of a (C, H, W) image of 8-bit values: per pixel a mixture of K components
    with weights softmax(logits); within component k the channels come in order, channel c being
    a discretised logistic with loc_ck + sum_{j<c} coupling_cjk x_j and scale exp(log_scale_ck).

    logits: (*S, K, H, W); loc, log_scale: (*S, C, K, H, W) in data units; coupling:
    (*S, C(C-1)/2, K, H, W) (already through tanh), pairs as :func:`coupling_index`.
    batch_shape (*S), event_shape (C, H, W); ``log_prob`` sums over the pixels, in nats.
    """

    arg_constraints = {"logits": constraints.real, "loc": constraints.real, "log_scale": constraints.real,
                       "coupling": constraints.interval(-1.0, 1.0)}
    support = constraints.independent(constraints.unit_interval, 3)
    has_rsample = False

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, coupling: torch.Tensor,
                 validate_args: bool | None = None):
        channels, pairs = loc.shape[-4], coupling.shape[-4]
        lead, pixel = logits.shape[:-3], logits.shape[-3:]
        if (loc.shape != lead + (channels, *pixel) or log_scale.shape != loc.shape
                or coupling.shape != lead + (pairs, *pixel) or pairs != channels * (channels - 1) // 2):
            raise ValueError(f"logits (*S, K, H, W), loc and log_scale (*S, C, K, H, W) and coupling "
                             f"(*S, C(C-1)/2, K, H, W) must agree; got {tuple(logits.shape)}, {tuple(loc.shape)}, "
                             f"{tuple(log_scale.shape)}, {tuple(coupling.shape)}")
        self.logits, self.loc, self.log_scale, self.coupling = logits, loc, log_scale, coupling
        super().__init__(lead, (channels, *pixel[1:]), validate_args=validate_args)

    @property
    def channels(self) -> int:
        return self.event_shape[0]

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        grow = lambda t: t.expand(shape + t.shape[len(self.batch_shape):])  # noqa: E731
        return DiscretisedLogisticMixture(grow(self.logits), grow(self.loc), grow(self.log_scale),
                                          grow(self.coupling), validate_args=self._validate_args)

    def components_first(self, t: torch.Tensor, lead: int = 0) -> torch.Tensor:
        """(*S, [n,] K, H, W) -> (K, *P, *S, [n,] H, W), P ``lead - len(S)`` ones: data (*T, .., H, W)
        with len(T) <= lead then broadcast over the outermost dim only, which keeps every loop long."""
        return t.movedim(-3, 0)[(slice(None),) + (None,) * (lead - len(self.batch_shape))]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """value: (*T, C, H, W) broadcastable with the batch -> (broadcast of *T and *S), nats."""
        if self._validate_args:
            self._validate_sample(value)
        lead = max(len(self.batch_shape), value.dim() - 3)
        loc, log_scale, coupling = (self.components_first(t, lead) for t in (self.loc, self.log_scale, self.coupling))
        total = self.components_first(F.log_softmax(self.logits, dim=-3), lead)
        earlier = value.unbind(-3)  # per channel, (*T, H, W)
        for c in range(self.channels):  # total: (K, *, H, W), log weight + the channels so far
            total = total + bin_log_prob(earlier[c], coupled_loc(loc, coupling, earlier, c), log_scale[..., c, :, :])
        return torch.logsumexp(total, dim=0).sum((-2, -1))

    @property
    def mean(self) -> torch.Tensor:
        """An approximate E[x], (*S, C, H, W): within component k, channel c's mean is taken as
        clamp(loc_ck + sum_{j<c} coupling_cjk m_jk, 0, 1) with m_jk the earlier channels' means in
        that component; these are mixed with the weights. Exact for logistics far inside [0, 1]
        (up to the rounding to the grid); the clamp stands in for the edge bins."""
        loc, coupling = self.components_first(self.loc), self.components_first(self.coupling)
        means = []  # per channel, (K, *S, H, W)
        for c in range(self.channels):
            means.append(coupled_loc(loc, coupling, means, c).clamp(0.0, 1.0))
        weights = self.components_first(torch.softmax(self.logits, dim=-3))  # (K, *S, H, W)
        return torch.stack([(weights * m).sum(0) for m in means], dim=-3)

    @torch.no_grad()
    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """A component per pixel, then the channels in order, each given the sampled earlier ones:
        (*sample_shape, *S, C, H, W) on the grid k/255."""
        shape = torch.Size(sample_shape) + self.batch_shape
        component = Categorical(logits=self.logits.movedim(-3, -1)).sample(sample_shape)  # (*shape, H, W)

        def pick(t: torch.Tensor) -> torch.Tensor:  # (*S, n, K, H, W) -> (*shape, n, H, W)
            t = t.expand(shape + t.shape[len(self.batch_shape):])
            index = component[..., None, None, :, :].expand(*t.shape[:-3], 1, *t.shape[-2:])
            return t.gather(-3, index).squeeze(-3)

        loc, log_scale, coupling = pick(self.loc), pick(self.log_scale), pick(self.coupling)
        x = []  # per channel, (*shape, H, W)
        for c in range(self.channels):
            x.append(sample_on_grid(coupled_loc(loc, coupling, x, c), log_scale[..., c, :, :]))
        return torch.stack(x, dim=-3)


def at_least_float32(out: torch.Tensor) -> torch.Tensor:
    """A half-precision decoder output in float32: the bins of scales near the floor need its precision."""
    return out.to(torch.promote_types(out.dtype, torch.float32))


class LogisticLikelihood(nn.Module):
    """Decoder output (*S, 2C, *rest) -> p(x|z) over (C, *rest): the first C channels are the loc
    (data units), the last C the log-scale, floored at -7 as VDVAE does (``LOG_SCALE_FLOOR``).
    The result is ``Independent(DiscretisedLogistic, event_ndims)``, batch_shape (*S)."""

    def forward(self, out: torch.Tensor, event_ndims: int) -> Distribution:
        if out.dim() < event_ndims or out.shape[-event_ndims] % 2:
            raise KlvaeError(f"the logistic likelihood reads (*S, 2C, ...) with an even channel count; got "
                             f"{tuple(out.shape)}")
        loc, log_scale = at_least_float32(out).chunk(2, dim=-event_ndims)
        log_scale = torch.clamp(log_scale, min=LOG_SCALE_FLOOR)  # VDVAE's floor: scale >= e^-7
        return Independent(DiscretisedLogistic(loc, log_scale, validate_args=False), event_ndims, validate_args=False)


def _outputs_per_component(channels: int) -> int:
    """A logit, a loc and a log-scale per channel, and C(C-1)/2 couplings: 1 + 2C + C(C-1)/2."""
    return 1 + 2 * channels + channels * (channels - 1) // 2


def _check_images(event_shape) -> None:
    if event_shape is not None and len(event_shape) != 3:
        raise KlvaeError(f"likelihood logistic-mixture needs images of shape (C, H, W); got data of shape "
                         f"{tuple(event_shape)}; use --likelihood logistic")


def mixture_channels(channels: int, config) -> int:
    """Decoder output channels of the mixture for images of ``channels`` channels: K (1 + 2C + C(C-1)/2),
    K = ``config.mixture_components``. Data that are not (C, H, W) images are a KlvaeError."""
    _check_images(config.event_shape)
    return config.mixture_components * _outputs_per_component(channels)


class LogisticMixtureLikelihood(nn.Module):
    """Decoder output (*S, K (1 + 2C + P), H, W), P = C(C-1)/2 -> ``DiscretisedLogisticMixture``.

    Output channels, in this order, each block component-fastest (index = start + row * K + k):
    K mixture logits | C x K locs (channel c, component k) | C x K log-scales (floored at -7 as
    VDVAE does) | P x K coupling coefficients before tanh (pair p = :func:`coupling_index`).
    """

    def __init__(self, event_shape: tuple[int, ...], components: int):
        super().__init__()
        _check_images(event_shape)
        self.channels, self.components = int(event_shape[0]), int(components)
        self.pairs = self.channels * (self.channels - 1) // 2

    def forward(self, out: torch.Tensor, event_ndims: int) -> Distribution:
        c, k, p = self.channels, self.components, self.pairs
        width = k * _outputs_per_component(c)
        if event_ndims != 3 or out.dim() < 3 or out.shape[-3] != width:
            raise KlvaeError(f"the logistic-mixture likelihood reads (*S, {width}, H, W) for "
                             f"{k} components of {c} channels; got {tuple(out.shape)}")
        logits, loc, log_scale, coupling = at_least_float32(out).split([k, c * k, c * k, p * k], dim=-3)
        log_scale = torch.clamp(log_scale, min=LOG_SCALE_FLOOR)  # VDVAE's floor: scale >= e^-7
        return DiscretisedLogisticMixture(logits, loc.unflatten(-3, (c, k)), log_scale.unflatten(-3, (c, k)),
                                          torch.tanh(coupling).unflatten(-3, (p, k)), validate_args=False)


LIKELIHOODS.register("logistic", "discretised logistic per element (PixelCNN++), for 8-bit data k/255 in [0, 1]",
                     lambda event_shape, config: LogisticLikelihood(), params=2, data_range=(0.0, 1.0),
                     bound=True, discrete=True)
LIKELIHOODS.register("logistic-mixture", "mixture of discretised logistics per pixel with coupled channels "
                     "(PixelCNN++, VDVAE; --mixture-components), for 8-bit images in [0, 1]",
                     lambda event_shape, config: LogisticMixtureLikelihood(
                         tuple(event_shape), config.mixture_components),
                     params=mixture_channels, data_range=(0.0, 1.0), bound=True, discrete=True)
