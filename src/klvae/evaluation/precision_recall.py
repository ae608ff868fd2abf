"""Improved precision and recall (Kynkäänniemi et al., 2019) and density and coverage (Naeem et
al., 2020) of generated feature vectors against real ones, from k-nearest-neighbour balls.

Each point of a set has a ball whose radius is the distance to its k-th nearest neighbour among
the other points of its set: the point itself is left out by index, exact duplicates of it count
(at distance 0). A set's manifold is the union of its balls, boundaries included.

Distances are Euclidean, in float64, on the CPU. Blocks of ``chunk`` rows are screened with
torch.cdist's matrix-product form on centred copies (memory about 20 * chunk * N bytes); the few
comparisons its round-off could decide (near-ties of k-th neighbours, points within round-off of
a ball's boundary) are redone in the direct form sqrt(sum (x - y)^2) of the input. The results
are the direct form's: a duplicate is at distance 0, and a point on a boundary is inside.
"""
from __future__ import annotations

import numpy as np
import torch

from klvae.errors import KlvaeError

FAST, DIRECT = "use_mm_for_euclid_dist", "donot_use_mm_for_euclid_dist"
CHUNK = 512  # rows per block of distances


def _prepare(real, fake, k, chunk, min_fake):
    """Float64 tensors of both sets, their copies centred on the real mean, and the round-off
    bound tau of the fast squared distances."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise KlvaeError(f"k must be an integer >= 1; got {k!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise KlvaeError(f"chunk must be an integer >= 1; got {chunk!r}")
    r, f = (t.detach().to("cpu", torch.float64) if isinstance(t, torch.Tensor)
            else torch.as_tensor(np.asarray(t, dtype=np.float64)) for t in (real, fake))
    if r.ndim != 2 or f.ndim != 2 or r.shape[1] != f.shape[1] or r.shape[1] < 1:
        raise KlvaeError(f"feature sets must be (N, F) and (M, F) with F >= 1; "
                         f"got {tuple(r.shape)} and {tuple(f.shape)}")
    if len(r) < k + 1 or len(f) < min_fake:
        raise KlvaeError(f"k = {k} needs at least {k + 1} real and {min_fake} generated points; "
                         f"got {len(r)} and {len(f)}")
    if not (torch.isfinite(r).all() and torch.isfinite(f).all()):
        raise KlvaeError("the features hold NaN or Inf values")
    mean = r.mean(0)
    rc, fc = r - mean, f - mean
    # |fast - direct| squared distance <= ~(5F + 20) u (|x|^2 + |y|^2), u = eps / 2: a 3x margin
    norms = float(rc.square().sum(1).max() + fc.square().sum(1).max())
    tau = 8 * (r.shape[1] + 4) * torch.finfo(torch.float64).eps * norms
    return r, f, rc, fc, tau


def _radii(x, xc, k, tau, chunk):
    """(N,): the direct distance of each row of x to its k-th nearest neighbour among the others."""
    out = torch.empty(len(x), dtype=torch.float64)
    for s in range(0, len(x), chunk):
        rows = torch.arange(s, min(s + chunk, len(x)))
        d2 = torch.cdist(xc[rows], xc, compute_mode=FAST).square_()
        d2[torch.arange(len(rows)), rows] = torch.inf
        v, idx = d2.topk(k + 1, 1, largest=False)  # the (k+1)-th: self (inf) when N = k + 1
        out[rows] = torch.cdist(x[rows, None], x[idx[:, :k]], compute_mode=DIRECT)[:, 0].amax(1)
        tied = v[:, k] <= v[:, k - 1] + 2 * tau  # else the k fast nearest are the k nearest
        if tied.any():
            d = torch.cdist(x[rows[tied]], x, compute_mode=DIRECT)
            d[torch.arange(len(d)), rows[tied]] = torch.inf
            out[rows[tied]] = d.kthvalue(k, 1).values
    return out


def _inside(q, qc, r, rc, radius, tau, chunk, every):
    """Yields per block of rows of q whether each row is inside each ball of r (radii ``radius``):
    (rows, N) bool if ``every``, else inside any ball: (rows,) bool."""
    rad2 = radius.square()
    for s in range(0, len(q), chunk):
        gap = torch.cdist(qc[s:s + chunk], rc, compute_mode=FAST).square_().sub_(rad2)
        if every:
            inside, unsure = gap <= 0, (gap.abs_() <= tau).any(1)
        else:
            low = gap.amin(1)
            inside, unsure = low <= 0, low.abs() <= tau
        if unsure.any():
            near = torch.cdist(q[s:s + chunk][unsure], r, compute_mode=DIRECT) <= radius
            inside[unsure] = near if every else near.any(1)
        yield inside


def precision_recall(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 3,
                     chunk: int = CHUNK) -> tuple[float, float]:
    """Improved precision and recall, each in [0, 1], of fake: (M, F) against real: (N, F), N, M
    >= k + 1 (k = 3 as in the paper): precision, the fraction of fake points inside the real
    manifold (the balls of the real points' k-NN radii); recall, the fraction of real points inside
    the fake manifold. Time O((N + M)^2 F); memory O(chunk (N + M))."""
    r, f, rc, fc, tau = _prepare(real, fake, k, chunk, k + 1)
    in_real = torch.cat(list(_inside(f, fc, r, rc, _radii(r, rc, k, tau, chunk), tau, chunk, False)))
    in_fake = torch.cat(list(_inside(r, rc, f, fc, _radii(f, fc, k, tau, chunk), tau, chunk, False)))
    return in_real.double().mean().item(), in_fake.double().mean().item()


def density_coverage(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 5,
                     chunk: int = CHUNK) -> tuple[float, float]:
    """Density and coverage (Naeem et al., 2020) of fake: (M, F) against real: (N, F), N >= k + 1
    (k = 5 as in the paper): density, the number of pairs (fake point, real ball holding it) over
    k M (about 1 for equal distributions, unbounded above); coverage, the fraction of real balls
    holding a fake point."""
    r, f, rc, fc, tau = _prepare(real, fake, k, chunk, 1)
    pairs, hit = 0, torch.zeros(len(r), dtype=torch.bool)
    for inside in _inside(f, fc, r, rc, _radii(r, rc, k, tau, chunk), tau, chunk, True):
        pairs, hit = pairs + int(inside.sum()), hit | inside.any(0)
    return pairs / (k * len(f)), hit.double().mean().item()
