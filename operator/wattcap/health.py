"""Is the decision loop alive? `/healthz` and `/readyz` next to `/metrics`.

The metrics endpoint is served by its own thread and answers even while the
site loop is stuck (a hung API call, a deadlock), so probing it proves
nothing. Each site loop instead reports every cycle it completes here, and
`/healthz` fails when a loop's last completed cycle is older than
`STALE_PERIODS` control periods (never less than `MIN_STALE_S`, so a few
slow API calls within their timeouts do not get the operator killed). A
process with no loop (no PowerPolicy yet) has nothing to be late for and is
healthy. `/readyz` answers 200 once every running loop has completed a cycle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

STALE_PERIODS = 5.0
MIN_STALE_S = 60.0


class Liveness:
    """Last completed cycle per site loop, read by the probes' thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # loop name -> (last completed cycle or loop start, period, cycles completed)
        self._loops: dict[str, tuple[float, float, int]] = {}

    def started(self, loop: str, period_s: float) -> None:
        """A loop began: it has until its first deadline to complete a cycle."""
        with self._lock:
            self._loops[loop] = (self._clock(), period_s, 0)

    def completed(self, loop: str, period_s: float) -> None:
        """A loop completed a cycle (or a wait that is its cycle, e.g. not governing)."""
        with self._lock:
            count = self._loops.get(loop, (0.0, 0.0, 0))[2]
            self._loops[loop] = (self._clock(), period_s, count + 1)

    def stopped(self, loop: str) -> None:
        with self._lock:
            self._loops.pop(loop, None)

    def live(self) -> tuple[bool, str]:
        """(healthy, why): unhealthy if any loop is overdue."""
        now = self._clock()
        with self._lock:
            loops = dict(self._loops)
        late = []
        for name, (last, period, _) in sorted(loops.items()):
            limit = max(MIN_STALE_S, STALE_PERIODS * period)
            if now - last > limit:
                late.append(f"{name}: last cycle {now - last:.0f}s ago (limit {limit:.0f}s)")
        if late:
            return False, "; ".join(late)
        return True, f"{len(loops)} loop(s) on time"

    def ready(self) -> tuple[bool, str]:
        """(ready, why): every loop has completed a cycle, and none is overdue."""
        ok, why = self.live()
        with self._lock:
            waiting = [n for n, (_, _, count) in self._loops.items() if count == 0]
        if ok and waiting:
            return False, f"no cycle completed yet: {', '.join(sorted(waiting))}"
        return ok, why


LIVENESS = Liveness()


def health_app(liveness: Liveness, fallback: Callable[..., Iterable[bytes]]) -> Any:
    """A WSGI app: `/healthz` and `/readyz` from `liveness`, anything else to `fallback`."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok, why = liveness.live() if path == "/healthz" else liveness.ready()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{'ok' if ok else 'failing'}: {why}\n".encode()]
        return fallback(environ, start_response)

    return app
