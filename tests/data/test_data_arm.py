"""The generated pendulum / arm images: angles kept as ground truth, the drawing follows them."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from klvae.data import load_dataset
from klvae.data.arm import SIZE, render
from klvae.evaluation.directional import circular_correlation


def ink_centroid(image: np.ndarray) -> tuple[float, float]:
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    w = image[0] / image[0].sum()
    return float((xs * w).sum()), float((ys * w).sum())


@pytest.mark.parametrize(("angle", "dx", "dy"), [(0.0, 0, 1), (math.pi / 2, 1, 0), (math.pi, 0, -1), (-math.pi / 2, -1, 0)])
def test_a_pendulum_points_where_its_angle_says(angle, dx, dy):
    x, y = ink_centroid(render(np.array([[angle]], dtype=np.float32))[0])
    centre = (SIZE - 1) / 2
    assert np.sign(round(x - centre, 1)) == dx and np.sign(round(y - centre, 1)) == dy


def test_pendulum_and_arm_keep_their_angles_as_float_labels_and_are_reproducible():
    for name, links in (("pendulum", 1), ("arm", 2)):
        a, b = load_dataset(name, seed=0), load_dataset(name, seed=1)
        assert a.train_labels.dtype == torch.float32 and a.test_labels.shape == (2000, links)
        assert float(a.test_labels.abs().max()) <= math.pi
        assert torch.equal(a.test, b.test) and torch.equal(a.test_labels, b.test_labels)
        assert a.event_shape == (1, 28, 28) and a.binary


def test_circular_correlation_is_one_for_rotations_minus_one_for_reflections_and_near_zero_otherwise():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(5000, generator=g) * 2 - 1) * math.pi
    other = (torch.rand(5000, generator=g) * 2 - 1) * math.pi
    assert circular_correlation(a, torch.remainder(a + 1.0, 2 * math.pi)) == pytest.approx(1.0, abs=1e-9)
    assert circular_correlation(a, -a) == pytest.approx(-1.0, abs=1e-9)
    assert abs(circular_correlation(a, other)) < 0.05


def test_the_pendulum_images_carry_the_circle_they_come_from():
    """Through the camera blur, the angle of the images' first two principal components is the
    pendulum's angle (up to rotation and reflection): the circle is in the data to be found."""
    angles = np.random.default_rng(0).uniform(-math.pi, math.pi, (2000, 1)).astype(np.float32)
    x = render(angles).reshape(2000, -1)
    u, s, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
    pc_angle = np.arctan2(u[:, 1] * s[1], u[:, 0] * s[0])
    assert abs(circular_correlation(torch.from_numpy(angles[:, 0]), torch.from_numpy(pc_angle))) > 0.99
    assert render(angles[:10]).max(axis=(1, 2, 3)) == pytest.approx(np.ones(10))
