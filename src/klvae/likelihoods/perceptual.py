"""Perceptual reconstruction losses (not likelihoods): ``ssim``, ``ms-ssim`` and ``watson``.

Each compares a data image x (C, H, W) in [0, 1] with the decoder's mean image sigmoid(out) through
a distance d (0 for identical images) and stands in for log p(x|z) as ``-scale * d(x, mean)``. That
is not a normalised density (capability ``bound=False``): the ELBO built on it is an objective,
not a bound on log p(x). ``scale`` is the model config's ``loss_scale``; unset, each loss's default:

- ``ssim``: d = 1 - SSIM (Wang et al. 2004; pytorch-msssim, Gaussian window 11 px, sigma 1.5,
  data range 1, K = (0.01, 0.03)), the mean over pixels and channels, in [0, 2].
- ``ms-ssim``: d = 1 - MS-SSIM (Wang et al. 2003) with the same window: L scales, each halving the
  image by 2x2 average pooling; the contrast-structure terms of the first L - 1 and the SSIM of the
  last, each clipped at 0, raised to the weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333) and
  multiplied, per channel, then averaged over channels (as pytorch-msssim does). L = 5 where the
  smaller side exceeds (11 - 1) * 2^4 = 160 px; below that, L is the most scales whose coarsest
  still exceeds the window, (11 - 1) * 2^(L - 1) < side (2 from 21 px, 3 from 41 px, 4 from 81 px),
  with the first L weights renormalised to sum to 1. Images under 21 px are refused: use ssim.
  Computed here, since pytorch-msssim's ms_ssim refuses sides up to 160 px whatever the scales; at
  5 scales the values are pytorch-msssim's.
- ``watson``: d = the Watson-DFT distance of Czolbe et al. 2020 (klvae.likelihoods.watson), in
  just-noticeable differences, masking computed from the data x.

Default scales, so that -log p is on the footing of a per-pixel reconstruction term (a sum over
C*H*W elements) of a VAE on 64x64 images:

- ssim, ms-ssim: C*H*W, since 1 - SSIM is a mean over pixels: its sum over the elements;
- watson: C*H*W/16, four per 8x8 block and channel: a 64x64 reconstruction's 5-25 JND then weigh
  about 10^3 - 10^4 nats, as (1 - SSIM) C*H*W does (at one per block, C*H*W/64, a VAE on 32x32
  colour images left every latent unit inactive).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorch_msssim import ssim as _pytorch_ssim
from torch.distributions import Distribution, constraints

from klvae.errors import KlvaeError
from klvae.likelihoods import LIKELIHOODS
from klvae.likelihoods.watson import watson_distance

WINDOW, SIGMA = 11, 1.5  # the Gaussian window of SSIM and MS-SSIM, pixels
K1, K2 = 0.01, 0.03  # SSIM's stabilising constants, times the data range 1
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, finest scale first

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ssim_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - SSIM per image (pytorch-msssim, window 11, sigma 1.5, data range 1): (N, C, H, W) twice -> (N,)."""
    return 1.0 - _pytorch_ssim(x, y, data_range=1.0, size_average=False, win_size=WINDOW, win_sigma=SIGMA)


def ms_ssim_levels(side: int) -> int:
    """The scales MS-SSIM uses for images whose smaller side is ``side`` pixels (0 or 1: too small)."""
    return sum(1 for level in range(len(MS_SSIM_WEIGHTS)) if (WINDOW - 1) * 2**level < side)


def _gaussian_filter(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of each channel: (N, C, H, W) -> (N, C, H - 10, W - 10)."""
    c = x.shape[1]
    x = F.conv2d(x, window.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, window.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def ssim_terms(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(SSIM, contrast-structure) of each image and channel, means over the valid window positions:
    (N, C, H, W) twice in [0, 1] -> (N, C) twice."""
    coords = torch.arange(WINDOW, dtype=x.dtype, device=x.device) - WINDOW // 2
    window = torch.softmax(-coords**2 / (2 * SIGMA**2), dim=0)  # the normalised Gaussian
    mu_x, mu_y = _gaussian_filter(x, window), _gaussian_filter(y, window)
    var_x = _gaussian_filter(x * x, window) - mu_x**2
    var_y = _gaussian_filter(y * y, window) - mu_y**2
    cov = _gaussian_filter(x * y, window) - mu_x * mu_y
    cs = (2 * cov + K2**2) / (var_x + var_y + K2**2)
    luminance = (2 * mu_x * mu_y + K1**2) / (mu_x**2 + mu_y**2 + K1**2)
    return (luminance * cs).flatten(2).mean(2), cs.flatten(2).mean(2)


def _positive_power(v: torch.Tensor, exponent: float) -> torch.Tensor:
    """max(v, 0)^exponent with a finite gradient (0 where v <= 0)."""
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, 1.0) ** exponent, 0.0)


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MS-SSIM per image at ``ms_ssim_levels`` scales: (N, C, H, W) twice in [0, 1] -> (N,)."""
    levels = ms_ssim_levels(min(x.shape[-2:]))
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=torch.float64)
    weights = (weights / weights.sum()).tolist()
    value = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
    for level, weight in enumerate(weights):
        similarity, cs = ssim_terms(x, y)
        if level == levels - 1:
            value = value * _positive_power(similarity, weight)
        else:
            value = value * _positive_power(cs, weight)
            padding = [s % 2 for s in x.shape[-2:]]
            x, y = F.avg_pool2d(x, 2, padding=padding), F.avg_pool2d(y, 2, padding=padding)
    return value.mean(dim=1)


def ms_ssim_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 - MS-SSIM per image: (N, C, H, W) twice -> (N,)."""
    return 1.0 - ms_ssim(x, y)


class PerceptualLoss(Distribution):
    """A perceptual loss dressed as p(x|z): log_prob(x) = -scale * distance(x, mean), nats by
    convention (not a normalised density).

    ``logits``: the decoder output (*S, C, H, W); the mean image is sigmoid(logits) in [0, 1].
    ``distance``: (reference, image), both (N, C, H, W) -> (N,); the data are the reference.
    batch_shape S, event_shape (C, H, W). ``sample()`` is the mean: deterministic, no noise.
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.independent(constraints.unit_interval, 3)
    has_rsample = False

    def __init__(self, logits: torch.Tensor, distance: Distance, scale: float, validate_args: bool | None = False):
        if logits.dim() < 3:
            raise KlvaeError(f"a perceptual loss reads images (*S, C, H, W); got an output of shape "
                             f"{tuple(logits.shape)}; use --likelihood gaussian for flat data")
        self.logits, self.distance, self.scale = logits, distance, float(scale)
        super().__init__(logits.shape[:-3], logits.shape[-3:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.event_shape
        return PerceptualLoss(self.logits.expand(shape), self.distance, self.scale, self._validate_args)

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @property
    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """The mean image, repeated (*sample_shape, *S, C, H, W): a loss has no noise to draw."""
        with torch.no_grad():
            return self.mean.expand(self._extended_shape(torch.Size(sample_shape))).clone()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """value: data (*T, C, H, W) in [0, 1], *T broadcastable with *S -> (broadcast of T and S)."""
        if value.shape[-3:] != self.event_shape:
            raise KlvaeError(f"log_prob needs images of shape (*, {', '.join(map(str, self.event_shape))}); "
                             f"got {tuple(value.shape)}")
        mean = self.mean
        shape = torch.broadcast_shapes(value.shape, mean.shape)
        flat = (-1, *self.event_shape)  # the library calls take (N, C, H, W)
        x = value.float().expand(shape).reshape(flat)
        y = mean.float().expand(shape).reshape(flat)
        return -self.scale * self.distance(x, y).reshape(shape[:-3])


class PerceptualLikelihood(nn.Module):
    """Decoder output (*S, C, H, W) -> PerceptualLoss with a fixed distance and scale."""

    def __init__(self, distance: Distance, scale: float):
        super().__init__()
        self.distance, self.scale = distance, scale

    def forward(self, out: torch.Tensor, event_ndims: int) -> Distribution:
        if event_ndims != 3:
            raise KlvaeError(f"a perceptual loss needs image data (C, H, W); got {event_ndims} event dims; "
                             "use --likelihood gaussian")
        return PerceptualLoss(out, self.distance, self.scale)


def _image_shape(name: str, event_shape) -> tuple[int, int, int]:
    if len(event_shape) != 3:
        raise KlvaeError(f"likelihood {name} needs image data (C, H, W); got data of shape {tuple(event_shape)}; "
                         "use --likelihood gaussian")
    return tuple(int(n) for n in event_shape)


WATSON_PER = 16  # pixels per unit of the watson loss's default scale (see the module docstring)


def _scale(config, default: float) -> float:
    scale = getattr(config, "loss_scale", None)
    return default if scale is None else float(scale)


def build_ssim(event_shape, config) -> PerceptualLikelihood:
    c, h, w = _image_shape("ssim", event_shape)
    if min(h, w) < WINDOW:
        raise KlvaeError(f"ssim needs images of at least {WINDOW}x{WINDOW} pixels (its window); got {h}x{w}; "
                         "use --likelihood gaussian")
    return PerceptualLikelihood(ssim_distance, _scale(config, c * h * w))


def build_ms_ssim(event_shape, config) -> PerceptualLikelihood:
    c, h, w = _image_shape("ms-ssim", event_shape)
    if ms_ssim_levels(min(h, w)) < 2:
        raise KlvaeError(f"ms-ssim needs images of at least {2 * (WINDOW - 1) + 1}x{2 * (WINDOW - 1) + 1} pixels "
                         f"(two scales of its {WINDOW}-pixel window); got {h}x{w}; use --likelihood ssim")
    return PerceptualLikelihood(ms_ssim_distance, _scale(config, c * h * w))


def build_watson(event_shape, config) -> PerceptualLikelihood:
    c, h, w = _image_shape("watson", event_shape)
    return PerceptualLikelihood(watson_distance, _scale(config, c * h * w / WATSON_PER))


CAPABILITIES = {"params": 1, "data_range": (0.0, 1.0), "bound": False, "discrete": False}
LIKELIHOODS.register("ssim", "1 - SSIM (11-px Gaussian window) times --loss-scale (default C*H*W): a loss for "
                     "images in [0, 1], not a likelihood", build_ssim, **CAPABILITIES)
LIKELIHOODS.register("ms-ssim", "1 - MS-SSIM (5 scales, fewer below 161 px; images of 21 px or more) times "
                     "--loss-scale (default C*H*W): a loss, not a likelihood", build_ms_ssim, **CAPABILITIES)
LIKELIHOODS.register("watson", "Watson-DFT perceptual distance (Czolbe et al. 2020) in JND times --loss-scale "
                     "(default C*H*W/16): a loss for images in [0, 1], not a likelihood", build_watson, **CAPABILITIES)
