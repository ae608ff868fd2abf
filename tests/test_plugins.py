"""Extending klvae from outside the package: tests/plugins/klvae_laplace.py registers a Laplace
latent family (its KL through torch's register_kl), a learned Laplace prior and an encoder/decoder
pair, as a user's module would. Each is trained, evaluated, sampled, interpolated and reloaded
through klvae.fit and through the command line (--plugin, and the klvae.plugins entry point)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import klvae
from klvae import KlvaeError
from klvae.generation import interpolate, sample
from klvae.kl import kl
from klvae.run import read_metrics
from helpers import cli

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture(scope="module")
def plugin():
    sys.path.insert(0, str(PLUGINS))
    import klvae_laplace

    yield klvae_laplace


def test_the_plugin_kl_matches_monte_carlo_including_extreme_parameters(plugin):
    torch.manual_seed(0)
    for loc, scale in ((0.3, 0.5), (4.0, 0.05), (-2.0, 20.0)):
        q = plugin.LaplaceLatent(torch.full((3,), loc), torch.full((3,), scale))
        p = plugin.LaplaceLatent(torch.full((3,), 0.5), torch.full((3,), 1.5))
        z = q.sample((200_000,))
        mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
        se = (q.log_prob(z) - p.log_prob(z)).std(0) / math.sqrt(len(z))
        result = kl(torch.distributions.Independent(q, 1), torch.distributions.Independent(p, 1))
        assert result.method == "analytic"
        assert torch.allclose(result.per_dim[0] if result.per_dim is not None else result.value / 3, mc[0], atol=5 * se[0] + 1e-4)


def test_registered_components_are_choices_with_descriptions(plugin):
    out = cli("models").out
    assert "--latent laplace" in out and "--prior laplace-learned" in out and "--net tiny" in out
    assert "(a plugin)" in cli("train", "--help").out


def test_fit_with_the_plugin_latent_prior_and_own_networks_trains_evaluates_samples_and_reloads(plugin, tmp_path):
    config = {"data": "digits", "latent": "laplace", "prior": "laplace-learned", "latent_dim": 3, "hidden": [32],
              "epochs": 2, "progress": False, "out": str(tmp_path / "run")}
    encoder = plugin.TinyEncoder((1, 8, 8), [32], 6)
    decoder = plugin.TinyDecoder((1, 8, 8), [32], 3)
    run = klvae.fit(config, encoder=encoder, decoder=decoder)
    rows = read_metrics(run)
    assert len(rows) == 2 and all(math.isfinite(r["val_elbo"]) for r in rows)
    spec = json.loads((run / "model.json").read_text())
    assert (spec["latent"], spec["prior"], spec["net"]) == ("laplace", "laplace-learned", "custom")
    with pytest.raises(KlvaeError, match="pass encoder="):
        klvae.load(run)  # the run names no code to import: the networks come from the caller
    model = klvae.load(run, encoder=plugin.TinyEncoder((1, 8, 8), [32], 6),
                       decoder=plugin.TinyDecoder((1, 8, 8), [32], 3))
    assert isinstance(model.encoder, plugin.TinyEncoder)
    assert torch.equal(model.encoder.out.weight, encoder.out.weight.detach())  # the best epoch's weights
    result = klvae.evaluate(run, iwae_k=20, model=model)
    assert math.isfinite(result["nll_iwae"]) and -result["nll_iwae"] >= result["elbo"] - 0.5
    assert sample(model, 4).shape == (4, 1, 8, 8)
    x = torch.rand(2, 1, 8, 8)
    assert interpolate(model, x[0], x[1], 5).shape == (5, 1, 8, 8)


def test_the_cli_trains_and_uses_plugin_components_given_by_plugin(plugin, tmp_path, monkeypatch):
    run = tmp_path / "run"
    args = ("--plugin", "klvae_laplace")
    trained = cli("train", *args, "--data", "digits", "--latent", "laplace", "--prior", "laplace-learned", "--net",
                  "tiny", "--latent-dim", "3", "--hidden", "32", "--epochs", "2", "--no-progress", "--out", run)
    assert trained.rc == 0, trained.err
    evaluated = cli("evaluate", run, "--iwae-k", "10", "--json", *args)
    assert evaluated.rc == 0 and math.isfinite(json.loads(evaluated.out)["nll_iwae"])
    assert cli("sample", run, "-n", "4", "--out", tmp_path / "s.png", *args).rc == 0
    assert cli("interpolate", run, "--a", "0", "--b", "1", "--out", tmp_path / "i.png", *args).rc == 0
    assert (tmp_path / "s.png").is_file() and (tmp_path / "i.png").is_file()
    model = klvae.load(run)  # registered names need no parts: the plugin is imported
    assert type(model.family).__name__ == "LaplaceFamily"


def test_an_entry_point_plugin_reaches_a_fresh_klvae_process(plugin, tmp_path):
    """A package that declares klvae.plugins in its metadata is loaded by the klvae command with
    no --plugin: here a dist-info folder on PYTHONPATH, as pip would install it."""
    info = tmp_path / "site" / "klvae_laplace-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: klvae-laplace\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[klvae.plugins]\nlaplace = klvae_laplace\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(PLUGINS)])}
    out = subprocess.run([sys.executable, "-m", "klvae.cli", "models"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--latent laplace" in out.stdout


def test_a_run_of_a_plugin_latent_names_the_fix_when_the_plugin_is_missing(plugin, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "--plugin", "klvae_laplace", "--data", "digits", "--latent", "laplace", "--latent-dim", "2",
               "--hidden", "16", "--epochs", "1", "--no-progress", "--out", run).rc == 0
    spec = json.loads((run / "model.json").read_text())
    spec["latent"] = "laplace-missing"
    (run / "model.json").write_text(json.dumps(spec))
    with pytest.raises(KlvaeError, match="latent must be one of .*--plugin MODULE"):
        klvae.load(run)


def test_unknown_names_and_keys_suggest_the_closest(plugin):
    with pytest.raises(KlvaeError, match="did you mean 'laplace'"):
        klvae.TrainConfig(latent="laplce")
    with pytest.raises(KlvaeError, match="did you mean 'latent_dim'"):
        klvae.TrainConfig(latent_dm=3)


def test_a_plugin_model_with_its_own_option_and_a_plugin_sampler_work_from_the_cli(tmp_path):
    sys.path.insert(0, str(PLUGINS))
    run, args = tmp_path / "run", ("--plugin", "klvae_extra")
    assert "--input-dropout" in cli("train", "--help", *args).out
    trained = cli("train", *args, "--data", "digits", "--model", "vae-dropout", "--input-dropout", "0.3",
                  "--latent-dim", "2", "--hidden", "16", "--epochs", "1", "--no-progress", "--out", run)
    assert trained.rc == 0, trained.err
    assert json.loads((run / "model.json").read_text())["input_dropout"] == 0.3
    assert type(klvae.load(run)).__name__ == "DropoutVAE"
    assert cli("fit-sampler", run, "--sampler", "gaussian-fit", *args).rc == 0
    assert cli("sample", run, "--from", "gaussian-fit", "-n", "4", "--out", tmp_path / "s.png", *args).rc == 0
    wrong = cli("train", *args, "--data", "digits", "--input-dropout", "0.3", "--out", tmp_path / "r2")
    assert wrong.rc == 2 and "input_dropout is an option of --model vae-dropout" in wrong.err


def test_a_model_assembled_from_parts_in_python_trains_and_reloads_with_them(plugin, tmp_path):
    """Encoder, latent family (by its registered name), prior, decoder and likelihood, each given
    from Python: the run records them as custom and loading takes the same parts again."""
    from klvae.likelihoods import BernoulliLikelihood

    parts = lambda: {"encoder": plugin.TinyEncoder((1, 8, 8), [16], 4),  # noqa: E731
                     "decoder": plugin.TinyDecoder((1, 8, 8), [16], 2),
                     "prior": plugin.LearnedLaplacePrior(2), "likelihood": BernoulliLikelihood()}
    config = {"data": "digits", "latent": "laplace", "latent_dim": 2, "epochs": 1, "progress": False,
              "out": str(tmp_path / "run")}
    run = klvae.fit(config, **parts())
    spec = json.loads((run / "model.json").read_text())
    assert {spec[k] for k in ("net", "prior", "likelihood")} == {"custom"}
    model = klvae.load(run, **parts())
    assert isinstance(model.learned_prior, plugin.LearnedLaplacePrior)
    assert model.learned_prior.loc.abs().sum() > 0  # the prior's trained parameters came back
    assert math.isfinite(klvae.evaluate(run, iwae_k=5, model=model)["nll_iwae"])
    with pytest.raises(KlvaeError, match="prior was passed from Python"):
        klvae.load(run, encoder=parts()["encoder"], decoder=parts()["decoder"], likelihood=BernoulliLikelihood())


def test_an_encoder_without_its_decoder_is_a_one_line_error(plugin, tmp_path):
    with pytest.raises(KlvaeError, match="pass encoder= and decoder= together"):
        klvae.fit({"data": "digits", "epochs": 1, "progress": False, "out": str(tmp_path / "run")},
                  encoder=plugin.TinyEncoder((1, 8, 8), [16], 32))
    assert not (tmp_path / "run" / "config.yaml").exists()
