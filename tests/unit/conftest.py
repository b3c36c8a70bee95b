"""Helpers the unit tests share."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


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
