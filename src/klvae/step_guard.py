"""The step guard (vdvae's ``skipped_updates``): a step whose loss or gradient is NaN/Inf, or whose
gradient norm exceeds ``skip_threshold`` (VDVAE's gradient skipping, Child 2021: a rare spike of
the gradient is dropped rather than clipped), is skipped and counted, and ``max_bad_steps`` of them
in a row stop the run naming the step.

The verdict stays on the device: one fused finite check per step gives a 0-dim flag that a fused
optimiser (``Adam(fused=True)``) reads as ``found_inf``, as it does under AMP's GradScaler, and
skips its update on the device; the counters are device tensors too. Only the stop rule reads a
counter on the host, every step on the CPU (where reading is free) and every
:data:`CHECK_EVERY` steps elsewhere. A skipped step still counts as a step (Lightning's
``global_step``, as under AMP): the KL schedule and steps.csv's numbering go on.
"""
from __future__ import annotations

import torch

from klvae.errors import KlvaeError

CHECK_EVERY = 16  # accelerator steps between the host's reads of the stop rule (each read is a sync)


class NonFiniteGuard:
    """Device-side counters of skipped steps: ``skipped`` in all, ``streak`` (bad in a row) now,
    ``tripped`` the step at which a streak reached ``max_bad_steps`` (-1: none)."""

    def __init__(self, max_bad_steps: int, device: torch.device | str = "cpu", skip_threshold: float = 0.0):
        self.max_bad_steps, self.skip_threshold = max_bad_steps, skip_threshold
        self.to(torch.device(device))

    def to(self, device: torch.device, state: dict | None = None) -> "NonFiniteGuard":
        """Move the counters to ``device`` (keeping them, or setting them from ``state``)."""
        state = state or (self.state_dict() if hasattr(self, "skipped") else {})
        flag = {"dtype": torch.float32, "device": device}  # the flag's type (exact to 2^24 steps)
        self.skipped = torch.tensor(float(state.get("skipped_steps", 0)), **flag)
        self.streak = torch.tensor(float(state.get("bad_in_a_row", 0)), **flag)
        self.tripped = torch.tensor(-1.0, **flag)
        self.check_every = 1 if device.type == "cpu" else CHECK_EVERY
        return self

    def judge(self, loss: torch.Tensor, parameters, step: int) -> torch.Tensor:
        """The 0-dim float flag 'this step is bad' (1.0) or not (0.0): ``loss`` or a gradient of
        ``parameters`` is not finite (one fused check per device and dtype, as AMP's GradScaler
        does), or the gradients' global 2-norm exceeds ``skip_threshold`` (when > 0); updates the
        counters. No host sync."""
        bad = (~torch.isfinite(loss.detach())).float()
        norms = []
        for grads in _grouped([p.grad for p in parameters if p.grad is not None]):
            if grads[0].device != bad.device:
                bad = bad.to(grads[0].device)
            torch._amp_foreach_non_finite_check_and_unscale_(grads, bad, self.one(bad.device))
            if self.skip_threshold > 0:
                norms += [n.to(bad.device, torch.float32) for n in torch._foreach_norm(grads)]
        if norms:
            bad = torch.maximum(bad, (torch.linalg.vector_norm(torch.stack(norms)) > self.skip_threshold).float())
        self.skipped += bad
        self.streak = (self.streak + 1) * bad
        reached = (self.streak >= self.max_bad_steps) & (self.tripped < 0)
        self.tripped = torch.where(reached, step, self.tripped)
        return bad

    def one(self, device: torch.device) -> torch.Tensor:
        """The unit scale the fused check multiplies the gradients by (kept, not rebuilt, per device)."""
        if getattr(self, "_one", None) is None or self._one.device != device:
            self._one = torch.ones((), device=device)
        return self._one

    def stop_if_tripped(self, step: int, epoch: int, force: bool = False) -> None:
        """Raise the run-stopping KlvaeError once ``max_bad_steps`` bad steps came in a row (read on
        the host every ``check_every`` steps, or now with ``force``)."""
        if not force and step % self.check_every:
            return
        tripped = int(self.tripped)
        if tripped >= 0:
            raise KlvaeError(
                f"the loss or its gradient was NaN/Inf{self._spike()} for {self.max_bad_steps} steps in a row (last at "
                f"step {tripped}, epoch {epoch}); lower --lr, check the data, or raise --min-scale"
                + (" or --skip-threshold" if self.skip_threshold > 0 else "")
            )

    def _spike(self) -> str:
        return f" or its norm above --skip-threshold {self.skip_threshold:g}" if self.skip_threshold > 0 else ""

    def state_dict(self) -> dict[str, int]:
        """What a resumed run needs (host integers: one sync, at checkpoint time)."""
        return {"skipped_steps": int(self.skipped), "bad_in_a_row": int(self.streak)}


def _grouped(grads: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """The gradients by (device, dtype): what one fused check takes."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for g in grads:
        groups.setdefault((g.device, g.dtype), []).append(g)
    return list(groups.values())


def guarded_step(optimizer, bad: torch.Tensor) -> None:
    """``optimizer.step()`` unless ``bad``: on the device through ``found_inf`` when the optimiser
    supports it (fused Adam), else decided on the host. ``optimizer`` may be Lightning's wrapper."""
    raw = getattr(optimizer, "optimizer", optimizer)
    if getattr(raw, "_step_supports_amp_scaling", False):
        raw.found_inf = bad if bad.dtype == torch.float32 else bad.to(torch.float32)
        try:
            optimizer.step()
        finally:
            raw.__dict__.pop("found_inf", None)
    elif not bool(bad):
        optimizer.step()
