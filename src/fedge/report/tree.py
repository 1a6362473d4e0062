"""The hierarchy in ``fedge report``: the tree of relays and what crossed each tier.

Two kinds of run folder hold a tree, and the report reads only what each already holds:

* a simulated ``[hierarchy]`` run: ``config.toml``'s section (``zones_per_vehicle``) and the
  client count give the topology (relay ``v`` has clients ``v*n .. v*n+n-1``);
  ``summary.json["hierarchy"]`` (:func:`fedge.hierarchy.tier_totals`) gives the bytes per link
  and the joules per tier, else they are summed from the rounds' ``extra``;
* a served run with ``fedge relay`` processes: each round's ``extra["relay_sums"]``, written by
  the cloud as each relay's partial sum is accepted, names the relay node, its client-id block,
  the children in its sum and the bytes of its push (the WAN). What a relay's children sent it
  (the LAN) only that relay saw, so the report says so instead of a number.

The tree is inline SVG (no script): the cloud, at most :data:`MAX_DRAWN` relays with their
children's count, and one "… N more" box for the rest.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

from fedge.report.runs import RunData

MAX_DRAWN = 12
"""Relays drawn one by one; the rest are one box."""
RELAY_SUMS = "relay_sums"
"""``extra`` key of a served round: ``{relay node id: {name, first, clients, selected, children,
first_child, last_child, wan_up_bytes}}`` (see :func:`fedge.deploy.transport.record_relay`)."""
LAN_UNKNOWN = "known only to each relay: its children's traffic never reaches the cloud"


@dataclass(frozen=True)
class RelayRow:
    """One relay as the report draws it."""

    name: str
    """Its allow-list name (served; its node id when the line has none), or ``relay v`` (simulated)."""
    first: int
    clients: int
    """The relay's client-id block: ``first .. first + clients - 1``."""
    children: int
    """Children in its sum: in the last round it answered (served), its whole block (simulated)."""
    wan_up_bytes: float | None = None
    """What it pushed the cloud over the run (served); None where only the tier's total is known."""
    rounds: int = 0


@dataclass(frozen=True)
class TierRow:
    """One tier's traffic and cost over the run; None where the run did not record it."""

    tier: str
    up_bytes: float | None
    down_bytes: float | None
    energy_j: float | None = None
    note: str = ""


@dataclass
class Tree:
    """A run's hierarchy: the relays (only the first :data:`MAX_DRAWN` as rows), the tiers, notes."""

    served: bool
    num_relays: int
    num_clients: int
    relays: list[RelayRow]
    tiers: list[TierRow]
    sim_clock_s: float | None = None
    notes: list[str] = field(default_factory=list)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _client_count(run: RunData) -> int | None:
    n = run.summary.get("num_clients")
    if not isinstance(n, int) or isinstance(n, bool):
        data = run.config.get("data")
        n = data.get("num_clients") if isinstance(data, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def _simulated(run: RunData) -> Tree | None:
    sec = run.config.get("hierarchy")
    if not isinstance(sec, dict) or not sec.get("enabled"):
        return None
    fanout, clients = sec.get("zones_per_vehicle"), _client_count(run)
    if not isinstance(fanout, int) or fanout < 1 or clients is None or clients % fanout:
        return None
    totals = run.summary.get("hierarchy")
    if not isinstance(totals, dict):
        from fedge.hierarchy import tier_totals

        totals = tier_totals(run.history) or {}
    relays = clients // fanout
    rows = [RelayRow(f"relay {v}", v * fanout, fanout, fanout) for v in range(min(relays, MAX_DRAWN))]
    tiers = [
        TierRow(
            "devices ↔ relays (LAN)",
            _num(totals.get("lan_up_bytes")),
            _num(totals.get("lan_down_bytes")),
            _num(totals.get("device_energy_j")),
            "energy: the devices' training and LAN time",
        ),
        TierRow(
            "relays ↔ cloud (WAN)",
            _num(totals.get("wan_up_bytes")),
            _num(totals.get("wan_down_bytes")),
            _num(totals.get("gateway_energy_j")),
            "energy: the gateways' radio time",
        ),
    ]
    mode = sec.get("relay", "aggregate")
    notes = [
        f"simulated: {relays} relays of {fanout} children, κ1 = {sec.get('kappa1', '–')}, relay = {mode!r}; "
        "bytes and energy from the virtual clock's cost model (docs/hierarchy.md)"
    ]
    return Tree(False, relays, clients, rows, tiers, _num(totals.get("sim_clock_s")), notes)


def _served(run: RunData) -> Tree | None:
    seen: dict[str, dict[str, Any]] = {}
    relay_up = total_up = 0.0
    for rec in run.history:
        sums = rec.extra.get(RELAY_SUMS)
        total_up += rec.uplink_bytes
        if not isinstance(sums, dict):
            continue
        for node, e in sums.items():
            if not isinstance(e, dict):
                continue
            row = seen.setdefault(str(node), {"wan": 0.0, "rounds": 0})
            row.update(
                name=str(e.get("name") or node),
                first=int(e.get("first", 0)),
                clients=int(e.get("clients", 0)),
                children=int(e.get("children", 0)),
            )
            up = _num(e.get("wan_up_bytes")) or 0.0
            row["wan"] += up
            row["rounds"] += 1
            relay_up += up
    if not seen:
        return None
    ordered = sorted(seen.items(), key=lambda kv: (kv[1]["first"], kv[0]))
    rows = [
        RelayRow(r["name"], r["first"], r["clients"], r["children"], r["wan"], r["rounds"])
        for _, r in ordered[:MAX_DRAWN]
    ]
    tiers = [
        TierRow("children ↔ relays (LAN)", None, None, None, LAN_UNKNOWN),
        TierRow("relays ↔ cloud (WAN)", relay_up, None, None, "up: the relays' pushes as the cloud received them"),
    ]
    if total_up > relay_up:
        tiers.append(TierRow("nodes ↔ cloud (direct)", total_up - relay_up, None, None, "nodes that are no relay"))
    clients = _client_count(run) or sum(r["clients"] for r in seen.values())
    notes = [
        f"served: {len(seen)} relays answered the cloud; a relay's children are counted in the last round it "
        "answered; downlink is not recorded per relay"
    ]
    return Tree(True, len(seen), clients, rows, tiers, None, notes)


def hierarchy(run: RunData) -> Tree | None:
    """The run's tree (simulated ``[hierarchy]`` or served relays), or None for a flat run."""
    return _simulated(run) or _served(run)


def _bytes(v: float | None) -> str:
    if v is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.3g} {unit}"
    return f"{v:.0f} B"


def _ids(first: int, clients: int) -> str:
    return f"client {first}" if clients == 1 else f"clients {first}–{first + clients - 1}"


def svg(tree: Tree) -> str:
    """The tree as inline SVG: the cloud, its relays (each with its block and, served, its WAN bytes),
    under each relay its children's box, and '… N more' for the relays past :data:`MAX_DRAWN`."""
    boxes: list[tuple[str, list[str], dict[str, str], str]] = [
        (
            "relay",
            [r.name[:16], _ids(r.first, r.clients)]
            + ([f"WAN ↑ {_bytes(r.wan_up_bytes)}"] if r.wan_up_bytes is not None else []),
            {"data-children": str(r.children), "data-first": str(r.first), "data-clients": str(r.clients)},
            f"{r.children} of {r.clients}" if tree.served else f"{r.children} children",
        )
        for r in tree.relays
    ]
    rest = tree.num_relays - len(tree.relays)
    if rest > 0:
        boxes.append(("more", [f"… {rest} more", "relays"], {"data-relays": str(rest)}, ""))
    w, gap, top, low = 92, 8, 64, 130
    width = max(len(boxes) * (w + gap) + gap, 3 * w)
    cx = width / 2
    out = [
        f'<svg id="hierarchy-tree" class="tree" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{low + 30}" viewBox="0 0 {width} {low + 30}" data-relays="{tree.num_relays}" '
        f'data-clients="{tree.num_clients}" font-family="sans-serif" font-size="11">',
        f'<rect x="{cx - 70}" y="4" width="140" height="30" rx="4" fill="#264653"/>'
        f'<text x="{cx}" y="23" fill="#fff" text-anchor="middle">cloud · {tree.num_clients} clients</text>',
    ]
    for i, (kind, lines, attrs, children) in enumerate(boxes):
        x = gap + i * (w + gap)
        mid = x + w / 2
        extra = "".join(f' {k}="{html.escape(v)}"' for k, v in attrs.items())
        fill = "#e9f5f3" if kind == "relay" else "#f3f3f3"
        out.append(f'<g class="{kind}"{extra}>')
        out.append(f'<line x1="{cx}" y1="34" x2="{mid}" y2="{top}" stroke="#999"/>')
        out.append(
            f'<rect x="{x}" y="{top}" width="{w}" height="{10 + 13 * len(lines)}" rx="4" '
            f'fill="{fill}" stroke="#2a9d8f"/>'
        )
        for j, line in enumerate(lines):
            out.append(f'<text x="{mid}" y="{top + 16 + 13 * j}" text-anchor="middle">{html.escape(line)}</text>')
        if children:
            out.append(
                f'<line x1="{mid}" y1="{top + 10 + 13 * len(lines)}" x2="{mid}" y2="{low}" stroke="#999"/>'
                f'<rect class="children" x="{x + 8}" y="{low}" width="{w - 16}" height="22" rx="4" '
                f'fill="#fff" stroke="#999"/>'
                f'<text x="{mid}" y="{low + 15}" text-anchor="middle">{html.escape(children)}</text>'
            )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


def _bar_items(tree: Tree) -> list[tuple[str, float]]:
    if tree.served:
        items = [(f"{r.name[:16]} WAN ↑", r.wan_up_bytes or 0.0) for r in tree.relays]
        items += [(t.tier.split(" (")[0], t.up_bytes) for t in tree.tiers[2:] if t.up_bytes is not None]
        return items
    out = []
    for t in tree.tiers:
        link = t.tier.rsplit("(", 1)[-1].rstrip(")")
        out += [(f"{link} {arrow}", v) for arrow, v in (("↑", t.up_bytes), ("↓", t.down_bytes)) if v is not None]
    return out


def bars(tree: Tree) -> str:
    """The bytes of each link (simulated) or each drawn relay's WAN bytes (served) as horizontal SVG bars."""
    items = _bar_items(tree)
    if not items:
        return ""
    top = max(v for _, v in items) or 1.0
    label_w, bar_w, row = 150, 240, 18
    out = [
        f'<svg id="tier-bars" class="tree" xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 90}" '
        f'height="{row * len(items) + 6}" font-family="sans-serif" font-size="10">'
    ]
    for i, (label, v) in enumerate(items):
        y = 3 + i * row
        out.append(
            f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">{html.escape(label)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 2}" width="{bar_w * v / top:.1f}" height="{row - 6}" '
            f'fill="#2a9d8f" data-bytes="{v:.17g}"/>'
            f'<text x="{label_w + bar_w * v / top + 4:.1f}" y="{y + 12}">{html.escape(_bytes(v))}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def tier_table(tree: Tree) -> str:
    """Bytes up and down and energy per tier; each byte cell carries its number in ``data-bytes``."""

    def cell(v: float | None, unit: str = "bytes") -> str:
        if v is None:
            return "<td>–</td>"
        shown = _bytes(v) if unit == "bytes" else f"{v:.4g} J"
        return f'<td data-{unit}="{v:.17g}">{html.escape(shown)}</td>'

    rows = "".join(
        f"<tr><th>{html.escape(t.tier)}</th>{cell(t.up_bytes)}{cell(t.down_bytes)}{cell(t.energy_j, 'joules')}"
        f'<td class="note">{html.escape(t.note)}</td></tr>'
        for t in tree.tiers
    )
    clock = (
        f'<p>simulated time: <span id="sim-clock" data-seconds="{tree.sim_clock_s:.17g}">{tree.sim_clock_s:.4g} s'
        "</span> (the cloud round waits for its slowest relay)</p>"
        if tree.sim_clock_s is not None
        else ""
    )
    return (
        f'<table id="tiers"><tr><th>tier</th><th>up</th><th>down</th><th>energy</th><th></th></tr>{rows}</table>{clock}'
    )


def section(run: RunData) -> str:
    """The report's "Hierarchy" part for ``run``: tree, tier table and notes ('' for a flat run)."""
    tree = hierarchy(run)
    if tree is None:
        return ""
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in tree.notes)
    return (
        f'<section id="hierarchy"><h3>Hierarchy</h3><figure>{svg(tree)}</figure>{tier_table(tree)}'
        f"<figure>{bars(tree)}</figure>{notes}</section>"
    )
