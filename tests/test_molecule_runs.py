"""A SMILES VAE end to end on molecules written by the test: labels from a property's quantile
bins (--label-from logp), stored in vocab.json and equal to RDKit's values cut at the training
median; `klvae molecules --class` on a conditional run; the one-line errors of bad use.

Seed policy: the run is seeded (seed 0) and tiny; no check depends on what it learned."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import klvae
from helpers import assert_user_error, cli
from klvae.run import RunDir

pytest.importorskip("rdkit", reason="molecule runs need RDKit: pip install 'klvae[chem]'")
pytest.importorskip("fcd_torch", reason="the MOSES metrics need fcd_torch: pip install 'klvae[chem]'")
pytestmark = pytest.mark.filterwarnings("ignore::klvae.diagnostics.CollapseWarning", "ignore::UserWarning")
from rdkit import Chem  # noqa: E402
from rdkit.Chem import Crippen  # noqa: E402

PARTS = ["C", "CC", "CCC", "CCCC", "CCO", "OCCO", "CN", "NCCN", "c1ccccc1", "C(F)(F)F", "CCl", "CBr", "OC(O)CO"]
TINY = {"model": "seqvae", "latent_dim": 4, "hidden": [16], "embedding_dim": 8, "epochs": 2, "batch_size": 16,
        "progress": False, "max_length": 30, "seed": 0}  # a CSV whose column is smiles: the SMILES tokenizer


@pytest.fixture(scope="module")
def smiles_csv(tmp_path_factory) -> Path:
    """169 pairs of fragments joined: greasy chains, alcohols, amines, rings, halides (all valid)."""
    smiles = sorted({Chem.MolToSmiles(m) for a, b in itertools.product(PARTS, PARTS)
                     if (m := Chem.MolFromSmiles(a + b)) is not None})
    path = tmp_path_factory.mktemp("molecules") / "mols.csv"
    path.write_text("smiles\n" + "\n".join(smiles) + "\n")
    return path


@pytest.fixture(scope="module")
def run(smiles_csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "logp"
    return klvae.fit({**TINY, "data": str(smiles_csv), "out": str(out), "label_from": "logp", "label_bins": 2,
                      "condition": "label"})


def test_labels_are_rdkits_logp_cut_at_the_training_median(run):
    codec = RunDir.open(run).vocabulary()
    assert codec.label_names == ["logp-q1", "logp-q2"] and codec.bins.name == "logp"
    stored = json.loads((run / "vocab.json").read_text())["label_bins"]
    data = RunDir.open(run).config().data.load(0, vocab=codec.vocabulary)
    logp = {k: np.array([Crippen.MolLogP(Chem.MolFromSmiles(s)) for s in data.texts[k]]) for k in ("train", "test")}
    assert stored["edges"] == pytest.approx([np.median(logp["train"])])
    for k, labels in (("train", data.train_labels), ("test", data.test_labels)):
        assert labels.tolist() == (logp[k] >= stored["edges"][0]).astype(int).tolist()


def test_molecules_of_a_class_report_the_property_and_the_share_in_its_bin(run):
    result = cli("molecules", run, "-n", 60, "--class", "logp-q2", "--reference-size", 0, "--json")
    assert result.rc == 0, result.err
    r = json.loads(result.out)
    assert r["class"] == "logp-q2" and r["n"] == 60 and 0 <= r["valid"] <= 1
    if r["valid"] > 0:
        assert 0 <= r["in_class"] <= 1 and np.isfinite(r["logp_mean"])
    assert (run / "molecules_class1.json").is_file()  # molecules_from-<sampler>_class1.json from another sampler
    printed = cli("molecules", run, "-n", 20, "--class", "0", "--reference-size", 50)
    assert printed.rc == 0 and "of class logp-q1" in printed.out


def test_an_unknown_class_is_a_one_line_error_naming_the_bins(run):
    assert_user_error(cli("molecules", run, "-n", 10, "--class", "logp-q3"), "logp-q1, logp-q2")


def test_a_property_of_sentences_or_beside_a_label_column_is_a_one_line_error(smiles_csv, tmp_path):
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(f"the cat saw {i} dogs" for i in range(30)) + "\n")
    assert_user_error(cli("train", "--data", text, "--model", "seqvae", "--label-from", "logp", "--epochs", 1,
                          "--out", tmp_path / "a"), "computes a property of molecules")
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("smiles,label\n" + "\n".join(f"{s},x" for s in smiles_csv.read_text().split()[1:]) + "\n")
    assert_user_error(cli("train", "--data", labelled, "--model", "seqvae", "--label-from", "qed", "--label-column",
                          "label", "--epochs", 1, "--out", tmp_path / "b"), "keep one")
    assert not (tmp_path / "a" / "model.safetensors").exists() and not (tmp_path / "b" / "model.safetensors").exists()
