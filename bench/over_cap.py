"""Where the replay goes over the cap, and which jobs were running then.

Replays the `bench_sim.py` trace with `wattcap` (series recorded), then
prints each stretch of ground truth over the cap: when, for how long, by how
much, the cap, and the running non-preemptible jobs that had outrun their
own estimate (a job without one is listed when it ran past 3600 s, the
policy's default duration). This is how the 100k replay's one event was
traced to a job planned to end 5 s before a window (README).

    python bench/over_cap.py [--jobs 100000] [--seed 1]
"""

from __future__ import annotations

import bench_sim
from wattcap.sim.engine import EPS_W


def main() -> int:
    a = bench_sim.replay_args(__doc__)
    trace, policy, start = bench_sim.default_replay(a.jobs, a.seed)
    res = bench_sim.replay_wattcap(trace, policy, start, a.seed, record_series=True)
    s = res.series
    stretches: list[list[float]] = []  # [from, to, worst excess, cap]
    for i in range(len(s["t"]) - 1):
        t, site, cap = s["t"][i], s["site_w"][i], s["cap_w"][i]
        if site > cap + EPS_W and s["t"][i + 1] > t:
            if stretches and stretches[-1][1] == t:
                stretches[-1][1] = s["t"][i + 1]
                stretches[-1][2] = max(stretches[-1][2], site - cap)
            else:
                stretches.append([t, s["t"][i + 1], site - cap, cap])
    print(f"{a.jobs} jobs: {res.seconds_over_cap:.1f} s over the cap in {len(stretches)} stretches")
    by_id = {j.job_id: j for j in trace}
    for t0, t1, worst, cap in stretches:
        print(
            f"t {t0:.1f} s (day {t0 / 86400:.2f}) for {t1 - t0:.1f} s, "
            f"up to {worst:.0f} W over a cap of {cap:.0f} W"
        )
        for seg in res.segments:
            if seg.start_s is None or not (seg.start_s <= t0 < (seg.end_s or float("inf"))):
                continue
            j = by_id[seg.job_id]
            planned = j.est_duration_s or policy.default_duration_s
            if j.preemptible or seg.start_s + planned > t0:
                continue
            print(
                f"  {j.job_id}: {j.gpus} GPUs at {j.gpu_watts:.0f} W, started {seg.start_s:.0f},"
                f" estimate {j.est_duration_s or 'none'}, ran {j.duration_s:.0f} s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
