"""Models: each a small ``nn.Module`` exposing encode / decode / prior as distributions, with its
config class beside it, registered in ``MODELS`` (``klvae.register_model``).

An entry's builder is the model class, called as ``builder(config, **parts)``; its capabilities:
``config`` (the config dataclass it reads, what ``model.json`` stores), ``objectives`` (the
objectives it trains with; None: any), ``conditional`` (whether ``--condition label`` works),
``dreg``, ``free_bits`` and ``capacity`` (whether those training options apply), ``parts`` (the
modules a caller may pass in place of the registered ones), ``reads`` (``arrays``, the default, or
``tokens``: rows of token ids of a text data set), ``baseline`` (the flat config keys that turn
a run's config into its baseline's, trained with ``--baseline``), ``layers`` (a top-down hierarchy:
its bound with the lowest levels at their prior's mode, ``log_weights(x, k, prior_below)``, gives the
likelihood-ratio scores of ``klvae score``).
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from torch import nn

from klvae.errors import KlvaeError
from klvae.models.deep_hierarchical import DeepHierarchicalVAE, DeepHVAEConfig
from klvae.models.hierarchical import HierarchicalVAE, HVAEConfig
from klvae.models.parts import PARTS
from klvae.models.vae import VAE, VAEConfig
from klvae.models.sequence import SeqVAE, SeqVAEConfig
from klvae.models.vqvae import VQVAE, VQVAEConfig
from klvae.registry import Registry

MODELS = Registry("model", "--model")
MODELS.register("vae", "VAE with any --latent family and --prior; beta > 1 gives a beta-VAE", VAE,
                config=VAEConfig, objectives=None, conditional=True, dreg=True, free_bits=True, capacity=True,
                parts=PARTS)
MODELS.register("hvae", "hierarchical VAE, top-down inference (Ladder VAE; --residual: NVAE's); layers --latent-dims, "
                "bottom to top", HierarchicalVAE, config=HVAEConfig, objectives=("elbo", "iwae"), conditional=False,
                dreg=False, free_bits=True, capacity=True, parts=(), layers=True)
MODELS.register("deep-hvae", "deep hierarchical VAE with a residual top-down state (NVAE/VDVAE-style); --net conv: "
                "latents at 1/2, 1/4, .. of the image's resolution; --latent-dims per level, bottom to top",
                DeepHierarchicalVAE, config=DeepHVAEConfig, objectives=("elbo", "iwae"), conditional=False, dreg=False,
                free_bits=True, capacity=True, parts=(), layers=True)
MODELS.register("vqvae", "VQ-VAE: --codes K codes of dimension --latent-dim at --positions places; --quantizer "
                "vq-ema, vq or gumbel", VQVAE, config=VQVAEConfig, objectives=("elbo",), conditional=False, dreg=False,
                free_bits=False, capacity=False, parts=())

MODELS.register("seqvae", "sequence VAE (Bowman et al. 2016) for text and SMILES: recurrent encoder, --decoder-cell "
                "lstm, gru or transformer, --word-dropout", SeqVAE, config=SeqVAEConfig, objectives=("elbo", "iwae"),
                conditional=True, dreg=False, free_bits=True, capacity=True, parts=(), reads="tokens",
                baseline={"latent_dim": 0, "latent": "gaussian", "prior": "standard", "condition": "none",
                          "conditional_prior": False, "objective": "elbo", "free_bits": 0.0,
                          "kl_schedule": "constant"})

__all__ = ["MODELS", "VAE", "DeepHierarchicalVAE", "DeepHVAEConfig", "SeqVAE", "SeqVAEConfig", "HierarchicalVAE", "VQVAE", "VAEConfig", "HVAEConfig", "VQVAEConfig", "ModelSpec",
           "build_model", "model_config"]


def model_config(values: dict[str, Any], strict: bool = True):
    """The config of the model ``values["model"]`` (default vae) from a dict of its fields.
    ``strict``: an unknown key is a KlvaeError; otherwise keys of other models are dropped (a
    ``model.json`` written before the models had configs of their own holds every model's)."""
    values = dict(values)
    name = values.pop("model", None) or values.get("name", "vae")  # "model": the key of older model.json files
    values["name"] = name
    config_class = MODELS[name].config
    known = {f.name for f in fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown and strict:
        owners = {k: [m.name for m in MODELS.entries() if k in {f.name for f in fields(m.config)}] for k in unknown}
        raise KlvaeError("; ".join(f"{k} is an option of --model {' or '.join(o)}; add it or drop {k}" if o else
                                   f"unknown model option {k!r}" for k, o in owners.items()))
    return config_class(**{k: v for k, v in values.items() if k in known})


def ModelSpec(**values: Any):  # noqa: N802 (kept as the constructor older code calls)
    """A model config from keyword arguments: :func:`model_config` of them."""
    return model_config(values)


def build_model(config, **parts: nn.Module | None) -> nn.Module:
    """The model a config describes (``model.json`` holds the config of a trained run); ``parts``:
    modules passed from Python (encoder=, decoder=, prior=, likelihood=) that the model accepts."""
    entry = MODELS[config.name]
    given = {k: v for k, v in parts.items() if v is not None}
    refused = sorted(set(given) - set(entry.get("parts", ())))
    if refused:
        raise KlvaeError(f"model {config.name} builds its own {', '.join(refused)}; pass parts only to a model that "
                         f"takes them ({', '.join(MODELS.where(lambda e: bool(e.get('parts'))))})")
    return entry.builder(config, **given)
