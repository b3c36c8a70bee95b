"""`wattcap simulate`: read the inputs, replay, report. Bad input is one line and exit 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from ..model import (
    ManifestError,
    PowerPolicy,
    parse_power_policy,
    parse_time,
    validate_cap_against_site,
)
from .engine import SimConfig, simulate
from .report import format_summary, plot, summarize, write_schedule
from .schedulers import make_scheduler
from .trace import TraceError, load_trace

EXIT_USAGE = 2


class InputError(Exception):
    """A bad input file or argument; str() is the whole message after 'error: '."""


def parse_start(value: str) -> float:
    try:
        return parse_time(value, "--start")
    except ManifestError as e:
        raise InputError(str(e)) from None


def load_policy(path: str | Path) -> PowerPolicy:
    """A PowerPolicy from a YAML manifest (the whole object or its spec)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        obj = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
    try:
        return parse_power_policy(obj)
    except ManifestError as e:
        raise InputError(f"{path}: {e}") from None


def simulate_command(args: argparse.Namespace) -> int:
    try:
        start = parse_start(args.start)
        if args.nodes < 1:
            raise InputError(f"--nodes: must be >= 1, got {args.nodes}")
        if args.gpus_per_node < 1:
            raise InputError(f"--gpus-per-node: must be >= 1, got {args.gpus_per_node}")
        policy = load_policy(args.policy)
        try:
            validate_cap_against_site(policy, args.nodes, args.nodes * args.gpus_per_node)
        except ManifestError as e:
            raise InputError(f"{args.policy}: {e}") from None
        try:
            jobs = load_trace(args.trace, nodes=args.nodes, gpus_per_node=args.gpus_per_node)
        except TraceError as e:
            raise InputError(str(e)) from None
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE

    cfg = SimConfig(
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        start_epoch_s=start,
        seed=args.seed,
        record_series=bool(args.plot),
    )
    res = simulate(jobs, policy, make_scheduler(args.scheduler, policy, jobs), cfg)
    summary = summarize(res, nodes=args.nodes, gpus_per_node=args.gpus_per_node, seed=args.seed)
    try:
        if args.schedule_out:
            write_schedule(res, args.schedule_out)
        if args.plot:
            plot(res, args.plot, title=f"{Path(args.trace).name}: {args.scheduler}")
    except OSError as e:
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, allow_nan=False))
    else:
        print(format_summary(summary))
    return 0
