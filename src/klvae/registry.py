"""Registries: one per kind of component (latent families, priors, likelihoods, network bodies,
decoders, models, objectives, KL schedules, datasets, samplers).

An entry is a name, a one-line description, a builder and the capabilities that other code asks
about (a latent's geometry, the latents a prior fits, the objectives a model trains with, ...).
Code outside an entry never compares its name: it looks the entry up and reads its capabilities.

Each kind's registry lives in the module that defines its built-in entries (``klvae.latents.LATENTS``,
``klvae.models.MODELS``, ...); ``klvae.register_latent`` and its siblings add entries from a user's
own code, and the entry-point group ``klvae.plugins`` from a pip-installed package (see
:mod:`klvae.plugins`).
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from klvae.errors import KlvaeError


@dataclass(frozen=True)
class Entry:
    """One registered component: ``builder`` makes it; ``capabilities`` say what it can do."""

    name: str
    description: str
    builder: Any
    capabilities: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, key: str) -> Any:  # entry.geometry reads capabilities["geometry"]
        caps = self.__dict__.get("capabilities", {})
        if key in caps:
            return caps[key]
        raise AttributeError(f"{self.__dict__.get('name', '?')!r} declares no capability {key!r}")

    def get(self, key: str, default: Any = None) -> Any:
        return self.capabilities.get(key, default)


class Registry:
    """Named entries of one kind. ``kind`` names it in messages ("latent"), ``option`` is the
    command-line flag that picks an entry ("--latent")."""

    def __init__(self, kind: str, option: str | None = None):
        self.kind, self.option = kind, option or f"--{kind}"
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, description: str, builder: Any = None, *, replace: bool = False,
                 **capabilities: Any) -> Any:
        """Add an entry; with no ``builder``, a decorator that registers what it decorates.
        A name already taken is a KlvaeError unless ``replace``."""
        if builder is None:
            def decorate(obj: Any) -> Any:
                self.register(name, description, obj, replace=replace, **capabilities)
                return obj
            return decorate
        if not isinstance(name, str) or not name or name != name.strip():
            raise KlvaeError(f"a {self.kind} name must be a non-empty string without spaces around it; got {name!r}")
        if not isinstance(description, str) or "\n" in description.strip():
            raise KlvaeError(f"the description of {self.kind} {name!r} must be one line of text")
        if name in self._entries and not replace:
            raise KlvaeError(f"{self.kind} {name!r} is already registered; pick another name or pass replace=True")
        self._entries[name] = Entry(name, description.strip(), builder, dict(capabilities))
        return builder

    def __getitem__(self, name: str) -> Entry:
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None:
            raise KlvaeError(self.unknown(name))
        return entry

    @property
    def key(self) -> str:
        """The config key of the option ("--kl-schedule" -> "kl_schedule")."""
        return self.option.lstrip("-").replace("-", "_")

    def unknown(self, name: Any, extra: tuple[str, ...] = ()) -> str:
        """The one-line message for a name that is not registered: the choices, a close match, and
        where a plugin's entries come from. ``extra``: choices beside the entries (e.g. "auto")."""
        choices = [*extra, *self._entries]
        return (f"{self.key} must be one of {', '.join(choices)}; got {name!r}{did_you_mean(str(name), choices)} "
                f"(a {self.kind} from a plugin needs --plugin MODULE, or its package installed)")

    def check(self, name: str) -> str:
        """``name`` if registered, else the KlvaeError of :meth:`unknown`."""
        self[name]
        return name

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self[name].builder(*args, **kwargs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def where(self, test: Callable[[Entry], bool]) -> tuple[str, ...]:
        """The names of the entries that pass ``test``."""
        return tuple(e.name for e in self._entries.values() if test(e))

    def help(self) -> str:
        """'name: description; ...' for ``--help`` texts."""
        return "; ".join(f"{e.name}: {e.description}" for e in self._entries.values())


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' for the closest of ``choices``, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
