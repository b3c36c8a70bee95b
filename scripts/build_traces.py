#!/usr/bin/env python3
"""Build wattcap's shipped data from the unedited public copies in shared/traces/public.

Writes, deterministically (fixed seed, fixed formatting, no timestamps), so that a re-run
gives byte-identical files:

  data/power/classes.csv              per-workload-class mean GPU power on an H100-class GPU,
                                      MODELLED from the Zeus NSDI '23 measurements
  data/power/README.md                how the class table was derived
  data/traces/alibaba-v2023-h100.csv  every usable GPU pod of Alibaba's GPU trace v2023
                                      (openb_pod_list_default.csv) in the FORMAT.md layout
  data/traces/alibaba-v2023-h100-3d.csv
                                      a power-bound 3-day slice for a 64 x 8 GPU site: the busy
                                      36 days at the trace end folded onto 72 h (see FOLD below)
  data/traces/PROVENANCE.md           sources, hashes, terms and the exact conversion rules

Usage (from the repository root):
  python scripts/build_traces.py                 # reads ../shared/traces/public
  python scripts/build_traces.py --public DIR --out data
  python scripts/build_traces.py --check         # exit 1 if the shipped files are stale

Needs only the standard library and numpy.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import heapq
import io
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wattcap.sim.trace import REQUIRED_COLUMNS

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PUBLIC = REPO.parent / "shared" / "traces" / "public"
DEFAULT_OUT = REPO / "data"

SEED = 20230710  # fixed: per-job power noise
H100_TDP_W = 700.0  # NVIDIA H100 SXM5 datasheet, max TDP
H100_IDLE_W = 70.0  # typical idle draw; same as PowerPolicy.gpu_idle_watts default
MIN_REL_SPREAD = 0.02  # floor: Zeus measured each configuration once, so no run-to-run spread

# Source GPUs and the TDPs assumed for them (NVIDIA datasheets). Each equals the highest power
# limit in that GPU's Zeus file, i.e. the board's default (= maximum) limit, at which we read
# the power. V100 here is the PCIe card (250 W); the SXM2 module's 300 W would be inconsistent
# with the file, whose power limits stop at 250 W.
SOURCE_GPUS = {
    "A40": ("summary_power_a40.csv", 300.0),
    "V100": ("summary_power_v100.csv", 250.0),
}

# One class per (dataset, network, representative batch size). The six first rows use the
# default batch size Zeus trains each workload with; two small-batch variants add the
# lower-utilisation end that small-batch jobs show.
CLASSES = (
    ("resnet50-imagenet-b256", "imagenet", "resnet50", 256),
    ("bert-squad-b32", "squad", "bert_base_uncased", 32),
    ("bert-sentiment140-b128", "sentiment140", "bert_base_uncased", 128),
    ("bert-sentiment140-b16", "sentiment140", "bert_base_uncased", 16),
    ("deepspeech2-librispeech-b192", "librispeech", "deepspeech2", 192),
    ("shufflenetv2-cifar100-b1024", "cifar100", "shufflenetv2", 1024),
    ("shufflenetv2-cifar100-b128", "cifar100", "shufflenetv2", 128),
    ("ncf-movielens1m-b1024", "movielens-1m", "ncf", 1024),
)

# Expected sha256 of the inputs (from shared/traces/public/PROVENANCE.md).
INPUT_SHA256 = {
    "alibaba-gpu-v2023/openb_pod_list_default.csv": (
        "1ee7ed79c27a3b0861cda8ddba86a004c6aba904caafa329a76ae93ca63834a8"
    ),
    "zeus-nsdi23/summary_power_a40.csv": (
        "f4ec111fc9b06b353182faab9160ecb1236a486b2741ed93383b80497332031e"
    ),
    "zeus-nsdi23/summary_power_v100.csv": (
        "f0b066dd1a451bd78f730e001ac3a7c411979bc7f0846f12c1a9fb604aa90628"
    ),
}

# Alibaba trace facts and conversion rules.
TRACE_END_S = 12902960  # deletion_time of every pod still alive when the trace was cut
QOS_PRIORITY = {"LS": 2, "Guaranteed": 2, "Burstable": 1, "BE": 0}
PREEMPTIBLE_QOS = {"BE"}
DAY_S = 86400
FOLD_WINDOW_S = 3 * DAY_S
FOLD_WINDOWS = 12  # 12 x 3 days = the last 36 days of the trace, which hold its busy period
FOLD_START_S = TRACE_END_S - FOLD_WINDOWS * FOLD_WINDOW_S

TRACE_COLUMNS = (*REQUIRED_COLUMNS, "preemptible")


# --------------------------------------------------------------------- helpers


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_inputs(public: Path) -> None:
    for rel, want in INPUT_SHA256.items():
        path = public / rel
        if not path.is_file():
            sys.exit(f"build_traces: missing input {path} (use --public to point at the copies)")
        got = sha256(path)
        if got != want:
            sys.exit(f"build_traces: {path} has sha256 {got}, expected {want} (PROVENANCE.md)")


def fmt(x: float, nd: int) -> str:
    """Fixed decimals, never '-0.0', so output does not depend on platform repr."""
    s = f"{x:.{nd}f}"
    return "0" + s[2:] if s.startswith("-0") and float(s) == 0 else s


def csv_text(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


# --------------------------------------------------------------------- power classes


@dataclass(frozen=True)
class PowerClass:
    name: str
    dataset: str
    network: str
    batch_size: int
    watts_h100: float
    fraction: float
    rel_spread: float
    per_gpu: dict[str, tuple[float, float, float, int]]  # gpu -> (watts, tdp, fraction, rows)


def _read_zeus(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def build_classes(public: Path) -> list[PowerClass]:
    zeus = {gpu: _read_zeus(public / "zeus-nsdi23" / fn) for gpu, (fn, _) in SOURCE_GPUS.items()}
    out = []
    for name, dataset, network, bs in CLASSES:
        per_gpu = {}
        cvs = []
        for gpu, (_, tdp) in SOURCE_GPUS.items():
            rows = zeus[gpu]
            max_pl = max(float(r["power_limit"]) for r in rows)
            if max_pl != tdp:
                sys.exit(f"build_traces: {gpu} max power limit {max_pl} W != assumed TDP {tdp} W")
            at_max = [
                r
                for r in rows
                if r["dataset"] == dataset
                and r["network"] == network
                and float(r["power_limit"]) == max_pl
            ]
            exact = [float(r["average_power"]) for r in at_max if int(r["batch_size"]) == bs]
            if not exact:
                sys.exit(f"build_traces: no {gpu} row for {dataset}/{network} batch {bs}")
            watts = float(np.mean(exact))  # mean over optimizers where Zeus ran several
            per_gpu[gpu] = (watts, tdp, watts / tdp, len(exact))
            # Spread: coefficient of variation of power over the neighbouring batch sizes
            # (bs/2 .. 2*bs) on this GPU: how much similar jobs of this class differ.
            near = np.array(
                [
                    float(r["average_power"]) / tdp
                    for r in at_max
                    if bs / 2 <= int(r["batch_size"]) <= 2 * bs
                ]
            )
            cvs.append(float(near.std() / near.mean()))
        fraction = float(np.mean([v[2] for v in per_gpu.values()]))
        out.append(
            PowerClass(
                name=name,
                dataset=dataset,
                network=network,
                batch_size=bs,
                watts_h100=round(fraction * H100_TDP_W, 1),
                fraction=round(fraction, 4),
                rel_spread=round(max(MIN_REL_SPREAD, float(np.mean(cvs))), 3),
                per_gpu=per_gpu,
            )
        )
    return out


CLASS_COLUMNS = (
    "workload_class",
    "gpu_watts_h100",
    "fraction_of_tdp",
    "rel_spread",
    "source_gpu",
    "source_file",
    "dataset",
    "network",
    "batch_size",
    "a40_watts",
    "a40_fraction",
    "v100_watts",
    "v100_fraction",
)


def classes_csv(classes: list[PowerClass]) -> str:
    rows = []
    for c in classes:
        a40, v100 = c.per_gpu["A40"], c.per_gpu["V100"]
        rows.append(
            [
                c.name,
                fmt(c.watts_h100, 1),
                fmt(c.fraction, 4),
                fmt(c.rel_spread, 3),
                "A40;V100",
                ";".join(f"zeus-nsdi23/{SOURCE_GPUS[g][0]}" for g in SOURCE_GPUS),
                c.dataset,
                c.network,
                str(c.batch_size),
                fmt(a40[0], 1),
                fmt(a40[2], 4),
                fmt(v100[0], 1),
                fmt(v100[2], 4),
            ]
        )
    return csv_text(CLASS_COLUMNS, rows)


def power_readme(classes: list[PowerClass]) -> str:
    table = "\n".join(
        f"| `{c.name}` | {c.watts_h100:.1f} | {c.fraction:.3f} | {c.rel_spread:.3f} "
        f"| {c.per_gpu['A40'][0]:.1f} | {c.per_gpu['V100'][0]:.1f} |"
        for c in classes
    )
    return f"""# Per-class GPU power for an H100-class site

**Per-job power here is MODELLED from published measurements, not measured per job.**
No public data set links real jobs to their measured power. The values below are
single-GPU training measurements from the Zeus NSDI '23 artifacts (You et al., "Zeus:
Understanding and Optimizing GPU Energy Consumption of DNN Training", NSDI '23;
github.com/ml-energy/zeus, Apache-2.0), rescaled to an H100 by fraction of TDP.
Nobody ran these workloads on an H100 to produce this table.

`classes.csv` is written by `scripts/build_traces.py`; do not edit it by hand.

## How a class's power is derived

1. Source: `zeus-nsdi23/summary_power_a40.csv` and `summary_power_v100.csv`
   (copies listed with hashes in `shared/traces/public/PROVENANCE.md`). Column
   `average_power` is the mean GPU power while training one epoch.
2. Power limit: only rows at each GPU's highest power limit in the file, which is the
   board's default (= maximum) limit, i.e. its TDP: A40 300 W (NVIDIA A40 datasheet),
   V100 250 W (NVIDIA V100 PCIe datasheet). The V100 SXM2 module is rated 300 W, but the
   Zeus V100 file never sets a limit above 250 W, the PCIe card's maximum, so it is the
   PCIe card (assuming 300 W would lower every V100 fraction by a sixth). With 250 W the
   two GPUs agree within 5 % on four classes and differ by 11-21 % on three; NCF differs
   almost twofold.
3. Class = (dataset, network, one representative batch size): for each of the six
   workloads the batch size Zeus's own trace-driven simulator starts from
   (`run_alibaba.py`: min(default, largest batch in the file), i.e. 256, 32, 128, 192,
   1024, 1024), plus two small-batch variants (BERT sentiment140 at 16, ShuffleNet at 128).
   Where Zeus ran two optimizers for one configuration (ShuffleNet on V100), the two
   powers are averaged.
4. `fraction_of_tdp` = mean over A40 and V100 of (average_power / that GPU's TDP).
   `gpu_watts_h100` = fraction_of_tdp x {H100_TDP_W:.0f} W (H100 SXM5 TDP).
5. `rel_spread` = coefficient of variation of power over the neighbouring batch sizes
   (half to double the representative one) at the same limit, averaged over the two GPUs,
   with a floor of {MIN_REL_SPREAD} because Zeus measured each configuration only once.
   Traces draw each job's power as gpu_watts_h100 x (1 + N(0, rel_spread)), clipped to
   [{H100_IDLE_W:.0f}, {H100_TDP_W:.0f}] W.

## The table

| class | H100 W | fraction of TDP | rel. spread | A40 W (of 300) | V100 W (of 250) |
| --- | ---: | ---: | ---: | ---: | ---: |
{table}

## Caveats

- Keeping the fraction of TDP across GPU generations is a modelling assumption. Memory- or
  input-bound workloads (NCF most of all: 28 % of TDP on the A40 but 15 % on the V100)
  do not scale like compute-bound ones; their fraction of TDP transfers least well.
- All measurements are single-GPU. Data-parallel jobs spend some time communicating and
  typically draw somewhat less per GPU; the traces apply the single-GPU value to every
  GPU of a job.
- Large-model training on H100s may well run closer to TDP than these CNN, RNN and
  BERT-base workloads; the BERT classes (~0.9 of TDP) are the closest stand-in here.
- ShuffleNet at batch 128 sits on the steep part of its power-vs-batch curve, hence its
  large spread (0.24): at batch 64 it draws ~35-40 % of TDP, at 256 ~60-70 %.
"""


# --------------------------------------------------------------------- Alibaba pods -> jobs


@dataclass(frozen=True)
class Job:
    job_id: str
    submit_s: int
    duration_s: int
    gpus: int
    workload_class: str
    priority: int
    gpu_watts: float
    preemptible: bool
    fractional: bool
    qos: str


def class_of(name: str, classes: list[PowerClass]) -> PowerClass:
    """Deterministic class for a pod: sha256 of its name, not Python's salted hash()."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return classes[h % len(classes)]


def convert_pods(public: Path, classes: list[PowerClass]) -> tuple[list[Job], Counter[str]]:
    path = public / "alibaba-gpu-v2023" / "openb_pod_list_default.csv"
    with path.open(newline="") as f:
        pods = list(csv.DictReader(f))
    stats: Counter[str] = Counter(pods_total=len(pods))
    kept = []
    for p in pods:
        num_gpu = int(p["num_gpu"])
        if num_gpu < 1:
            stats["drop_cpu_only"] += 1
            continue
        stats["gpu_pods"] += 1
        if not p["scheduled_time"]:
            stats["drop_never_scheduled"] += 1
            continue
        deletion = int(p["deletion_time"])
        if deletion >= TRACE_END_S:
            stats["drop_censored"] += 1
            continue
        duration = deletion - int(p["scheduled_time"])
        if duration <= 0:
            stats["drop_nonpositive_duration"] += 1
            continue
        fractional = int(p["gpu_milli"]) < 1000
        stats["kept_fractional_rounded_up"] += fractional
        kept.append((p, num_gpu, duration, fractional))
    # One normal draw per kept pod, in file (= pod name) order, from a fixed seed.
    noise = np.random.default_rng(SEED).standard_normal(len(kept))
    jobs = []
    for (p, num_gpu, duration, fractional), z in zip(kept, noise, strict=True):
        c = class_of(p["name"], classes)
        watts = float(np.clip(c.watts_h100 * (1.0 + c.rel_spread * z), H100_IDLE_W, H100_TDP_W))
        qos = p["qos"]
        if qos not in QOS_PRIORITY:
            sys.exit(f"build_traces: unknown qos {qos!r} for {p['name']}")
        jobs.append(
            Job(
                job_id=p["name"],
                submit_s=int(p["creation_time"]),
                duration_s=duration,
                gpus=num_gpu,
                workload_class=c.name,
                priority=QOS_PRIORITY[qos],
                gpu_watts=round(watts, 1),
                preemptible=qos in PREEMPTIBLE_QOS,
                fractional=fractional,
                qos=qos,
            )
        )
    stats["kept"] = len(jobs)
    return jobs, stats


def fold(jobs: list[Job]) -> list[Job]:
    """The power-bound slice: pods submitted in the last FOLD_WINDOWS x 3 days, each
    re-based to (submit - FOLD_START_S) mod 3 days. Durations are unchanged."""
    out = []
    for j in jobs:
        if j.submit_s < FOLD_START_S:
            continue
        t = (j.submit_s - FOLD_START_S) % FOLD_WINDOW_S
        out.append(Job(**{**j.__dict__, "submit_s": t}))
    return out


def trace_csv(jobs: list[Job]) -> str:
    rows = [
        [
            j.job_id,
            str(j.submit_s),
            str(j.duration_s),
            "1",
            str(j.gpus),
            j.workload_class,
            str(j.priority),
            fmt(j.gpu_watts, 1),
            "1" if j.preemptible else "0",
        ]
        for j in sorted(jobs, key=lambda j: (j.submit_s, j.job_id))
    ]
    return csv_text(TRACE_COLUMNS, rows)


# --------------------------------------------------------------------- site power summary


def gpu_only_curve(
    jobs: list[Job], *, nodes: int = 64, gpn: int = 8, pue: float = 1.2, base: float = 800.0
) -> tuple[np.ndarray, np.ndarray]:
    """Site watts, sampled each minute over [0, 3 d), if every job started on submit
    (GPU count permitting, FIFO), ignoring power: what a GPU-only scheduler would draw."""
    total = nodes * gpn
    order = sorted(jobs, key=lambda j: (j.submit_s, j.job_id))
    # simple event-driven FIFO on GPU count only
    running: list[tuple[int, int, float]] = []  # (end, gpus, dyn watts)
    free = total
    queue: list[Job] = []
    starts: list[tuple[int, int, float]] = []
    i = 0
    t = 0
    while i < len(order) or queue:
        nxt_sub = order[i].submit_s if i < len(order) else None
        nxt_end = running[0][0] if running else None
        t = min(x for x in (nxt_sub, nxt_end) if x is not None)
        while running and running[0][0] <= t:
            _, g, _ = heapq.heappop(running)
            free += g
        while i < len(order) and order[i].submit_s <= t:
            queue.append(order[i])
            i += 1
        while queue and queue[0].gpus <= free:
            j = queue.pop(0)
            free -= j.gpus
            dyn = j.gpus * (j.gpu_watts - H100_IDLE_W)
            heapq.heappush(running, (t + j.duration_s, j.gpus, dyn))
            starts.append((t, t + j.duration_s, dyn))
        if not running and queue and queue[0].gpus > free:
            break
    grid = np.arange(0, FOLD_WINDOW_S, 60)
    dyn = np.zeros(len(grid))
    for s, e, d in starts:
        a, b = np.searchsorted(grid, [s, e])
        dyn[a:b] += d
    idle = nodes * base + total * H100_IDLE_W
    return grid, pue * (idle + dyn)


def real_timing_busy(jobs: list[Job]) -> tuple[int, float, int]:
    """At the trace's own timing (start = submit; the trace's waits are short): the peak
    number of GPUs busy at once, and the busiest 3-day window (on whole days) as
    (mean GPUs busy, first day)."""
    minutes = TRACE_END_S // 60 + 2
    delta = np.zeros(minutes + 1)
    for j in jobs:
        np.add.at(delta, [j.submit_s // 60, (j.submit_s + j.duration_s) // 60], [j.gpus, -j.gpus])
    busy = np.cumsum(delta)[:minutes]
    per_day = [busy[d * 1440 : (d + 1) * 1440].mean() for d in range(minutes // 1440)]
    window = np.convolve(per_day, np.ones(3) / 3, mode="valid")
    best = int(np.argmax(window))
    return int(busy.max()), float(window[best]), best


# --------------------------------------------------------------------- provenance


def provenance_md(
    stats: Counter[str], full: list[Job], sliced: list[Job], sizes: dict[str, int]
) -> str:
    def mix(js: list[Job]) -> str:
        c = Counter(j.gpus for j in js)
        return ", ".join(f"{g} GPU: {c[g]}" for g in sorted(c))

    qos = Counter(j.qos for j in full)
    qos_s = ", ".join(f"{q} {qos[q]}" for q in sorted(qos))
    gpu_s_full = sum(j.gpus * j.duration_s for j in full)
    gpu_s_slice = sum(j.gpus * j.duration_s for j in sliced)
    mean_busy = gpu_s_slice / FOLD_WINDOW_S
    _, site = gpu_only_curve(sliced)
    peak, busiest, busiest_day = real_timing_busy(full)
    early = sum(1 for j in full if j.submit_s < FOLD_START_S)
    idle_kw = 1.2 * (64 * 800 + 512 * H100_IDLE_W) / 1000
    tdp_kw = 1.2 * (64 * 800 + 512 * H100_TDP_W) / 1000
    q = np.percentile(site, [50, 90, 99, 100]) / 1000
    return f"""# Provenance of data/traces

**Job power in these traces is modelled from measurements, not measured per job.** The jobs
(arrival, size, duration, QoS) are real pods from Alibaba's production GPU cluster trace;
their power is assigned per workload class from the Zeus NSDI '23 single-GPU measurements
rescaled to an H100 (`data/power/README.md`). No public data set links real jobs to their
measured power.

All files here are written by `scripts/build_traces.py` (deterministic: fixed seed {SEED},
fixed formatting; a re-run gives byte-identical files). Do not edit them by hand.

## Sources

### Jobs: Alibaba cluster-trace-gpu-v2023
- Repository https://github.com/alibaba/clusterdata, snapshot HEAD
  7a6c496e4f4b6ce6150be8f881cb051bf2abff42; last commit touching the file
  50a91c7c74abe3b658188dc78ac1dd302970d40c.
- File `cluster-trace-gpu-v2023/csv/openb_pod_list_default.csv` (575,468 B, 8,152 pods),
  sha256 {INPUT_SHA256["alibaba-gpu-v2023/openb_pod_list_default.csv"]}
  (checked by the build script).
- Terms: the v2023 folder has no LICENSE file; the repository README says the trace may be
  used "however you want as long as it is for research or study purpose" and asks users to
  cite: Qizhen Weng et al., "Beware of Fragmentation: Scheduling GPU-Sharing Workloads with
  Fragmentation Gradient Descent", USENIX ATC '23. These derived traces carry the same terms.

### Power: Zeus NSDI '23 trace
- Repository https://github.com/ml-energy/zeus, snapshot HEAD
  75a8b9398034eb9baf74ca0a830c2c31bcce52cd; last commit touching the folder
  43297f658bb9ba05e8b41e2d0cc85c91fff242c7; folder
  `examples/research_reproducibility/zeus_nsdi23/trace/`.
- `summary_power_a40.csv` sha256 {INPUT_SHA256["zeus-nsdi23/summary_power_a40.csv"]}
- `summary_power_v100.csv` sha256 {INPUT_SHA256["zeus-nsdi23/summary_power_v100.csv"]}
- Licence Apache-2.0. Cite: Jie You, Jae-Won Chung, Mosharaf Chowdhury, "Zeus:
  Understanding and Optimizing GPU Energy Consumption of DNN Training", USENIX NSDI '23.

## Conversion rules (pod -> FORMAT.md job)

1. Only GPU pods: `num_gpu >= 1` ({stats["drop_cpu_only"]} CPU-only pods dropped).
2. Pods never scheduled (empty `scheduled_time`, all in phase Pending) are dropped
   ({stats["drop_never_scheduled"]}): they have no run time.
3. Censored pods, still alive when the trace was cut (`deletion_time` = {TRACE_END_S}), are
   dropped ({stats["drop_censored"]}): their true duration is unknown.
4. `job_id` = pod `name`; `submit_s` = `creation_time`;
   `duration_s` = `deletion_time - scheduled_time` (the time the pod held its GPUs; pod phase
   Failed/Succeeded/Running is not used, a failed pod's GPU time is real load).
5. `replicas` = 1; `gpus_per_replica` = `num_gpu` (1, 2, 4 or 8).
6. GPU-sharing pods (`gpu_milli` < 1000, always with `num_gpu` = 1) are rounded UP to one
   whole GPU ({stats["kept_fractional_rounded_up"]} pods): wattcap allocates whole GPUs, so
   such a pod would hold one, and it is given its class's full power (conservative: it
   overstates the power of what were light, shared pods).
7. `priority` from `qos`: LS 2, Guaranteed 2, Burstable 1, BE 0. `preemptible` = 1 for BE
   (best-effort), else 0.
8. `workload_class` = the classes of `data/power/classes.csv` in file order, indexed by
   (first 8 bytes of sha256(pod name) as a big-endian integer) mod {len(CLASSES)}.
9. `gpu_watts` = class `gpu_watts_h100` x (1 + rel_spread x z), z ~ N(0, 1) drawn by
   `numpy.random.default_rng({SEED}).standard_normal` in pod-name order over the kept pods,
   clipped to [{H100_IDLE_W:.0f}, {H100_TDP_W:.0f}] W, rounded to 0.1 W. A pod keeps the
   same power in both files.
10. No `est_duration_s` or `user`: the trace has neither.

Pods: {stats["pods_total"]} in the file, {stats["gpu_pods"]} with GPUs; of those
{stats["drop_never_scheduled"]} never scheduled and {stats["drop_censored"]} censored are
dropped, **{stats["kept"]} kept** ({stats["kept_fractional_rounded_up"]} of them rounded up
from a GPU share).

## Files

### `alibaba-v2023-h100.csv` ({sizes["alibaba-v2023-h100.csv"]:,} B)
All {len(full)} kept pods, `submit_s` on the original trace clock (seconds after the trace
start; the trace spans {TRACE_END_S / DAY_S:.1f} days). Sizes: {mix(full)}. QoS: {qos_s}.
{gpu_s_full / 3600:,.0f} GPU-hours in all.

### `alibaba-v2023-h100-3d.csv` ({sizes["alibaba-v2023-h100-3d.csv"]:,} B)
A power-bound 3-day slice for a site of 64 nodes x 8 GPUs. The raw trace is far too light
for such a site: at its own timing (each pod starting when submitted) it never has more than
{peak} GPUs busy at once, and its busiest 3-day window (days {busiest_day}-{busiest_day + 3})
keeps {busiest:.0f} GPUs busy on average, {busiest / 512:.0%} of 512. So the slice FOLDS
the busy period: it takes the pods submitted in the last {FOLD_WINDOWS} x 3 days of the trace
([{FOLD_START_S}, {TRACE_END_S}) s, which holds the whole busy period; the {early} pods
created earlier are left out, almost all multi-day services) and re-bases each to
`submit_s = (creation_time - {FOLD_START_S}) mod {FOLD_WINDOW_S}`, i.e. it superimposes
{FOLD_WINDOWS} consecutive 3-day windows on t = 0 .. 72 h. Job sizes, durations, classes
and power are unchanged; as the fold period is whole days, arrivals keep their daily
pattern (slice t = 0 is {FOLD_START_S % DAY_S / 3600:.1f} h into a trace day; the trace's own
t = 0 has no published wall-clock time). Jobs from different windows now overlap: the
arrival rate is
{FOLD_WINDOWS}x the real one. Jobs whose duration exceeds the window keep it.

{len(sliced)} jobs; sizes: {mix(sliced)}. Offered GPU work
{gpu_s_slice / 3600:,.0f} GPU-hours: an offered load of {mean_busy:.0f} GPUs averaged over the
72 h arrival window ({mean_busy / 512:.0%} of 512). A GPU-only FIFO scheduler on the
64 x 8 site (PUE 1.2, 800 W per node, {H100_IDLE_W:.0f} W idle GPU) would draw, sampled
each minute over [0, 72 h): median {q[0]:.0f} kW, p90 {q[1]:.0f} kW, p99 {q[2]:.0f} kW,
max {q[3]:.0f} kW, against {idle_kw:.1f} kW with every GPU idle and {tdp_kw:.1f} kW with every
GPU at TDP.
The longest job runs {max(j.duration_s for j in sliced) / DAY_S:.1f} days, so a replay to the
last job's end lasts weeks, almost all of it with a few long jobs on an otherwise idle site:
report the first 72 h (or until the queue empties) when comparing schedulers.

## Oddities in the source

- Almost all pods arrive in the last ~35 days of the 149-day trace; the first ~114 days
  hold only {early} kept pods, almost all long-lived (one runs 145 days).
- The pods are {stats["kept_fractional_rounded_up"] / len(full):.0%} GPU-sharing
  (`gpu_milli` < 1000) and {sum(j.gpus == 1 for j in full) / len(full):.1%} single-GPU:
  a mix dominated by small, GPU-sharing pods, not large multi-GPU training jobs.
- Many pods have `pod_phase` Running yet a `deletion_time` before the trace end; the
  deletion time is taken as the end of the pod.
- `gpu_spec` is empty for every pod.
"""


# --------------------------------------------------------------------- main


def build(public: Path) -> dict[str, str]:
    check_inputs(public)
    classes = build_classes(public)
    full, stats = convert_pods(public, classes)
    sliced = fold(full)
    files = {
        "power/classes.csv": classes_csv(classes),
        "power/README.md": power_readme(classes),
        "traces/alibaba-v2023-h100.csv": trace_csv(full),
        "traces/alibaba-v2023-h100-3d.csv": trace_csv(sliced),
    }
    sizes = {k.split("/")[-1]: len(v.encode()) for k, v in files.items()}
    files["traces/PROVENANCE.md"] = provenance_md(stats, full, sliced, sizes)
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--public", type=Path, default=DEFAULT_PUBLIC, help="public data copies")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output data directory")
    ap.add_argument("--check", action="store_true", help="exit 1 if shipped files differ")
    args = ap.parse_args(argv)
    files = build(args.public)
    stale = []
    for rel, text in files.items():
        path = args.out / rel
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(rel)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())
        print(f"wrote {path} ({len(text.encode()):,} B)")
    if stale:
        print("stale: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
