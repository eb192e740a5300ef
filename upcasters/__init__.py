"""Upcasters: one module per event type, one pure function per version step.

Each module marks its steps with :func:`evstore.codec.upcaster`; this package collects
every marked function of every module here into ``STEPS``, so adding a module is all a
new step needs.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

STEPS: dict[tuple[str, int], Any] = {}

for _module_info in pkgutil.iter_modules(__path__):
    _module = importlib.import_module(f"{__name__}.{_module_info.name}")
    for _value in vars(_module).values():
        _key = getattr(_value, "__evstore_step__", None)
        if _key is not None:
            if _key in STEPS:
                raise RuntimeError(f"two upcasters convert {_key[0]} v{_key[1]}")
            STEPS[_key] = _value
