"""colour-shapes (generated RGB shapes) and lfw-faces / lfw-nonfaces (scikit-image's LFW subset):
shapes, value grids, determinism, rendered shapes against their factors, and the splits."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from klvae.data import colour_shapes, lfw
from klvae.data.dataset import make_dataset
from klvae.data.splits import TEST_SEED
from klvae.errors import KlvaeError

skimage_data = pytest.importorskip("skimage.data")

AREA = {0: 4.0, 1: np.pi, 2: 2.0}  # area / s^2: square of side 2s, disc of radius s, triangle of base and height 2s
HERE = Path(".")
FACTOR = {name: i for i, name in enumerate(colour_shapes.FACTOR_NAMES)}


def _on_8bit_grid(x: np.ndarray) -> np.ndarray:
    return x == np.rint(x * np.float32(255)).astype(np.float32) / np.float32(255)


@pytest.fixture(scope="module")
def shapes():
    return colour_shapes.SOURCE.load(HERE, False)


@pytest.fixture(scope="module")
def factors():
    return colour_shapes.load_factors()


def _unlit(f: np.ndarray) -> np.ndarray:
    f = f.copy()
    f[:, FACTOR["shade"]] = 0
    return f


# --- colour-shapes ------------------------------------------------------------------------------


def test_colour_shapes_arrays_hold_8bit_rgb_images_and_shape_labels(shapes):
    assert shapes.train.shape == (20_000, 3, 32, 32) and shapes.test.shape == (2_000, 3, 32, 32)
    for x, y in ((shapes.train, shapes.train_labels), (shapes.test, shapes.test_labels)):
        assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
        assert _on_8bit_grid(x[:5000]).all()
        assert y.dtype == np.int64 and y.shape == (len(x),)
        assert set(np.unique(y)) == {0, 1, 2} and np.bincount(y).min() > len(x) / 4
    assert shapes.val is None


def test_colour_shapes_are_the_same_every_call(shapes):
    again = colour_shapes.SOURCE.load(HERE, False)
    assert np.array_equal(again.train, shapes.train) and np.array_equal(again.test, shapes.test)
    assert np.array_equal(again.train_labels, shapes.train_labels)
    assert not np.array_equal(shapes.train[:2000], shapes.test)  # train and test are different draws


def test_labels_and_factors_describe_the_returned_images(shapes, factors):
    train, test = factors
    assert train.shape == (20_000, 12) and test.shape == (2_000, 12) and train.dtype == np.float32
    assert np.array_equal(shapes.train_labels, train[:, 0].astype(np.int64))
    assert np.array_equal(shapes.test, colour_shapes.render(test))


def test_factors_lie_in_their_documented_ranges(factors):
    f = np.concatenate(factors)
    s, x, y = f[:, FACTOR["size"]], f[:, FACTOR["x"]], f[:, FACTOR["y"]]
    assert (s >= 4).all() and (s <= 10).all()
    for c in (x, y):  # the bounding box stays 1 px inside the 32 px image
        assert (c - s >= 1 - 1e-5).all() and (c + s <= 31 + 1e-5).all()
    fg, bg = f[:, 1:4], f[:, 4:7]
    assert _on_8bit_grid(fg).all() and _on_8bit_grid(bg).all()
    assert (np.linalg.norm(fg - bg, axis=1) >= colour_shapes.MIN_CONTRAST).all()
    assert (f[:, FACTOR["shade"]] >= 0).all() and (f[:, FACTOR["shade"]] <= colour_shapes.MAX_SHADE).all()


def _brute_coverage(f: np.ndarray) -> np.ndarray:
    """Coverage (n, 32, 32) from a full 128x128 sub-pixel mask per image, shape by shape."""
    sub = (np.arange(128) + 0.5) / 4
    dx = sub[None, None, :] - f[:, FACTOR["x"], None, None]
    dy = sub[None, :, None] - f[:, FACTOR["y"], None, None]
    s, shape = f[:, FACTOR["size"], None, None], f[:, 0, None, None]
    square = (np.abs(dx) <= s) & (np.abs(dy) <= s)
    disc = dx**2 + dy**2 <= s**2
    triangle = (dy <= s) & (2 * np.abs(dx) <= dy + s)
    mask = np.where(shape == 0, square, np.where(shape == 1, disc, triangle))
    return mask.reshape(len(f), 32, 4, 32, 4).mean((2, 4))


def test_coverage_is_the_fraction_of_sub_pixels_inside_the_shape(factors):
    f = factors[1][:300]
    assert np.array_equal(colour_shapes.coverage(f), _brute_coverage(f.astype(np.float64)))


def test_foreground_area_follows_the_shape_formula(factors):
    # unlit, each pixel is a * fg + (1 - a) * bg: a, recovered by projection, sums to the area
    f = _unlit(factors[1])
    x = colour_shapes.render(f).astype(np.float64)
    fg, bg = f[:, 1:4, None, None], f[:, 4:7, None, None]
    a = ((x - bg) * (fg - bg)).sum(1) / ((fg - bg) ** 2).sum(1)
    area, s = a.sum((1, 2)), f[:, FACTOR["size"]].astype(np.float64)
    labels = f[:, 0].astype(np.int64)
    formula = np.array([AREA[k] for k in labels]) * s**2
    # 4x supersampling moves each edge by at most 1/8 px: |error| <= perimeter / 8 <= s, + quantisation
    assert (np.abs(area - formula) <= s + 1).all()
    nearest = np.abs(area[:, None] / s[:, None] ** 2 - np.array(list(AREA.values()))).argmin(1)
    assert np.array_equal(nearest, labels)


def test_edges_are_anti_aliased(factors):
    f = factors[1]
    cover = colour_shapes.coverage(f)
    partial = ((cover > 0) & (cover < 1)).sum((1, 2))
    assert (partial[f[:, 0] > 0] >= 8).all()  # every disc and triangle outline has grey pixels
    # a square is crisp only when all 4 edges fall within 1/8 px of pixel borders (p = 1/256)
    assert (partial[f[:, 0] == 0] > 0).mean() > 0.98
    assert (cover[:, [0, -1], :] == 0).all() and (cover[:, :, [0, -1]] == 0).all()


def test_centre_pixel_has_the_foreground_colour(shapes, factors):
    f = factors[1]
    i = np.arange(len(f))
    row, col = np.floor(f[:, FACTOR["y"]]).astype(int), np.floor(f[:, FACTOR["x"]]).astype(int)
    unlit = colour_shapes.render(_unlit(f))
    assert np.array_equal(unlit[i, :, row, col], f[:, 1:4])
    # lit: the light is 0 at the shape's centre, so the pixel holding it moves by at most
    # shade * (half a pixel's diagonal) / 32, plus half an 8-bit step
    bound = f[:, FACTOR["shade"]] * np.sqrt(0.5) / 32 + 0.5 / 255 + 1e-6
    assert (np.abs(shapes.test[i, :, row, col] - f[:, 1:4]).max(1) <= bound).all()


def test_light_shades_the_background(shapes, factors):
    f = factors[1]
    cover = colour_shapes.coverage(f)
    background = np.where(cover[:, None] == 0, shapes.test, np.nan)
    spread = np.nanmax(background, (1, 2, 3)) - np.nanmin(background, (1, 2, 3))
    strong = f[:, FACTOR["shade"]] > 0.1
    assert (spread[strong] >= 3 / 255).all()
    unlit = colour_shapes.render(_unlit(f)).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    assert np.array_equal(unlit[cover == 0], np.repeat(f[:, 4:7], (cover == 0).sum((1, 2)), axis=0))


def test_render_rejects_bad_factors():
    with pytest.raises(KlvaeError, match=r"factors must have shape \(N, 12\)"):
        colour_shapes.render(np.zeros((3, 5)))
    bad = colour_shapes.load_factors()[1][:2].copy()
    bad[0, 0] = 3
    with pytest.raises(KlvaeError, match="shape classes 0..2"):
        colour_shapes.render(bad)


def test_colour_shapes_make_an_unbinarised_rgb_dataset(shapes):
    ds = make_dataset("colour-shapes", shapes, "auto", colour_shapes.SOURCE.default_binarize, 0.1, 0)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18_000, 2_000, 2_000)
    assert ds.event_shape == (3, 32, 32) and ds.binarize == "none" and not ds.binary
    assert str(ds.train_labels.dtype) == "torch.int64" and int(ds.train_labels.max()) == 2


# --- lfw-faces / lfw-nonfaces -------------------------------------------------------------------


def _fixed_split(x: np.ndarray, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros(len(x), bool)
    out[np.random.default_rng(TEST_SEED).permutation(len(x))[:n_test]] = True
    return x[~out], x[out]


@pytest.mark.parametrize("source, rows", [(lfw.SOURCE, slice(0, 100)), (lfw.NONFACES, slice(100, 200))])
def test_lfw_sources_are_skimage_rows_with_a_fixed_test_split(source, rows):
    raw = source.load(HERE, False)
    assert raw.train.shape == (90, 1, 25, 25) and raw.test.shape == (10, 1, 25, 25)
    assert raw.train.dtype == np.float32 and raw.train_labels is None and raw.test_labels is None
    train, test = _fixed_split((np.rint(skimage_data.lfw_subset()[rows, None] * 255) / 255).astype(np.float32), 10)
    assert np.array_equal(raw.train, train) and np.array_equal(raw.test, test)
    again = source.load(HERE, False)
    assert np.array_equal(again.train, raw.train) and np.array_equal(again.test, raw.test)


def test_lfw_values_are_rounded_to_8bit_levels_by_at_most_half_a_level():
    x = skimage_data.lfw_subset()
    assert x.shape == (200, 25, 25) and x.dtype == np.float64
    assert x.min() == 0 and x.max() == 1
    assert (np.abs(x * 255 - np.rint(x * 255)) < 1e-6).mean() < 0.5  # shipped off the 8-bit grid
    raw = lfw.SOURCE.load(HERE, False)
    both = np.concatenate([raw.train, raw.test])
    assert 0 <= both.min() and both.max() <= 1
    assert np.abs(both * 255 - np.rint(both * 255)).max() < 1e-4  # now on it
    train, test = _fixed_split(x[:100, None], 10)
    assert np.abs(np.concatenate([train, test]) - both).max() <= 0.5 / 255 + 1e-6


def test_lfw_faces_are_faces_and_nonfaces_are_not():
    transform, feature = pytest.importorskip("skimage.transform"), pytest.importorskip("skimage.feature")
    detector = feature.Cascade(skimage_data.lbp_frontal_face_cascade_filename())

    def found(raw) -> int:
        images = np.concatenate([raw.train, raw.test])[:, 0].astype(np.float64)
        return sum(len(detector.detect_multi_scale(img=transform.rescale(im, 2, order=1), scale_factor=1.1,
                                                   step_ratio=1, min_size=(24, 24), max_size=(50, 50))) > 0
                   for im in images)

    assert found(lfw.SOURCE.load(HERE, False)) >= 60  # 75 of 100 with scikit-image 0.25
    assert found(lfw.NONFACES.load(HERE, False)) <= 5  # 0 of 100


def test_lfw_faces_make_a_grey_dataset():
    raw = lfw.SOURCE.load(HERE, False)
    ds = make_dataset("lfw-faces", raw, "auto", lfw.SOURCE.default_binarize, 0.1, 0)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (81, 9, 10)
    assert ds.event_shape == (1, 25, 25) and ds.binarize == "none" and not ds.binary
    assert ds.train_labels is None


@pytest.mark.parametrize("source", [lfw.SOURCE, lfw.NONFACES])
def test_lfw_without_scikit_image_names_the_install(source, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(KlvaeError, match=rf"^{source.name} needs scikit-image: pip install scikit-image$"):
        source.load(HERE, False)
