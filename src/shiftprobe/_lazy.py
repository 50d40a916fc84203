"""Module attributes imported on first use (PEP 562): a package's ``__init__`` names its API without
importing the modules behind it."""

from __future__ import annotations

import importlib


def lazy_exports(namespace: dict, modules: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Give the package whose globals are ``namespace`` the names ``modules`` lists under the module that
    defines each (or a submodule under its own name): sets its ``__getattr__`` and ``__dir__`` and returns
    name -> module. The first look-up of a name imports its module and stores the value in ``namespace``,
    so later ones skip this."""
    package = namespace["__name__"]
    exports = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name])
        value = module if exports[name] == f"{package}.{name}" else getattr(module, name)  # a submodule itself
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    namespace.update(__getattr__=__getattr__, __dir__=__dir__)
    return exports
