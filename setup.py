"""Build hook: compile `wattcap/profile.py` and `wattcap/sim/meter_math.py`
(Cython pure-Python mode) when a C compiler is at hand; pyproject.toml
holds everything else.

The modules run as plain Python too, with the same results, so a failed
compile is a warning, not a failed install: their `COMPILED` says which
one runs, and a unit test fails when either is not compiled.
"""

from Cython.Build import cythonize
from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the extension if possible; fall back to the pure-Python module."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as err:  # any compiler failure: it runs as Python
            print(f"warning: nothing compiled ({err}); wattcap runs as plain Python")

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as err:
            print(f"warning: {ext.name} not compiled ({err}); it runs as Python")


setup(
    ext_modules=cythonize(
        ["operator/wattcap/profile.py", "operator/wattcap/sim/meter_math.py"],
        # indexes in profile.py stay in range by construction (the Python run
        # of the same source, in the tests, checks them)
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "initializedcheck": False,
            "cdivision": True,
        },
        quiet=True,
    ),
    cmdclass={"build_ext": OptionalBuildExt},
)
