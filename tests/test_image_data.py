"""Image folders and CelebA: the tests write small folders with Pillow and check shapes, values against a
decode done here, labels, splits, caching modes, bad files and every user error."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps, features
from torch.utils.data import DataLoader

from klvae.data import image_files, images
from klvae.data.celeba import ATTR_FILE, IMAGES_DIR, PARTITION_FILE, is_celeba, load_celeba
from klvae.data.images import ImageFiles, ImageOptions, is_image_folder, load_image_folder
from klvae.data.splits import TEST_SEED
from klvae.errors import KlvaeError
from klvae.loaders import IndexedTensor

S = 16
WEBP = features.check("webp")


def _noise(h: int, w: int, c: int, seed: int) -> np.ndarray:
    shape = (h, w) if c == 1 else (h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _smooth(h: int, w: int, seed: int) -> np.ndarray:
    """(h, w, 3) uint8 gradients: survives JPEG compression well."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, np.full((h, w), 40 * (seed % 6))], -1)
    return base.astype(np.uint8)


def _reference(path: str, size: int, mode: str) -> torch.Tensor:
    """A decode written here: orientation, 16-bit scaling, mode, centre crop, bicubic resize; (C, S, S)."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        img.load()
    if img.mode.startswith("I;16"):
        img = Image.fromarray((np.asarray(img).astype(np.float64) / 257).round().astype(np.uint8))
    img = img.convert(mode)
    w, h = img.size
    m = min(w, h)
    box = ((w - m) // 2, (h - m) // 2, (w - m) // 2 + m, (h - m) // 2 + m)
    a = np.array(img.crop(box).resize((size, size), Image.Resampling.BICUBIC))
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(a)).float() / 255


def _write_mixed(root: Path) -> None:
    """14 files (15 with WebP) in classes a/ and b/sub/: PNG, JPEG (non-square), RGBA, P, L, I;16, 1-bit, WebP."""
    (root / "a").mkdir(parents=True)
    (root / "b" / "sub").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(_noise(30, 20, 3, i)).save(root / "a" / f"rgb{i}.png")
        Image.fromarray(_smooth(24, 40, i)).save(root / "b" / "sub" / f"photo{i}.JPG", quality=90)
    Image.fromarray(_noise(20, 20, 4, 9)).save(root / "a" / "rgba.png")
    Image.fromarray(_noise(25, 25, 3, 10)).convert("P").save(root / "a" / "palette.png")
    Image.fromarray(_noise(18, 22, 1, 11)).save(root / "b" / "grey.png")
    Image.fromarray((_noise(21, 17, 1, 12).astype(np.uint16) * 257)).save(root / "b" / "deep.png")
    Image.fromarray(_noise(19, 19, 1, 13)).convert("1").save(root / "b" / "bits.png")
    Image.fromarray(_noise(S, S, 3, 14)).save(root / "a" / "exact.png")
    if WEBP:
        Image.fromarray(_noise(22, 30, 3, 15)).save(root / "b" / "pic.webp", lossless=True)


def _write_plain(root: Path, n: int, mode: str = "RGB", suffix: str = ".png") -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(root / f"img{i:03d}{suffix}")
        a = _noise(20 + i % 3, 24, 1 if mode == "L" else 3, 100 + i)
        Image.fromarray(a).save(paths[-1])
    return paths


def _rows_by_file(splits) -> dict[str, torch.Tensor]:
    return {f: x[k] for x in (splits.train, splits.val, splits.test) for k, f in enumerate(x.files)}


def _same_batch(batch):
    return batch


# --- options and bad input --------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"size": 4}, "integer >= 8"), ({"size": 32.0}, "integer >= 8"), ({"size": True}, "integer >= 8"),
    ({"color": "cmyk"}, "unknown image color 'cmyk'"), ({"cache": "gpu"}, "unknown image cache 'gpu'"),
])
def test_bad_options_raise_one_line_errors(kwargs, match):
    with pytest.raises(KlvaeError, match=match):
        ImageOptions(**kwargs)


def test_bad_folders_raise_errors_naming_the_folder_and_the_suffixes(tmp_path):
    with pytest.raises(KlvaeError, match="image folder not found"):
        load_image_folder(tmp_path / "nowhere")
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    Image.fromarray(_noise(9, 9, 3, 0)).save(tmp_path / "empty" / ".hidden" / "x.png")
    with pytest.raises(KlvaeError, match=r"empty holds 0 image files \(.png/.jpg/.jpeg/.webp"):
        load_image_folder(tmp_path / "empty")
    _write_plain(tmp_path / "few", 5)
    with pytest.raises(KlvaeError, match="few holds 5 image files .* at least 10"):
        load_image_folder(tmp_path / "few")
    (tmp_path / "junk").mkdir()
    for i in range(12):
        (tmp_path / "junk" / f"{i}.png").write_text("not an image")
    with pytest.raises(KlvaeError, match=r"none of the 12 image files in .*junk can be read"):
        load_image_folder(tmp_path / "junk", log=lambda line: None)
    _write_plain(tmp_path / "junk", 4)
    with pytest.raises(KlvaeError, match=r"holds 4 readable images \(12 skipped\)"):
        load_image_folder(tmp_path / "junk", log=lambda line: None)


def test_is_image_folder_finds_images_at_any_depth(tmp_path):
    assert not is_image_folder(tmp_path / "missing")
    assert not is_image_folder(tmp_path)
    (tmp_path / ".git").mkdir()
    Image.fromarray(_noise(9, 9, 3, 0)).save(tmp_path / ".git" / "x.png")
    (tmp_path / "notes.txt").write_text("x")
    assert not is_image_folder(tmp_path)
    (tmp_path / "deep" / "er").mkdir(parents=True)
    Image.fromarray(_noise(9, 9, 3, 0)).save(tmp_path / "deep" / "er" / "y.JPEG")
    assert is_image_folder(tmp_path) and not is_image_folder(tmp_path / "notes.txt")


# --- values, labels, colour --------------------------------------------------------------------------

@pytest.mark.parametrize("color, mode, channels", [("rgb", "RGB", 3), ("grey", "L", 1), ("auto", "RGB", 3)])
def test_values_match_a_decode_done_here(tmp_path, color, mode, channels):
    _write_mixed(tmp_path)
    splits = load_image_folder(tmp_path, ImageOptions(size=S, color=color), 0.2, 0)
    rows = _rows_by_file(splits)
    assert len(rows) == 14 + WEBP and not splits.skipped
    for f, x in rows.items():
        assert x.shape == (channels, S, S) and x.dtype == torch.float32
        assert torch.equal(x, _reference(f, S, mode)), f
    exact = np.asarray(Image.open(tmp_path / "a" / "exact.png").convert(mode))
    exact = exact[None] if exact.ndim == 2 else exact.transpose(2, 0, 1)
    assert torch.equal(rows[str(tmp_path / "a" / "exact.png")] * 255, torch.from_numpy(exact.copy()).float())


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path):
    _write_plain(tmp_path, 10, "L")
    Image.fromarray(np.full((S, S), 65535, np.uint16)).save(tmp_path / "white16.png")
    Image.fromarray(np.full((S, S), 257 * 100, np.uint16)).save(tmp_path / "grey16.png")
    rows = _rows_by_file(load_image_folder(tmp_path, ImageOptions(size=S)))
    assert torch.equal(rows[str(tmp_path / "white16.png")], torch.ones(1, S, S))
    assert torch.equal(rows[str(tmp_path / "grey16.png")], torch.full((1, S, S), 100 / 255))


def test_exif_orientation_is_applied(tmp_path):
    _write_plain(tmp_path, 10)
    raw = np.zeros((32, 32, 3), np.uint8)
    raw[:16, :, 0] = 255  # top half red, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed after a 90° clockwise turn: the stored top becomes the right side
    Image.fromarray(raw).save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)
    x = _rows_by_file(load_image_folder(tmp_path, ImageOptions(size=S)))[str(tmp_path / "turned.jpg")]
    turned = Image.fromarray(np.ascontiguousarray(np.rot90(raw, k=-1))).resize((S, S), Image.Resampling.BICUBIC)
    expected = torch.from_numpy(np.array(turned)).permute(2, 0, 1).float() / 255
    assert (x[0, :, -4:] > 0.9).all() and (x[0, :, :4] < 0.1).all()
    assert (x - expected).abs().max() < 0.15  # JPEG error near the edge
    assert torch.equal(x, _reference(str(tmp_path / "turned.jpg"), S, "RGB"))


@pytest.mark.parametrize("extra, channels", [(None, 1), ("RGB", 3), ("P", 3)])
def test_auto_color_is_grey_only_when_every_file_is_grey(tmp_path, extra, channels):
    _write_plain(tmp_path, 9, "L")
    Image.fromarray(_noise(20, 20, 1, 0)).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(_noise(20, 20, 1, 1).astype(np.uint16) * 3).save(tmp_path / "deep.png")
    if extra:
        Image.fromarray(_noise(20, 20, 3, 2)).convert(extra).save(tmp_path / "colour.png")
    splits = load_image_folder(tmp_path, ImageOptions(size=S))
    assert splits.train.shape[1] == splits.val.shape[1] == splits.test.shape[1] == channels


def test_nested_sub_folders_are_classes(tmp_path):
    _write_mixed(tmp_path)
    splits = load_image_folder(tmp_path, ImageOptions(size=S), 0.2, 0)
    assert splits.classes == ["a", "b"] and splits.attributes is None
    for x, y in ((splits.train, splits.train_labels), (splits.val, splits.val_labels),
                 (splits.test, splits.test_labels)):
        assert y.dtype == torch.int64 and y.shape == (len(x),)
        assert y.tolist() == [splits.classes.index(Path(f).relative_to(tmp_path).parts[0]) for f in x.files]


@pytest.mark.parametrize("layout", ["top", "one_folder", "mixed"])
def test_no_labels_without_two_first_level_folders(tmp_path, layout):
    if layout == "top":
        _write_plain(tmp_path, 12)
    elif layout == "one_folder":
        _write_plain(tmp_path / "only", 12)
    else:
        for folder, n in ((tmp_path / "a", 6), (tmp_path / "b", 5), (tmp_path, 1)):
            _write_plain(folder, n)
    splits = load_image_folder(tmp_path, ImageOptions(size=S))
    assert splits.classes is None and splits.train_labels is None and splits.test_labels is None


# --- splits -----------------------------------------------------------------------------------------

def test_splits_are_disjoint_cover_the_files_and_keep_a_fixed_test_split(tmp_path):
    paths = _write_plain(tmp_path, 40)
    by_seed = {seed: load_image_folder(tmp_path, ImageOptions(size=S), 0.25, seed) for seed in (0, 1, 2)}
    for s in by_seed.values():
        parts = [set(s.train.files), set(s.val.files), set(s.test.files)]
        assert sum(map(len, parts)) == 40 and set.union(*parts) == {str(p) for p in paths}
        assert (len(s.test), len(s.val), len(s.train)) == (4, 9, 27)
        assert all(x.files == sorted(x.files) for x in (s.train, s.val, s.test))
    assert by_seed[0].test.files == by_seed[1].test.files == by_seed[2].test.files
    perm = np.random.default_rng(TEST_SEED).permutation(40)
    assert by_seed[0].test.files == [str(paths[i]) for i in sorted(perm[:4])]
    assert by_seed[0].val.files != by_seed[1].val.files
    assert load_image_folder(tmp_path, ImageOptions(size=S), 0.25, 1).val.files == by_seed[1].val.files


# --- memory and disk ----------------------------------------------------------------------------------

def test_memory_and_disk_give_identical_tensors(tmp_path):
    _write_mixed(tmp_path)
    mem = load_image_folder(tmp_path, ImageOptions(size=S, cache="memory"))
    disk = load_image_folder(tmp_path, ImageOptions(size=S, cache="disk"))
    assert mem.train.cached and not disk.train.cached
    for a, b in ((mem.train, disk.train), (mem.val, disk.val), (mem.test, disk.test)):
        assert a.files == b.files and torch.equal(a.float(), b.float())
    a, b = mem.train, disk.train
    mask = torch.arange(len(a)) % 2 == 0
    for key in (0, -1, slice(1, 4), [2, 0, 2], torch.tensor([3, 1]), mask, np.int64(2), (slice(None), 0)):
        assert torch.equal(a[key], b[key]), key
    assert torch.equal(b.to(torch.float64), a.float().double())


def test_decoding_in_threads_keeps_the_order_of_the_files(tmp_path, monkeypatch):
    _write_plain(tmp_path, 30)
    one_by_one = load_image_folder(tmp_path, ImageOptions(size=S, cache="memory")).train.float()
    monkeypatch.setattr(image_files, "CHUNK", 2)  # thread-pool tasks of 2 files from 4 files up
    assert torch.equal(load_image_folder(tmp_path, ImageOptions(size=S, cache="memory")).train.float(), one_by_one)
    disk = load_image_folder(tmp_path, ImageOptions(size=S, cache="disk")).train
    assert torch.equal(disk.float(), one_by_one) and torch.equal(disk[5:20], one_by_one[5:20])


def test_image_files_behaves_like_a_tensor(tmp_path):
    _write_plain(tmp_path, 12)
    x = load_image_folder(tmp_path, ImageOptions(size=S, color="rgb")).train
    n = len(x)
    assert x.shape == torch.Size((n, 3, S, S)) and x.size(0) == n and x.size() == x.shape
    assert x.dtype == torch.float32 and x.ndim == x.dim() == 4 and x.is_floating_point()
    assert x[:0].shape == (0, 3, S, S) and x[[]].shape == (0, 3, S, S)
    assert torch.equal(x[-1], x[n - 1]) and len(list(x)) == n
    assert 0 <= float(x.float().min()) and float(x.float().max()) <= 1
    with pytest.raises(IndexError):
        x[n]
    with pytest.raises(IndexError):
        x[torch.ones(n + 1, dtype=torch.bool)]
    with pytest.raises(IndexError):
        x[torch.tensor([0.5])]


def test_cache_auto_keeps_images_in_memory_up_to_the_limit(tmp_path, monkeypatch):
    _write_plain(tmp_path, 12)
    assert load_image_folder(tmp_path, ImageOptions(size=S)).train.cached
    monkeypatch.setattr(images, "CACHE_LIMIT", 12 * 3 * S * S - 1)
    assert not load_image_folder(tmp_path, ImageOptions(size=S)).train.cached


def test_disk_mode_through_dataloader_workers_matches_memory(tmp_path):
    _write_plain(tmp_path, 30)
    mem = load_image_folder(tmp_path, ImageOptions(size=S, cache="memory")).train
    disk = load_image_folder(tmp_path, ImageOptions(size=S, cache="disk")).train
    assert torch.equal(pickle.loads(pickle.dumps(disk))[:], mem[:])
    quiet = ImageFiles(disk.files, 3, S, log=lambda line: None)  # a lambda log becomes stderr in a copy
    assert torch.equal(pickle.loads(pickle.dumps(quiet)).float(), mem.float())
    batches = DataLoader(IndexedTensor(disk), batch_size=5, num_workers=2, collate_fn=_same_batch)
    got = torch.cat(list(batches))
    assert torch.equal(got, mem.float())


# --- unreadable files ---------------------------------------------------------------------------------

def _write_corrupt(root: Path) -> Path:
    """12 good PNGs, a text file named .png, an empty .jpg and a truncated JPEG (returned)."""
    _write_plain(root, 12)
    (root / "text.png").write_text("this is not a picture")
    (root / "empty.jpg").write_bytes(b"")
    Image.fromarray(_noise(64, 64, 3, 5)).save(root / "cut.jpg", quality=95)
    data = (root / "cut.jpg").read_bytes()
    (root / "cut.jpg").write_bytes(data[: len(data) // 2])
    return root / "cut.jpg"


def test_memory_mode_skips_every_unreadable_file_and_logs_it(tmp_path):
    cut = _write_corrupt(tmp_path)
    lines = []
    splits = load_image_folder(tmp_path, ImageOptions(size=S, cache="memory"), log=lines.append)
    assert sum(map(len, (splits.train, splits.val, splits.test))) == 12
    assert len(splits.skipped) == 3 and len(lines) == 3
    names = {Path(line.split(": ")[0]).name for line in splits.skipped}
    assert names == {"text.png", "empty.jpg", "cut.jpg"}
    assert any(str(cut) in line and "truncated" in line for line in lines)
    assert any("text.png: not a readable PNG, JPEG or WebP image" in line for line in lines)
    assert any("empty.jpg: empty file" in line for line in lines)


def test_disk_mode_replaces_a_file_that_fails_later_and_logs_it_once(tmp_path):
    cut = _write_corrupt(tmp_path)
    lines = []
    splits = load_image_folder(tmp_path, ImageOptions(size=S, cache="disk"), log=lines.append)
    assert len(splits.skipped) == 2 and len(lines) == 2  # the truncated file passes the header check
    x = next(x for x in (splits.train, splits.val, splits.test) if str(cut) in x.files)
    i = x.files.index(str(cut))
    nxt = (i + 1) % len(x)
    assert torch.equal(x[i], _reference(x.files[nxt], S, "RGB"))
    x[i], x[[i, i]], x.float()
    assert len(lines) == 3 and str(cut) in lines[2]


def test_a_file_truncated_after_load_is_replaced_not_a_crash(tmp_path):
    _write_plain(tmp_path, 20)
    lines = []
    train = load_image_folder(tmp_path, ImageOptions(size=S, cache="disk"), log=lines.append).train
    victim = Path(train.files[3])
    victim.write_bytes(victim.read_bytes()[:60])
    got = torch.cat(list(DataLoader(IndexedTensor(train), batch_size=4, collate_fn=_same_batch)))
    assert got.shape == train.shape and torch.equal(got[3], got[4])
    assert len(lines) == 1 and str(victim) in lines[0]
    victim.unlink()
    os.remove(train.files[4])
    assert torch.equal(train[3], train[5]) and len(lines) == 2


# --- CelebA -------------------------------------------------------------------------------------------

NAMES = [f"Attr_{k}" for k in range(40)]
PARTS = [0] * 20 + [1] * 5 + [2] * 5


def _write_celeba(root: Path) -> np.ndarray:
    """30 aligned JPEGs (178 x 218) with partition and attribute files; returns the (30, 40) {-1, 1} table."""
    (root / IMAGES_DIR).mkdir(parents=True)
    table = np.where(np.random.default_rng(0).random((30, 40)) < 0.5, -1, 1)
    for i in range(30):
        Image.fromarray(_smooth(218, 178, i)).save(root / IMAGES_DIR / f"{i + 1:06d}.jpg", quality=90)
    (root / PARTITION_FILE).write_text("".join(f"{i + 1:06d}.jpg {p}\n" for i, p in enumerate(PARTS)))
    rows = [f"{i + 1:06d}.jpg " + " ".join(f"{v:2d}" for v in table[i]) for i in range(30)]
    (root / ATTR_FILE).write_text("30\n" + " ".join(NAMES) + " \n" + "\n".join(rows) + "\n")
    return table


def test_celeba_has_the_official_splits_and_attributes(tmp_path):
    table = _write_celeba(tmp_path)
    assert is_celeba(tmp_path) and not is_celeba(tmp_path / IMAGES_DIR)
    splits = load_celeba(tmp_path, ImageOptions(size=S))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (20, 5, 5)
    assert splits.attributes == NAMES and splits.classes is None and splits.train.shape[1] == 3
    for x, y, rows in ((splits.train, splits.train_labels, range(20)), (splits.val, splits.val_labels, range(20, 25)),
                       (splits.test, splits.test_labels, range(25, 30))):
        assert [Path(f).name for f in x.files] == [f"{i + 1:06d}.jpg" for i in rows]
        assert y.dtype == torch.int64 and torch.equal(y, torch.from_numpy((table[list(rows)] == 1).astype(np.int64)))
    assert torch.equal(splits.val[2], _reference(splits.val.files[2], S, "RGB"))


def test_celeba_skips_an_unreadable_image(tmp_path):
    table = _write_celeba(tmp_path)
    (tmp_path / IMAGES_DIR / "000022.jpg").write_text("broken")
    lines = []
    splits = load_celeba(tmp_path, ImageOptions(size=S), log=lines.append)
    assert len(splits.val) == 4 and len(splits.skipped) == 1 and "000022.jpg" in lines[0]
    assert torch.equal(splits.val_labels, torch.from_numpy((table[[20, 22, 23, 24]] == 1).astype(np.int64)))


def _edit(path: Path, line: int, new: str | None) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1: line] = [] if new is None else [new]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("damage, match", [
    (lambda r: (r / ATTR_FILE).unlink(), r"not a complete CelebA folder \(missing list_attr_celeba.txt\).*mmlab"),
    (lambda r: (r / PARTITION_FILE).unlink(), r"missing list_eval_partition.txt.*Align&Cropped Images"),
    (lambda r: _edit(r / ATTR_FILE, 1, "31"), "line 1 gives 31 images but 30 rows follow"),
    (lambda r: _edit(r / ATTR_FILE, 1, "thirty"), "line 1 is 'thirty', not the number of images"),
    (lambda r: _edit(r / ATTR_FILE, 5, "000003.jpg 1 -1"), "line 5 has 2 values where 40"),
    (lambda r: _edit(r / ATTR_FILE, 6, "000004.jpg" + " 1" * 39 + " 0"), "line 6 has '0' for Attr_39"),
    (lambda r: _edit(r / PARTITION_FILE, 7, "000007.jpg 3"), "line 7 has partition '3'"),
    (lambda r: _edit(r / PARTITION_FILE, 8, "000008.jpg"), "line 8 has 1 values where 2"),
    (lambda r: (r / IMAGES_DIR / "000009.jpg").unlink(), r"1 of the 30 images .* missing .* \(e.g. 000009.jpg\)"),
    (lambda r: _edit(r / PARTITION_FILE, 9, "000099.jpg 0"), "000099.jpg is listed .* but has no row"),
    (lambda r: _edit(r / PARTITION_FILE, 26, "000026.jpg 0"), None),
])
def test_celeba_malformed_files_raise_errors_naming_the_file_and_line(tmp_path, damage, match):
    _write_celeba(tmp_path)
    if match is None:  # moving one test image to train is still a valid partition
        damage(tmp_path)
        assert len(load_celeba(tmp_path, ImageOptions(size=S)).test) == 4
        return
    damage(tmp_path)
    with pytest.raises(KlvaeError, match=match):
        load_celeba(tmp_path, ImageOptions(size=S))


def test_celeba_without_a_split_or_images_says_how_to_fix_it(tmp_path):
    _write_celeba(tmp_path)
    (tmp_path / PARTITION_FILE).write_text("".join(f"{i + 1:06d}.jpg {min(p, 1)}\n" for i, p in enumerate(PARTS)))
    with pytest.raises(KlvaeError, match="lists no test images"):
        load_celeba(tmp_path, ImageOptions(size=S))
    (tmp_path / PARTITION_FILE).write_text("".join(f"{i + 1:06d}.jpg {p}\n" for i, p in enumerate(PARTS)))
    for f in (tmp_path / IMAGES_DIR).iterdir():
        f.write_text("x")
    with pytest.raises(KlvaeError, match="none of the 30 CelebA images"):
        load_celeba(tmp_path, ImageOptions(size=S), log=lambda line: None)
