"""Per-row quality flags of an option chain: an integer bit-field, one bit per finding.

Every row of the input keeps its place in the output; what was found about it (and what was done
with it) is recorded in ``quality_flags``.  Rows whose flags intersect ``DEFAULT_EXCLUDE``
are left out of the fits (forwards, arbitrage checks, downstream calibrations) through the
masks of the packed batch, never dropped.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["Flag", "DEFAULT_EXCLUDE", "QUOTE_LEVEL", "flagged", "describe", "quote_flags",
           "duplicate_rows", "row_flags"]


class Flag(enum.IntFlag):
    """Bits of the ``quality_flags`` column (combine and test with ``&``)."""

    NONE = 0
    NON_FINITE = 1 << 0             #: NaN or infinite strike, expiry, bid or ask
    NON_POSITIVE_STRIKE = 1 << 1    #: strike <= 0
    NON_POSITIVE_PRICE = 1 << 2     #: ask <= 0 or bid < 0
    CROSSED = 1 << 3                #: bid > ask
    ZERO_BID = 1 << 4               #: bid == 0 (no buyer; the mid is not a price)
    LOCKED = 1 << 5                 #: ask - bid <= locked tolerance (informational)
    WIDE_SPREAD = 1 << 6            #: (ask - bid) / mid above the configured limit
    EXPIRED = 1 << 7                #: expiry <= 0 years (expired or zero time)
    DUPLICATE = 1 << 8              #: repeats an earlier (underlying, expiry, strike, type) row
    BELOW_INTRINSIC = 1 << 9        #: even the ask is below D * intrinsic(F, K)
    ABOVE_MAX_PRICE = 1 << 10       #: even the bid is above D*F (call) or D*K (put)
    IV_UNSOLVED = 1 << 11           #: no implied vol for the mid price
    NO_FORWARD = 1 << 12            #: slice level: forward/discount could not be determined
    SLICE_TOO_FEW_STRIKES = 1 << 13  #: slice level: fewer usable strikes than required
    BAD_VALUE = 1 << 14             #: a cell that is not a number (text, boolean) in a numeric column
    BAD_OPTION_TYPE = 1 << 15       #: option_type is not C/P/call/put
    MISSING_KEY = 1 << 16           #: underlying missing, or expiry/strike missing or not finite
    INCONSISTENT_CARRY = 1 << 17    #: the row's spot/forward/rate/discount disagrees with its slice
    FORWARD_MISMATCH = 1 << 18      #: slice level: supplied forward disagrees with put-call parity


#: Bits that take a row out of the fits.  LOCKED and WIDE_SPREAD are informational by default.
DEFAULT_EXCLUDE = Flag(
    Flag.NON_FINITE | Flag.NON_POSITIVE_STRIKE | Flag.NON_POSITIVE_PRICE | Flag.CROSSED
    | Flag.ZERO_BID | Flag.EXPIRED | Flag.DUPLICATE | Flag.BELOW_INTRINSIC
    | Flag.ABOVE_MAX_PRICE | Flag.IV_UNSOLVED | Flag.NO_FORWARD | Flag.SLICE_TOO_FEW_STRIKES
    | Flag.BAD_VALUE | Flag.BAD_OPTION_TYPE | Flag.MISSING_KEY | Flag.INCONSISTENT_CARRY)

#: Bits known before any model quantity (forward, vol) is computed: decided in pandas.
QUOTE_LEVEL = Flag(
    Flag.NON_FINITE | Flag.NON_POSITIVE_STRIKE | Flag.NON_POSITIVE_PRICE | Flag.CROSSED
    | Flag.ZERO_BID | Flag.LOCKED | Flag.WIDE_SPREAD | Flag.EXPIRED | Flag.DUPLICATE
    | Flag.BAD_VALUE | Flag.BAD_OPTION_TYPE | Flag.MISSING_KEY | Flag.INCONSISTENT_CARRY)


def flagged(quality_flags, flag: int) -> np.ndarray:
    """Boolean array: rows whose ``quality_flags`` have any bit of ``flag`` set.

    (Use this or ``int(flag)``: pandas refuses ``series & Flag.X`` because IntFlag members are
    iterable.)
    """
    return (np.asarray(quality_flags, dtype=np.int64) & int(flag)) != 0


def describe(value: int) -> list[str]:
    """Names of the bits set in one ``quality_flags`` value, e.g. ``['CROSSED', 'ZERO_BID']``."""
    return [f.name for f in Flag if f.value and (int(value) & f.value) == f.value
            and bin(f.value).count("1") == 1]


def quote_flags(strike, expiry, bid, ask, *, max_relative_spread: float = 1.0,
                locked_tolerance: float = 0.0) -> np.ndarray:
    """Quote-level flags (vectorised numpy; no duplicate detection): int64 array.

    ``max_relative_spread``: WIDE_SPREAD when (ask - bid) / ((ask + bid) / 2) exceeds it.
    ``locked_tolerance``: LOCKED when 0 <= ask - bid <= it (absolute price units).
    """
    strike, expiry, bid, ask = (np.asarray(a, dtype=np.float64) for a in (strike, expiry, bid, ask))
    out = np.zeros(strike.shape, dtype=np.int64)
    finite = np.isfinite(strike) & np.isfinite(expiry) & np.isfinite(bid) & np.isfinite(ask)
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = ask - bid
        mid = 0.5 * (ask + bid)
        _set(out, ~finite, Flag.NON_FINITE)
        _set(out, strike <= 0, Flag.NON_POSITIVE_STRIKE)
        _set(out, (ask <= 0) | (bid < 0), Flag.NON_POSITIVE_PRICE)
        _set(out, bid > ask, Flag.CROSSED)
        _set(out, bid == 0, Flag.ZERO_BID)
        _set(out, (spread >= 0) & (spread <= locked_tolerance), Flag.LOCKED)
        _set(out, (mid > 0) & (spread > max_relative_spread * mid), Flag.WIDE_SPREAD)
        _set(out, expiry <= 0, Flag.EXPIRED)
    return out


def _set(out: np.ndarray, where: np.ndarray, flag: Flag) -> None:
    out[where] |= int(flag)


def duplicate_rows(underlying, expiry, strike, is_call, prefer_not) -> np.ndarray:
    """True for every row repeating an earlier (underlying, expiry, strike, type) key.

    One row per key is kept: the first one whose ``prefer_not`` is False (a row with no
    excluding quote flag), else the first one.  Rows with a non-finite strike or expiry are
    never called duplicates (they are flagged NON_FINITE instead).
    """
    import pandas as pd

    keyed = np.isfinite(np.asarray(expiry, dtype=np.float64)) & np.isfinite(
        np.asarray(strike, dtype=np.float64))
    key = (pd.factorize(pd.Series(underlying))[0], np.asarray(expiry, dtype=np.float64),
           np.asarray(strike, dtype=np.float64), np.asarray(is_call, dtype=np.int64))
    rows = np.flatnonzero(keyed)
    # sort by key, then clean rows first, then input order; the first of each key is kept
    order = rows[np.lexsort((rows, np.asarray(prefer_not, dtype=bool)[rows],
                             *(k[rows] for k in reversed(key))))]
    same = np.ones(len(order), dtype=bool)
    for k in key:
        same[1:] &= k[order][1:] == k[order][:-1]
    same[:1] = False
    duplicate = np.zeros(len(keyed), dtype=bool)
    duplicate[order[same]] = True
    return duplicate


def row_flags(frame, *, max_relative_spread: float = 1.0, locked_tolerance: float = 0.0,
              exclude: int = DEFAULT_EXCLUDE) -> np.ndarray:
    """Quote-level flags plus DUPLICATE for a normalised chain frame (see ``schema.validate``)."""
    flags = quote_flags(frame["strike"], frame["expiry"], frame["bid"], frame["ask"],
                        max_relative_spread=max_relative_spread,
                        locked_tolerance=locked_tolerance)
    duplicate = duplicate_rows(_codes(frame["underlying"]), frame["expiry"].to_numpy(),
                               frame["strike"].to_numpy(), frame["is_call"].to_numpy(),
                               (flags & int(exclude)) != 0)
    _set(flags, duplicate, Flag.DUPLICATE)
    if "input_flags" in frame.columns:  # found by schema.validate (bad cells, keys, carry)
        flags |= frame["input_flags"].to_numpy(dtype=np.int64)
    return flags


def _codes(column):
    """Integer codes of a (categorical or plain) key column."""
    import pandas as pd

    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy()
    return pd.factorize(column)[0]
