"""A normalising flow over the codes (Wehenkel & Louppe 2021 fit one as an ex-post prior): zuko's
masked autoregressive flow (Papamakarios et al. 2017) or neural spline flow (Durkan et al. 2019),
trained by maximum likelihood on the standardised codes; its log-density is exact."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.distributions import Distribution

from klvae import checks
from klvae.checks import doc
from klvae.samplers.density import CodeDensity, SamplerConfig, adam_fit, finite, reset

FLOWS = ("maf", "nsf")


@contextmanager
def zuko_defaults():
    """torch's default argument validation off, as zuko sets it for itself when imported (its
    distributions assume it), and back as it was afterwards: klvae changes nothing of torch's."""
    validate = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(validate)


def zuko_flow(kind: str):
    """zuko's MAF or NSF class (zuko imported under :func:`zuko_defaults`)."""
    with zuko_defaults():
        import zuko
    return {"maf": zuko.flows.MAF, "nsf": zuko.flows.NSF}[kind]


# Defaults sized for ~60k codes of 16 dimensions: with batches of 256 a MAF epoch (235 Adam steps)
# takes 2-3 s on one CPU core (a second one gains nothing on a shared machine), so 25 epochs
# (~5900 steps) take 1-1.5 min; an NSF costs about 5x as much per epoch.
@dataclass
class FlowConfig(SamplerConfig):
    kind: str = field(default="maf", metadata=doc(
        "the flow: masked autoregressive (affine), or neural spline (rational-quadratic; ~5x slower)",
        choices=FLOWS))
    transforms: int = field(default=5, metadata=doc("autoregressive transforms of the flow"))
    hidden: list[int] = field(default_factory=lambda: [128, 128], metadata=doc(
        "hidden layer widths of each transform's masked MLP, e.g. 128 128"))
    epochs: int = field(default=25, metadata=doc("passes over the codes"))
    batch_size: int = field(default=256, metadata=doc("codes per Adam step"))
    lr: float = field(default=1e-3, metadata=doc("Adam's learning rate"))

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.positive_int(self, "transforms", "epochs", "batch_size")
        checks.int_list(self, "hidden", "positive layer widths like [128, 128]")
        checks.within(self, "lr", 0, 1)


class FlowDensity(CodeDensity):
    """A zuko flow u: (N, D) -> base N(0, I), built from (dim, config) alone, so that a saved state
    (tensors: weights, masks, orders) loads into a fresh instance; initial weights are drawn in
    ``fit`` (seeded)."""

    config_class = FlowConfig
    exact = True

    def __init__(self, dim: int, config: FlowConfig):
        super().__init__(dim, config)
        with zuko_defaults():
            self.flow = zuko_flow(config.kind)(features=dim, context=0, transforms=config.transforms,
                                               hidden_features=list(config.hidden))

    def _fit(self, u: torch.Tensor) -> dict:
        """``loss``: the last epoch's mean -log p(u) of the standardised codes (nats per code)."""
        reset(self.flow)
        with zuko_defaults():
            loss = adam_fit(self.flow, u, self.config, lambda x: -self.flow().log_prob(x).mean(), "flow")
        return {"loss": loss, "epochs": self.config.epochs}

    def _log_prob(self, u: torch.Tensor) -> torch.Tensor:
        with zuko_defaults():
            return finite(torch.cat([self.flow().log_prob(rows) for rows in u.split(8192)]), "flow")

    def _sample(self, n: int) -> torch.Tensor:
        with zuko_defaults():
            return finite(self.flow().sample((n,)), "flow")
