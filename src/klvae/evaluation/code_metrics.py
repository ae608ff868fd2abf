"""Disentanglement metrics that are pure functions of codes (N, D) and factor classes (N, F) int:
how far each factor is told by one code dimension alone. Each follows disentanglement_lib
(Locatello et al. 2019) where it defines the metric; deviations are named:

- MIG, disentanglement_lib's discrete estimator (not Chen et al.'s, which samples q(z|x) over the
  data set): each code dimension cut into a 20-bin histogram, MI in nats by
  sklearn.metrics.mutual_info_score, mean over factors of (top-1 MI - top-2 MI) / H(factor).
- SAP (Kumar et al. 2018): per code and factor, test accuracy of a linear SVM on that one code
  (factors taken as discrete, as disentanglement_lib for dSprites; or the squared correlation,
  for factors taken as continuous); mean over factors of the gap between the two best codes.
- DCI (Eastwood & Williams 2018): importance of each code for each factor from a tree ensemble
  (a random forest by default; disentanglement_lib's gradient-boosted trees on request),
  disentanglement and completeness as 1 - entropy of the normalised importances, weighted as in
  disentanglement_lib; informativeness as test accuracy (disentanglement_lib's, not an error).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import entropy
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC

from klvae.errors import KlvaeError

IMPORTANCE_MODELS = ("forest", "gbt")


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


def _check_pair(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, factors = np.asarray(codes, np.float64), np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise KlvaeError(
            f"codes must be (N, D) and factors (N, F) with the same N; got {codes.shape} and {factors.shape}"
        )
    if not np.issubdtype(factors.dtype, np.integer):
        raise KlvaeError(f"factors must be integer classes; got dtype {factors.dtype}")
    return codes, factors
