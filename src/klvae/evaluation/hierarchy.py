"""What a hierarchy knows about its inputs, level by level: the likelihood ratios LLR^{>k} of
Havtorn et al. 2021 ("Hierarchical VAEs know what they don't know").

L(x) is the IWAE bound with K importance samples; L^{>k}(x) the same bound in which the lowest k
latent levels take the mode of their conditional prior p(z_i | z_{i+1}) instead of a draw from q,
and lose their KL terms, so that only the levels above k explain x. LLR^{>k}(x) = L(x) - L^{>k}(x)
is large where the low levels carry what the high ones cannot: the low-level statistics that make
a model find out-of-distribution inputs likely, taken out of the score.
"""
from __future__ import annotations

import math

import torch

from klvae.bounds import iwae_bound
from klvae.errors import KlvaeError
from klvae.evaluation.likelihood import plan_batches


def check_levels(model, ks) -> list[int]:
    """The k of LLR^{>k} asked for (default: 1 .. L-1), each in 0 .. L-1; a one-line KlvaeError else."""
    levels = len(model.dims)
    ks = list(range(1, levels)) if ks is None else list(ks)
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < levels]
    if bad or not ks:
        raise KlvaeError(f"--llr-k takes levels 0 to {levels - 1} (this model has {levels} latent layers); got "
                         f"{bad or 'none'}")
    return ks


@torch.no_grad()
def likelihood_ratios(model, x: torch.Tensor, ks: list[int] | None = None, samples: int = 100,
                      batch_size: int | None = None, seed: int = 0) -> dict[int, torch.Tensor]:
    """{k: LLR^{>k}(x)} for x: (N, *event), each (N,) float64 nats, with ``samples`` importance
    samples per bound (``ks`` default: 1 .. L-1). Both bounds of a batch draw the levels above k
    from the same seeds, so LLR^{>0} is exactly 0. Torch's global random state is left untouched."""
    ks = check_levels(model, ks)
    if samples < 1:
        raise KlvaeError(f"the importance samples must be a positive integer; got {samples}")
    model.eval()
    device = next(model.parameters()).device
    batch, chunk = plan_batches(len(x), math.prod(x.shape[1:]), samples, batch_size)
    parts: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for b, start in enumerate(range(0, len(x), batch)):
            xb = x[start:start + batch].to(device)
            base = seed + b * (samples // chunk + 1)
            full = iwae_bound(model, xb, samples, chunk, seed=base)
            for k in ks:
                parts[k].append((full - iwae_bound(model, xb, samples, chunk, prior_below=k, seed=base)).double().cpu())
    ratios = {k: torch.cat(v) for k, v in parts.items()}
    if not all(torch.isfinite(v).all() for v in ratios.values()):
        raise KlvaeError("a likelihood ratio came out NaN/Inf; the model or the data hold non-finite values")
    return ratios
