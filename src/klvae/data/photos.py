"""Photographs as data sets: a folder of image files, or CelebA in its official layout, read
through :mod:`klvae.data.images` and :mod:`klvae.data.celeba` into a :class:`Dataset` whose splits
are :class:`~klvae.data.images.ImageFiles` (8-bit pixels as float32 in [0, 1], held in memory as
uint8 or read from disk on indexing)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from klvae.data.celeba import is_celeba, load_celeba
from klvae.data.dataset import Dataset
from klvae.data.images import ImageOptions, ImageSplits, is_image_folder, load_image_folder

CELEBA_FOLDER = "celeba"


def _say(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass(frozen=True)
class ImageSource:
    """A registered image data set: ``read(data_dir, options, val_fraction, seed, log)`` gives its
    ImageSplits (``log`` takes one line per file skipped)."""

    name: str
    description: str
    read: Callable[..., ImageSplits]


CELEBA = ImageSource(
    "celeba", f"CelebA's aligned faces (official layout under <data dir>/{CELEBA_FOLDER}: img_align_celeba/, "
    "list_eval_partition.txt, list_attr_celeba.txt); its split, 40 attributes as labels",
    lambda data_dir, options, val_fraction, seed, log: load_celeba(Path(data_dir) / CELEBA_FOLDER, options, log=log))


def folder_source(path: str) -> ImageSource | None:
    """The source of a folder of images (CelebA's layout, or image files in any sub-folders);
    None when ``path`` is not such a folder."""
    p = Path(path).expanduser()
    if not p.is_dir():
        return None
    if is_celeba(p):
        return ImageSource(str(p), "CelebA", lambda d, o, f, s, log: load_celeba(p, o, log=log))
    if is_image_folder(p):
        return ImageSource(str(p), "image folder", lambda d, o, f, s, log: load_image_folder(p, o, f, s, log=log))
    return None


def load_images(source: ImageSource, data_dir: Path, options: ImageOptions | None, val_fraction: float, seed: int,
                log: Callable[[str], None] = _say) -> Dataset:
    """The Dataset of an image source: its ImageFiles splits, never binarised."""
    splits = source.read(data_dir, options or ImageOptions(), val_fraction, seed, log)
    if splits.skipped:
        log(f"{source.name}: {len(splits.skipped)} unreadable file(s) skipped")
    return Dataset(name=source.name, train=splits.train, val=splits.val, test=splits.test,
                   train_labels=splits.train_labels, val_labels=splits.val_labels, test_labels=splits.test_labels,
                   binarize="none", binary=False, attributes=splits.attributes)
