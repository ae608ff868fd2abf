"""CelebA in its official layout: the aligned-and-cropped images with their 40 binary attributes and the
official train / val / test partition."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from klvae.data.images import ImageOptions, ImageSplits, log_stderr, build_splits, check_headers
from klvae.errors import KlvaeError

CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
IMAGES_DIR = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"  # "000001.jpg 0" lines: 0 train, 1 val, 2 test
ATTR_FILE = "list_attr_celeba.txt"  # the count, the attribute names, then "000001.jpg -1 1 ..." rows
SPLITS = ("train", "val", "test")  # in the order of the partition values 0, 1, 2
LAYOUT = f"<root>/{IMAGES_DIR}/000001.jpg ..., <root>/{PARTITION_FILE}, <root>/{ATTR_FILE}"
_SIGNS = frozenset({"-1", "1"})
GET = (f"download 'Align&Cropped Images' ({IMAGES_DIR}.zip), Eval/{PARTITION_FILE} and Anno/{ATTR_FILE} "
       f"from {CELEBA_URL} and lay them out as {LAYOUT}")


def is_celeba(path: str | os.PathLike) -> bool:
    """Whether path holds the CelebA layout: an img_align_celeba/ folder and list_eval_partition.txt."""
    path = Path(path).expanduser()
    return (path / IMAGES_DIR).is_dir() and (path / PARTITION_FILE).is_file()


def load_celeba(root: str | os.PathLike, options: ImageOptions = ImageOptions(),
                log: Callable[[str], None] = log_stderr) -> ImageSplits:
    """CelebA's official splits as images (C, S, S) in [0, 1], with labels the (N, 40) int64 {0, 1}
    attributes (ImageSplits.attributes names the columns). A listed image that is missing from the
    folder is an error (an incomplete extraction); a file that cannot be decoded is skipped and logged."""
    if not isinstance(options, ImageOptions):
        raise KlvaeError(f"options must be an ImageOptions, got {type(options).__name__}")
    root = Path(root).expanduser()
    missing = [p for p in (IMAGES_DIR + "/", PARTITION_FILE, ATTR_FILE) if not (root / p.rstrip("/")).exists()]
    if missing:
        raise KlvaeError(f"{root} is not a complete CelebA folder (missing {', '.join(missing)}); {GET}")
    partition = read_partition(root / PARTITION_FILE)
    names, table, row_of = read_attributes(root / ATTR_FILE)
    rows = np.array([_attribute_row(root, name, row_of) for name, _ in partition], dtype=np.int64)
    listed = [[i for i, (_, v) in enumerate(partition) if v == value] for value in range(len(SPLITS))]
    for value, split in enumerate(SPLITS):
        if not listed[value]:
            raise KlvaeError(f"{root / PARTITION_FILE} lists no {split} images (value {value}); "
                             f"restore the official {PARTITION_FILE} from {CELEBA_URL}")
    _check_images(root, partition)
    paths = [str(root / IMAGES_DIR / name) for name, _ in partition]
    skipped: list[str] = []
    modes = check_headers(paths, log, skipped)
    if all(m is None for m in modes):
        raise KlvaeError(f"none of the {len(paths)} CelebA images in {root / IMAGES_DIR} can be read "
                         f"(e.g. {skipped[0]}); extract {IMAGES_DIR}.zip again")
    parts = {}
    for split, rows_of_split in zip(SPLITS, listed):
        sel = [i for i in rows_of_split if modes[i] is not None]
        parts[split] = ([paths[i] for i in sel], table[rows[sel]])
    return build_splits(str(root), parts, [m for m in modes if m is not None], options, log, skipped,
                        attributes=names)


def read_partition(path: Path) -> list[tuple[str, int]]:
    """(image name, 0 train | 1 val | 2 test) for each line of list_eval_partition.txt."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise KlvaeError(f"{path} line {lineno} has {len(fields)} values where 2 ('<image> <0|1|2>') "
                                 f"are expected; restore the official {PARTITION_FILE} from {CELEBA_URL}")
            if fields[1] not in ("0", "1", "2"):
                raise KlvaeError(f"{path} line {lineno} has partition {fields[1]!r}, not 0 (train), 1 (val) or "
                                 f"2 (test); restore the official {PARTITION_FILE} from {CELEBA_URL}")
            out.append((fields[0], int(fields[1])))
    if not out:
        raise KlvaeError(f"{path} lists no images; restore the official {PARTITION_FILE} from {CELEBA_URL}")
    return out


def read_attributes(path: Path) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """list_attr_celeba.txt as (the F attribute names, (M, F) int64 {0, 1} table, image name -> row)."""
    fix = f"restore the official {ATTR_FILE} from {CELEBA_URL}"
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    count = lines[0].strip() if lines else ""
    if not count.isdigit():
        raise KlvaeError(f"{path} line 1 is {count[:40]!r}, not the number of images; {fix}")
    names = lines[1].split() if len(lines) > 1 else []
    if not names:
        raise KlvaeError(f"{path} line 2 should name the attributes and is empty; {fix}")
    images, values = [], []
    for lineno, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1:
            raise KlvaeError(f"{path} line {lineno} has {len(fields) - 1} values where {len(names)} (one per "
                             f"attribute) are expected; {fix}")
        if not _SIGNS.issuperset(fields[1:]):
            c = next(c for c, v in enumerate(fields[1:]) if v not in _SIGNS)
            raise KlvaeError(f"{path} line {lineno} has {fields[c + 1]!r} for {names[c]}; attribute values must "
                             f"be -1 or 1; {fix}")
        images.append(fields[0])
        values.append([v == "1" for v in fields[1:]])
    if len(images) != int(count):
        raise KlvaeError(f"{path} line 1 gives {int(count)} images but {len(images)} rows follow; {fix}")
    table = np.array(values, dtype=np.int64).reshape(len(images), len(names))
    return names, table, {name: k for k, name in enumerate(images)}


def _check_images(root: Path, partition: list[tuple[str, int]]) -> None:
    """KlvaeError when an image listed in the partition is absent from img_align_celeba/."""
    present = set(os.listdir(root / IMAGES_DIR))
    missing = [name for name, _ in partition if name not in present]
    if missing:
        raise KlvaeError(f"{len(missing)} of the {len(partition)} images listed in {root / PARTITION_FILE} are "
                         f"missing from {root / IMAGES_DIR} (e.g. {missing[0]}); extract {IMAGES_DIR}.zip "
                         f"again ({CELEBA_URL}, 'Align&Cropped Images')")


def _attribute_row(root: Path, name: str, row_of: dict[str, int]) -> int:
    if name not in row_of:
        raise KlvaeError(f"{name} is listed in {root / PARTITION_FILE} but has no row in {root / ATTR_FILE}; "
                         f"restore the official files from {CELEBA_URL}")
    return row_of[name]
