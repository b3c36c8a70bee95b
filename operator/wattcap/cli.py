"""The `wattcap` command: one entry point, each subcommand delegating to its room."""

from __future__ import annotations

import argparse
import sys


def _site_args(p: argparse.ArgumentParser) -> None:
    """The trace, policy and site a replay needs (simulate and tune share them)."""
    p.add_argument("--trace", required=True, help="job trace CSV (shared/traces/FORMAT.md)")
    p.add_argument("--policy", required=True, help="PowerPolicy YAML manifest")
    p.add_argument("--nodes", type=int, required=True, help="number of nodes in the site")
    p.add_argument("--gpus-per-node", type=int, required=True, help="GPUs per node")
    p.add_argument("--start", required=True, help="RFC 3339 time of trace second 0")


def _simulate_args(p: argparse.ArgumentParser) -> None:
    _site_args(p)
    p.add_argument(
        "--scheduler",
        choices=("wattcap", "static-tdp", "gpu-only", "oracle"),
        default="wattcap",
        help="oracle: a clairvoyant reference that knows true power and duration",
    )
    p.add_argument("--schedule-out", help="write the schedule CSV here")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--plot", help="draw site power against the cap to this PNG")
    p.add_argument("--seed", type=int, default=0, help="seed of the measurement noise")


def _agent_args(p: argparse.ArgumentParser) -> None:
    """The node agent (wattcap.agent; the chart's DaemonSet, agent.enabled)."""
    p.add_argument("--node-name", help="this node (default: $NODE_NAME)")
    p.add_argument("--kubeconfig", help="default: $KUBECONFIG, else the in-cluster account")
    p.add_argument("--address", default="0.0.0.0", help="address of the metrics server")
    p.add_argument("--metrics-port", type=int, default=9401)
    from .enforcement import AGENT_INTERVAL_S  # the operator sizes gracePeriod with it

    p.add_argument(
        "--interval",
        type=float,
        default=AGENT_INTERVAL_S,
        help="seconds between passes over the GPUs",
    )
    p.add_argument(
        "--pod-resources-socket",
        default="/var/lib/kubelet/pod-resources/kubelet.sock",
        help="the kubelet's pod-resources gRPC socket",
    )
    p.add_argument(
        "--resource",
        action="append",
        help="an extended resource whose devices are GPUs (repeatable; default nvidia.com/gpu)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wattcap", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _simulate_args(sub.add_parser("simulate", help="replay a job trace on a simulated site"))
    tune = sub.add_parser("tune", help="replay a trace under a grid of policy settings")
    _site_args(tune)
    tune.add_argument(
        "--grid",
        action="append",
        metavar="FIELD=V1,V2",
        help="a PowerPolicy spec field and values to try (repeatable; default: a built-in grid)",
    )
    tune.add_argument("--jobs", type=int, default=2, help="replays run in parallel")
    tune.add_argument("--json", action="store_true", help="print every point and the choice")
    tune.add_argument("--plot", help="draw the grid and its Pareto front to this PNG")
    tune.add_argument("--seed", type=int, default=0, help="seed of the measurement noise")
    hist = sub.add_parser("history", help="the site's own history").add_subparsers(
        dest="history_command", required=True
    )
    export = hist.add_parser("export", help="finished TrainingJobs as a trace CSV")
    export.add_argument("--since", default="7d", help="how far back (a duration: 7d, 12h)")
    export.add_argument("--prometheus", help="defaults to the PowerPolicy's prometheus.url")
    export.add_argument("--out", help="write the trace here (default: stdout)")
    export.add_argument("--kubeconfig", help="defaults to $KUBECONFIG")
    export.add_argument("--context", help="kubeconfig context")
    export.add_argument("--prometheus-ca-file", help="CA bundle that verifies Prometheus's TLS")
    export.add_argument(
        "--prometheus-token-file", help="file holding a bearer token for Prometheus"
    )
    export.add_argument(
        "--gpu-idle-watts",
        type=float,
        help="a GPU's idle power, below which a job's readings are not its work"
        " (defaults to the PowerPolicy's gpuIdleWatts)",
    )
    export.add_argument(
        "--gpu-tdp-watts", type=float, help="a GPU's TDP (defaults to the PowerPolicy's)"
    )
    sim = sub.add_parser("sim", help="simulated parts for local sites").add_subparsers(
        dest="sim_command", required=True
    )
    ex = sim.add_parser("exporter", help="serve DCGM-style GPU power for kwok nodes")
    ex.add_argument("--kubeconfig", help="defaults to $KUBECONFIG")
    ex.add_argument("--address", default="127.0.0.1")
    ex.add_argument("--port", type=int, default=9400)
    ex.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--node-selector", default="type=kwok", help="label selector of GPU nodes")
    ex.add_argument("--idle-watts", type=float, default=70.0, help="a GPU no Running pod uses")
    ex.add_argument("--tdp-watts", type=float, default=700.0, help="ceiling of every reading")
    ex.add_argument(
        "--default-watts",
        type=float,
        default=400.0,
        help="a busy GPU whose pod has no wattcap.io/sim-power annotation",
    )
    ex.add_argument(
        "--no-agent",
        action="store_true",
        help="do not play the node agent: the fake for one that died (no power limit "
        "applied or reported); per node: annotate it wattcap.io/sim-agent-down=true",
    )
    ex.add_argument(
        "--min-limit-watts",
        type=float,
        default=200.0,
        help="the lowest GPU power limit the simulated agent applies (NVML's minimum)",
    )
    _agent_args(sub.add_parser("agent", help="apply GPU power limits on this node (NVML)"))
    op = sub.add_parser("operator", help="run the operator against the current kubeconfig")
    op.add_argument(
        "--all-namespaces",
        action="store_true",
        default=True,
        help="watch TrainingJobs in every namespace (the default)",
    )
    op.add_argument("--metrics-port", type=int, default=8080, help="0 disables /metrics")
    op.add_argument(
        "--lease-duration",
        type=int,
        default=15,
        help="seconds a silent replica keeps the site's Lease before another takes over",
    )
    op.add_argument(
        "--prometheus-allowed-scheme",
        action="append",
        metavar="SCHEME",
        help="a scheme spec.prometheus.url may use (repeatable; default http and https)",
    )
    op.add_argument(
        "--prometheus-allowed-host",
        action="append",
        metavar="HOST",
        help="a host spec.prometheus.url may name: host, host:port or *.domain "
        "(repeatable; default: any host). Any other URL is never fetched.",
    )
    op.add_argument("--prometheus-ca-file", help="CA bundle that verifies Prometheus's TLS")
    op.add_argument(
        "--prometheus-token-file",
        help="file holding a bearer token for Prometheus (a mounted Secret; re-read each cycle)",
    )
    op.add_argument("--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "simulate":
        from .sim.run import simulate_command

        return simulate_command(args)
    if args.command == "tune":
        from .sim.tune import tune_command

        return tune_command(args)
    if args.command == "history" and args.history_command == "export":
        from .history import export_command

        return export_command(args)
    if args.command == "sim" and args.sim_command == "exporter":
        from .sim.exporter import exporter_command

        return exporter_command(args)
    if args.command == "agent":
        from .agent.run import agent_command

        return agent_command(args)
    if args.command == "operator":
        return _operator(args)
    return 2


def _operator(args: argparse.Namespace) -> int:
    """Run kopf in this process. Standalone as far as kopf goes: replicas agree
    on who decides through the site's Lease (`lease.py`), not kopf's peering."""
    import logging

    import kopf

    from . import handlers
    from .promaccess import from_flags

    try:
        handlers.PROM_ACCESS = from_flags(
            args.prometheus_allowed_scheme,
            args.prometheus_allowed_host,
            args.prometheus_ca_file,
            args.prometheus_token_file,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    handlers.METRICS_PORT = args.metrics_port
    handlers.LEASE_DURATION_S = max(2, args.lease_duration)
    kopf.configure(verbose=args.verbose)
    if not args.verbose:  # one line per watch event drowns what matters
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(clusterwide=True, standalone=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
