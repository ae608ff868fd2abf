"""Training mechanics: batching by indexing, the non-finite guard, DDP through Lightning."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import klvae
from klvae import KlvaeError
from klvae.objectives import OBJECTIVES
from klvae.run import read_metrics
from klvae.step_guard import NonFiniteGuard, guarded_step
from klvae.training import IndexedTensor, loader


def test_loader_serves_whole_batches_by_one_indexing_op_and_reshuffles(monkeypatch):
    x = torch.arange(250.0)[:, None]
    calls = []
    original = IndexedTensor.__getitems__
    monkeypatch.setattr(IndexedTensor, "__getitems__", lambda self, idx: calls.append(len(idx)) or original(self, idx))
    torch.manual_seed(0)
    first = torch.cat(list(loader(x, 100, shuffle=True)))
    second = torch.cat(list(loader(x, 100, shuffle=True)))
    assert calls == [100, 100, 50, 100, 100, 50]
    assert sorted(first[:, 0].tolist()) == x[:, 0].tolist()
    assert not torch.equal(first, second)
    assert torch.equal(torch.cat(list(loader(x, 100, shuffle=False))), x)


@pytest.fixture
def poison():
    """poison(bad_steps): the registered elbo objective's training loss becomes NaN at the steps
    ``bad_steps`` (at every step when None); the entry is restored after the test."""
    entry = OBJECTIVES["elbo"]

    def replace(bad_steps=None):
        def poisoned(ctx, model, x, condition, step):
            out = entry.builder(ctx, model, x, condition, step)
            if model.training and (bad_steps is None or step in bad_steps):
                out.loss = out.loss * float("nan")
            return out

        OBJECTIVES.register("elbo", entry.description, poisoned, replace=True, **entry.capabilities)

    yield replace
    OBJECTIVES.register("elbo", entry.description, entry.builder, replace=True, **entry.capabilities)


def test_non_finite_steps_are_skipped_and_counted(tmp_path, poison):
    poison(bad_steps={2, 3})
    run = klvae.fit({"data": "digits", "epochs": 2, "progress": False, "out": str(tmp_path)})
    rows = read_metrics(run)
    assert [r["skipped_steps"] for r in rows] == [2, 2]
    assert [r["step"] for r in rows] == [14, 28]  # a skipped step still counts as a step (as under AMP)
    assert all(torch.isfinite(torch.tensor([r["train_elbo"], r["val_elbo"]])).all() for r in rows)
    steps = [s["step"] for s in read_metrics(run, "steps.csv")]
    assert steps == [s for s in range(28) if s not in (2, 3)]  # skipped steps have no row


def test_repeated_non_finite_steps_stop_the_run_naming_the_step(tmp_path, poison):
    poison()
    with pytest.raises(KlvaeError, match=r"NaN/Inf for 3 steps in a row \(last at step 2, epoch 0\)"):
        klvae.fit({"data": "digits", "epochs": 2, "max_bad_steps": 3, "progress": False, "out": str(tmp_path)})


def test_a_skipped_step_leaves_the_weights_and_adams_state_alone():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1, fused=True)
    guard = NonFiniteGuard(max_bad_steps=2)
    for step, scale in enumerate([1.0, float("nan"), 1.0]):
        before = [p.detach().clone() for p in net.parameters()]
        opt.zero_grad()
        loss = net(torch.ones(4, 3)).sum() * scale
        loss.backward()
        bad = guard.judge(loss, net.parameters(), step)
        guarded_step(opt, bad)
        moved = [not torch.equal(b, p) for b, p in zip(before, net.parameters())]
        assert all(moved) != bool(bad)
    assert [int(s["step"]) for s in opt.state.values()] == [2, 2]  # Adam counted the two real steps
    assert guard.state_dict() == {"skipped_steps": 1, "bad_in_a_row": 0}
    guard.stop_if_tripped(2, 0)  # one bad step: no stop


def test_gradient_skipping_skips_the_steps_whose_gradient_norm_exceeds_the_threshold_and_counts_them():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1, fused=True)
    guard = NonFiniteGuard(max_bad_steps=5, skip_threshold=50.0)  # the unscaled norm is sqrt(128)
    verdicts = []
    for step, scale in enumerate([1.0, 100.0, 1.0, 1000.0, 1.0]):
        before = [p.detach().clone() for p in net.parameters()]
        opt.zero_grad()
        loss = net(torch.ones(4, 3)).sum() * scale
        loss.backward()
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters()])).item()
        bad = guard.judge(loss, net.parameters(), step)
        guarded_step(opt, bad)
        verdicts.append(bool(bad))
        assert bool(bad) == (norm > 50.0)
        assert all(not torch.equal(b, p) for b, p in zip(before, net.parameters())) != bool(bad)
    assert verdicts == [False, True, False, True, False]
    assert guard.state_dict() == {"skipped_steps": 2, "bad_in_a_row": 0}
    assert [int(s["step"]) for s in opt.state.values()] == [3, 3]


def test_a_run_whose_every_gradient_is_above_the_skip_threshold_stops_naming_it(tmp_path):
    with pytest.raises(KlvaeError, match=r"norm above --skip-threshold 1e-09 for 3 steps in a row"):
        klvae.fit({"data": "digits", "epochs": 2, "max_bad_steps": 3, "skip_threshold": 1e-9, "progress": False,
                   "out": str(tmp_path)})


def test_a_run_with_gradient_skipping_counts_its_skipped_steps_in_the_metrics(tmp_path):
    run = klvae.fit({"data": "digits", "epochs": 2, "skip_threshold": 10.0, "max_bad_steps": 100, "progress": False,
                     "out": str(tmp_path)})
    rows = read_metrics(run)
    assert 0 < int(rows[-1]["skipped_steps"]) < int(rows[-1]["step"])  # the steps of the largest gradients only


def test_early_stopping_ends_a_run_whose_validation_elbo_stops_improving(tmp_path):
    run = klvae.fit({"data": "digits", "epochs": 50, "lr": 1e-9, "patience": 2, "progress": False,
                     "out": str(tmp_path)})
    assert len(read_metrics(run)) < 50


def test_ddp_on_two_cpu_processes_shards_the_data(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "klvae.cli", "train", "--epochs", "2", "--out", str(out), "--no-progress",
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_metrics(out)
    single_process_steps = 14  # ceil(1350 training digits / batch 100)
    assert [int(r["step"]) for r in rows] == [7, 14]  # each of 2 ranks takes half the batches
    assert rows[-1]["step"] < 2 * single_process_steps
    assert done.stdout.count("trained vae") == 1
    assert (out / "model.safetensors").is_file()


def test_bf16_mixed_precision_trains_to_finite_figures_and_saves_float32_weights(tmp_path):
    run = klvae.fit({"data": "digits", "epochs": 3, "precision": "bf16-mixed", "progress": False, "out": str(tmp_path)})
    rows = read_metrics(run)
    assert len(rows) == 3 and all(abs(r["val_elbo"]) < 1e3 for r in rows)
    assert rows[-1]["val_elbo"] > rows[0]["val_elbo"]
    model = klvae.load(run)
    assert all(p.dtype == torch.float32 for p in model.parameters())
