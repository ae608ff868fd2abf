"""Lightning callbacks that watch the KL term after each validation epoch: its diagnostics
(:class:`KLDiagnostics`) and the collapse policy (:class:`CollapsePolicy`).

Both add their columns to the task's ``val_row`` (the figures of the epoch's validation), which
:class:`klvae.callbacks.RunDirectory` writes to metrics.csv; their state that a resumed run needs
goes into the checkpoint through ``state_dict``.
"""
from __future__ import annotations

import warnings

import lightning as L
import torch

from klvae.diagnostics import ACTIVE_THRESHOLD, CollapseWarning, collapse_verdict, mutual_information, off_fraction
from klvae.epoch_metrics import Mean, Moments
from klvae.loaders import unpack

MI_POINTS = 1000  # validation points whose aggregated posterior gives I(x; z) each epoch
FREE_BITS_ON_COLLAPSE = 0.5  # nats per group, switched on by --on-collapse free-bits


class KLDiagnostics(L.Callback):
    """After each validation epoch, into ``task.val_row``: active units, the KL of each latent
    dimension (``kl_dim_i``) and layer (``kl_layer_i``), the code perplexity of a model that has
    codes (``val_perplexity``, from its ``code_perplexity`` method), the spike-and-slab off
    fraction (``val_off_fraction``), I(x; z) (``val_mi``) and the aggregated posterior's KL
    (``val_agg_kl``) on the first ``mi_points`` validation points of each process (fewer when the
    model says so: a hierarchy's ``mi_points``, its aggregated posterior costing a top-down walk per
    pair of points)."""

    def __init__(self, mi_points: int = MI_POINTS):
        self.mi_points = mi_points
        self.metrics = {"kl_dim": Mean(), "kl_layer": Mean(), "off": Mean(), "mi": Mean(), "loc": Moments()}
        self.mi_x: list[torch.Tensor] = []
        self.mi_y: list[torch.Tensor] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, task) -> None:
        for metric in self.metrics.values():
            metric.to(task.device)

    def on_validation_batch_end(self, trainer: L.Trainer, task, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        m = self.metrics
        if outputs.kl_per_dim is not None:
            m["kl_dim"].update(outputs.kl_per_dim)
        if outputs.kl_per_layer is not None:
            m["kl_layer"].update(outputs.kl_per_layer)
        if outputs.q is not None:
            m["loc"].update(outputs.q.mean)
            off = off_fraction(outputs.q)
            if off is not None:
                m["off"].update(off)
        held = sum(len(x) for x in self.mi_x)
        points = min(self.mi_points, getattr(task.model, "mi_points", self.mi_points))  # its N^2 pairs' cost
        if held < points:
            x, y = unpack(batch)
            self.mi_x.append(x[: points - held])
            if y is not None:
                self.mi_y.append(y[: points - held])

    def on_validation_end(self, trainer: L.Trainer, task) -> None:
        m, row = self.metrics, {}
        if m["loc"].update_called:
            mean, activity = m["loc"].compute()
            row["active_units"] = int((activity > ACTIVE_THRESHOLD).sum())
        for name in ("kl_dim", "kl_layer"):
            if m[name].update_called:
                values = m[name].compute().reshape(-1)  # torchmetrics squeezes a one-element result
                row.update({f"{name}_{i}": v for i, v in enumerate(values.tolist())})
        perplexity = getattr(task.model, "code_perplexity", None)
        if callable(perplexity) and m["loc"].update_called:  # how evenly the codes are used
            row["val_perplexity"] = float(perplexity(mean[None]))
        if m["off"].update_called:  # spike-and-slab: expected fraction of dimensions switched off
            row["val_off_fraction"] = float(m["off"].compute())
        if self.mi_x:
            row.update(self._mutual_information(task))
        task.val_row.update(row)
        for metric in m.values():
            metric.reset()

    def _mutual_information(self, task) -> dict[str, float]:
        mi_x, self.mi_x = torch.cat(self.mi_x), []
        mi_y, self.mi_y = (torch.cat(self.mi_y) if self.mi_y else None), []
        condition = {} if mi_y is None else {"condition": mi_y}
        cuda = [task.device.index or 0] if task.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.no_grad():  # its own z; training's RNG is untouched
            torch.manual_seed(task.current_epoch)
            mi = torch.tensor([mutual_information(task.model, mi_x, **condition)], device=task.device)
        self.metrics["mi"].update(mi)  # (1, 2): the mean over processes
        mi, agg_kl = self.metrics["mi"].compute().tolist()
        return {"val_mi": mi, "val_agg_kl": agg_kl}


class CollapsePolicy(L.Callback):
    """The collapse verdict of each validation epoch (column ``collapsed``). A collapse that lasts
    ``collapse_patience`` epochs once the KL schedule has reached full weight is warned about and
    acted on as ``on_collapse`` says (warn, stop, or switch free bits on); a recovery from it is
    reported too (early epochs often pass through a collapsed state)."""

    def __init__(self, config):
        self.config = config
        self.collapsed_epochs = 0  # consecutive collapsed epochs at full KL weight

    def on_validation_end(self, trainer: L.Trainer, task) -> None:
        cfg, row = self.config, task.val_row
        latent_dim = task.model.latent_dim
        if "val_kl" not in row or latent_dim == 0:  # no z (a language model): nothing can collapse
            return
        collapsed, message = collapse_verdict(row["val_kl"], row.get("active_units", latent_dim), latent_dim,
                                              cfg.collapse_kl, cfg.collapse_units)
        row["collapsed"] = int(collapsed)
        settled = task.schedule.settled(max(trainer.global_step - 1, 0))
        epoch = trainer.current_epoch + 1
        if not collapsed and self.collapsed_epochs >= cfg.collapse_patience and trainer.is_global_zero:
            warnings.warn(f"epoch {epoch}: the posterior has recovered: {message[len('no collapse: '):]}",
                          CollapseWarning, stacklevel=1)
        self.collapsed_epochs = self.collapsed_epochs + 1 if collapsed and settled else 0
        if self.collapsed_epochs == cfg.collapse_patience:
            self.act(trainer, task, f"epoch {epoch}: {message}")

    def act(self, trainer: L.Trainer, task, message: str) -> None:
        """Warn, and stop the run or switch free bits on, as ``on_collapse`` says."""
        policy = self.config.on_collapse
        action = {"warn": "", "stop": "; stopping (--on-collapse stop)",
                  "free-bits": f"; free bits of {FREE_BITS_ON_COLLAPSE} nats switched on (--on-collapse free-bits)"}
        if trainer.is_global_zero:
            warnings.warn(message + action[policy], CollapseWarning, stacklevel=1)
        if policy == "stop":
            trainer.should_stop = True
        elif policy == "free-bits":
            task.free_bits = max(task.free_bits, FREE_BITS_ON_COLLAPSE)

    def state_dict(self) -> dict[str, int]:
        return {"collapsed_epochs": self.collapsed_epochs}

    def load_state_dict(self, state_dict: dict) -> None:
        self.collapsed_epochs = int(state_dict.get("collapsed_epochs", 0))
