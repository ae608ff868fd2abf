"""Runs side by side: one summary per run directory, a table of them, and their KL curves."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from klvae.config import TrainConfig
from klvae.diagnostics import collapse_verdict
from klvae.errors import KlvaeError
from klvae.run import METRICS, RunDir, atomic_write

# (summary key, table header); figures in nats per data point
COLUMNS = (("run", "run"), ("data", "data"), ("latent", "latent"), ("beta", "beta"),
           ("kl_schedule", "kl_schedule"), ("free_bits", "free_bits"), ("epochs", "epochs"),
           ("best_val_elbo", "best val ELBO"), ("last_val_kl", "last val KL"), ("active_units", "active"),
           ("val_mi", "val MI"), ("test_nll", "test NLL"), ("collapsed", "collapsed"))
NUMBER_FORMAT = {"best_val_elbo": ".2f", "last_val_kl": ".3f", "val_mi": ".3f", "test_nll": ".2f"}


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def metrics_of(run_dir: Path) -> list[dict[str, float]]:
    """The rows of metrics.csv; a damaged file is a one-line error."""
    return RunDir(run_dir).metrics()


def final_verdict(config: TrainConfig, rows: list[dict[str, float]]) -> tuple[bool, str] | None:
    """``collapse_verdict`` of the last epoch's val_kl and active_units with the run's thresholds;
    None when the last epoch does not record both."""
    kl = _finite(rows[-1].get("val_kl")) if rows else None
    active = _finite(rows[-1].get("active_units")) if rows else None
    if kl is None or active is None:
        return None
    return collapse_verdict(kl, int(active), config.model.latent_dim, config.collapse.collapse_kl, config.collapse.collapse_units)


def read_run(run: str | Path) -> tuple[Path, TrainConfig, list[dict[str, float]]]:
    """(run directory, its config, its metrics rows); a one-line error unless it has both."""
    run_dir = Path(run)
    if not run_dir.is_dir():
        raise KlvaeError(f"run directory {run_dir} does not exist; pass the --out directory of a `klvae train` run")
    config = RunDir(run_dir).config()
    rows = metrics_of(run_dir)
    if not rows:
        raise KlvaeError(f"{run_dir} has no metrics ({METRICS} missing or empty); let `klvae train --out {run_dir}` "
                         "finish an epoch, or leave the run out")
    return run_dir, config, rows


def iwae_test_nll(run_dir: Path) -> float | None:
    """IWAE NLL (nats) of eval_test.json, None without one."""
    result = RunDir(run_dir).results("eval_test").get("eval_test")
    if result is None:
        return None
    if not isinstance(result, dict):
        raise KlvaeError(f"{run_dir / 'eval_test.json'} is not a JSON result; rerun `klvae evaluate {run_dir}`")
    return _finite(result.get("nll_iwae"))


def summarise(name: str, run_dir: Path, config: TrainConfig, rows: list[dict[str, float]]) -> dict[str, Any]:
    """One run as a flat dict (keys of COLUMNS plus path, latent_dim); None where not recorded."""
    last = rows[-1]
    elbos = [v for v in (_finite(r.get("val_elbo")) for r in rows) if v is not None]
    verdict = final_verdict(config, rows)
    collapsed = verdict[0] if verdict else (bool(last["collapsed"]) if _finite(last.get("collapsed")) is not None else None)
    active = _finite(last.get("active_units"))
    return {"run": name, "path": str(run_dir), "data": config.data.name, "latent": config.model.latent,
            "latent_dim": config.model.latent_dim, "beta": config.objective.beta, "kl_schedule": config.schedule.kl_schedule,
            "free_bits": config.objective.free_bits, "epochs": int(last.get("epoch", len(rows))),
            "best_val_elbo": max(elbos) if elbos else None, "last_val_kl": _finite(last.get("val_kl")),
            "active_units": None if active is None else int(active), "val_mi": _finite(last.get("val_mi")),
            "test_nll": iwae_test_nll(run_dir), "collapsed": collapsed}


def _names(dirs: Sequence[Path]) -> list[str]:
    """Directory names, or the paths given where two runs share a name."""
    names = [d.name or str(d) for d in dirs]
    return [n if names.count(n) == 1 else str(d) for n, d in zip(names, dirs)]


def _read_all(runs: Sequence[str | Path]) -> list[tuple[str, Path, TrainConfig, list[dict[str, float]]]]:
    if not runs:
        raise KlvaeError("compare needs at least one run directory")
    read = [read_run(r) for r in runs]
    return [(name, *run) for name, run in zip(_names([r[0] for r in read]), read)]


def compare_runs(runs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One summary per run directory (see ``summarise``), in the order given."""
    return [summarise(*run) for run in _read_all(runs)]


def _cell(key: str, summary: dict[str, Any]) -> str:
    value = summary[key]
    if key == "active_units":
        return "-" if value is None else f"{value}/{summary['latent_dim']}"
    if key == "collapsed":
        return {True: "yes", False: "no"}.get(value, "-")
    if value is None:
        return "-"
    if key in NUMBER_FORMAT:
        return format(value, NUMBER_FORMAT[key])
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_table(summaries: list[dict[str, Any]]) -> str:
    """The summaries as an aligned text table, numbers right-aligned, with a line on units."""
    table = [[header for _, header in COLUMNS]] + [[_cell(key, s) for key, _ in COLUMNS] for s in summaries]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    numeric = {"beta", "free_bits", "epochs", "active_units", *NUMBER_FORMAT}
    lines = ["  ".join(c.rjust(w) if key in numeric else c.ljust(w) for c, w, (key, _) in zip(row, widths, COLUMNS)).rstrip()
             for row in table]
    return "\n".join(lines + ["ELBO, KL, MI and NLL in nats per data point; test NLL: IWAE bound of eval_test.json"])


def save_compare_plot(path: str | Path, runs: Sequence[str | Path]) -> Path:
    """A PNG of validation KL and KL weight per epoch, one line per run."""
    from klvae.report.plots import compare_figure, png_bytes

    curves = {name: rows for name, _, _, rows in _read_all(runs)}
    return atomic_write(path, png_bytes(compare_figure(curves)))
