"""Plain text for terminals and pipes: kubectl-style tables and a compact chart.

Tables are columns separated by at least three spaces, headers in capitals,
no colour and no box drawing, so `grep`, `awk` and `column` work on them as on
`kubectl get`. Missing figures print as `<none>`, as kubectl does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

NONE = "<none>"


def kw(watts: float | None) -> str:
    """Watts as kW with one decimal (`12.3`), or <none>."""
    return NONE if watts is None else f"{watts / 1000:.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns, kubectl's spacing (three spaces)."""
    cells = [[str(h) for h in headers]] + [[NONE if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def age(seconds: float | None) -> str:
    """kubectl's short ages: 45s, 12m, 3h5m, 2d4h."""
    if seconds is None:
        return NONE
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 3 * 3600:
        return f"{s // 60}m" if s < 3600 else f"{s // 3600}h{(s % 3600) // 60}m"
    if s < 2 * 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def chart(
    steps: Sequence[Mapping[str, Any]],
    start_s: float,
    horizon_s: float = 86400.0,
    width: int = 48,
    height: int = 8,
) -> str:
    """The next `horizon_s` as `width` columns, each with the lowest cap and the
    highest draws within it: `#` committed draw (idle and non-preemptible work:
    what a cap drop cannot shed), `+` the rest of the planned draw (preemptible
    work, which a drop sheds, and reservations), `-` the cap, `=` the cap
    inside the committed bar, `!` committed draw above the cap."""
    if not steps:
        return "(no current outlook: the operator has not published one since its last cycle)"
    times = [_epoch(s["at"]) for s in steps]
    col_s = horizon_s / width
    cols: list[tuple[float, float, float] | None] = []  # cap, committed, planned
    for c in range(width):
        lo, hi = start_s + c * col_s, start_s + (c + 1) * col_s
        inside = [
            s
            for k, s in enumerate(steps)
            if times[k] < hi and (k + 1 == len(steps) or times[k + 1] > lo)
        ]
        if not inside:
            cols.append(None)
            continue
        cols.append(
            (
                min(float(s["capWatts"]) for s in inside),
                max(float(s.get("committedWatts", s["plannedWatts"])) for s in inside),
                max(float(s["plannedWatts"]) for s in inside),
            )
        )
    top = max([v for col in cols if col for v in col] + [1.0]) * 1.05
    rows = []
    for r in range(height, 0, -1):
        lo, hi = top * (r - 1) / height, top * r / height
        line = []
        for col in cols:
            ch = " "
            if col is not None:
                cap, fixed, planned = col
                if fixed > lo:
                    ch = "!" if fixed > cap and hi > cap else "#"
                elif planned > lo:
                    ch = "+"
                if lo < cap <= hi:
                    ch = "!" if fixed > cap else "=" if ch == "#" else "-"
            line.append(ch)
        rows.append(f"{hi / 1000:8.1f} kW |" + "".join(line))
    quarter = max(1, width // 4)
    axis = " " * 12 + "+" + "".join("|" if c % quarter == 0 else "-" for c in range(width))
    ticks = " " * 13
    for c in range(0, width, quarter):
        t = datetime.fromtimestamp(start_s + c * col_s, UTC).strftime("%H:%M")
        ticks += t.ljust(quarter)
    legend = (
        " " * 13
        + "# committed (idle, non-preemptible)  + preemptible and reserved  - cap\n"
        + " " * 13
        + "= cap within the committed draw  ! committed draw above the cap  (UTC)"
    )
    return "\n".join([*rows, axis, ticks.rstrip(), legend])


def _epoch(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
