"""Improved precision and recall, density and coverage (klvae.evaluation.precision_recall): against
a brute-force double loop, on sets of known overlap, on hand-worked examples on a line, for the
order of the points and the chunk size, and for bad input. Statistical checks seed their
generators; their tolerances are justified where they are set."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from klvae import KlvaeError
from klvae.evaluation.precision_recall import density_coverage, precision_recall


def brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """(precision, recall, density, coverage) by plain Python loops over squared distances; for
    integer data every distance is exact, so ties and duplicates are decided exactly."""
    real, fake = real.tolist(), fake.tolist()

    def sq(a, b):
        return sum((x - y) ** 2 for x, y in zip(a, b))

    def radii(x):  # squared k-th nearest neighbour distance among the OTHER points (index i left out)
        return [sorted(sq(p, q) for j, q in enumerate(x) if j != i)[k - 1] for i, p in enumerate(x)]

    def counts(q, x, rad):  # for each point of q, how many balls (x, rad) hold it
        return [sum(sq(p, c) <= r for c, r in zip(x, rad)) for p in q]

    real_rad, fake_rad = radii(real), radii(fake)
    in_real = counts(fake, real, real_rad)
    precision = sum(c > 0 for c in in_real) / len(fake)
    recall = sum(c > 0 for c in counts(real, fake, fake_rad)) / len(real)
    coverage = sum(any(sq(p, c) <= r for p in fake) for c, r in zip(real, real_rad)) / len(real)
    return precision, recall, sum(in_real) / (k * len(fake)), coverage


def lattice(seed: int, n: int, offset: float = 0.0) -> np.ndarray:
    """n points on the integer grid {0..3}^2 (+ offset): many exact duplicates and exact ties."""
    return np.random.default_rng(seed).integers(0, 4, size=(n, 2)).astype(np.float64) + offset


def two_grids(seed: int, n: int) -> np.ndarray:
    """n points on two such grids at x = -1e9 and x = +1e9: the mean is near 0, so centring does
    not help, and the fast distances (round-off ~1e-16 * 1e18) cannot even order the neighbours."""
    x = lattice(seed, n)
    x[: n // 2, 0] -= 1e9
    x[n // 2:, 0] += 1e9
    return x


# --- against brute force -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_brute_force_random(seed, k):
    rng = np.random.default_rng(seed)
    real, fake = rng.normal(size=(40, 3)), rng.normal(0.8, 0.7, size=(35, 3))  # overlapping, not equal
    p, r, d, c = brute_force(real, fake, k)
    assert 0 < p < 1 and 0 < r < 1  # neither trivially 0 nor 1
    assert precision_recall(real, fake, k=k) == pytest.approx((p, r), abs=1e-12)
    assert density_coverage(real, fake, k=k) == pytest.approx((d, c), abs=1e-12)


@pytest.mark.parametrize("layout", ["grid", "grid + 1e9", "two grids"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_brute_force_ties_and_duplicates(k, layout):
    """Grids of integers hold many duplicates (k-NN radius 0) and points exactly on a ball's
    boundary; their direct distances are exact. The fast matrix-product distances round off (of
    centred copies: not integers; with offset 1e9, squares past 2^53; on two grids, by far more
    than the gaps between distances): only the direct recomputation decides all these right."""
    for seed in range(3):
        if layout == "two grids":
            real, fake = two_grids(seed, 30), two_grids(seed + 10, 26)
        else:
            offset = 1e9 if layout == "grid + 1e9" else 0.0
            real, fake = lattice(seed, 30, offset), lattice(seed + 10, 25, offset)
        p, r, d, c = brute_force(real, fake, k)
        assert precision_recall(real, fake, k=k) == (p, r)
        assert density_coverage(real, fake, k=k) == (d, c)


# --- sets of known overlap -------------------------------------------------------------------------


def test_identical_and_far_apart():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(500, 8, generator=g)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)  # every point is its own twin's ball centre
    assert density_coverage(real, real.clone())[1] == 1.0
    far = torch.randn(400, 8, generator=g) + 100  # ~100 * sqrt(8) apart; k-NN radii are ~1
    assert precision_recall(real, far) == (0.0, 0.0)
    assert density_coverage(real, far) == (0.0, 0.0)


def test_half_of_the_fakes_far_away():
    """real = 2,000 draws of N(0, I) in 2-D; fake = 1,000 fresh draws of N(0, I) and 1,000 of
    N(20, I). No real ball reaches the far half, so precision <= 0.5 exactly; the k = 3 manifold of
    2,000 points misses ~2% of fresh draws of its own law (1.0-2.4% over 20 seeds), so precision
    ~ 0.49, and >= 0.47 is 3 binomial standard errors of a fraction of 2,000 (0.011) below 0.5.
    Recall: the near half's manifold holds 96-99% of the real points (20 seeds)."""
    g = torch.Generator().manual_seed(1)
    real = torch.randn(2000, 2, generator=g)
    fake = torch.cat([torch.randn(1000, 2, generator=g), torch.randn(1000, 2, generator=g) + 20])
    precision, recall = precision_recall(real, fake)
    assert 0.47 <= precision <= 0.5
    assert recall >= 0.93
    # density: the far half adds nothing, the near half ~1 each (0.49-0.51 over 20 seeds). coverage:
    # a k = 5 ball holds mass ~ Gamma(k, 1/N), so it misses all M' = 1,000 near fakes with
    # probability E exp(-M' m) = (1 + M'/N)^-k: coverage ~ 1 - 1.5^-5 = 0.868 (sd 0.013 over 20 seeds)
    density, coverage = density_coverage(real, fake)
    assert density == pytest.approx(0.5, abs=0.04)
    assert coverage == pytest.approx(1 - 1.5 ** -5, abs=0.04)


def test_half_plane_of_the_real_points():
    """fake = the real points with x0 > 0. Each is a real point (distance 0): precision is exactly
    1. Recall: the real points with x0 > 0 (a Binomial(2000, 1/2) fraction, sd 0.011) plus those
    with x0 < 0 within a fake k-NN radius of the line, measured 1.8-3.7% over 20 seeds."""
    g = torch.Generator().manual_seed(2)
    real = torch.randn(2000, 2, generator=g)
    right = real[:, 0] > 0
    precision, recall = precision_recall(real, real[right])
    assert precision == 1.0
    assert 0 < recall - right.double().mean().item() < 0.06
    assert recall == pytest.approx(0.5, abs=0.034 + 0.04)


def test_equal_laws_density_and_coverage():
    """Two independent 2,000-point samples of N(0, I): density ~ 1 (sd 0.008 over 20 seeds),
    coverage ~ 1 - (1 + 1)^-5 = 0.969 (see above; sd 0.008)."""
    g = torch.Generator().manual_seed(3)
    density, coverage = density_coverage(torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g))
    assert density == pytest.approx(1.0, abs=0.04)
    assert coverage == pytest.approx(1 - 2.0 ** -5, abs=0.03)


# --- worked by hand ----------------------------------------------------------------------------------


def test_on_a_line_by_hand():
    """k = 1. real 0, 1, 2, 10, 12: nearest-neighbour radii 1, 1, 1, 2, 2; balls [-1, 1], [0, 2],
    [1, 3], [8, 12], [10, 14]; manifold [-1, 3] u [8, 14].
    fake -1, 3.5, 5, 8, 14, 14.5: inside: -1 and 8 and 14 (all three ON a boundary), not 3.5, 5,
    14.5 -> precision 3/6. Fake radii: 4.5, 1.5, 1.5, 3, 0.5, 0.5; balls [-5.5, 3.5], [2, 5],
    [3.5, 6.5], [5, 11], [13.5, 14.5], [14, 15]; manifold [-5.5, 11] u [13.5, 15]: holds real 0,
    1, 2, 10, not 12 -> recall 4/5.
    Density: -1 is in 1 real ball (of 0), 8 in 1 (of 10), 14 in 1 (of 12): 3 / (1 * 6) = 0.5.
    Coverage: the balls of 0, 10, 12 hold a fake; those of 1, 2 do not: 3/5."""
    real = np.array([[0.0], [1.0], [2.0], [10.0], [12.0]])
    fake = np.array([[-1.0], [3.5], [5.0], [8.0], [14.0], [14.5]])
    for shift in (0.0, 1e9):  # the same answer far from the origin, where the fast distances round off
        assert precision_recall(real + shift, fake + shift, k=1) == (0.5, 0.8)
        assert density_coverage(real + shift, fake + shift, k=1) == (0.5, 0.6)


def test_duplicates_by_hand():
    """real 0, 0, 5. k = 1: the two 0s are each other's nearest neighbour at distance 0 (a
    duplicate counts; only the point itself is left out), so their balls are {0}; 5's is [0, 10].
    fake 0, 10, 10.5, -0.5: 0 and 10 (on the boundary) inside, 10.5 and -0.5 not -> precision 1/2
    (3/4 if duplicates were skipped: radius 5 for the 0s). Fake radii all 0.5: the 0s are inside,
    5 is not -> recall 2/3.
    k = 2: radii 5, 5, 5, manifold [-5, 10]: precision 3/4; fake radii 1, 10.5, 10.5, 1 (-0.5 to
    10): 5 is inside the ball of 10 -> recall 1."""
    real, fake = np.array([[0.0], [0.0], [5.0]]), np.array([[0.0], [10.0], [10.5], [-0.5]])
    assert precision_recall(real, fake, k=1) == (0.5, 2 / 3)
    assert precision_recall(real, fake, k=2) == (0.75, 1.0)


# --- invariances and input types -----------------------------------------------------------------


@pytest.mark.parametrize("data", ["normal", "lattice"])
def test_order_and_chunk_do_not_matter(data):
    rng = np.random.default_rng(4)
    if data == "normal":
        real, fake = rng.normal(size=(300, 5)), rng.normal(0.3, 1.0, size=(250, 5))
    else:
        real, fake = lattice(4, 300, 1e9), lattice(5, 250, 1e9)
    want = precision_recall(real, fake), density_coverage(real, fake)
    assert 0 < want[0][0] < 1 or data == "lattice"
    for chunk in (1, 7, 64, 10_000):
        pr, pf = rng.permutation(len(real)), rng.permutation(len(fake))
        assert (precision_recall(real[pr], fake[pf], chunk=chunk),
                density_coverage(real[pr], fake[pf], chunk=chunk)) == want


def test_numpy_and_tensors_agree():
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(60, 4)).astype(np.float32), rng.normal(size=(50, 4)).astype(np.float32)
    want = precision_recall(real, fake)
    assert precision_recall(torch.from_numpy(real), torch.from_numpy(fake).requires_grad_()) == want
    assert precision_recall(real.tolist(), torch.from_numpy(fake).double()) == want


def test_density_coverage_needs_one_fake():
    # real 0, 1, 3, k = 2: radii 3, 2, 3; all three balls hold 0.5: density 3 / (2 * 1), coverage 1
    assert density_coverage(np.array([[0.0], [1.0], [3.0]]), np.array([[0.5]]), k=2) == (1.5, 1.0)


# --- bad input -----------------------------------------------------------------------------------------


GOOD = np.zeros((10, 3))


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k must be an integer >= 1"),
    ({"k": 2.5}, "k must be an integer >= 1"),
    ({"k": True}, "k must be an integer >= 1"),
    ({"chunk": 0}, "chunk must be an integer >= 1"),
    ({"real": np.zeros(10)}, r"feature sets must be \(N, F\) and \(M, F\).*\(10,\) and \(10, 3\)"),
    ({"fake": np.zeros((10, 4))}, r"\(10, 3\) and \(10, 4\)"),
    ({"real": np.zeros((10, 0)), "fake": np.zeros((10, 0))}, "F >= 1"),
    ({"real": np.zeros((3, 3))}, "k = 3 needs at least 4 real and 4 generated points; got 3 and 10"),
    ({"fake": np.zeros((3, 3))}, "got 10 and 3"),
    ({"real": np.full((10, 3), np.nan)}, "NaN or Inf"),
    ({"fake": np.concatenate([GOOD[:9], [[0.0, np.inf, 0.0]]])}, "NaN or Inf"),
])
def test_bad_input(kwargs, match):
    args = {"real": GOOD, "fake": GOOD, **kwargs}
    with pytest.raises(KlvaeError, match=match) as info:
        precision_recall(**args)
    assert "\n" not in str(info.value)


def test_bad_input_density_coverage():
    with pytest.raises(KlvaeError, match="k = 5 needs at least 6 real and 1 generated points; got 5 and 0"):
        density_coverage(np.zeros((5, 2)), np.zeros((0, 2)))
    with pytest.raises(KlvaeError, match="NaN or Inf"):
        density_coverage(GOOD, np.full((2, 3), -np.inf))
