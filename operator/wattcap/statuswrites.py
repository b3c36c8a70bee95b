"""Which TrainingJob statuses a cycle writes: every change of substance, and a
bounded share of refreshes.

A waiting job's status is rebuilt every cycle, and at a site with thousands of
them most statuses differ from the stored one only in text: the message (how
much power is short, how many jobs are ahead) and the estimated start.
Written each time they move, those refreshes were most of a large
site's API requests and of its cycle; never written (as a message-only change
was before), a job kept its first answer to "why does it wait" until its
reason changed.

So a status is written in the cycle that sees it if anything of substance
changed: its phase, reason, placement, preemptions, Job, a condition's status
or reason, its forecast (what it is planned at), or a message or estimate
the job has never shown. A
status whose only news is a refresh is due once its last write is
`refresh_after_s` old (a measured site's free power, and so every waiting
job's message, moves every cycle: refreshed at once, each waiting job would
cost a write a cycle for ever), and due ones share at most
`refreshes_per_cycle` writes a cycle, least recently written first, so none
starves: with n of them each is refreshed within ceil(n / share) cycles of
being due, and the stored status is never wrong in substance, only its text
is older. A waiting job's *first* status (it has none stored: a burst of new
jobs) is substance too, but at most `firsts_per_cycle` of them go out a cycle,
in the order the cycle built them (its queue's, so the jobs nearest to a start
are answered first); the rest wait their turn, each within ceil(n / share)
cycles. Every other change of substance, an admission, a refusal or a first
status that is not a wait, goes out in the cycle that decides it. A
condition's `lastTransitionTime` is when its status last changed
(the Kubernetes convention): a cycle stamps its own time on every condition it
builds, and `keep_transition_times` puts back the stored time wherever the
condition's status is unchanged, so a job waiting for an hour shows when it
began to wait; being derived from status, it is no news by itself (`pick` never
reads it, so it is kept on the statuses written alone: `to_write`).
Pure bookkeeping, no I/O: `cluster.Cluster.apply_status` asks it which to write
and tells it which went through.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterable, Mapping
from typing import Any

from .model import QUEUED

Ref = tuple[str, str]

# at most this many refresh-only status writes a cycle: one chunk of the
# writers (cluster.CHUNK), a second or so of a slow API server
REFRESHES_PER_CYCLE = 16
# a job's text is refreshed at most this often (by this replica's memory of its
# writes; after a restart every job is due at once, within the share)
REFRESH_AFTER_S = 30.0
# at most this many first answers to waiting jobs a cycle (`pick`): a burst of
# thousands of new jobs, each answered at once, made one cycle tens of seconds
# of writes (1,000 nodes x 5,000 jobs: p95 35 s, bench/load.py); eight chunks
FIRSTS_PER_CYCLE = 128
REFRESH_KEYS = frozenset({"message", "estimatedStart"})
_MUST = "must"  # pick's verdict on a change of substance


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == {} or value == []


def _conditions(conds: Any) -> dict[Any, tuple[Any, Any]]:
    """A status's conditions as type -> (status, reason): their substance."""
    out: dict[Any, tuple[Any, Any]] = {}
    for c in conds if isinstance(conds, list) else []:
        if isinstance(c, Mapping):
            out[c.get("type")] = (c.get("status"), c.get("reason"))
    return out


def _messages(conds: Any) -> dict[Any, Any]:
    return {
        c.get("type"): c.get("message")
        for c in (conds if isinstance(conds, list) else [])
        if isinstance(c, Mapping)
    }


def keep_transition_times(
    current: Mapping[str, Any], desired: Mapping[str, Any]
) -> Mapping[str, Any]:
    """`desired` with each condition's `lastTransitionTime` taken from the
    stored condition of its type where that one's status is the same: the time
    moves only when the status does (a new reason or message does not move it)."""
    conds = desired.get("conditions")
    before = current.get("conditions")
    if not isinstance(conds, list) or not isinstance(before, list):
        return desired
    stored = {c.get("type"): c for c in before if isinstance(c, Mapping)}
    kept = []
    for c in conds:
        old = stored.get(c.get("type")) if isinstance(c, Mapping) else None
        if (
            old is not None
            and old.get("status") == c.get("status")
            and old.get("lastTransitionTime")
        ):
            c = {**c, "lastTransitionTime": old["lastTransitionTime"]}
        kept.append(c)
    return {**desired, "conditions": kept}


def substance_changed(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether `desired` says something `current` does not (beyond newer text)."""
    for key, value in desired.items():
        if key == "conditions":
            if _conditions(current.get(key)) != _conditions(value):
                return True
        elif key in REFRESH_KEYS:
            if _empty(current.get(key)) and not _empty(value):
                return True  # shown for the first time: an answer, not a refresh
        elif current.get(key) != value:
            return True
    return False


def refresh_due(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether only text moved: a message, an estimate, a condition's message."""
    if any(k in desired and current.get(k) != desired[k] for k in REFRESH_KEYS):
        return True
    if "conditions" in desired:
        return _messages(current.get("conditions")) != _messages(desired["conditions"])
    return False


class StatusWrites:
    """One site's status writes: what each cycle writes, and when each job's
    status was last written (memory bounded by the jobs a cycle sees)."""

    def __init__(
        self,
        refreshes_per_cycle: int = REFRESHES_PER_CYCLE,
        refresh_after_s: float = REFRESH_AFTER_S,
        firsts_per_cycle: int = FIRSTS_PER_CYCLE,
    ) -> None:
        self.refreshes_per_cycle = refreshes_per_cycle
        self.refresh_after_s = refresh_after_s
        self.firsts_per_cycle = firsts_per_cycle
        self.deferred = 0  # due refreshes the last `pick` left for later cycles
        self.firsts_deferred = 0  # waiting jobs' first answers it left for later cycles
        # the last pick's writes in order: those before `optional_at` must go out, then
        # first answers up to `_firsts_end`, then refreshes; `_picked` in all (`left`)
        self.optional_at = 0
        self._firsts_end = 0
        self._picked = 0
        self._now = 0.0
        self._written: dict[Ref, float] = {}  # when each job's status was last written
        # per status given a key: the key and its verdict (_MUST, a refresh: True, or
        # nothing: False), which stands while the key does
        self._verdicts: dict[Ref, tuple[Hashable, object]] = {}

    def pick(
        self,
        current: Mapping[Ref, Mapping[str, Any]],
        desired: Mapping[Ref, Mapping[str, Any]],
        now_s: float = 0.0,
        keys: Mapping[Ref, Hashable] | None = None,
        evented: Collection[Ref] = (),
    ) -> list[Ref]:
        """The statuses to write this cycle (`now_s`: its time, seconds): every
        change of substance but waiting jobs' first answers, then those up to
        their share in `desired`'s order, then due refreshes, least recently
        written first (never written: first of all), up to theirs.

        `keys` (`controller.Plan.status_keys`): per status, a key equal to last
        cycle's only while neither it (but for its transition times) nor the stored
        one moved; the status is then not compared again, its last verdict stands
        (at a big site most statuses are a waiting job's, and do not move).
        `evented`: jobs the cycle also sends an Event about; their status goes
        out with it, first answer or not (the controller sends some Events only
        while the stored status does not say the same yet: deferred, the status
        would let the Event repeat every cycle)."""
        self._now = now_s
        for memo in (self._written, self._verdicts):
            for ref in [r for r in memo if r not in current and r not in desired]:
                del memo[ref]
        keys = keys or {}
        must: list[Ref] = []
        firsts: list[Ref] = []
        due: list[Ref] = []
        for ref, status in desired.items():
            key, last = keys.get(ref), self._verdicts.get(ref)
            if key is not None and last is not None and last[0] == key:
                verdict = last[1]
            else:
                have = current.get(ref) or {}
                verdict = _MUST if substance_changed(have, status) else refresh_due(have, status)
                if key is not None:
                    self._verdicts[ref] = (key, verdict)
            if verdict is _MUST:
                if status.get("phase") == QUEUED and not current.get(ref) and ref not in evented:
                    firsts.append(ref)
                else:
                    must.append(ref)
            elif verdict:
                last_write = self._written.get(ref)
                if last_write is None or now_s - last_write >= self.refresh_after_s:
                    due.append(ref)
        due.sort(key=lambda r: (self._written.get(r, -math.inf), r))
        answered = max(0, self.firsts_per_cycle)
        self.firsts_deferred = max(0, len(firsts) - answered)
        share = max(0, self.refreshes_per_cycle)
        self.deferred = max(0, len(due) - share)
        picked = must + firsts[:answered] + due[:share]
        self.optional_at = len(must)
        self._firsts_end = len(must) + min(len(firsts), answered)
        self._picked = len(picked)
        return picked

    def left(self, unmade: int) -> None:
        """The last `unmade` of the last pick's writes (optional ones) were not made:
        the cycle's time for them ran out (`cluster.Cluster.apply_status`). They are
        counted as deferred, and being unwritten, are picked again by the next cycle."""
        firsts = max(0, self._firsts_end - (self._picked - unmade))
        self.firsts_deferred += firsts
        self.deferred += unmade - firsts

    def to_write(
        self,
        current: Mapping[Ref, Mapping[str, Any]],
        desired: Mapping[Ref, Mapping[str, Any]],
        now_s: float = 0.0,
        keys: Mapping[Ref, Hashable] | None = None,
        evented: Collection[Ref] = (),
    ) -> list[tuple[Ref, Mapping[str, Any]]]:
        """`pick`'s statuses as they are written: each condition keeps its stored
        transition time where its status is unchanged. `pick` never reads that time,
        so it is kept on the few statuses written, not on every job's every cycle
        (at 5,000 waiting jobs a share of the cycle: bench/bench_cycle.py)."""
        return [
            (ref, keep_transition_times(current.get(ref) or {}, desired[ref]))
            for ref in self.pick(current, desired, now_s, keys, evented)
        ]

    def written(self, refs: Iterable[Ref]) -> None:
        """These statuses went through this cycle (a refused one keeps its place)."""
        for ref in refs:
            self._written[ref] = self._now

    def remembered(self) -> int:
        return len(self._written)
