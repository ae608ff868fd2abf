"""A sampler fitted to a run's codes, as the run directory keeps it."""
from __future__ import annotations

from dataclasses import dataclass, field

from klvae.errors import KlvaeError
from klvae.samplers.density import CodeDensity

ALL = "all"  # the key of the one density of an unconditional run (else class0, class1, ...)


def class_key(label: int | None) -> str:
    return ALL if label is None else f"class{label}"


@dataclass
class FittedSampler:
    """``name`` (its files in RUN/samplers/), the ``sampler`` entry it is, its densities (one, or
    one per class of a conditional run) and what its fit reported."""

    name: str
    sampler: str
    densities: dict[str, CodeDensity]
    report: dict = field(default_factory=dict)

    def density(self, label: int | None) -> CodeDensity:
        """The density to draw z from: the run's one, or class ``label``'s."""
        if ALL in self.densities:
            return self.densities[ALL]
        if label is None:
            raise KlvaeError(f"--from {self.name} of a conditional run needs --class C: the sampler is fitted to the "
                             "codes of each class")
        if class_key(label) not in self.densities:
            raise KlvaeError(f"sampler {self.name} has no density of class {label}: that class had no training "
                             "codes; pick another --class")
        return self.densities[class_key(label)]
