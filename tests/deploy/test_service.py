"""The server's handlers without gRPC: update validation and round bookkeeping."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.core.errors import FedgeError
from fedge.core.params import ParamSpec
from fedge.core.types import FitInstructions, TrainConfig
from fedge.deploy import wire
from fedge.deploy.auth import Signer, Verifier, load_private, new_keys
from fedge.deploy.proto import pb
from fedge.deploy.service import FedgeService, RoundTask, ServerStatus, update_from_tree
from fedge.deploy.store import Store

SPEC = ParamSpec(((2, 3),))


def tree(**over: Any) -> dict[str, Any]:
    return {
        "delta": [np.ones((2, 3), np.float32)],
        "num_examples": 5,
        "metrics": {"train_loss": 0.1},
        "extras": {},
        "payload": {},
        **over,
    }


def test_a_well_formed_update_is_built() -> None:
    u = update_from_tree(tree(), 7, SPEC)
    assert u.client_id == 7 and u.num_examples == 5 and u.metrics == {"train_loss": 0.1}


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"delta": [np.ones((3, 2), np.float32)]}, "shape"),
        ({"delta": [np.ones((2, 3), np.float64)]}, "float32"),
        ({"delta": "x"}, "list of tensors"),
        ({"num_examples": -1}, "non-negative"),
        ({"num_examples": 2.5}, "non-negative"),
        ({"metrics": {"loss": "high"}}, "numbers"),
        ({"extras": {"c": [1, 2]}}, "tensor lists"),
    ],
)
def test_malformed_updates_are_refused_with_the_reason(over: dict[str, Any], message: str) -> None:
    with pytest.raises(FedgeError, match=message):
        update_from_tree(tree(**over), 1, SPEC)


@pytest.fixture
def joined(tmp_path: Path) -> tuple[FedgeService, Signer]:
    key, pub = new_keys(tmp_path, "n")
    svc = FedgeService(
        store=Store(tmp_path / "s.db"), verifier=Verifier(pub), run_id="r1", config_toml="", num_clients=2, rounds=1
    )
    signer = Signer(load_private(key))
    join = pb.JoinRequest(partition=1).SerializeToString()
    svc.join(join, signer.metadata("Join", join))
    return svc, signer


def push(svc: FedgeService, signer: Signer, task_id: str, t: dict[str, Any]) -> Any:
    out = wire.encode(t, chunk_size=16)
    head = wire.dump(pb.PushMessage(header=pb.PushHeader(task_id=task_id, round=1, update=out.header)))
    msgs = [head, *[wire.dump(pb.PushMessage(chunk=c)) for c in out.chunks()]]
    return pb.PushReply.FromString(svc.push(iter(msgs), signer.metadata("Push", head)))


def drain(task: RoundTask) -> None:
    def loop() -> None:
        while not task.closed:
            _, verdict = task.results.get()
            verdict.set(True)

    threading.Thread(target=loop, daemon=True).start()


def test_updates_for_another_run_or_a_second_time_are_refused(joined: tuple[FedgeService, Signer]) -> None:
    svc, signer = joined
    task = svc.open_round(1, [1], [np.zeros((2, 3), np.float32)], FitInstructions(1, TrainConfig()))
    drain(task)
    other = push(svc, signer, "r0:old:1", tree())
    assert not other.accepted and "round 1 of run r1 is open" in other.reason
    assert push(svc, signer, task.task_id, tree()).accepted
    again = push(svc, signer, task.task_id, tree())
    assert not again.accepted and "already sent" in again.reason
    svc.close_round(task)
    late = push(svc, signer, task.task_id, tree())
    assert not late.accepted and "no round is open" in late.reason


def test_a_client_not_selected_is_refused(joined: tuple[FedgeService, Signer]) -> None:
    svc, signer = joined
    task = svc.open_round(1, [0], [np.zeros((2, 3), np.float32)], FitInstructions(1, TrainConfig()))
    reply = push(svc, signer, task.task_id, tree())
    assert not reply.accepted and "client 1 was not selected" in reply.reason


def test_status_snapshot_round_trips_through_json(joined: tuple[FedgeService, Signer]) -> None:
    svc, _ = joined
    svc.open_round(1, [1], [np.zeros((2, 3), np.float32)], FitInstructions(1, TrainConfig()))
    st = svc.status()
    assert st.waiting_on == (1,) and st.connected == 1 and st.nodes[0].client_id == 1
    assert ServerStatus.from_json(st.to_json()) == st


def test_tasks_open_at_once_are_each_matched_by_the_id_a_push_names(joined: tuple[FedgeService, Signer]) -> None:
    """An asynchronous run keeps one task per dispatch in flight, each stamped with its model version."""
    svc, signer = joined
    params = [np.zeros((2, 3), np.float32)]
    first = svc.open_round(1, [1], params, FitInstructions(1, TrainConfig()), version=0)
    second = svc.open_round(2, [0], params, FitInstructions(2, TrainConfig()), version=1)
    assert (first.version, second.version) == (0, 1) and set(svc.tasks) == {first.task_id, second.task_id}
    assert svc.status().waiting_on == (0, 1)
    node = next(iter(svc._nodes.values()))
    sent = wire.parse(pb.PollReply, svc.next_for(node) or b"")
    assert sent.task_id == first.task_id  # not the task opened last, which is not client 1's
    stamped = wire.Incoming(sent.task, max_bytes=1 << 20)
    for c in sent.chunks:
        stamped.add(c)
    assert stamped.value()["version"] == 0
    drain(first)
    assert push(svc, signer, first.task_id, tree()).accepted
    wrong = push(svc, signer, second.task_id, tree())
    assert not wrong.accepted and "client 1 was not selected in round 2" in wrong.reason
    svc.close_round(first)
    assert set(svc.tasks) == {second.task_id}
    late = push(svc, signer, first.task_id, tree())
    assert not late.accepted and "round 2 of run r1 is open" in late.reason


def test_a_node_of_a_model_class_gets_its_class_task_and_must_send_its_class_shapes(
    joined: tuple[FedgeService, Signer],
) -> None:
    from fedge.deploy.classes import model_classes
    from fedge.strategies import HeteroFL

    svc, signer = joined
    params = [np.ones((4, 3), np.float32), np.ones(4, np.float32), np.ones((2, 4), np.float32), np.ones(2, np.float32)]
    strategy = HeteroFL(widths={0: 1.0, 1: 0.5})
    task = svc.open_round(1, [0, 1], params, FitInstructions(1, TrainConfig()), model_classes(strategy, params, [0, 1]))
    drain(task)
    node = next(iter(svc._nodes.values()))
    sent = pb.PollReply.FromString(svc.next_for(node) or b"")
    got = wire.decode(sent.task, sent.chunks, max_bytes=1 << 20)
    assert got["model"] == {"width": 0.5, "layout": "mlp"}
    assert [p.shape for p in got["params"]] == [(2, 3), (2,), (2, 2), (2,)]
    req = pb.FetchRequest(task_id=task.task_id, start=0).SerializeToString()
    assert list(svc.fetch(req, signer.metadata("Fetch", req))) == task.chunks_for(1) != task.chunks_for(0)
    whole = push(svc, signer, task.task_id, tree(delta=[np.zeros_like(p) for p in params]))
    assert not whole.accepted and "tensor 0 has shape (4, 3), expected (2, 3)" in whole.reason
    narrow = push(svc, signer, task.task_id, tree(delta=[np.zeros(p.shape, np.float32) for p in got["params"]]))
    assert narrow.accepted, narrow.reason
