"""The soak's checker (harness/soak.py) flags what it must.

The soaks pass when nothing goes wrong; these cases show their rules would
fail a run where an instance answers errors outside a restart.
"""

from __future__ import annotations

import random

from harness.soak import (
    Publication,
    Restart,
    SoakReport,
    Tab,
    TabResult,
    Timeline,
)

# One restart: SIGTERM at 10 s, the old process gone at 11 s.
STOPPING = Restart(signalled_at=10.0, exited_at=11.0, listening_at=12.0)


def report(publications=(), refused_handshakes=()) -> SoakReport:
    tab = Tab("tab-1", "alice", "websocket", frozenset(), random.Random(0))
    tab.refused_handshakes = list(refused_handshakes)
    return SoakReport(
        tabs=[TabResult(tab)],
        publications=list(publications),
        refused=0,
        timeline=Timeline(started=0.0, restarts=[STOPPING]),
        seconds=20.0,
    )


def rejected(status: int, sent_at: float) -> Publication:
    return Publication(1, "alice", (), sent_at=sent_at, outcome=f"rejected {status}")


def test_a_503_is_excused_only_while_a_server_stops():
    assert report([rejected(503, sent_at=10.5)]).anomalies == []
    assert len(report([rejected(503, sent_at=5.0)]).anomalies) == 1
    assert len(report([rejected(500, sent_at=10.5)]).anomalies) == 1


def test_a_handshake_refused_with_an_http_status_is_flagged_outside_a_restart():
    assert report(refused_handshakes=[(10.5, 503)]).anomalies == []
    assert report(refused_handshakes=[(3.0, 503)]).anomalies == [
        "tab-1: handshake answered 503 at 3.000s"
    ]
    assert len(report(refused_handshakes=[(10.5, 500)]).anomalies) == 1
