"""Federated LoRA fine-tuning of causal language models (Hugging Face ``transformers`` + ``peft``).

Its :data:`HOOKS` give :mod:`fedge.plugins` the ``[llm]`` config section, the adapter
strategies (``lora-fedavg``, ``flexlora``) and the check that refuses a plain run; it
imports no deep-learning library, so ``fedge`` starts fast. The model, client and run modules import ``torch``,
``transformers`` and ``peft`` when they are used::

    from fedge.llm.run import prepare, federate, perplexities, generate

An experiment file with ``[llm] enabled = true`` runs with ``fedge finetune``;
``fedge run`` refuses it rather than silently training the ``[data]``/``[model]`` default.
"""

from __future__ import annotations

from typing import Any

from fedge.config.schema import Experiment
from fedge.core.errors import ConfigError
from fedge.llm.config import LlmConfig
from fedge.llm.strategies import FlexLoRA, LoraFedAvg
from fedge.plugins import Hooks


def refuse_plain_run(exp: Experiment, ctx: Any = None) -> None:
    """Stop ``fedge run`` on an ``[llm]`` experiment (the part's ``validate``; ``fedge finetune`` skips it)."""
    llm = exp.extensions.get("llm")
    if llm is not None and llm.enabled:
        raise ConfigError("[llm] enabled = true: fine-tune with `fedge finetune CONFIG`, not `fedge run`")


HOOKS = Hooks(sections={"llm": LlmConfig}, strategies=[LoraFedAvg, FlexLoRA], validate=refuse_plain_run)

__all__ = ["HOOKS", "FlexLoRA", "LlmConfig", "LoraFedAvg"]
