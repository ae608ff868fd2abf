"""Helpers of the command-line tests: run `klvae` in this process or as a real one, check the
one-line error contract, read the files a run directory holds."""
from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from klvae.cli import main

# a small network trained without a progress bar: quick, and enough for every file of a run
QUICK = ("--hidden", "64", "--no-progress")


@dataclass
class Result:
    """What `klvae ARGV` did: exit code, stdout, stderr."""

    rc: int | str | None
    out: str
    err: str


def _args(argv: tuple) -> list[str]:
    return [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in argv]


def cli(*argv: str | int | float | os.PathLike) -> Result:
    """`klvae ARGV` run in this process through ``klvae.cli.main``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(_args(argv))
        except SystemExit as stop:  # argparse ends the process itself
            rc = stop.code
    return Result(rc, out.getvalue(), err.getvalue())


def klvae_command() -> list[str]:
    """The installed `klvae` script of this interpreter's environment, else `python -m klvae.cli`."""
    script = shutil.which("klvae", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "klvae.cli"]


def klvae_process(*argv: str | int | float | os.PathLike, cwd: Path) -> Result:
    """`klvae ARGV` as a real process."""
    done = subprocess.run([*klvae_command(), *_args(argv)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    return Result(done.returncode, done.stdout, done.stderr)


def assert_user_error(result: Result, *words: str) -> str:
    """Exit code 2, exactly one line on stderr naming the problem (all ``words``, any case), no
    traceback anywhere; returns that line."""
    text = result.out + result.err
    assert "Traceback" not in text, text
    assert result.rc == 2, f"exit code {result.rc!r}; stderr: {result.err!r}"
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {result.err!r}"
    line = lines[0]
    assert line.startswith("klvae: error: "), line
    for word in words:
        assert word.lower() in line.lower(), f"{word!r} not named in {line!r}"
    return line


def read_png(path: Path) -> np.ndarray:
    """The pixels of a PNG file, (H, W) or (H, W, C); fails unless it is a non-empty PNG image."""
    with Image.open(path) as img:
        assert img.format == "PNG", f"{path} is {img.format}, not PNG"
        pixels = np.asarray(img.convert("RGBA"))
    assert pixels.shape[0] > 0 and pixels.shape[1] > 0, f"{path} is an empty image"
    return pixels


def metrics_table(run: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows of a run's metrics.csv, as the text it holds."""
    with (run / "metrics.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
