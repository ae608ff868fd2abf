"""A deep hierarchical VAE with a residual top-down state (NVAE, Vahdat & Kautz 2020; VDVAE, Child
2021), sized for a CPU: ``--model deep-hvae``.

Unlike the Markov chain of :mod:`klvae.models.hierarchical`, every level reads a deterministic
top-down state h that carries what all the levels above drew, and the decoder reads the state
after the lowest level (the skip path from every latent to x):

    h_L = h_0 (learned),   p(z_L) = N(0, I),
    for l = L .. 1:  p(z_l | z_>l) = N(prior_l(h_l)),  h_{l-1} = blocks_l(h_l + proj_l(z_l)),
    p(x | z) = likelihood(out(h_0)).

The bottom-up pass d_1 .. d_L (residual blocks, each level above the last) gives the evidence;
q(z_l | x, z_>l) is computed from [h_l, d_l] (as VDVAE does), or with ``residual`` has its mean
and log-scale as offsets of the prior's (NVAE's residual posterior). A level's options share their
defaults with ``--model hvae``'s (the same config keys): ``latent_dims`` has to be given.

``--net mlp``: every level is a vector of ``latent_dims[l]`` units and the state ``width`` units
wide. ``--net conv`` (images): a multi-scale hierarchy; level l lives at 1/2^(l+1) of the image's
resolution (28x28: 14, 7, 4, ...), with ``latent_dims[l]`` channels there, the state ``width``
channels wide; between levels the top-down state is upsampled (nearest), the bottom-up features
downsampled by stride-2 convolutions.

Stabilisers: residual cells whose last layer starts scaled by 1/sqrt(#cells) (VDVAE), the prior
and posterior heads starting at N(0, I) and q = p, ``norm`` (none, batch or weight normalisation in
every cell), KL balancing across levels during a warm-up (``kl_balance``), gradient skipping
(``--skip-threshold``, the trainer's) and the KL schedules and free bits of every model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Distribution, Independent
from torch.nn.utils.parametrizations import weight_norm

from klvae import checks
from klvae.checks import doc
from klvae.distributions import diagonal_normal, scale_from_raw, standard_normal
from klvae.errors import KlvaeError
from klvae.likelihoods import make_likelihood, output_shape
from klvae.models.hierarchical import UNIT_RAW, HierarchicalFamily, HVAEConfig, TopDownHierarchy
from klvae.models.parts import check_input
from klvae.nets import ACTIVATIONS

NORMS = ("none", "batch", "weight")
CONV_MI_POINTS = 100  # validation points of a conv hierarchy's I(x; z) in metrics.csv (100^2 top-down walks)


@dataclass
class DeepHVAEConfig(HVAEConfig):
    """The deep hierarchy's architecture: the hierarchical VAE's options, the state's width, the
    residual cells per level and their normalisation."""

    name: str = field(default="deep-hvae", metadata=doc("the model", internal=True))
    latent_dims: list[int] = field(default_factory=list, metadata=doc(
        "latent sizes, bottom to top: units per level (mlp) or channels per scale (conv), e.g. 32 16 8"))
    width: int = field(default=256, metadata=doc("the top-down state and bottom-up features: units (mlp) or channels (conv)"))
    cells: int = field(default=1, metadata=doc("residual cells per level, in each direction"))
    norm: str = field(default="none", metadata=doc("normalisation in every residual cell", choices=NORMS))
    residual: bool = field(default=False, metadata=doc(
        "q(z_l|x,z_>l) as offsets of p(z_l|z_>l) (NVAE); without it q is computed directly from [h_l, d_l] (VDVAE)"))
    activation: str = field(default="gelu", metadata=doc("activation of the residual cells", choices=tuple(ACTIVATIONS)))

    def validate(self) -> None:
        checks.positive_int(self, "width", "cells")
        if self.changed("hidden"):
            raise KlvaeError(f"model deep-hvae sizes its layers by --width and --cells, not --hidden {self.hidden}; "
                             "drop --hidden")
        super().validate()
        if self.event_shape is not None:
            if self.net not in ("mlp", "conv"):
                raise KlvaeError(f"model deep-hvae builds its own mlp or conv network; got --net {self.net}; "
                                 "use --net mlp or --net conv")
            if self.net == "conv" and len(self.event_shape) != 3:
                raise KlvaeError(f"--net conv needs images (C, H, W); the data have shape {tuple(self.event_shape)}; "
                                 "use --net mlp")
            if self.decoder != "factorised":
                raise KlvaeError("model deep-hvae decodes pixels independently given its state; use --decoder factorised")
        self.latent_dim = sum(math.prod(s) for s in level_shapes(self))


def level_shapes(spec) -> list[tuple[int, ...]]:
    """The shape of each level's z, bottom to top: (units,) for mlp, (channels, H, W) for conv."""
    if spec.event_shape is None or spec.net != "conv":
        return [(d,) for d in spec.latent_dims]
    return [(c, *_resolution(spec.event_shape, level)) for level, c in enumerate(spec.latent_dims)]


def _resolution(event_shape, level: int) -> tuple[int, int]:
    """The (H, W) of level ``level``: the image's halved level + 1 times, rounding up."""
    h, w = event_shape[1:]
    for _ in range(level + 1):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


def _apply(module: nn.Module, t: torch.Tensor, event_dims: int) -> torch.Tensor:
    """module over t: (*lead, *event) with any leading dims (folded into one batch dimension)."""
    lead = t.shape[: t.dim() - event_dims]
    out = module(t.reshape(-1, *t.shape[t.dim() - event_dims:]))
    return out.reshape(*lead, *out.shape[1:])


class Cell(nn.Module):
    """A pre-activation residual cell: h + f(h), f = [norm, act, layer, norm, act, layer], its last
    layer's initial weights scaled by ``scale`` (VDVAE's 1/sqrt(#cells)). Layers are linear (mlp)
    or 3x3 convolutions (conv); ``norm``: none, batch or weight normalisation."""

    def __init__(self, width: int, conv: bool, norm: str, activation: str, scale: float):
        super().__init__()
        parts: list[nn.Module] = []
        for i in range(2):
            layer = nn.Conv2d(width, width, 3, padding=1) if conv else nn.Linear(width, width)
            if i == 1:
                with torch.no_grad():
                    layer.weight.mul_(scale)
            if norm == "batch":
                parts.append(nn.BatchNorm2d(width) if conv else nn.BatchNorm1d(width))
            parts += [ACTIVATIONS[activation](), weight_norm(layer) if norm == "weight" else layer]
        self.f = nn.Sequential(*parts)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.f(h)


def _head(width_in: int, out: int, conv: bool, activation: str) -> nn.Sequential:
    """act, then a layer to ``out`` features starting at zero (so a head starts at N(0, I) or q = p)."""
    layer = nn.Conv2d(width_in, out, 3, padding=1) if conv else nn.Linear(width_in, out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return nn.Sequential(ACTIVATIONS[activation](), layer)


class DeepHierarchicalVAE(TopDownHierarchy):
    """x: (N, *event_shape) -> q(z_1..z_L | x) with batch (N,); z: (*S, sum of level sizes) -> p(x | z)."""

    def __init__(self, spec: DeepHVAEConfig):
        super().__init__()
        self.spec, self.event_shape = spec, tuple(spec.event_shape)
        self.conv = spec.net == "conv"
        self.shapes = level_shapes(spec)
        self.dims = tuple(math.prod(s) for s in self.shapes)
        self.latent_dim = sum(self.dims)
        self.residual, self.balance, self.min_scale = spec.residual, spec.kl_balance, spec.min_scale
        levels, width, act, conv = len(self.dims), spec.width, spec.activation, self.conv
        self.event_dims = 3 if conv else 1  # the dims of a state's event: (C, H, W) or (W,)
        self.state_shapes = [(width, *s[1:]) for s in self.shapes] if conv else [(width,)] * levels
        self.evidence_shapes = self.state_shapes
        # I(x; z) in training's diagnostics walks top-down once per pair of points: fewer points for conv levels
        self.pair_elements = sum(math.prod(s) for s in self.state_shapes) + self.latent_dim
        self.mi_points = 1000 if not self.conv else CONV_MI_POINTS
        scale = 1 / math.sqrt(2 * levels * spec.cells)

        def cells() -> nn.Sequential:
            return nn.Sequential(*[Cell(width, conv, spec.norm, act, scale) for _ in range(spec.cells)])

        channels = self.event_shape[0] if conv else math.prod(self.event_shape)
        self.stem = nn.Conv2d(channels, width, 3, padding=1) if conv else nn.Linear(channels, width)
        # bottom-up: into level l (a stride-2 convolution for conv, halving the resolution), then its cells
        self.down_sample = nn.ModuleList([nn.Conv2d(width, width, 3, stride=2, padding=1) for _ in range(levels)]) \
            if conv else None
        self.up_cells = nn.ModuleList([cells() for _ in range(levels)])
        self.top = nn.Parameter(torch.zeros(self.state_shapes[-1]))  # h_L
        sizes = [s[0] for s in self.shapes]  # units (mlp) or channels (conv) of each level's z
        self.prior_heads = nn.ModuleList([_head(width, 2 * n, conv, act) for n in sizes[:-1]])
        self.posterior_heads = nn.ModuleList([_head(2 * width, 2 * n, conv, act) for n in sizes])
        self.projections = nn.ModuleList([nn.Conv2d(n, width, 1) if conv else nn.Linear(n, width) for n in sizes])
        self.down_cells = nn.ModuleList([cells() for _ in range(levels)])
        self.likelihood = make_likelihood(spec)
        self.out_shape = output_shape(self.event_shape, spec.likelihood, spec)
        self.out = _head(width, self.out_shape[0] if conv else math.prod(self.out_shape), conv, act)
        nn.init.kaiming_uniform_(self.out[1].weight, a=math.sqrt(5))  # the output starts as a usual layer
        self.family = HierarchicalFamily(self)

    # --- the two passes -------------------------------------------------------------------------
    def encoder_output(self, x: torch.Tensor) -> torch.Tensor:
        """d_1 .. d_L, each (N, *state shape), flattened and concatenated bottom to top."""
        check_input(x, self.event_shape)
        d = self.stem(x if self.conv else x.flatten(1))
        features = []
        for level, cells in enumerate(self.up_cells):
            if self.conv:
                d = self.down_sample[level](d)
            d = cells(d)
            features.append(d.flatten(1))
        return torch.cat(features, -1)

    def _top_state(self, like: torch.Tensor) -> torch.Tensor:
        return self.top.to(like.dtype)

    def _z_shaped(self, level: int, z: torch.Tensor) -> torch.Tensor:
        return z.reshape(*z.shape[:-1], *self.shapes[level]) if self.conv else z

    def _gaussian(self, level: int, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, raw) of level ``level``, flat (..., D_l), from a head's output (..., 2 n, *spatial)."""
        loc, raw = params.chunk(2, -self.event_dims)
        return loc.flatten(-self.event_dims), raw.flatten(-self.event_dims)

    def _prior(self, level: int, h: torch.Tensor, like: torch.Tensor) -> tuple[Independent, torch.Tensor]:
        """p(z_l | z_>l) from the state h_l (the top level: N(0, I)); h_l is what q reads too."""
        if level == len(self.dims) - 1:
            return standard_normal(self.dims[-1], like), h
        loc, raw = self._gaussian(level, _apply(self.prior_heads[level], h, self.event_dims))
        return diagonal_normal(loc, scale_from_raw(raw + UNIT_RAW, self.min_scale)), h

    def _posterior(self, level: int, evidence: torch.Tensor, p: Independent, h: torch.Tensor) -> Independent:
        """q(z_l | x, z_>l) from [h_l, d_l]: offsets of p's mean and scale (``residual``), or direct."""
        e = self.event_dims
        lead = torch.broadcast_shapes(h.shape[: h.dim() - e], evidence.shape[: evidence.dim() - e])
        h, evidence = h.expand(*lead, *h.shape[h.dim() - e:]), evidence.expand(*lead, *evidence.shape[evidence.dim() - e:])
        loc, raw = self._gaussian(level, _apply(self.posterior_heads[level], torch.cat([h, evidence], -self.event_dims),
                                                self.event_dims))
        if not self.residual:
            return diagonal_normal(loc, scale_from_raw(raw + UNIT_RAW, self.min_scale))
        base = p.base_dist
        return diagonal_normal(base.loc + loc, base.scale * scale_from_raw(raw + UNIT_RAW, self.min_scale))

    def _descend(self, level: int, h: torch.Tensor, z_level: torch.Tensor) -> torch.Tensor:
        """h_{l-1} = cells(h_l + proj(z_l)), upsampled to the next level's resolution (conv)."""
        h = h + _apply(self.projections[level], self._z_shaped(level, z_level), self.event_dims)
        h = _apply(self.down_cells[level], h, self.event_dims)
        if self.conv:
            size = self.shapes[level - 1][1:] if level > 0 else self.event_shape[1:]
            h = _apply(lambda t: F.interpolate(t, size=tuple(size), mode="nearest"), h, 3)
        return h

    def _decode_state(self, h: torch.Tensor) -> Distribution:
        out = _apply(self.out, h, self.event_dims)
        return self.likelihood(out.reshape(*out.shape[: out.dim() - self.event_dims], *self.out_shape),
                               len(self.event_shape))
