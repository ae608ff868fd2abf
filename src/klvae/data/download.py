"""Download of the IDX data sets from their canonical mirrors, checked by md5."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from klvae.errors import KlvaeError

IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
MD5 = {  # of the canonical .gz files
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
TIMEOUT_S = 60.0


def download_idx(name: str, data_dir: str | os.PathLike) -> Path:
    """Download the 4 IDX .gz files of name ("mnist" or "fashion-mnist") to data_dir/name.

    Files already there (compressed or not) are kept. Each download is checked against its
    canonical md5 and written atomically. Returns the folder.
    """
    if name not in MIRRORS:
        raise KlvaeError(f"no download for {name!r}; choose one of: {', '.join(MIRRORS)}")
    folder = Path(data_dir).expanduser() / name
    folder.mkdir(parents=True, exist_ok=True)
    for stem in IDX_STEMS.values():
        if (folder / stem).is_file() or (folder / f"{stem}.gz").is_file():
            continue
        filename = f"{stem}.gz"
        fetch(MIRRORS[name] + filename, folder / filename, MD5[name][filename])
    return folder


def fetch(url: str, dest: Path, md5: str) -> None:
    """Download url to dest through a temporary file, replacing dest only if the md5 matches."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urlopen(url, timeout=TIMEOUT_S) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != md5:
            raise KlvaeError(
                f"download of {url} has md5 {digest.hexdigest()}, expected {md5}; "
                f"try again, or put the file in {dest.parent} by hand"
            )
        os.replace(tmp, dest)
    except (URLError, OSError) as e:
        raise KlvaeError(
            f"could not download {url} ({e}); check the network, or put the file in "
            f"{dest.parent} by hand"
        ) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
