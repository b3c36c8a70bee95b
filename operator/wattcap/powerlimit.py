"""How a GPU power limit trades throughput for watts: the model both levers plan with.

Pure, no I/O. The decision core plans a throttled job's lost work with it and the
simulator slows a throttled job by it, so what the core trades is what the replay pays.

The model, fitted to the Zeus NSDI '23 power-limit sweeps (data/powerlimits/: the fit
script, its output and the data's provenance):

    slowdown = 1 + A * max(0, natural / limit - 1) ** B

where `natural` is what the job's GPU draws with no limit and `slowdown` is run time at the
limit over run time without one. A limit at or above the natural draw costs nothing (the
GPU draws min(natural, limit)); below it the job slows faster and faster, and without
bound as the limit goes to 0.
"""

from __future__ import annotations

import math

# Fitted by data/powerlimits/fit.py (output in data/powerlimits/fit.txt).
SLOWDOWN_A = 0.92
SLOWDOWN_B = 1.91


def drawn_watts(natural_w: float, limit_w: float | None) -> float:
    """What a GPU draws under a limit: the hardware caps it, never raises it."""
    return natural_w if limit_w is None else min(natural_w, limit_w)


def slowdown(natural_w: float, limit_w: float | None) -> float:
    """Run time under `limit_w` over run time without a limit (>= 1)."""
    if limit_w is None or limit_w >= natural_w:
        return 1.0
    if limit_w <= 0.0:
        return math.inf
    return 1.0 + SLOWDOWN_A * (natural_w / limit_w - 1.0) ** SLOWDOWN_B


def throttled_lost_s(natural_w: float, limit_w: float | None, wall_s: float) -> float:
    """Lost work of running `wall_s` under `limit_w`: how far its progress falls behind
    an unconstrained run (wall time less progress), per GPU.

    One definition of lost work, used by the levers to choose (`levers.py`, with the
    cut's expected length) and by the simulator to account (`sim/engine.py`, with the
    time it really ran): a job loses the GPU time by which it ends later than it would
    have, and the work it must do again.
    """
    return wall_s * (1.0 - 1.0 / slowdown(natural_w, limit_w))


def preempted_lost_s(stopped_s: float, redone_s: float) -> float:
    """Lost work of a preemption, per GPU: the time it stands stopped while the cut lasts
    (until the cap rises again, it runs again or it would have finished; after that it
    waits like any queued job) plus its progress since the last checkpoint, done again."""
    return stopped_s + redone_s


def limit_for_slowdown(natural_w: float, max_slowdown: float) -> float:
    """The lowest limit at which a job drawing `natural_w` slows by at most `max_slowdown`.

    The inverse of `slowdown`, so a site's bound on slowdown becomes a bound on watts.
    """
    if max_slowdown <= 1.0:
        return natural_w
    if math.isinf(max_slowdown):
        return 0.0
    return natural_w / (1.0 + ((max_slowdown - 1.0) / SLOWDOWN_A) ** (1.0 / SLOWDOWN_B))
