"""Experiment configuration: one TOML file, typed sections, every key documented.

Each section is a dataclass whose fields carry their documentation (``doc``) and, where
the value is one of a set, its ``choices``. Loading checks every key: an unknown key is
reported with the closest valid one, a wrong type or value names the key. ``fedge init``
writes its commented example from these same definitions, so docs and code cannot drift.

Other parts of fedge add their own sections with :func:`register_section`; those of the
optional parts are registered when :mod:`fedge.plugins` imports the part.
"""

from __future__ import annotations

import copy
import difflib
import functools
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from fedge.core.errors import ConfigError


def opt(
    default: Any,
    doc: str,
    *,
    choices: tuple[Any, ...] | None = None,
    min: float | None = None,
    max: float | None = None,
    exclusive_min: bool = False,
) -> Any:
    """A documented config field."""
    meta = {"doc": doc, "choices": choices, "min": min, "max": max, "exclusive_min": exclusive_min}
    if isinstance(default, list | dict):
        return field(default_factory=functools.partial(copy.copy, default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    dataset: str = opt(
        "digits",
        "built-in dataset, 'files' for your own files, 'hf' for Hugging Face datasets, 'leaf' for LEAF JSON "
        "(see docs/data.md)",
        choices=("digits", "synthetic", "synthetic-iid", "files", "hf", "leaf"),
    )
    path: str = opt(
        "", "'files': a CSV/Parquet/.npz file or a folder of one file per client; 'leaf': a LEAF train folder or file"
    )
    label_column: str = opt("label", "with dataset = 'files' or 'hf': the label column (or .npz array)")
    client_column: str = opt(
        "", "with dataset = 'files' or 'hf': column of client ids, one client per id ('' = partition the rows)"
    )
    feature_columns: list[str] = opt(  # noqa: RUF009
        [], "with dataset = 'files' or 'hf': the feature columns ([] = all but the label and client columns)"
    )
    hf_name: str = opt("", "with dataset = 'hf': a hub name, a save_to_disk folder, or local CSV/Parquet/JSON files")
    hf_split: str = opt("train", "with dataset = 'hf': the split to read")
    text_features: int = opt(
        1024, "with dataset = 'leaf' (Sent140): size of the hashed bag-of-words vector of a tweet", min=1
    )
    num_clients: int = opt(
        100,
        "clients to split pooled data among (synthetic: number of devices); not used when the data names "
        "its clients (client column, one file per client, LEAF)",
        min=1,
    )
    loader: str = opt(
        "", "your own data: 'package.module:function' called as f(client_id, num_clients, seed) (see docs/usercode.md)"
    )
    test_loader: str = opt("", "with loader: 'package.module:function' returning the central (x, y) test set")
    partition: str = opt(
        "dirichlet", "how pooled data is split among clients", choices=("iid", "dirichlet", "shards", "powerlaw")
    )
    alpha: float = opt(0.5, "Dirichlet concentration: smaller = more label skew", min=0, exclusive_min=True)
    shards_per_client: int = opt(2, "with partition = 'shards': label shards per client", min=1)
    powerlaw_exponent: float = opt(
        1.5, "with partition = 'powerlaw': Pareto exponent of client sizes", min=0, exclusive_min=True
    )
    test_fraction: float = opt(0.2, "share of each client's data held out as its test set", min=0, max=0.95)
    synthetic_alpha: float = opt(1.0, "Synthetic(α, β): model heterogeneity α", min=0)
    synthetic_beta: float = opt(1.0, "Synthetic(α, β): input heterogeneity β", min=0)


@dataclass
class ModelConfig:
    name: str = opt("mlp", "built-in model", choices=("logreg", "mlp", "cnn"))
    framework: str = opt("torch", "torch, or numpy for devices without PyTorch", choices=("torch", "numpy"))
    hidden: list[int] = opt([64], "hidden layer sizes of the mlp")  # noqa: RUF009
    num_classes: int = opt(0, "output size (0 = one per label found in the data)", min=0)
    factory: str = opt(
        "", "your own model: 'package.module:function' returning an nn.Module or a Learner (name is then ignored)"
    )


@dataclass
class StrategyConfig:
    name: str = opt("fedavg", "aggregation strategy (see `fedge strategies`)")
    server_lr: float = opt(1.0, "server learning rate (FedOpt family: its η)", min=0, exclusive_min=True)
    weighting: str = opt(
        "examples", "weight client deltas by their example count or uniformly", choices=("examples", "uniform")
    )
    mu: float = opt(0.01, "fedprox: proximal term μ", min=0)
    momentum: float = opt(0.9, "fedavgm: server momentum β", min=0, max=0.999)
    beta1: float = opt(0.9, "fedadam/fedyogi/fedadagrad: β1", min=0, max=0.999)
    beta2: float = opt(0.99, "fedadam/fedyogi: β2", min=0, max=0.999)
    tau: float = opt(1e-3, "fedadam/fedyogi/fedadagrad: adaptivity τ", min=0, exclusive_min=True)
    q: float = opt(1.0, "qfedavg: fairness exponent q", min=0)


@dataclass
class TrainingConfig:
    clients_per_round: int = opt(
        20, "clients selected each round (0 = use fraction); the default 20 takes all of a smaller population", min=0
    )
    fraction: float = opt(0.0, "with clients_per_round = 0: share of available clients per round", min=0, max=1)
    min_clients: int = opt(1, "fewest usable updates for a round to change the model", min=1)
    local_epochs: int = opt(5, "local epochs per round", min=1)
    batch_size: int = opt(10, "local mini-batch size", min=1)
    lr: float = opt(0.05, "local SGD learning rate", min=0, exclusive_min=True)
    momentum: float = opt(0.0, "local SGD momentum", min=0, max=0.999)
    weight_decay: float = opt(0.0, "local SGD weight decay", min=0)
    backend: str = opt(
        "auto",
        "how the cohort is executed: auto (picks sequential, vectorized or processes per round), "
        "debug, sequential, vectorized, processes or ray",
    )
    max_update_norm: float = opt(0.0, "reject updates whose L2 norm exceeds this (0 = no bound)", min=0)
    threads: int = opt(
        0,
        "CPU threads of PyTorch and BLAS per training process (0 = auto: $OMP_NUM_THREADS, else 1, "
        "vectorized min(cores, 4); processes/ray workers always 1)",
        min=0,
    )
    loss: str = opt("", "your own loss: 'package.module:function' (logits, targets) -> scalar ('' = cross-entropy)")


@dataclass
class EvaluationConfig:
    every: int = opt(1, "evaluate the global model every N rounds (and after the last)", min=1)
    centralized: bool = opt(True, "evaluate on the pooled held-out test set")
    federated_clients: int = opt(0, "also evaluate on N clients' own test data (-1 = all, 0 = off)", min=-1)


@dataclass
class Experiment:
    seed: int = opt(0, "seed of every random choice: same seed, same history and model")
    rounds: int = opt(100, "federated rounds", min=1)
    output: str = opt(
        "runs/{dataset}-{strategy}-seed{seed}",
        "output folder: {dataset}, {strategy}, {model}, {seed}, {timestamp} are filled in; "
        "a name already taken gets -2, -3 ... (see docs/engine.md)",
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    extensions: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Any:
        """A registered extension section (its defaults when the file did not set it)."""
        if name not in self.extensions:
            if name not in SECTIONS:
                from fedge.plugins import registry

                registry.load_section(name)  # the optional part that owns it, imported on first use
            if name not in SECTIONS:
                raise ConfigError(f"unknown config section {name!r}")
            self.extensions[name] = SECTIONS[name]()
        return self.extensions[name]

    def output_dir(self, **fill: str) -> str:
        """The ``output`` template filled in (``{timestamp}`` is the local time, YYYYmmdd-HHMMSS).

        ``fill`` replaces a key's value (``fedge finetune`` names its runs ``dataset = "llm"``).
        """
        import time

        keys = {
            "dataset": self.data.dataset,
            "strategy": self.strategy.name,
            "model": self.model.name,
            "seed": self.seed,
            "timestamp": time.strftime("%Y%m%d-%H%M%S"),
            **fill,
        }
        try:
            return self.output.format(**keys)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"output: {self.output!r} is not a valid template ({exc}); it may use {{{'}, {'.join(keys)}}}"
            ) from None


CORE_SECTIONS = ("data", "model", "strategy", "training", "evaluation")
SECTIONS: dict[str, type] = {}
"""Extension sections registered so far: the core's own, and those of the optional parts
(:data:`fedge.plugins.PLUGINS`) imported when a config or the code first uses them."""


def embedded_default() -> Experiment:
    """What ``fedge run`` runs with no config: every default, with the MLP in NumPy.

    The NumPy MLP trains with the same kernel as a PyTorch ``mlp`` on the dense fast path,
    so the default federation needs no PyTorch and starts without importing it; only its
    initial weights differ (drawn by NumPy rather than ``torch.nn.Linear``).
    """
    exp = Experiment()
    exp.model.framework = "numpy"
    return exp


def register_section(name: str, cls: type) -> type:
    if not is_dataclass(cls):
        raise TypeError(f"section {name!r} must be a dataclass")
    SECTIONS[name] = cls
    return cls


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(key: str, value: Any, tp: Any, meta: typing.Mapping[str, Any]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check_value(key, value, args[0], meta)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_value(f"{key}[{i}]", v, item, {}) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__} {value!r}")
        _, vt = typing.get_args(tp)
        return {str(k): _check_value(f"{key}.{k}", v, vt, {}) for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        value = float(value)
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
    elif tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
    elif tp is Any:
        return value
    choices = meta.get("choices")
    if choices and value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}{hint}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and (value < lo or (meta.get("exclusive_min") and value == lo)):
        op = ">" if meta.get("exclusive_min") else ">="
        raise ConfigError(f"{key}: must be {op} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: must be <= {hi}, got {value!r}")
    return value


def _unknown(key: str, valid: typing.Iterable[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f"; did you mean '{where}{close[0]}'?" if close else ""
    return ConfigError(f"unknown key '{where}{key}'{hint}")


def build_section(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in fields(cls) if f.name != "extensions"}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in names:
            raise _unknown(key, names, prefix)
        f = names[key]
        tp = hints[key]
        if is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"[{prefix}{key}] must be a table")
            kwargs[key] = build_section(tp, value, f"{prefix}{key}.")  # type: ignore[arg-type]
        else:
            kwargs[key] = _check_value(prefix + key, value, tp, f.metadata)
    return cls(**kwargs)


def from_dict(raw: dict[str, Any]) -> Experiment:
    """Build and check an :class:`Experiment` from parsed TOML."""
    known = {f.name for f in fields(Experiment) if f.name != "extensions"}
    core = {k: v for k, v in raw.items() if k in known}
    extra = {k: v for k, v in raw.items() if k not in known}
    for key, value in extra.items():
        if key not in SECTIONS:
            from fedge.plugins import missing_section, registry

            if (why := missing_section(key)) is not None:
                raise ConfigError(why)
            if key not in SECTIONS:
                raise _unknown(key, [*known, *SECTIONS, *registry.names("sections")], "")
        if not isinstance(value, dict):
            raise ConfigError(f"[{key}] must be a table")
    exp: Experiment = build_section(Experiment, core, "")
    for key, value in extra.items():
        exp.extensions[key] = build_section(SECTIONS[key], value, f"{key}.")
    return exp


def load(path: str) -> Experiment:
    """Read and check an experiment TOML file."""
    import tomllib
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    from fedge.usercode import add_search_paths

    add_search_paths([p.resolve().parent])  # entry points import from the experiment file's folder
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    try:
        return from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def _section_lines(obj: Any) -> list[str]:
    lines = []
    for f in fields(obj):
        if f.name == "extensions" or is_dataclass(getattr(obj, f.name)):
            continue
        doc = f.metadata.get("doc", "")
        choices = f.metadata.get("choices")
        if choices:
            doc += f" [{' | '.join(map(str, choices))}]"
        lines.append(f"# {doc}")
        lines.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
    return lines


def to_toml(
    exp: Experiment, *, commented: bool = True, used: bool = False, only: typing.Collection[str] | None = None
) -> str:
    """The experiment as TOML; with ``commented`` every key carries its documentation.

    By default every registered section is written (``fedge init`` documents them all). With
    ``used`` only the extension sections the experiment holds (set in its file, or read by a
    part of the run) are written: what a run folder keeps. ``only`` further limits them to
    those names (what a deployed node receives).
    """
    out = _section_lines(exp)
    if not used and only is None:
        from fedge.plugins import registry

        registry.load_all()
    sections = [(name, getattr(exp, name)) for name in CORE_SECTIONS]
    names = set(exp.extensions) if used or only is not None else set(SECTIONS) | set(exp.extensions)
    if only is not None:
        names &= set(only)
    sections += [(name, exp.section(name)) for name in sorted(names)]
    for name, sec in sections:
        out += ["", f"[{name}]", *_section_lines(sec)]
    text = "\n".join(out) + "\n"
    if not commented:
        text = "\n".join(line for line in text.splitlines() if not line.startswith("#")) + "\n"
    return text


def to_dict(obj: Any) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if f.name == "extensions":
            d.update({k: to_dict(s) for k, s in v.items()})
        elif is_dataclass(v):
            d[f.name] = to_dict(v)
        else:
            d[f.name] = v
    return d
