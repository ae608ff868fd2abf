"""report.html: one self-contained page (images embedded) summarising a run."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from klvae.run import atomic_write, check_run_dir, load_config, read_metrics

PICTURES = (("curves.png", "ELBO and KL per epoch"), ("samples.png", "Samples from the prior"),
            ("reconstructions.png", "Test inputs (top) and reconstructions (bottom)"),
            ("interpolation.png", "Latent interpolation between two test points"))


def _table(rows: dict) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in rows.items())
    return f"<table>{cells}</table>"


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` in the run directory from what it holds; returns its path."""
    run_dir = check_run_dir(run_dir)
    config = load_config(run_dir)
    rows = read_metrics(run_dir)
    parts = [f"<h1>klvae run: {html.escape(run_dir.name)}</h1>",
             f"<p>{html.escape(config.model)} on <b>{html.escape(config.data)}</b>, latent dim "
             f"{config.latent_dim}, beta {config.beta}, {len(rows)} epochs. All figures in nats per data point.</p>"]
    for path in sorted(run_dir.glob("eval_*.json")):
        result = json.loads(path.read_text())
        result.pop("kl_per_dim", None)
        parts += [f"<h2>Evaluation ({html.escape(path.stem[5:])} split)</h2>", _table(result)]
    if rows:
        last = {k: v for k, v in rows[-1].items() if not k.startswith("kl_dim_")}
        parts += ["<h2>Last epoch</h2>", _table(last)]
        dims = sorted((k for k in rows[-1] if k.startswith("kl_dim_")), key=lambda k: int(k[7:]))
        if dims:
            parts += ["<h2>KL per latent dimension (validation, last epoch)</h2>",
                      _table({d[3:]: rows[-1][d] for d in dims})]
    for name, caption in PICTURES:
        if (run_dir / name).is_file():
            data = base64.b64encode((run_dir / name).read_bytes()).decode()
            parts.append(f"<figure><img alt='{caption}' src='data:image/png;base64,{data}'><figcaption>{caption}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:960px;margin:2em auto}table{border-collapse:collapse}"
             "th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}img{max-width:100%;image-rendering:pixelated}")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>klvae report</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    return atomic_write(run_dir / "report.html", page)
