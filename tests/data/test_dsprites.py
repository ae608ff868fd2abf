"""dSprites: the parser against the README's facts and a small file in the official layout, the
sources, and the generator against the real images it was fitted to."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from klvae.data import dsprites, load_dataset
from klvae.data.dsprites import FACTOR_SIZES, factor_data, factors_of, read_dsprites, render
from klvae.errors import KlvaeError

CENTRES = np.arange(64) + 0.5  # pixel centres, as the generator places sprites


def official_like(path, n_shape=2, seed=0, compress=True):
    """A small .npz with the official keys: a full grid of n_shape shapes x 2 scales x 2
    orientations x 3 posX x 3 posY, sorted by factor, each image drawn by the generator."""
    sizes = (n_shape, 2, 2, 3, 3)
    classes = np.stack(np.unravel_index(np.arange(np.prod(sizes)), sizes), 1) * [1, 5, 7, 10, 10]
    imgs = render(classes).astype(np.uint8)
    latents = np.c_[np.zeros(len(classes), np.int64), classes]
    (np.savez_compressed if compress else np.savez)(
        path, imgs=imgs, latents_classes=latents, latents_values=latents.astype(float),
        latents_sizes=np.array([1, 3, 6, 40, 32, 32]), metadata=np.array("fake"))
    return imgs, classes


@pytest.fixture(scope="module")
def dsprites_root(shared_data):
    return shared_data("dsprites", "dsprites_grid.npz", "dsprites_random20k.npz")


@pytest.fixture(scope="module")
def grid(dsprites_root):
    return read_dsprites(dsprites_root / "dsprites" / "dsprites_grid.npz")


# --- the parser ----------------------------------------------------------------------------


def test_the_shared_subsets_match_the_readme_facts(dsprites_root, grid):
    imgs, classes = grid
    assert imgs.shape == (46080, 64, 64) and imgs.dtype == np.uint8 and classes.shape == (46080, 5)
    assert int(imgs.sum(dtype=np.int64)) == 8_020_979 and int(imgs[0].sum()) == 100
    assert [len(np.unique(c)) for c in classes.T] == [3, 6, 10, 16, 16]
    rand_imgs, rand_classes = read_dsprites(dsprites_root / "dsprites" / "dsprites_random20k.npz")
    assert rand_imgs.shape == (20000, 64, 64) and int(rand_imgs.sum(dtype=np.int64)) == 3_472_999
    assert np.all(rand_classes.max(0) < FACTOR_SIZES) and rand_classes.min() >= 0
    with np.load(dsprites_root / "dsprites" / "dsprites_grid.npz") as d:
        assert d["latents_sizes"].tolist() == [1, *FACTOR_SIZES]


@pytest.mark.parametrize("compress", [True, False])
def test_the_parser_reads_a_small_file_in_the_official_layout_in_chunks(tmp_path, monkeypatch, compress):
    path = tmp_path / dsprites.OFFICIAL
    imgs, classes = official_like(path, compress=compress)
    monkeypatch.setattr(dsprites, "CHUNK", 5)  # several chunks, the last one short
    got_imgs, got_classes = read_dsprites(path)
    assert np.array_equal(got_imgs, imgs) and np.array_equal(got_classes, classes)
    rows = np.array([0, 4, 5, 17, len(imgs) - 1])
    part, part_classes = read_dsprites(path, rows)
    assert np.array_equal(part, imgs[rows]) and np.array_equal(part_classes, classes[rows])


def test_a_file_without_the_official_keys_is_an_error_naming_what_is_missing(tmp_path):
    np.savez(tmp_path / "bad.npz", imgs=np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(KlvaeError, match="has no array 'latents_classes' .found imgs.; a dSprites file needs"):
        read_dsprites(tmp_path / "bad.npz")
    np.savez(tmp_path / "shape.npz", imgs=np.zeros((2, 32, 32), np.uint8), latents_classes=np.zeros((2, 6), int))
    with pytest.raises(KlvaeError, match=r"holds imgs of shape \(2, 32, 32\); expected \(2, 64, 64\)"):
        read_dsprites(tmp_path / "shape.npz")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "shape.npz").read_bytes()[:100])
    with pytest.raises(KlvaeError, match="cut.npz cannot be read as an .npz .*; download the file again"):
        read_dsprites(tmp_path / "cut.npz")


def test_a_missing_file_is_one_line_naming_the_path_the_file_and_the_fixes(tmp_path):
    with pytest.raises(KlvaeError) as err:
        load_dataset("dsprites", data_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "dsprites" / dsprites.OFFICIAL) in msg
    assert dsprites.RANDOM in msg and "KLVAE_DATA or --data-dir" in msg and "'dsprites-generated'" in msg
    with pytest.raises(KlvaeError, match=f"dsprites-grid file not found: {tmp_path}.*dsprites-generated"):
        factor_data("dsprites-grid", tmp_path)


# --- the sources ---------------------------------------------------------------------------


def test_dsprites_is_the_random_subset_when_the_official_file_is_absent(dsprites_root):
    ds = load_dataset("dsprites", data_dir=dsprites_root)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (16200, 1800, 2000)
    assert ds.event_shape == (1, 64, 64) and ds.binary and ds.binarize == "none"
    total = sum(float(t.sum(dtype=torch.float64)) for t in (ds.train, ds.val, ds.test))
    assert total == 3_472_999
    factors, sizes = factors_of(ds, "train")
    assert factors.shape == (16200, 5) and factors.dtype == np.int64 and sizes == FACTOR_SIZES


def test_dsprites_takes_a_fixed_sample_of_the_official_file_when_present(tmp_path, monkeypatch):
    (tmp_path / "dsprites").mkdir()
    official_like(tmp_path / "dsprites" / dsprites.OFFICIAL, n_shape=3)  # 108 images
    monkeypatch.setattr(dsprites, "N_IMAGES", 50)
    a, b = load_dataset("dsprites", data_dir=tmp_path, seed=0), load_dataset("dsprites", data_dir=tmp_path, seed=1)
    assert len(a.train) + len(a.val) + len(a.test) == 50 and torch.equal(a.test_labels, b.test_labels)
    for split in ("train", "val", "test"):  # each image sits beside its own factors
        x, f = getattr(a, split), getattr(a, f"{split}_labels").numpy()
        assert np.array_equal(x[:, 0].numpy().astype(np.uint8), render(f).astype(np.uint8))
        assert len(np.unique(np.ravel_multi_index(tuple(f.T), FACTOR_SIZES))) == len(f)


def test_the_generated_source_keeps_integer_factors_and_is_reproducible():
    a = load_dataset("dsprites-generated", seed=3)
    assert (len(a.train), len(a.val), len(a.test)) == (16200, 1800, 2000)
    assert a.test_labels.dtype == torch.int64 and a.test_labels.shape == (2000, 5)
    assert a.binary and a.binarize == "none" and a.event_shape == (1, 64, 64)
    again = dsprites.load_generated()  # drawn anew; the test split ignores the run's seed
    assert np.array_equal(again.test, a.test.numpy().astype(np.uint8)) and np.array_equal(again.test_labels, a.test_labels)
    assert torch.equal(a.test[:200, 0], torch.from_numpy(render(a.test_labels[:200].numpy())).float())
    assert np.all(a.train_labels.numpy().max(0) == np.array(FACTOR_SIZES) - 1)  # every class drawn


def test_factors_of_a_data_set_without_dsprites_factors_is_an_error():
    with pytest.raises(KlvaeError, match="'digits' has no dSprites factors in its 'test' split"):
        factors_of(load_dataset("digits"))


# --- the generator -------------------------------------------------------------------------


def _centroids(imgs: np.ndarray) -> np.ndarray:
    m = imgs.sum((1, 2))
    return np.stack([(imgs * CENTRES).sum((1, 2)) / m, (imgs * CENTRES[:, None]).sum((1, 2)) / m], 1)


@pytest.mark.parametrize("subset", ["grid", "random20k"])
def test_generated_images_match_the_real_ones_pixel_for_pixel_but_for_edges(dsprites_root, subset):
    """Fitted on the grid subset; the random subset (odd positions, all 40 orientations) checks
    the fit holds off the grid."""
    real, classes = read_dsprites(dsprites_root / "dsprites" / f"dsprites_{subset}.npz")
    real, classes = real[::5].astype(bool), classes[::5]
    fake = render(classes)
    differ = (real ^ fake).sum((1, 2))
    iou = (real & fake).sum((1, 2)) / (real | fake).sum((1, 2))
    for shape in range(3):
        k = classes[:, 0] == shape
        assert (differ[k] == 0).mean() > 0.9 and iou[k].mean() > 0.998 and iou[k].min() > 0.8
        for scale in range(6):  # white pixels per shape and scale, within 0.3 of the real mean
            kk = k & (classes[:, 1] == scale)
            assert fake[kk].sum((1, 2)).mean() == pytest.approx(real[kk].sum((1, 2)).mean(), abs=0.3)
    assert np.abs(_centroids(fake) - _centroids(real)).mean() < 0.01  # pixels


def test_the_sprite_centre_follows_posx_and_posy_and_its_size_the_scale():
    n = 32
    f = np.zeros((n, 5), np.int64)
    f[:, 0], f[:, 3], f[:, 4] = 0, np.arange(n), np.arange(n)[::-1]  # squares, orientation 0
    c = _centroids(render(f))
    assert c[:, 0] == pytest.approx(16 + 32 * dsprites.POSITIONS, abs=0.5)  # x: posX, left to right
    assert c[:, 1] == pytest.approx(16 + 32 * dsprites.POSITIONS[::-1], abs=0.5)  # y: posY, downwards
    sizes = render(np.array([[s, k, 0, 16, 16] for s in range(3) for k in range(6)])).sum((1, 2)).reshape(3, 6)
    assert np.all(np.diff(sizes, axis=1) > 0) and np.all(sizes[0] > sizes[1]) and np.all(sizes[1] > sizes[2])
    assert sizes[0, -1] == 19 * 19  # a 19.2-pixel square covers 19 x 19 pixel centres


def test_orientation_turns_the_sprite_and_its_ends_coincide():
    f = np.array([[2, 5, o, 16, 16] for o in (0, 39, 10)])
    heart, same, turned = render(f)
    assert np.array_equal(heart, same)  # orientations 0 and 2 pi, both in the official grid
    assert not np.array_equal(heart, turned) and abs(int(heart.sum()) - int(turned.sum())) <= 8
    cols = np.flatnonzero(heart.any(0))
    assert np.array_equal(heart[:, cols], heart[:, cols[::-1]])  # upright: mirror-symmetric
    rows = np.flatnonzero(heart.any(1))
    assert heart[rows[-1]].sum() <= 2 and heart[rows[0]].sum() > 2  # the tip points down
    cols = np.flatnonzero(turned.any(0))  # a quarter turn counter-clockwise on screen: tip right
    assert turned[:, cols[-1]].sum() <= 2 and turned[:, cols[0]].sum() > 2


def test_render_rejects_factors_outside_the_grid():
    with pytest.raises(KlvaeError, match=r"factors must be classes of shape \(N, 5\) within \(3, 6, 40, 32, 32\)"):
        render(np.array([[3, 0, 0, 0, 0]]))


# --- factor data for the metrics ---------------------------------------------------------------


def test_grid_factor_data_draws_the_real_image_of_each_combination(dsprites_root, grid):
    data = factor_data("dsprites-grid", dsprites_root)
    assert data.factor_sizes == (3, 6, 10, 16, 16)
    assert data.classes[2].tolist() == list(range(0, 40, 4)) and data.classes[3].tolist() == list(range(0, 32, 2))
    f = data.sample_factors(40, np.random.default_rng(0))
    rows = np.ravel_multi_index(tuple(f.T), data.factor_sizes)
    x = data.images_of(f)
    assert x.shape == (40, 1, 64, 64) and x.dtype == np.float32
    assert np.array_equal(x[:, 0], grid[0][rows]) and np.array_equal(grid[1][rows][:, 2], 4 * f[:, 2])


def test_factor_data_from_a_full_official_layout_file_and_not_from_a_random_sample(tmp_path, dsprites_root):
    (tmp_path / "dsprites").mkdir()
    imgs, classes = official_like(tmp_path / "dsprites" / dsprites.OFFICIAL)
    data = factor_data("dsprites", tmp_path)
    assert data.factor_sizes == (2, 2, 2, 3, 3)
    assert np.array_equal(data.images_of(np.array([[1, 1, 1, 2, 2]]))[0, 0], imgs[-1])
    with pytest.raises(KlvaeError, match="is not a full factorial grid sorted by factor"):
        dsprites.file_factor_data(dsprites_root / "dsprites" / dsprites.RANDOM, "random")
    generated = factor_data("dsprites-generated", tmp_path)
    assert generated.factor_sizes == FACTOR_SIZES
    assert np.array_equal(generated.images_of(classes[:3])[:, 0], imgs[:3].astype(np.float32))
