"""Extending klvae: the registries, ``register_*`` for each kind of component, and plugins.

From your own code::

    import klvae
    klvae.register_latent("laplace", "factorised Laplace posterior, Laplace(0, 1) prior", LaplaceFamily)

From a pip-installed package: name a module (or a function to call) in the entry-point group
``klvae.plugins`` of its ``pyproject.toml``::

    [project.entry-points."klvae.plugins"]
    laplace = "my_package.klvae_plugin"

The ``klvae`` command loads every such plugin at start, and ``--plugin MODULE`` imports a module of
yours (on ``sys.path``) before it parses the command line, so its components become choices.
A run directory only names components; it never names code to import.
"""
from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from klvae.data.properties import PROPERTIES
from klvae.data.registry import DATASETS, register_dataset
from klvae.data.text import TOKENIZERS
from klvae.errors import KlvaeError
from klvae.samplers import SAMPLERS
from klvae.latents import LATENTS, LatentFamily
from klvae.likelihoods import LIKELIHOODS
from klvae.models import MODELS
from klvae.nets import DECODERS, NETS, NetBody
from klvae.objectives import OBJECTIVES, register_objective
from klvae.priors import PRIORS
from klvae.registry import Registry

__all__ = ["REGISTRIES", "load_plugins", "register_dataset", "register_latent", "register_likelihood", "register_model",
           "register_net", "register_objective", "register_prior", "register_sampler", "register_schedule"]
from klvae.schedules import SCHEDULES, register_schedule

ENTRY_POINT_GROUP = "klvae.plugins"
REGISTRIES: dict[str, Registry] = {
    "model": MODELS, "latent": LATENTS, "prior": PRIORS, "likelihood": LIKELIHOODS, "net": NETS, "decoder": DECODERS,
    "objective": OBJECTIVES, "kl_schedule": SCHEDULES, "data": DATASETS, "tokenizer": TOKENIZERS,
    "property": PROPERTIES, "sampler": SAMPLERS,
}
_loaded: set[str] = set()


def register_latent(name: str, description: str, family: type[LatentFamily] | None = None, *,
                    replace: bool = False) -> Any:
    """A latent family: a :class:`klvae.latents.LatentFamily` subclass (its posterior, prior and
    geometry). Its KL to its prior goes through ``torch.distributions.kl.register_kl`` where a
    closed form exists (else the KL is a Monte Carlo estimate). Usable as a decorator."""
    def add(cls: type[LatentFamily]) -> type[LatentFamily]:
        if not (isinstance(cls, type) and issubclass(cls, LatentFamily)):
            raise KlvaeError(f"latent {name!r} must be a klvae.latents.LatentFamily subclass; got {cls!r}")
        return LATENTS.register(name, description, cls, replace=replace)
    return add if family is None else add(family)


def register_prior(name: str, description: str, builder: Callable | None = None, *, latents: Iterable[str] | None = None,
                   conditional: bool = True, init_from_data: bool = False, replace: bool = False) -> Any:
    """A prior: ``builder(model_config, model)`` -> an ``nn.Module`` whose ``forward()`` gives p(z).
    ``latents``: the families it fits (None: any)."""
    caps = {"latents": tuple(latents) if latents is not None else None, "conditional": conditional,
            "init_from_data": init_from_data}
    return PRIORS.register(name, description, builder, replace=replace, **caps)


def register_likelihood(name: str, description: str, builder: Callable | None = None, *,
                        params: int | Callable = 1, data_range: tuple[float, float] | None = None, bound: bool = True,
                        discrete: bool = False, replace: bool = False) -> Any:
    """A likelihood: ``builder(event_shape, model_config)`` -> an ``nn.Module`` mapping the decoder
    output (``params`` x the data's channels, or ``params(channels, model_config)`` channels) and
    the data's event rank to p(x|z). ``bound``: False for a loss that is not a normalised likelihood
    (evaluation and the report then say the ELBO bounds nothing); ``discrete``: log_prob gives the
    probabilities of 8-bit values (evaluation reports bits per dimension)."""
    return LIKELIHOODS.register(name, description, builder, replace=replace, params=params, data_range=data_range,
                                bound=bound, discrete=discrete)


def register_net(name: str, description: str, encoder: Callable, decoder: Callable, *,
                 features: Callable | None = None, fits: Callable | None = None, replace: bool = False) -> NetBody:
    """A network body: ``encoder(event_shape, hidden, out, activation)`` -> module x -> (B, out);
    ``decoder(out_shape, hidden, latent_dim, activation)`` -> module z -> (B, *out_shape);
    ``features`` (optional, for conditional models); ``fits(event_shape)`` (default: any shape)."""
    body = NetBody(encoder, decoder, features)
    NETS.register(name, description, body, replace=replace, fits=fits or (lambda event_shape: True))
    return body


def register_model(name: str, description: str, model: type, config: type, *, objectives: Iterable[str] | None = None,
                   conditional: bool = False, replace: bool = False) -> type:
    """A model: ``model(config, **parts)`` with ``encode`` / ``decode`` / ``prior`` returning
    distributions; ``config``: its dataclass (a subclass of klvae.models.VAEConfig)."""
    MODELS.register(name, description, model, replace=replace, config=config,
                    objectives=tuple(objectives) if objectives is not None else None, conditional=conditional,
                    dreg=False, free_bits=True, capacity=True, parts=())
    return model


def register_sampler(name: str, description: str, density: type | None = None, *, replace: bool = False) -> Any:
    """A sampler for ``klvae fit-sampler RUN --sampler NAME`` and ``klvae sample --from NAME``:
    ``density``, a subclass of :class:`klvae.samplers.CodeDensity` (its options: its
    ``config_class``, a SamplerConfig subclass) fitted to the codes of a run's training set."""
    return SAMPLERS.register(name, description, density, replace=replace, fitted=True)


def load_plugins(modules: Iterable[str] = (), entry_points: bool = True) -> list[str]:
    """Import ``modules`` (names on ``sys.path``) and, with ``entry_points``, every plugin of the
    entry-point group ``klvae.plugins`` (a module, or a function called with no arguments); each
    once. Returns what was loaded. A plugin that fails to load is a one-line KlvaeError."""
    loaded = []
    if entry_points:
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            key = f"entry point {point.name} ({point.value})"
            if key in _loaded:
                continue
            _load(key, point.load)
            loaded.append(key)
    for name in modules:
        if name not in _loaded:
            _load(name, lambda: importlib.import_module(name))
            loaded.append(name)
    return loaded


def _load(key: str, load: Callable[[], Any]) -> None:
    try:
        obj = load()
        if callable(obj) and not isinstance(obj, ModuleType):
            obj()
    except KlvaeError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the user's code: one line naming it
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise KlvaeError(f"cannot load plugin {key}: {type(err).__name__}: {first}; check the module name and "
                         "that it imports") from None
    _loaded.add(key)
