"""A served tree in the records, ``fedge report`` and ``fedge serve``'s dashboard, over real gRPC on loopback.

The cloud is :func:`~fedge.deploy.server.serve` with its run folder and dashboard, two
``fedge relay`` processes (threads here) of two real nodes each sit below it.
"""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.config import from_dict
from fedge.core.params import ParamSpec
from fedge.deploy.auth import RelayClaim, Signer, load_private
from fedge.deploy.server import serve
from fedge.deploy.service import Relayed, _Verdict, partial_from_tree
from fedge.deploy.transport import _relayed
from fedge.engine.aggregator import PartialSum, Reducer, Validator
from fedge.pipeline import Pipeline, RoundContext
from fedge.report.deploy_status import ServeDashboard
from fedge.report.html import write_report
from fedge.report.runs import load_run
from fedge.report.tree import LAN_UNKNOWN, RELAY_SUMS, hierarchy
from fedge.strategies.fedavg import FedAvg

from .conftest import bare_deploy, free_port
from .test_relay import RAW, keyring, pub, relay_config, start_relay
from .test_relay import tree as sum_tree
from .test_transport import start_node, stop_nodes

pytestmark = pytest.mark.integration


def served_tree(tmp_path: Path) -> tuple[Any, ServeDashboard, dict[str, str]]:
    """Cloud <- relays r0 (clients 0, 1) and r1 (clients 2, 3) <- devices d0..d3: the cloud's ``Served``,
    its dashboard (still serving) and each relay's node id by name."""
    keys = keyring(tmp_path, ["r0", "r1", "d0", "d1", "d2", "d3"])
    allow = tmp_path / "allow-cloud.txt"
    allow.write_text(pub(keys["r0"], "relay=2") + pub(keys["r1"], "relay=2"))
    exp = from_dict({**RAW, "deploy": {**bare_deploy(tmp_path, allow, 4), "round_deadline_s": 60.0}})
    board = ServeDashboard(port=0, poll_s=0.05)
    ready, ports, out = threading.Event(), list[int](), dict[str, Any]()

    def main() -> None:
        out["served"] = serve(
            exp,
            on_ready=lambda p: (ports.append(p), ready.set()),
            linger_s=0.5,
            transport_hook=board,
            output=tmp_path / "run",
        )

    t = threading.Thread(target=main)
    t.start()
    assert ready.wait(30), "the cloud did not start"
    for r in range(2):
        kids = [f"d{2 * r}", f"d{2 * r + 1}"]
        cfg = relay_config(tmp_path, f"r{r}", [pub(keys[k]) for k in kids], free_port())
        start_relay(ports[0], keys[f"r{r}"], cfg, partition=2 * r)
        for k in kids:
            start_node(cfg.port, keys[k], None, int(k[1:]))
    t.join(120)
    stop_nodes()
    assert not t.is_alive(), "the cloud did not finish"
    ids = {n: Signer(load_private(keys[n])).node_id for n in ("r0", "r1")}
    return out["served"], board, ids


def test_each_served_round_records_its_relays_and_fedge_report_draws_them(tmp_path: Path) -> None:
    served, board, _ = served_tree(tmp_path)
    try:
        assert served.output is not None
        run = load_run(served.output)
        assert len(run.history) == 3
        for rec in run.history:
            sums = rec.extra[RELAY_SUMS]
            assert sorted(
                (e["name"], e["first"], e["clients"], e["children"], e["selected"]) for e in sums.values()
            ) == [
                ("r0", 0, 2, 2, 2),
                ("r1", 2, 2, 2, 2),
            ]
            assert sorted((e["first_child"], e["last_child"]) for e in sums.values()) == [(0, 1), (2, 3)]
            assert all(e["wan_up_bytes"] > 0 for e in sums.values())
            assert sum(e["wan_up_bytes"] for e in sums.values()) == rec.uplink_bytes

        tree = hierarchy(run)
        assert tree is not None and tree.served and tree.num_relays == 2
        assert [r.name for r in tree.relays] == ["r0", "r1"]
        total_up = sum(r.uplink_bytes for r in run.history)
        assert sum(r.wan_up_bytes or 0 for r in tree.relays) == total_up
        page = write_report([served.output]).read_text()
        svg = ET.fromstring(re.search(r'<svg id="hierarchy-tree".*?</svg>', page, re.S).group(0))  # type: ignore[union-attr]
        relays = svg.findall("{http://www.w3.org/2000/svg}g[@class='relay']")
        assert [(g.get("data-first"), g.get("data-clients"), g.get("data-children")) for g in relays] == [
            ("0", "2", "2"),
            ("2", "2", "2"),
        ]
        assert ["".join(g.itertext()).startswith(n) for g, n in zip(relays, ("r0", "r1"), strict=True)] == [True, True]
        bars = re.search(r'<svg id="tier-bars".*?</svg>', page, re.S)
        assert bars
        drawn = [
            float(b.get("data-bytes", "nan"))
            for b in ET.fromstring(bars.group(0)).iter("{http://www.w3.org/2000/svg}rect")
        ]
        assert drawn == [r.wan_up_bytes for r in tree.relays]
        wan = re.search(r"<tr><th>relays ↔ cloud \(WAN\)</th><td data-bytes=\"([^\"]+)\"", page)
        assert wan and float(wan.group(1)) == total_up
        assert LAN_UNKNOWN.replace("'", "&#x27;") in page
    finally:
        board.close()


def test_the_serve_dashboard_lists_each_relay_with_its_block_children_and_wan_bytes(
    tmp_path: Path, browser: Any
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    served, board, ids = served_tree(tmp_path)
    try:
        assert board.source is not None and board.dashboard is not None
        last = list(served.history)[-1].extra[RELAY_SUMS]
        snap = board.source.snapshot()
        rows = {r["node"]: r for r in snap["relays"]}
        assert sorted(rows) == ["r0", "r1"]
        for name, first in (("r0", 0), ("r1", 2)):
            row = rows[name]
            assert (row["node_id"], row["first"], row["clients"], row["children"], row["round"]) == (
                ids[name],
                first,
                2,
                2,
                3,
            )
            assert row["wan_up_bytes"] == last[ids[name]]["wan_up_bytes"]
        browser.get(board.dashboard.url)
        WebDriverWait(browser, 30, poll_frequency=0.2).until(
            lambda d: d.execute_script("return document.querySelectorAll('#relays tr.relay').length === 2")
        )
        cells = browser.execute_script(
            "return Array.from(document.querySelectorAll('#relays tr.relay'))"
            ".map(tr => Array.from(tr.cells).map(td => td.textContent))"
        )
        assert sorted(c[:3] for c in cells) == [["r0", "0–1", "2 of 2"], ["r1", "2–3", "2 of 2"]]
        assert all(c[3].endswith(" B") or c[3].endswith("kB") for c in cells)
        note = browser.execute_script("return document.getElementById('relaynote').textContent")
        assert "known only to that relay" in note
    finally:
        board.close()


def test_only_an_accepted_relay_sum_is_recorded_and_with_its_ids_as_count_and_range() -> None:
    """``relay_sums`` is what the cloud took: a refused sum (wrong terms) leaves no entry, an accepted
    one its block, its children as a count and a range, and its push's bytes."""
    spec = ParamSpec(((3, 2),))
    rctx = RoundContext(round_num=1, rng=np.random.default_rng(0), spec=spec, num_sampled=3)
    reducer = Reducer(FedAvg(), Pipeline([]), rctx, Validator(spec))
    bad = Relayed(frozenset({4, 5}), PartialSum({"delta": [np.ones((3, 2))]}, [4], 1), "n-bad", range(4, 6), "bad")
    refused = list(_relayed(bad, _Verdict(), reducer))
    assert [type(f).__name__ for f in refused] == ["ClientFailure", "ClientFailure"]  # no sum, nothing noted
    item = partial_from_tree(sum_tree([8, 10]), frozenset({8, 10, 11}), RelayClaim(4))
    item.uplink_bytes = 777
    verdict = _Verdict()
    (out,) = _relayed(Relayed(frozenset({8, 10, 11}), item, "n-ok", range(8, 12), "vehicle-2"), verdict, reducer)
    assert verdict.accepted and out is item and [f.client_id for f in item.failures] == [11]
    assert item.relay == {
        "node": "n-ok",
        "name": "vehicle-2",
        "first": 8,
        "clients": 4,
        "selected": 3,
        "children": 2,
        "first_child": 8,
        "last_child": 10,
        "wan_up_bytes": 777,
    }
