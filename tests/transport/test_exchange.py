"""The in-process exchange: each client's stage handler answers with its persistent state."""

from __future__ import annotations

from typing import Any

from fedge.clients import LearnerClient, NumpyLogReg
from fedge.core.types import ClientContext, ClientUpdate, TrainConfig
from fedge.data import synthetic
from fedge.pipeline import Pipeline, Transform
from fedge.strategies import FedAvg
from fedge.transport import InProcessTransport, SequentialBackend
from fedge.transport.exchange import CohortSum, Exchanged, Responder

FD = synthetic(0.5, 0.5, num_clients=4, seed=0)
MODEL = NumpyLogReg(60, 10)


class Counter(Transform):
    """Remembers on the client how many examples it trained on; answers "ping" from that state."""

    name = "counter"
    stages = ("ping",)

    def client(self, update: ClientUpdate, ctx: ClientContext) -> ClientUpdate:
        ctx.state["seen"] = ctx.state.get("seen", 0) + update.num_examples
        return update

    def respond(self, stage: str, request: Any, *, client_id: int, state: dict[str, Any]) -> Any:
        if request == "fail":
            raise RuntimeError(f"client {client_id} refuses")
        state["pings"] = state.get("pings", 0) + 1
        return (client_id, request, state.get("seen", 0), state["pings"])


def transport(*transforms: Transform) -> InProcessTransport:
    return InProcessTransport(
        lambda cid: LearnerClient(cid, MODEL, FD.client(cid)),
        FD.num_clients,
        strategy=FedAvg(),
        pipeline=Pipeline(list(transforms)),
        backend=SequentialBackend(),
    )


def test_counter_is_a_responder_and_not_a_cohort_sum() -> None:
    assert isinstance(Counter(), Responder) and not isinstance(Counter(), CohortSum)


def test_each_client_answers_with_the_state_its_training_left() -> None:
    tr = transport(Counter())
    params = MODEL.init_params(0)
    ins = FedAvg().configure(FedAvg().init(params, num_clients=4), 1, TrainConfig())
    trained = {u.client_id: u.num_examples for u in tr.fit(1, [0, 2], params, ins) if isinstance(u, ClientUpdate)}
    assert sorted(trained) == [0, 2] and all(n > 0 for n in trained.values())
    got = tr.exchange(1, "ping", {0: "a", 2: "b", 3: "c"}, 10.0)
    assert isinstance(got, Exchanged) and got.lost == {}
    assert got.replies == {0: (0, "a", trained[0], 1), 2: (2, "b", trained[2], 1), 3: (3, "c", 0, 1)}
    again = tr.exchange(1, "ping", {0: "x"}, 10.0)
    assert again.replies == {0: (0, "x", trained[0], 2)}
    assert set(got.seconds) == {0, 2, 3}


def test_a_raising_client_is_lost_with_its_reason_and_the_others_answer() -> None:
    got = transport(Counter()).exchange(1, "ping", {0: "a", 1: "fail", 2: "fail", 3: "d"}, 10.0)
    assert sorted(got.replies) == [0, 3]
    assert got.lost == {"RuntimeError: client 1 refuses": [1], "RuntimeError: client 2 refuses": [2]}


def test_a_stage_no_transform_answers_loses_every_client() -> None:
    got = transport(Counter()).exchange(1, "pong", {0: "a", 1: "b"}, 10.0)
    assert got.replies == {}
    ((reason, ids),) = got.lost.items()
    assert ids == [0, 1] and "pong" in reason


def test_on_reply_takes_each_reply_instead_of_keeping_it() -> None:
    taken: list[tuple[int, Any]] = []
    got = transport(Counter()).exchange(1, "ping", {1: "a", 0: "b"}, 10.0, on_reply=lambda c, m: taken.append((c, m)))
    assert got.replies == {} and [c for c, _ in taken] == [0, 1]


def test_a_reply_without_a_size_counts_zero_bytes() -> None:
    got = transport(Counter()).exchange(1, "ping", {0: "a"}, 10.0)
    assert got.nbytes == {0: 0}
