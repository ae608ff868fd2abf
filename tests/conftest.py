"""Suite-wide fixtures. Statistical tests seed torch themselves (``torch.manual_seed`` at their
top) and use tolerances of several standard errors, so they neither flake nor pass by luck."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the repository


def _roots() -> list[Path]:
    env = os.environ.get("KLVAE_DATA")
    return ([Path(env)] if env else []) + [SHARED_DATA]


@pytest.fixture(scope="session")
def shared_data() -> Callable[..., Path]:
    """need(subdir, *files) -> the data root holding subdir/files, or skip the test."""

    def need(subdir: str, *files: str) -> Path:
        for root in _roots():
            if all((root / subdir / f).is_file() for f in files):
                return root
        where = " or ".join(str(r / subdir) for r in _roots())
        pytest.skip(f"{subdir} files not found in {where}; set KLVAE_DATA")

    return need


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Run the suite's networks on one intra-op thread, restored afterwards: they are tiny, and on
    a busy machine with few cores a second thread makes them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
