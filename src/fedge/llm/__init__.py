"""Federated LoRA fine-tuning of causal language models (Hugging Face ``transformers`` + ``peft``).

Importing this package registers the ``[llm]`` config section and the adapter
strategies (``lora-fedavg``, ``flexlora``); it imports no deep-learning library, so
``fedge`` starts fast. The model, client and run modules import ``torch``,
``transformers`` and ``peft`` when they are used::

    from fedge.llm.run import prepare, federate, perplexities, generate
"""

from fedge.config.schema import register_section
from fedge.llm.config import LlmConfig
from fedge.llm.strategies import FlexLoRA, LoraFedAvg
from fedge.strategies import register

register_section("llm", LlmConfig)
register(LoraFedAvg)
register(FlexLoRA)

__all__ = ["FlexLoRA", "LlmConfig", "LoraFedAvg"]
