"""Bad input to `klvae` and its Python API: every user error exits with code 2 and one line on
stderr that names the problem, never a traceback (unless --debug), and never damages a run."""
from __future__ import annotations

import dataclasses
import gzip
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import klvae
from helpers import assert_user_error, cli, klvae_process, metrics_table, snapshot
from klvae import KlvaeError
from klvae.cli import main

# options that keep a training short should a bad option ever be accepted
SHORT = ("--epochs", "1", "--hidden", "16", "--no-progress")
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A one-epoch digits run trained through the Python API from a plain dict."""
    out = tmp_path_factory.mktemp("bad_input") / "run"
    config = {"data": "digits", "out": str(out), "epochs": 1, "hidden": [16], "latent_dim": 2, "progress": False}
    assert klvae.fit(config) == out
    return out


@pytest.fixture
def run_copy(run, tmp_path) -> Path:
    """A private copy of the module's run, free to be damaged."""
    return Path(shutil.copytree(run, tmp_path / "copy"))


def test_fit_accepts_a_plain_dict(run):
    _, rows = metrics_table(run)
    assert len(rows) == 1
    assert klvae.load(run).latent_dim == 2


# --- options ---------------------------------------------------------------------------------


BAD_OPTIONS = [
    (["--data", "mnits"], ["unknown dataset", "'mnits'", "mnist"]),
    (["--model", "foo"], ["model", "'foo'", "vae"]),
    (["--data", "/nonexistent/x.npy"], ["/nonexistent/x.npy", "not found"]),
    (["--beta", "abc"], ["beta", "abc"]),
    (["--epochs", "2.5"], ["epochs", "2.5"]),
    (["--latent-dim", "two"], ["latent_dim", "two"]),
    (["--beta", "-1"], ["beta", "-1"]),
    (["--beta", "nan"], ["beta", "nan"]),
    (["--lr", "0"], ["lr", "0"]),
    (["--latent-dim", "0"], ["latent_dim", "0"]),
    (["--val-fraction", "0.9"], ["val_fraction", "0.9"]),
    (["--hidden", "0"], ["hidden", "0"]),
    (["--batch-size", "-3"], ["batch_size", "-3"]),
    (["--net", "conv"], ["conv", "mlp"]),
    (["--no-such-flag"], ["--no-such-flag"]),
    (["--strategy", "foo"], ["strategy", "foo"]),
]


@pytest.mark.parametrize("args, words", BAD_OPTIONS, ids=[" ".join(args) for args, _ in BAD_OPTIONS])
def test_bad_train_option_exits_2_naming_it_and_writes_no_run(tmp_path, args, words):
    out = tmp_path / "run"
    assert_user_error(cli("train", "--out", out, *SHORT, *args), *words)
    assert not (out / "config.yaml").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_unavailable_accelerator_exits_2_naming_it(tmp_path):
    assert_user_error(cli("train", "--out", tmp_path / "run", *SHORT, "--accelerator", "cuda"), "cuda")


def test_failed_train_can_be_retried_into_the_same_out(tmp_path):
    """A run stopped by a bad option leaves nothing that makes the retry fail for another reason."""
    argv = ("train", "--out", tmp_path / "run", *SHORT, "--strategy", "foo")
    first, second = cli(*argv), cli(*argv)
    assert second.rc == first.rc and second.err == first.err
    assert "already holds a run" not in second.err


def test_out_that_is_an_existing_file_exits_2(tmp_path):
    (tmp_path / "notes.txt").write_text("not a run\n")
    assert_user_error(cli("train", "--out", tmp_path / "notes.txt", *SHORT), "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "not a run\n"


# --- data --------------------------------------------------------------------------------------


def _idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return b"".join(n.to_bytes(4, "big") for n in (magic, *dims)) + payload


def _mnist_folder(root: Path, train_images: bytes) -> Path:
    """root/mnist with the 4 IDX files: valid labels and test images, the given train images."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    images = _idx(0x803, (3, 28, 28), bytes(3 * 28 * 28))
    labels = _idx(0x801, (3,), bytes(3))
    contents = [train_images, gzip.compress(labels), gzip.compress(images), gzip.compress(labels)]
    for name, data in zip(MNIST_FILES, contents):
        (folder / name).write_bytes(data)
    return root


@pytest.mark.parametrize("damage", ["gzip stream cut", "idx data cut"])
def test_truncated_mnist_file_exits_2_naming_the_file(tmp_path, damage):
    full = _idx(0x803, (60000, 28, 28), bytes(60000 * 28 * 28))
    if damage == "gzip stream cut":
        blob = gzip.compress(full)[:5000]
    else:
        blob = gzip.compress(full[:16 + 3 * 28 * 28])  # a whole gzip of too few images
    root = _mnist_folder(tmp_path / "data", blob)
    line = assert_user_error(cli("train", "--data", "mnist", "--data-dir", root, "--out", tmp_path / "run", *SHORT),
                             "train-images-idx3-ubyte.gz")
    assert "truncated" in line or "corrupt" in line


def test_missing_mnist_files_exit_2_naming_the_folder(tmp_path):
    assert_user_error(cli("train", "--data", "mnist", "--data-dir", tmp_path, "--out", tmp_path / "run", *SHORT),
                      str(tmp_path / "mnist"), "not found")


def test_nan_in_a_user_npy_file_exits_2(tmp_path):
    x = np.random.default_rng(0).random((40, 16), dtype=np.float32)
    x[7, 3] = np.nan
    np.save(tmp_path / "points.npy", x)
    assert_user_error(cli("train", "--data", tmp_path / "points.npy", "--out", tmp_path / "run", *SHORT),
                      "points.npy", "non-finite")


# --- config files --------------------------------------------------------------------------------


@pytest.mark.parametrize("text, words", [
    ("latent_dim: 3\nlatnet_dim: 4\n", ["unknown config key", "latnet_dim"]),
    ("latent_dim: [3\n", ["not valid yaml"]),
    ("- latent_dim\n- 3\n", ["mapping"]),
    ("epochs: 1\ndata: null\n", ["data"]),
    ("epochs: 1\nout: null\n", ["out"]),
    ("epochs: 1\nstrategy: null\n", ["strategy"]),
], ids=["unknown key", "invalid yaml", "not a mapping", "data null", "out null", "strategy null"])
def test_bad_config_file_exits_2_naming_the_problem(tmp_path, monkeypatch, text, words):
    monkeypatch.chdir(tmp_path)  # a config without `out` must not train into the working directory
    (tmp_path / "config.yaml").write_text(text)
    args = ["--out", tmp_path / "run"] if "out: null" not in text else []
    assert_user_error(cli("train", "--config", tmp_path / "config.yaml", *args, "--no-progress"), *words)
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_missing_config_file_exits_2_naming_it(tmp_path):
    assert_user_error(cli("train", "--config", tmp_path / "none.yaml", "--out", tmp_path / "run"),
                      "none.yaml", "not found")


# --- run directories -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["evaluate"], ["report"], ["sample", "--out", "s.png"], ["reconstruct", "--out", "r.png"],
    ["interpolate", "--a", "0", "--b", "1", "--out", "i.png"],
], ids=lambda c: c[0])
def test_command_on_a_directory_that_is_not_a_run_exits_2(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    result = cli(command[0], tmp_path / "empty", *command[1:])
    assert_user_error(result, str(tmp_path / "empty"), "not a finished klvae run")
    assert not list(tmp_path.glob("*.png"))


def test_evaluate_of_a_nonexistent_path_exits_2(tmp_path):
    assert_user_error(cli("evaluate", tmp_path / "nowhere"), str(tmp_path / "nowhere"), "does not exist")


def test_evaluate_of_damaged_weights_exits_2(run_copy):
    weights = run_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert_user_error(cli("evaluate", run_copy, "--iwae-k", "2"), "cannot load", "damaged")


def test_train_into_an_existing_run_fails_and_changes_no_file(run_copy):
    before = snapshot(run_copy)
    assert_user_error(cli("train", "--out", run_copy, *SHORT), "already holds a run", "--overwrite", "--resume")
    assert snapshot(run_copy) == before


def test_overwrite_with_a_bad_option_keeps_the_existing_run(run_copy):
    before = snapshot(run_copy)
    assert_user_error(cli("train", "--out", run_copy, "--overwrite", "--data", "mnits", *SHORT), "mnits")
    assert snapshot(run_copy) == before


def test_resume_with_a_different_architecture_fails_and_changes_no_file(run_copy):
    before = snapshot(run_copy)
    line = assert_user_error(cli("train", "--out", run_copy, "--resume", "--latent-dim", "7", "--epochs", "2",
                                 "--no-progress"))
    assert "latent" in line or "architecture" in line or "shape" in line
    assert snapshot(run_copy) == before


def test_resume_without_a_checkpoint_exits_2(tmp_path):
    (tmp_path / "run").mkdir()
    assert_user_error(cli("train", "--out", tmp_path / "run", "--resume", *SHORT), "cannot resume", "last.ckpt")


@pytest.mark.parametrize("a, b, name", [("99999", "0", "--a 99999"), ("0", "-1", "--b -1")])
def test_interpolate_index_out_of_range_exits_2(run, tmp_path, a, b, name):
    line = assert_user_error(cli("interpolate", run, "--a", a, "--b", b, "--out", tmp_path / "i.png"),
                             name, "out of range")
    assert "0..296" in line  # the valid range of the test split
    assert not (tmp_path / "i.png").exists()


@pytest.mark.parametrize("command", [
    ["sample", "-n", "0"], ["reconstruct", "-n", "0"], ["interpolate", "--a", "0", "--b", "1", "--steps", "1"],
], ids=lambda c: " ".join(c))
def test_picture_command_with_a_bad_count_exits_2(run, tmp_path, command):
    assert_user_error(cli(command[0], run, *command[1:], "--out", tmp_path / "p.png"))
    assert not (tmp_path / "p.png").exists()


def test_picture_out_that_is_a_directory_exits_2(run, tmp_path):
    (tmp_path / "pictures").mkdir()
    assert_user_error(cli("sample", run, "-n", "4", "--out", tmp_path / "pictures"), "pictures")


@pytest.mark.parametrize("args, word", [(["--iwae-k", "0"], "iwae_k"), (["--batch-size", "-5"], "batch")],
                         ids=["iwae-k 0", "batch-size -5"])
def test_evaluate_with_a_bad_count_exits_2(run, args, word):
    assert_user_error(cli("evaluate", run, *args), word)


# --- Python API ----------------------------------------------------------------------------------


def test_klvae_error_is_a_value_error():
    assert issubclass(KlvaeError, ValueError)


def test_encode_rejects_data_of_the_wrong_shape(run):
    model = klvae.load(run)
    with pytest.raises(KlvaeError, match=r"x must have shape \(N, 1, 8, 8\); got \(3, 64\)"):
        model.encode(torch.zeros(3, 64))


def test_decode_rejects_latents_of_the_wrong_size(run):
    model = klvae.load(run)
    with pytest.raises(KlvaeError, match=r"z must have shape \(\.\.\., 2\); got \(3, 5\)"):
        model.decode(torch.zeros(3, 5))


def test_fit_rejects_an_unknown_config_key(tmp_path):
    with pytest.raises(KlvaeError, match="unknown config key.*latnet_dim"):
        klvae.fit({"latnet_dim": 3, "out": str(tmp_path / "run")})
    assert not (tmp_path / "run").exists()


def test_python_evaluate_rejects_a_non_positive_iwae_k(run):
    with pytest.raises(KlvaeError, match="iwae_k must be a positive integer; got 0"):
        klvae.evaluate(run, iwae_k=0)


def test_load_of_a_directory_that_is_not_a_run_raises(tmp_path):
    with pytest.raises(KlvaeError, match="not a finished klvae run"):
        klvae.load(tmp_path)


# --- --debug and the real process ----------------------------------------------------------------


def test_debug_lets_the_error_propagate(tmp_path):
    with pytest.raises(KlvaeError, match="unknown dataset 'mnits'"):
        main(["--debug", "train", "--data", "mnits", "--out", str(tmp_path / "run")])


def test_installed_command_exits_2_with_one_line_and_no_traceback(tmp_path):
    result = klvae_process("train", "--beta", "abc", "--out", tmp_path / "run", cwd=tmp_path)
    assert_user_error(result, "beta", "abc")
    assert result.out == ""


def test_installed_command_with_debug_shows_the_traceback(tmp_path):
    result = klvae_process("--debug", "evaluate", tmp_path / "nowhere", cwd=tmp_path)
    assert result.rc == 1  # an uncaught exception, not the user-error code
    assert "Traceback" in result.err and "KlvaeError" in result.err and "does not exist" in result.err


# --- non-finite guard ----------------------------------------------------------------------------


def test_absurd_learning_rate_never_yields_nan_metrics_with_success(tmp_path):
    out = tmp_path / "run"
    result = cli("train", "--out", out, "--lr", "5", "--epochs", "2", "--hidden", "32", "--no-progress")
    if result.rc == 0:
        _, rows = metrics_table(out)
        assert len(rows) == 2
        assert all(math.isfinite(float(v)) for row in rows for v in row.values()), rows
    else:
        assert_user_error(result, "step", "nan/inf")


def test_repeated_nan_losses_stop_training_with_a_message_naming_the_step(tmp_path, monkeypatch):
    from klvae import objectives

    original = objectives.elbo

    def poisoned(*args, **kwargs):  # every step's loss becomes NaN
        terms = original(*args, **kwargs)
        return dataclasses.replace(terms, recon=terms.recon + float("nan"))

    monkeypatch.setattr(objectives, "elbo", poisoned)
    result = cli("train", "--out", tmp_path / "run", "--max-bad-steps", "3", *SHORT)
    assert_user_error(result, "NaN/Inf for 3 steps in a row", "step", "epoch 0", "--lr")
