"""Folders of photographs end to end from the command line: train, evaluate (bits per dimension
under the discretised logistic; the note that a perceptual loss bounds nothing), report with colour
pictures at their size, CelebA's layout conditioned on its attributes, images read from disk by
worker processes, and the one-line refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import QUICK, assert_user_error, cli, read_png

SEED = 0  # every picture the tests write is drawn from this seed


def _photo(rng: np.random.Generator, side: int, hue: int) -> Image.Image:
    """A smooth colour picture: a gradient of one dominant channel with a bright disc."""
    yy, xx = np.mgrid[:side, :side] / side
    img = np.zeros((side, side, 3))
    img[..., hue] = 0.3 + 0.5 * xx
    img[..., (hue + 1) % 3] = 0.2 + 0.3 * yy
    cy, cx, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.1, 0.25)]
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0.6, 1.0, 3)
    return Image.fromarray((img * 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """40 colour photos of two classes (PNG and JPEG, 40 to 60 px, one not square)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(SEED)
    for i in range(40):
        folder = root / ("cats" if i % 2 else "dogs")
        folder.mkdir(exist_ok=True)
        img = _photo(rng, 40 + i % 3 * 10, i % 2)
        if i == 7:
            img = img.resize((60, 44))
        img.save(folder / f"{i:03d}.{'png' if i % 3 else 'jpg'}")
    return root


def _train(photos, out, *extra):
    return cli("train", "--data", photos, "--image-size", 32, "--epochs", 1, "--latent-dim", 4,
               "--batch-size", 8, "--out", out, *QUICK, *extra)


def test_a_folder_of_colour_photos_trains_evaluates_in_bits_per_dim_and_reports(photos, tmp_path):
    out = tmp_path / "run"
    r = _train(photos, out, "--likelihood", "logistic")
    assert r.rc == 0, r.err
    spec = json.loads((out / "model.json").read_text())
    assert spec["event_shape"] == [3, 32, 32] and spec["net"] == "conv"
    r = cli("evaluate", out, "--iwae-k", 4, "--json")
    assert r.rc == 0, r.err
    result = json.loads(r.out)
    d = 3 * 32 * 32
    assert result["bits_per_dim"] == pytest.approx(result["nll_iwae"] / (d * np.log(2)))
    assert 0 < result["bits_per_dim"] < 8.5  # 8 bits is the uniform model's
    samples = read_png(out / "samples.png")
    assert samples.shape[0] == samples.shape[1] == 8 * 33 + 1  # 64 samples at their size, 1-pixel gaps
    assert np.ptp(samples[..., :3].astype(int), axis=-1).max() > 0  # in colour, not grey
    assert cli("report", out).rc == 0
    assert "reconstructions" in (out / "report.html").read_text()


def test_a_perceptual_loss_says_the_elbo_bounds_nothing(photos, tmp_path):
    out = tmp_path / "run"
    assert _train(photos, out, "--likelihood", "ssim", "--net", "conv-bn").rc == 0
    r = cli("evaluate", out, "--iwae-k", 2)
    assert r.rc == 0, r.err
    assert "not a normalised likelihood" in r.out and "bits per dim" not in r.out
    assert cli("report", out).rc == 0
    assert "not a normalised likelihood" in (out / "report.html").read_text()


def test_images_read_from_disk_by_workers_train_as_those_held_in_memory(photos, tmp_path):
    runs = {}
    for cache, workers in (("memory", 0), ("disk", 2)):
        out = tmp_path / cache
        r = _train(photos, out, "--image-cache", cache, "--workers", workers, "--seed", 3, "--net", "mlp")
        assert r.rc == 0, r.err
        runs[cache] = (out / "metrics.csv").read_text().splitlines()[1].split(",")
    assert runs["memory"][:4] == runs["disk"][:4]  # epoch, then the same losses to the digit


def _celeba(root, n=30):
    """CelebA's official layout with n small JPEGs, 3 attributes and the three splits."""
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    rng = np.random.default_rng(SEED)
    names, attrs = [f"{i + 1:06d}.jpg" for i in range(n)], rng.integers(0, 2, (n, 3)) * 2 - 1
    for i, name in enumerate(names):
        _photo(rng, 40, i % 3).resize((36, 44)).save(images / name)
    (root / "list_attr_celeba.txt").write_text(
        f"{n}\nSmiling Male Young\n" + "".join(f"{a}  {' '.join(f'{v:2d}' for v in row)}\n" for a, row in zip(names, attrs)))
    (root / "list_eval_partition.txt").write_text("".join(f"{a} {0 if i < 20 else 1 if i < 25 else 2}\n"
                                                          for i, a in enumerate(names)))
    return attrs


def test_celeba_layout_trains_a_model_conditioned_on_its_attributes(tmp_path):
    _celeba(tmp_path / "celeba")
    out = tmp_path / "run"
    r = cli("train", "--data", "celeba", "--data-dir", tmp_path, "--image-size", 32, "--epochs", 1, "--latent-dim",
            4, "--batch-size", 5, "--condition", "attributes", "--net", "mlp", "--out", out, *QUICK)
    assert r.rc == 0, r.err
    assert json.loads((out / "model.json").read_text())["num_classes"] == 3
    r = cli("evaluate", out, "--iwae-k", 2, "--json", "--data-dir", tmp_path)
    assert r.rc == 0, r.err
    assert json.loads(r.out)["n"] == 5 and json.loads(r.out)["condition"] == "attributes"


def test_conditional_prior_and_class_labels_refuse_attributes(tmp_path, photos):
    _celeba(tmp_path / "celeba")
    r = cli("train", "--data", "celeba", "--data-dir", tmp_path, "--condition", "attributes", "--conditional-prior",
            "--out", tmp_path / "a", *QUICK)
    assert_user_error(r, "conditional_prior", "attributes")
    r = _train(photos, tmp_path / "b", "--condition", "attributes")
    assert_user_error(r, "attributes", "celeba")


@pytest.mark.parametrize("flags, words", [
    (["--image-size", "4"], ["size"]),
    (["--colour", "sepia"], ["colour", "sepia"]),
    (["--image-cache", "cloud"], ["image_cache", "cloud"]),
    (["--workers", "-1"], ["workers"]),
    (["--likelihood", "logistic", "--data", "digits"], []),
])
def test_bad_image_options_are_one_line_errors(photos, tmp_path, flags, words):
    r = cli("train", "--data", photos, "--out", tmp_path / "run", *QUICK, *flags)
    if not words:  # logistic on 8x8 digits in [0, 1] is fine: it only needs data in [0, 1]
        assert r.rc == 0, r.err
        return
    assert_user_error(r, *words)
    assert not (tmp_path / "run").exists()


def test_a_folder_without_images_names_the_suffixes(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no pictures here")
    r = cli("train", "--data", tmp_path / "empty", "--out", tmp_path / "run", *QUICK)
    assert_user_error(r, "folder of images")


def test_the_colour_pictures_of_the_library_keep_their_channels(photos):
    from klvae.data import load_dataset
    from klvae.data.images import ImageOptions

    data = load_dataset(photos, image_options=ImageOptions(32, "rgb", "memory"))
    assert data.event_shape == (3, 32, 32) and not data.binary
    x = data.train[:4]
    assert x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert torch.equal((x * 255).round() / 255, x)  # 8-bit values


def test_a_conv_hierarchy_models_colour_photos_with_the_logistic_mixture(photos, tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--data", photos, "--image-size", 32, "--epochs", 1, "--model", "deep-hvae", "--net", "conv",
            "--latent-dims", 4, 2, "--width", 16, "--likelihood", "logistic-mixture", "--mixture-components", 3,
            "--batch-size", 8, "--out", out, "--no-progress")
    assert r.rc == 0, r.err
    assert json.loads((out / "model.json").read_text())["event_shape"] == [3, 32, 32]
    r = cli("evaluate", out, "--iwae-k", 2, "--json")
    assert r.rc == 0, r.err
    result = json.loads(r.out)
    assert len(result["kl_per_layer"]) == 2 and 0 < result["bits_per_dim"] < 10


def test_a_class_left_out_of_a_folder_keeps_its_images_on_disk(photos):
    from klvae.data import load_dataset
    from klvae.data.images import ImageOptions

    data = load_dataset(photos, image_options=ImageOptions(32, "rgb", "disk"))
    kept = data.without_classes([0])
    assert not kept.train.cached and len(kept.train) == int((data.train_labels == 1).sum())
    assert torch.equal(kept.train[:3], data.train[torch.nonzero(data.train_labels == 1).flatten()[:3]])
    assert (kept.train_labels == 1).all() and len(kept.test) == len(data.test)
