"""FedAvg + local fine-tuning: the personalisation baseline of Wang et al., "Federated
Evaluation of On-device Personalization", arXiv:1910.10252, 2019 (and the "FedAvg + FT"
rows of Ditto, FedRep and pFL-Bench, Chen et al., NeurIPS 2022 Datasets and Benchmarks).

Training is FedAvg. At evaluation each client fine-tunes a copy of the global model for
``finetune_epochs`` epochs of SGD on its own training data and reports that model's
accuracy on its own test data next to the global model's; nothing of the fine-tuned model
is kept or sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from fedge.core.errors import ConfigError
from fedge.core.params import Params
from fedge.core.types import ClientContext, EvalResult, TrainConfig
from fedge.strategies.base import Strategy, Weighting, with_personal

if TYPE_CHECKING:
    from fedge.clients.base import Client


class FineTune(Strategy):
    name: ClassVar[str] = "finetune"
    personal: ClassVar[bool] = True
    config_section: ClassVar[str] = "personalization"

    def __init__(
        self,
        *,
        finetune_epochs: int = 1,
        finetune_lr: float = 0.05,
        finetune_batch_size: int = 10,
        server_lr: float = 1.0,
        weighting: Weighting = "examples",
    ) -> None:
        super().__init__(server_lr=server_lr, weighting=weighting)
        if finetune_epochs < 1 or finetune_batch_size < 1 or not finetune_lr > 0:
            raise ConfigError(
                "personalization.finetune_epochs and finetune_batch_size must be >= 1 and finetune_lr > 0, "
                f"got {finetune_epochs}, {finetune_batch_size}, {finetune_lr}"
            )
        self.finetune_epochs = int(finetune_epochs)
        self.finetune_lr = float(finetune_lr)
        self.finetune_batch_size = int(finetune_batch_size)

    def client_evaluate(self, client: Client, params: Params, ctx: ClientContext) -> EvalResult:
        cfg = TrainConfig(epochs=self.finetune_epochs, batch_size=self.finetune_batch_size, lr=self.finetune_lr)
        tuned = client.train(params, cfg, ctx).params
        return with_personal(client, params, tuned)
