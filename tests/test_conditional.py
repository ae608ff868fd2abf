"""The conditional VAE (condition: label) on the embedded 8x8 digits: q(z|x, y), p(x|z, y), p(z|y);
its loaders, objectives, diagnostics, evaluation, scoring and pictures, and its one-line errors.
Statistical checks seed torch at their top and keep margins of several standard errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from helpers import QUICK, assert_user_error, cli, metrics_table, read_png
from klvae import KlvaeError
from klvae.config import TrainConfig
from klvae.data import load_dataset
from klvae.data.dataset import class_count
from klvae.diagnostics import mutual_information
from klvae.evaluation.likelihood import evaluate_model, split_with_labels
from klvae.generation import interpolate, reconstruct, sample
from klvae.kl import kl
from klvae.models import ModelSpec, build_model
from klvae.objectives import elbo, iwae_bound, log_weights
from klvae.run import load, load_config
from klvae.training import IndexedTensor, loader, unpack

LATENT = 4
CLASSES = 10
# 20 epochs of batches of 32 (~850 steps, ~6 s): conditional samples are then recognised ~98% of
# the time by a logistic regression (measured: 0.70 after 10 epochs, 0.98-0.99 after 15-30)
TRAIN = ("--data", "digits", "--condition", "label", "--latent-dim", LATENT, "--epochs", 20, "--batch-size", 32,
         *QUICK)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("conditional") / "run"
    result = cli("train", *TRAIN, "--out", out)
    assert result.rc == 0, result.err
    return out


@pytest.fixture(scope="module")
def prior_run(tmp_path_factory) -> Path:
    """A conditional run with a learned Gaussian p(z|y) (its samples: recognised 0.75 of the time
    after 10 epochs, 0.92 after 15)."""
    out = tmp_path_factory.mktemp("conditional-prior") / "run"
    result = cli("train", *TRAIN, "--conditional-prior", "--epochs", 15, "--out", out)
    assert result.rc == 0, result.err
    return out


@pytest.fixture(scope="module")
def test_data(run) -> tuple[torch.Tensor, torch.Tensor]:
    return split_with_labels(load_config(run), "test")


@pytest.fixture(scope="module")
def real_digits_classifier() -> LogisticRegression:
    """A logistic regression on the grey training digits (its test accuracy is ~0.97)."""
    data = load_dataset("digits", binarize="none")
    return LogisticRegression(max_iter=2000).fit(data.train.flatten(1).numpy(), data.train_labels.numpy())


# --- the model -----------------------------------------------------------------------------------


def test_spec_stores_the_condition_and_the_number_of_classes(run):
    spec = json.loads((run / "model.json").read_text())
    assert (spec["condition"], spec["num_classes"], spec["conditional_prior"]) == ("label", CLASSES, False)
    assert load(run).num_classes == CLASSES


@pytest.mark.parametrize("net, shape", [("mlp", (1, 8, 8)), ("conv", (1, 28, 28))])
def test_every_network_sees_the_label(net, shape):
    torch.manual_seed(0)
    model = build_model(ModelSpec(event_shape=list(shape), latent_dim=3, hidden=[16], net=net, condition="label",
                                  num_classes=CLASSES))
    x = torch.rand(2, *shape).bernoulli()
    same = torch.tensor([4, 4])
    loc = model.encode(x, same).mean
    assert not torch.allclose(loc, model.encode(x, torch.tensor([4, 5])).mean)  # q(z|x, y) depends on y
    z = torch.randn(5, 2, 3)  # importance samples first: the labels (2,) broadcast over them
    p = model.decode(z, same)
    assert p.batch_shape == (5, 2)
    assert not torch.allclose(p.mean, model.decode(z, torch.tensor([4, 5])).mean)  # p(x|z, y) depends on y


def test_conditional_prior_is_a_learned_gaussian_per_class(prior_run, test_data):
    model = load(prior_run)
    x, y = test_data
    p = model.prior(y[:6])
    assert p.batch_shape == (6,) and p.event_shape == (LATENT,)
    means = model.learned_prior.means.detach()
    assert (means[:, None] - means[None]).norm(dim=-1).max() > 0.1  # the classes' priors have moved apart
    k = kl(model.encode(x[:6], y[:6]), p)
    assert k.method == "analytic" and k.per_dim.shape == (6, LATENT)


def test_samples_of_a_class_are_recognised_as_that_class(run, real_digits_classifier):
    """The key check: a classifier of real digits labels `sample --class c` draws as c."""
    model = load(run)
    xs, ys = [], []
    for c in range(CLASSES):
        xs.append(sample(model, 50, seed=c, condition=c))
        ys.append(np.full(50, c))
    accuracy = real_digits_classifier.score(torch.cat(xs).flatten(1).numpy(), np.concatenate(ys))
    assert accuracy > 0.6, accuracy  # chance is 0.1; measured 0.98


def test_conditional_prior_samples_are_recognised(prior_run, real_digits_classifier):
    model = load(prior_run)
    y = torch.arange(300) % CLASSES
    accuracy = real_digits_classifier.score(sample(model, 300, seed=0, condition=y).flatten(1).numpy(), y.numpy())
    assert accuracy > 0.6, accuracy  # chance is 0.1; measured 0.92


# --- loaders, objectives, diagnostics ------------------------------------------------------------


def test_loader_yields_each_batch_with_the_labels_of_its_rows():
    x, y = torch.arange(25.0)[:, None] * 10, torch.arange(25)
    torch.manual_seed(0)
    batches = list(loader(x, 10, shuffle=True, labels=y))
    assert [len(unpack(b)[0]) for b in batches] == [10, 10, 5]
    for xb, yb in batches:
        assert torch.equal(xb[:, 0], yb.float() * 10)
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == y.tolist()
    one_x, one_y = IndexedTensor(x, y)[3]
    assert torch.equal(one_x, x[3]) and one_y == 3
    assert unpack(next(iter(loader(x, 10, shuffle=False))))[1] is None  # no labels: batches of x alone


def test_iwae_bound_of_log_p_x_given_y_is_at_least_the_elbo(run, test_data):
    torch.manual_seed(0)
    model = load(run)
    x, y = test_data
    with torch.no_grad():
        bound = elbo(model, x, samples=200, condition=y).elbo  # its reconstruction term averaged over 200 draws
    iwae = iwae_bound(model, x, 100, condition=y)
    gap = iwae - bound
    assert gap.mean() > 3 * gap.std() / math.sqrt(len(x))  # K = 100 beats K = 1 on average
    one = torch.stack([iwae_bound(model, x, 1, condition=y) for _ in range(50)]).mean(0)
    assert abs((one - bound).mean()) < 4 * (one - bound).std() / math.sqrt(len(x))  # K = 1 is the ELBO
    assert log_weights(model, x[:7], 3, condition=y[:7]).shape == (3, 7)


def test_the_true_label_explains_the_data_better_than_a_wrong_one(run, test_data):
    torch.manual_seed(0)
    model = load(run)
    x, y = test_data
    right = iwae_bound(model, x, 50, condition=y)
    wrong = iwae_bound(model, x, 50, condition=(y + 1) % CLASSES)
    assert (right > wrong).float().mean() > 0.8


def test_mutual_information_given_y_and_the_aggregate_kl_sum_to_the_mean_kl(run, test_data):
    """Hoffman & Johnson's surgery given y: E KL(q(z|x,y) || p(z)) = I(x; z | y) + E_y KL(q(z|y) || p(z))."""
    torch.manual_seed(0)
    model = load(run)
    x, y = test_data
    mi, agg = mutual_information(model, x, condition=y)
    mean_kl = kl(model.encode(x, y), model.prior()).value.mean().item()
    counts = torch.bincount(y)
    assert 0 < mi <= math.log(counts.max()) + 1e-6
    assert agg > -0.5
    assert abs(mi + agg - mean_kl) < 0.5  # one-sample estimate of the mean KL (~0.1 nats standard error)


def test_validation_logs_the_kl_diagnostics_of_a_conditional_run(run):
    header, rows = metrics_table(run)
    columns = ("val_elbo", "val_kl", "active_units", "val_mi", "val_agg_kl", *(f"kl_dim_{i}" for i in range(LATENT)))
    for column in columns:
        assert column in header and math.isfinite(float(rows[-1][column])), column
    assert int(rows[-1]["active_units"]) >= 1


# --- commands ------------------------------------------------------------------------------------


def test_evaluate_bounds_log_p_x_given_the_test_labels(run, test_data):
    result = cli("evaluate", run, "--iwae-k", 20, "--json")
    assert result.rc == 0, result.err
    reported = json.loads(result.out)
    assert reported["condition"] == "label" and reported["nll_iwae"] > 0
    x, y = test_data
    direct = evaluate_model(load(run), x, 20, condition=y)
    assert reported["nll_iwae"] == pytest.approx(direct["nll_iwae"], rel=1e-9)
    assert reported["nll_iwae"] <= -reported["elbo"] + 3 * reported["elbo_se"]


def test_score_uses_the_labels_of_a_conditional_run(run):
    result = cli("score", run, "--iwae-k", 5, "--score", "elbo", "iwae", "--anomalous-labels", 3, "--json")
    assert result.rc == 0, result.err
    summary = json.loads(result.out)
    assert all(math.isfinite(v) for v in summary["sets"][0]["mean"].values())
    assert 0 <= summary["metrics"]["iwae"]["auroc"] <= 1


@pytest.mark.parametrize("argv", [
    ("sample", "-n", 16, "--class", 7), ("sample", "-n", 10), ("sample", "-n", 9, "--class", 2, "--from", "gmm"),
    ("reconstruct", "-n", 4), ("interpolate", "--a", 0, "--b", 5, "--steps", 4), ("traverse", "--steps", 3),
], ids=lambda a: " ".join(map(str, a)))
def test_picture_commands_run_on_a_conditional_run(fitted_gmm, tmp_path, argv):
    run = fitted_gmm
    result = cli(argv[0], run, *argv[1:], "--out", tmp_path / "p.png")
    assert result.rc == 0, result.err
    assert read_png(tmp_path / "p.png").shape[0] > 0


def test_interpolation_moves_the_label_from_one_end_to_the_other(run, test_data):
    model = load(run)
    x, y = test_data
    a, b = 0, int((y != y[0]).nonzero()[0])  # two points of different classes
    path = interpolate(model, x[a], x[b], 5, condition=y[[a, b]])
    ends = reconstruct(model, x[[a, b]], y[[a, b]])
    assert torch.allclose(path[0], ends[0], atol=1e-5) and torch.allclose(path[-1], ends[1], atol=1e-5)


# --- one-line errors -----------------------------------------------------------------------------


def test_data_without_class_labels_cannot_be_conditioned_on(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((60, 1, 8, 8)).astype(np.float32))
    line = assert_user_error(cli("train", "--data", tmp_path / "x.npy", "--condition", "label", "--epochs", 1,
                                 "--out", tmp_path / "run", *QUICK), "class labels", "--condition none")
    assert "digits" in line and "mnist" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("options, words", [
    (("--conditional-prior",), ("conditional_prior", "--condition label")),
    (("--condition", "labels"), ("condition", "none, label")),
    (("--condition", "label", "--objective", "iwae"), ("objective elbo",)),
    (("--condition", "label", "--prior", "vamp"), ("vamp", "--prior standard")),
    (("--condition", "label", "--latent", "vmf", "--conditional-prior"), ("--latent gaussian",)),
], ids=["prior without condition", "unknown condition", "iwae", "vamp", "vmf"])
def test_bad_condition_options_exit_2_before_the_run_starts(tmp_path, options, words):
    assert_user_error(cli("train", "--data", "digits", *options, "--epochs", 1, "--out", tmp_path / "run", *QUICK),
                      *words)
    assert not (tmp_path / "run").exists()


def test_bad_condition_options_are_config_errors():
    with pytest.raises(KlvaeError, match="conditional_prior needs a condition"):
        TrainConfig(conditional_prior=True)
    with pytest.raises(KlvaeError, match="objective elbo"):
        TrainConfig(condition="label", objective="tcvae")


def test_sample_of_a_class_out_of_range_exits_2(run, tmp_path):
    assert_user_error(cli("sample", run, "--class", 10, "--out", tmp_path / "s.png"), "--class 10", "0..9")
    assert not (tmp_path / "s.png").exists()


def test_sample_of_a_class_from_a_run_without_a_condition_exits_2(tmp_path):
    out = tmp_path / "plain"
    assert cli("train", "--data", "digits", "--latent-dim", 2, "--epochs", 1, "--out", out, *QUICK).rc == 0
    assert_user_error(cli("sample", out, "--class", 3, "--out", tmp_path / "s.png"), "--class", "--condition label")


@pytest.fixture(scope="module")
def fitted_gmm(run) -> Path:
    """The conditional run with a gmm sampler: one mixture per class."""
    result = cli("fit-sampler", run, "--sampler", "gmm", "--components", 3, "--json")
    assert result.rc == 0, result.err
    report = json.loads(result.out)
    assert report["n_train"] > 0 and math.isfinite(report["nll_test"]) and "kl_aggregate" not in report
    return run


def test_a_fitted_sampler_of_a_conditional_run_needs_a_class(fitted_gmm, tmp_path):
    assert_user_error(cli("sample", fitted_gmm, "--from", "gmm", "--out", tmp_path / "s.png"), "--class")


def test_a_conditional_model_without_labels_is_an_error_naming_them(run, test_data):
    model = load(run)
    x, _ = test_data
    with pytest.raises(KlvaeError, match="conditioned on class labels.*condition="):
        model.encode(x[:3])
    with pytest.raises(KlvaeError, match="out of range.*0..9"):
        model.encode(x[:3], torch.tensor([0, 1, 10]))
    with pytest.raises(KlvaeError, match="one label per data point"):
        model.encode(x[:3], torch.tensor([0, 1]))


def test_class_count_of_labelled_data():
    assert class_count(load_dataset("digits")) == CLASSES
