"""Encoder and decoder bodies: an MLP for flat or small inputs, a small conv net for 28x28 and
64x64 images. Encoders map x: (B, *event) -> (B, out); decoders z: (B, D) -> (B, *event), except
the autoregressive one (klvae.autoregressive), which maps z to a distribution over images."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU}
CONV_SIZES = (28, 64)


def pick_net(event_shape: tuple[int, ...], requested: str) -> str:
    """'conv' for (C, H, W) images with H = W in 28 or 64, else 'mlp' (unless requested)."""
    if requested != "auto":
        return requested
    is_image = len(event_shape) == 3 and event_shape[1] == event_shape[2] in CONV_SIZES
    return "conv" if is_image else "mlp"


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
    # 28: 28 -> 14 -> 7;  64: 64 -> 32 -> 16 -> 8 -> 4 (the beta-VAE / Burgess et al. layout)
    return [32, 64] if size == 28 else [32, 32, 64, 64]


class ConvEncoder(nn.Module):
    def __init__(self, event_shape: tuple[int, ...], hidden: list[int], out: int, activation: str):
        super().__init__()
        channels, size = event_shape[0], event_shape[1]
        if size not in CONV_SIZES or event_shape[1] != event_shape[2]:
            raise ValueError(f"conv net needs 28x28 or 64x64 images; got {event_shape}")
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


def make_encoder(kind: str, event_shape, hidden, out, activation) -> nn.Module:
    return (ConvEncoder if kind == "conv" else MLPEncoder)(tuple(event_shape), hidden, out, activation)


def make_decoder(kind: str, event_shape, hidden, latent_dim, activation, decoder: str = "factorised") -> nn.Module:
    """The decoder body; ``decoder="autoregressive"`` gives the row GRU of klvae.autoregressive
    (whatever ``kind``), of width hidden[0]: the width next to the data, as in the factorised decoders."""
    if decoder == "autoregressive":
        from klvae.autoregressive import RowGRUDecoder

        return RowGRUDecoder(tuple(event_shape), hidden[0], latent_dim)
    return (ConvDecoder if kind == "conv" else MLPDecoder)(tuple(event_shape), hidden, latent_dim, activation)
