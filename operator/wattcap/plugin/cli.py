"""`kubectl wattcap`: status, queue, explain, top.

kubectl finds `kubectl-wattcap` on PATH (its plugin convention) and passes
every argument through, so the flags a kubectl user types (-n, -A, -o,
--context, --kubeconfig) are parsed here. Reads only; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from kubernetes.client.rest import ApiException

from . import views
from .render import NONE, age, chart, kw, table

GROUP, VERSION = "wattcap.io", "v1alpha1"
FLAG_DEFAULTS: dict[str, Any] = {
    "namespace": None,
    "all_namespaces": False,
    "output": None,
    "context": None,
    "kubeconfig": None,
}


def build_parser() -> argparse.ArgumentParser:
    # The flags are accepted before and after the command, as kubectl's are;
    # SUPPRESS keeps a subcommand from resetting what was given before it.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    common.add_argument(
        "-A", "--all-namespaces", action="store_true", help="TrainingJobs in every namespace"
    )
    common.add_argument(
        "-o", "--output", choices=("json", "yaml", "wide"), help="json, yaml or wide"
    )
    common.add_argument("--context", help="kubeconfig context to use")
    common.add_argument("--kubeconfig", help="path to the kubeconfig file")
    parser = argparse.ArgumentParser(
        prog="kubectl wattcap", description=__doc__.split("\n")[0], parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser(
        "status", parents=[common], help="cap now and next, draw, headroom, jobs, 24 h plan"
    )
    st.add_argument(
        "--hours", type=float, default=24.0, help="hours of the published plan to chart (<= 24)"
    )
    sub.add_parser("queue", parents=[common], help="waiting jobs in decision order")
    ex = sub.add_parser("explain", parents=[common], help="why one TrainingJob waits")
    ex.add_argument("trainingjob", help="TrainingJob name")
    top = sub.add_parser("top", parents=[common], help="draw by namespace and class")
    top.add_argument(
        "--by", choices=("namespace", "class", "both"), default="both", help="grouping"
    )
    return parser


class Reader:
    """The few reads the plugin needs, as the API's JSON."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        from kubernetes import client, config

        config.load_kube_config(config_file=kubeconfig, context=context)
        _, active = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = context or (active or {}).get("name")
        contexts, _ = config.list_kube_config_contexts(config_file=kubeconfig)
        ctx = next((c for c in contexts if c.get("name") == chosen), active or {})
        self.default_namespace = (ctx.get("context") or {}).get("namespace") or "default"
        self.custom = client.CustomObjectsApi()

    def _json(self, resp: Any) -> dict[str, Any]:
        return json.loads(resp.data)

    def policies(self) -> list[dict[str, Any]]:
        resp = self.custom.list_cluster_custom_object(
            GROUP, VERSION, "powerpolicies", _preload_content=False
        )
        return self._json(resp).get("items", [])

    def trainingjobs(self, namespace: str | None) -> list[dict[str, Any]]:
        if namespace is None:
            resp = self.custom.list_cluster_custom_object(
                GROUP, VERSION, "trainingjobs", _preload_content=False
            )
        else:
            resp = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, "trainingjobs", _preload_content=False
            )
        return self._json(resp).get("items", [])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name, default in FLAG_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    try:
        reader = Reader(args.kubeconfig, args.context)
    except Exception as err:  # kubeconfig missing or unreadable: say so, as kubectl does
        print(f"error: cannot load kubeconfig: {err}", file=sys.stderr)
        return 1
    ns = None if args.all_namespaces else (args.namespace or reader.default_namespace)
    try:
        if args.command == "status":
            return _status(reader, args)
        if args.command == "queue":
            return _queue(reader, args, ns)
        if args.command == "explain":
            return _explain(reader, args, ns or reader.default_namespace)
        if args.command == "top":
            return _top(reader, args, ns)
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 2


def _emit(args: argparse.Namespace, kind: str, records: Any) -> bool:
    """Print records as JSON or YAML if asked; True if printed."""
    doc = {"apiVersion": "wattcap.io/v1alpha1", "kind": kind, "items": records}
    if args.output == "json":
        print(json.dumps(doc, indent=2))
        return True
    if args.output == "yaml":
        print(yaml.safe_dump(doc, sort_keys=False), end="")
        return True
    return False


def _status(reader: Reader, args: argparse.Namespace) -> int:
    policies = reader.policies()
    recs = views.status_records(policies, reader.trainingjobs(None))
    if _emit(args, "StatusList", recs):
        return 0
    if not recs:
        print("No PowerPolicy: wattcap governs nothing (kubectl apply one).")
        return 0
    now = time.time()
    for i, r in enumerate(recs):
        if i:
            print()
        print(_status_text(r, now, wide=args.output == "wide", hours=min(24.0, args.hours)))
    return 0


def _status_text(r: Mapping[str, Any], now: float, wide: bool, hours: float = 24.0) -> str:
    role = "governing" if r["governing"] else "not governing (the oldest policy governs)"
    window = f" (window {r['activeWindow']})" if r["activeWindow"] else ""
    changes = ", ".join(
        f"{c['at'][11:16]} -> {kw(c['capWatts'])} kW" for c in r["nextCapChanges"][:4]
    )
    jobs = r["jobs"]
    lines = [
        f"PowerPolicy {r['name']}: {role}; last decision {r['lastCycle'] or NONE}",
        f"cap now        {kw(r['capWatts'])} kW{window}",
        f"next changes   {changes or 'none in the next 24 h'}",
        f"measured       {kw(r['measuredWatts'])} kW ({r['measured'] or 'unknown'})",
        f"projected      {kw(r['projectedWatts'])} kW",
        f"forecast       {kw(r['runningForecastWatts'])} kW of running jobs "
        f"(measured {kw(r['runningMeasuredWatts'])} kW)",
        f"headroom       {kw(r['headroomWatts'])} kW",
    ]
    other = r.get("unmanaged") or {}
    if other.get("gpus"):
        lines.append(
            f"unmanaged      {kw(other.get('watts'))} kW: {other['gpus']} GPUs in "
            f"{other.get('pods', 0)} pods ({other.get('source') or 'unknown'})"
        )
    drop = r["nextCapDrop"]
    if drop:
        lines.append(
            f"next cap drop  {drop['at']} to {kw(drop['capWatts'])} kW"
            + (f" ({drop['window']})" if drop.get("window") else "")
            + f"; committed work leaves {kw(drop['headroomWatts'])} kW"
        )
    if jobs:
        lines.append(
            f"jobs           {jobs['queued']} queued, {jobs['running']} running, "
            f"{jobs['preempted']} preempted, {jobs['succeeded']} succeeded, "
            f"{jobs['failed']} failed; {r['pastMaxWait'] or 0} past maxWait"
        )
    limits = r.get("powerLimits")
    if limits:
        lines.append(f"power limits   {limits['reason']}: {limits['message']}")
    for t in r.get("throttled") or []:
        lines.append(
            f"  {t['namespace']}/{t['name']}   {t['gpuPowerLimitWatts']} W per GPU   "
            f"{t['gpuPowerLimitState'] or NONE}   {t['message'] or ''}".rstrip()
        )
    if r["waitingByReason"]:
        why = ", ".join(f"{k} {v}" for k, v in sorted(r["waitingByReason"].items()))
        lines.append(f"waiting        {why}")
    lines.append("")
    lines.append(f"next {hours:g} h: the cap against the draw the operator planned")
    lines.append(chart(r["outlook"], now, hours * 3600, width=96 if wide else 48))
    return "\n".join(lines)


def _queue(reader: Reader, args: argparse.Namespace, ns: str | None) -> int:
    policy = views.governing(reader.policies())
    recs = views.queue_records(policy, reader.trainingjobs(ns))
    if _emit(args, "QueueList", recs):
        return 0
    if not recs:
        print("No TrainingJobs waiting" + (f" in {ns}." if ns else "."))
        return 0
    headers = ["#", "NAMESPACE", "NAME", "PRIO", "GPUS", "FORECAST_KW", "REASON", "EST_START"]
    headers += ["WAITED"]
    wide = args.output == "wide"
    if wide:
        headers += ["PHASE", "CLASS", "PREEMPTIBLE", "MESSAGE"]
    rows = []
    for q in recs:
        row = [
            q["position"],
            q["namespace"],
            q["name"],
            q["priority"],
            q["gpus"],
            kw(q["forecastWatts"]),
            q["reason"],
            q["estimatedStart"],
            age(q["waitedSeconds"]) + ("!" if q["pastMaxWait"] else ""),
        ]
        if wide:
            row += [q["phase"], q["workloadClass"], q["preemptible"], q["message"]]
        rows.append(row)
    print(table(headers, rows))
    return 0


def _explain(reader: Reader, args: argparse.Namespace, ns: str) -> int:
    tjs = reader.trainingjobs(ns)
    tj = next((t for t in tjs if t["metadata"]["name"] == args.trainingjob), None)
    if tj is None:
        print(f'error: trainingjob "{args.trainingjob}" not found in {ns}', file=sys.stderr)
        return 1
    policy = views.governing(reader.policies())
    try:  # its place in the site's queue, where the reader may list every namespace
        site, scope = reader.trainingjobs(None), "the site's queue"
    except ApiException:
        site, scope = tjs, f"the queue of {ns}"
    rec = views.explain_record(tj, policy, views.queue_records(policy, site))
    if _emit(args, "Explanation", rec):
        return 0
    fc = rec["forecast"]
    lines = [
        f"TrainingJob {rec['namespace']}/{rec['name']}: {rec['phase']}",
        f"reason          {rec['reason'] or NONE}",
        f"why             {rec['message'] or NONE}",
        f"estimated start {rec['estimatedStart'] or NONE}",
        f"forecast        {fc.get('kilowatts', NONE)} kW for {rec['gpus'] or NONE} GPUs "
        f"({fc.get('gpuWatts', NONE)} W/GPU, {fc.get('source', NONE)}, "
        f"quantile {fc.get('quantile', NONE)})",
    ]
    if rec["position"] is not None:
        lines.append(f"queue position  {rec['position']} of {rec['queueLength']} in {scope}")
    if rec.get("headroomWatts") is not None:
        lines.append(
            f"site headroom   {kw(rec['headroomWatts'])} kW now; this job adds "
            f"{kw(rec['siteWatts'])} kW at the site"
        )
    if rec["sooner"]:
        lines.append("would start sooner with:")
        lines += [f"  - {s}" for s in rec["sooner"]]
    print("\n".join(lines))
    return 0


def _top(reader: Reader, args: argparse.Namespace, ns: str | None) -> int:
    tjs = reader.trainingjobs(ns)
    groups = ("namespace", "class") if args.by == "both" else (args.by,)
    recs = {g: views.top_records(tjs, g) for g in groups}
    if _emit(args, "Top", recs):
        return 0
    out = []
    for g in groups:
        rows = [
            [
                r[g],
                r["jobs"],
                r["gpus"],
                kw(r["measuredWatts"]),
                kw(r["forecastWatts"]),
                NONE if r["measuredOverForecast"] is None else f"{r['measuredOverForecast']:.2f}",
            ]
            for r in recs[g]
        ]
        head = [g.upper(), "JOBS", "GPUS", "MEASURED_KW", "FORECAST_KW", "MEASURED/FORECAST"]
        out.append(table(head, rows) if rows else f"No running TrainingJobs by {g}.")
    print("\n\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
