"""Properties of molecules computed with RDKit and cut into classes, so that a conditional SMILES VAE
can be asked for molecules of a property's range (``--label-from logp --label-bins 3``).

The bins are the property's quantiles on the training split (equal-sized classes), named
``logp-q1`` (lowest) to ``logp-qB``; their inner edges go into the run's vocab.json.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from klvae.errors import KlvaeError
from klvae.registry import Registry

PROPERTIES = Registry("property", "--label-from")


def _logp():
    from rdkit.Chem import Crippen

    return Crippen.MolLogP


def _qed():
    from rdkit.Chem import QED

    return QED.qed


def _weight():
    from rdkit.Chem import Descriptors

    return Descriptors.MolWt


# an entry's builder gives the function of an RDKit molecule (RDKit is imported only then)
PROPERTIES.register("logp", "Crippen's octanol-water partition coefficient (RDKit MolLogP), as MOSES reports it",
                    _logp)
PROPERTIES.register("qed", "quantitative estimate of drug-likeness (Bickerton et al. 2012; RDKit QED), in [0, 1]",
                    _qed)
PROPERTIES.register("weight", "molecular weight in daltons (RDKit MolWt)", _weight)


def property_values(name: str, smiles: list[str]) -> np.ndarray:
    """The property ``name`` of each SMILES (float64); NaN where RDKit cannot parse one."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        raise KlvaeError(f"--label-from {name} computes a property of molecules with RDKit: "
                         "pip install 'klvae[chem]'") from None
    RDLogger.DisableLog("rdApp.*")
    compute = PROPERTIES[name].builder()
    out = np.full(len(smiles), np.nan)
    for i, text in enumerate(smiles):
        mol = Chem.MolFromSmiles(text)
        if mol is not None:
            out[i] = compute(mol)
    return out


@dataclass(frozen=True)
class PropertyBins:
    """A property cut at ``edges`` (ascending inner edges: B - 1 of them for B classes)."""

    name: str
    edges: tuple[float, ...]

    @classmethod
    def fit(cls, name: str, train_values: np.ndarray, bins: int) -> "PropertyBins":
        """Bins of equal share of the training values (their quantiles)."""
        finite = train_values[np.isfinite(train_values)]
        if len(finite) < bins:
            raise KlvaeError(f"--label-bins {bins} needs at least {bins} training molecules with a {name}; got "
                             f"{len(finite)}")
        edges = np.quantile(finite, np.arange(1, bins) / bins)
        if np.any(np.diff(edges) <= 0):
            raise KlvaeError(f"{name} takes too few distinct values for {bins} bins of equal share; lower --label-bins")
        return cls(name, tuple(float(e) for e in edges))

    @property
    def names(self) -> list[str]:
        """The class names, lowest bin first: logp-q1 .. logp-qB (zero-padded past 9 bins)."""
        width = len(str(len(self.edges) + 1))
        return [f"{self.name}-q{i + 1:0{width}d}" for i in range(len(self.edges) + 1)]

    def classes(self, values: np.ndarray) -> np.ndarray:
        """The class index of each value (NaN falls in no class: -1)."""
        out = np.searchsorted(np.asarray(self.edges), values, side="right")
        return np.where(np.isfinite(values), out, -1)

    def describe(self) -> list[str]:
        """Each class's range, e.g. "logp-q1: logp < 1.95"."""
        e, names = self.edges, self.names
        if not e:
            return [f"{names[0]}: every {self.name}"]
        return ([f"{names[0]}: {self.name} < {e[0]:.3g}"]
                + [f"{names[i]}: {e[i - 1]:.3g} <= {self.name} < {e[i]:.3g}" for i in range(1, len(e))]
                + [f"{names[-1]}: {self.name} >= {e[-1]:.3g}"])
