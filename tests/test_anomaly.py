"""Anomaly scores (klvae.evaluation.anomaly, `klvae score`) and training with classes left out
(exclude_labels), on the embedded 8x8 digits with a tiny network. Scores are seeded, so the
comparisons with `evaluate` are exact up to float summation order."""
from __future__ import annotations

import csv
import io
import json
import math
import zlib
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

import klvae
from helpers import assert_user_error, cli
from klvae import KlvaeError
from klvae.config import TrainConfig
from klvae.data import load_dataset
from klvae.evaluation.anomaly import (LAYERED, SCORES, detection_metrics, input_complexity, load_split, reference_nll,
                                      score, score_model)
from klvae.evaluation.likelihood import split_with_labels
from klvae.run import load, load_config

EXCLUDED = 0  # the digit left out of training: the anomalies of the leave-one-class-out tests
K = 20  # importance samples: enough for the comparisons, which share their draws


class Sizes(L.Callback):
    """Records how many points training and validation were given."""

    def on_train_start(self, trainer, pl_module):
        self.train = len(trainer.train_dataloader.dataset)
        self.val = len(trainer.val_dataloaders.dataset)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("anomaly") / "run"
    config = {"data": "digits", "out": str(out), "epochs": 10, "hidden": [32], "latent_dim": 4,
              "progress": False, "exclude_labels": [EXCLUDED]}
    sizes = Sizes()
    klvae.fit(config, callbacks=[sizes])
    return out, sizes


@pytest.fixture(scope="module")
def run(trained) -> Path:
    return trained[0]


@pytest.fixture(scope="module")
def ones_file(tmp_path_factory) -> Path:
    """100 all-ones 8x8 images: the test split of this file (10 rows) is obviously anomalous."""
    path = tmp_path_factory.mktemp("ones") / "ones.npy"
    np.save(path, np.ones((100, 1, 8, 8), np.float32))
    return path


# --- exclude_labels ------------------------------------------------------------------------


def test_without_classes_leaves_the_class_out_of_train_and_val_and_keeps_test_whole():
    full = load_dataset("digits", seed=0)
    cut = full.without_classes([EXCLUDED, 5])
    for split in ("train", "val"):
        labels = getattr(full, f"{split}_labels")
        keep = (labels != EXCLUDED) & (labels != 5)
        assert not torch.isin(getattr(cut, f"{split}_labels"), torch.tensor([EXCLUDED, 5])).any()
        assert torch.equal(getattr(cut, split), getattr(full, split)[keep])
    assert torch.equal(cut.test, full.test) and torch.equal(cut.test_labels, full.test_labels)
    assert full.without_classes([]) is full


def test_fit_trains_and_validates_without_the_excluded_class(trained):
    _, sizes = trained
    full = load_dataset("digits", seed=0)
    assert sizes.train == int((full.train_labels != EXCLUDED).sum()) < len(full.train)
    assert sizes.val == int((full.val_labels != EXCLUDED).sum()) < len(full.val)


def test_the_run_split_of_a_run_with_excluded_classes_leaves_them_out_except_in_test(run):
    config = load_config(run)
    assert config.exclude_labels == [EXCLUDED]
    for split in ("train", "val"):
        x, labels = load_split(config, None, split)
        assert len(x) == len(labels) and EXCLUDED not in labels.tolist()
    _, test_labels = load_split(config, None, "test")
    assert EXCLUDED in test_labels.tolist()


def test_evaluate_works_on_a_run_with_excluded_classes(run):
    result = klvae.evaluate(run, "test", iwae_k=K)
    assert result["n"] == 297 and math.isfinite(result["nll_iwae"])


@pytest.mark.parametrize("labels, words", [([11], ("11", "not classes", "choose")),
                                           (list(range(10)), ("leave no", "keep more classes"))])
def test_exclude_labels_that_are_not_classes_or_all_of_them_is_a_one_line_error(tmp_path, labels, words):
    result = cli("train", "--data", "digits", "--exclude-labels", *labels, "--epochs", 1, "--hidden", 16,
                 "--no-progress", "--out", tmp_path / "run")
    assert_user_error(result, *words)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_exclude_labels_on_data_without_labels_is_a_one_line_error(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((50, 6), dtype=np.float32))
    result = cli("train", "--data", tmp_path / "x.npy", "--exclude-labels", 3, "--epochs", 1, "--hidden", 16,
                 "--no-progress", "--out", tmp_path / "run")
    assert_user_error(result, "no class labels", "drop exclude_labels")


# --- scores and their agreement with evaluation --------------------------------------------


def test_mean_scores_equal_the_evaluation_figures_on_the_same_split_and_seed(run):
    report = score(run, split="test", iwae_k=K, seed=3, scores=["elbo", "kl", "recon", "iwae"])
    expected = klvae.evaluate(run, "test", iwae_k=K, seed=3)
    means = report.summary()["sets"][0]["mean"]
    assert means["elbo"] == pytest.approx(-expected["elbo"], rel=1e-5)
    assert means["recon"] == pytest.approx(-expected["recon"], rel=1e-5)
    assert means["kl"] == pytest.approx(expected["kl"], rel=1e-5)
    assert means["iwae"] == pytest.approx(expected["nll_iwae"], rel=1e-5)


def test_scores_are_elbo_terms_per_example_and_reproducible_by_seed(run):
    model = load(run)
    x = split_with_labels(load_config(run), "test")[0][:50]
    a, b, c = (score_model(model, x, K, seed=s, reference_nll=25.0) for s in (1, 1, 2))
    assert set(a) == set(SCORES) - set(LAYERED)  # a flat model has no level scores
    for name in a:
        assert a[name].shape == (50,) and torch.equal(a[name], b[name])
    assert not torch.equal(a["elbo"], c["elbo"])
    assert torch.allclose(a["elbo"], a["recon"] + a["kl"], atol=1e-4)
    assert torch.equal(a["typicality"], (a["iwae"] - 25.0).abs())
    assert torch.equal(a["complexity"], a["iwae"] - input_complexity(x))
    assert (a["kl"] >= 0).all()


def test_reference_nll_is_the_mean_iwae_nll_of_the_training_data(run):
    config, model = load_config(run), load(run)
    x, _ = load_split(config, None, "train")
    expected = score_model(model, x, K, seed=0)["iwae"].mean().item()
    assert reference_nll(model, config, K, seed=0, size=10**6) == pytest.approx(expected, rel=1e-9)
    assert reference_nll(model, config, K, seed=0, size=300) == pytest.approx(expected, abs=2.0)


def test_input_complexity_is_the_zlib_length_in_nats():
    x = torch.zeros(2, 1, 8, 8)
    x[1] = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0)).round()
    lengths = [len(zlib.compress(bytes((v * 255).round().to(torch.uint8).flatten().tolist()), 9)) for v in x]
    assert torch.allclose(input_complexity(x), torch.tensor(lengths, dtype=torch.float64) * 8 * math.log(2))
    assert input_complexity(x)[0] < input_complexity(x)[1]  # a blank image is simpler than noise


# --- detection -----------------------------------------------------------------------------


def test_detection_metrics_are_one_for_a_perfect_ranking_and_zero_for_a_reversed_one():
    anomalous = torch.tensor([0, 0, 0, 1, 1], dtype=torch.bool)
    s = torch.tensor([0.1, 0.2, 0.3, 0.9, 1.0], dtype=torch.float64)
    m = detection_metrics({"up": s, "down": -s}, anomalous)
    assert m["up"] == {"auroc": 1.0, "auprc": 1.0}
    assert m["down"]["auroc"] == 0.0
    with pytest.raises(KlvaeError, match="normal and anomalous"):
        detection_metrics({"up": s}, torch.ones(5, dtype=torch.bool))


def test_all_ones_images_are_detected_with_auroc_one_by_every_likelihood_score(run, ones_file):
    result = cli("score", run, "--ood-data", ones_file, "--iwae-k", K, "--json")
    assert result.rc == 0, result.err
    summary = json.loads(result.out)
    assert [s["n"] for s in summary["sets"]] == [297, 10]
    assert [s["n_anomalous"] for s in summary["sets"]] == [0, 10]
    for name in ("elbo", "recon", "iwae", "typicality", "complexity"):
        assert summary["metrics"][name]["auroc"] == 1.0, name


def test_leaving_a_digit_out_makes_it_more_anomalous_than_chance(run):
    report = score(run, iwae_k=K, anomalous_labels=[EXCLUDED], scores=["iwae"])
    assert report.sets[0].anomalous.sum() == int((report.sets[0].labels == EXCLUDED).sum()) > 0
    assert report.metrics["iwae"]["auroc"] > 0.6  # ~0.8 here; the threshold only asks for a signal


# --- the command ---------------------------------------------------------------------------


def test_score_writes_one_csv_row_per_example_with_labels_and_anomaly_marks(run, tmp_path):
    out = tmp_path / "scores.csv"
    result = cli("score", run, "--anomalous-labels", EXCLUDED, "--score", "iwae", "elbo", "--iwae-k", K,
                 "--out", out, "--json")
    assert result.rc == 0, result.err
    summary = json.loads(result.out)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == ["data", "split", "index", "label", "anomalous", "elbo", "iwae"]
    _, labels = load_split(load_config(run), None, "test")
    assert [int(r["index"]) for r in rows] == list(range(297))
    assert [int(r["label"]) for r in rows] == labels.tolist()
    assert [r["anomalous"] == "1" for r in rows] == (labels == EXCLUDED).tolist()
    assert {r["data"] for r in rows} == {"digits"} and {r["split"] for r in rows} == {"test"}
    for name in ("elbo", "iwae"):
        assert np.mean([float(r[name]) for r in rows]) == pytest.approx(summary["sets"][0]["mean"][name], rel=1e-9)
    assert summary["out"] == str(out) and set(summary["metrics"]) == {"elbo", "iwae"}


def test_score_prints_a_table_of_auroc_and_auprc(run):
    result = cli("score", run, "--anomalous-labels", EXCLUDED, "--score", "kl", "--iwae-k", 2)
    assert result.rc == 0, result.err
    assert "AUROC" in result.out and "AUPRC" in result.out and "nats" in result.out
    assert "kl" in result.out.split("AUPRC")[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small-image file of the wrong shape and an unlabelled 8x8 file."""
    root = tmp_path_factory.mktemp("files")
    np.save(root / "small.npy", np.zeros((20, 1, 5, 5), np.float32))
    np.save(root / "plain.npy", np.zeros((20, 1, 8, 8), np.float32))
    return root


@pytest.mark.parametrize("argv, words", [
    (("--score", "likelihood"), ("unknown score", "likelihood", "choose from", "typicality")),
    (("--data", "{files}/small.npy"), ("shape", "(1, 5, 5)", "(1, 8, 8)", "--data digits")),
    (("--data", "{files}/plain.npy", "--anomalous-labels", 3), ("class labels", "--ood-data")),
    (("--anomalous-labels", 11), ("11", "not classes", "choose among")),
    (("--anomalous-labels", 3, "--ood-data", "digits"), ("not both",)),
    (("--iwae-k", 0), ("iwae_k", "positive")),
])
def test_bad_score_requests_are_one_line_errors(run, files, argv, words):
    argv = [str(a).format(files=files) for a in argv]
    assert_user_error(cli("score", run, *argv), *words)


# --- data sets other than the run's --------------------------------------------------------


def test_another_data_set_is_binarised_as_the_runs_evaluation_copy(shared_data):
    root = shared_data("fashion-mnist", "t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz")
    config = TrainConfig(data="mnist", data_dir=str(root))
    x, labels = load_split(config, "fashion-mnist", "test")
    expected = load_dataset("fashion-mnist", root, "dynamic", config.val_fraction, config.seed)
    assert torch.equal(x, expected.test) and torch.equal(labels, expected.test_labels)
    assert set(x.unique().tolist()) == {0.0, 1.0}
