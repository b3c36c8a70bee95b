"""What the compiled modules need of `cython` when it is not installed.

`profile.py` and `sim/meter_math.py` are written in Cython's pure-Python
mode. Compiled, `import cython` is resolved by the compiler; run as plain
Python, it needs the `cython` package only for a handful of names: types
used in annotations and `declare`, and decorators that do nothing at run
time. Cython is a build requirement, not a run-time one, so a machine that
installed the wheel without it (or has no C compiler) imports this instead
and runs the same source with the same results.

Only the names those two modules use are here; a new one fails loudly as an
AttributeError at import, never silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F")

compiled = False


class _CType:
    """A C type as pure Python sees it: callable like its Python type (so
    `declare(double)` gives 0.0, as Cython's own shadow does) and indexable,
    so `double[:]` reads as a memoryview annotation."""

    def __init__(self, name: str, pytype: Callable[..., Any]) -> None:
        self.name = name
        self.pytype = pytype

    def __call__(self, *args: Any) -> Any:
        return self.pytype(*args)

    def __getitem__(self, _index: Any) -> _CType:
        return self

    def __repr__(self) -> str:
        return f"cython.{self.name}"


double = _CType("double", float)
Py_ssize_t = _CType("Py_ssize_t", int)
uchar = _CType("uchar", int)
bint = _CType("bint", bool)


def _unchanged(obj: F) -> F:
    return obj


cclass = cfunc = inline = _unchanged


def declare(t: Any = None, value: Any = None, **_kwds: Any) -> Any:
    """A declared attribute or variable: its value, else the type's zero."""
    if value is not None:
        return value
    return t() if isinstance(t, _CType) else None
