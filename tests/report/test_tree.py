"""``fedge report`` on a simulated ``[hierarchy]`` run: the tree of relays and the per-tier traffic."""

from __future__ import annotations

import json
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fedge.config.schema import from_dict
from fedge.experiment import run_experiment
from fedge.report.html import write_report
from fedge.report.runs import load_run
from fedge.report.tree import MAX_DRAWN, hierarchy

HIER_TOML = """
seed = 1
rounds = 2
[data]
num_clients = {clients}
[model]
name = "logreg"
framework = "numpy"
[training]
clients_per_round = {per_round}
local_epochs = 1
[hierarchy]
enabled = true
zones_per_vehicle = 4
kappa1 = 2
"""
SVG = "{http://www.w3.org/2000/svg}"


def hier_run(tmp_path: Path, clients: int, per_round: int) -> Path:
    exp = from_dict(tomllib.loads(HIER_TOML.format(clients=clients, per_round=per_round)))
    _, path = run_experiment(exp, output=str(tmp_path / f"hier{clients}"))
    return path


def drawn_tree(page: str) -> ET.Element:
    found = re.search(r'<svg id="hierarchy-tree".*?</svg>', page, re.S)
    assert found, "the report has no tree"
    return ET.fromstring(found.group(0))


def bar_bytes(page: str) -> list[float]:
    """The bytes behind each bar of the traffic figure, in order."""
    found = re.search(r'<svg id="tier-bars".*?</svg>', page, re.S)
    assert found, "the report has no traffic figure"
    return [float(r.get("data-bytes", "nan")) for r in ET.fromstring(found.group(0)).iter(f"{SVG}rect")]


def tier_cells(page: str) -> list[tuple[str, list[float], list[float]]]:
    """Each tier row of the table: its name, the numbers of its byte cells, of its energy cell."""
    table = re.search(r'<table id="tiers">(.*?)</table>', page, re.S)
    assert table
    rows = []
    for name, cells in re.findall(r"<tr><th>([^<]*)</th>(.*?)</tr>", table.group(1), re.S):
        if "<td" not in cells:
            continue
        rows.append(
            (
                name,
                [float(v) for v in re.findall(r'data-bytes="([^"]+)"', cells)],
                [float(v) for v in re.findall(r'data-joules="([^"]+)"', cells)],
            )
        )
    return rows


def test_a_simulated_hierarchy_report_draws_each_relay_and_the_tiers_of_summary_json(tmp_path: Path) -> None:
    run = hier_run(tmp_path, clients=8, per_round=8)
    page = write_report([run]).read_text()
    svg = drawn_tree(page)
    assert (svg.get("data-relays"), svg.get("data-clients")) == ("2", "8")
    relays = svg.findall(f"{SVG}g[@class='relay']")
    assert [(g.get("data-first"), g.get("data-children")) for g in relays] == [("0", "4"), ("4", "4")]
    assert svg.findall(f"{SVG}g[@class='more']") == []
    totals = json.loads((run / "summary.json").read_text())["hierarchy"]
    assert tier_cells(page) == [
        ("devices ↔ relays (LAN)", [totals["lan_up_bytes"], totals["lan_down_bytes"]], [totals["device_energy_j"]]),
        ("relays ↔ cloud (WAN)", [totals["wan_up_bytes"], totals["wan_down_bytes"]], [totals["gateway_energy_j"]]),
    ]
    assert totals["wan_up_bytes"] > 0 and totals["lan_up_bytes"] > totals["wan_up_bytes"]
    assert bar_bytes(page) == [totals[k] for k in ("lan_up_bytes", "lan_down_bytes", "wan_up_bytes", "wan_down_bytes")]
    clock = re.search(r'id="sim-clock" data-seconds="([^"]+)"', page)
    assert clock and float(clock.group(1)) == totals["sim_clock_s"]


def test_beyond_twelve_relays_the_rest_are_one_box(tmp_path: Path) -> None:
    run = hier_run(tmp_path, clients=60, per_round=20)
    svg = drawn_tree(write_report([run]).read_text())
    assert svg.get("data-relays") == "15"
    assert len(svg.findall(f"{SVG}g[@class='relay']")) == MAX_DRAWN
    (more,) = svg.findall(f"{SVG}g[@class='more']")
    assert more.get("data-relays") == str(15 - MAX_DRAWN)
    assert "… 3 more" in "".join(more.itertext())


def test_without_summary_totals_the_tiers_are_summed_from_the_rounds(tmp_path: Path) -> None:
    run = hier_run(tmp_path, clients=8, per_round=4)
    summary = json.loads((run / "summary.json").read_text())
    totals = summary.pop("hierarchy")
    (run / "summary.json").write_text(json.dumps(summary))
    tree = hierarchy(load_run(run))
    assert tree is not None and not tree.served
    lan, wan = tree.tiers
    assert (lan.up_bytes, lan.down_bytes, wan.up_bytes, wan.down_bytes) == pytest.approx(
        (totals["lan_up_bytes"], totals["lan_down_bytes"], totals["wan_up_bytes"], totals["wan_down_bytes"])
    )


def test_a_flat_run_has_no_hierarchy_section(real_run: Path, tmp_path: Path) -> None:
    page = write_report([real_run], out=tmp_path / "rep").read_text()
    assert 'id="hierarchy"' not in page and hierarchy(load_run(real_run)) is None
