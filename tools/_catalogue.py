"""Imports every tool module so its @tool decorators register.

Every public subpackage of ``cardiomics.tools`` is a tool module: adding one registers its tools,
with no list to keep in step.
"""

from __future__ import annotations

import importlib
import pkgutil

from cardiomics import tools as _pkg

for _info in pkgutil.iter_modules(_pkg.__path__):
    if _info.ispkg and not _info.name.startswith("_"):
        importlib.import_module(f"{_pkg.__name__}.{_info.name}")
