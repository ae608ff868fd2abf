"""Offline sample quality: a Fréchet distance and the improved precision and recall (Kynkäänniemi
et al. 2019) in the features of a small classifier trained here, and the coverage of the classes,
for samples of models of labelled image data.

The features are NOT Inception's: the Fréchet distance here is in the 64-dimensional
penultimate layer of a small MLP classifier that klvae trains on the data set's own training split
(MNIST for mnist and binarized-mnist runs, Fashion-MNIST, the 8x8 digits, or the 32x32 colour shapes,
whose classes are the three shapes). It is not the Inception FID of Heusel et al. (2017) and is
not comparable with published FIDs; it compares
samples of models of the same data, drawn in the same number (the estimate of the distance
depends on the number of samples, as FID's does).

The classifier is trained once per data set (seeded; a few seconds on a CPU) and cached as
``classifier-<data>-v1.safetensors`` in the cache directory: ``cache_dir`` if given, else
$KLVAE_CACHE, else $XDG_CACHE_HOME/klvae, else ~/.cache/klvae.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from klvae.errors import KlvaeError
from klvae.evaluation.precision_recall import precision_recall

CLASSIFIER_DATA = {"mnist": "mnist", "binarized-mnist": "mnist", "fashion-mnist": "fashion-mnist", "digits": "digits",
                   "colour-shapes": "colour-shapes"}
VERSION = 1  # part of the cache file's name: a change of the recipe below trains a new classifier
HIDDEN, FEATURES = 256, 64  # widths of the classifier's two hidden layers; the second gives the features
STEPS, BATCH, LR, SEED = 2000, 128, 1e-3, 0  # Adam steps: ~4 epochs of MNIST, ~190 of the 1,350 digits
CACHE_ENV = "KLVAE_CACHE"
PR_NEIGHBOURS = 3  # k of the precision and recall's k-NN balls (the paper's)


class Classifier(nn.Module):
    """x: (N, *event) grey images in [0, 1] -> logits (N, C); :meth:`features` gives the
    penultimate layer, (N, FEATURES)."""

    def __init__(self, event_shape: tuple[int, ...], classes: int):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(event_shape), HIDDEN), nn.ReLU(),
                                  nn.Linear(HIDDEN, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.event_shape:
            raise KlvaeError(f"the classifier takes images of shape {self.event_shape}; got {tuple(x.shape[1:])}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def cache_dir(given: str | os.PathLike | None = None) -> Path:
    """Where trained classifiers are kept: ``given``, else $KLVAE_CACHE, else $XDG_CACHE_HOME/klvae,
    else ~/.cache/klvae."""
    if given:
        return Path(given).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "klvae"


def classifier_data(run_data: str) -> str:
    """The data set whose classifier scores samples of a model of ``run_data``; KlvaeError for
    data without one."""
    key = str(run_data).strip().lower().replace("_", "-")
    if key not in CLASSIFIER_DATA:
        raise KlvaeError(f"sample quality needs a classifier of the run's data, and klvae has one for "
                         f"{', '.join(CLASSIFIER_DATA)} only (mnist's for binarized-mnist); got {run_data!r}")
    return CLASSIFIER_DATA[key]


def reference_data(run_data: str, data_dir: str | os.PathLike | None = None):
    """The labelled data set (grey: not binarised) whose classifier and test images score samples
    of a model of ``run_data``."""
    from klvae.data import load_dataset

    return load_dataset(classifier_data(run_data), data_dir, binarize="none", seed=SEED)


def reference_classifier(ds, cache: str | os.PathLike | None = None) -> tuple[Classifier, dict[str, str]]:
    """The classifier of the data set ``ds`` (from :func:`reference_data`) and its metadata (its
    test accuracy): loaded from the cache, or trained on ds's training split and cached."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    from klvae.files import atomic_write

    path = cache_dir(cache) / f"classifier-{ds.name}-v{VERSION}.safetensors"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)  # the initial weights too: the classifier is reproducible
        model = Classifier(ds.event_shape, int(ds.train_labels.max()) + 1)
    if path.is_file():
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
        model.load_state_dict(load_file(str(path)))
        return model.eval(), meta
    train(model, ds.train, ds.train_labels)
    with torch.no_grad():
        accuracy = (model(ds.test).argmax(1) == ds.test_labels).double().mean().item()
    meta = {"data": ds.name, "test_accuracy": f"{accuracy:.4f}", "steps": str(STEPS), "version": str(VERSION)}
    atomic_write(path, save({k: v.contiguous() for k, v in model.state_dict().items()}, metadata=meta))
    return model.eval(), meta


def train(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> None:
    """STEPS Adam steps of cross-entropy on minibatches of (x, y), drawn with SEED; torch's global
    random state is left as it was."""
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        torch.manual_seed(SEED)
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        model.train()
        for _ in range(STEPS):
            idx = torch.randint(len(x), (BATCH,))
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()


def frechet_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """The Fréchet (2-Wasserstein) distance between Gaussians fitted to two feature sets a: (N, F)
    and b: (M, F): ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), in squared feature units."""
    a, b = (np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t, dtype=np.float64) for t in (a, b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise KlvaeError(f"feature sets must be (N, F) and (M, F) with N, M >= 2; got {a.shape} and {b.shape}")
    return gaussian_frechet(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def gaussian_frechet(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """The Fréchet distance of N(mu_a, cov_a) and N(mu_b, cov_b). tr (S_a S_b)^(1/2) is the sum of
    the square roots of the eigenvalues of the symmetric S_a^(1/2) S_b S_a^(1/2), which has the
    same spectrum: no non-symmetric matrix square root, and no complex round-off."""
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(w.clip(0))) @ v.T
    middle = root_a @ cov_b @ root_a
    trace_root = np.sqrt(np.linalg.eigvalsh((middle + middle.T) / 2).clip(0)).sum()
    value = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)
    return max(value, 0.0)


def class_histogram(labels: torch.Tensor, classes: int) -> list[float]:
    """The fraction of the predicted ``labels`` (N,) in each of ``classes`` classes."""
    return (torch.bincount(labels, minlength=classes).double() / max(len(labels), 1)).tolist()


@dataclass
class SampleQuality:
    """The Fréchet distance of samples to the real test images in the classifier's features
    (squared feature units; NOT Inception FID), the improved precision (share of samples on the
    real images' manifold) and recall (share of real images on the samples') with k = 3, the class
    coverage (the fraction of classes that receive at least ``min_share`` of the samples), the
    class histogram of the samples, and how they were measured."""

    frechet: float
    precision: float
    recall: float
    coverage: float
    classes: list[float]
    min_share: float
    n: int
    n_real: int
    classifier: str
    classifier_accuracy: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def sample_quality(x: torch.Tensor, data: str, data_dir: str | os.PathLike | None = None,
                   cache: str | os.PathLike | None = None, min_share: float | None = None) -> SampleQuality:
    """Score samples x: (N, *event) in [0, 1] (e.g. decoder means of :func:`klvae.generation.sample`)
    of a model of ``data`` against its grey test split. ``min_share``: the share of the samples a
    class must receive to count as covered (default half the uniform share, 1 / (2C): 5% of 10)."""
    ds = reference_data(data, data_dir)
    classifier, meta = reference_classifier(ds, cache)
    real = ds.test
    if tuple(x.shape[1:]) != tuple(real.shape[1:]):
        raise KlvaeError(f"samples of shape {tuple(x.shape[1:])} do not match the {ds.name} images "
                         f"{tuple(real.shape[1:])} of the classifier")
    x = x.detach().cpu().float()
    classes = classifier.head.out_features
    share = 1 / (2 * classes) if min_share is None else min_share
    if not 0 < share <= 1:
        raise KlvaeError(f"min_share must be in (0, 1]; got {min_share}")
    features, real_features = classifier.features(x), classifier.features(real)
    hist = class_histogram(classifier.head(features).argmax(1), classes)
    precision, recall = precision_recall(real_features, features, k=PR_NEIGHBOURS)
    return SampleQuality(frechet=frechet_distance(features, real_features), precision=precision, recall=recall,
                         coverage=sum(h >= share for h in hist) / classes, classes=hist, min_share=share,
                         n=len(x), n_real=len(real), classifier=ds.name,
                         classifier_accuracy=float(meta.get("test_accuracy", "nan")))
