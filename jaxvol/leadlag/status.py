"""Per-lane outcome codes of :mod:`jaxvol.leadlag` (one library-wide numbering, see
:mod:`jaxvol.status`)."""

from __future__ import annotations

from jaxvol.status import domain_status

__all__ = ["LeadLagStatus"]

LeadLagStatus = domain_status("LeadLagStatus", "leadlag", {
    "OK": 0,
    "NON_FINITE_INPUT": 2,   # a NaN/inf time or value among the valid ticks
    "TOO_FEW_POINTS": 4,     # fewer than two valid ticks in a series (no increment)
    "AT_BOUND": 6,           # the estimated lag sits on an end of the lag grid
    "DEGENERATE": 7,         # a series does not move (zero realised variance): no correlation
    "UNIDENTIFIED": 8,       # the contrast is zero at every lag: no lead-lag to locate
    "UNSORTED_TIMES": 90,    # a series' times decrease somewhere
    "DUPLICATE_TIMES": 91,   # two ticks of one series closer than the tie tolerance
    "NO_OVERLAP": 92,        # no interval pair overlaps at any lag of the grid
    "GRID_TOO_SMALL": 93,    # (grid method) the ticks span more cells than ``n_cells``
}, doc="Per-lane outcome codes of jaxvol.leadlag (0 = OK; shared codes 0-9, own codes 90-99).")
