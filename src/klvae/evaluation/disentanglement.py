"""Disentanglement metrics: how the codes of a representation line up with known factors.

Pure functions of codes (N, D) and factor classes (N, F) int (MIG, SAP, DCI), or of a
representation (images -> codes) and a FactorData that draws images at chosen factors (BetaVAE
and FactorVAE scores, which fix one factor and vary the others). Each follows
disentanglement_lib (Locatello et al. 2019) where it defines the metric; deviations are named:

- BetaVAE score (Higgins et al. 2017): accuracy of a logistic regression predicting which factor
  was held fixed from mean |z1 - z2| over a batch of pairs sharing that factor.
- FactorVAE score (Kim & Mnih 2018): accuracy of a majority vote from the code dimension with the
  least normalised variance, over batches sharing one factor; dims with std < 0.05 are pruned.
- MIG, disentanglement_lib's discrete estimator (not Chen et al.'s, which samples q(z|x) over the
  data set): each code dimension cut into a 20-bin histogram, MI in nats by
  sklearn.metrics.mutual_info_score, mean over factors of (top-1 MI - top-2 MI) / H(factor).
- DCI (Eastwood & Williams 2018): importance of each code for each factor from a tree ensemble
  (a random forest by default; disentanglement_lib's gradient-boosted trees on request),
  disentanglement and completeness as 1 - entropy of the normalised importances, weighted as in
  disentanglement_lib; informativeness as test accuracy (disentanglement_lib's, not an error).
- SAP (Kumar et al. 2018): per code and factor, test accuracy of a linear SVM on that one code
  (factors taken as discrete, as disentanglement_lib for dSprites; or the squared correlation,
  for factors taken as continuous); mean over factors of the gap between the two best codes.

The metrics never look at an image: `representation` receives what `data.images_of` returns, so
any factor-to-observation map and any encoder will do (the tests use the factors themselves).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import entropy
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC

from klvae.data.dsprites import FactorData, factor_data
from klvae.data.registry import resolve_data_dir
from klvae.errors import KlvaeError

Representation = Callable[[np.ndarray], np.ndarray]  # observations (N, ...) -> codes (N, D)
CHUNK_IMAGES = 4096  # observations drawn and encoded at a time (64 MB of 64x64 float32 images)
PRUNE_STD = 0.05  # FactorVAE score: dims whose std is below this are collapsed (disentanglement_lib)
IMPORTANCE_MODELS = ("forest", "gbt")


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


# --- drawing codes -----------------------------------------------------------------------


def encode_in_chunks(representation: Representation, data, factors: np.ndarray) -> np.ndarray:
    """Codes (N, D) float64 of the observations data.images_of(factors) for factors (N, F),
    CHUNK_IMAGES at a time."""
    parts = []
    for start in range(0, len(factors), CHUNK_IMAGES):
        codes = np.asarray(representation(data.images_of(factors[start:start + CHUNK_IMAGES])), np.float64)
        if codes.ndim != 2 or len(codes) != len(factors[start:start + CHUNK_IMAGES]):
            raise KlvaeError(f"representation must return codes of shape (N, D); got {codes.shape}")
        parts.append(codes)
    return np.concatenate(parts)


def sample_codes(representation: Representation, data, n: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """n random factor combinations and their codes: (codes (n, D), factors (n, F))."""
    factors = data.sample_factors(n, rng)
    return encode_in_chunks(representation, data, factors), factors


# --- MIG -----------------------------------------------------------------------------------


def discretize(codes: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """Each column of codes (N, D) as the index of its bin among n_bins equal-width bins spanning
    that column's range (disentanglement_lib's histogram discretiser): (N, D) int."""
    out = np.empty(codes.shape, np.int64)
    for j, c in enumerate(np.asarray(codes).T):
        out[:, j] = np.digitize(c, np.histogram(c, n_bins)[1][:-1])
    return out


def mutual_info_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """MI in nats between each discrete code column and each factor: (D, F)."""
    return np.array([[mutual_info_score(f, c) for f in factors.T] for c in discrete_codes.T])


def mig(codes: np.ndarray, factors: np.ndarray, n_bins: int = 20) -> dict:
    """disentanglement_lib's MIG of codes (N, D) against factor classes (N, F): in [0, 1], 1 when
    each factor is told by one code dimension alone. Also per factor, and the MI matrix (nats)."""
    codes, factors = _check_pair(codes, factors)
    mi = mutual_info_matrix(discretize(codes, n_bins), factors)
    h = np.array([mutual_info_score(f, f) for f in factors.T])  # H(factor) in nats
    top = np.sort(mi, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(mi.shape[1])
    gap = np.divide(top[0] - second, h, out=np.zeros_like(h), where=h > 0)
    return {"mig": float(gap.mean()), "per_factor": gap.tolist(), "mutual_info_nats": mi.tolist(),
            "factor_entropy_nats": h.tolist(), "estimator": f"disentanglement_lib, {n_bins}-bin histogram"}


# --- SAP -----------------------------------------------------------------------------------


def sap(codes: np.ndarray, factors: np.ndarray, test_codes: np.ndarray, test_factors: np.ndarray,
        continuous: bool = False) -> dict:
    """SAP score of codes (N, D) against factor classes (N, F): a score matrix (D, F) of how well
    each single code dimension predicts each factor, then the mean over factors of the gap between
    the two best codes; in [0, 1].

    continuous=False (disentanglement_lib's choice for dSprites): test accuracy of
    LinearSVC(C=0.01, class_weight="balanced") fitted on the one code; a single linear code
    separates only part of many classes, so even a perfect code scores well below 1 (about 0.2 on
    a (3, 6, 10, 16, 16) grid). continuous=True: the squared correlation of code and class index
    on the training points (Kumar et al.'s regression score), 1 for a code linear in the factors.
    """
    codes, factors = _check_pair(codes, factors)
    test_codes, test_factors = _check_pair(test_codes, test_factors)
    scores = np.zeros((codes.shape[1], factors.shape[1]))
    for i in range(codes.shape[1]):
        for j in range(factors.shape[1]):
            if np.ptp(codes[:, i]) == 0 or len(np.unique(factors[:, j])) < 2:
                continue  # a constant code or factor predicts nothing
            if continuous:
                scores[i, j] = np.corrcoef(codes[:, i], factors[:, j])[0, 1] ** 2
            else:
                svm = LinearSVC(C=0.01, class_weight="balanced").fit(codes[:, i:i + 1], factors[:, j])
                scores[i, j] = np.mean(svm.predict(test_codes[:, i:i + 1]) == test_factors[:, j])
    top = np.sort(scores, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(scores.shape[1])
    return {"sap": float(np.mean(top[0] - second)), "score_matrix": scores.tolist(), "continuous": continuous}


# --- DCI -----------------------------------------------------------------------------------


def importance_matrix(codes: np.ndarray, factors: np.ndarray, test_codes: np.ndarray,
                      test_factors: np.ndarray, model: str = "forest", seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Impurity importance (D, F) of each code for predicting each factor, with train and test
    accuracy per factor (F,). model: "forest", a RandomForestClassifier of 20 trees that weighs
    every code at every split (max_features=None; with sklearn's default of a few codes per
    split, noise codes get splits and importance they do not earn) and leaves of >= 20 points, a
    few seconds at 10,000 points; or "gbt", disentanglement_lib's GradientBoostingClassifier()
    (minutes at 10,000 points of dSprites' 113 classes)."""
    if model not in IMPORTANCE_MODELS:
        raise KlvaeError(f"importance model must be one of {', '.join(IMPORTANCE_MODELS)}; got {model!r}")
    imp = np.zeros((codes.shape[1], factors.shape[1]))
    train_acc, test_acc = np.zeros(factors.shape[1]), np.zeros(factors.shape[1])
    for j in range(factors.shape[1]):
        clf = (RandomForestClassifier(n_estimators=20, max_features=None, min_samples_leaf=20, random_state=seed)
               if model == "forest" else GradientBoostingClassifier(random_state=seed))
        clf.fit(codes, factors[:, j])
        imp[:, j] = np.abs(clf.feature_importances_)
        train_acc[j] = np.mean(clf.predict(codes) == factors[:, j])
        test_acc[j] = np.mean(clf.predict(test_codes) == test_factors[:, j])
    return imp, train_acc, test_acc


def dci_scores(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) of an importance matrix (D, F), as disentanglement_lib:
    each code's 1 - entropy (base F) of its importances over factors, weighted by the code's share
    of all importance; each factor's 1 - entropy (base D) over codes, weighted likewise."""
    total = importance.sum()
    weights = importance if total > 0 else np.ones_like(importance)
    per_code = 1 - entropy(importance.T + 1e-11, base=max(importance.shape[1], 2))
    per_factor = 1 - entropy(importance + 1e-11, base=max(importance.shape[0], 2))
    d = float(np.sum(per_code * weights.sum(1) / weights.sum()))
    c = float(np.sum(per_factor * weights.sum(0) / weights.sum()))
    return d, c


def dci(codes: np.ndarray, factors: np.ndarray, test_codes: np.ndarray, test_factors: np.ndarray,
        model: str = "forest", seed: int = 0) -> dict:
    """DCI of codes (N, D) against factor classes (N, F): disentanglement and completeness in
    [0, 1], informativeness as the mean train / test accuracy of the importance model."""
    codes, factors = _check_pair(codes, factors)
    test_codes, test_factors = _check_pair(test_codes, test_factors)
    imp, train_acc, test_acc = importance_matrix(codes, factors, test_codes, test_factors, model, seed)
    d, c = dci_scores(imp)
    return {"disentanglement": d, "completeness": c, "informativeness_train": float(train_acc.mean()),
            "informativeness_test": float(test_acc.mean()), "informativeness_per_factor": test_acc.tolist(),
            "importance": imp.tolist(), "importance_model": model}


# --- BetaVAE and FactorVAE scores --------------------------------------------------------


def _beta_vae_features(representation: Representation, data, n: int, batch_size: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n (feature (D,), fixed factor) pairs: feature = mean over batch_size pairs of |z1 - z2|,
    where each pair shares the fixed factor's class and draws the others independently."""
    k = rng.integers(len(data.factor_sizes), size=n)
    f1 = data.sample_factors(n * batch_size, rng).reshape(n, batch_size, -1)
    f2 = data.sample_factors(n * batch_size, rng).reshape(n, batch_size, -1)
    f2[np.arange(n), :, k] = f1[np.arange(n), :, k]
    z1 = encode_in_chunks(representation, data, f1.reshape(n * batch_size, -1))
    z2 = encode_in_chunks(representation, data, f2.reshape(n * batch_size, -1))
    return np.abs(z1 - z2).reshape(n, batch_size, -1).mean(1), k


def beta_vae_score(representation: Representation, data, rng: np.random.Generator, batch_size: int = 64,
                   n_train: int = 10_000, n_eval: int = 5_000) -> dict:
    """BetaVAE score: train / eval accuracy of LogisticRegression predicting the fixed factor from
    _beta_vae_features. 1 for a disentangled code; about 1 / F for a code blind to the factors
    (it can also reach 1 for a rotated code, which the linear classifier undoes)."""
    x_train, y_train = _beta_vae_features(representation, data, n_train, batch_size, rng)
    x_eval, y_eval = _beta_vae_features(representation, data, n_eval, batch_size, rng)
    clf = LogisticRegression(max_iter=1000).fit(x_train, y_train)  # lib: default 100 iterations, may not converge
    return {"train_accuracy": float(clf.score(x_train, y_train)), "eval_accuracy": float(clf.score(x_eval, y_eval))}


def _factor_vae_votes(representation: Representation, data, n: int, batch_size: int, scale: np.ndarray,
                      active: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Votes (F, D): for n batches of batch_size points sharing one random factor's class, the
    active dimension of least variance after dividing by the global std `scale`."""
    k = rng.integers(len(data.factor_sizes), size=n)
    f = data.sample_factors(n * batch_size, rng).reshape(n, batch_size, -1)
    f[np.arange(n), :, k] = f[np.arange(n), :1, k]
    z = encode_in_chunks(representation, data, f.reshape(n * batch_size, -1)).reshape(n, batch_size, -1)
    local = np.var(z[:, :, active] / scale[active], axis=1, ddof=1)  # (n, active)
    dims = np.flatnonzero(active)[np.argmin(local, axis=1)]
    votes = np.zeros((len(data.factor_sizes), z.shape[-1]), np.int64)
    np.add.at(votes, (k, dims), 1)
    return votes


def factor_vae_score(representation: Representation, data, rng: np.random.Generator, batch_size: int = 64,
                     n_train: int = 10_000, n_eval: int = 5_000, n_variance: int = 10_000,
                     prune_std: float = PRUNE_STD) -> dict:
    """FactorVAE score: each code dimension votes for the factor it most often isolates on the
    training votes; accuracy of that majority-vote classifier on train and eval votes. 0 when no
    dimension has a global std >= prune_std."""
    codes, _ = sample_codes(representation, data, n_variance, rng)
    scale = codes.std(0, ddof=1)
    active = scale >= prune_std
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "active_dims": 0}
    train = _factor_vae_votes(representation, data, n_train, batch_size, scale, active, rng)
    classifier = np.argmax(train, axis=0)  # (D,): each dimension's factor
    evals = _factor_vae_votes(representation, data, n_eval, batch_size, scale, active, rng)
    dims = np.arange(train.shape[1])
    return {"train_accuracy": float(train[classifier, dims].sum() / train.sum()),
            "eval_accuracy": float(evals[classifier, dims].sum() / evals.sum()),
            "active_dims": int(active.sum())}


# --- a trained model ---------------------------------------------------------------------


def model_representation(model, batch_size: int = 512) -> Representation:
    """images (N, *event) float32 -> codes (N, D) float64 of a klvae model: its posterior point
    model.family.point(q(z|x)), the mean (the mode direction of a spherical latent, the mode
    angles of a von Mises one). Call it with the model in eval mode."""
    param = next(model.parameters())

    def represent(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
                out.append(model.family.point(model.encode(x.to(param.device, param.dtype))).double().cpu().numpy())
        return np.concatenate(out)

    return represent


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


def _check_pair(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, factors = np.asarray(codes, np.float64), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise KlvaeError(
            f"codes must be (N, D) and factors (N, F) with the same N; got {codes.shape} and {factors.shape}"
        )
    if not np.issubdtype(factors.dtype, np.integer):
        raise KlvaeError(f"factors must be integer classes; got dtype {factors.dtype}")
    return codes, factors
