"""Helpers the unit tests share."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

from hypothesis import settings

# `make test` draws the same examples on every run, so a red run means the code
# changed, never that a new draw was made (a random draw that finds a real gap
# is kept as a plain test instead). `HYPOTHESIS_PROFILE=explore` draws fresh
# examples each run, to search for new counterexamples. (The integration tier's
# one Hypothesis test, the fuzz, is derandomized in itself.)
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def interpreted(module: ModuleType) -> ModuleType:
    """A compiled module's source loaded under another name, as plain Python:
    the tests hold the build to it."""
    path = Path(module.__file__).with_name(module.__name__.rsplit(".", 1)[-1] + ".py")
    spec = importlib.util.spec_from_file_location(module.__name__ + "_source", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert not mod.COMPILED
    return mod
