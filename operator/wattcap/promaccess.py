"""Which Prometheus the operator may read, and how it authenticates to it.

`spec.prometheus.url` is written by whoever may edit the PowerPolicy, and
the operator fetches it with its own network position (and, with a token,
its own credentials): without limits that is a way to make the operator
request any internal URL (SSRF). So the URL is checked before any request:
its scheme must be on an allow-list (http, https), it must not carry
credentials of its own, and when the operator was started with a host
allow-list (`--prometheus-allowed-host`, chart value
`prometheus.allowedHosts`) its host must be on it. A refused URL is never
fetched: the cycle runs in its no-telemetry mode and says why on the
PowerPolicy, naming the field.

Production Prometheus is rarely open HTTP: the connection verifies TLS with
a CA bundle (`--prometheus-ca-file`) and sends a bearer token read from a
file (`--prometheus-token-file`, a mounted Secret), re-read when the file
changes so a rotated token is picked up. Redirects are refused: an allowed
host must not bounce the operator, token and all, somewhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

URL_FIELD = "spec.prometheus.url"
DEFAULT_SCHEMES = ("http", "https")


@dataclass(frozen=True, slots=True)
class PromAccess:
    """The operator's rules for reaching Prometheus (set once, from its flags).

    `hosts` empty: any host. An entry is a host name or address (any port),
    `host:port`, or `*.suffix` for every name under a domain.
    """

    schemes: tuple[str, ...] = DEFAULT_SCHEMES
    hosts: tuple[str, ...] = ()
    ca_file: str | None = None
    token_file: str | None = None

    def refusal(self, url: str) -> str | None:
        """Why `url` may not be fetched (a message naming the field), or None."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as err:
            return f"{URL_FIELD} {url!r} is not a URL ({err})"
        scheme = parts.scheme.lower()
        if scheme not in self.schemes:
            return (
                f"{URL_FIELD} scheme {scheme or '(none)'!r} is not allowed "
                f"(allowed: {', '.join(self.schemes)})"
            )
        host = (parts.hostname or "").lower()
        if not host:
            return f"{URL_FIELD} {url!r} names no host"
        if parts.username is not None or parts.password is not None:
            return f"{URL_FIELD} must not carry credentials; use --prometheus-token-file"
        if self.hosts and not any(_host_matches(h, host, port) for h in self.hosts):
            return (
                f"{URL_FIELD} host {host!r} is not on the operator's allow-list "
                f"(--prometheus-allowed-host: {', '.join(self.hosts)}); nothing is fetched"
            )
        return None

    def connect(self, url: str, timeout_s: float) -> PrometheusConnect:
        """A client for an allowed `url`: TLS verified against the CA bundle
        if one is set, no retries, no redirects, and the token if one is set."""
        session = requests.Session()
        session.verify = self.ca_file or True
        session.max_redirects = 0
        prom = PrometheusConnect(
            url, session=session, timeout=timeout_s, retry=Retry(total=0, redirect=0)
        )
        self.authorize(prom)
        return prom

    def authorize(self, prom: PrometheusConnect) -> None:
        """Set the bearer token on `prom` from the token file, as it is now.

        Called before every read: a Secret's mounted file changes in place when
        the Secret is rotated, and an unreadable file sends no token (the read
        then fails as unauthorised, which the cycle treats as no telemetry).
        """
        if not self.token_file:
            return
        try:
            with open(self.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError:
            token = ""
        prom.headers = {"Authorization": f"Bearer {token}"} if token else None


def _host_matches(entry: str, host: str, port: int | None) -> bool:
    entry = entry.strip().lower()
    if entry.startswith("*."):
        return host.endswith(entry[1:])
    name, sep, want = entry.rpartition(":")
    if sep and want.isdigit() and not name.endswith(":"):  # host:port (not a bare IPv6)
        return host == name.strip("[]") and port == int(want)
    return host == entry.strip("[]")


def from_flags(
    schemes: list[str] | None,
    hosts: list[str] | None,
    ca_file: str | None,
    token_file: str | None,
) -> PromAccess:
    """PromAccess from the operator's command line; empty values mean the defaults."""
    allowed = tuple(s.lower() for s in schemes or () if s) or DEFAULT_SCHEMES
    bad = [s for s in allowed if s not in DEFAULT_SCHEMES]
    if bad:
        raise ValueError(f"--prometheus-allowed-scheme: only http and https, got {bad}")
    return PromAccess(
        schemes=allowed,
        hosts=tuple(h for h in hosts or () if h),
        ca_file=ca_file or None,
        token_file=token_file or None,
    )
