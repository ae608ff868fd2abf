"""Disentanglement metrics on synthetic codes with known answers (REFERENCES.md: no trustworthy
published MIG exists to compare with). The factors are a (3, 6, 10, 16, 16) grid (dSprites' grid
subset) and the "images" are the factors themselves, so each representation below is a known map
of the factors: axis-aligned (one code per factor), rotated (every code mixes every factor),
unrelated (codes independent of the factors), duplicated (factor 0 in two codes).

Seeds: every test draws from numpy generators with fixed seeds; thresholds sit far from both the
value a correct metric gives (printed in each test's comment) and the value a wrong one would."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import special_ortho_group

from klvae.data.dsprites import FactorData
from klvae.errors import KlvaeError
from klvae.evaluation import disentanglement as dis
from klvae.models.vae import VAE
from klvae.models import ModelSpec

SIZES = (3, 6, 10, 16, 16)
NOISE = 0.02  # code noise, against class steps of 3 / 16 = 0.19 or more
TOY = FactorData("toy", SIZES, lambda f: np.asarray(f, np.float32), factor_names=tuple("abcde"))


def representation(kind: str, seed: int = 0):
    """factors (N, 5) -> codes: each factor scaled to about unit range, mapped by kind, plus noise."""
    rng = np.random.default_rng(seed)
    rotation = special_ortho_group.rvs(5, random_state=seed)

    def represent(x: np.ndarray) -> np.ndarray:
        x = (x - (np.array(SIZES) - 1) / 2) / np.array(SIZES) * 3
        z = {"aligned": lambda: x, "rotated": lambda: x @ rotation,
             "unrelated": lambda: rng.normal(size=x.shape), "duplicated": lambda: np.c_[x, x[:, :1]],
             "collapsed": lambda: np.c_[x, np.zeros((len(x), 3))]}[kind]()
        return z + NOISE * rng.normal(size=z.shape)

    return represent


@pytest.fixture(scope="module")
def codes():
    """kind -> (codes, factors, test_codes, test_factors), 3,000 train and 1,500 test points."""
    out = {}
    for kind in ("aligned", "rotated", "unrelated", "duplicated"):
        rng, rep = np.random.default_rng(1), representation(kind)
        out[kind] = (*dis.sample_codes(rep, TOY, 3000, rng), *dis.sample_codes(rep, TOY, 1500, rng))
    return out


def test_mig_is_near_one_for_an_aligned_code_and_near_zero_for_rotated_or_unrelated_ones(codes):
    got = {kind: dis.mig(*codes[kind][:2])["mig"] for kind in codes}
    assert got["aligned"] > 0.95  # 0.98: 20 bins tell the <= 16 classes apart
    assert got["rotated"] < 0.15  # 0.05
    assert got["unrelated"] < 0.02  # 0.001: only the finite-sample bias of MI
    assert 0.7 < got["duplicated"] < 0.85  # 0.78: factor 0 has no gap, the other four about 1


def test_mig_reports_the_mutual_information_in_nats_and_the_factor_entropy(codes):
    out = dis.mig(*codes["aligned"][:2])
    h = np.array(out["factor_entropy_nats"])
    assert h == pytest.approx(np.log(SIZES), abs=0.02)  # uniform factors: H = log(classes)
    mi = np.array(out["mutual_info_nats"])
    assert np.diag(mi) == pytest.approx(h, abs=0.1) and mi.shape == (5, 5)
    assert out["per_factor"][0] == pytest.approx(1, abs=0.02) and "20-bin" in out["estimator"]


def test_mig_on_a_code_that_is_the_factors_exactly_is_one_up_to_the_sampling_bias():
    f = TOY.sample_factors(5000, np.random.default_rng(0))
    assert dis.mig(f.astype(float), f)["mig"] == pytest.approx(1, abs=0.01)


def test_sap_gap_is_large_only_for_the_aligned_code(codes):
    got = {kind: dis.sap(*codes[kind])["sap"] for kind in codes}
    # a linear SVM on one code separates only some of 10 or 16 classes: 0.2 at best
    assert got["aligned"] > 0.15 and got["rotated"] < 0.06 and got["unrelated"] < 0.02
    assert got["duplicated"] < got["aligned"] - 0.03  # factor 0's two codes tie
    continuous = {kind: dis.sap(*codes[kind], continuous=True)["sap"] for kind in ("aligned", "rotated", "unrelated")}
    assert continuous["aligned"] > 0.95 and continuous["rotated"] < 0.5 and continuous["unrelated"] < 0.01


def test_dci_is_near_one_for_an_aligned_code_and_low_for_rotated_or_unrelated_ones(codes):
    got = {kind: dis.dci(*codes[kind]) for kind in codes}
    aligned, rotated, unrelated = got["aligned"], got["rotated"], got["unrelated"]
    assert aligned["disentanglement"] > 0.95 and aligned["completeness"] > 0.95  # 1.00, 1.00
    assert aligned["informativeness_test"] > 0.95  # 1.00
    assert rotated["disentanglement"] < 0.4 and rotated["completeness"] < 0.4  # 0.17, 0.17
    assert unrelated["disentanglement"] < 0.1 and unrelated["informativeness_test"] < 0.25  # chance ~ 0.14
    assert np.array(aligned["importance"]).shape == (5, 5) and aligned["importance_model"] == "forest"


def test_a_factor_held_by_two_codes_lowers_completeness_but_not_disentanglement_or_informativeness(codes):
    aligned, duplicated = dis.dci(*codes["aligned"]), dis.dci(*codes["duplicated"])
    assert duplicated["completeness"] < aligned["completeness"] - 0.05  # 0.92 against 1.00
    assert duplicated["disentanglement"] > 0.95
    assert duplicated["informativeness_test"] == pytest.approx(aligned["informativeness_test"], abs=0.02)


def test_dci_scores_match_their_closed_form():
    assert dis.dci_scores(np.eye(4)) == pytest.approx((1.0, 1.0))
    assert dis.dci_scores(np.ones((4, 3))) == pytest.approx((0.0, 0.0), abs=1e-9)
    # factor 0 spread over codes 0 and 1: its completeness is 1 - log_3(2), weight 2/3 of all
    d, c = dis.dci_scores(np.array([[1.0, 0], [1, 0], [0, 1]]))
    assert d == pytest.approx(1.0) and c == pytest.approx(2 / 3 * (1 - math.log(2, 3)) + 1 / 3)


def test_gradient_boosted_importance_agrees_with_the_forest_on_an_aligned_code(codes):
    z, f, zt, ft = (a[:500] for a in codes["aligned"])
    keep = [0, 1]  # two factors of few classes keep the boosted trees to a second
    out = dis.dci(z[:, keep], f[:, keep], zt[:, keep], ft[:, keep], model="gbt")
    assert out["disentanglement"] > 0.95 and out["importance_model"] == "gbt"


def test_beta_vae_score_is_one_for_an_aligned_code_and_near_chance_for_an_unrelated_one():
    rng = np.random.default_rng(2)
    aligned = dis.beta_vae_score(representation("aligned"), TOY, rng, batch_size=16, n_train=300, n_eval=200)
    unrelated = dis.beta_vae_score(representation("unrelated"), TOY, rng, batch_size=16, n_train=300, n_eval=200)
    assert aligned["eval_accuracy"] > 0.97 and aligned["train_accuracy"] > 0.97  # 1.00
    assert unrelated["eval_accuracy"] < 0.35  # chance 0.2


def test_factor_vae_score_is_one_for_an_aligned_code_and_low_for_rotated_or_unrelated_ones():
    def score(kind):
        return dis.factor_vae_score(representation(kind), TOY, np.random.default_rng(3), batch_size=16,
                                    n_train=300, n_eval=200, n_variance=1000)

    aligned, rotated, unrelated = score("aligned"), score("rotated"), score("unrelated")
    assert aligned["eval_accuracy"] > 0.97 and aligned["active_dims"] == 5  # 1.00
    assert rotated["eval_accuracy"] < 0.8  # 0.49: some factors share their least-varying code
    assert unrelated["eval_accuracy"] < 0.35  # chance 0.2


def test_factor_vae_score_ignores_collapsed_dimensions_and_is_zero_when_all_are():
    kwargs = {"batch_size": 16, "n_train": 200, "n_eval": 100, "n_variance": 500}
    out = dis.factor_vae_score(representation("collapsed"), TOY, np.random.default_rng(4), **kwargs)
    assert out["active_dims"] == 5 and out["eval_accuracy"] > 0.97  # the 3 std-0.02 dims are pruned
    dead = dis.factor_vae_score(lambda x: np.zeros((len(x), 4)), TOY, np.random.default_rng(4), **kwargs)
    assert dead == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "active_dims": 0}


def test_bad_codes_or_factors_are_errors_naming_the_shapes():
    f = np.zeros((10, 2), np.int64)
    with pytest.raises(KlvaeError, match=r"codes must be \(N, D\) and factors \(N, F\).*\(9, 3\) and \(10, 2\)"):
        dis.mig(np.zeros((9, 3)), f)
    with pytest.raises(KlvaeError, match="factors must be integer classes; got dtype float64"):
        dis.mig(np.zeros((10, 3)), f.astype(float))
    with pytest.raises(KlvaeError, match="importance model must be one of forest, gbt; got 'lasso'"):
        dis.dci(np.zeros((10, 3)), f, np.zeros((10, 3)), f, model="lasso")
    with pytest.raises(KlvaeError, match=r"representation must return codes of shape \(N, D\)"):
        dis.sample_codes(lambda x: np.zeros(len(x)), TOY, 5, np.random.default_rng(0))


@pytest.mark.parametrize("field", ["n_train", "batch_size", "n_votes_eval"])
def test_metric_sizes_must_be_positive_integers(field):
    least = 1 if field == "n_votes_eval" else 2
    with pytest.raises(KlvaeError, match=f"MetricSizes.{field} must be an integer >= {least}; got 0"):
        dis.MetricSizes(**{field: 0})


TINY = dis.MetricSizes(n_train=300, n_test=200, batch_size=8, n_votes_train=30, n_votes_eval=20, n_variance=200)


def test_the_report_of_a_small_conv_model_holds_every_metric_in_range_and_is_reproducible():
    torch.manual_seed(0)
    model = VAE(ModelSpec(event_shape=[1, 64, 64], latent_dim=4, hidden=[32], net="conv"))
    model.train()
    a = dis.disentanglement_report(model, "dsprites-generated", seed=5, sizes=TINY)
    assert model.training  # restored after the evaluation in eval mode
    b = dis.disentanglement_report(model, "dsprites-generated", seed=5, sizes=TINY)
    a.pop("seconds"), b.pop("seconds")
    assert a == b and json.loads(json.dumps(a)) == a
    assert a["factor_sizes"] == [3, 6, 40, 32, 32] and a["latent_dim"] == 4 and a["sizes"]["n_train"] == 300
    scores = [a["beta_vae"]["eval_accuracy"], a["factor_vae"]["eval_accuracy"], a["mig"]["mig"],
              a["dci"]["disentanglement"], a["dci"]["completeness"], a["dci"]["informativeness_test"], a["sap"]["sap"]]
    assert all(0 <= s <= 1 for s in scores)


def test_the_report_refuses_a_model_of_another_image_size():
    model = VAE(ModelSpec(event_shape=[1, 28, 28], latent_dim=2, hidden=[16]))
    with pytest.raises(KlvaeError, match=r"model takes data of shape \(1, 28, 28\) but dsprites-generated images"):
        dis.disentanglement_report(model, "dsprites-generated", sizes=TINY)


def test_the_report_reads_the_real_grid_subset(shared_data):
    root = shared_data("dsprites", "dsprites_grid.npz")
    model = VAE(ModelSpec(event_shape=[1, 64, 64], latent_dim=3, hidden=[16], net="conv"))
    out = dis.disentanglement_report(model, "dsprites-grid", data_dir=root, sizes=TINY)
    assert out["data"] == "dsprites-grid" and out["factor_sizes"] == [3, 6, 10, 16, 16]
