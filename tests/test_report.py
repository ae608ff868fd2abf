"""report.html of a run: the panels it embeds, the collapse verdict, pages of runs that record less,
and the page as headless Chromium renders it.

One tiny run is trained per module (digits, 2 epochs); the other runs are copies of it whose
metrics.csv / steps.csv / config.yaml are replaced by known values."""
from __future__ import annotations

import base64
import csv
import io
import math
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import klvae
from helpers import assert_user_error, cli, read_png
from klvae.config import TrainConfig
from klvae.report import plots
from klvae.report.html import FIGURES, PICTURES, write_report
from klvae.run import load_config, read_metrics, save_config, write_metrics

LATENT = 4
EPOCHS = 6
FINAL_KL = {0: 0.8, 1: 0.0, 2: 2.5, 3: 0.3}  # the last epoch's KL per dimension: order 2, 0, 3, 1
COLLAPSED_RED = (0xFD, 0xE2, 0xE1)  # background of the verdict box of a collapsed run (report STYLE)
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")


VOID = {"img", "meta", "br", "hr", "link", "input", "source", "wbr"}  # elements without an end tag


class Page(HTMLParser):
    """The parts of a report page the tests read: images (alt -> src and attributes), the text of
    elements by id and class, every src/href."""

    def __init__(self, text: str):
        super().__init__()
        self.images: dict[str, dict[str, str]] = {}
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.by_id: dict[str, str] = {}
        self.classes: dict[str, str] = {}
        self.notes: list[str] = []
        self.cells: dict[str, str] = {}
        self._open: list[tuple[str, str | None, str]] = []  # (tag, id, class)
        self._text: dict[int, list[str]] = {}
        self._th: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "img":
            self.images[attrs.get("alt", "")] = attrs
        if tag in VOID:
            return
        self._open.append((tag, attrs.get("id"), attrs.get("class", "")))
        self._text[len(self._open)] = []

    def handle_endtag(self, tag):
        if tag in VOID or not self._open:
            return
        depth = len(self._open)
        name, id_, cls = self._open.pop()
        text = "".join(self._text.pop(depth))
        if self._open:
            self._text[len(self._open)].append(text)
        if id_:
            self.by_id[id_] = text
            self.classes[id_] = cls
        if cls == "note":
            self.notes.append(text)
        if name == "th":
            self._th = text
        elif name == "td" and self._th is not None:
            self.cells.setdefault(self._th, text)
            self._th = None

    def handle_data(self, data):
        if self._open:
            self._text[len(self._open)].append(data)


def decode(src: str) -> Image.Image:
    """The PNG of a data URI, fully decoded."""
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix):], validate=True)))
    assert image.format == "PNG"
    image.load()
    return image


def epoch_rows(epochs: int = EPOCHS, collapse_at: int | None = None, final_kl: dict[int, float] = FINAL_KL) -> list[dict]:
    """metrics.csv rows with every column; from epoch ``collapse_at`` on, KL ~ 0 and no active unit."""
    rows = []
    for e in range(1, epochs + 1):
        dead = collapse_at is not None and e >= collapse_at
        dims = {f"kl_dim_{i}": 0.001 if dead else kl * e / epochs for i, kl in final_kl.items()}
        kl = sum(dims.values())
        rows.append({"epoch": e, "step": 14 * e, "beta": min(1.0, e / 3), "capacity": 5.0 * e, "free_bits": 0.0,
                     "train_elbo": -60 + 3 * e, "train_recon": -57 + 3 * e, "train_kl": kl + 0.1,
                     "val_elbo": -61 + 3 * e, "val_recon": -61 + 3 * e + kl, "val_kl": kl,
                     "active_units": 0 if dead else min(LATENT, e), **dims, "val_mi": 0.0 if dead else 0.6 * kl,
                     "val_agg_kl": 0.001 if dead else 0.4 * kl, "collapsed": int(dead), "skipped_steps": 0})
    return rows


def step_rows(steps: int = 84) -> list[dict]:
    return [{"step": s, "epoch": s // 14, "kl_weight": min(1.0, s / 42), "capacity": 0.4 * s, "loss": 60 - s / 10,
             "recon": -55 + s / 10, "kl": 1 + s / 50} for s in range(1, steps + 1)]


def write_steps(run: Path, rows: list[dict]) -> None:
    with (run / "steps.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("report") / "run"
    klvae.fit({"data": "digits", "epochs": 2, "hidden": [32], "latent_dim": LATENT, "progress": False, "out": str(run)})
    return run


def fabricate(trained: Path, where: Path, rows: list[dict] | None, steps: list[dict] | None = None, **config) -> Path:
    """A copy of the trained run with these metrics rows (None: no metrics.csv), steps (None: no
    steps.csv) and config values."""
    run = where / "fabricated"
    shutil.copytree(trained, run)
    for name in ("metrics.csv", "steps.csv", "report.html"):
        (run / name).unlink(missing_ok=True)
    if rows is not None:
        write_metrics(run, rows)
    if steps is not None:
        write_steps(run, steps)
    if config:
        save_config(run, TrainConfig.from_dict({**load_config(run).to_dict(), **config}))
    return run


def report_page(run: Path) -> Page:
    return Page(write_report(run).read_text())


@pytest.fixture(scope="module")
def collapsed_run(trained, tmp_path_factory) -> Path:
    """Every column and steps.csv; the posterior collapses from epoch 5."""
    run = fabricate(trained, tmp_path_factory.mktemp("collapsed"), epoch_rows(collapse_at=5), step_rows(),
                    epochs=EPOCHS, kl_schedule="capacity", capacity=15.0, free_bits=0.5)
    write_report(run)
    return run


@pytest.fixture(scope="module")
def collapsed_page(collapsed_run) -> Page:
    return Page((collapsed_run / "report.html").read_text())


# --- the page ------------------------------------------------------------------------------------


def test_report_command_on_a_trained_run_prints_the_path_and_embeds_its_panels(trained):
    result = cli("report", trained)
    assert result.rc == 0, result.err
    assert result.out.strip() == f"wrote {trained / 'report.html'}"
    page = Page((trained / "report.html").read_text())
    for alt in (FIGURES["curves"], FIGURES["kl_heatmap"], FIGURES["active_units"], *(c for _, c in PICTURES)):
        assert alt in page.images, f"{alt!r} missing from {sorted(page.images)}"
        decode(page.images[alt]["src"])
    assert page.classes["verdict"].split()[-1] in ("collapsed", "healthy")


FLAT = [alt for key, alt in FIGURES.items() if key != "kl_layers"]  # a hierarchy's panel: tested below


@pytest.mark.parametrize("alt", [*FLAT, *(c for _, c in PICTURES)])
def test_each_panel_is_an_embedded_png_of_a_sane_size(collapsed_page, alt):
    assert alt in collapsed_page.images, f"{alt!r} missing from {sorted(collapsed_page.images)}"
    width, height = decode(collapsed_page.images[alt]["src"]).size
    assert 50 <= width <= 3000 and 50 <= height <= 3000
    if alt in FIGURES.values():
        assert width >= 600  # a figure is drawn 10 inches wide at 100 dpi


def test_a_hierarchys_report_draws_the_kl_of_each_layer_over_the_epochs(tmp_path):
    run = klvae.fit({"data": "digits", "model": "hvae", "latent_dims": [4, 2], "epochs": 2, "progress": False,
                     "out": str(tmp_path / "hvae")})
    rows = read_metrics(run)
    assert {"kl_layer_0", "kl_layer_1"} <= set(rows[-1])
    write_report(run)
    page = Page((run / "report.html").read_text())
    assert FIGURES["kl_layers"] in page.images
    assert decode(page.images[FIGURES["kl_layers"]]["src"]).size[0] >= 600


def test_a_flat_models_report_has_no_layer_panel(collapsed_page):
    assert FIGURES["kl_layers"] not in collapsed_page.images


def test_page_is_self_contained(collapsed_run, collapsed_page):
    text = (collapsed_run / "report.html").read_text()
    assert collapsed_page.links and all(link.startswith("data:image/png;base64,") for link in collapsed_page.links)
    assert not {"script", "link", "iframe"} & collapsed_page.tags
    assert "http://" not in text and "https://" not in text and "url(" not in text


def test_collapse_verdict_is_shown_in_the_red_box_with_the_flagged_epochs(collapsed_page):
    assert collapsed_page.classes["verdict"] == "verdict collapsed"
    verdict = collapsed_page.by_id["verdict"]
    assert "posterior collapse" in verdict and f"0/{LATENT} active units" in verdict and "Remedies" in verdict
    assert collapsed_page.by_id["collapsed-epochs"] == "Epochs flagged collapsed during training: 5, 6."


def test_healthy_run_gets_the_green_no_collapse_verdict(trained, tmp_path):
    page = report_page(fabricate(trained, tmp_path, epoch_rows()))
    assert page.classes["verdict"] == "verdict healthy"
    assert "no collapse" in page.by_id["verdict"] and f"{LATENT}/{LATENT} active units" in page.by_id["verdict"]
    assert page.by_id["collapsed-epochs"] == "No epoch was flagged collapsed during training."


def test_verdict_uses_the_collapse_thresholds_of_the_run(trained, tmp_path):
    final_kl = sum(FINAL_KL.values())  # 3.6 nats: healthy at the default 0.1, collapsed below 5
    page = report_page(fabricate(trained, tmp_path, epoch_rows(), collapse_kl=5.0))
    assert page.classes["verdict"] == "verdict collapsed"
    assert f"KL {final_kl:.3f} nats" in page.by_id["verdict"]


def test_config_summary_names_the_kl_settings(collapsed_page):
    cells = collapsed_page.cells
    assert cells["data"] == "digits" and cells["latent"] == f"gaussian, {LATENT} dimensions"
    assert cells["prior"] == "standard" and cells["beta"] == "1.000"
    assert cells["kl_schedule"].startswith("capacity (C = 15 nats")
    assert cells["free_bits"] == "0.5 nats" and cells["epochs"] == f"{EPOCHS} of {EPOCHS}"


def test_run_recording_fewer_columns_gets_a_note_for_each_missing_panel(trained, tmp_path):
    keep = ("epoch", "step", "beta", "train_elbo", "train_recon", "train_kl", "val_elbo", "val_recon", "val_kl")
    page = report_page(fabricate(trained, tmp_path, [{k: r[k] for k in keep} for r in epoch_rows()]))
    assert set(page.images) & set(FIGURES.values()) == {FIGURES["curves"]}
    notes = " ".join(page.notes)
    for missing in ("steps.csv", "kl_dim_", "active_units", "val_mi"):
        assert missing in notes, f"no note on {missing}: {page.notes}"
    assert page.classes["verdict"] == "verdict unknown"
    assert "collapsed-epochs" not in page.by_id


def test_run_without_metrics_gets_a_page_with_a_note(trained, tmp_path):
    page = report_page(fabricate(trained, tmp_path, None))
    assert not set(page.images) & set(FIGURES.values())
    assert any("metrics.csv is missing" in note for note in page.notes)
    assert {c for _, c in PICTURES} <= set(page.images)


# --- the figures ---------------------------------------------------------------------------------


def test_heatmap_rows_are_the_dimensions_sorted_by_final_kl():
    rows = epoch_rows()
    assert plots.dims_by_final_kl(rows) == [2, 0, 3, 1]
    fig = plots.kl_heatmap_figure(rows)
    values = np.ma.getdata(fig.axes[0].images[0].get_array())  # (D, epochs)
    assert values.shape == (LATENT, EPOCHS)
    np.testing.assert_allclose(values[:, -1], [2.5, 0.8, 0.3, 0.0])
    np.testing.assert_allclose(values[0], [2.5 * e / EPOCHS for e in range(1, EPOCHS + 1)])
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["z2", "z0", "z3", "z1"]
    assert fig.axes[1].get_ylabel() == "KL (nats)"  # the colour bar


def test_heatmap_puts_dimensions_without_a_final_kl_last():
    rows = epoch_rows()
    rows[-1]["kl_dim_2"] = math.nan
    assert plots.dims_by_final_kl(rows) == [0, 3, 1, 2]


def test_active_units_figure_draws_the_counts_under_the_latent_dim_ceiling():
    rows = epoch_rows(collapse_at=5)
    ax = plots.active_units_figure(rows, LATENT).axes[0]
    counts, ceiling = ax.lines
    np.testing.assert_array_equal(counts.get_ydata(), [1, 2, 3, 4, 0, 0])
    np.testing.assert_array_equal(ceiling.get_ydata(), [LATENT, LATENT])
    assert ax.get_ylim()[1] > LATENT


def test_information_figure_draws_mi_and_aggregated_kl_beside_the_kl():
    rows = epoch_rows()
    lines = {line.get_label(): line.get_ydata() for line in plots.information_figure(rows).axes[0].lines}
    assert set(lines) == {"val_kl", "val_mi", "val_agg_kl"}
    np.testing.assert_allclose(lines["val_mi"] + lines["val_agg_kl"], lines["val_kl"])


def test_kl_weight_steps_figure_draws_weight_capacity_and_batch_kl_per_step():
    steps = step_rows()
    fig = plots.kl_weight_steps_figure(steps)
    weight_ax, kl_ax, capacity_ax = fig.axes
    np.testing.assert_allclose(weight_ax.lines[0].get_ydata(), [s["kl_weight"] for s in steps])
    np.testing.assert_allclose(capacity_ax.lines[0].get_ydata(), [s["capacity"] for s in steps])
    np.testing.assert_allclose(kl_ax.lines[0].get_ydata(), [s["kl"] for s in steps])
    assert len(plots.kl_weight_steps_figure([{k: s[k] for k in ("step", "kl_weight")} for s in steps]).axes) == 1


def test_curves_figure_skips_columns_a_run_lacks():
    rows = [{k: v for k, v in r.items() if not k.startswith("train_")} for r in epoch_rows()]
    fig = plots.curves_figure(rows)
    labels = [line.get_label() for ax in fig.axes for line in ax.lines]
    assert labels == ["val_elbo", "val_recon", "val_kl", "beta", "capacity C"]


# --- headless Chromium ---------------------------------------------------------------------------

# appended to a copy of the report only: records what the browser decoded of each image
PROBE = ("<script>window.addEventListener('load', () => { for (const img of document.images) "
         "img.dataset.natural = img.naturalWidth + 'x' + img.naturalHeight; });</script>")


def chromium(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def rendered(collapsed_run, tmp_path_factory) -> tuple[Page, np.ndarray]:
    """(the DOM Chromium built from the report plus the probe, a 1200x4000 screenshot of the report)."""
    where = tmp_path_factory.mktemp("chromium")
    probe = where / "probe.html"
    probe.write_text((collapsed_run / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri()).stdout
    shot = where / "report.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,4000", (collapsed_run / "report.html").as_uri())
    return Page(dom), read_png(shot)


@needs_chromium
def test_chromium_decodes_every_embedded_image_at_its_png_size(rendered, collapsed_page):
    dom, _ = rendered
    expected = {*FLAT, *(c for _, c in PICTURES)}
    assert set(dom.images) == expected
    for alt, attrs in dom.images.items():
        width, height = decode(collapsed_page.images[alt]["src"]).size
        assert attrs.get("data-natural") == f"{width}x{height}", alt


@needs_chromium
def test_chromium_shows_the_verdict_text(rendered):
    dom, _ = rendered
    assert "Verdict: posterior collapse" in dom.by_id["verdict"]
    assert dom.classes["verdict"] == "verdict collapsed"


@needs_chromium
def test_chromium_screenshot_is_not_blank_and_paints_the_verdict_box(rendered):
    _, pixels = rendered
    rgb = pixels[..., :3].astype(int)
    assert pixels.shape[:2] == (4000, 1200)
    assert rgb.std() > 20  # text and figures, not a blank page
    red_box = np.all(np.abs(rgb - COLLAPSED_RED) <= 2, axis=-1)
    assert red_box[:600].sum() > 10_000  # the verdict box, near the top
    figure_colours = np.ptp(rgb, axis=-1) > 60  # saturated pixels: plot lines and the heat map
    assert figure_colours.sum() > 50_000


def test_report_of_a_missing_run_is_a_one_line_error(tmp_path):
    assert_user_error(cli("report", tmp_path / "nowhere"), str(tmp_path / "nowhere"), "does not exist")


def test_report_of_a_run_with_damaged_metrics_is_a_one_line_error(trained, tmp_path):
    run = fabricate(trained, tmp_path, epoch_rows())
    (run / "metrics.csv").write_text("epoch,val_kl\n1,not-a-number\n")
    assert_user_error(cli("report", run), "metrics.csv", "cannot be read")
    assert not (run / "report.html").exists()
