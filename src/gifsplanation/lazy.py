"""Package attributes loaded on first use (PEP 562), so that importing a package stays
cheap: ``gifsplanation --help`` and ``gifsplanation models`` never import torch.

Example:
    >>> namespace = {}
    >>> getattr_, dir_ = lazy_exports("json", namespace, {"dumps": "json"})
    >>> getattr_("dumps")({"a": 1}), "dumps" in namespace, dir_()
    ('{"a": 1}', True, ['dumps'])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: the package's ``__name__`` (relative module names resolve against it).
        namespace: the package's ``globals()``; a loaded name is stored there, so later
            accesses skip ``__getattr__``.
        exports: public name -> module that defines it (``".registry"`` or absolute).
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
