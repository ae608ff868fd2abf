"""Angle recovery reads every angle a latent space offers, including those of another torus chart."""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from klvae.evaluation.directional import angle_recovery, candidate_angles
from klvae.latents import latent_family


def latent_model(latent: str) -> SimpleNamespace:
    """A stand-in whose posterior point is the input itself: x are the latent points, read as the
    registered family ``latent`` reads them."""
    family = latent_family(latent)(3)
    return SimpleNamespace(family=SimpleNamespace(point=lambda q: q, angles=family.angles), encode=lambda x: x)


def test_a_latent_holding_absolute_headings_recovers_the_relative_joint_angle():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(3000, 2, generator=g) * 2 - 1) * math.pi
    headings = torch.stack([a[:, 0], a[:, 0] + a[:, 1]], dim=-1)  # the arm's two links, absolute
    recovered = angle_recovery(latent_model("von-mises"), headings, a)
    assert min(recovered) > 0.999
    assert candidate_angles(latent_model("von-mises"), headings).shape == (3000, 2 + 2)


def test_a_gaussian_ring_recovers_its_angle_and_noise_recovers_nothing():
    g = torch.Generator().manual_seed(0)
    a = (torch.rand(3000, 1, generator=g) * 2 - 1) * math.pi
    ring = torch.cat([torch.randn(3000, 1, generator=g), 2 * torch.sin(a), 2 * torch.cos(a)], dim=-1)
    assert angle_recovery(latent_model("gaussian"), ring, a)[0] > 0.99
    noise = torch.randn(3000, 3, generator=g)
    assert angle_recovery(latent_model("gaussian"), noise, a)[0] < 0.1
