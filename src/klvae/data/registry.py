"""The data set registry (``DATASETS``, ``klvae.register_dataset``) and `load_dataset`, the one
entry point of klvae.data. An entry's builder is a :class:`~klvae.data.splits.Source`: its
``load(data_dir, download)`` returns the raw splits; capability ``default_binarize``."""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path

from klvae.data import arm, binarized, colour_shapes, digits, dsprites, frey, idx, lfw
from klvae.data.dataset import BINARIZE_MODES, Dataset, make_dataset
from klvae.data.files import SUFFIXES, load_file
from klvae.data.images import ImageOptions
from klvae.data.photos import CELEBA, ImageSource, folder_source, load_images
from klvae.data.splits import Source
from klvae.data.tokens import SOURCES as TEXT_SOURCES, TextOptions, TextSource, file_source, load_tokens
from klvae.errors import KlvaeError
from klvae.registry import Registry

DATASETS = Registry("dataset", "--data")
for _source in (digits.SOURCE, idx.MNIST, idx.FASHION_MNIST, binarized.SOURCE, frey.SOURCE, arm.PENDULUM, arm.ARM,
                dsprites.DSPRITES, dsprites.GENERATED, colour_shapes.SOURCE, lfw.SOURCE, lfw.NONFACES):
    DATASETS.register(_source.name, _source.description, _source, default_binarize=_source.default_binarize,
                      kind="arrays")
for _text in TEXT_SOURCES.values():
    DATASETS.register(_text.name, _text.description, _text, default_binarize="none", kind="tokens")
DATASETS.register(CELEBA.name, CELEBA.description, CELEBA, default_binarize="none", kind="images")


def register_dataset(source: Source | TextSource | ImageSource, replace: bool = False) -> Source | TextSource | ImageSource:
    """Add a data set: a Source (``source.load(data_dir, download)`` returns its RawSplits), a
    TextSource (``source.read(data_dir, options)`` returns its TextSplits) or an ImageSource
    (``source.read(data_dir, options, val_fraction, seed, log)`` returns its ImageSplits)."""
    kinds = {TextSource: "tokens", ImageSource: "images"}
    if type(source) in kinds:
        DATASETS.register(source.name, source.description, source, replace=replace, default_binarize="none",
                          kind=kinds[type(source)])
        return source
    if not isinstance(source, Source):
        raise KlvaeError(f"a dataset is registered as a klvae.data.splits.Source, klvae.data.tokens.TextSource or "
                         f"klvae.data.photos.ImageSource; got {type(source).__name__}")
    DATASETS.register(source.name, source.description, source, replace=replace,
                      default_binarize=source.default_binarize, kind="arrays")
    return source
FILE_DEFAULT_BINARIZE = "none"
DATA_ENV = "KLVAE_DATA"
DEFAULT_DATA_DIR = "data"


def list_datasets() -> list[tuple[str, str]]:
    """(name, one-line description) of every registered data set, for `klvae datasets`.

    load_dataset also takes a path to a .npy, .npz or .csv file, which is not listed here.
    """
    return [(e.name, e.description) for e in DATASETS.entries()]


def data_kind(name: str | os.PathLike) -> str:
    """What a data set holds, from its name alone: ``tokens`` (a text corpus, a .txt file, a text
    .csv, a Penn Treebank folder) or ``arrays`` (images too)."""
    key = os.fspath(name).strip().lower().replace("_", "-")
    if key in DATASETS:
        return "tokens" if DATASETS[key].get("kind") == "tokens" else "arrays"
    return "tokens" if file_source(os.fspath(name)) is not None else "arrays"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: data_dir if given, else $KLVAE_DATA, else ./data."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV, "")
    return Path(env).expanduser() if env else Path(DEFAULT_DATA_DIR)


def load_dataset(
    name: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    binarize: str = "auto",
    val_fraction: float = 0.1,
    seed: int = 0,
    download: bool = False,
    text_options: TextOptions | None = None,
    vocab=None,
    image_options: ImageOptions | None = None,
) -> Dataset:
    """Load a registered data set or a user file into memory, split and binarised.

    name: a name from `list_datasets()`, a path to a .npy / .npz / .csv file, or a folder of
    images (PNG / JPEG / WebP, sub-folders as classes; or CelebA's official layout).
    binarize: "auto" (the data set's default), "dynamic", "static" or "none".
    val_fraction: in (0, 0.5], the part of train held out as val, chosen with seed
    (ignored where the data set has an official validation split).
    download: fetch missing MNIST / Fashion-MNIST files from their canonical mirrors.
    Data already in {0, 1} resolves to binarize="none" with binary=True.
    text_options: how a text or SMILES corpus (or a .txt / text .csv file, a PTB folder) becomes token
    rows (a TokenDataset); vocab: a trained run's vocabulary to encode them with.
    image_options: how image files become tensors (size, colour, held in memory or read from disk).
    Raises KlvaeError for a bad option, an unknown name, or a missing or invalid file.
    """
    _check_options(binarize, val_fraction, seed)
    text = os.fspath(name)
    key = text.strip().lower().replace("_", "-")
    if key in DATASETS:
        text_source = DATASETS[key].builder if DATASETS[key].get("kind") == "tokens" else None
    else:
        text_source = file_source(text)
    image_source = DATASETS[key].builder if key in DATASETS and DATASETS[key].get("kind") == "images" else None
    if image_source is None and text_source is None:
        image_source = folder_source(text)
    if image_source is not None:
        return load_images(image_source, resolve_data_dir(data_dir), image_options, val_fraction, seed)
    if text_source is not None:
        return load_tokens(text_source, resolve_data_dir(data_dir), text_options or TextOptions(), val_fraction,
                           seed, vocab)
    if key in DATASETS:
        source = DATASETS[key].builder
        raw = source.load(resolve_data_dir(data_dir), download)
        return make_dataset(key, raw, binarize, source.default_binarize, val_fraction, seed)
    if Path(text).suffix.lower() in SUFFIXES or Path(text).expanduser().is_file():
        raw = load_file(text)
        return make_dataset(text, raw, binarize, FILE_DEFAULT_BINARIZE, val_fraction, seed)
    raise KlvaeError(_unknown_message(text, key))


def _unknown_message(text: str, key: str) -> str:
    close = difflib.get_close_matches(key, DATASETS.names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"unknown dataset {text!r}{hint}; choose one of: {', '.join(DATASETS)}, a "
        f"{'/'.join(SUFFIXES)} file path or a folder of images (see `klvae datasets`)"
    )


def _check_options(binarize: str, val_fraction: float, seed: int) -> None:
    if binarize not in BINARIZE_MODES:
        raise KlvaeError(
            f"unknown binarize mode {binarize!r}; choose one of: {', '.join(BINARIZE_MODES)}"
        )
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not math.isfinite(val_fraction)
        or not 0 < val_fraction <= 0.5
    ):
        raise KlvaeError(f"val_fraction must be in (0, 0.5], got {val_fraction!r}; e.g. 0.1")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise KlvaeError(f"seed must be a non-negative integer, got {seed!r}")
