"""The MOSES metrics (klvae.evaluation.molecules): each building block against a brute-force or
closed-form value, the filters against RDKit's own PAINS catalogue, ChemNet against fcd_torch, and
the whole table against numbers of the benchmark's package (molsets 0.3.1) on a fixed sample of the
MOSES data. Deterministic: no randomness anywhere."""
from __future__ import annotations

import gzip
import itertools
import math
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from klvae import KlvaeError

pytest.importorskip("rdkit", reason="the molecule metrics need RDKit: pip install 'klvae[chem]'")
pytest.importorskip("fcd_torch", reason="the FCD needs fcd_torch: pip install 'klvae[chem]'")

from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator
from rdkit.Chem.FilterCatalog import FilterCatalog, FilterCatalogParams

from klvae.evaluation import molecule_features as mf
from klvae.evaluation import molecules
from klvae.evaluation.molecules import (canonical, cosine_similarity, fcd, fingerprints, fraction_unique,
                                        fraction_valid, internal_diversity, mol, molecule_stats, moses_metrics,
                                        novelty, passes_filters, snn)

DRUGS = [  # small drug-like molecules, all passing the filters
    "CC(=O)Oc1ccccc1C(=O)O", "Cn1c(=O)c2c(ncn2C)n(C)c1=O", "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "CC(=O)Nc1ccc(O)cc1",
    "CN1CCC[C@H]1c1cccnc1", "O=C(O)c1ccccc1O", "CCN(CC)CC(=O)Nc1c(C)cccc1C", "COc1ccc2[nH]cc(CCNC(C)=O)c2c1",
    "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc21", "Clc1ccc2c(c1)C(c1ccccc1)=NCC(=O)N2", "NS(=O)(=O)c1cc(C(=O)O)c(NCc2ccco2)cc1Cl",
    "CC(C)NCC(O)COc1cccc2ccccc12", "O=C1CCCN1", "c1ccc2c(c1)oc1ccccc12", "CC1(C)SC2C(NC(=O)Cc3ccccc3)C(=O)N2C1C(=O)O",
    "OCC1OC(O)C(O)C(O)C1O", "c1ccc(-c2ccccc2)cc1", "Cc1ccc(S(N)(=O)=O)cc1",
    "CN1CCN(C2=Nc3cc(Cl)ccc3Nc3ccccc32)CC1", "O=C(NCc1ccccc1)c1ccccn1",
]
# invalid, non-canonical, charged, disallowed-atom, 8-ring, PAINS and two-fragment SMILES
EXTRA = ["", "C1CC", "not a molecule", "c1cccc1", "C1=CC=CC=C1", "OCC", "C[N+](C)(C)C", "CCP", "C1CCCCCCC1",
         "O=C1NC(=S)SC1=Cc1ccccc1", "O=C1C=CC(=O)C=C1", "Oc1ccccc1O", "CC(=O)Nc1ccc(N=Nc2ccccc2)cc1", "[Na+].[Cl-]",
         "CCO.CC"]
PAINS = {"O=C1NC(=S)SC1=Cc1ccccc1": "ene_rhod", "O=C1C=CC(=O)C=C1": "quinone", "Oc1ccccc1O": "catechol",
         "CC(=O)Nc1ccc(N=Nc2ccccc2)cc1": "azo", "CN(C)c1ccc(N=Nc2ccccc2)cc1": "anil_di_alk",
         "Nc1ccc(C=NN)cc1": "hzone_anil"}  # the last matches the WEHI SMARTS only with explicit hydrogens
N_REF = 1000  # reference molecules per set in the comparison with molsets

# moses.metrics.get_all_metrics(generated, k=[1000, 10000], n_jobs=1, test=test, test_scaffolds=scaffolds,
# train=train) on ``moses_sample(root)``, run by this file's __main__ block below (molsets 0.3.1 with
# RDKit 2026.9.1, fcd_torch 1.0.7, torch 2.13.0+cpu, numpy 2.4.6, pandas 3.1.1).
MOLSETS = {
    "valid": 0.996958174904943, "unique@1000": 1.0, "unique@10000": 0.92372234935164,
    "FCD/Test": 4.2010974192457695, "FCD/TestSF": 7.869286943009598,
    "SNN/Test": 0.43514140354629965, "SNN/TestSF": 0.4199182130538444,
    "Frag/Test": 0.9908656370087742, "Frag/TestSF": 0.9813614879852154,
    "Scaf/Test": 0.47025392331032434, "Scaf/TestSF": 0.0,
    "IntDiv": 0.8616024401375887, "IntDiv2": 0.8506326029755051, "Filters": 0.9938977879481312,
    "Novelty": 0.8348472336911643,
}


def _head(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt") as f:
        return [line.strip() for line in itertools.islice(f, 1, n + 1)]


def moses_sample(root: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    """(generated, train, test, test_scaffolds): 1,000 test SMILES, 200 train SMILES (not novel),
    100 repeats and EXTRA as "generated"; the next N_REF test and the first N_REF scaffold-test SMILES
    as references; the first 20,000 train SMILES."""
    test = _head(root / "moses" / "test.csv.gz", 1000 + N_REF)
    train = _head(root / "moses" / "train.csv.gz", 20000)
    scaffolds = _head(root / "moses" / "test_scaffolds.csv.gz", N_REF)
    return test[:1000] + train[:200] + test[:100] + EXTRA, train, test[1000:], scaffolds


@pytest.fixture(scope="module")
def moses_root(shared_data) -> Path:
    return shared_data("moses", "test.csv.gz", "test_scaffolds.csv.gz", "train.csv.gz")


@pytest.fixture
def two_threads():
    """ChemNet's LSTMs are large matrix products: give torch both cores (the suite runs on one)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


# --- validity, uniqueness, novelty ----------------------------------------------------------------

def test_validity_counts_what_rdkit_parses_and_sanitises_and_never_the_empty_string():
    assert fraction_valid(["CCO", "c1ccccc1", "", "C1CC", "c1cccc1", "not a molecule"]) == pytest.approx(2 / 6)
    assert fraction_valid(EXTRA) == pytest.approx(11 / 15)
    assert mol("") is None and mol("c1cccc1") is None and mol("CCO") is not None


def test_canonical_smiles_are_rdkits_and_invalid_ones_are_none():
    assert canonical("OCC") == "CCO"
    assert canonical("C1=CC=CC=C1") == canonical("c1ccccc1") == "c1ccccc1"
    assert canonical("C1CC") is None


def test_unique_at_k_counts_distinct_among_the_first_k_and_warns_when_fewer():
    smiles = ["CCO", "CCN", "CCO", "CCC"]
    assert fraction_unique(smiles, 2) == 1.0
    assert fraction_unique(smiles, 4) == 0.75
    assert fraction_unique(smiles) == 0.75
    with pytest.warns(UserWarning, match="unique@10"):
        assert fraction_unique(smiles, 10) == 0.75


def test_novelty_is_the_share_of_distinct_molecules_absent_from_train():
    assert novelty(["CCO", "CCN", "CCO", "CCC"], train=["CCO", "O"]) == pytest.approx(2 / 3)
    assert novelty(["CCO"], train={"CCO"}) == 0.0


# --- fingerprints: SNN and internal diversity against brute force ---------------------------------

def _bitvects(smiles):
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    return [generator.GetFingerprint(Chem.MolFromSmiles(s)) for s in smiles]


def test_fingerprints_are_morgan_radius_2_with_1024_bits():
    fps = fingerprints([mol(s) for s in DRUGS])
    assert fps.shape == (len(DRUGS), 1024) and fps.dtype == np.uint8
    assert [list(np.flatnonzero(row)) for row in fps] == [list(v.GetOnBits()) for v in _bitvects(DRUGS)]


@pytest.mark.parametrize("p", [1, 2])
def test_internal_diversity_equals_the_double_loop_over_all_pairs(monkeypatch, p):
    monkeypatch.setattr(molecules, "BLOCK", 7)  # several row blocks
    smiles = DRUGS + DRUGS[:5]  # repeats count, as in MOSES
    vects = _bitvects(smiles)
    rows = [np.mean(np.array(DataStructs.BulkTanimotoSimilarity(v, vects)) ** p) ** (1 / p) for v in vects]
    expected = 1 - np.mean(rows)
    assert internal_diversity(fingerprints([mol(s) for s in smiles]), p=p) == pytest.approx(expected, abs=1e-6)


def test_snn_equals_the_mean_nearest_neighbour_similarity_by_brute_force(monkeypatch):
    monkeypatch.setattr(molecules, "BLOCK", 6)
    gen, ref = DRUGS[::2] + EXTRA[4:9], DRUGS[1::2]
    ref_vects = _bitvects(ref)
    expected = np.mean([max(DataStructs.BulkTanimotoSimilarity(v, ref_vects)) for v in _bitvects(gen)])
    value = snn(fingerprints([mol(s) for s in gen]), fingerprints([mol(s) for s in ref]))
    assert value == pytest.approx(expected, abs=1e-6)
    assert snn(fingerprints([mol(s) for s in ref]), fingerprints([mol(s) for s in ref])) == pytest.approx(1.0)


# --- fragments, scaffolds, cosine similarity -------------------------------------------------------

def test_cosine_similarity_of_counts():
    assert cosine_similarity(Counter(a=2, b=1), Counter(a=2, b=1)) == pytest.approx(1.0)
    assert cosine_similarity(Counter(a=1, b=1), Counter(a=3)) == pytest.approx(1 / math.sqrt(2))
    assert cosine_similarity(Counter(a=1), Counter(b=1)) == 0.0
    assert math.isnan(cosine_similarity(Counter(), Counter(a=1)))


def test_scaffolds_need_two_rings_and_fragments_are_brics_pieces():
    assert mf.scaffold(mol("c1ccccc1CCO")) is None  # one ring: not counted, as in MOSES
    assert mf.scaffold(mol("Cc1ccc(-c2ccccc2)cc1")) == "c1ccc(-c2ccccc2)cc1"
    assert sorted(mf.fragments(mol("CC(=O)Nc1ccccc1"))) == ["[1*]C(C)=O", "[16*]c1ccccc1", "[5*]N[5*]"]


# --- filters ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("smiles", sorted(PAINS))
def test_filters_reject_molecules_rdkits_pains_catalogue_flags(smiles):
    params = FilterCatalogParams()
    params.AddCatalog(FilterCatalogParams.FilterCatalogs.PAINS)
    hit = FilterCatalog(params).GetFirstMatch(mol(smiles))
    assert hit is not None and PAINS[smiles] in hit.GetDescription()
    assert not passes_filters(mol(smiles))


def test_filters_reject_charges_disallowed_atoms_and_large_rings_and_pass_plain_drugs():
    for smiles in ["C[N+](C)(C)C", "CCP", "CCI", "C1CCCCCCC1", "[Na+].[Cl-]"]:
        assert not passes_filters(mol(smiles)), smiles
    assert all(passes_filters(mol(s)) for s in DRUGS + ["C1CCCCCC1", "CCO.CC"])
    assert len(mf.filter_smarts()) == 22 + 480  # MCF + WEHI PAINS, as molsets loads them


# --- ChemNet and the FCD ---------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:`row_stack` alias is deprecated")  # inside fcd_torch
def test_chemnet_reads_smiles_as_fcd_torch_does_and_gives_its_activations():
    from fcd_torch import FCD
    from fcd_torch.utils import SmilesDataset

    odd = ["C" * 400, "ClC(Br)[Si](C)(C)C", "[Li]C", "CCO.CC", "C=C#N", "c1ccsc1", "C[Se]C", "[2H]C@@"]
    smiles = DRUGS + odd
    theirs = SmilesDataset(smiles, canonize=False)
    expected = np.stack([theirs[i] for i in range(len(smiles))]).transpose(0, 2, 1)
    np.testing.assert_array_equal(mf.chemnet_inputs(smiles).numpy(), expected.astype(np.float32))
    activations = FCD(canonize=False, batch_size=8).get_predictions(DRUGS)
    np.testing.assert_allclose(mf.chemnet_activations(DRUGS, batch_size=7), activations, atol=1e-5)


def test_fcd_of_a_set_with_itself_is_zero_and_with_another_set_positive():
    a, b = molecule_stats(DRUGS), molecule_stats(EXTRA[4:6] + EXTRA[9:13] + DRUGS[:6])
    assert fcd(a, a) == pytest.approx(0.0, abs=1e-6)
    assert fcd(a, b) > 1.0 and fcd(a, b) == pytest.approx(fcd(b, a), rel=1e-6)


@pytest.mark.filterwarnings("ignore:unique@")
def test_a_set_scored_against_itself_has_fcd_0_and_snn_frag_scaf_1():
    m = moses_metrics(DRUGS, train=DRUGS[:5], test=DRUGS, test_scaffolds=molecule_stats(DRUGS))
    assert list(m) == list(MOLSETS)
    for key in ["valid", "unique@1000", "SNN/Test", "Frag/Test", "Scaf/Test", "Scaf/TestSF", "Filters"]:
        assert m[key] == pytest.approx(1.0), key
    assert m["FCD/Test"] == pytest.approx(0.0, abs=1e-6) and m["FCD/TestSF"] == pytest.approx(0.0, abs=1e-6)
    assert m["Novelty"] == pytest.approx(15 / 20)


# --- errors ----------------------------------------------------------------------------------------

def test_missing_packages_are_one_line_errors_naming_the_extra(monkeypatch):
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "rdkit", None)  # what a missing package looks like to `import`
        with pytest.raises(KlvaeError, match=r"need RDKit: pip install 'klvae\[chem\]'$"):
            mol("CCO")
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "fcd_torch", None)
        mf._chemnet.cache_clear()
        with pytest.raises(KlvaeError, match=r"FCD needs fcd_torch: pip install 'klvae\[chem\]'$"):
            mf.chemnet_activations(["CCO"])
    mf._chemnet.cache_clear()


def test_bad_arguments_are_user_errors():
    with pytest.raises(KlvaeError, match="invalid 'C1CC'"):
        molecule_stats(["CCO", "C1CC", "CCN"])
    with pytest.raises(KlvaeError, match="n_jobs must be a positive integer; got 0"):
        moses_metrics(DRUGS, DRUGS, DRUGS, DRUGS, n_jobs=0)
    with pytest.raises(KlvaeError, match="empty"):
        moses_metrics([], DRUGS, DRUGS, DRUGS)


def test_fewer_than_two_valid_molecules_leave_the_set_metrics_nan():
    m = moses_metrics(["CCO", "C1CC", ""], DRUGS, DRUGS, DRUGS)
    assert m["valid"] == pytest.approx(1 / 3) and list(m) == list(MOLSETS)
    assert all(math.isnan(v) for k, v in m.items() if k != "valid")


# --- the whole table against molsets ---------------------------------------------------------------

def test_metrics_equal_molsets_on_a_sample_of_the_moses_data(moses_root, two_threads):
    generated, train, test, scaffolds = moses_sample(moses_root)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="unique@10000")  # 1,311 valid molecules, as in molsets
        ours = moses_metrics(generated, train, test, scaffolds, n_jobs=2)
    assert list(ours) == list(MOLSETS)
    for key, theirs in MOLSETS.items():  # 1e-5: one molecule in 1,315 moves a fraction by 7.6e-4
        assert ours[key] == pytest.approx(theirs, abs=1e-3 if key.startswith("FCD") else 1e-5), key


if __name__ == "__main__":  # MOLSETS above: molsets in its own environment, from the repository root:
    # python3.11 -m venv /tmp/moses-venv
    # echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/moses-venv/lib/python3.11/site-packages/klvae.pth
    # /tmp/moses-venv/bin/pip install --no-deps -c constraints.txt pandas pytz molsets==0.3.1
    # PYTHONPATH=src /tmp/moses-venv/bin/python tests/test_molecules.py ../shared/data
    import json
    import types

    import pandas as pd

    pd.DataFrame.append = lambda self, other, sort=False: pd.concat([self, other], sort=sort)  # gone in pandas 2
    sys.modules["rdkit.six"] = types.SimpleNamespace(iteritems=lambda d: iter(d.items()))  # gone from RDKit
    from moses.metrics import get_all_metrics

    generated, train, test, scaffolds = moses_sample(Path(sys.argv[1]))
    reference = get_all_metrics(generated, k=[1000, 10000], n_jobs=1, test=test, test_scaffolds=scaffolds, train=train)
    print(json.dumps({key: float(reference[key]) for key in MOLSETS}, indent=1))
