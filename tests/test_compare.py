"""`klvae compare`: a table of runs read from their run directories, a PNG of their KL curves, and
one-line errors for directories that are not runs. The runs are config.yaml + metrics.csv (+
eval_test.json) written with the library's own writers, with known values."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_user_error, cli, read_png
from klvae.config import TrainConfig
from klvae.report.compare import compare_runs, format_table, save_compare_plot
from klvae.report.plots import compare_figure
from klvae.run import read_metrics, save_config, write_metrics


def make_run(path: Path, val_kl: list[float], active: list[int], nll: float | None = None, mi: bool = True,
             **config) -> Path:
    """A run directory whose epoch e has val_elbo -50 + e, the given val KL and active units."""
    path.mkdir(parents=True)
    save_config(path, TrainConfig(data="digits", latent_dim=4, epochs=len(val_kl), out=str(path), **config))
    rows = [{"epoch": e, "step": 10 * e, "beta": 0.25 * e, "val_elbo": -50.0 + e - (e == 2) * 10, "val_kl": kl,
             "active_units": units, **({"val_mi": kl / 2} if mi else {})}
            for e, (kl, units) in enumerate(zip(val_kl, active), start=1)]
    write_metrics(path, rows)
    if nll is not None:
        (path / "eval_test.json").write_text(json.dumps({"split": "test", "nll_iwae": nll, "elbo": -nll - 1}))
    return path


@pytest.fixture
def runs(tmp_path) -> tuple[Path, Path]:
    healthy = make_run(tmp_path / "healthy", [1.0, 2.0, 3.0], [2, 3, 4], nll=41.25, beta=0.5,
                       kl_schedule="linear", free_bits=0.25)
    collapsed = make_run(tmp_path / "collapsed", [0.5, 0.05], [1, 0], mi=False, latent="vmf")
    return healthy, collapsed


def test_compare_runs_reads_each_value_from_the_run_directories(runs):
    healthy, collapsed = compare_runs(runs)
    assert healthy == {"run": "healthy", "path": str(runs[0]), "data": "digits", "latent": "gaussian",
                       "latent_dim": 4, "beta": 0.5, "kl_schedule": "linear", "free_bits": 0.25, "epochs": 3,
                       "best_val_elbo": -47.0, "last_val_kl": 3.0, "active_units": 4, "val_mi": 1.5,
                       "test_nll": 41.25, "collapsed": False}
    assert collapsed["latent"] == "vmf" and collapsed["epochs"] == 2
    assert collapsed["best_val_elbo"] == -49.0  # epoch 1: epoch 2 is 10 nats worse
    assert collapsed["val_mi"] is None and collapsed["test_nll"] is None
    assert collapsed["collapsed"] is True and collapsed["active_units"] == 0


def test_collapse_follows_the_thresholds_of_each_run(tmp_path):
    strict = make_run(tmp_path / "strict", [1.0, 2.0], [3, 3], collapse_kl=2.5)
    lenient = make_run(tmp_path / "lenient", [1.0, 2.0], [3, 3])
    assert [s["collapsed"] for s in compare_runs([strict, lenient])] == [True, False]


def test_compare_prints_one_row_per_run_with_its_values(runs):
    result = cli("compare", *runs, "--out", runs[0].parent / "kl.png")
    assert result.rc == 0, result.err
    lines = result.out.strip().splitlines()
    assert lines[0].split()[:3] == ["run", "data", "latent"] and "test NLL" in lines[0]
    assert lines[1].split() == ["healthy", "digits", "gaussian", "0.5", "linear", "0.25", "3", "-47.00", "3.000",
                                "4/4", "1.500", "41.25", "no"]
    assert lines[2].split() == ["collapsed", "digits", "vmf", "1", "constant", "0", "2", "-49.00", "0.050",
                                "0/4", "-", "-", "yes"]
    assert "nats" in lines[3]
    assert lines[4] == f"wrote {runs[0].parent / 'kl.png'}"


def test_table_numbers_are_right_aligned_under_their_headers(runs):
    header, *rows = format_table(compare_runs(runs)).splitlines()[:3]
    for name in ("beta", "epochs", "best val ELBO", "last val KL", "active", "test NLL"):
        end = header.index(name) + len(name)
        for row in rows:
            assert row[end - 1] != " " and row[end:end + 1] in ("", " "), (name, row)


def test_compare_json_prints_one_object_with_the_summaries(runs):
    result = cli("compare", *runs, "--out", runs[0].parent / "kl.png", "--json")
    assert result.rc == 0, result.err
    printed = json.loads(result.out)
    assert printed["runs"] == compare_runs(runs)
    assert printed["plot"] == str(runs[0].parent / "kl.png")


def test_compare_writes_the_plot_to_compare_png_by_default(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("compare", *runs).rc == 0
    height, width = read_png(tmp_path / "compare.png").shape[:2]
    assert width > height > 100  # two panels side by side


def test_compare_plot_draws_val_kl_and_kl_weight_of_each_run(runs, tmp_path):
    fig = compare_figure({run.name: read_metrics(run) for run in runs})
    kl_ax, weight_ax = fig.axes
    assert [line.get_label() for line in kl_ax.lines] == ["healthy", "collapsed"]
    np.testing.assert_allclose(kl_ax.lines[0].get_ydata(), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(kl_ax.lines[1].get_ydata(), [0.5, 0.05])
    np.testing.assert_allclose(weight_ax.lines[0].get_ydata(), [0.25, 0.5, 0.75])
    assert read_png(save_compare_plot(tmp_path / "plot.png", runs)).shape[1] >= 600


def test_runs_sharing_a_directory_name_are_named_by_their_paths(tmp_path):
    a = make_run(tmp_path / "a" / "run", [1.0], [2])
    b = make_run(tmp_path / "b" / "run", [1.0], [2])
    c = make_run(tmp_path / "c" / "other", [1.0], [2])
    assert [s["run"] for s in compare_runs([a, b, c])] == [str(a), str(b), "other"]


def test_compare_of_a_missing_run_exits_2_naming_it_and_writes_nothing(runs, tmp_path):
    missing = tmp_path / "nowhere"
    assert_user_error(cli("compare", runs[0], missing, "--out", tmp_path / "kl.png"), str(missing), "does not exist")
    assert not (tmp_path / "kl.png").exists()


def test_compare_of_a_run_without_metrics_exits_2_naming_it(runs, tmp_path):
    (runs[1] / "metrics.csv").unlink()
    assert_user_error(cli("compare", *runs, "--out", tmp_path / "kl.png"), str(runs[1]), "no metrics", "klvae train")
    assert not (tmp_path / "kl.png").exists()


def test_compare_of_a_directory_that_is_not_a_run_exits_2_naming_it(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_user_error(cli("compare", runs[0], tmp_path / "empty", "--out", tmp_path / "kl.png"),
                      str(tmp_path / "empty"), "not a klvae run", "config.yaml")


def test_compare_of_a_damaged_eval_result_exits_2_naming_it(runs, tmp_path):
    (runs[0] / "eval_test.json").write_text("{not json")
    assert_user_error(cli("compare", *runs, "--out", tmp_path / "kl.png"), "eval_test.json", "klvae evaluate")


def test_compare_without_runs_is_a_usage_error():
    assert_user_error(cli("compare"), "RUN", "required")
