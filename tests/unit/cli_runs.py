"""The `wattcap` command line run as a user runs it, for the tests of its subcommands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data"
TRACE = DATA / "sim_trace.csv"
POLICY = DATA / "sim_policy.yaml"
START = "2026-07-01T00:00:00Z"
# the site TRACE and POLICY are made for: 4 nodes of 8 GPUs
SITE = ("--nodes", "4", "--gpus-per-node", "8", "--start", START)


def wattcap_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`wattcap ARGS` in a process of its own (a subprocess, so what the entry
    point parses and prints is what is checked); its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "wattcap.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
