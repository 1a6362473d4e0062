"""The codec transforms: error feedback, byte counts, downlink, and whole runs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.compression import Compress, CompressDownlink, make_codec
from fedge.compression.transforms import PAYLOAD_KEY, RESIDUAL_KEY
from fedge.config.schema import from_dict
from fedge.core.errors import ConfigError, ValidationError
from fedge.core.params import ParamSpec
from fedge.core.types import ClientContext, ClientUpdate
from fedge.federation import build, execute
from fedge.pipeline import RoundContext


def _rctx(round_num: int = 1, shapes: tuple[tuple[int, ...], ...] = ((4, 3), (3,))) -> RoundContext:
    return RoundContext(
        round_num=round_num, rng=np.random.default_rng(round_num), spec=ParamSpec(shapes), num_sampled=1
    )


def _update(rng: np.random.Generator) -> ClientUpdate:
    return ClientUpdate(
        client_id=7,
        delta=[rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)],
        num_examples=5,
    )


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["sign", "topk", "randk", "int8", "qsgd"]),
    st.integers(1, 6),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["tensor", "model"]),
)
def test_error_feedback_loses_no_mass(codec: str, rounds: int, seed: int, scope: str) -> None:
    rng = np.random.default_rng(seed)
    t = Compress(make_codec(codec, k=0.2, levels=2), error_feedback=True, scope=scope)
    state: dict = {}
    sent_total = [np.zeros((4, 3)), np.zeros(3)]
    input_total = [np.zeros((4, 3)), np.zeros(3)]
    for r in range(1, rounds + 1):
        upd = _update(rng)
        input_total = [a + d for a, d in zip(input_total, upd.delta, strict=True)]
        ctx = ClientContext(client_id=7, round_num=r, rng=np.random.default_rng([seed, r]), state=state)
        dec = t.server(t.client(upd, ctx), _rctx(r))
        sent_total = [a + d for a, d in zip(sent_total, dec.delta, strict=True)]
    residual = state[RESIDUAL_KEY]
    if scope == "model":
        residual = [residual[0][:12].reshape(4, 3), residual[0][12:]]
    for s, res, x in zip(sent_total, residual, input_total, strict=True):
        np.testing.assert_allclose(s + res, x, atol=1e-4)


def test_without_error_feedback_nothing_is_kept() -> None:
    t = Compress(make_codec("topk", k=0.1), error_feedback=False)
    ctx = ClientContext(client_id=7, round_num=1, rng=np.random.default_rng(0))
    t.client(_update(np.random.default_rng(1)), ctx)
    assert RESIDUAL_KEY not in ctx.state


def test_client_sends_bytes_and_counts_them_exactly() -> None:
    t = Compress(make_codec("int8"))
    upd = _update(np.random.default_rng(0))
    upd.extras["c_delta"] = [np.ones((4, 3), np.float32)]
    out = t.client(upd, ClientContext(client_id=7, round_num=1, rng=np.random.default_rng(0)))
    blob = out.payload[PAYLOAD_KEY]
    assert isinstance(blob, bytes)
    assert out.uplink_bytes == len(blob) == out.metrics["uplink_bytes"]
    assert out.delta == [] and out.extras == {}
    back = t.server(out, _rctx())
    assert [d.shape for d in back.delta] == [(4, 3), (3,)]
    np.testing.assert_allclose(back.extras["c_delta"][0], 1.0, atol=1 / 127)
    assert PAYLOAD_KEY not in back.payload


def test_model_scope_spends_one_topk_budget_across_tensors_and_keeps_extras() -> None:
    rng = np.random.default_rng(2)
    upd = _update(rng)
    upd.delta[1][:] = [50.0, -60.0, 70.0]
    upd.extras["c_delta"] = [np.zeros((4, 3), np.float32), np.zeros(3, np.float32)]
    t = Compress(make_codec("topk", k=0.1), scope="model")
    out = t.server(t.client(upd, ClientContext(7, 1, np.random.default_rng(0))), _rctx())
    np.testing.assert_array_equal(out.delta[1], [50.0, -60.0, 70.0])
    assert not out.delta[0].any()
    assert [e.shape for e in out.extras["c_delta"]] == [(4, 3), (3,)]


def test_server_refuses_shapes_the_model_does_not_have() -> None:
    from fedge.compression.transforms import encode_tensors

    blob, _ = encode_tensors(make_codec("topk", k=0.5), [np.ones((1 << 20,), np.float32)], np.random.default_rng(0))
    upd = ClientUpdate(client_id=3, delta=[], num_examples=1, payload={PAYLOAD_KEY: blob})
    with pytest.raises(ValidationError, match=r"shape \(1048576,\), not one of the model's"):
        Compress(make_codec("topk", k=0.5)).server(upd, _rctx())


def test_server_rejects_an_update_of_another_codec_or_none() -> None:
    upd = Compress(make_codec("fp16")).client(
        _update(np.random.default_rng(0)), ClientContext(client_id=7, round_num=1, rng=np.random.default_rng(0))
    )
    with pytest.raises(ValidationError, match="expects int8"):
        Compress(make_codec("int8")).server(upd, _rctx())
    with pytest.raises(ValidationError, match="not int8-compressed"):
        Compress(make_codec("int8")).server(_update(np.random.default_rng(0)), _rctx())


def test_downlink_reference_tracks_the_model_and_bytes_follow_what_each_client_holds() -> None:
    t = CompressDownlink(make_codec("int8", stochastic=False))
    rng = np.random.default_rng(0)
    params = [rng.normal(size=(40, 10)).astype(np.float32), np.zeros(10, np.float32)]
    full = sum(p.nbytes for p in params)
    d1 = t.downlink(params, [0, 1], _rctx(1))
    assert d1 is not None and d1.bytes_per_client == {0: full, 1: full}
    np.testing.assert_array_equal(d1.params[0], params[0])
    for r in range(2, 6):
        params = [p + 0.01 * rng.normal(size=p.shape).astype(np.float32) for p in params]
        d = t.downlink(params, [0, 2], _rctx(r))
        assert d is not None
        # client 0 held last round's reference: it receives one small message
        assert d.bytes_per_client[0] < full / 2
        assert d.bytes_per_client[2] == full if r == 2 else d.bytes_per_client[2] < full
        err = max(float(np.abs(a - b).max()) for a, b in zip(d.params, params, strict=True))
        assert err < 0.01
    d = t.downlink(params, [1], _rctx(6))
    assert d is not None and d.bytes_per_client[1] == full  # five messages cost more than the model


def _exp(codec: str, backend: str, **extra: object) -> object:
    return from_dict(
        {
            "seed": 3,
            "rounds": 3,
            "data": {"dataset": "digits", "num_clients": 8},
            "model": {"name": "logreg", "framework": "numpy"},
            "training": {"clients_per_round": 4, "local_epochs": 1, "backend": backend},
            "compression": {"codec": codec, "k": 0.05, **extra},
        }
    )


@pytest.mark.integration
def test_topk_runs_keep_residuals_on_clients_and_match_across_backends() -> None:
    results = {}
    for backend in ("sequential", "processes"):
        built = build(_exp("topk", backend, downlink="int8"))  # type: ignore[arg-type]
        result = execute(built)
        states = built.transport.states
        with_residual = [cid for cid, s in states.items() if RESIDUAL_KEY in s]
        assert with_residual, backend
        results[backend] = result
    seq, proc = results["sequential"], results["processes"]
    for rec in seq.history:
        assert sum(rec.extra["uplink_bytes_per_client"].values()) == rec.uplink_bytes
        assert sum(rec.extra["downlink_bytes_per_client"].values()) == rec.downlink_bytes
    assert [r.uplink_bytes for r in seq.history] == [r.uplink_bytes for r in proc.history]
    np.testing.assert_allclose(seq.state.params[0], proc.state.params[0], atol=1e-5)
    plain = execute(build(_exp("none", "sequential")))  # type: ignore[arg-type]
    for a, b in zip(seq.history, plain.history, strict=True):
        assert 0 < a.uplink_bytes < b.uplink_bytes / 8
    assert seq.history.rounds[-1].downlink_bytes < plain.history.rounds[-1].downlink_bytes


def test_bad_k_in_a_config_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"compression\.k"):
        build(_exp("topk", "sequential", k=2.0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"compression\.codec: 'zip' is not one of none, float32"):
        _exp("zip", "sequential")


def test_zlib_entropy_coding_is_lossless_and_counted() -> None:
    rng = np.random.default_rng(4)
    upd = ClientUpdate(client_id=1, delta=[rng.laplace(0, 0.01, (64, 64)).astype(np.float32)], num_examples=3)
    plain, coded = (
        Compress(make_codec("int8", stochastic=False)),
        Compress(make_codec("int8", stochastic=False), entropy="zlib"),
    )
    a = plain.client(ClientUpdate(1, [upd.delta[0].copy()], 3), ClientContext(1, 1, np.random.default_rng(0)))
    b = coded.client(upd, ClientContext(1, 1, np.random.default_rng(0)))
    assert b.uplink_bytes == len(b.payload[PAYLOAD_KEY]) < a.uplink_bytes
    big = _rctx(1, ((64, 64),))
    np.testing.assert_array_equal(coded.server(b, big).delta[0], plain.server(a, big).delta[0])
    b.payload[PAYLOAD_KEY] = b"not zlib"
    with pytest.raises(ValidationError, match="not valid zlib"):
        coded.server(b, big)
    with pytest.raises(ConfigError, match=r"compression\.entropy"):
        Compress(make_codec("int8"), entropy="brotli")
