"""The liveness probe fails when the decision loop stops completing cycles,
while /metrics keeps answering (it is served by another thread)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

from wattcap import metrics
from wattcap.health import MIN_STALE_S, STALE_PERIODS, Liveness


class Clock:
    """A settable clock: the probe's verdict is tested at chosen moments, never timed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_healthz_fails_once_the_last_cycle_is_older_than_n_periods() -> None:
    clock = Clock()
    live = Liveness(clock)
    port = free_port()
    server = metrics.serve(port, live, addr="127.0.0.1")
    assert server is not None
    try:
        assert get(port, "/healthz")[0] == 200  # no loop yet: nothing to be late for
        live.started("site", 30.0)
        assert get(port, "/readyz")[0] == 503  # no cycle completed yet
        live.completed("site", 30.0)
        assert get(port, "/readyz")[0] == 200
        clock.now += STALE_PERIODS * 30.0 - 1
        assert get(port, "/healthz")[0] == 200
        clock.now += 2
        status, body = get(port, "/healthz")
        assert status == 503 and "site" in body
        assert get(port, "/readyz")[0] == 503
        status, body = get(port, "/metrics")
        assert status == 200 and "wattcap_errors_total" in body
        live.completed("site", 30.0)
        assert get(port, "/healthz")[0] == 200
        live.stopped("site")
        clock.now += 10 * MIN_STALE_S
        assert get(port, "/healthz")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_short_periods_get_a_floor_before_the_probe_fails() -> None:
    clock = Clock()
    live = Liveness(clock)
    live.completed("site", 1.0)
    clock.now += MIN_STALE_S - 1
    assert live.live()[0]
    clock.now += 2
    assert not live.live()[0]
