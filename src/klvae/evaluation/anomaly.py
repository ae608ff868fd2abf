"""Per-example anomaly scores of a trained model, and how well they detect anomalies (AUROC, AUPRC).

Every score is in nats per data point and higher means more anomalous:

- ``elbo``: -ELBO(x), one reparameterised sample, as :func:`klvae.objectives.elbo`;
- ``kl``: KL(q(z|x) || p(z)), the rate;
- ``recon``: -E_q log p(x|z), the distortion (one-sample estimate);
- ``iwae``: -log p(x) estimated with the IWAE bound over K importance samples;
- ``typicality``: |NLL(x) - H|, H the mean IWAE NLL of (a seeded subset of) the run's training
  data: the one-example typicality test of Nalisnick et al. 2019b ("Detecting out-of-distribution
  inputs to deep generative models using typicality"). OOD inputs that a model finds *more*
  likely than its training data (Nalisnick et al. 2019, "Do deep generative models know what
  they don't know?") lie far below H and score high, where ``iwae`` would call them normal;
- ``complexity``: NLL(x) - L(x), L(x) = ln 2 * 8 * len(zlib.compress(x as 8-bit pixels, 9)) the
  input complexity of Serrà et al. 2020 ("Input complexity and out-of-distribution detection with
  likelihood-based generative models"): a likelihood ratio against a universal compressor, so
  simple inputs (which every model finds likely) no longer look normal for that reason alone;
- hierarchies only (a model whose registry entry has ``layers``): ``kl-layer``, the KL of each
  latent level (columns ``kl_layer_0`` .., bottom to top), and ``llr``, the likelihood ratios
  LLR^{>k} = L(x) - L^{>k}(x) of Havtorn et al. 2021 (columns ``llr>k`` for each ``llr_k``; see
  :mod:`klvae.evaluation.hierarchy`).

Scoring follows :func:`klvae.evaluation.likelihood.evaluate_model` draw for draw: the same
batches, the ELBO sample then the K IWAE samples per batch from ``torch.manual_seed(seed)``, and
the same evaluation copy of the data (dynamically binarised splits drawn once, seed 0). So the
mean ``elbo`` score is -evaluate()["elbo"] and the mean ``iwae`` score is its ``nll_iwae`` for
the same split, K and seed.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import torch

from klvae.errors import KlvaeError
from klvae.evaluation.hierarchy import likelihood_ratios
from klvae.evaluation.likelihood import SPLITS, batched_terms, split_with_labels
from klvae.likelihoods import LIKELIHOODS
from klvae.models import MODELS
from klvae.models.conditional import condition_of

SCORES = {
    "elbo": "-ELBO(x), nats",
    "kl": "KL(q(z|x) || p(z)), nats",
    "recon": "-E_q log p(x|z), nats",
    "iwae": "-log p(x), IWAE estimate with K samples, nats",
    "typicality": "|NLL(x) - mean NLL of the training data| (Nalisnick et al. 2019b), nats",
    "complexity": "NLL(x) - zlib length of x in nats (Serrà et al. 2020), nats",
    "kl-layer": "hierarchies: the KL of each latent layer, bottom to top (columns kl_layer_i), nats",
    "llr": "hierarchies: LLR^{>k} = L(x) - L^{>k}(x), the lowest k layers at their prior's mode (Havtorn et al. "
           "2021; --llr-k, columns llr>k), nats",
}
COLUMNS = {"kl-layer": "kl_layer_", "llr": "llr>"}  # a hierarchy's level scores: one column per level or k
LAYERED = tuple(COLUMNS)
REFERENCE_SIZE = 2000  # training points giving H for typicality: its standard error is ~0.1 nats on MNIST


@torch.no_grad()
def input_complexity(x: torch.Tensor) -> torch.Tensor:
    """L(x): (N,) nats, the zlib (level 9) length of each x: (N, *event) as 8-bit pixels; values are
    clamped to [0, 1] and quantised to 0..255, as PNG would store them."""
    pixels = (x.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).reshape(len(x), -1).numpy()
    lengths = [len(zlib.compress(row.tobytes(), 9)) for row in pixels]
    return torch.tensor(lengths, dtype=torch.float64) * (8 * math.log(2))


@torch.no_grad()
def score_model(model, x: torch.Tensor, iwae_k: int = 100, batch_size: int | None = None, seed: int = 0,
                reference_nll: float | None = None, condition: torch.Tensor | None = None,
                llr_k: list[int] | None = ()) -> dict[str, torch.Tensor]:
    """Every score of x: (N, *event) -> {name: (N,) float64 nats}, higher = more anomalous.

    ``typicality`` only when ``reference_nll`` (H, the mean IWAE NLL of the training data) is given.
    Batches and random draws are those of ``evaluate_model`` (both read x through ``batched_terms``).
    ``condition``: the labels (N,) of x for a conditional model (scores of log p(x|y)). A hierarchy
    adds ``kl_layer_i`` and, for each k of ``llr_k`` (None: 1 .. L-1), ``llr>k``."""
    parts: dict[str, list[torch.Tensor]] = {"elbo": [], "kl": [], "recon": [], "iwae": []}
    layers = []
    for terms, log_px in batched_terms(model, x, iwae_k, batch_size, seed, condition):
        for name, value in (("elbo", -terms.elbo), ("kl", terms.kl), ("recon", -terms.recon), ("iwae", -log_px)):
            parts[name].append(value.double().cpu())
        if getattr(terms, "kl_per_layer", None) is not None:
            layers.append(terms.kl_per_layer.double().cpu())
    scores = {name: torch.cat(p) for name, p in parts.items()}
    if layers:
        scores.update({f"{COLUMNS['kl-layer']}{i}": c for i, c in enumerate(torch.cat(layers).unbind(-1))})
    if llr_k is None or llr_k:
        scores.update({f"{COLUMNS['llr']}{k}": v for k, v in likelihood_ratios(model, x, llr_k, iwae_k, batch_size, seed).items()})
    if not all(torch.isfinite(s).all() for s in scores.values()):
        raise KlvaeError("scoring produced NaN/Inf; the model or the data hold non-finite values, retrain or check the data")
    if reference_nll is not None:
        scores["typicality"] = (scores["iwae"] - reference_nll).abs()
    scores["complexity"] = scores["iwae"] - input_complexity(x)
    return scores


def detection_metrics(scores: dict[str, torch.Tensor], anomalous: torch.Tensor) -> dict[str, dict[str, float]]:
    """{name: {"auroc", "auprc"}} of each (N,) score against anomalous: (N,) bool, the anomalous
    examples being the positive class (AUPRC is scikit-learn's average precision)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = anomalous.bool().numpy()
    if y.all() or not y.any():
        raise KlvaeError(
            f"AUROC needs normal and anomalous examples; got {int(y.sum())} anomalous of {len(y)}; "
            "mark some examples anomalous and leave others normal"
        )
    return {name: {"auroc": float(roc_auc_score(y, s.numpy())), "auprc": float(average_precision_score(y, s.numpy()))}
            for name, s in scores.items()}


def check_scores(names: list[str] | None, layered: bool = False) -> list[str]:
    """The requested score names in a fixed order (when None: all, those of a hierarchy's levels
    only for a hierarchy, ``layered``); KlvaeError for an unknown one or a level score of a flat model."""
    if names is None:
        return [n for n in SCORES if layered or n not in LAYERED]
    unknown = [n for n in names if n not in SCORES]
    if unknown or not names:
        raise KlvaeError(f"unknown score {', '.join(map(repr, unknown)) or 'list []'}; choose from {', '.join(SCORES)}")
    flat = [n for n in names if n in LAYERED and not layered]
    if flat:
        raise KlvaeError(f"score {', '.join(flat)} needs a model with latent layers (--model "
                         f"{' or '.join(MODELS.where(lambda e: bool(e.get('layers'))))}); drop it for this run")
    return [n for n in SCORES if n in names]


def columns(names: list[str], scores: dict[str, torch.Tensor]) -> list[str]:
    """The score columns of the names: a level score gives one column per level or per k."""
    return [c for n in names for c in ([n] if n not in COLUMNS else [c for c in scores if c.startswith(COLUMNS[n])])]


@dataclass
class ScoredSet:
    """The scores of one split of one data set: each tensor (N,), rows in the split's order."""

    data: str
    split: str
    scores: dict[str, torch.Tensor]
    labels: torch.Tensor | None  # (N,) class labels, None when the data set has none
    anomalous: torch.Tensor | None = None  # (N,) bool, None when unknown


@dataclass
class ScoreReport:
    """What :func:`score` returns: the scored sets, and AUROC / AUPRC when anomalies are known."""

    run: str
    sets: list[ScoredSet]
    iwae_k: int
    seed: int
    reference_nll: float | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)

    def concat(self, name: str) -> torch.Tensor:
        return torch.cat([s.scores[name] for s in self.sets])

    def summary(self) -> dict:
        """A JSON-ready summary: sizes, mean of each score per set, metrics."""
        sets = [{"data": s.data, "split": s.split, "n": len(next(iter(s.scores.values()))),
                 "n_anomalous": None if s.anomalous is None else int(s.anomalous.sum()),
                 "mean": {k: v.mean().item() for k, v in s.scores.items()}} for s in self.sets]
        return {"run": self.run, "iwae_k": self.iwae_k, "seed": self.seed, "reference_nll": self.reference_nll,
                "units": "nats per data point, higher = more anomalous", "sets": sets, "metrics": self.metrics}

    def to_csv(self) -> str:
        """One row per example: data, split, index (in its split), label, anomalous, each score."""
        labelled = any(s.labels is not None for s in self.sets)
        known = all(s.anomalous is not None for s in self.sets)
        names = list(self.sets[0].scores)
        header = ["data", "split", "index", *(["label"] if labelled else []), *(["anomalous"] if known else []), *names]
        lines = [",".join(header)]
        for s in self.sets:
            columns = [s.scores[n].tolist() for n in names]
            for i, values in enumerate(zip(*columns)):
                row = [_csv_field(s.data), s.split, str(i)]
                row += [str(int(s.labels[i])) if s.labels is not None else ""] if labelled else []
                row += [str(int(s.anomalous[i]))] if known else []
                lines.append(",".join(row + [repr(float(v)) for v in values]))
        return "\n".join(lines) + "\n"


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def load_split(config, data: str | None, split: str, data_dir: str | None = None,
               likelihood: str = "bernoulli") -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, labels) of one split, prepared as evaluation prepares a run's own data.

    data None (or the run's own data set): the run's split, its excluded classes left out of
    train and val as in training. Another data set or file: binarised as the run's data was
    (``binarize: auto`` under a likelihood for binary data means dynamic: drawn once, seed 0)."""
    if split not in SPLITS:
        raise KlvaeError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if data is None or _key(data) == _key(config.data.name):
        x, labels = split_with_labels(config, split, data_dir)
        if split != "test" and config.data.exclude_labels and labels is not None:
            keep = ~torch.isin(labels, torch.tensor(config.data.exclude_labels))
            x, labels = x[keep], labels[keep]
        return x, labels
    mode = config.data.binarize
    if mode == "auto" and likelihood in LIKELIHOODS and LIKELIHOODS[likelihood].get("auto") == "binary":
        mode = "dynamic"
    other = config.replace(data=str(data), binarize=mode, exclude_labels=[])
    return split_with_labels(other, split, data_dir)


def _key(name) -> str:
    return str(name).strip().lower().replace("_", "-")


def _check_shape(model, x: torch.Tensor, data: str, run_dir, own: str) -> None:
    if tuple(x.shape[1:]) != tuple(model.event_shape):
        raise KlvaeError(
            f"{data} holds data of shape {tuple(x.shape[1:])} but the model of {run_dir} takes "
            f"{tuple(model.event_shape)}; score data of the shape it was trained on (e.g. --data {own})"
        )


def reference_nll(model, config, iwae_k: int = 100, batch_size: int | None = None, seed: int = 0,
                  data_dir: str | None = None, size: int = REFERENCE_SIZE) -> float:
    """H: the mean IWAE NLL (nats) of ``size`` training points of the run (a subset drawn with
    ``seed``; all of them when fewer), the centre of the typicality score."""
    if size < 1:
        raise KlvaeError(f"reference_size must be a positive integer; got {size}")
    x, labels = load_split(config, None, "train", data_dir)
    if size < len(x):
        pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:size].sort().values
        x, labels = x[pick], (labels[pick] if labels is not None else None)
    condition = condition_of(model, labels)
    return score_model(model, x, iwae_k, batch_size, seed, condition=condition)["iwae"].mean().item()


def mark_classes(scored: ScoredSet, classes: list[int]) -> torch.Tensor:
    """(N,) bool: the examples of ``scored`` whose class label is in ``classes``."""
    labels = scored.labels
    if labels is None or labels.is_floating_point() or labels.ndim != 1:
        raise KlvaeError(
            f"anomalous labels need class labels but {scored.data} has none; "
            "score a second data set as the anomalous one with --ood-data instead"
        )
    present = torch.unique(labels).tolist()
    missing = sorted(set(classes) - set(present))
    if missing:
        raise KlvaeError(
            f"anomalous labels {missing} are not classes of the {scored.split} split of {scored.data} "
            f"(its classes: {', '.join(map(str, present))}); choose among them"
        )
    return torch.isin(labels, torch.tensor(sorted(set(classes))))


def score(run_dir, data: str | None = None, split: str = "test", scores: list[str] | None = None,
          iwae_k: int = 100, batch_size: int | None = None, seed: int = 0,
          anomalous_labels: list[int] | None = None, ood_data: str | None = None, ood_split: str = "test",
          data_dir: str | None = None, device: str = "cpu", reference_size: int = REFERENCE_SIZE,
          llr_k: list[int] | None = None) -> ScoreReport:
    """Score one split of ``data`` (a data set name or file; None: the run's own) with the model of
    ``run_dir``; ``scores`` picks among :data:`SCORES` (default all; a hierarchy's level scores for
    a hierarchy), ``llr_k`` the k of LLR^{>k} (default 1 .. L-1).

    The anomalous examples, when known, give AUROC / AUPRC per score: those of the classes
    ``anomalous_labels``, or every example of ``ood_split`` of ``ood_data`` scored as a second set
    (the first set then being all normal). Units: nats per data point, higher = more anomalous."""
    from klvae.run import RunDir

    if anomalous_labels and ood_data is not None:
        raise KlvaeError("give either anomalous labels (--anomalous-labels) or a second data set (--ood-data), not both")
    run = RunDir.open(run_dir)
    config, model = run.config(), run.load_model(device)
    names = check_scores(scores, bool(MODELS[model.spec.name].get("layers")))
    if llr_k is not None and "llr" not in names:
        raise KlvaeError("--llr-k sets the levels of the llr score; add llr to --score or drop --llr-k")
    likelihood = getattr(model.spec, "likelihood", "bernoulli")
    reference = reference_nll(model, config, iwae_k, batch_size, seed, data_dir, reference_size) \
        if "typicality" in names else None
    sets = []
    for name, part in [(data, split), *([(ood_data, ood_split)] if ood_data is not None else [])]:
        x, labels = load_split(config, name, part, data_dir, likelihood)
        _check_shape(model, x, name or config.data.name, run_dir, config.data.name)
        values = score_model(model, x, iwae_k, batch_size, seed, reference, condition_of(model, labels),
                             llr_k if "llr" in names else ())
        sets.append(ScoredSet(str(name or config.data.name), part, {c: values[c] for c in columns(names, values)},
                              labels))
    if anomalous_labels:
        sets[0].anomalous = mark_classes(sets[0], anomalous_labels)
    elif ood_data is not None:
        sets[0].anomalous = torch.zeros(len(sets[0].scores[names[0]]), dtype=torch.bool)
        sets[1].anomalous = torch.ones(len(sets[1].scores[names[0]]), dtype=torch.bool)
    report = ScoreReport(str(run_dir), sets, iwae_k, seed, reference)
    if sets[0].anomalous is not None:
        report.metrics = detection_metrics({c: report.concat(c) for c in sets[0].scores},
                                           torch.cat([s.anomalous for s in sets]))
    return report
