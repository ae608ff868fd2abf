"""Network bodies and decoders, each a registry.

``NETS`` (``--net``): encoder and decoder bodies, an MLP for flat or small inputs, a small conv
net for square images of 28, 32, 64 or 128 pixels, and ``conv-bn``, a deeper one with batch norm for
colour photographs at 32 to 128 pixels (the layout of PyTorch-VAE's vanilla VAE). An entry's builder is a :class:`NetBody`: ``encoder(event_shape,
hidden, out, activation)`` maps x: (B, *event) -> (B, out); ``decoder(out_shape, hidden,
latent_dim, activation)`` maps z: (B, D) -> (B, *out_shape); ``features(event_shape, activation)``
(optional) gives the encoder's features of x and their width, which a conditional encoder joins to
the label. Capabilities: ``fits(event_shape) -> bool``, ``auto_rank`` (``--net auto`` takes the
fitting entry of highest rank; entries without one are never picked automatically).

``DECODERS`` (``--decoder``): how p(x|z) is built from z: ``factorised`` (the body's decoder, then
the likelihood) or ``autoregressive`` (klvae.autoregressive: the decoder is itself p(x|z)).
Capabilities: ``distribution`` (the decoder returns p(x|z)), ``likelihoods`` (the likelihoods it
works with; None: any), ``images`` (needs (C, H, W) data).
"""
from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from klvae.errors import KlvaeError
from klvae.registry import Registry

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU}
CONV_SIZES = (28, 32, 64, 128)
CONV_BN_SIZES = (32, 64, 128)
CONV_BN_WIDEST = 512


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    def __init__(self, event_shape: tuple[int, ...], hidden: list[int], out: int, activation: str):
        super().__init__()
        self.net = mlp([math.prod(event_shape), *hidden, out], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    def __init__(self, event_shape: tuple[int, ...], hidden: list[int], latent_dim: int, activation: str):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.net = mlp([latent_dim, *reversed(hidden), math.prod(event_shape)], activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.event_shape)


def _conv_channels(size: int) -> list[int]:
    # 28: 28 -> 14 -> 7;  64: 64 -> 32 -> 16 -> 8 -> 4 (the beta-VAE / Burgess et al. layout);
    # 32 and 128 down to 4x4 likewise
    return {28: [32, 64], 32: [32, 64, 64], 64: [32, 32, 64, 64], 128: [32, 32, 64, 64, 64]}[size]


class ConvEncoder(nn.Module):
    def __init__(self, event_shape: tuple[int, ...], hidden: list[int], out: int, activation: str):
        super().__init__()
        channels, size = event_shape[0], event_shape[1]
        if size not in CONV_SIZES or event_shape[1] != event_shape[2]:
            raise ValueError(f"conv net needs square images of side {', '.join(map(str, CONV_SIZES))}; got {event_shape}")
        layers: list[nn.Module] = []
        for c in _conv_channels(size):
            layers += [nn.Conv2d(channels, c, 4, stride=2, padding=1), ACTIVATIONS[activation]()]
            channels = c
        self.conv = nn.Sequential(*layers, nn.Flatten())
        side = size // 2 ** len(_conv_channels(size))
        self.head = mlp([channels * side * side, *hidden, out], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x))


class ConvDecoder(nn.Module):
    def __init__(self, event_shape: tuple[int, ...], hidden: list[int], latent_dim: int, activation: str):
        super().__init__()
        out_channels, size = event_shape[0], event_shape[1]
        chans = list(reversed(_conv_channels(size)))
        self.side = size // 2 ** len(chans)
        self.chans0 = chans[0]
        self.head = nn.Sequential(
            mlp([latent_dim, *reversed(hidden), chans[0] * self.side * self.side], activation),
            ACTIVATIONS[activation](),
        )
        layers: list[nn.Module] = []
        for i, c in enumerate(chans):
            nxt = chans[i + 1] if i + 1 < len(chans) else out_channels
            layers.append(nn.ConvTranspose2d(c, nxt, 4, stride=2, padding=1))
            if i + 1 < len(chans):
                layers.append(ACTIVATIONS[activation]())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.head(z).view(-1, self.chans0, self.side, self.side)
        return self.deconv(h)


def conv_bn_widths(size: int) -> list[int]:
    """Channels of the stride-2 layers taking a side of ``size`` down to 2: 32, 64, ... doubling,
    at most 512 (64 px: 32-64-128-256-512, PyTorch-VAE's vanilla VAE)."""
    return [min(32 * 2**i, CONV_BN_WIDEST) for i in range(int(math.log2(size)) - 1)]


def _down(a: int, b: int, activation: str) -> list[nn.Module]:
    return [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), ACTIVATIONS[activation]()]


def _up(a: int, b: int, activation: str) -> list[nn.Module]:
    return [nn.ConvTranspose2d(a, b, 3, stride=2, padding=1, output_padding=1), nn.BatchNorm2d(b),
            ACTIVATIONS[activation]()]


class ConvBNEncoder(nn.Module):
    """x: (B, C, S, S) -> (B, out): 3x3 stride-2 convolutions with batch norm down to 2x2
    (``conv_bn_widths``), then dense layers of widths ``hidden``."""

    def __init__(self, event_shape: tuple[int, ...], hidden: list[int], out: int, activation: str):
        super().__init__()
        _check_conv_bn(event_shape)
        widths = conv_bn_widths(event_shape[1])
        layers = [m for a, b in zip([event_shape[0], *widths], widths) for m in _down(a, b, activation)]
        self.conv = nn.Sequential(*layers, nn.Flatten())
        self.head = mlp([widths[-1] * 4, *hidden, out], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x))


class ConvBNDecoder(nn.Module):
    """z: (B, D) -> (B, *out_shape): dense layers, then 3x3 stride-2 transposed convolutions with
    batch norm from 2x2 up to the image's side, and a 3x3 convolution to the output channels."""

    def __init__(self, out_shape: tuple[int, ...], hidden: list[int], latent_dim: int, activation: str):
        super().__init__()
        _check_conv_bn(out_shape)
        widths = list(reversed(conv_bn_widths(out_shape[1])))
        self.top = widths[0]
        self.head = nn.Sequential(mlp([latent_dim, *reversed(hidden), widths[0] * 4], activation),
                                  ACTIVATIONS[activation]())
        ups = [m for a, b in zip(widths, [*widths[1:], widths[-1]]) for m in _up(a, b, activation)]
        self.deconv = nn.Sequential(*ups, nn.Conv2d(widths[-1], out_shape[0], 3, padding=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.head(z).view(-1, self.top, 2, 2))


def _fits_conv_bn(event_shape) -> bool:
    return len(event_shape) == 3 and event_shape[1] == event_shape[2] in CONV_BN_SIZES


def _check_conv_bn(event_shape) -> None:
    if not _fits_conv_bn(event_shape):
        raise ValueError(f"conv-bn net needs square images of side {', '.join(map(str, CONV_BN_SIZES))}; got "
                         f"{tuple(event_shape)}")




@dataclass(frozen=True)
class NetBody:
    """The builders of one network body (see the module's docstring)."""

    encoder: Callable[..., nn.Module]
    decoder: Callable[..., nn.Module]
    features: Callable[..., tuple[nn.Module, int]] | None = None


def _mlp_features(event_shape, activation):
    return nn.Flatten(), math.prod(event_shape)


def _conv_features(event_shape, activation):
    body = ConvEncoder(tuple(event_shape), [1], 1, activation)
    return body.conv, body.head[0].in_features


def _conv_bn_features(event_shape, activation):
    body = ConvBNEncoder(tuple(event_shape), [1], 1, activation)
    return body.conv, body.head[0].in_features


def _is_conv_image(event_shape) -> bool:
    return len(event_shape) == 3 and event_shape[1] == event_shape[2] in CONV_SIZES


NETS = Registry("network body", "--net")
NETS.register("mlp", "fully connected layers of widths --hidden, for any data shape",
              NetBody(MLPEncoder, MLPDecoder, _mlp_features), fits=lambda event_shape: True, auto_rank=0)
NETS.register("conv", "conv stack for square images of 28, 32, 64 or 128 px (stride-2 4x4 convolutions to 7x7 "
              "or 4x4), dense layers --hidden", NetBody(ConvEncoder, ConvDecoder, _conv_features), fits=_is_conv_image,
              auto_rank=1)
NETS.register("conv-bn", "deeper conv stack with batch norm for colour photos of 32, 64 or 128 px (3x3 stride-2 "
              "convolutions of 32 to 512 channels down to 2x2, as PyTorch-VAE's vanilla VAE), dense layers --hidden",
              NetBody(ConvBNEncoder, ConvBNDecoder, _conv_bn_features), fits=_fits_conv_bn)

DECODERS = Registry("decoder", "--decoder")


def _factorised(net, out_shape, hidden, latent_dim, activation):
    return NETS[net].builder.decoder(tuple(out_shape), hidden, latent_dim, activation)


def _row_gru(net, out_shape, hidden, latent_dim, activation):
    from klvae.autoregressive import RowGRUDecoder

    return RowGRUDecoder(tuple(out_shape), hidden[0], latent_dim)


DECODERS.register("factorised", "pixels independent given z (the --net body's decoder, then the likelihood)",
                  _factorised, distribution=False, likelihoods=None, images=False)
DECODERS.register("autoregressive", "a GRU over image rows, Bernoulli pixels given z and the rows above "
                  "(binary images)", _row_gru, distribution=True, likelihoods=("bernoulli",), images=True)


def pick_net(event_shape: tuple[int, ...], requested: str) -> str:
    """The registered body ``requested``, or for "auto" the fitting body of highest ``auto_rank``
    (conv for (C, H, W) images with H = W in 28, 32, 64 or 128, else mlp)."""
    if requested != "auto":
        if requested != "custom":
            NETS.check(requested)
        return requested
    ranked = [e for e in NETS.entries() if e.get("auto_rank") is not None and e.fits(tuple(event_shape))]
    return max(ranked, key=lambda e: e.auto_rank).name


def make_encoder(kind: str, event_shape, hidden, out, activation) -> nn.Module:
    return NETS[kind].builder.encoder(tuple(event_shape), hidden, out, activation)


def make_decoder(kind: str, out_shape, hidden, latent_dim, activation, decoder: str = "factorised") -> nn.Module:
    """The decoder: for ``factorised`` the body ``kind``'s decoder to ``out_shape``; the
    autoregressive row GRU (klvae.autoregressive) has width hidden[0], the width next to the data."""
    return DECODERS.build(decoder, kind, out_shape, hidden, latent_dim, activation)


def encoder_features(kind: str, event_shape, activation) -> tuple[nn.Module, int]:
    """The features of x that a conditional encoder joins to the label, and their width."""
    features = NETS[kind].builder.features
    if features is None:
        raise KlvaeError(f"network body {kind!r} offers no encoder features to join a label to; use --net mlp or "
                         "conv with --condition label")
    return features(tuple(event_shape), activation)


def check_decoder(decoder: str, likelihood: str, event_shape) -> None:
    """The decoder must fit the likelihood and the data shape; a one-line KlvaeError naming the fix."""
    entry = DECODERS[decoder]
    fits = entry.get("likelihoods")
    if fits is not None and likelihood not in fits:
        raise KlvaeError(
            f"decoder {decoder!r} needs the {' or '.join(fits)} likelihood (binary or binarised pixels); got likelihood "
            f"{likelihood!r}; use --likelihood {fits[0]} with data in [0, 1], or --decoder factorised"
        )
    if entry.get("images") and event_shape is not None and len(event_shape) != 3:
        raise KlvaeError(
            f"decoder {decoder!r} needs images of shape (C, H, W); got data of shape {tuple(event_shape)}; "
            "use --decoder factorised"
        )
