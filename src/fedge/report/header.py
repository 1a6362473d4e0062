"""The report header: what a run was, read from the ``config.toml`` it wrote.

One row per setting a reader needs to interpret the curves — strategy and its own
hyperparameter, model, partition, population, cohort, local training, backend — and one
row per *enabled* extension section (privacy, compression, secure aggregation, devices,
attack). A section left at its default is not shown, so the header stays short.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Section = Mapping[str, Any]
Row = tuple[str, str]

STRATEGY_KEYS: dict[str, tuple[str, ...]] = {
    "fedprox": ("mu",),
    "fedavgm": ("momentum",),
    "fedadam": ("beta1", "beta2", "tau"),
    "fedyogi": ("beta1", "beta2", "tau"),
    "fedadagrad": ("beta1", "tau"),
    "qfedavg": ("q",),
}
"""The strategy-specific ``[strategy]`` keys shown next to the strategy's name."""


def _section(config: Mapping[str, Any], name: str) -> Section:
    value = config.get(name)
    return value if isinstance(value, Mapping) else {}


def _g(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _strategy(config: Mapping[str, Any]) -> str:
    s = _section(config, "strategy")
    name = str(s.get("name", "fedavg"))
    parts = [f"{k} = {_g(s[k])}" for k in STRATEGY_KEYS.get(name, ()) if k in s]
    if s.get("server_lr", 1.0) != 1.0:
        parts.append(f"server_lr = {_g(s['server_lr'])}")
    return f"{name} ({', '.join(parts)})" if parts else name


def _model(config: Mapping[str, Any]) -> str:
    m = _section(config, "model")
    if m.get("factory"):
        return f"{m['factory']} (your own factory)"
    name, framework = str(m.get("name", "?")), m.get("framework")
    hidden = m.get("hidden")
    shape = f", hidden {list(hidden)}" if name == "mlp" and isinstance(hidden, list) else ""
    return f"{name} ({framework}{shape})" if framework else name


def _partition(config: Mapping[str, Any]) -> str:
    d = _section(config, "data")
    scheme = str(d.get("partition", "?"))
    if d.get("loader"):
        return f"your own loader {d['loader']}"
    if d.get("client_column"):
        return f"natural, by column {d['client_column']!r}"
    detail = {
        "dirichlet": f"α = {_g(d.get('alpha', '?'))}",
        "shards": f"{d.get('shards_per_client', '?')} shards per client",
        "powerlaw": f"exponent {_g(d.get('powerlaw_exponent', '?'))}",
    }.get(scheme)
    return f"{scheme} ({detail})" if detail else scheme


def _cohort(config: Mapping[str, Any]) -> str:
    t = _section(config, "training")
    n = t.get("clients_per_round", "?")
    if n == 0:
        return f"{_g(t.get('fraction', '?'))} of the available clients"
    return str(n)


def _privacy(s: Section) -> str | None:
    mode = s.get("mode", "off")
    if mode in ("off", None):
        return None
    if mode == "local":
        return (
            f"local DP ({s.get('local_mechanism')}, ε = {_g(s.get('local_epsilon'))}, δ = {_g(s.get('local_delta'))})"
        )
    target = s.get("target_epsilon", 0.0)
    budget = f"target ε = {_g(target)}, " if target else ""
    return (
        f"{mode} DP ({budget}δ = {_g(s.get('delta'))}, noise multiplier {_g(s.get('noise_multiplier'))}, "
        f"clip {_g(s.get('clip_norm'))})"
    )


def _compression(s: Section) -> str | None:
    up, down = s.get("codec", "none"), s.get("downlink", "none")
    if up == "none" and down == "none":
        return None
    return f"uplink {up}, downlink {down}"


def _secagg(s: Section) -> str | None:
    if not s.get("enabled"):
        return None
    neighbours = s.get("neighbours", 0)
    return f"on ({'SecAgg+, ' + str(neighbours) + ' neighbours' if neighbours else 'SecAgg'})"


def _devices(s: Section) -> str | None:
    if not s.get("enabled"):
        return None
    fleet = s.get("fleet")
    mix = ", ".join(f"{k} {_g(v)}" for k, v in fleet.items()) if isinstance(fleet, Mapping) else "?"
    return f"{mix}; policy {s.get('policy')}, selection {s.get('selection')}"


def _attack(s: Section) -> str | None:
    kind = s.get("kind", "none")
    return None if kind in ("none", None) else f"{kind} ({_g(s.get('fraction'))} of the clients)"


EXTENSIONS: tuple[tuple[str, str, Callable[[Section], str | None]], ...] = (
    ("privacy", "privacy", _privacy),
    ("compression", "compression", _compression),
    ("secagg", "secure aggregation", _secagg),
    ("devices", "devices", _devices),
    ("attack", "attack simulation", _attack),
)
"""``(config section, row label, describe)``: ``describe`` returns ``None`` when the section is off."""


def settings_rows(config: Mapping[str, Any], *, num_clients: int | None = None) -> list[Row]:
    """The header rows of a run, from its parsed ``config.toml`` (empty when there is none).

    ``num_clients`` is the population the run really had (its partition), which can differ
    from ``[data] num_clients`` for per-client files; the configured value is the fallback.
    """
    if not config:
        return []
    t = _section(config, "training")
    clients = num_clients if num_clients is not None else _section(config, "data").get("num_clients", "?")
    rows: list[Row] = [
        ("strategy", _strategy(config)),
        ("model", _model(config)),
        ("partition", _partition(config)),
        ("clients", str(clients)),
        ("clients per round", _cohort(config)),
        ("rounds (configured)", str(config.get("rounds", "?"))),
        ("local epochs", str(t.get("local_epochs", "?"))),
        ("learning rate", _g(t.get("lr", "?"))),
        ("batch size", str(t.get("batch_size", "?"))),
        ("backend", str(t.get("backend", "?"))),
        ("seed", str(config.get("seed", "?"))),
    ]
    for section, label, describe in EXTENSIONS:
        text = describe(_section(config, section))
        if text is not None:
            rows.append((label, text))
    return rows
