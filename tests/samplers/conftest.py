"""The samplers' toy with a known density (see sampler_toys.py), drawn once per session."""
from __future__ import annotations

import pytest
import torch

from sampler_toys import Toy, mixture


@pytest.fixture(scope="session")
def toy() -> Toy:
    density = mixture()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        data = density.sample((6000,))
    return Toy(data[:4000], data[4000:], density)
