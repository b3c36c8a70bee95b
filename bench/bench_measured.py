"""A measured run on the local control plane: forecast error per class and
seconds over the cap.

Seconds over the cap are judged by the referee (tests/integration/referee.py):
site power from the pods that really run and their `wattcap.io/sim-power`
profiles (without the exporter's noise), sampled about once a second; the
operator's own measured gauge, read back from Prometheus, is printed next
to it, as what the operator saw.

Starts Prometheus (hack/prometheus.sh), the simulated DCGM exporter and the
operator; submits waves of TrainingJobs of several classes whose true power
only the exporter knows; then asks Prometheus how the run went. Needs
`hack/cluster.sh up` first.

    python bench/bench_measured.py [--waves 4] [--per-wave 8]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time

import yaml
from prometheus_api_client import PrometheusConnect

from localsite import KUBECONFIG, ROOT, kubectl, prepare, priority_fields, start

sys.path.insert(0, str(ROOT / "tests" / "integration"))
from referee import Referee  # the tests' referee, shared

PROM = "http://127.0.0.1:9090"
CLASSES = {"bert": 630.0, "resnet": 580.0, "deepspeech": 420.0, "ncf": 150.0}  # true W/GPU
IDLE_W = 8 * 500 + 64 * 70


def job(ns: str, name: str, cls: str, rng: random.Random) -> dict:
    profile = {
        "watts": CLASSES[cls],
        "noise": 0.03,
        "rampSeconds": 3,
        "checkpointEverySeconds": 20,
        "checkpointSeconds": 2,
        "checkpointWatts": 150,
    }
    return {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "gpusPerReplica": rng.choice([4, 8]),
            "workloadClass": cls,
            **priority_fields(rng.randint(0, 2)),
            "preemptible": rng.random() < 0.5,
            "expectedDuration": "40s",
            "template": {
                "metadata": {
                    "annotations": {
                        "wattcap.io/sim-duration": f"{rng.randint(30, 45)}s",
                        "wattcap.io/sim-power": json.dumps(profile),
                    }
                }
            },
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--waves", type=int, default=4)
    ap.add_argument("--per-wave", type=int, default=8)
    args = ap.parse_args()
    rng = random.Random(7)
    cap = IDLE_W + 0.5 * 64 * (700 - 70)
    ns = f"measured-{int(time.time())}"
    prepare(
        ns, cap, safetyMargin=0.02, controlPeriod="2s", gracePeriod="5s", prometheus={"url": PROM}
    )
    subprocess.run([str(ROOT / "hack" / "prometheus.sh"), "up"], check=True)
    exporter = start("sim", "exporter", "--kubeconfig", KUBECONFIG)
    op = start("operator", "--metrics-port", "8080")
    ref = Referee(KUBECONFIG, pue=1.0, node_base_w=500.0, gpu_idle_w=70.0, gpu_tdp_w=700.0)
    ref.start()
    t0 = time.time()
    try:
        time.sleep(8)
        for wave in range(args.waves):
            docs = [
                job(ns, f"w{wave}-{i:02d}", rng.choice(list(CLASSES)), rng)
                for i in range(args.per_wave)
            ]
            kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
            while True:  # the next wave once this one is done: history grows wave by wave
                items = json.loads(
                    kubectl("get", "trainingjobs.wattcap.io", "-n", ns, "-o", "json")
                )["items"]
                if all((t.get("status") or {}).get("phase") == "Succeeded" for t in items):
                    break
                time.sleep(2)
        time.sleep(5)
        window = int(time.time() - t0)
        prom = PrometheusConnect(PROM, disable_ssl=True)
        over = prom.custom_query(
            f'sum_over_time((wattcap_site_power_watts{{source="measured"}} > bool '
            f"ignoring(source) wattcap_cap_watts)[{window}s:1s])"
        )
        peak = prom.custom_query(
            f'max_over_time(wattcap_site_power_watts{{source="measured"}}[{window}s])'
        )
        errors = prom.custom_query("wattcap_forecast_error_ratio")
        items = json.loads(kubectl("get", "trainingjobs.wattcap.io", "-n", ns, "-o", "json"))[
            "items"
        ]
    finally:
        ref.stop()
        op.terminate()
        exporter.terminate()
        op.wait(20)
        exporter.wait(20)
        subprocess.run([str(ROOT / "hack" / "prometheus.sh"), "down"], check=False)
        kubectl("delete", "namespace", ns, "--wait=false")
    print(
        f"measured run: {len(items)} jobs in {args.waves} waves, cap {cap / 1000:.2f} kW, "
        f"{window} s on the local control plane"
    )
    print(
        f"  seconds over the cap (referee: the pods' own sim-power, {ref.count()} samples, "
        f"largest gap {ref.max_gap_s():.2f} s, {len(ref.errors)} failed reads): "
        f"{ref.seconds_over(cap):.0f}; peak {ref.peak_w() / 1000:.2f} kW"
    )
    print(
        f"  seconds over the cap by the operator's own measured gauge (Prometheus, 1 s steps): "
        f"{float(over[0]['value'][1]) if over else float('nan'):.0f}"
    )
    peak_kw = float(peak[0]["value"][1]) / 1000
    print(f"  peak measured site power (operator's gauge): {peak_kw:.2f} kW")
    print("  forecast vs measured per class, per job (forecast at admission, W/GPU):")
    by_class: dict[str, list[tuple[float, float, str]]] = {}
    for t in items:
        st = t["status"]
        gpus = st["totalGPUs"]
        by_class.setdefault(t["spec"]["workloadClass"], []).append(
            (
                st["forecast"]["gpuWatts"],
                st.get("measuredWatts", 0) / gpus,
                st["forecast"]["source"],
            )
        )
    for cls, rows in sorted(by_class.items()):
        errs = [(f - m) / m for f, m, src in rows if src != "prior" and m > 0]
        prior = sum(src == "prior" for *_, src in rows)
        mean_err = f"{100 * sum(errs) / len(errs):+.1f} %" if errs else "n/a"
        print(
            f"    {cls:11s} true {CLASSES[cls]:5.0f} W  jobs {len(rows):2d} (on prior {prior})"
            f"  mean forecast error after learning {mean_err}"
        )
    print("  wattcap_forecast_error_ratio (last finished job, (measured - forecast)/forecast):")
    for e in errors:
        print(f"    {e['metric'].get('workload_class'):11s} {float(e['value'][1]):+.3f}")


if __name__ == "__main__":
    main()
