"""A run directory written by klvae 0.1 (flat config.yaml, model.json holding every model's
fields under "model") still loads, evaluates, samples, reports and resumes its config."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

import klvae
from klvae.run import RunDir

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(params=["vae", "hvae"])
def old_run(request, tmp_path):
    run = tmp_path / request.param
    shutil.copytree(FIXTURES / f"run-0.1-{request.param}", run)
    return run, request.param


def test_an_old_run_loads_with_its_model_and_config(old_run):
    run, name = old_run
    model = klvae.load(run)
    config = RunDir(run).config()
    assert model.spec.name == name == config.model.name
    assert config.data.name == "digits" and config.hidden == [16]
    assert model.latent_dim == (5 if name == "hvae" else 2)


def test_an_old_run_evaluates_samples_and_reports(old_run):
    run, _ = old_run
    result = klvae.evaluate(run, iwae_k=10)
    assert math.isfinite(result["nll_iwae"]) and result["n"] == 297
    assert klvae.api.sample(run, 4).shape == (4, 1, 8, 8)
    assert torch.isfinite(klvae.api.interpolate(run, 0, 1, 3)).all()
    assert klvae.api.report(run).is_file()


def test_an_old_config_reads_back_the_same_after_a_new_save(old_run, tmp_path):
    run, _ = old_run
    config = RunDir(run).config()
    RunDir(tmp_path / "copy").save_config(config)
    assert RunDir(tmp_path / "copy").config() == config
