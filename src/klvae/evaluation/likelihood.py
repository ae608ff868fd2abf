"""Test ELBO and the IWAE estimate of log p(x), batched over data points and samples."""
from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch

from klvae.diagnostics import active_units, off_fraction
from klvae.evaluation.directional import angle_recovery
from klvae.evaluation.sequences import is_token_rows, sequence_figures
from klvae.errors import KlvaeError
from klvae.likelihoods import LIKELIHOODS, bound_note
from klvae.models.conditional import condition_of
from klvae.objectives import ElboTerms, elbo, iwae_bound
from klvae.run import BASELINE, WEIGHTS, RunDir

SPLITS = ("train", "val", "test")
ELEMENT_BUDGET = 2**21  # decoder outputs (samples x points x pixels) held at once: ~8 MB of float32


def plan_batches(n_points: int, event_size: int, k: int, batch_size: int | None = None) -> tuple[int, int]:
    """(data points per batch, importance samples per chunk) keeping one chunk's decoder output
    within ELEMENT_BUDGET while giving the matrix products thousands of rows to work on."""
    batch = batch_size or min(n_points, 100)
    chunk = max(1, min(k, ELEMENT_BUDGET // (event_size * batch)))
    return batch, chunk


def batched_terms(model, x: torch.Tensor, iwae_k: int, batch_size: int | None = None, seed: int = 0,
                  condition: torch.Tensor | None = None) -> Iterator[tuple[ElboTerms, torch.Tensor]]:
    """(ELBO terms, IWAE bound log p(x) >= ..., (B,)) of x: (N, *event) batch by batch, in eval
    mode, with draws reproducible from ``seed`` and torch's global random state left untouched.
    Evaluation and anomaly scores both read x this way, so their figures agree draw for draw.
    ``condition``: the labels (N,) of x for a conditional model (bounds on log p(x|y))."""
    if iwae_k < 1:
        raise KlvaeError(f"iwae_k must be a positive integer; got {iwae_k}")
    if batch_size is not None and batch_size < 1:
        raise KlvaeError(f"batch_size must be a positive integer; got {batch_size}")
    model.eval()
    device = next(model.parameters()).device
    sized = getattr(model, "output_elements", None)  # a sequence model: its tokens x the vocabulary
    outputs = sized(x) if sized is not None else math.prod(x.shape[1:])
    if getattr(model, "latent_dim", None) == 0:  # no z: every importance weight is p(x) itself
        iwae_k = 1
    batch, chunk = plan_batches(len(x), outputs, iwae_k, batch_size)
    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(x), batch):
            xb = x[start:start + batch].to(device)
            yb = condition[start:start + batch].to(device) if condition is not None else None
            yield elbo(model, xb, condition=yb), iwae_bound(model, xb, iwae_k, chunk, condition=yb)


def evaluate_model(model, x: torch.Tensor, iwae_k: int = 1000, batch_size: int | None = None,
                   seed: int = 0, condition: torch.Tensor | None = None) -> dict:
    """ELBO, reconstruction, KL (nats per data point), IWAE NLL estimate -log p(x) with ``iwae_k``
    importance samples (positive, nats per data point), and active units, for x: (N, *event).
    ``elbo_se`` and ``nll_iwae_se`` are the standard errors of the two means over data points.
    ``condition``: the labels (N,) of x for a conditional model; the bounds are then on log p(x|y)."""
    sums = torch.zeros(6, dtype=torch.float64)  # elbo, recon, kl, log p(x), elbo^2, log p(x)^2
    per_dim, per_layer, locs, off = None, None, [], []
    for terms, log_px in batched_terms(model, x, iwae_k, batch_size, seed, condition):
        e, lp = terms.elbo.double(), log_px.double()
        sums += torch.stack([e.sum(), terms.recon.double().sum(), terms.kl.double().sum(), lp.sum(),
                             (e**2).sum(), (lp**2).sum()]).cpu()
        if terms.kl_per_dim is not None:
            part = terms.kl_per_dim.sum(0).double().cpu()
            per_dim = part if per_dim is None else per_dim + part
        if getattr(terms, "kl_per_layer", None) is not None:  # a hierarchy: (N, L), bottom to top
            part = terms.kl_per_layer.sum(0).double().cpu()
            per_layer = part if per_layer is None else per_layer + part
            layer_dims = terms.layer_dims
        locs.append(terms.q.mean.cpu())
        if (part := off_fraction(terms.q)) is not None:
            off.append(part.cpu())
    if not torch.isfinite(sums).all():
        raise KlvaeError("evaluation produced NaN/Inf; the model or the data hold non-finite values, retrain or check the data")
    n, activity = len(x), torch.cat(locs)
    result = {"elbo": sums[0].item() / n, "recon": sums[1].item() / n, "kl": sums[2].item() / n,
              "nll_iwae": -sums[3].item() / n, "iwae_k": iwae_k,
              "elbo_se": _standard_error(sums[0], sums[4], n), "nll_iwae_se": _standard_error(sums[3], sums[5], n),
              "active_units": active_units(activity), "n": n}
    if per_dim is not None:
        result["kl_per_dim"] = (per_dim / n).tolist()
    if per_layer is not None:  # Burda et al.'s "16+5": each layer's active units, and its KL
        result["kl_per_layer"] = (per_layer / n).tolist()
        result["active_units_per_layer"] = [active_units(z_l) for z_l in activity.split(list(layer_dims), -1)]
    if off:
        result["off_fraction"] = torch.cat(off).mean().item()  # spike-and-slab: dimensions switched off
    if is_token_rows(x):
        result.update(sequence_figures(model, x, result, condition, seed))
    return result


def likelihood_figures(model, result: dict) -> dict:
    """What the likelihood of p(x|z) adds to a result: ``bits_per_dim`` (and ``elbo_bits_per_dim``)
    where it gives the probabilities of 8-bit values (-log2 p(x) over the data's elements);
    ``bound: False`` and a ``note`` where the reconstruction term is a loss, not a likelihood."""
    name = getattr(getattr(model, "spec", None), "likelihood", None)
    if name not in LIKELIHOODS:
        return {}
    if (note := bound_note(name)) is not None:
        return {"bound": False, "note": note}
    if not LIKELIHOODS[name].get("discrete"):
        return {}
    per_bit = math.prod(model.event_shape) * math.log(2)
    return {"bits_per_dim": result["nll_iwae"] / per_bit, "elbo_bits_per_dim": -result["elbo"] / per_bit}


def split_data(config, split: str, data_dir: str | None = None, vocab=None) -> torch.Tensor:
    """The evaluation copy of one split of a run's dataset (binarised once, deterministically)."""
    return split_with_labels(config, split, data_dir, vocab)[0]


def split_with_labels(config, split: str, data_dir: str | None = None, vocab=None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, labels) of one split; labels are None when the data set has none. ``vocab``: a text
    run's vocabulary (RunDir.vocabulary), so rows are encoded as the model was trained."""
    if split not in SPLITS:
        raise KlvaeError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    data = config.data.load(config.trainer.seed, data_dir, vocab)
    data = data.without_classes(config.data.exclude_labels)  # as trained; test keeps every class
    x = getattr(data, split)
    if split == "train":  # train stays grey under dynamic binarisation: draw it once, reproducibly
        x = data.train_batch(x, torch.Generator().manual_seed(0))
    return x, getattr(data, f"{split}_labels")


def _standard_error(total: torch.Tensor, squares: torch.Tensor, n: int) -> float:
    """Standard error of a mean from the sum and the sum of squares of n values."""
    if n < 2:
        return math.nan
    variance = (squares.item() - total.item() ** 2 / n) / (n - 1)
    return math.sqrt(max(variance, 0.0) / n)


def evaluate(run_dir: str | Path, split: str = "test", iwae_k: int = 1000, batch_size: int | None = None,
             seed: int = 0, data_dir: str | None = None, device: str = "cpu", model=None) -> dict:
    """Evaluate a run directory on one split; also writes ``eval_<split>.json`` there. ``model``:
    the run's model already loaded (e.g. ``klvae.load(run, encoder=...)`` for parts from Python)."""
    run = RunDir.open(run_dir)
    config = run.config()
    model = run.load_model(device) if model is None else model.to(device).eval()
    codec = run.vocabulary()
    x, labels = split_with_labels(config, split, data_dir, codec.vocabulary if codec else None)
    condition = condition_of(model, labels)
    result = {"split": split, **evaluate_model(model, x, iwae_k, batch_size, seed, condition)}
    if condition is not None:  # the bounds are on log p(x|y), given the test labels
        result["condition"] = model.spec.condition
    result.update(likelihood_figures(model, result))
    if labels is not None and labels.is_floating_point():  # ground-truth angles (pendulum, arm)
        result["circular_correlation"] = angle_recovery(model, x.to(device), labels)
    baseline = RunDir(run.file(BASELINE))
    if baseline.file(WEIGHTS).is_file():  # trained with --baseline: its figures beside the model's
        result["baseline"] = evaluate(baseline.path, split, iwae_k, batch_size, seed, data_dir, device)
    run.save_result(f"eval_{split}", result)
    return result
