"""The `klvae` command and the Python API end to end on the embedded 8x8 digits: one small run is
trained per module and every command reads it."""
from __future__ import annotations

import base64
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from torch.distributions import Distribution, kl_divergence

import klvae
from helpers import QUICK, assert_user_error, cli, metrics_table, read_png
from klvae.data import list_datasets
from klvae.evaluation.likelihood import split_data
from klvae.report.html import FIGURES, PICTURES
from klvae.run import load_config

LATENT = 4
EPOCHS = 6
EVENT = (1, 8, 8)
N_TEST, N_VAL = 297, 150  # digits: a fixed test split of 297; 10% of the other 1,500 for val
IWAE_K = 200
RUN_FILES = ("config.yaml", "model.safetensors", "model.json", "metrics.csv", "checkpoints/last.ckpt",
             "samples.png", "reconstructions.png", "interpolation.png", "curves.png")
EVAL_KEYS = {"elbo", "recon", "kl", "nll_iwae", "iwae_k", "active_units", "n", "elbo_se", "nll_iwae_se"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    result = cli("train", "--data", "digits", "--latent-dim", LATENT, "--beta", "1.0", "--epochs", EPOCHS,
                 "--out", run, *QUICK)
    assert result.rc == 0, result.err
    return run, result


@pytest.fixture(scope="module")
def run(trained) -> Path:
    return trained[0]


@pytest.fixture(scope="module")
def evaluated(run):
    """`klvae evaluate RUN --json` on the test split: (stdout, parsed result)."""
    result = cli("evaluate", run, "--split", "test", "--iwae-k", IWAE_K, "--json")
    assert result.rc == 0, result.err
    return result.out, json.loads(result.out)


# --- train ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RUN_FILES)
def test_train_writes_each_file_of_the_run_directory(run, name):
    assert (run / name).is_file()
    assert (run / name).stat().st_size > 0


def test_train_prints_a_one_line_summary_in_nats(trained):
    run, result = trained
    lines = result.out.strip().splitlines()
    assert len(lines) == 1, result.out
    assert str(run) in lines[0] and f"{EPOCHS} epochs" in lines[0] and "nats" in lines[0]
    assert f"/{LATENT}" in lines[0]  # active units out of the latent dimensions


def test_train_leaves_no_temporary_files_in_the_run_directory(run):
    assert not [p.name for p in run.rglob("*.tmp")]


def test_config_yaml_records_the_flags_given(run):
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["data"] == "digits"
    assert stored["latent_dim"] == LATENT and stored["epochs"] == EPOCHS and stored["beta"] == 1.0
    assert stored["hidden"] == [64] and stored["progress"] is False
    assert load_config(run).latent_dim == LATENT  # and it reads back as a valid TrainConfig


def test_metrics_csv_has_one_row_per_epoch_with_the_kl_breakdown(run):
    header, rows = metrics_table(run)
    for column in ("train_elbo", "val_elbo", "val_kl", "active_units", "beta",
                   *(f"kl_dim_{i}" for i in range(LATENT))):
        assert column in header
    assert f"kl_dim_{LATENT}" not in header
    assert [int(float(r["epoch"])) for r in rows] == list(range(1, EPOCHS + 1))
    for row in rows:
        values = {k: float(v) for k, v in row.items()}
        assert all(math.isfinite(v) for v in values.values()), row
        assert values["beta"] == 1.0
        assert 0 <= values["active_units"] <= LATENT
        per_dim = [values[f"kl_dim_{i}"] for i in range(LATENT)]
        assert min(per_dim) >= 0
        assert sum(per_dim) == pytest.approx(values["val_kl"], rel=1e-4, abs=1e-5)  # KL splits over dims
        assert values["val_elbo"] == pytest.approx(values["val_recon"] - values["val_kl"], rel=1e-4, abs=1e-4)
        assert values["val_elbo"] <= 0  # Bernoulli likelihood of binarised digits: log p(x|z) <= 0


def test_training_improves_the_validation_elbo(run):
    _, rows = metrics_table(run)
    assert float(rows[-1]["val_elbo"]) > float(rows[0]["val_elbo"])


def test_training_pictures_are_png_images_of_the_expected_layout(run):
    for name in ("samples.png", "reconstructions.png", "interpolation.png", "curves.png"):
        read_png(run / name)
    height, width = read_png(run / "interpolation.png").shape[:2]
    assert width > height  # one row of frames
    height, width = read_png(run / "reconstructions.png").shape[:2]
    assert width > height  # inputs above, reconstructions below: two long rows


# --- evaluate ------------------------------------------------------------------------------


def test_evaluate_json_prints_one_object_with_the_documented_keys(evaluated):
    out, result = evaluated
    assert len(out.strip().splitlines()) == 1
    assert EVAL_KEYS <= set(result)
    assert result["n"] == N_TEST and result["iwae_k"] == IWAE_K
    assert all(math.isfinite(result[k]) for k in ("elbo", "recon", "kl", "nll_iwae"))


def test_evaluate_figures_are_consistent_nats_per_data_point(evaluated):
    _, r = evaluated
    assert r["nll_iwae"] > 0  # a positive NLL
    assert r["kl"] >= 0 and r["elbo"] <= 0
    assert r["elbo"] == pytest.approx(r["recon"] - r["kl"], rel=1e-6, abs=1e-6)
    assert r["nll_iwae"] <= -r["elbo"] + 0.25  # IWAE with K=200 is a tighter bound than the ELBO
    assert 0 <= r["active_units"] <= LATENT


def test_evaluate_writes_the_printed_result_to_eval_test_json(run, evaluated):
    _, printed = evaluated
    assert json.loads((run / "eval_test.json").read_text()) == printed
    assert not list(run.glob(".eval_test.json*"))  # written through a temporary file, renamed


def test_evaluate_kl_matches_the_closed_form_kl_of_the_loaded_model(run, evaluated):
    _, r = evaluated
    model = klvae.load(run)
    x = split_data(load_config(run), "test")
    with torch.no_grad():
        kl = kl_divergence(model.encode(x), model.prior())
    assert kl.shape == (N_TEST,)
    assert kl.mean().item() == pytest.approx(r["kl"], rel=1e-4, abs=1e-5)


def test_python_evaluate_returns_what_the_command_prints(run, evaluated):
    _, printed = evaluated
    result = klvae.evaluate(run, iwae_k=IWAE_K)
    assert EVAL_KEYS <= set(result)
    for key in EVAL_KEYS:
        assert result[key] == pytest.approx(printed[key], rel=1e-6), key


def test_evaluate_on_the_validation_split_uses_the_validation_points(run):
    result = cli("evaluate", run, "--split", "val", "--iwae-k", "2", "--json")
    assert result.rc == 0, result.err
    assert json.loads(result.out)["n"] == N_VAL
    assert json.loads((run / "eval_val.json").read_text())["n"] == N_VAL


def test_evaluate_prints_a_table_in_nats_without_json(run):
    result = cli("evaluate", run, "--iwae-k", "2")
    assert result.rc == 0, result.err
    assert "nats" in result.out
    for label in ("ELBO", "KL", "NLL (IWAE, K=2)", "active units", f"n={N_TEST}"):
        assert label in result.out


# --- pictures and the report ---------------------------------------------------------------


def test_sample_writes_a_square_grid_of_n_images(run, tmp_path):
    result = cli("sample", run, "-n", "16", "--out", tmp_path / "s.png")
    assert result.rc == 0, result.err
    assert str(tmp_path / "s.png") in result.out
    height, width = read_png(tmp_path / "s.png").shape[:2]
    assert height == width  # 16 images: 4 x 4


def test_sample_with_the_same_seed_is_reproducible(run, tmp_path):
    for name in ("a.png", "b.png"):
        assert cli("sample", run, "-n", "9", "--seed", "3", "--out", tmp_path / name).rc == 0
    assert (read_png(tmp_path / "a.png") == read_png(tmp_path / "b.png")).all()


@pytest.mark.parametrize("path_kind", [[], ["--slerp"]], ids=["linear", "spherical"])
def test_interpolate_writes_one_row_of_frames(run, tmp_path, path_kind):
    out = tmp_path / "i.png"
    result = cli("interpolate", run, "--a", "0", "--b", "5", "--steps", "7", *path_kind, "--out", out)
    assert result.rc == 0, result.err
    height, width = read_png(out).shape[:2]
    assert width > 3 * height  # 7 frames side by side


def test_reconstruct_writes_inputs_above_their_reconstructions(run, tmp_path):
    out = tmp_path / "r.png"
    result = cli("reconstruct", run, "-n", "8", "--out", out)
    assert result.rc == 0, result.err
    height, width = read_png(out).shape[:2]
    assert width > height  # 2 rows of 8


def test_report_embeds_every_picture_and_the_evaluation(run, evaluated):
    result = cli("report", run)
    assert result.rc == 0, result.err
    page = (run / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == len(FIGURES) - 1 + len(PICTURES)  # the plots of a flat model (no kl_layers) + 3 pictures
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "Evaluation (test split)" in page and "nats" in page


# --- listings ------------------------------------------------------------------------------


def test_datasets_prints_one_line_per_registered_dataset():
    result = cli("datasets")
    assert result.rc == 0
    first_words = [line.split()[0] for line in result.out.strip().splitlines()]
    names = [name for name, _ in list_datasets()]
    assert {"digits", "mnist"} <= set(names)
    for name in names:
        assert first_words.count(name) == 1, name  # one line each, with its description
    assert first_words[: len(names)] == names


def test_models_prints_one_line_per_registered_component():
    from klvae.plugins import REGISTRIES

    result = cli("models")
    assert result.rc == 0
    lines = result.out.strip().splitlines()
    expected = [f"{r.option} {name}" for r in REGISTRIES.values() if r.option != "--data" for name in r]
    assert [" ".join(line.split()[:2]) for line in lines] == expected
    assert all(len(line.split()) > 2 for line in lines)  # each with its description
    assert "--model vae" in expected and "--latent vmf" in expected and "--kl-schedule cyclical" in expected


# --- Python API ----------------------------------------------------------------------------


def test_load_gives_an_eval_mode_model_on_the_cpu(run):
    model = klvae.load(run)
    assert not model.training
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_encode_decode_and_prior_are_distributions_with_the_right_shapes(run):
    model = klvae.load(run)
    x = torch.bernoulli(torch.full((5, *EVENT), 0.3), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        q = model.encode(x)
        assert isinstance(q, Distribution)
        assert (q.batch_shape, q.event_shape) == ((5,), (LATENT,))
        z = q.rsample()
        assert z.shape == (5, LATENT)
        p_x = model.decode(z)
        assert isinstance(p_x, Distribution)
        assert (p_x.batch_shape, p_x.event_shape) == ((5,), EVENT)
        log_px = p_x.log_prob(x)
        assert log_px.shape == (5,) and torch.isfinite(log_px).all() and (log_px <= 0).all()
        many = model.decode(torch.randn(3, 5, LATENT))  # importance samples first
        assert (many.batch_shape, many.event_shape) == ((3, 5), EVENT)
        prior = model.prior()
        assert isinstance(prior, Distribution)
        assert (prior.batch_shape, prior.event_shape) == ((), (LATENT,))
        assert prior.log_prob(z).shape == (5,)
        assert prior.log_prob(torch.zeros(LATENT)).item() == pytest.approx(-0.5 * LATENT * math.log(2 * math.pi))


# --- resume --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A 2-epoch run trained with klvae.fit(TrainConfig), then `train --resume --epochs 4`."""
    run = tmp_path_factory.mktemp("resume") / "run"
    config = klvae.TrainConfig(data="digits", latent_dim=3, hidden=[32], epochs=2, out=str(run), progress=False)
    assert klvae.fit(config) == run
    _, before = metrics_table(run)
    result = cli("train", "--out", run, "--resume", "--epochs", "4", "--no-progress")
    assert result.rc == 0, result.err
    return run, before


def test_fit_with_a_train_config_trains_the_requested_epochs(resumed):
    _, before = resumed
    assert [int(float(r["epoch"])) for r in before] == [1, 2]


def test_resume_continues_to_the_requested_epoch_without_duplicate_rows(resumed):
    run, _ = resumed
    _, rows = metrics_table(run)
    assert [int(float(r["epoch"])) for r in rows] == [1, 2, 3, 4]
    steps = [float(r["step"]) for r in rows]
    assert steps == sorted(set(steps))  # the optimiser's step count carries on
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 4


def test_resume_keeps_the_stored_architecture_and_the_earlier_rows(resumed):
    run, before = resumed
    assert load_config(run).latent_dim == 3 and load_config(run).hidden == [32]
    assert json.loads((run / "model.json").read_text())["latent_dim"] == 3
    _, rows = metrics_table(run)
    for old, new in zip(before, rows[:2]):
        assert {k: float(v) for k, v in old.items()} == {k: float(v) for k, v in new.items()}


def test_metrics_csv_keeps_integer_epoch_and_step_numbers_across_a_resume(resumed):
    run, _ = resumed
    _, rows = metrics_table(run)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert all(r["step"].isdigit() for r in rows)


def test_resume_of_a_finished_run_keeps_its_epochs(resumed, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(resumed[0], run)
    result = cli("train", "--out", run, "--resume", "--epochs", "4", "--no-progress")
    assert result.rc == 0, result.err
    _, rows = metrics_table(run)
    assert [int(float(r["epoch"])) for r in rows] == [1, 2, 3, 4]


def test_every_option_of_every_command_says_what_it_does_and_lists_its_choices():
    from klvae.cli import build_parser
    from klvae.plugins import REGISTRIES

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name, command in commands.items():
        for action in command._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
            for choice in action.choices or ():
                assert choice in action.help, f"{name} {action.option_strings}: {choice} not listed"
    text = " ".join(cli("train", "--help").out.split())
    for registry in (r for r in REGISTRIES.values() if r.option != "--from"):  # samplers: `klvae sample --help`
        for entry in registry.entries():  # data sets by name; `klvae datasets` describes them
            assert entry.name in text
            assert registry.option == "--data" or entry.description.split(";")[0][:30] in text


def test_an_unknown_name_or_key_gets_the_closest_choice_in_one_line(tmp_path):
    result = cli("train", "--latent", "vfm", "--out", tmp_path / "r")
    assert_user_error(result, "latent")
    assert "did you mean 'vmf'?" in result.err
    (tmp_path / "c.yaml").write_text("latnt_dim: 3\n")
    result = cli("train", "--config", tmp_path / "c.yaml", "--out", tmp_path / "r")
    assert_user_error(result, "latnt_dim")
    assert "did you mean 'latent_dim'?" in result.err


def test_a_model_too_large_to_allocate_is_one_line_naming_its_size(tmp_path):
    result = cli("train", "--data", "digits", "--latent-dim", "100000000", "--out", tmp_path / "r", "--no-progress")
    assert_user_error(result, "latent-dim")
    assert "too large to allocate" in result.err and "GB" in result.err
    assert not (tmp_path / "r" / "model.safetensors").exists()
