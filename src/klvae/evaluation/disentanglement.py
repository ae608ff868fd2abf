"""Disentanglement metrics: how the codes of a representation line up with known factors, and
the report that runs them all on a trained model.

The metrics live by what they read, and are re-exported here:

- :mod:`klvae.evaluation.code_metrics`: MIG, DCI and SAP, pure functions of codes (N, D) and
  factor classes (N, F) int;
- :mod:`klvae.evaluation.fixed_factor_scores`: the BetaVAE and FactorVAE scores, which fix one
  factor and vary the others, so they draw observations from a FactorData;
- :mod:`klvae.evaluation.representation`: representations (observations -> codes), the codes
  they give for factor combinations, and a trained model's (its posterior points).

Each follows disentanglement_lib (Locatello et al. 2019) where it defines the metric; its module
names the deviations. :func:`disentanglement_report` runs all five at :class:`MetricSizes`.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from klvae.data.dsprites import factor_data
from klvae.data.factor_grid import FactorData
from klvae.data.registry import resolve_data_dir
from klvae.errors import KlvaeError
from klvae.evaluation.code_metrics import (
    IMPORTANCE_MODELS, dci, dci_scores, discretize, importance_matrix, mig, mutual_info_matrix, sap,
)
from klvae.evaluation.fixed_factor_scores import PRUNE_STD, beta_vae_score, factor_vae_score
from klvae.evaluation.representation import (
    CHUNK_IMAGES, Representation, encode_in_chunks, model_representation, sample_codes,
)

__all__ = ["CHUNK_IMAGES", "IMPORTANCE_MODELS", "PRUNE_STD", "REPORT_SIZES", "MetricSizes", "Representation",
           "beta_vae_score", "dci", "dci_scores", "discretize", "disentanglement_report", "encode_in_chunks",
           "factor_vae_score", "importance_matrix", "mig", "model_representation", "mutual_info_matrix",
           "sample_codes", "sap"]


@dataclass(frozen=True)
class MetricSizes:
    """How many points each metric draws. The defaults are disentanglement_lib's: about 3 million
    observations, half an hour of a small 64x64 conv encoder on one CPU thread; REPORT_SIZES
    draws about 60,000.

    n_train, n_test: points for MIG (train only), DCI and SAP; batch_size: observations per
    BetaVAE / FactorVAE vote (BetaVAE draws two such batches); n_votes_train, n_votes_eval:
    votes of those two scores; n_variance: points for FactorVAE's global variances."""

    n_train: int = 10_000
    n_test: int = 5_000
    batch_size: int = 64
    n_votes_train: int = 10_000
    n_votes_eval: int = 5_000
    n_variance: int = 10_000

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            least = 2 if name in ("n_train", "batch_size", "n_variance") else 1  # variances need 2 points
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise KlvaeError(f"MetricSizes.{name} must be an integer >= {least}; got {value!r}")


# 61,400 observations: 40 s for a conv encoder with 10 latents on one CPU thread (BetaVAE 21 s,
# FactorVAE 13 s, the codes of MIG / DCI / SAP 5 s, their classifiers 4 s)
REPORT_SIZES = MetricSizes(n_train=5_000, n_test=2_000, batch_size=64, n_votes_train=200,
                           n_votes_eval=100, n_variance=5_000)


def disentanglement_report(model, data: FactorData | str = "dsprites-generated", seed: int = 0,
                           data_dir: str | Path | None = None, sizes: MetricSizes = REPORT_SIZES,
                           importance: str = "forest") -> dict:
    """Every metric of a trained model on a FactorData (or its name, see
    klvae.data.dsprites.factor_data; data_dir as load_dataset's), as a JSON-ready dict: the
    BetaVAE and FactorVAE scores, MIG, DCI and SAP, with the sizes, seed and seconds each took.
    The codes are posterior points (model_representation); all draws come from one numpy
    generator seeded with seed. At REPORT_SIZES a small 64x64 conv model takes about a minute on
    one CPU thread."""
    if isinstance(data, str):
        data = factor_data(data, resolve_data_dir(data_dir))
    probe = data.images_of(np.zeros((1, len(data.factor_sizes)), np.int64))
    if tuple(probe.shape[1:]) != tuple(model.event_shape):
        raise KlvaeError(f"model takes data of shape {tuple(model.event_shape)} but {data.name} images are "
                         f"{tuple(probe.shape[1:])}; evaluate a model trained on 64x64 dSprites images")
    was_training, rng, seconds = model.training, np.random.default_rng(seed), {}
    model.eval()
    try:
        rep = model_representation(model)
        start = time.perf_counter()
        codes, factors = sample_codes(rep, data, sizes.n_train, rng)
        test_codes, test_factors = sample_codes(rep, data, sizes.n_test, rng)
        seconds["codes"] = time.perf_counter() - start
        metrics = {
            "beta_vae": lambda: beta_vae_score(rep, data, rng, sizes.batch_size, sizes.n_votes_train, sizes.n_votes_eval),
            "factor_vae": lambda: factor_vae_score(rep, data, rng, sizes.batch_size, sizes.n_votes_train,
                                                   sizes.n_votes_eval, sizes.n_variance),
            "mig": lambda: mig(codes, factors),
            "dci": lambda: dci(codes, factors, test_codes, test_factors, importance, seed),
            "sap": lambda: sap(codes, factors, test_codes, test_factors),
        }
        report = {}
        for name, compute in metrics.items():
            start = time.perf_counter()
            report[name] = compute()
            seconds[name] = time.perf_counter() - start
    finally:
        model.train(was_training)
    return {"data": data.name, "factor_names": list(data.factor_names), "factor_sizes": list(data.factor_sizes),
            "seed": seed, "sizes": asdict(sizes), "latent_dim": int(codes.shape[1]),
            "representation": "posterior point: model.family.point(q(z|x)), the mean", **report,
            "seconds": {k: round(v, 3) for k, v in seconds.items()}}
