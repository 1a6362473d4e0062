import math

import pytest

from fedge.core.errors import DataError
from fedge.devices.report import time_to_target, tta_table
from fedge.simulation.history import History, RoundRecord


def hist(accs, step_s=1800.0, energy=100.0):
    h = History()
    for i, a in enumerate(accs, start=1):
        h.append(
            RoundRecord(round=i, participants=1, test_accuracy=a, extra={"sim_clock_s": i * step_s, "energy_j": energy})
        )
    return h


def test_time_and_energy_to_target():
    r = time_to_target(hist([0.5, 0.8, 0.91, 0.95]), 0.9)
    assert r.round == 3 and r.hours == pytest.approx(1.5) and r.energy_kj == pytest.approx(0.3)
    never = time_to_target(hist([0.5, 0.6]), 0.9)
    assert never.round is None and math.isnan(never.hours) and never.final_accuracy == 0.6


def test_table_speedup_against_baseline():
    res = {
        "wait_all": time_to_target(hist([0.5, 0.95], 3600), 0.9),
        "deadline": time_to_target(hist([0.5, 0.95], 900), 0.9),
    }
    table = tta_table(res, 0.9, baseline="wait_all")
    assert "4.00x" in table.splitlines()[-1]


def test_history_without_devices_is_refused():
    h = History([RoundRecord(round=1, participants=1)])
    with pytest.raises(DataError, match="did not use the device simulation"):
        time_to_target(h, 0.9)
