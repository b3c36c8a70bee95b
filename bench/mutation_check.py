"""Deliberate breaks of the decision core, and which unit tests catch each.

A test suite that passes on broken code proves nothing about the code. This
copies `operator/` to a temporary directory, applies one break at a time (a
text substitution in the core's source), runs the core's unit tests against
the copy and records which of them fail. A break no test catches
"survives": the script then exits 1.

The copy runs its source as plain Python: compiled modules (`*.so`) are
deleted from it, or the build of the unbroken `profile.py` would run instead
of the broken source. The tests that only check that the build is in use are
deselected for the same reason. Hypothesis runs with a fixed seed and its
example database in the temporary directory, so a run is repeatable and
leaves nothing behind in the checkout.

    python bench/mutation_check.py [--only NAME ...] [--tests FILE ...]
        [--shard K/N] [--first] [--list]

Each break's row (what caught it) is printed as soon as it is known, so a run
cut short still says what it found; `--shard K/N` runs every N-th break from
the K-th (1-based), to split a run over processes or sessions. `--first`
stops each break at its first failing test (pytest -x): the table then names
one test that caught each break, not all, in a fraction of the time (for a
shared, loaded machine); a break no test catches still runs every test.

Exit status: 0 every break caught, 1 a break survived, 2 the unbroken copy
fails its tests or a break no longer applies (its text is not in the source:
update the list).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The core's unit tests: what should catch a break of the core.
CORE_TESTS = (
    "tests/unit/test_admission.py",
    "tests/unit/test_admission_properties.py",
    "tests/unit/test_profile.py",
    "tests/unit/test_placement.py",
    "tests/unit/test_forecast.py",
    "tests/unit/test_levers.py",
    "tests/unit/test_chance.py",
)
HELPERS = ("tests/unit/conftest.py", "tests/unit/core_snapshots.py")  # what the tests import
DESELECT = "not is_compiled"  # the build check: the copy runs as Python on purpose
SEED = "20261204"
TEST_TIMEOUT_S = 120  # a break that makes a test hang is caught by this (pytest-timeout)

# Loaded into the copy's pytest: no shrinking (a caught break needs only its
# first failure, and shrinking one costs minutes) and no example database.
PROFILE_PLUGIN = """
from hypothesis import Phase, settings
settings.register_profile(
    "mutation", phases=[Phase.explicit, Phase.generate], database=None, print_blob=False
)
"""


@dataclass(frozen=True)
class Break:
    """One deliberate bug: each (file, old, new) replaces `old`, which must
    occur exactly once in `operator/wattcap/<file>`."""

    name: str
    edits: tuple[tuple[str, str, str], ...]


BREAKS: tuple[Break, ...] = (
    Break(
        "drop PUE: head admissions (perJobQuantile)",
        (
            (
                "admission.py",
                "w = pue * g * max(j.gpu_watts - idle, 0.0)",
                "w = g * max(j.gpu_watts - idle, 0.0)",
            ),
        ),
    ),
    Break(
        "drop PUE: queued jobs' watts (perJobQuantile)",
        (
            (
                "profile.py",
                "w = pue * g * (w if w > 0.0 else 0.0)",
                "w = g * (w if w > 0.0 else 0.0)",
            ),
        ),
    ),
    Break(
        "drop PUE: queued jobs' charges (siteChance)",
        (
            (
                "admission.py",
                "mean = pue * g * np.maximum(",
                "mean = g * np.maximum(",
            ),
        ),
    ),
    Break(
        "drop PUE: running jobs' watts",
        (
            (
                "profile.py",
                "o[0, k] = (pue * gpus[k]) * (gpu_watts[k] - gpu_idle_w)",
                "o[0, k] = gpus[k] * (gpu_watts[k] - gpu_idle_w)",
            ),
        ),
    ),
    Break(
        "drop PUE: what a shed frees",
        (
            (
                "admission.py",
                "planned = pue * j.gpus * ((j.believed_gpu_watts",
                "planned = j.gpus * ((j.believed_gpu_watts",
            ),
        ),
    ),
    Break(
        "siteChance: a draw believed apart from the plan is shed at its mean",
        (
            (
                "admission.py",
                "out.believed = load.believed_mean + (out.watts - load.mean)",
                "out.believed = load.believed_mean",
            ),
        ),
    ),
    Break(
        "drop node base power",
        (
            (
                "model.py",
                "return self.pue * (nodes * self.node_base_watts + gpus * self.gpu_idle_watts)",
                "return self.pue * (gpus * self.gpu_idle_watts)",
            ),
        ),
    ),
    Break(
        "ignore future caps: head admissions",
        (
            (
                "admission.py",
                "low = min(caps[i0 : bisect_left(edges, end) + 1]) * keep",
                "low = caps[i0] * keep",
            ),
        ),
    ),
    Break(
        "ignore future caps: the plan",
        (("profile.py", "r[0, i] = cap_vals[k] * keep", "r[0, i] = ecap_now"),),
    ),
    Break(
        "ignore the coming cap when shedding",
        (
            (
                "admission.py",
                "soon_ecap = caps[bisect_right(cap_edges, now + period)]",
                "soon_ecap = caps[bisect_right(cap_edges, now)]",
            ),
        ),
    ),
    Break(
        "plan preemptible work as shed before a near drop",
        (
            (
                "profile.py",
                "r[3, i] = r[2, i] if t[i] > period_end else 0.0",
                "r[3, i] = r[2, i]",
            ),
        ),
    ),
    Break(
        "ignore measured excess: admission",
        (
            (
                "admission.py",
                "measured_excess = snap.measured_site_watts - projected",
                "measured_excess = 0.0",
            ),
        ),
    ),
    Break(
        "ignore measured excess: shedding",
        (
            (
                "admission.py",
                "excess_meas = _measured_excess(snap, pol, cap_now, ecap_now, now)",
                "excess_meas = 0.0",
            ),
        ),
    ),
    Break(
        "ignore the grace period",
        (  # one measured excess, shared by shedding and the power-limit lever
            (
                "admission.py",
                "and now - snap.over_cap_since_s >= pol.grace_period_s",
                "and True",
            ),
        ),
    ),
    Break(
        "invert shed order: priority",
        (
            (
                "admission.py",
                "key=lambda j: (j.key not in over, j.priority, -j.started_s, j.key)",
                "key=lambda j: (j.key not in over, -j.priority, -j.started_s, j.key)",
            ),
        ),
    ),
    Break(
        "invert shed order: most recent first",
        (
            (
                "admission.py",
                "key=lambda j: (j.key not in over, j.priority, -j.started_s, j.key)",
                "key=lambda j: (j.key not in over, j.priority, j.started_s, j.key)",
            ),
        ),
    ),
    Break(
        "over-drawers not shed first",
        (
            (
                "admission.py",
                "key=lambda j: (j.key not in over, j.priority, -j.started_s, j.key)",
                "key=lambda j: (j.priority, -j.started_s, j.key)",
            ),
        ),
    ),
    Break(
        "a non-preemptible over-drawer is never shed",
        (
            (
                "admission.py",
                "(j for j in running if j.preemptible or j.key in over)",
                "(j for j in running if j.preemptible)",
            ),
        ),
    ),
    Break(
        "the overdraw tolerance is ignored",
        (
            (
                "admission.py",
                "return f is not None and m is not None and m > f * (1.0 + tolerance)",
                "return f is not None and m is not None and m > f",
            ),
        ),
    ),
    Break(
        "skip the GPU fit: placement",
        (
            (
                "placement.py",
                "for k in range(gpus_per_replica, self._max + 1):",
                "for k in range(min(1, self._max), self._max + 1):",
            ),
        ),
    ),
    Break(
        "skip the GPU fit: the plan",
        (("profile.py", "gpus_ok: cython.bint = r[9, last] <= -g", "gpus_ok: cython.bint = True"),),
    ),
    Break(
        "replicas may share a node",
        (("placement.py", "if name not in chosen:", "if True:"),),
    ),
    Break(
        "drop the safety margin",
        (
            (
                "admission.py",
                "ecap_now = cap_now * (1.0 - pol.safety_margin)",
                "ecap_now = cap_now",
            ),
            ("admission.py", "keep = 1.0 - pol.safety_margin", "keep = 1.0"),
            ("admission.py", "1.0 - pol.safety_margin,\n", "1.0,\n"),
        ),
    ),
    Break(
        "starving jobs do not jump the queue",
        (
            (
                "admission.py",
                "waiting = (now_s - sub > limit) == 0",
                "waiting = np.ones(m, dtype=bool)",
            ),
            ("admission.py", "not now_s - j.submitted_s > limit,", "True,"),
            ("profile.py", "late = now - sub > limit", "late = False"),
        ),
    ),
    Break(
        "no second pass",
        (
            (
                "admission.py",
                "if not again or len(new) == len(waiting):",
                "if True:",
            ),
        ),
    ),
    Break(
        "backfill may delay a reservation",
        (("profile.py", "if not (r[row, i] >= w and r[6, i] >= g):", "if False:"),),
    ),
    Break(
        "levers: no floor on a GPU's limit",
        (
            (
                "levers.py",
                "    return min(floor, site.tdp_w)",
                "    return min(floor, site.tdp_w) * 0.5",
            ),
        ),
    ),
    Break(
        "levers: non-preemptible jobs preempted",
        (
            (
                "levers.py",
                "(c for c in cands if c.preemptible and freed_by_preempt(c, site) > 0)",
                "(c for c in cands if freed_by_preempt(c, site) > 0)",
            ),
        ),
    ),
    Break(
        "levers: a job no node agent confirms is throttled anyway",
        (("levers.py", "    if not c.throttleable:", "    if False:"),),
    ),
    Break(
        "levers: used while disabled",
        (("admission.py", "    if pol.power_limits.enabled:", "    if True:"),),
    ),
    Break(
        "siteChance: a queued job's base counts running jobs that end before it",
        (
            (  # compiled since 057657a: the charges' loops are in profile.py
                "profile.py",
                "b = c_np[n_np - _lower_bound(e_np, n_np, end[k])]",
                "b = c_np[n_np]",
            ),
            (
                "profile.py",
                "b = b + c_p[n_p - _lower_bound(e_p, n_p, end[k])]",
                "b = b + c_p[n_p]",
            ),
        ),
    ),
    Break(
        "siteChance: a non-preemptible queued job's base counts preemptible running ones",
        (("profile.py", "if n_p and preemptible[k]:", "if n_p:"),),
    ),
    Break(
        "siteChance: a preemptible running job's base counts every non-preemptible one",
        (
            (
                "profile.py",
                "base[k] = np_cum[nnp - _lower_bound(np_asc, nnp, end[k])] + c",
                "base[k] = np_cum[nnp] + c",
            ),
        ),
    ),
)


def apply(copy: Path, brk: Break) -> None:
    """Apply `brk`'s edits to the copy; raise if one no longer applies."""
    for name, old, new in brk.edits:
        path = copy / "operator" / "wattcap" / name
        text = path.read_text()
        n = text.count(old)
        if n != 1:
            raise LookupError(f"{brk.name}: {old!r} occurs {n} times in {name}")
        path.write_text(text.replace(old, new))


def fresh_copy(dest: Path, tests: tuple[str, ...]) -> None:
    """The package, the tests' own files and the pytest config, with no build."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(
        ROOT / "operator",
        dest / "operator",
        ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__", "*.egg-info"),
    )
    (dest / "tests" / "unit").mkdir(parents=True)
    for t in (*HELPERS, *tests):
        if (ROOT / t).exists():
            shutil.copy(ROOT / t, dest / t)
    shutil.copy(ROOT / "pyproject.toml", dest)
    (dest / "mutation_profile.py").write_text(PROFILE_PLUGIN)


def run_tests(copy: Path, tests: tuple[str, ...], first: bool = False) -> tuple[int, list[str]]:
    """Run the tests in the copy (to the first failure if `first`); return
    pytest's status and the failed tests."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join((str(copy / "operator"), str(copy))),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-rf",
        "--no-header",
        "--tb=no",
        f"--hypothesis-seed={SEED}",
        "-p",
        "mutation_profile",
        "--hypothesis-profile=mutation",
        f"--timeout={TEST_TIMEOUT_S}",
        "-k",
        DESELECT,
        *(["-x"] if first else []),
        *tests,
    ]
    out = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True)
    failed = sorted(set(re.findall(r"^(?:FAILED|ERROR) (\S+)", out.stdout, flags=re.M)))
    if out.returncode not in (0, 1):
        failed = failed or [f"pytest exit {out.returncode}: {out.stdout[-400:]}"]
    return out.returncode, failed


def check_imports_the_copy(copy: Path) -> None:
    """The copy, not the installed package, must be what the tests import."""
    env = {**os.environ, "PYTHONPATH": str(copy / "operator")}
    code = "import wattcap.admission as a, wattcap.profile as p; print(a.__file__, p.COMPILED)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    where, compiled = out.stdout.split()
    if not where.startswith(str(copy)) or compiled != "False":
        raise SystemExit(f"the copy is not what runs: {where} compiled={compiled}")


def _by(failed: list[str]) -> str:
    """The tests that failed, by file, for the table."""
    if not failed:
        return "-"
    short = [f.split("::", 1)[-1] if "::" in f else f for f in failed]
    files = sorted({Path(f.split("::", 1)[0]).name for f in failed if "::" in f})
    return f"{len(failed)} tests ({', '.join(files)}): {', '.join(short)}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="run only breaks whose name contains one of these")
    ap.add_argument("--tests", nargs="*", default=None, help="test files (default: the core's)")
    ap.add_argument("--shard", default="1/1", help="K/N: every N-th break from the K-th")
    ap.add_argument("--first", action="store_true", help="stop each break at its first failure")
    ap.add_argument("--list", action="store_true", help="list the breaks and exit")
    args = ap.parse_args(argv)
    k, n = (int(x) for x in args.shard.split("/"))
    breaks = [
        b for b in BREAKS if not args.only or any(s.lower() in b.name.lower() for s in args.only)
    ][k - 1 :: n]
    if args.list:
        for b in breaks:
            print(b.name)
        return 0
    tests = tuple(t for t in (args.tests or CORE_TESTS) if (ROOT / t).exists())
    print(f"tests: {' '.join(tests)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="wattcap-mutation-") as tmp:
        copy = Path(tmp) / "copy"
        fresh_copy(copy, tests)
        check_imports_the_copy(copy)
        t0 = time.monotonic()
        rc, failed = run_tests(copy, tests)
        if rc != 0:
            print(f"the unbroken copy fails: {failed}")
            return 2
        print(f"unbroken copy passes ({time.monotonic() - t0:.0f} s)", flush=True)
        rows: list[tuple[str, str, list[str]]] = []
        stale = False
        for brk in breaks:
            fresh_copy(copy, tests)
            try:
                apply(copy, brk)
            except LookupError as e:
                print(f"  stale: {e}")
                rows.append((brk.name, "NOT APPLIED", []))
                stale = True
                continue
            t0 = time.monotonic()
            rc, failed = run_tests(copy, tests, args.first)
            verdict = "caught" if rc != 0 else "SURVIVED"
            rows.append((brk.name, verdict, failed))
            print(f"  {brk.name}: {verdict} ({time.monotonic() - t0:.0f} s)", flush=True)
            print(f"    by {_by(failed)}", flush=True)
    width = max(len(r[0]) for r in rows)
    print()
    print(f"{'break':<{width}}  {'caught?':<11}  by")
    for name, verdict, failed in rows:
        print(f"{name:<{width}}  {verdict:<11}  {_by(failed)}")
    survived = [r[0] for r in rows if r[1] == "SURVIVED"]
    print()
    caught = sum(r[1] == "caught" for r in rows)
    stale_names = [r[0] for r in rows if r[1] == "NOT APPLIED"]
    print(f"{caught} of {len(rows)} breaks caught; survived: {survived or 'none'}")
    if stale_names:
        print(f"not applied (their text is gone from the source): {stale_names}")
    if stale:
        return 2
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
