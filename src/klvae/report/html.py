"""report.html: one self-contained page (images embedded as base64 PNG) summarising a run."""
from __future__ import annotations

import base64
import html
from pathlib import Path

from klvae.config import TrainConfig
from klvae.errors import KlvaeError
from klvae.likelihoods import bound_note
from klvae.report import plots
from klvae.report.compare import final_verdict
from klvae.run import STEPS, RunDir, atomic_write

# alt text of each figure the report draws
FIGURES = {"curves": "ELBO, reconstruction, KL and KL weight per epoch",
           "kl_steps": "KL weight per training step",
           "kl_heatmap": "KL per latent dimension over epochs",
           "kl_layers": "KL per latent layer over epochs",
           "active_units": "Active units per epoch",
           "information": "Mutual information I(x;z) and aggregated-posterior KL per epoch"}
PICTURES = (("samples.png", "Samples from the prior"),
            ("reconstructions.png", "Test inputs (top) and reconstructions (bottom)"),
            ("interpolation.png", "Latent interpolation between two test points"))
TEXTS = (("samples.txt", "Samples from the prior (greedy decoding)"),
         ("reconstructions.txt", "Test texts, each followed by its greedy reconstruction"),
         ("interpolation.txt", "Homotopy between two test texts (Bowman et al.)"))
STYLE = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
         "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}"
         "img{max-width:100%}img.grid{image-rendering:pixelated}.note{color:#666;font-style:italic}"
         ".verdict{padding:0.8em 1em;border-radius:6px;font-size:1.1em;margin:1em 0}"
         ".collapsed{background:#fde2e1;border:2px solid #c62828}.healthy{background:#e3f6e5;border:2px solid #2e7d32}"
         ".unknown{background:#eeeeee;border:2px solid #888}pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}")


def read_steps(run_dir: str | Path) -> list[dict[str, float]]:
    """Rows of steps.csv (per-step KL weight and batch means); [] without the file."""
    return RunDir(run_dir).metrics(STEPS)


def _table(rows: dict) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def _img(data: bytes, alt: str, css: str = "") -> str:
    src = base64.b64encode(data).decode()
    alt = html.escape(alt, quote=True)
    return (f"<figure><img{css} alt='{alt}' src='data:image/png;base64,{src}'>"
            f"<figcaption>{alt}</figcaption></figure>")


def _figure(key: str, fig) -> str:
    return _img(plots.png_bytes(fig), FIGURES[key])


def _note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def verdict_section(config: TrainConfig, rows: list[dict[str, float]]) -> str:
    """The collapse verdict of the last epoch in a coloured box, and the epochs flagged collapsed."""
    verdict = final_verdict(config, rows)
    if verdict is None:
        box = ("<div id='verdict' class='verdict unknown'><b>Verdict: unknown</b> "
               "(the last epoch records no val_kl and active_units)</div>")
    else:
        collapsed, sentence = verdict
        head, _, rest = sentence.partition(": ")  # "posterior collapse: KL ..., k/D active units; ..."
        box = (f"<div id='verdict' class='verdict {'collapsed' if collapsed else 'healthy'}'><b>Verdict: "
               f"{html.escape(head)}</b> at the last epoch{': ' + html.escape(rest) if rest else ''}</div>")
    if not plots.has_column(rows, "collapsed"):
        return box
    flagged = [str(int(r["epoch"])) for r in rows if r.get("collapsed") == 1]
    listing = (f"Epochs flagged collapsed during training: {', '.join(flagged)}." if flagged
               else "No epoch was flagged collapsed during training.")
    return box + f"<p id='collapsed-epochs'>{listing}</p>"


def config_section(config: TrainConfig, rows: list[dict[str, float]]) -> str:
    """The settings that shape the KL term, and the epochs trained of those asked for."""
    schedule = config.schedule.kl_schedule
    if schedule == "capacity":
        schedule += f" (C = {config.schedule.capacity:g} nats over {config.schedule.kl_steps} steps)"
    elif schedule == "cyclical":
        schedule += f" ({config.schedule.kl_cycles} cycles over {config.schedule.kl_steps} steps)"
    elif schedule != "constant":
        schedule += f" (over {config.schedule.kl_steps} steps)"
    summary = {"model": config.model.name, "data": config.data.name, "latent": f"{config.model.latent}, {config.model.latent_dim} dimensions",
               "prior": config.model.prior, "beta": config.objective.beta, "kl_schedule": schedule,
               "free_bits": f"{config.objective.free_bits:g} nats" + (f" per {config.objective.free_bits_group} dimensions"
                                                             if config.objective.free_bits_group > 1 else ""),
               "epochs": f"{len(rows)} of {config.trainer.epochs}"}
    return "<h2>Configuration</h2>" + _table(summary)


def training_sections(rows: list[dict[str, float]], steps: list[dict[str, float]], latent_dim: int) -> list[str]:
    """The figures drawn from metrics.csv and steps.csv; a short note for each one the run lacks."""
    if not rows:
        return ["<h2>Training</h2>", _note("metrics.csv is missing or empty: no curves to draw.")]
    parts = ["<h2>Training curves</h2>", _figure("curves", plots.curves_figure(rows))]
    parts.append("<h2>KL weight per step</h2>")
    if plots.has_column(steps, "kl_weight"):
        parts.append(_figure("kl_steps", plots.kl_weight_steps_figure(steps)))
    else:
        parts.append(_note("No steps.csv with a kl_weight column in this run: KL weight per step not recorded."))
    parts.append("<h2>KL per latent dimension</h2>")
    if any(plots.has_column(rows, k) for k in plots.kl_dim_columns(rows)):
        parts.append(_figure("kl_heatmap", plots.kl_heatmap_figure(rows)))
    else:
        parts.append(_note("No kl_dim_* columns in metrics.csv (not recorded for this latent family or run)."))
    if plots.kl_layer_columns(rows):
        parts += ["<h2>KL per latent layer</h2>", _figure("kl_layers", plots.kl_layer_heatmap_figure(rows))]
    parts.append("<h2>Active units</h2>")
    if plots.has_column(rows, "active_units"):
        parts.append(_figure("active_units", plots.active_units_figure(rows, latent_dim)))
    else:
        parts.append(_note("No active_units column in metrics.csv."))
    parts.append("<h2>Mutual information and aggregated posterior</h2>")
    if plots.has_column(rows, "val_mi") or plots.has_column(rows, "val_agg_kl"):
        parts.append(_figure("information", plots.information_figure(rows)))
    else:
        parts.append(_note("No val_mi or val_agg_kl columns in metrics.csv (not recorded for this run)."))
    return parts


def picture_sections(run: RunDir) -> list[str]:
    """The image grids the run directory holds (samples, reconstructions, interpolation)."""
    captions = dict(PICTURES)
    return [_img(data, captions[name], " class='grid'") for name, data in run.pictures(tuple(captions)).items()]


def text_sections(run: RunDir) -> list[str]:
    """The texts of a run on text data (samples, reconstructions, homotopy), as the files hold them."""
    return [f"<figure><pre>{html.escape(text)}</pre><figcaption>{html.escape(caption)}</figcaption></figure>"
            for (name, caption) in TEXTS if (text := run.text(name)) is not None]


def evaluation_sections(run: RunDir) -> list[str]:
    """One table per eval_<split>.json (a baseline's figures as baseline.*), and the MOSES metrics."""
    parts = []
    for name, result in run.results("eval_").items():
        if not isinstance(result, dict):
            raise KlvaeError(f"{run.file(name + '.json')} is not a JSON result; rerun `klvae evaluate {run.path}`")
        base = result.get("baseline") if isinstance(result.get("baseline"), dict) else {}
        result = {k: v for k, v in result.items() if k not in ("kl_per_dim", "baseline")}
        result |= {f"baseline.{k}": v for k, v in base.items() if k in ("nll_iwae", "nll_iwae_se", "ppl")}
        parts += [f"<h2>Evaluation ({html.escape(name[5:])} split)</h2>", _table(result)]
    for name, result in run.results("molecules", command="molecules").items():
        of_class = f" of class {html.escape(str(result['class']))}" if result.get("class") is not None else ""
        parts += [f"<h2>MOSES metrics of sampled molecules{of_class}</h2>", _table(result)]
    for name, fit in run.sampler_reports().items():
        parts += [f"<h2>Fitted sampler {html.escape(name)} (klvae sample --from {html.escape(name)})</h2>",
                  _note("NLL per code in nats; a bound where exact is False"), _table(fit)]
    return parts


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` in the run directory from what it holds; returns its path."""
    run = RunDir.open(run_dir)
    run_dir, config, rows = run.path, run.config(), run.metrics()
    not_a_bound = bound_note(getattr(run.spec(), "likelihood", ""))
    parts = [f"<h1>klvae run: {html.escape(run_dir.name)}</h1>",
             f"<p>{html.escape(config.model.name)} on <b>{html.escape(config.data.name)}</b>, latent dim {config.model.latent_dim}, "
             f"beta {config.objective.beta}, {len(rows)} epochs. All figures in nats per data point.</p>",
             *([_note(not_a_bound)] if not_a_bound else []),
             verdict_section(config, rows), config_section(config, rows),
             *training_sections(rows, read_steps(run_dir), config.model.latent_dim)]
    pictures = picture_sections(run)
    if pictures:
        parts += ["<h2>Pictures</h2>", *pictures]
    texts = text_sections(run)
    if texts:
        parts += ["<h2>Texts</h2>", *texts]
    parts += evaluation_sections(run)
    if rows:
        last = {k: v for k, v in rows[-1].items() if not k.startswith("kl_dim_")}
        parts += ["<h2>Last epoch</h2>", _table(last)]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>klvae report: {html.escape(run_dir.name)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
    return atomic_write(run_dir / "report.html", page)
