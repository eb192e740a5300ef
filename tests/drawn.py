"""Long drawn series for property tests, made quickly.

Drawing each of hundreds of points through Hypothesis spent most of a test's time making
data. Here Hypothesis draws a series' shape (its size, how many repeats, how often the
values that need care come), and a seeded ``Random`` that Hypothesis also draws fills in
the points: a failing example replays from Hypothesis's database as before, though it
shrinks only in its shape.
"""

from __future__ import annotations

import math
import random
import struct
import sys

from hypothesis import strategies as st

#: Values a series holds often, and that a summary or a chart must carry through exactly.
SPECIAL = [0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, sys.float_info.max, 5e-324]


@st.composite
def filler(draw: st.DrawFn) -> tuple[random.Random, float]:
    """A seeded ``Random``, and how often a value is one of ``SPECIAL``."""
    return draw(st.randoms(use_true_random=True)), draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))


def rising(rng: random.Random, size: int, low: int, high: int) -> list[int]:
    """``size`` integers from ``low`` to ``high``, never going back (repeats allowed)."""
    return sorted(rng.randint(low, high) for _ in range(size))


def floats(rng: random.Random, size: int, special: float) -> list[float]:
    """``size`` floats: ``SPECIAL`` ones at rate ``special``, else any bit pattern (NaNs
    with payloads, subnormals, the largest) for three in ten and ordinary values for the rest."""
    return [
        rng.choice(SPECIAL) if rng.random() < special
        else struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if rng.random() < 0.3 else rng.uniform(-100.0, 100.0)
        for _ in range(size)
    ]  # fmt: skip
