"""The one place where the mechanism learns about its content.

``evstore/`` never imports a concrete upcaster or projection by name: it imports these
packages by their names here and reads what they register.
"""

from __future__ import annotations

#: Packages whose ``STEPS`` dict maps (type name, from version) to an upcaster step.
UPCASTER_PACKAGES: tuple[str, ...] = ("upcasters",)

#: Packages whose ``PROJECTIONS`` list holds the read models kept inline and rebuilt.
PROJECTION_PACKAGES: tuple[str, ...] = ("projections",)
