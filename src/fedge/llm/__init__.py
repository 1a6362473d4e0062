"""Federated LoRA fine-tuning of causal language models (Hugging Face ``transformers`` + ``peft``).

Importing this package registers the ``[llm]`` config section and the adapter
strategies (``lora-fedavg``, ``flexlora``); it imports no deep-learning library, so
``fedge`` starts fast. The model, client and run modules import ``torch``,
``transformers`` and ``peft`` when they are used::

    from fedge.llm.run import prepare, federate, perplexities, generate

An experiment file with ``[llm] enabled = true`` runs with ``fedge finetune``;
``fedge run`` refuses it rather than silently training the ``[data]``/``[model]`` default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedge import experiment
from fedge.config.schema import Experiment, register_section
from fedge.core.errors import ConfigError
from fedge.llm.config import LlmConfig
from fedge.llm.strategies import FlexLoRA, LoraFedAvg
from fedge.strategies import register


def refuse_plain_run(exp: Experiment, ctx: Any = None) -> Sequence[Any]:
    """Stop ``fedge run`` on an ``[llm]`` experiment (a transform factory that adds nothing)."""
    llm = exp.extensions.get("llm")
    if llm is not None and llm.enabled:
        raise ConfigError("[llm] enabled = true: fine-tune with `fedge finetune CONFIG`, not `fedge run`")
    return []


register_section("llm", LlmConfig)
register(LoraFedAvg)
register(FlexLoRA)
if refuse_plain_run not in experiment.TRANSFORM_FACTORIES:
    experiment.TRANSFORM_FACTORIES.append(refuse_plain_run)

__all__ = ["FlexLoRA", "LlmConfig", "LoraFedAvg"]
