"""Resuming a run: the state a resumed run needs (skipped steps, bad steps in a row, collapsed
epochs, the free-bits floor switched on, the best value, steps.csv's length, the random number
generators) travels in the checkpoint, so a run killed with SIGKILL and resumed ends as the
uninterrupted run of the same seed does, figure for figure (training on the CPU is deterministic)."""
from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import klvae
from klvae.config import TrainConfig
from klvae.kl_callbacks import CollapsePolicy
from klvae.models import ModelSpec, build_model
from klvae.run import read_metrics
from klvae.training import VAETask

# beta 50 collapses the posterior within two epochs; free bits then bring the KL back
CONFIG = {"data": "digits", "epochs": 6, "hidden": [32], "latent_dim": 4, "beta": 50.0, "collapse_patience": 2,
          "on_collapse": "free-bits", "progress": False, "seed": 3}
BAD_STEPS = (5, 40)  # steps whose loss is NaN: one before the kill, one after it

TRAIN = textwrap.dedent(f"""
    import sys, time
    import lightning as L
    import torch
    torch.set_num_threads(1)
    import klvae
    from klvae.objectives import OBJECTIVES

    entry = OBJECTIVES["elbo"]

    def flaky(ctx, model, x, condition, step):
        out = entry.builder(ctx, model, x, condition, step)
        if model.training and step in {BAD_STEPS!r}:
            out.loss = out.loss * float("nan")
        return out

    OBJECTIVES.register("elbo", entry.description, flaky, replace=True, **entry.capabilities)

    class Slow(L.Callback):  # time for the test to kill the run between its checkpoints
        def on_train_epoch_end(self, trainer, task):
            time.sleep(float(sys.argv[3]))

    klvae.fit({{**{CONFIG!r}, "out": sys.argv[1], "resume": sys.argv[2] == "resume"}}, callbacks=[Slow()])
""")


def train(script: Path, out: Path, mode: str = "fresh", pause: float = 0.0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, str(script), str(out), mode, str(pause)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]


def table(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_a_run_killed_after_a_checkpoint_and_resumed_ends_as_the_uninterrupted_one(tmp_path):
    """SIGKILL lands after epoch 2 wrote metrics.csv and steps.csv but before its checkpoint: the
    resumed run goes back to epoch 1's checkpoint and must drop the rows written after it (and a
    row half-written by the kill)."""
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    reference = train(script, whole)
    victim = train(script, killed, pause=2.5)
    deadline = time.monotonic() + 240
    while len(read_metrics(killed)) < 2 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    checkpoint = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 14 and len(read_metrics(killed, "steps.csv")) > 14  # rows past it
    with (killed / "steps.csv").open("a") as fh:
        fh.write("28,1.0,3.1")  # as if the kill had cut a row short
    finish(train(script, killed, "resume"))
    finish(reference)
    for name in ("metrics.csv", "steps.csv"):
        (head_k, rows_k), (head_w, rows_w) = table(killed / name), table(whole / name)
        assert head_k == head_w, name
        assert len(rows_k) == len(rows_w), name
        assert rows_k == rows_w, name  # every figure, as text: the resumed run drew what the whole one drew
    rows = read_metrics(killed)
    assert rows[-1]["skipped_steps"] == len(BAD_STEPS)
    assert any(r["collapsed"] for r in rows) and rows[-1]["free_bits"] == 0.5
    assert {s["step"] for s in read_metrics(killed, "steps.csv")}.isdisjoint(BAD_STEPS)


def small_task(**options) -> VAETask:
    config = TrainConfig.from_dict({**CONFIG, **options})
    return VAETask(build_model(ModelSpec(event_shape=[1, 8, 8], latent_dim=4, hidden=[8])), config)


def as_lightning_loads_it(checkpoint: dict) -> dict:
    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_the_guard_the_free_bits_floor_and_the_generators_survive_a_checkpoint_round_trip():
    task = small_task()
    task.guard.skipped += 7
    task.guard.streak += 2
    task.free_bits = 0.5
    checkpoint: dict = {}
    task.on_save_checkpoint(checkpoint)
    expected = torch.rand(3)  # what the generator gives after the checkpoint
    resumed = small_task()
    assert resumed.guard.state_dict() == {"skipped_steps": 0, "bad_in_a_row": 0} and resumed.free_bits == 0.0
    resumed.on_load_checkpoint(as_lightning_loads_it(checkpoint))
    assert resumed.guard.state_dict() == {"skipped_steps": 7, "bad_in_a_row": 2}
    assert resumed.free_bits == 0.5 and resumed.context.free_bits == 0.5  # the objective reads the floor
    assert torch.equal(torch.rand(3), expected)


def test_the_count_of_collapsed_epochs_survives_a_checkpoint_round_trip():
    policy = CollapsePolicy(TrainConfig.from_dict(CONFIG))
    policy.collapsed_epochs = 3
    resumed = CollapsePolicy(TrainConfig.from_dict(CONFIG))
    resumed.load_state_dict(as_lightning_loads_it(policy.state_dict()))
    assert resumed.collapsed_epochs == 3


@pytest.mark.filterwarnings("ignore::klvae.diagnostics.CollapseWarning")
def test_a_resumed_run_takes_its_counters_from_the_checkpoint_not_from_metrics_csv(tmp_path):
    run = tmp_path / "run"
    klvae.fit({**CONFIG, "epochs": 4, "out": str(run)})
    rows = read_metrics(run)
    assert rows[-1]["free_bits"] == 0.5  # switched on before the checkpoint
    metrics = run / "metrics.csv"
    head, body = table(metrics)
    for row in body:  # a metrics.csv that says otherwise must not matter
        row[head.index("free_bits")], row[head.index("skipped_steps")] = "0.0", "0"
    with metrics.open("w", newline="") as fh:
        csv.writer(fh).writerows([head, *body])
    klvae.fit({**CONFIG, "epochs": 5, "out": str(run), "resume": True})
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[-1]["free_bits"] == 0.5
    assert [s["step"] for s in read_metrics(run, "steps.csv")] == list(range(5 * 14))
