"""What the MOSES metrics (Polykovskiy et al. 2020) need of one molecule, computed as the benchmark's
package (molsets 0.3.1) computes it: RDKit parsing, Morgan fingerprints, BRICS fragments,
Bemis-Murcko scaffolds, the MCF + PAINS filters, and ChemNet activations for the FCD.

RDKit and fcd_torch are imported when first needed (``pip install 'klvae[chem]'``).
"""
from __future__ import annotations

import csv
import re
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np

from klvae.errors import KlvaeError

FP_RADIUS, FP_BITS = 2, 1024  # Morgan fingerprints as MOSES's SNN and IntDiv use them
MIN_SCAFFOLD_RINGS = 2  # MOSES counts only scaffolds with at least two rings
ALLOWED_ATOMS = frozenset({"C", "N", "S", "O", "F", "Cl", "Br", "H"})  # the Filters metric's rule
MAX_RING = 7  # the Filters metric rejects rings of 8 atoms or more
FILTERS_DIR = Path(__file__).with_name("moses_filters")  # molsets' mcf.csv and wehi_pains.csv (MIT)
# fcd_torch's SMILES reading: its 35 symbols, the last two the unknown-symbol 'X' and the end mark '.'
CHEMNET_VOCAB = ("C", "N", "O", "H", "F", "Cl", "P", "B", "Br", "S", "I", "Si", "#", "(", ")", "+", "-", "1", "2",
                 "3", "4", "5", "6", "7", "8", "=", "[", "]", "@", "c", "n", "o", "s", "X", ".")
CHEMNET_INDEX = {symbol: i for i, symbol in enumerate(CHEMNET_VOCAB)}
CHEMNET_LENGTH = 350  # every SMILES is read as 350 one-hot rows, the tail zero
_INSTALL = "pip install 'klvae[chem]'"


def _rdkit():
    try:
        from rdkit import Chem
    except ImportError as e:
        raise KlvaeError(f"the molecule metrics need RDKit: {_INSTALL}") from e
    return Chem


@contextmanager
def quiet_rdkit():
    """Silence RDKit's error log (one line per unparsable SMILES) inside the block."""
    _rdkit()
    from rdkit import rdBase

    with rdBase.BlockLogs():
        yield


def mol(smiles: str):
    """The sanitised RDKit molecule of ``smiles``, or None when it does not parse (an empty string is
    invalid, as in MOSES)."""
    Chem = _rdkit()
    if not smiles:
        return None
    m = Chem.MolFromSmiles(smiles)
    if m is None:
        return None
    try:
        Chem.SanitizeMol(m)
    except ValueError:
        return None
    return m


def smiles_of(m) -> str:
    """RDKit's canonical SMILES of a molecule."""
    return _rdkit().MolToSmiles(m)


def canonical(smiles: str) -> str | None:
    """RDKit's canonical SMILES of ``smiles``, or None when it is invalid."""
    m = mol(smiles)
    return None if m is None else smiles_of(m)


@cache
def _morgan():
    from rdkit.Chem import rdFingerprintGenerator

    return rdFingerprintGenerator.GetMorganGenerator(radius=FP_RADIUS, fpSize=FP_BITS)


def fingerprints(mols) -> np.ndarray:
    """Morgan fingerprints (radius 2, 1024 bits) of RDKit molecules: (N, 1024) uint8 of 0/1."""
    rows = [_morgan().GetFingerprintAsNumPy(m) for m in mols]
    return np.stack(rows).astype(np.uint8) if rows else np.zeros((0, FP_BITS), np.uint8)


def fragments(m) -> list[str]:
    """SMILES of the BRICS fragments of one molecule (with their dummy attachment atoms)."""
    Chem = _rdkit()
    return Chem.MolToSmiles(Chem.FragmentOnBRICSBonds(m)).split(".")


def scaffold(m) -> str | None:
    """Canonical SMILES of the Bemis-Murcko scaffold, or None when it has fewer than two rings."""
    from rdkit.Chem.Scaffolds import MurckoScaffold

    try:
        s = MurckoScaffold.GetScaffoldForMol(m)
    except (ValueError, RuntimeError):
        return None
    smiles = _rdkit().MolToSmiles(s)
    return smiles if smiles and s.GetRingInfo().NumRings() >= MIN_SCAFFOLD_RINGS else None


def filter_smarts() -> list[str]:
    """The SMARTS of MOSES's medicinal-chemistry (MCF, 22) and PAINS (WEHI list, 479) filters."""
    with open(FILTERS_DIR / "mcf.csv", newline="") as f:
        mcf = [row["smarts"] for row in csv.DictReader(f)]
    with open(FILTERS_DIR / "wehi_pains.csv", newline="") as f:
        pains = [row[0].strip() for row in csv.reader(f) if row]
    return mcf + pains


@cache
def _filter_catalog():
    from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogEntry, SmartsMatcher

    catalog = FilterCatalog()
    for i, smarts in enumerate(filter_smarts()):
        pattern = _rdkit().MolFromSmarts(smarts)
        assert pattern is not None, smarts
        catalog.AddEntry(FilterCatalogEntry(str(i), SmartsMatcher(str(i), pattern, 1)))
    return catalog


def passes_filters(m) -> bool:
    """MOSES's Filters rule: no ring of 8+ atoms, no charged atom, only C N S O F Cl Br H, no MCF or
    PAINS match (matched with explicit hydrogens), and a SMILES that parses again."""
    Chem = _rdkit()
    if m is None or any(len(r) > MAX_RING for r in m.GetRingInfo().AtomRings()):
        return False
    atoms = list(m.GetAtoms())
    if any(a.GetFormalCharge() != 0 or a.GetSymbol() not in ALLOWED_ATOMS for a in atoms):
        return False
    if _filter_catalog().HasMatch(Chem.AddHs(m)):
        return False
    smiles = Chem.MolToSmiles(m, isomericSmiles=False)
    return bool(smiles) and Chem.MolFromSmiles(smiles) is not None


def chemnet_tokens(smiles: str) -> list[int]:
    """fcd_torch's reading of a SMILES as ChemNet symbol indices: a character followed by r, i or l
    is one symbol, reading stops at the first '.', at most 349 symbols, then the end mark."""
    symbols = re.findall(r".[ril]?", smiles.split(".", 1)[0])[: CHEMNET_LENGTH - 1]
    return [CHEMNET_INDEX.get(s, CHEMNET_INDEX["X"]) for s in symbols] + [CHEMNET_INDEX["."]]


def chemnet_inputs(smiles: list[str]):
    """ChemNet's input for SMILES read as given: (N, 35, 350) float32, one-hot scaled by 1/35."""
    import torch

    tokens = [chemnet_tokens(s) for s in smiles]
    rows = np.repeat(np.arange(len(tokens)), [len(t) for t in tokens])
    places = np.concatenate([np.arange(len(t)) for t in tokens] + [np.zeros(0, int)])
    x = torch.zeros(len(smiles), CHEMNET_LENGTH, len(CHEMNET_VOCAB))
    x[rows, places, np.concatenate(tokens + [[]]).astype(int)] = 1.0 / len(CHEMNET_VOCAB)
    return x.transpose(1, 2)


@cache
def _chemnet():
    try:
        import fcd_torch
        from fcd_torch.utils import load_imported_model
    except ImportError as e:
        raise KlvaeError(f"the FCD needs fcd_torch: {_INSTALL}") from e
    import torch

    weights = Path(fcd_torch.__file__).with_name("ChemNet_v0.13_pretrained.pt")  # ships in its wheel
    return load_imported_model(torch.load(weights, map_location="cpu", weights_only=True)).eval()


def chemnet_activations(smiles: list[str], batch_size: int = 512) -> np.ndarray:
    """ChemNet's penultimate activations, (N, 512) float32, on the CPU; the SMILES are read as given
    (fcd_torch canonicalises them first: pass canonical SMILES)."""
    import torch

    model, out = _chemnet(), [np.zeros((0, 512), np.float32)]
    with torch.no_grad():
        for i in range(0, len(smiles), batch_size):
            out.append(model(chemnet_inputs(smiles[i:i + batch_size])).numpy())
    return np.concatenate(out)
