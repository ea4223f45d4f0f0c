"""Momentum schedules, declared in Python and evaluated inside the compiled loop.

A schedule is a small immutable description (numbers only), not a callable: the
backends evaluate ``mu_t`` themselves for every mini-batch, so no Python code runs
per update.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

__all__ = ["Sutskever"]


@dataclass(frozen=True)
class Sutskever:
    """The momentum schedule of Sutskever, Martens, Dahl & Hinton (ICML 2013).

    ``mu_t = min(1 - 2**(-1 - log2(floor(t / period) + 1)), mu_max)``, which is
    ``min(1 - 1 / (2 * (floor(t / period) + 1)), mu_max)``, where ``t`` counts the
    updates applied so far by the network (``net.n_updates``; it persists across
    ``fit`` calls).  So ``mu`` starts at 0.5 and rises to 0.75, 0.833, ... every
    ``period`` updates until it reaches ``mu_max``.

    Parameters
    ----------
    mu_max : float, default 0.99
        Cap of the schedule, ``0 <= mu_max < 1``.
    period : int, default 250
        Updates per step of the schedule, ``>= 1``.

    Examples
    --------
    >>> s = Sutskever(mu_max=0.9)
    >>> [s.mu_at(t) for t in (0, 250, 500, 5000)]
    [0.5, 0.75, 0.8333333333333334, 0.9]
    """

    mu_max: float = 0.99
    period: int = 250

    def __post_init__(self) -> None:
        mu_max = self.mu_max
        if isinstance(mu_max, bool) or not isinstance(mu_max, numbers.Real):
            raise TypeError(
                f"Sutskever(mu_max=...) must be a real number in [0, 1), got {mu_max!r}"
            )
        if not (math.isfinite(mu_max) and 0.0 <= mu_max < 1.0):
            raise ValueError(
                f"Sutskever(mu_max={mu_max!r}) is outside [0, 1); a momentum cap "
                "must be at least 0 and below 1 (the paper uses 0.9 to 0.999)"
            )
        period = self.period
        if isinstance(period, bool) or not isinstance(period, numbers.Integral):
            raise TypeError(f"Sutskever(period=...) must be an int >= 1, got {period!r}")
        if period < 1:
            raise ValueError(
                f"Sutskever(period={period!r}) must be >= 1 (updates per step; the paper uses 250)"
            )
        object.__setattr__(self, "mu_max", float(mu_max))
        object.__setattr__(self, "period", int(period))

    def mu_at(self, t: int) -> float:
        """Momentum coefficient after ``t`` updates (the formula the backends evaluate)."""
        return min(1.0 - 1.0 / (2.0 * (t // self.period + 1)), self.mu_max)
