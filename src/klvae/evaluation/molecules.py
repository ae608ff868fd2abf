"""The MOSES benchmark's metrics of generated SMILES (Polykovskiy et al., *Molecular Sets (MOSES)*,
Frontiers in Pharmacology 2020), defined as its package molsets 0.3.1 defines them.

``moses_metrics`` gives the columns of the MOSES table: valid, unique@1000, unique@10000, FCD, SNN,
Frag and Scaf against the test and scaffold-test sets, IntDiv, IntDiv2, Filters and Novelty. Every
metric but validity is computed on the valid molecules, each read again from its canonical SMILES.
The property distances (logP, SA, QED, weight) are not computed. Needs ``pip install
'klvae[chem]'`` (RDKit, fcd_torch); the FCD runs ChemNet on the CPU, a few ms a molecule.
"""
from __future__ import annotations

import multiprocessing
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import numpy as np

from klvae.errors import KlvaeError
from klvae.evaluation import molecule_features as mf
from klvae.evaluation.molecule_features import canonical, fingerprints, mol, passes_filters  # noqa: F401
from klvae.evaluation.sample_quality import gaussian_frechet

UNIQUE_AT = (1000, 10000)
BLOCK = 1024  # rows of a Tanimoto block: (1024, M) float32, 40 MB per 10,000 molecules


@dataclass(frozen=True)
class MoleculeStats:
    """What the set-to-set metrics need of a set of N valid molecules: ChemNet activations' mean
    (512,) and covariance (512, 512), Morgan fingerprints (N, 1024) uint8, and the counts of BRICS
    fragments and of Bemis-Murcko scaffolds (those with two rings or more)."""
    fcd_mean: np.ndarray
    fcd_cov: np.ndarray
    fingerprints: np.ndarray
    fragments: Counter
    scaffolds: Counter


class _Molecule(NamedTuple):
    canonical: str  # canonical SMILES of the input
    smiles: str  # canonical SMILES of the molecule read from ``canonical``: what ChemNet reads
    fingerprint: np.ndarray
    fragments: list[str]
    scaffold: str | None
    passes: bool | None


def _describe(smiles: str, reread: bool) -> _Molecule | None:
    """One SMILES -> its features, or None when invalid; ``reread``: compute them on the molecule
    of the canonical SMILES and check the filters (MOSES does both for generated molecules)."""
    m = mol(smiles)
    if m is None:
        return None
    first = mf.smiles_of(m)
    if reread:
        m = mol(first) or m  # a canonical SMILES that does not parse again: keep the first reading
    return _Molecule(first, mf.smiles_of(m) if reread else first, fingerprints([m])[0],
                     mf.fragments(m), mf.scaffold(m), passes_filters(m) if reread else None)


def _map(fn: Callable, items: Sequence, n_jobs: int) -> list:
    if n_jobs == 1 or len(items) < 100 * n_jobs:
        return [fn(x) for x in items]
    with multiprocessing.Pool(n_jobs) as pool:
        return pool.map(fn, items, chunksize=max(1, len(items) // (8 * n_jobs)))


def _stats(molecules: list[_Molecule], batch_size: int) -> MoleculeStats:
    activations = mf.chemnet_activations([x.smiles for x in molecules], batch_size).astype(np.float64)
    return MoleculeStats(
        fcd_mean=activations.mean(0), fcd_cov=np.cov(activations, rowvar=False),
        fingerprints=np.stack([x.fingerprint for x in molecules]),
        fragments=Counter(f for x in molecules for f in x.fragments),
        scaffolds=Counter(x.scaffold for x in molecules if x.scaffold is not None))


def molecule_stats(smiles: Sequence[str], n_jobs: int = 1, batch_size: int = 512) -> MoleculeStats:
    """The statistics of a reference set (all valid, at least 2 SMILES), computed once and passed
    to :func:`moses_metrics` in place of the SMILES to score several generated sets against it."""
    _check_jobs(n_jobs, batch_size)
    with mf.quiet_rdkit():
        molecules = _map(partial(_describe, reread=False), list(smiles), n_jobs)
    bad = next((s for s, x in zip(smiles, molecules) if x is None), None)
    if bad is not None or len(molecules) < 2:
        raise KlvaeError(f"a reference set needs 2 or more valid SMILES; got {len(molecules)} SMILES"
                         + (f", among them the invalid {bad!r}" if bad is not None else ""))
    return _stats(molecules, batch_size)


def fraction_valid(smiles: Sequence[str]) -> float:
    """The fraction of SMILES that RDKit parses and sanitises."""
    with mf.quiet_rdkit():
        return sum(mol(s) is not None for s in smiles) / len(smiles)


def fraction_unique(canonical_smiles: Sequence[str], k: int | None = None) -> float:
    """Distinct SMILES among the first ``k`` (all when fewer, with a warning, as MOSES does)."""
    if k is not None and len(canonical_smiles) < k:
        warnings.warn(f"unique@{k} of only {len(canonical_smiles)} valid molecules", stacklevel=2)
    head = canonical_smiles[:k]
    return len(set(head)) / len(head)


def novelty(canonical_smiles: Collection[str], train: Collection[str]) -> float:
    """The fraction of distinct SMILES absent from ``train`` (compared as given: MOSES's train file
    holds canonical SMILES)."""
    distinct = set(canonical_smiles)
    return len(distinct.difference(train)) / len(distinct)


def _tanimoto_blocks(a: np.ndarray, b: np.ndarray):
    """Yield (start, T): Tanimoto similarities of rows a[start:start+BLOCK] to every row of b, float32
    (block, M); two empty fingerprints have similarity 1, as in MOSES."""
    b32 = b.astype(np.float32)
    b_bits = b32.sum(1)
    for start in range(0, len(a), BLOCK):
        a32 = a[start:start + BLOCK].astype(np.float32)
        both = a32 @ b32.T  # exact: counts below 2**24
        union = a32.sum(1)[:, None] + b_bits[None, :] - both
        yield start, np.where(union > 0, both / np.maximum(union, 1), np.float32(1))


def snn(fps: np.ndarray, ref_fps: np.ndarray) -> float:
    """SNN: the mean over fps (N, B) of the largest Tanimoto similarity to a row of ref_fps (M, B)."""
    return float(np.mean(np.concatenate([t.max(1) for _, t in _tanimoto_blocks(fps, ref_fps)])))


def internal_diversity(fps: np.ndarray, p: int = 1) -> float:
    """IntDiv_p = 1 - mean_i (mean_j T(i, j)^p)^(1/p) over all pairs of rows of fps (N, B), i = j
    and repeated molecules included, as in MOSES."""
    rows = [(t ** p).mean(1, dtype=np.float64) for _, t in _tanimoto_blocks(fps, fps)]
    return float(1 - np.mean(np.concatenate(rows) ** (1 / p)))


def cosine_similarity(counts: Counter, ref_counts: Counter) -> float:
    """Cosine similarity of two count vectors indexed by name (a missing name counts 0); NaN if
    either is empty."""
    if not counts or not ref_counts:
        return float("nan")
    dot = sum(n * ref_counts.get(k, 0) for k, n in counts.items())
    norms = np.sqrt(sum(n * n for n in counts.values()) * sum(n * n for n in ref_counts.values()))
    return float(dot / norms)


def fcd(stats: MoleculeStats, ref: MoleculeStats) -> float:
    """Fréchet ChemNet Distance between two sets' statistics (0 for identical statistics)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):  # 512 x 512 eigenproblems: threads gain little and,
        # on a busy machine, multi-threaded OpenBLAS takes seconds instead of tens of milliseconds
        return gaussian_frechet(stats.fcd_mean, stats.fcd_cov, ref.fcd_mean, ref.fcd_cov)


def _check_jobs(n_jobs: int, batch_size: int) -> None:
    for name, value in (("n_jobs", n_jobs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise KlvaeError(f"{name} must be a positive integer; got {value!r}")


def moses_metrics(generated: Sequence[str], train: Collection[str], test: Sequence[str] | MoleculeStats,
                  test_scaffolds: Sequence[str] | MoleculeStats, n_jobs: int = 1,
                  batch_size: int = 512) -> dict[str, float]:
    """The MOSES table's metrics of ``generated`` SMILES, keyed as in the table; ``test`` and
    ``test_scaffolds`` are SMILES or their :func:`molecule_stats`; ``train`` canonical SMILES (a set
    is used as is). ``n_jobs`` processes run RDKit; ``batch_size`` SMILES go through ChemNet at once.
    With fewer than 2 valid molecules every metric but ``valid`` is NaN."""
    _check_jobs(n_jobs, batch_size)
    if len(generated) == 0:
        raise KlvaeError("moses_metrics needs generated SMILES; got an empty list")
    with mf.quiet_rdkit():
        described = _map(partial(_describe, reread=True), list(generated), n_jobs)
    valid = [x for x in described if x is not None]
    out = {"valid": len(valid) / len(generated)}
    if len(valid) < 2:
        return out | dict.fromkeys(_KEYS[1:], float("nan"))
    refs = {name: ref if isinstance(ref, MoleculeStats) else molecule_stats(ref, n_jobs, batch_size)
            for name, ref in (("Test", test), ("TestSF", test_scaffolds))}
    gen = _stats(valid, batch_size)
    for k in UNIQUE_AT:
        out[f"unique@{k}"] = fraction_unique([x.canonical for x in valid], k)
    for metric, fn in (("FCD", fcd), ("SNN", lambda g, r: snn(g.fingerprints, r.fingerprints)),
                       ("Frag", lambda g, r: cosine_similarity(g.fragments, r.fragments)),
                       ("Scaf", lambda g, r: cosine_similarity(g.scaffolds, r.scaffolds))):
        out |= {f"{metric}/{name}": fn(gen, ref) for name, ref in refs.items()}
    out["IntDiv"] = internal_diversity(gen.fingerprints, p=1)
    out["IntDiv2"] = internal_diversity(gen.fingerprints, p=2)
    out["Filters"] = float(np.mean([x.passes for x in valid]))
    out["Novelty"] = novelty([x.smiles for x in valid], train)
    return out


_KEYS = ("valid", *(f"unique@{k}" for k in UNIQUE_AT),
         *(f"{m}/{r}" for m in ("FCD", "SNN", "Frag", "Scaf") for r in ("Test", "TestSF")),
         "IntDiv", "IntDiv2", "Filters", "Novelty")
