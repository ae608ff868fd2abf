"""One epoch of an MLP VAE on MNIST, evaluated on the full test set with IWAE: the figures of a
real run must be finite and in the range such a run reaches. Skipped when MNIST is not at hand."""
from __future__ import annotations

import json
import math

import pytest

from helpers import cli, metrics_table

MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
LATENT = 8
IWAE_K = 20


@pytest.fixture(scope="module")
def mnist_run(shared_data, tmp_path_factory):
    root = shared_data("mnist", *MNIST_FILES)
    run = tmp_path_factory.mktemp("mnist") / "run"
    result = cli("train", "--data", "mnist", "--data-dir", root, "--net", "mlp", "--hidden", "128",
                 "--latent-dim", LATENT, "--epochs", "1", "--no-progress", "--out", run)
    assert result.rc == 0, result.err
    return run


@pytest.fixture(scope="module")
def test_result(mnist_run):
    result = cli("evaluate", mnist_run, "--split", "test", "--iwae-k", IWAE_K, "--json")
    assert result.rc == 0, result.err
    return json.loads(result.out)


def test_one_epoch_writes_one_finite_metrics_row(mnist_run):
    header, rows = metrics_table(mnist_run)
    assert len(rows) == 1
    assert {f"kl_dim_{i}" for i in range(LATENT)} <= set(header)
    assert all(math.isfinite(float(v)) for v in rows[0].values()), rows[0]


def test_evaluation_covers_the_whole_test_set(test_result):
    assert test_result["n"] == 10000 and test_result["iwae_k"] == IWAE_K
    assert all(math.isfinite(test_result[k]) for k in ("elbo", "recon", "kl", "nll_iwae"))


def test_iwae_nll_is_plausible_after_one_epoch(test_result):
    nll = test_result["nll_iwae"]
    assert 80 < nll < 250  # nats per image: well above the ~80 of trained models, far below chance (543)
    assert nll <= -test_result["elbo"] + 0.5  # tighter than the ELBO
    assert test_result["kl"] > 0


def test_the_latent_code_is_used(test_result):
    assert test_result["active_units"] >= 1 and test_result["active_units"] <= LATENT
