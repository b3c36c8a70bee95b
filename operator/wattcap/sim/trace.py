"""Job traces in the FORMAT.md layout: one row per job, plain CSV.

`load_trace` checks every row and raises `TraceError` naming the file, the
row (the line number in the file, the header being row 1, as a spreadsheet
or an editor shows it) and the column, so a user can go straight to it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REQUIRED_COLUMNS = (
    "job_id",
    "submit_s",
    "duration_s",
    "replicas",
    "gpus_per_replica",
    "workload_class",
    "priority",
    "gpu_watts",
)
OPTIONAL_COLUMNS = ("user", "preemptible", "est_duration_s", "gpu_watts_hint")


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job of a trace. `gpu_watts` is ground truth: only the site model reads it."""

    job_id: str
    submit_s: float
    duration_s: float
    replicas: int
    gpus_per_replica: int
    workload_class: str
    priority: int
    gpu_watts: float
    preemptible: bool = False
    est_duration_s: float | None = None
    user: str = ""
    gpu_watts_hint: float | None = None  # what the job claims it draws per GPU (spec.gpuWattsHint)

    @property
    def gpus(self) -> int:
        return self.replicas * self.gpus_per_replica


class TraceError(ValueError):
    """A trace row is wrong: `str()` is the message a user sees."""

    def __init__(self, path: str, row: int | None, column: str | None, why: str) -> None:
        where = str(path)
        if row is not None:
            where += f" row {row}"
        if column is not None:
            where += f", column {column}" if row is not None else f" column {column}"
        super().__init__(f"{where}: {why}")
        self.path = str(path)
        self.row = row
        self.column = column
        self.why = why


def _float(raw: str, path: str, row: int, col: str, *, minimum: float | None = None) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise TraceError(path, row, col, f"expected a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise TraceError(path, row, col, f"expected a finite number, got {raw!r}")
    if minimum is not None and value < minimum:
        raise TraceError(path, row, col, f"must be >= {minimum:g}, got {raw.strip()}")
    return value


def _int(raw: str, path: str, row: int, col: str, *, minimum: int | None = None) -> int:
    try:
        value = float(raw)
    except ValueError:
        raise TraceError(path, row, col, f"expected a whole number, got {raw!r}") from None
    if not math.isfinite(value) or not value.is_integer():
        raise TraceError(path, row, col, f"expected a whole number, got {raw!r}")
    if minimum is not None and value < minimum:
        raise TraceError(path, row, col, f"must be >= {minimum}, got {raw.strip()}")
    return int(value)


def _bool(raw: str, path: str, row: int, col: str) -> bool:
    v = raw.strip().lower()
    if v in ("", "0", "false", "no"):
        return False
    if v in ("1", "true", "yes"):
        return True
    raise TraceError(path, row, col, f"expected 0 or 1, got {raw!r}")


def load_trace(
    path: str | Path,
    *,
    nodes: int | None = None,
    gpus_per_node: int | None = None,
) -> list[TraceJob]:
    """Read and check a trace; with the site's size, also refuse jobs wider than it."""
    shown = str(path)
    try:
        fh = open(path, newline="", encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        raise TraceError(shown, None, None, f"cannot read: {e.strerror or e}") from None
    jobs: list[TraceJob] = []
    seen: dict[str, int] = {}
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise TraceError(shown, 1, None, "empty file: expected a header row") from None
        except csv.Error as e:
            raise TraceError(shown, 1, None, f"not CSV: {e}") from None
        header = [h.strip() for h in header]
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        for col in REQUIRED_COLUMNS:
            if col not in header:
                raise TraceError(
                    shown, 1, col, f"required column is missing (header: {', '.join(header)})"
                )
        idx = {name: i for i, name in enumerate(header)}
        total_gpus = nodes * gpus_per_node if nodes and gpus_per_node else None
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise TraceError(shown, reader.line_num, None, f"not CSV: {e}") from None
            row = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue  # blank line

            def cell(col: str, cells: list[str] = cells, row: int = row) -> str:
                i = idx[col]
                if i >= len(cells):
                    raise TraceError(shown, row, col, "missing value (row too short)")
                return cells[i]

            job_id = cell("job_id").strip()
            if not job_id:
                raise TraceError(shown, row, "job_id", "must not be empty")
            if job_id in seen:
                raise TraceError(
                    shown,
                    row,
                    "job_id",
                    f"duplicate job_id {job_id!r} (first at row {seen[job_id]})",
                )
            seen[job_id] = row
            submit = _float(cell("submit_s"), shown, row, "submit_s", minimum=0)
            duration = _float(cell("duration_s"), shown, row, "duration_s", minimum=0)
            replicas = _int(cell("replicas"), shown, row, "replicas", minimum=1)
            gpr = _int(cell("gpus_per_replica"), shown, row, "gpus_per_replica", minimum=1)
            wclass = cell("workload_class").strip() or "default"
            priority = _int(cell("priority"), shown, row, "priority")
            watts = _float(cell("gpu_watts"), shown, row, "gpu_watts", minimum=0)
            preemptible = False
            est = None
            user = ""
            if "preemptible" in idx and idx["preemptible"] < len(cells):
                preemptible = _bool(cells[idx["preemptible"]], shown, row, "preemptible")
            if "est_duration_s" in idx and idx["est_duration_s"] < len(cells):
                raw = cells[idx["est_duration_s"]]
                if raw.strip():
                    est = _float(raw, shown, row, "est_duration_s", minimum=0)
            if "user" in idx and idx["user"] < len(cells):
                user = cells[idx["user"]].strip()
            hint = None
            if "gpu_watts_hint" in idx and idx["gpu_watts_hint"] < len(cells):
                raw = cells[idx["gpu_watts_hint"]]
                if raw.strip():
                    hint = _float(raw, shown, row, "gpu_watts_hint", minimum=0)
                    if hint <= 0:
                        raise TraceError(shown, row, "gpu_watts_hint", "must be > 0, got 0")
            if gpus_per_node is not None and gpr > gpus_per_node:
                raise TraceError(
                    shown,
                    row,
                    "gpus_per_replica",
                    f"a pod needs {gpr} GPUs on one node, but nodes have {gpus_per_node}",
                )
            if total_gpus is not None and replicas * gpr > total_gpus:
                raise TraceError(
                    shown,
                    row,
                    "replicas",
                    f"the job needs {replicas} x {gpr} = {replicas * gpr} GPUs, "
                    f"but the site has {total_gpus}",
                )
            jobs.append(
                TraceJob(
                    job_id=job_id,
                    submit_s=submit,
                    duration_s=duration,
                    replicas=replicas,
                    gpus_per_replica=gpr,
                    workload_class=wclass,
                    priority=priority,
                    gpu_watts=watts,
                    preemptible=preemptible,
                    est_duration_s=est,
                    user=user,
                    gpu_watts_hint=hint,
                )
            )
    return jobs


def trace_row(j: TraceJob) -> list[Any]:
    """One job as the FORMAT.md columns, in order (floats round-trip exactly)."""
    return [
        j.job_id,
        repr(float(j.submit_s)),
        repr(float(j.duration_s)),
        j.replicas,
        j.gpus_per_replica,
        j.workload_class,
        j.priority,
        repr(float(j.gpu_watts)),
        j.user,
        int(bool(j.preemptible)),
        "" if j.est_duration_s is None else repr(float(j.est_duration_s)),
        "" if j.gpu_watts_hint is None else repr(float(j.gpu_watts_hint)),
    ]


def write_trace(jobs: Iterable[TraceJob], path: str | Path) -> None:
    """Write jobs in the FORMAT.md layout (floats round-trip exactly)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS])
        for j in jobs:
            w.writerow(trace_row(j))
