"""Disentanglement scores that fix one factor and vary the others: functions of a representation
(observations -> codes) and a FactorData that draws observations at chosen factor classes. Each
follows disentanglement_lib (Locatello et al. 2019); deviations are named:

- BetaVAE score (Higgins et al. 2017): accuracy of a logistic regression predicting which factor
  was held fixed from mean |z1 - z2| over a batch of pairs sharing that factor.
- FactorVAE score (Kim & Mnih 2018): accuracy of a majority vote from the code dimension with the
  least normalised variance, over batches sharing one factor; dims with std < 0.05 are pruned.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from klvae.evaluation.representation import Representation, encode_in_chunks, sample_codes

PRUNE_STD = 0.05  # FactorVAE score: dims whose std is below this are collapsed (disentanglement_lib)


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
