"""`klvae fit-sampler` and `klvae sample --from NAME` on a run: the files it keeps (safetensors +
JSON, read back without pickle), its report, the KL to the aggregated posterior against closed
forms, and the one-line errors of bad use."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.distributions import Independent, Normal

from helpers import QUICK, assert_user_error, cli
from klvae.run import RunDir, load
from klvae.samplers.codes import aggregate_kl, encode_codes


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sampler") / "run"
    result = cli("train", "--data", "digits", "--latent-dim", 4, "--hidden", 32, "--epochs", 3, *QUICK, "--out", out)
    assert result.rc == 0, result.err
    return out


@pytest.fixture(scope="module")
def report(run) -> dict:
    result = cli("fit-sampler", run, "--sampler", "gmm", "--components", 4, "--json")
    assert result.rc == 0, result.err
    return json.loads(result.out)


def test_the_sampler_is_kept_as_tensors_and_json_and_reloads_to_the_same_density(run, report):
    assert (run / "samplers" / "gmm.safetensors").is_file() and (run / "samplers" / "gmm.json").is_file()
    stored = json.loads((run / "samplers" / "gmm.json").read_text())
    assert stored["sampler"] == "gmm" and stored["config"]["components"] == 4 and stored["densities"] == ["all"]
    fitted = RunDir.open(run).sampler("gmm")
    codes = encode_codes(load(run), torch.rand(20, 1, 8, 8))
    assert fitted.density(None).log_prob(codes).shape == (20,)
    assert math.isclose(-fitted.density(None).log_prob(encode_codes(load(run), _test_x(run))).mean().item(),
                        report["nll_test"], rel_tol=1e-5)


def _test_x(run):
    from klvae.evaluation.likelihood import split_with_labels
    from klvae.run import load_config

    return split_with_labels(load_config(run), "test")[0]


def test_the_report_gives_costs_held_out_nll_and_the_kl_beside_the_priors(report):
    assert report["n_train"] == 1350 and report["n_test"] == 297 and report["codes"] == "mean" and report["exact"]
    assert report["fit_seconds"] > 0 and report["sample_seconds_10k"] > 0
    assert all(math.isfinite(report[k]) for k in ("nll_train", "nll_test", "prior_nll_test", "prior_kl_aggregate"))
    assert "kl_aggregate" not in report  # a density of the posterior means is not one of q(z)
    assert report["nll_train"] < report["nll_test"] + 1.0  # fitted to train: no worse there
    assert report["prior_kl_aggregate"] > -0.05


def test_sample_from_the_fitted_sampler_and_under_another_name(run, report, tmp_path):
    assert cli("sample", run, "--from", "gmm", "-n", 8, "--out", tmp_path / "a.png").rc == 0
    again = cli("fit-sampler", run, "--sampler", "gmm", "--components", 2, "--codes", "sample", "--name", "gmm-2",
                "--json")
    assert again.rc == 0, again.err
    fitted = json.loads(again.out)
    assert fitted["codes"] == "sample" and math.isfinite(fitted["kl_aggregate"])
    assert cli("sample", run, "--from", "gmm-2", "-n", 8, "--out", tmp_path / "b.png").rc == 0


def test_aggregate_kl_is_zero_when_every_posterior_is_the_prior_and_half_the_squared_shift_otherwise():
    """q(z|x) = N(m, I) for every x: the aggregated posterior is N(m, I) and KL(q(z) || N(0, I)) =
    |m|^2 / 2 (Monte Carlo over 2,000 draws: standard error ~ |m| / sqrt(2000))."""
    class Stub(torch.nn.Module):
        def __init__(self, shift):
            super().__init__()
            self.shift, self.w = shift, torch.nn.Parameter(torch.zeros(1))
            self.family = type("F", (), {"geometry": "euclidean"})()

        def encode(self, x):
            return Independent(Normal(self.shift.expand(len(x), -1), torch.ones(len(x), len(self.shift))), 1)

    prior = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    assert abs(aggregate_kl(Stub(torch.zeros(3)), torch.zeros(2000, 1), prior.log_prob)) < 1e-5
    shift = torch.tensor([1.0, -2.0, 0.5])
    kl = aggregate_kl(Stub(shift), torch.zeros(2000, 1), prior.log_prob)
    assert abs(kl - shift.square().sum().item() / 2) < 4 * shift.norm().item() / math.sqrt(2000)


@pytest.mark.parametrize("argv, words", [
    (("fit-sampler", "{run}", "--sampler", "prior"), ("nothing to fit",)),
    (("fit-sampler", "{run}", "--sampler", "gmx"), ("gmm", "did you mean")),
    (("fit-sampler", "{run}", "--sampler", "gmm", "--name", "../x"), ("name",)),
    (("fit-sampler", "{run}", "--sampler", "gmm", "--components", "zero"), ("--components", "int")),
    (("fit-sampler", "/no/such/run"), ("does not exist",)),
    (("sample", "{run}", "--from", "gmm", "--sampling-steps", 5, "-n", 4, "--out", "{tmp}/x.png"), ("steps",)),
    (("sample", "{run}", "--from", "never-fitted", "-n", 4, "--out", "{tmp}/x.png"), ("prior", "fit-sampler")),
], ids=lambda a: " ".join(map(str, a)) if isinstance(a, tuple) and a and a[0] in ("fit-sampler", "sample") else "")
def test_bad_use_is_a_one_line_error(run, report, tmp_path, argv, words):
    argv = [str(a).format(run=run, tmp=tmp_path) for a in argv]
    assert_user_error(cli(*argv), *words)


def test_a_sampler_that_was_never_fitted_says_how_to_fit_it(tmp_path, run):
    fresh = tmp_path / "fresh"
    assert cli("train", "--data", "digits", "--latent-dim", 2, "--hidden", 8, "--epochs", 1, *QUICK, "--out",
               fresh).rc == 0
    assert_user_error(cli("sample", fresh, "--from", "gmm", "-n", 4, "--out", tmp_path / "x.png"),
                      "klvae fit-sampler", "--sampler gmm")


def test_a_damaged_sampler_file_is_a_one_line_error_and_retraining_removes_samplers(run, report, tmp_path):
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(run, copy)
    (copy / "samplers" / "gmm.json").write_text("{not json")
    assert_user_error(cli("sample", copy, "--from", "gmm", "-n", 4, "--out", tmp_path / "x.png"), "damaged",
                      "fit-sampler")
    assert cli("train", "--data", "digits", "--latent-dim", 2, "--hidden", 8, "--epochs", 1, *QUICK, "--out", copy,
               "--overwrite").rc == 0
    assert not (copy / "samplers").exists()


@pytest.mark.parametrize("sampler, options", [
    ("two-stage", ("--hidden", 16, "--epochs", 2, "--iwae-k", 5, "--codes", "sample")),
    ("flow", ("--hidden", 16, "--epochs", 2, "--transforms", 2, "--codes", "sample")),
    ("flow", ("--kind", "nsf", "--hidden", 8, "--epochs", 1, "--transforms", 1)),
    ("diffusion", ("--timesteps", 20, "--width", 16, "--layers", 1, "--epochs", 2)),
], ids=lambda a: a if isinstance(a, str) else " ".join(map(str, a)))
def test_every_sampler_fits_from_the_command_line_reloads_and_samples(run, tmp_path, sampler, options):
    name = f"{sampler}-{len(options)}"
    result = cli("fit-sampler", run, "--sampler", sampler, "--name", name, *options, "--json")
    assert result.rc == 0, result.err
    report = json.loads(result.out)
    assert report["exact"] == (sampler == "flow") and math.isfinite(report["nll_test"])
    assert math.isfinite(report["kl_aggregate"]) if "sample" in options else "kl_aggregate" not in report
    assert cli("sample", run, "--from", name, "-n", 6, "--out", tmp_path / "s.png").rc == 0
    density = RunDir.open(run).sampler(name).density(None)
    torch.manual_seed(0)
    assert density.sample(50).shape == (50, 4) and torch.isfinite(density.sample(50)).all()


def test_diffusion_samples_by_ddim_with_fewer_steps_from_the_command_line(run, tmp_path):
    assert cli("fit-sampler", run, "--sampler", "diffusion", "--timesteps", 30, "--width", 16, "--layers", 1,
               "--epochs", 1).rc == 0
    ddim = cli("sample", run, "--from", "diffusion", "--sampling", "ddim", "--sampling-steps", 5, "-n", 6, "--out",
               tmp_path / "d.png")
    assert ddim.rc == 0, ddim.err
    assert_user_error(cli("sample", run, "--from", "diffusion", "--sampling-steps", 31, "-n", 6, "--out",
                          tmp_path / "d.png"), "sampling_steps", "30")


def test_a_sampler_of_a_run_on_the_sphere_is_refused_in_one_line(tmp_path):
    out = tmp_path / "vmf"
    assert cli("train", "--data", "digits", "--latent", "vmf", "--latent-dim", 3, "--epochs", 1, *QUICK, "--out",
               out).rc == 0
    assert_user_error(cli("fit-sampler", out, "--sampler", "flow"), "sphere", "--from prior")
    assert not (out / "samplers").exists()


def test_fit_sampler_from_python_takes_options_as_values(run):
    from klvae.api import fit_sampler

    report = fit_sampler(run, "gmm", name="py", components=2, covariance="diag")
    assert report["name"] == "py" and json.loads((run / "samplers" / "py.json").read_text())["config"]["covariance"] == "diag"
    with pytest.raises(Exception, match="takes no --epochs"):
        fit_sampler(run, "gmm", epochs=3)


def test_the_report_shows_each_fitted_sampler(run, report):
    assert cli("report", run).rc == 0
    page = (run / "report.html").read_text()
    assert "Fitted sampler gmm" in page and "nll_test" in page and "sample_seconds_10k" in page
