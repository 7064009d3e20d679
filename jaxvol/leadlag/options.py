"""Settings of the lead-lag estimators (a frozen, hashable dataclass: a static argument)."""

from __future__ import annotations

import dataclasses

__all__ = ["LeadLagOptions"]

METHODS = ("auto", "exact", "grid")


@dataclasses.dataclass(frozen=True)
class LeadLagOptions:
    """Microstructure options, the engine and the bootstrap of :func:`estimate`.

    tie_tolerance : seconds (default 1e-9). Two ticks of one series at most this far apart are
        a tie, and an x and a shifted y interval that overlap by at most this much do not
        overlap (so a float rounding of a shared endpoint never decides a pair). Ties within a
        series give ``DUPLICATE_TIMES`` unless ``merge_ties``.
    merge_ties : keep only the last tick of each run of ties (the price at the end of the
        instant). A zero-length interval has no overlap with anything, so without merging its
        increment would be lost; merging moves it into the interval that ends there.
    subsample : keep every k-th tick (sparse sampling, applied after pre-averaging). Fewer,
        longer intervals: the microstructure-noise part of each increment shrinks relative to
        its signal, at the price of a coarser lag identification (about k mean spacings).
    preaverage : replace each level by the flat mean of the last k levels (in tick time; the
        first k - 1 ticks are dropped). Increments of the means are weighted sums of k
        increments, so i.i.d. noise is averaged down by about 1/k in variance; the contrast is
        smeared over about k spacings (a peak k ticks wide), and its level is that of the
        smoothed series (HY correlations rise towards the noise-free value).
    method : "exact" (pair sweep, O(n + m + overlapping pairs)), "grid" (blocked FFT over cells,
        O(cells log lags)), or "auto" (the cheaper one, chosen on the host from the sizes; exact
        when the inputs are traced). Both compute the same number (to rounding).
    blocks : number of blocks of the block bootstrap (consecutive x intervals for "exact",
        consecutive cells for "grid").
    bootstrap : bootstrap replicates for the intervals (0: no intervals, NaN bounds).
    level : two-sided level of the intervals.
    """

    tie_tolerance: float = 1e-9
    merge_ties: bool = False
    subsample: int = 1
    preaverage: int = 1
    method: str = "auto"
    blocks: int = 64
    bootstrap: int = 200
    level: float = 0.95

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not self.tie_tolerance >= 0:
            raise ValueError(f"tie_tolerance must be >= 0 seconds, got {self.tie_tolerance!r}")
        for name in ("subsample", "preaverage", "blocks"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if int(self.bootstrap) != self.bootstrap or self.bootstrap < 0:
            raise ValueError(f"bootstrap must be a non-negative integer, got {self.bootstrap!r}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must lie in (0, 1), got {self.level!r}")

    def series_options(self):
        return dict(tie_tolerance=float(self.tie_tolerance), merge_ties=bool(self.merge_ties),
                    subsample=int(self.subsample), preaverage=int(self.preaverage))
