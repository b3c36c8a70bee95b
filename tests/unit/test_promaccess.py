"""Which Prometheus the operator may read, and how (issue #14, item 5).

The URL checks are plain examples. What goes over the wire (the bearer
token, a refused redirect, nothing at all for a refused URL) is checked
against a real HTTP server on localhost that answers like Prometheus's
query API and records each request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from wattcap.model import PowerPolicy
from wattcap.promaccess import PromAccess, from_flags
from wattcap.telemetry import URL_REFUSED, Telemetry


@pytest.mark.parametrize(
    ("url", "hosts", "needle"),
    [
        ("ftp://prometheus:9090", (), "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", (), "scheme 'file' is not allowed"),
        ("prometheus:9090", (), "is not allowed"),
        ("http://user:pw@prometheus:9090", (), "must not carry credentials"),
        ("http://", (), "names no host"),
        ("http://169.254.169.254/latest", ("prometheus.monitoring.svc",), "not on the operator's"),
        ("http://prometheus.monitoring.svc:9091", ("prometheus.monitoring.svc:9090",), "not on"),
        ("http://evil.svc.example", ("*.monitoring.svc",), "not on the operator's allow-list"),
        ("http://[::1]:9090", ("prometheus",), "host '::1' is not on"),
    ],
)
def test_a_refused_url_names_the_field_and_why(url: str, hosts: tuple, needle: str) -> None:
    why = PromAccess(hosts=hosts).refusal(url)
    assert why is not None and why.startswith("spec.prometheus.url") and needle in why, why


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("http://prometheus:9090", ()),
        ("https://prometheus.monitoring.svc:9090", ("prometheus.monitoring.svc",)),
        ("HTTPS://Prometheus.Monitoring.svc:9090/", ("prometheus.monitoring.svc:9090",)),
        ("http://thanos.monitoring.svc", ("*.monitoring.svc",)),
        ("http://[::1]:9090", ("::1",)),
    ],
)
def test_an_allowed_url_passes(url: str, hosts: tuple) -> None:
    assert PromAccess(hosts=hosts).refusal(url) is None


def test_flags_allow_only_http_and_https() -> None:
    assert from_flags(None, None, "", None) == PromAccess()
    assert from_flags(["HTTPS"], ["p"], "/ca", "/t").schemes == ("https",)
    with pytest.raises(ValueError, match="only http and https"):
        from_flags(["gopher"], None, None, None)
    assert "scheme 'http'" in (PromAccess(schemes=("https",)).refusal("http://p:9090") or "")


class _Recorder(BaseHTTPRequestHandler):
    """Answers /api/v1/query with an empty vector; /redirect with a 302."""

    seen: list[tuple[str, str | None]]

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))  # type: ignore[attr-defined]
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
            self.end_headers()
            return
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    srv.seen = []  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


def _url(srv: ThreadingHTTPServer, path: str = "") -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


POLICY = PowerPolicy(cap_watts=1e5)


def test_the_token_is_sent_and_a_rotated_one_is_picked_up(
    server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    tel = Telemetry(_url(server), access=PromAccess(token_file=str(token)))
    tel.read(POLICY, {"n0": 8})
    token.write_text("second")
    tel.read(POLICY, {"n0": 8})
    auth = {a for _, a in server.seen}  # type: ignore[attr-defined]
    assert auth == {"Bearer first", "Bearer second"}, auth


def test_a_refused_url_is_never_fetched(server: ThreadingHTTPServer) -> None:
    """The SSRF case: a URL off the allow-list makes no request at all."""
    tel = Telemetry(_url(server), access=PromAccess(hosts=("prometheus.monitoring.svc",)))
    reading = tel.read(POLICY, {"n0": 8})
    assert not reading.ok and reading.reason == URL_REFUSED
    assert reading.error and reading.error.startswith("spec.prometheus.url host '127.0.0.1'")
    assert server.seen == []  # type: ignore[attr-defined]


def test_a_redirect_is_not_followed(server: ThreadingHTTPServer) -> None:
    """An allowed host must not bounce the operator (and its token) elsewhere."""
    tel = Telemetry(_url(server, "/redirect"), access=PromAccess(hosts=("127.0.0.1",)))
    reading = tel.read(POLICY, {"n0": 8})
    assert not reading.ok and "redirect" in (reading.error or "").lower(), reading.error
    assert [p for p, _ in server.seen] == ["/redirect/api/v1/query?query=DCGM_FI_DEV_POWER_USAGE"]  # type: ignore[attr-defined]


def test_a_refused_url_is_a_policy_condition_naming_the_field() -> None:
    """The cycle runs on forecasts alone and says why on the PowerPolicy."""
    from wattcap.controller import ControllerMemory, SiteState, cycle
    from wattcap.forecast import Forecaster

    tel = Telemetry("http://10.0.0.1:9090", access=PromAccess(hosts=("prometheus",)))
    state = SiteState(POLICY, [], [], [], {}, tel.read(POLICY, {}))
    plan = cycle(state, ControllerMemory(Forecaster(700, 70)), 1_782_864_000.0)
    measured = next(c for c in plan.policy_status["conditions"] if c["type"] == "Measured")
    assert (measured["status"], measured["reason"]) == ("False", URL_REFUSED)
    assert measured["message"].startswith("spec.prometheus.url host '10.0.0.1'")
    assert plan.policy_status["measuredWatts"] is None
    assert [e[2] for e in plan.events] == [URL_REFUSED]
