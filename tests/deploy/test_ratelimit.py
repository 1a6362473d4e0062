"""The rate-limited refusal log: a bounded number of lines per window, then one summary."""

from __future__ import annotations

import logging

import pytest

from fedge.deploy.ratelimit import BURST, RefusalLog


def test_closing_logs_the_pending_summary_at_once_and_nothing_after(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("fedge.deploy.test-ratelimit")
    refusals = RefusalLog(log, window_s=3600.0)
    with caplog.at_level(logging.WARNING, logger=log.name):
        for _ in range(BURST + 7):
            refusals.refused("Poll", "UNAUTHENTICATED", "no signature")
        full = [r for r in caplog.records if "event=refused method=Poll" in r.getMessage()]
        assert len(full) == BURST
        refusals.close()  # the server stops: the hour-long window's summary is written now
        summaries = [r.getMessage() for r in caplog.records if "event=refused_summary" in r.getMessage()]
        assert len(summaries) == 1 and f"count={BURST + 7} " in summaries[0]
        refusals.close()  # nothing pending: no second summary
        assert sum("event=refused_summary" in r.getMessage() for r in caplog.records) == 1
    assert refusals._timer is None
