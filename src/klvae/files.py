"""Atomic file writes: every file goes to a temporary name in the same directory and is renamed
into place, so an interrupted write never leaves a truncated file behind."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from klvae.errors import KlvaeError

UMASK = os.umask(0o022)
os.umask(UMASK)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    if path.is_dir():
        raise KlvaeError(f"{path} is a directory; give a file name to write, e.g. {path / 'out.png'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save(path: str | Path, writer: Callable[[io.BytesIO], Any]) -> Path:
    """Let ``writer`` fill a buffer (e.g. ``fig.savefig``), then write it atomically."""
    buf = io.BytesIO()
    writer(buf)
    return atomic_write(path, buf.getvalue())
