"""The run directory, the contract every command reads, and :class:`RunDir`, its one owner:

config.yaml, model.safetensors + model.json, vocab.json (text data: the tokenizer, the
vocabulary, the label names), metrics.csv (per epoch), steps.csv (per step), tensorboard/,
checkpoints/, pictures (*.png) or texts (*.txt), results (eval_<split>.json, disentanglement.json),
report.html. Every file is written atomically (klvae.files). A run directory is data: loading
never unpickles and never imports code it names.
"""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save

from klvae.config import TrainConfig
from klvae.data.properties import PropertyBins
from klvae.data.text import TOKENIZERS, Vocabulary
from klvae.data.tokens import Vocab
from klvae.errors import KlvaeError
from klvae.files import atomic_save, atomic_write  # noqa: F401  (re-exported: the writers of a run's files)
from klvae.models import build_model, model_config
from klvae.samplers import SAMPLERS
from klvae.samplers.stored import FittedSampler

CONFIG, WEIGHTS, SPEC, METRICS, STEPS = "config.yaml", "model.safetensors", "model.json", "metrics.csv", "steps.csv"
CHECKPOINTS, LAST_CHECKPOINT, VOCAB = "checkpoints", "last.ckpt", "vocab.json"
SAMPLERS_DIR = "samplers"  # fitted samplers: <name>.safetensors + <name>.json
BASELINE = "baseline"  # the run of the model's baseline (--baseline), inside the run
INTEGER_COLUMNS = ("epoch", "step", "active_units", "skipped_steps", "collapsed")
TRAINING_FILES = (CONFIG, WEIGHTS, SPEC, VOCAB, METRICS, STEPS, CHECKPOINTS, BASELINE, SAMPLERS_DIR)  # what --overwrite replaces


class RunDir:
    """One run directory: its layout, its lifecycle (start, overwrite, resume) and every read and
    write of its config, model, metrics, results and pictures."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        """The path of a file of the run (e.g. "samples.png")."""
        return self.path / name

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT

    # --- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """A finished run (config, weights and model spec present); a one-line KlvaeError if not."""
        run = cls(path)
        run.check_finished()
        return run

    def check_finished(self) -> None:
        """A one-line KlvaeError unless the run holds its config, weights and model spec."""
        if not self.path.is_dir():
            raise KlvaeError(f"run directory {self.path} does not exist; pass the --out directory of a `klvae train` run")
        missing = [name for name in (CONFIG, WEIGHTS, SPEC) if not self.file(name).is_file()]
        if missing:
            raise KlvaeError(f"{self.path} is not a finished klvae run (missing {', '.join(missing)}); train into it "
                             f"with `klvae train --out {self.path}`")

    def check_start(self, resume: bool, overwrite: bool, primary: bool = True) -> None:
        """Refuse a start that would damage what is there; changes nothing."""
        if self.path.exists() and not self.path.is_dir():
            raise KlvaeError(f"--out {self.path} is an existing file; give a directory path")
        if resume:
            if not self.last_checkpoint.is_file():
                raise KlvaeError(f"cannot resume: {self.last_checkpoint} not found; train into {self.path} first, or "
                                 "drop --resume")
            return
        held = [n for n in (CONFIG, WEIGHTS, SPEC, METRICS, CHECKPOINTS) if self.file(n).exists()]
        if held and not overwrite and primary:
            raise KlvaeError(f"{self.path} already holds a run ({', '.join(held)}); pass --resume to continue it, "
                             "--overwrite to replace it, or choose another --out")

    def clear(self) -> None:
        """Remove the files of a previous training run (for --overwrite); results of other commands stay."""
        for name in TRAINING_FILES:
            path = self.file(name)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    # --- config and model ------------------------------------------------------------------------
    def save_config(self, config: TrainConfig) -> None:
        atomic_write(self.file(CONFIG), yaml.safe_dump(config.to_flat_dict(), sort_keys=False))  # a recipe's format

    def config(self) -> TrainConfig:
        if not self.file(CONFIG).is_file():
            raise KlvaeError(f"{self.path} is not a klvae run (no {CONFIG}); pass the --out directory of a "
                             "`klvae train` run")
        return TrainConfig.from_yaml(self.file(CONFIG))

    def save_spec(self, spec) -> None:
        atomic_write(self.file(SPEC), json.dumps(spec.to_dict(), indent=2))

    def spec(self):
        """The model's config as model.json holds it (None when there is none yet)."""
        if not self.file(SPEC).is_file():
            return None
        try:
            return model_config(json.loads(self.file(SPEC).read_text()), strict=False)
        except KlvaeError as err:  # e.g. a latent of a plugin that is not loaded
            raise KlvaeError(f"cannot load the model of {self.path}: {err}") from None
        except Exception as err:  # noqa: BLE001 - any damage to the file: one line, not a traceback
            raise KlvaeError(f"cannot load the model of {self.path} ({_first_line(err)}); the files are damaged, "
                             "retrain the run") from None

    def check_resumable(self, spec) -> None:
        """A resumed run must keep the architecture its checkpoint was trained with."""
        stored = self.spec()
        if stored is None:
            return
        old, new = stored.to_dict(), spec.to_dict()
        changed = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in new.items() if old.get(k) != v]
        if changed:
            raise KlvaeError(f"cannot resume {self.path} with a different model ({'; '.join(changed)}); drop those "
                             "options or train into a new --out")

    def save_vocabulary(self, codec: Vocab) -> None:
        """vocab.json: what turns texts into the model's token rows and back."""
        bins = {"label_bins": {"property": codec.bins.name, "edges": list(codec.bins.edges)}} if codec.bins else {}
        atomic_write(self.file(VOCAB), json.dumps({"tokenizer": codec.tokenizer, "vocabulary": codec.vocabulary.to_dict(),
                                                   "label_names": list(codec.label_names), **bins}, indent=1))

    def vocabulary(self) -> Vocab | None:
        """The run's tokenizer, vocabulary and label names (None for a run on arrays)."""
        if not self.file(VOCAB).is_file():
            return None
        try:
            stored = json.loads(self.file(VOCAB).read_text())
            vocab = Vocabulary.from_dict(stored["vocabulary"])
            tokenizer, names = str(stored["tokenizer"]), [str(n) for n in stored["label_names"]]
            bins = stored.get("label_bins")
            bins = bins and PropertyBins(str(bins["property"]), tuple(float(e) for e in bins["edges"]))
        except KlvaeError as err:
            raise KlvaeError(f"{self.file(VOCAB)} is damaged ({err}); retrain the run") from None
        except (ValueError, KeyError, TypeError) as err:
            raise KlvaeError(f"{self.file(VOCAB)} is damaged ({_first_line(err)}); retrain the run") from None
        if tokenizer not in TOKENIZERS:
            raise KlvaeError(f"{self.file(VOCAB)} names tokenizer {tokenizer!r}, which is not registered; load the "
                             "plugin that adds it (--plugin)")
        return Vocab(vocab, tokenizer, names, bins or None)

    def save_sampler(self, fitted: FittedSampler) -> None:
        """samplers/<name>.safetensors (every density's tensors, keyed "<all|classC>.<tensor>") and
        then samplers/<name>.json (the entry, the options, the fit's report): no pickle."""
        first = next(iter(fitted.densities.values()))
        state = {f"{key}.{k}": v.detach().cpu().contiguous() for key, d in fitted.densities.items()
                 for k, v in d.state_dict().items()}
        tensors, meta = self._sampler_files(fitted.name)
        tensors.parent.mkdir(exist_ok=True)
        atomic_write(tensors, save(state))
        atomic_write(meta, json.dumps(
            {"sampler": fitted.sampler, "dim": first.dim, "config": first.config.to_dict(),
             "densities": list(fitted.densities), "report": fitted.report}, indent=2))

    def _sampler_files(self, name: str) -> tuple[Path, Path]:
        """samplers/<name>.safetensors and samplers/<name>.json (a name that is not a plain file
        name is a KlvaeError)."""
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise KlvaeError(f"a sampler's name must be letters, digits, '_', '.' or '-' (it names its files); got "
                             f"{name!r}")
        folder = self.file(SAMPLERS_DIR)
        return folder / f"{name}.safetensors", folder / f"{name}.json"

    def sampler_names(self) -> list[str]:
        return sorted(p.stem for p in self.file(SAMPLERS_DIR).glob("*.json"))

    def sampler_reports(self) -> dict[str, dict]:
        """What each fitted sampler's fit reported, by name (its JSON only; no tensors loaded)."""
        out = {}
        for name in self.sampler_names():
            path = self._sampler_files(name)[1]
            try:
                out[name] = dict(json.loads(path.read_text())["report"])
            except (ValueError, KeyError, TypeError) as err:
                raise KlvaeError(f"{path} is damaged ({_first_line(err)}); fit it again (klvae fit-sampler)") from None
        return out

    def sampler(self, name: str) -> FittedSampler | None:
        """The fitted sampler ``name`` (None when the run has none of that name), rebuilt from its
        registered entry and its tensors."""
        tensors, path = self._sampler_files(name)
        if not path.is_file():
            return None
        try:
            meta = json.loads(path.read_text())
            entry = SAMPLERS[str(meta["sampler"])]
            config = entry.builder.config_class(**meta["config"])
            state = load_file(str(tensors))
            densities = {}
            for key in meta["densities"]:
                densities[key] = entry.builder(int(meta["dim"]), config)
                prefix = f"{key}."
                densities[key].load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
                densities[key].eval()
        except KlvaeError as err:
            raise KlvaeError(f"{path} cannot be read ({err}); fit it again (klvae fit-sampler)") from None
        except (ValueError, KeyError, TypeError, RuntimeError, OSError) as err:
            raise KlvaeError(f"{path} is damaged ({_first_line(err)}); fit it again (klvae fit-sampler)") from None
        return FittedSampler(name, str(meta["sampler"]), densities, dict(meta.get("report") or {}))

    def save_model(self, model: torch.nn.Module, spec) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        atomic_write(self.file(WEIGHTS), save(state))
        self.save_spec(spec)

    def load_model(self, device: str | torch.device = "cpu", **parts: torch.nn.Module):
        """The trained model, in eval mode (weights from safetensors, no pickle). ``parts``
        (encoder=, decoder=, prior=, likelihood=): the modules a run trained with parts passed from
        Python needs again; the run directory names registered components only, never code."""
        self.check_finished()
        spec = self.spec()
        model = build_model(spec, **parts)
        try:
            model.load_state_dict(load_file(str(self.file(WEIGHTS)), device=str(device)))
        except Exception as err:  # noqa: BLE001 - any damage to the files: one line, not a traceback
            raise KlvaeError(f"cannot load the model of {self.path} ({_first_line(err)}); the files are damaged or "
                             "the parts passed differ from the trained ones, retrain the run") from None
        return model.to(device).eval()

    # --- metrics, results, pictures --------------------------------------------------------------
    def write_metrics(self, rows: list[dict[str, Any]], name: str = METRICS) -> None:
        """Rewrite metrics.csv (one row per epoch) or ``name`` atomically; columns are the union in
        first-seen order."""
        columns: list[str] = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.file(name), buf.getvalue())

    def metrics(self, name: str = METRICS) -> list[dict[str, float]]:
        """The rows of metrics.csv (or ``name``) as numbers; a missing file is no rows, a damaged
        one a one-line KlvaeError."""
        path = self.file(name)
        if not path.is_file():
            return []
        try:
            with path.open() as fh:
                rows = [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
                        for row in csv.DictReader(fh)]
        except (ValueError, OSError) as err:
            raise KlvaeError(f"{path} cannot be read ({_first_line(err)}); retrain the run") from None
        for row in rows:
            row.update({k: int(row[k]) for k in INTEGER_COLUMNS if k in row and row[k] == row[k]})
        return rows

    def save_result(self, name: str, result: dict) -> Path:
        """A command's result as JSON, e.g. ``eval_test`` -> eval_test.json."""
        return atomic_write(self.file(f"{name}.json"), json.dumps(result, indent=2))

    def results(self, prefix: str = "eval_", command: str = "evaluate") -> dict[str, dict]:
        """Every ``<prefix>*.json`` result by name; a damaged one is a one-line KlvaeError naming the
        ``klvae`` command that writes it."""
        out = {}
        for path in sorted(self.path.glob(f"{prefix}*.json")):
            try:
                out[path.stem] = json.loads(path.read_text())
            except ValueError:
                raise KlvaeError(f"{path} is not a JSON result; rerun `klvae {command} {self.path}`") from None
        return out

    def text(self, name: str) -> str | None:
        """A text file of the run (e.g. samples.txt), None when it has none."""
        path = self.file(name)
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None

    def pictures(self, names: tuple[str, ...]) -> dict[str, bytes]:
        """The PNG files among ``names`` that the run holds."""
        return {name: self.file(name).read_bytes() for name in names if self.file(name).is_file()}


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


# Shorthands of the RunDir methods, for a run directory given as a path.
def load(run_dir: str | Path, device: str | torch.device = "cpu", **parts: torch.nn.Module):
    """``RunDir(run_dir).load_model(device, **parts)``: the trained model, in eval mode."""
    return RunDir(run_dir).load_model(device, **parts)


def load_config(run_dir: str | Path) -> TrainConfig:
    return RunDir.open(run_dir).config()


def check_run_dir(run_dir: str | Path) -> Path:
    return RunDir.open(run_dir).path


def save_config(run_dir: str | Path, config: TrainConfig) -> None:
    RunDir(run_dir).save_config(config)


def save_model(run_dir: str | Path, model: torch.nn.Module, spec) -> None:
    RunDir(run_dir).save_model(model, spec)


def write_metrics(run_dir: str | Path, rows: list[dict[str, Any]], name: str = METRICS) -> None:
    RunDir(run_dir).write_metrics(rows, name)


def read_metrics(run_dir: str | Path, name: str = METRICS) -> list[dict[str, float]]:
    return RunDir(run_dir).metrics(name)
