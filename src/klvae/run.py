"""The run directory, the contract every command reads:

config.yaml, model.safetensors + model.json, metrics.csv (per epoch), steps.csv (per step),
tensorboard/, checkpoints/, pictures, results.
Every file is written to a temporary name in the same directory and renamed into place, so an
interrupted write never leaves a truncated file behind. Loading never unpickles.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from safetensors.torch import load_file, save

from klvae.config import TrainConfig
from klvae.errors import KlvaeError
from klvae.models import ModelSpec, build_model

CONFIG, WEIGHTS, SPEC, METRICS, STEPS = "config.yaml", "model.safetensors", "model.json", "metrics.csv", "steps.csv"
INTEGER_COLUMNS = ("epoch", "step", "active_units", "skipped_steps", "collapsed")
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


def save_config(run_dir: Path, config: TrainConfig) -> None:
    atomic_write(run_dir / CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False))


def save_spec(run_dir: Path, spec: ModelSpec) -> None:
    atomic_write(run_dir / SPEC, json.dumps(spec.to_dict(), indent=2))


def save_model(run_dir: Path, model: torch.nn.Module, spec: ModelSpec) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(run_dir / WEIGHTS, save(state))
    save_spec(run_dir, spec)


def write_metrics(run_dir: Path, rows: list[dict[str, Any]], name: str = METRICS) -> None:
    """Rewrite metrics.csv (one row per epoch) or ``name`` (e.g. steps.csv) atomically; columns are
    the union in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(run_dir / name, buf.getvalue())


def read_metrics(run_dir: str | Path, name: str = METRICS) -> list[dict[str, float]]:
    """The rows of metrics.csv (or ``name``) as numbers; a missing file is no rows."""
    path = Path(run_dir) / name
    if not path.is_file():
        return []
    with path.open() as fh:
        rows = [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()} for row in csv.DictReader(fh)]
    for row in rows:
        row.update({k: int(row[k]) for k in INTEGER_COLUMNS if k in row and row[k] == row[k]})
    return rows


def check_run_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KlvaeError(f"run directory {run_dir} does not exist; pass the --out directory of a `klvae train` run")
    missing = [name for name in (CONFIG, WEIGHTS, SPEC) if not (run_dir / name).is_file()]
    if missing:
        raise KlvaeError(
            f"{run_dir} is not a finished klvae run (missing {', '.join(missing)}); train into it with `klvae train --out {run_dir}`"
        )
    return run_dir


def load_config(run_dir: str | Path) -> TrainConfig:
    run_dir = check_run_dir(run_dir)
    return TrainConfig.from_yaml(run_dir / CONFIG)


def load(run_dir: str | Path, device: str | torch.device = "cpu"):
    """The trained model of a run directory, in eval mode (weights from safetensors, no pickle)."""
    run_dir = check_run_dir(run_dir)
    try:
        spec = ModelSpec.from_dict(json.loads((run_dir / SPEC).read_text()))
        model = build_model(spec)
        state = load_file(str(run_dir / WEIGHTS), device=str(device))
        model.load_state_dict(state)
    except Exception as err:  # any damage to the files: one line, not a traceback
        raise KlvaeError(
            f"cannot load the model of {run_dir} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); the files are damaged, retrain the run"
        ) from None
    return model.to(device).eval()
