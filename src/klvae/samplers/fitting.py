"""Fitting a sampler to a model's codes, one density per class of a conditional model, and the
figures that judge it: held-out NLL of the codes beside the prior's, KL to the aggregated
posterior, seconds to fit and to draw."""
from __future__ import annotations

import time

import torch

from klvae.errors import KlvaeError
from klvae.registry import Entry
from klvae.samplers.codes import aggregate_kl, encode_codes
from klvae.samplers.density import CodeDensity, SamplerConfig
from klvae.samplers.stored import class_key

DRAW_TIMING = 10_000  # codes drawn to time a fitted sampler
TRAIN_NLL_CODES = 5_000  # training codes (of each class) whose NLL shows how far a sampler overfits
TEST_NLL_CODES = 10_000  # test codes (of each class) whose NLL judges a sampler (MOSES's test set has 176k)


def fit_densities(model, entry: Entry, config: SamplerConfig, train: tuple, test: tuple
                  ) -> tuple[dict[str, CodeDensity], dict]:
    """Densities of ``entry`` fitted to the codes of train = (x, labels) — one per class of a
    conditional model — and their report, scored on test = (x, labels): nats per code, a bound
    where the density's log_prob is one (``exact`` False). KL(q(z) || sampler) is reported for a
    sampler of posterior draws (``codes`` sample) only: one of posterior means models the spread of
    the means, not q(z) (whose inactive dimensions it would put at a point)."""
    device = next(model.parameters()).device
    classes = list(range(model.num_classes)) if getattr(model, "num_classes", 0) else [None]
    densities = {}
    sums = {"fit_seconds": 0.0, "nll_train": 0.0, "nll_test": 0.0, "prior_nll_test": 0.0, "n_train": 0, "n_test": 0}
    scored_train = 0
    for label in classes:
        (z, _), (z_test, y_test) = (_codes(model, *part, label, config, limit) for part, limit in
                                    ((train, None), (test, TEST_NLL_CODES)))
        if len(z) == 0:
            continue
        densities[class_key(label)] = density = entry.builder(z.shape[1], config)
        sums["fit_seconds"] += density.fit(z)["seconds"]
        prior = model.prior(y_test.to(device)) if y_test is not None else model.prior()
        sums["nll_train"] -= density.log_prob(z[:TRAIN_NLL_CODES]).sum().item()
        sums["nll_test"] -= density.log_prob(z_test).sum().item()
        sums["prior_nll_test"] -= prior.log_prob(z_test.to(device)).sum().item()
        sums["n_train"], sums["n_test"] = sums["n_train"] + len(z), sums["n_test"] + len(z_test)
        scored_train += min(len(z), TRAIN_NLL_CODES)
    if not densities:
        raise KlvaeError("the training split holds no codes to fit a sampler to; check the run's data")
    sums["nll_train"] /= scored_train
    sums["nll_test"] /= max(sums["n_test"], 1)
    sums["prior_nll_test"] /= max(sums["n_test"], 1)
    report = {"sampler": entry.name, "codes": config.codes, "exact": entry.builder.exact, **sums}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        start = time.perf_counter()
        next(iter(densities.values())).sample(DRAW_TIMING)
        report["sample_seconds_10k"] = time.perf_counter() - start
    if class_key(None) in densities:  # KL to the test set's aggregated posterior (unconditional models)
        report["prior_kl_aggregate"] = aggregate_kl(model, test[0], lambda z: model.prior().log_prob(z), config.seed)
        if config.codes == "sample":  # a density of posterior means is not one of q(z): no KL to it
            report["kl_aggregate"] = aggregate_kl(model, test[0], densities[class_key(None)].log_prob, config.seed)
    return densities, report


def _codes(model, x: torch.Tensor, labels: torch.Tensor | None, label: int | None, config: SamplerConfig,
           limit: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The codes (and labels) of x's rows of class ``label`` (all rows for None), the first ``limit``."""
    keep = torch.arange(len(x)) if label is None else torch.nonzero(labels == label)[:, 0]
    keep = keep[:limit]
    y = None if label is None else labels[keep]
    return encode_codes(model, x[keep], y, config.codes, config.seed), y
