"""Optional dependencies: which fedge extra installs each one, and the one-line error when it is missing.

Every optional import on a command's path goes through :func:`require`, or is caught by
the CLI with :func:`missing_message`, so a missing package is always one line naming the
extra to install, never a ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from fedge.core.errors import FedgeError

EXTRAS: dict[str, tuple[str, str]] = {
    "torch": ("PyTorch", "torch"),
    "sklearn": ("scikit-learn", "data"),
    "pandas": ("pandas", "data"),
    "pyarrow": ("pyarrow", "data"),
    "datasets": ("Hugging Face datasets", "hf"),
    "grpc": ("grpcio", "grpc"),
    "google.protobuf": ("protobuf", "grpc"),
    "cryptography": ("cryptography", "secure"),
    "dp_accounting": ("dp-accounting", "privacy"),
    "ray": ("Ray", "ray"),
    "onnx": ("onnx", "onnx"),
    "onnxruntime": ("ONNX Runtime", "onnx"),
    "onnxscript": ("onnxscript", "onnx"),
    "litert_torch": ("litert-torch", "litert"),
    "ai_edge_litert": ("the LiteRT runtime", "litert"),
    "executorch": ("ExecuTorch", "executorch"),
    "matplotlib": ("matplotlib", "report"),
    "tensorboard": ("TensorBoard", "tracking"),
    "torch.utils.tensorboard": ("TensorBoard", "tracking"),
    "mlflow": ("MLflow", "tracking"),
    "transformers": ("transformers", "llm"),
    "peft": ("peft", "llm"),
    "bitsandbytes": ("bitsandbytes", "llm"),
}
"""Import name -> (what to call it, the fedge extra that installs it)."""


class MissingExtraError(FedgeError):
    """An optional dependency that the configuration or command needs is not installed."""


def _lookup(module: str) -> tuple[str, str] | None:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        found = EXTRAS.get(".".join(parts[:i]))
        if found is not None:
            return found
    return None


def missing_message(module: str, why: str = "") -> str | None:
    """The one-line message for a missing ``module`` (None when it is not an optional dependency)."""
    found = _lookup(module)
    if found is None:
        return None
    label, extra = found
    need = f"{why} needs {label}" if why else f"{label} is needed"
    return f"{need}, which is not installed: pip install 'fedge[{extra}]'"


def available(module: str) -> bool:
    """Whether ``module`` can be imported (found, and importing it does not fail)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def require_installed(module: str, why: str = "") -> None:
    """Raise :class:`MissingExtraError` unless top-level ``module`` is installed, without importing it.

    For a package fedge only reads files from (scikit-learn's digits), whose import would
    cost seconds of start-up.
    """
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:  # a finder that refuses the name, as a blocked import does
        found = False
    if not found:
        raise MissingExtraError(missing_message(module, why) or f"{why}: {module} is not installed")


def require(module: str, why: str = "") -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        message = missing_message(missing, why) or missing_message(module, why) or f"{why}: {exc}"
        raise MissingExtraError(message) from None
