"""What every model shares: the decoder with its likelihood, the input check, and the parts a
user passes from Python (their own encoder, decoder, prior or likelihood modules)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.distributions import Distribution

from klvae.errors import KlvaeError
from klvae.likelihoods import make_likelihood, output_shape
from klvae.nets import DECODERS, check_decoder, make_decoder

CUSTOM = "custom"  # the name a config records for a part passed from Python
PARTS = ("encoder", "decoder", "prior", "likelihood")
PART_FIELD = {"encoder": "net", "decoder": "net", "prior": "prior", "likelihood": "likelihood"}


def check_input(x: torch.Tensor, event_shape: tuple[int, ...]) -> None:
    if tuple(x.shape[1:]) != event_shape:
        raise KlvaeError(
            f"x must have shape (N, {', '.join(map(str, event_shape))}); got {tuple(x.shape)}; "
            "reshape the data to the shape the model was trained on"
        )


def check_parts(config, parts: dict[str, nn.Module | None]) -> None:
    """A config naming a part "custom" needs that part passed from Python, and a passed part needs
    "custom" in its config field (``record_parts`` sets it); a one-line KlvaeError otherwise."""
    for part in PARTS:
        custom = getattr(config, PART_FIELD[part], None) == CUSTOM
        if custom and parts.get(part) is None and not (part == "likelihood" and DECODERS[config.decoder].distribution):
            raise KlvaeError(
                f"this model's {part} was passed from Python ({PART_FIELD[part]} 'custom'); pass {part}=... (a module "
                f"of the same architecture) to klvae.load / klvae.fit, or register it (klvae.register_net, "
                f"register_prior, register_likelihood) and train with its name")
        if parts.get(part) is not None and not isinstance(parts[part], nn.Module):
            raise KlvaeError(f"{part} must be a torch.nn.Module; got {type(parts[part]).__name__}")


def record_parts(values: dict, parts: dict[str, nn.Module | None]) -> dict:
    """The config values with "custom" in the field of every part passed from Python. The encoder
    and the decoder share one field (``net``): they come together or not at all."""
    if (parts.get("encoder") is None) != (parts.get("decoder") is None):
        raise KlvaeError("pass encoder= and decoder= together (both your own modules), or neither (the --net body)")
    return {**values, **{PART_FIELD[p]: CUSTOM for p in PARTS if parts.get(p) is not None}}


def build_decoding(config, decoder_in: int, decoder: nn.Module | None = None, likelihood: nn.Module | None = None
                   ) -> tuple[nn.Module, nn.Module | None, tuple[int, ...]]:
    """(decoder, likelihood, decoder output shape) of a model: the decoder body to the shape the
    likelihood reads, or a decoder that is itself p(x|z) (``DECODERS`` capability ``distribution``,
    no likelihood). ``decoder`` / ``likelihood``: modules passed from Python instead."""
    check_decoder(config.decoder, config.likelihood, config.event_shape)
    event_shape = tuple(config.event_shape)
    if DECODERS[config.decoder].distribution:
        out_shape = event_shape
    else:
        out_shape = event_shape if config.likelihood == CUSTOM else output_shape(event_shape, config.likelihood, config)
    if decoder is None:
        decoder = make_decoder(config.net, out_shape, config.hidden, decoder_in, config.activation, config.decoder)
    if DECODERS[config.decoder].distribution:
        return decoder, None, out_shape
    return decoder, (likelihood if likelihood is not None else make_likelihood(config)), out_shape


def decode_with(model: nn.Module, h: torch.Tensor) -> Distribution:
    """p(x|z) from the decoder input h: (*S, F), batch_shape (*S), through ``model.decoder`` and
    ``model.likelihood`` (None: the decoder gives the distribution itself)."""
    lead = h.shape[:-1]
    if model.likelihood is None:
        return model.decoder(h)
    out = model.decoder(h.reshape(-1, h.shape[-1]))
    if math.prod(out.shape[1:]) != math.prod(model.out_shape):
        raise KlvaeError(f"the decoder must output (B, {', '.join(map(str, model.out_shape))}) for the likelihood; got "
                         f"{tuple(out.shape)}")
    return model.likelihood(out.reshape(*lead, *model.out_shape), len(model.event_shape))
