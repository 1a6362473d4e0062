"""A fedge :class:`~fedge.clients.base.Client` that fine-tunes a LoRA adapter on local text.

All clients of one process share a single base model (loaded once; it is frozen, so
sharing is safe when clients run one after another, as the in-process backends do);
each client loads the round's global adapter into it, trains on its own packed
token blocks, and hands back only the adapter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedge.clients.base import TrainResult, batches, step_budget
from fedge.core.errors import ConfigError
from fedge.core.params import Params
from fedge.core.types import ClientContext, EvalResult, TrainConfig
from fedge.llm.model import Adapter
from fedge.llm.text import Blocks

OPTIMIZERS = ("adamw", "sgd")


@dataclass
class TextData:
    """One client's packed token blocks, ``(n, block_size)`` int64 each."""

    train: Blocks
    test: Blocks

    @property
    def num_train_tokens(self) -> int:
        return int(self.train.size)


def token_nll(model: Any, blocks: Blocks, batch_size: int = 16) -> tuple[float, float, int]:
    """Mean next-token negative log-likelihood, next-token accuracy and token count."""
    import torch

    if len(blocks) == 0:
        return math.nan, math.nan, 0
    model.eval()
    total, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), batch_size):
            ids = torch.from_numpy(blocks[i : i + batch_size])
            logits = model(input_ids=ids).logits[:, :-1].float()
            target = ids[:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"
            )
            total += float(nll)
            correct += int((logits.argmax(-1) == target).sum())
            count += int(target.numel())
    return total / count, correct / count, count


class LoraClient:
    """One device: its text blocks, the shared LoRA model, and a local optimiser.

    ``train`` runs ``cfg.epochs`` passes (or ``cfg.max_steps`` steps) of AdamW (or SGD)
    over shuffled blocks; the optimiser state starts fresh every round, as in FedAvg.
    """

    def __init__(
        self, client_id: int, adapter: Adapter, data: TextData, *, optimizer: str = "adamw", eval_batch_size: int = 16
    ) -> None:
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"llm.optimizer: {optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        self.client_id = client_id
        self.adapter = adapter
        self.data = data
        self.optimizer = optimizer
        self.eval_batch_size = eval_batch_size

    def _optimiser(self, cfg: TrainConfig) -> Any:
        import torch

        ps = self.adapter.tensors
        if self.optimizer == "sgd":
            return torch.optim.SGD(ps, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return torch.optim.AdamW(ps, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def train(self, params: Params, cfg: TrainConfig, ctx: ClientContext) -> TrainResult:
        import torch

        model = self.adapter.model
        self.adapter.set(params)
        torch.manual_seed(int(ctx.rng.integers(2**31 - 1)))
        opt = self._optimiser(cfg)
        blocks = self.data.train
        epochs, budget = step_budget(cfg, len(blocks))
        model.train()
        steps, losses = 0, []
        for _ in range(epochs):
            for idx in batches(len(blocks), cfg.batch_size, ctx.rng):
                if steps >= budget:
                    break
                ids = torch.from_numpy(blocks[idx])
                loss = model(input_ids=ids, labels=ids).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                steps += 1
        model.eval()
        return TrainResult(
            params=self.adapter.get(),
            steps=steps,
            loss=float(np.mean(losses)) if losses else math.nan,
            num_examples=len(blocks),
        )

    def loss(self, params: Params) -> float:
        self.adapter.set(params)
        return token_nll(self.adapter.model, self.data.train, self.eval_batch_size)[0]

    def evaluate(self, params: Params) -> EvalResult:
        """Held-out next-token loss (mean NLL), accuracy and ``perplexity`` in ``metrics``."""
        self.adapter.set(params)
        blocks = self.data.test if len(self.data.test) else self.data.train
        nll, acc, n = token_nll(self.adapter.model, blocks, self.eval_batch_size)
        return EvalResult(
            client_id=self.client_id, num_examples=n, loss=nll, accuracy=acc, metrics={"perplexity": math.exp(nll)}
        )
