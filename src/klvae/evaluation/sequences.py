"""Figures of a model on token rows (sentences, SMILES): perplexity per token from the IWAE and
ELBO bounds (every token and <eos> counted, as language models report it), the mutual information
I(x; z), and the reconstruction's token accuracy."""
from __future__ import annotations

import math

import torch

from klvae.diagnostics import mutual_information
from klvae.generation import reconstruct

MI_POINTS = 2000  # points of the I(x; z) estimate (it cannot exceed log N)


def is_token_rows(x: torch.Tensor) -> bool:
    return not x.is_floating_point() and x.dim() == 2


def token_accuracy(rows: torch.Tensor, decoded: torch.Tensor) -> float:
    """The share of the input's tokens (<eos> included) that the decoded rows repeat in place."""
    real = rows != 0
    return float(((decoded == rows) & real).sum() / real.sum().clamp_min(1))


@torch.no_grad()
def sequence_figures(model, x: torch.Tensor, result: dict, condition: torch.Tensor | None = None,
                     seed: int = 0) -> dict:
    """Perplexity (exp of the NLL per token) by IWAE and by the ELBO, tokens per row, I(x; z) on
    up to MI_POINTS rows, and the greedy reconstruction's token accuracy, for x: (N, L) rows of
    the ``result`` of :func:`~klvae.evaluation.likelihood.evaluate_model`."""
    tokens = float((x != 0).sum())
    n = len(x)
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        sub = x[:MI_POINTS].to(device)
        c = None if condition is None else condition[:MI_POINTS].to(device)
        mi, _ = mutual_information(model.eval(), sub, condition=c)
        decoded = torch.cat([reconstruct(model, x[i:i + 500].to(device),
                                         None if condition is None else condition[i:i + 500].to(device)).cpu()
                             for i in range(0, n, 500)])
    return {"tokens_per_row": tokens / n,
            "ppl": math.exp(result["nll_iwae"] * n / tokens),
            "ppl_elbo": math.exp(-result["elbo"] * n / tokens),
            "mutual_information": mi,
            "token_accuracy": token_accuracy(x, decoded)}
