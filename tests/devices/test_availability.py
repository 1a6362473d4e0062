import json
import pickle

import pytest

from fedge.core.errors import DataError
from fedge.devices.availability import ChargingOnly, Diurnal, load_trace

TRACE = {
    1: {"active": [0, 100], "inactive": [50, 150], "finish_time": 200, "duration": 200, "model": "x"},
    2: {"active": [10], "inactive": [20], "finish_time": 100, "duration": 100, "model": "y"},
}


def test_fedscale_pickle_trace(tmp_path):
    f = tmp_path / "client_behave_trace"
    f.write_bytes(pickle.dumps(TRACE))
    av = load_trace(f)
    assert av.online([0, 1], 25) == [0]
    assert av.online([0, 1], 15) == [0, 1]
    assert av.online([0, 1], 75) == []
    assert av.online([0, 1], 215) == [0, 1]  # the period repeats every finish_time
    assert av.online([2], 120) == [2]  # client 2 wraps to the first trace


def test_json_trace(tmp_path):
    f = tmp_path / "trace.json"
    f.write_text(json.dumps({str(k): v for k, v in TRACE.items()}))
    assert load_trace(f).online([0, 1], 15) == [0, 1]


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    f = tmp_path / "evil.pkl"
    f.write_bytes(pickle.dumps({1: Evil()}))
    with pytest.raises(DataError, match=r"evil\.pkl: not a FedScale trace pickle: refusing to load builtins\.print"):
        load_trace(f)


@pytest.mark.parametrize("content", [b'{"1": {"active": [0]}}', b"[1, 2, 3]", b"\x80\x04K\x01."])
def test_wrong_format_is_one_line(tmp_path, content):
    f = tmp_path / "t.bin"
    f.write_bytes(content)
    with pytest.raises(DataError, match=r"t\.bin") as exc:
        load_trace(f)
    assert "\n" not in str(exc.value)


def test_diurnal_follows_local_time():
    d = Diurnal(seed=3, slot_s=3600)
    ids = list(range(400))
    counts = [len(d.online(ids, h * 3600.0)) for h in range(24)]
    assert 0.2 * 400 < sum(counts) / 24 < 0.8 * 400
    assert d.online(ids, 7200.0) == d.online(ids, 7200.0)
    # one client's probability swings between low and high over its day
    probs = [d.probability(5, h * 3600.0) for h in range(24)]
    assert max(probs) > 0.85 and min(probs) < 0.15


def test_charging_only_is_a_nightly_window():
    c = ChargingOnly(seed=1)
    for cid in range(20):
        hours = [h for h in range(48) if c.online([cid], h * 3600.0)]
        assert 4 <= len(hours) / 2 <= 10
        assert c.online([cid], 5 * 3600.0) == c.online([cid], 29 * 3600.0)
