"""Builds the hot modules as C extensions with Cython, when it can; the package works without them.

wsfast (a .pyx: C code with no Python twin) is the WebSocket relay's fast path, a thread that carries
data frames without the interpreter; without it wsrelay relays everything on the event loop.

The modules every proxied request runs through (app, http1, proxy, writes) and the WebSocket
relay's (wsrelay) stay the one implementation. Their ``.pxd`` files declare the classes' attributes and methods with C types,
so Cython compiles the same code into typed classes: attribute reads and calls between them
skip the interpreter, which saves about a tenth of the gateway's CPU per request
(gateway/README.md). Where there is no C compiler or no Python headers, or with
``LITEBOXD_GATEWAY_NO_EXTENSIONS=1``, the modules stay plain Python and the build says so.
"""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

COMPILED_MODULES = ("writes", "wsrelay", "http1", "proxy", "app")
C_ONLY_MODULES = ("wsfast",)


class OptionalBuildExt(build_ext):
    """Builds each extension if it can; a failure leaves that module in Python, with a warning."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # pylint: disable=broad-except  # no compiler at all: the Python package
            self._fell_back("the extensions", exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # pylint: disable=broad-except
            self._fell_back(ext.name, exc)

    @staticmethod
    def _fell_back(what, exc):
        print(f"liteboxd-gateway: building {what} failed ({exc}); the pure-Python modules are used",
              file=sys.stderr)


def extensions():
    if os.environ.get("LITEBOXD_GATEWAY_NO_EXTENSIONS"):
        return []
    try:
        from Cython.Build import cythonize  # pylint: disable=import-outside-toplevel
    except ImportError:
        print("liteboxd-gateway: Cython is not installed; the pure-Python modules are used", file=sys.stderr)
        return []
    modules = [Extension(f"liteboxd_gateway.{name}", [f"src/liteboxd_gateway/{name}.py"]) for name in COMPILED_MODULES]
    modules += [Extension(f"liteboxd_gateway.{name}", [f"src/liteboxd_gateway/{name}.pyx"]) for name in C_ONLY_MODULES]
    # Annotations are for readers and type checkers; the .pxd files alone give the C types.
    return cythonize(modules, build_dir="build/cython", quiet=True,
                     compiler_directives={"language_level": 3, "annotation_typing": False})


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
