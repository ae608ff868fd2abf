"""Where ``klvae sample --from`` draws z: the model's prior, or a density fitted to the training
set's codes by ``klvae fit-sampler`` (a Gaussian mixture, a second VAE, a normalising flow, a
diffusion model) and kept in the run directory.

An entry of ``SAMPLERS``: builder, the :class:`~klvae.samplers.density.CodeDensity` subclass
(for the prior, a function giving None: nothing to fit); capability ``fitted``: it is fitted to
codes and stored in the run.
"""
from __future__ import annotations

from dataclasses import fields

from klvae.config_sections import coerce
from klvae.errors import KlvaeError
from klvae.registry import Entry, Registry
from klvae.samplers.density import CodeDensity, CodeDistribution, SamplerConfig
from klvae.samplers.diffusion import DiffusionConfig, DiffusionDensity
from klvae.samplers.flow import FlowConfig, FlowDensity
from klvae.samplers.gmm import GMMConfig, GMMDensity
from klvae.samplers.two_stage import TwoStageConfig, TwoStageDensity
from klvae.samplers.stored import FittedSampler

SAMPLERS = Registry("sampler", "--from")


def _prior() -> None:
    """The model's own prior: nothing to fit."""


SAMPLERS.register("prior", "the model's prior p(z) (p(z|y) for a conditional model)", _prior, fitted=False)
SAMPLERS.register("gmm", "a Gaussian mixture fitted by EM (Ghosh et al. 2020)", GMMDensity, fitted=True)
SAMPLERS.register("two-stage", "a second VAE on the codes (Dai & Wipf 2019); its NLL is an IWAE bound",
                  TwoStageDensity, fitted=True)
SAMPLERS.register("flow", "a masked autoregressive or neural spline flow (zuko)", FlowDensity, fitted=True)
SAMPLERS.register("diffusion", "a DDPM on the standardised codes, ancestral or DDIM sampling (Wehenkel & Louppe "
                  "2021); its NLL is an ELBO bound", DiffusionDensity, fitted=True)


def sampler_config(entry: Entry, options: dict) -> SamplerConfig:
    """The config of a fitted sampler ``entry`` from options (flags' strings or Python values); an
    option it does not take is a one-line error listing those it does."""
    cls = entry.builder.config_class
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        flags = lambda names: ", ".join("--" + n.replace("_", "-") for n in names)  # noqa: E731
        raise KlvaeError(f"sampler {entry.name} takes no {flags(unknown)}; its options: {flags(known)}")
    return cls(**{k: coerce(cls, k, v, "--" + k.replace("_", "-")) for k, v in options.items()})


def sampler_options() -> dict[str, dict[str, object]]:
    """Every option of the fitted samplers: its name -> {sampler taking it: its dataclass field}."""
    out: dict[str, dict[str, object]] = {}
    for entry in SAMPLERS.entries():
        if entry.fitted:
            for f in fields(entry.builder.config_class):
                out.setdefault(f.name, {})[entry.name] = f
    return out


__all__ = ["SAMPLERS", "CodeDensity", "CodeDistribution", "DiffusionConfig", "DiffusionDensity", "FittedSampler", "FlowConfig", "FlowDensity", "GMMConfig",
           "GMMDensity", "SamplerConfig", "TwoStageConfig", "TwoStageDensity", "sampler_config", "sampler_options"]
