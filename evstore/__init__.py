"""evstore: experiment tracking as an append-only, versioned, hash-chained event log."""

from __future__ import annotations

__version__ = "0.1.0"
