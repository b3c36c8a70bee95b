"""The package runs as plain Python where neither Cython nor a C compiler
was at hand: the install promised by setup.py's fallback.

A subprocess imports a copy of the package with every compiled module left
out and `cython` made unimportable, then replays a small trace. Its figures
must equal the compiled build's to the bit, so the fallback is the same
program, only slower.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
POLICY = DATA / "sim_policy.yaml"

PROBE = r"""
import json, sys
sys.modules["cython"] = None          # `import cython` raises ImportError
sys.path.insert(0, sys.argv[1])
import wattcap.profile as profile
import wattcap.sim.meter_math as meter_math
import contextlib, io
from wattcap.cli import main
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    rc = main(["simulate", "--trace", sys.argv[2], "--policy", sys.argv[3], "--nodes", "4",
               "--gpus-per-node", "8", "--start", "2026-07-01T00:00:00Z", "--json"])
assert rc == 0, rc
print(json.dumps({
    "profile": profile.COMPILED, "meter": meter_math.COMPILED,
    "files": [profile.__file__, meter_math.__file__],
    "summary": json.loads(buf.getvalue()),
}))
"""


def _run(pkg_parent: Path, block_cython: bool) -> dict:
    code = PROBE if block_cython else PROBE.replace('sys.modules["cython"] = None', "")
    out = subprocess.run(
        [sys.executable, "-c", code, str(pkg_parent), str(DATA / "sim_trace.csv"), str(POLICY)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_package_runs_without_cython_and_without_compiled_modules(tmp_path: Path) -> None:
    src = ROOT / "operator" / "wattcap"
    shutil.copytree(src, tmp_path / "wattcap", ignore=shutil.ignore_patterns("*.so", "*.c"))
    plain = _run(tmp_path, block_cython=True)
    assert plain["profile"] is False and plain["meter"] is False
    assert all(f.endswith(".py") for f in plain["files"]), plain["files"]
    built = _run(ROOT / "operator", block_cython=False)
    assert built["profile"] is True and built["meter"] is True, "the build is not compiled"
    assert plain["summary"] == built["summary"]
