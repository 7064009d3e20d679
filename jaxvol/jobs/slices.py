"""Per-slice arrays for the fits: out-of-the-money quotes of each (underlying, expiry).

From the analysed rows (``chains.analyze`` output) each slice keeps its usable out-of-the-money
quotes (no quality flag, finite mid implied vol: puts below the forward, calls at or above it),
sorted by strike, packed into ``[slices, strikes]`` arrays padded to a strike bucket
(:func:`jaxvol.batching.strike_bucket`) with a mask.

The one-sided out-of-the-money quotes beyond a slice's two-sided ones (a strike outside the
usable quotes' range, no excluding flag other than those a missing side implies) are kept apart
as bounds: the mid of a quote with one side is not a price, but its side bounds the option's
value. A quote without a buyer (bid zero or missing) with a finite ask implied vol gives an
upper bound on the smile there (the ask's total variance), one without a seller (ask missing)
with a finite bid implied vol a lower bound (the bid's total variance): ``one_sided_k``,
``one_sided_lower``, ``one_sided_upper`` ([slices, bucket], NaN padded, NaN on the absent side;
:func:`jaxvol.svi.fit`'s ``one_sided``). On the synthetic market the zero-bid quotes are the
far wings, the very strikes where a fit to the two-sided quotes alone extrapolates freely.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from jaxvol.batching import strike_bucket

__all__ = ["SliceBatch", "slice_index", "pack_otm"]


class SliceBatch(NamedTuple):
    """Packed out-of-the-money quotes; rows of ``table`` index the leading axis."""

    table: pd.DataFrame           # underlying, expiry, forward, discount, n_quotes
    strike: np.ndarray            # [slices, width]
    log_moneyness: np.ndarray     # [slices, width] log(strike / forward)
    total_variance: np.ndarray    # [slices, width] iv_mid^2 * expiry
    implied_vol: np.ndarray       # [slices, width] iv_mid
    weight: np.ndarray            # [slices, width] 1 / vol spread (normalised)
    mask: np.ndarray              # [slices, width] bool
    price: np.ndarray             # [slices, width] mid price (bid + ask) / 2
    is_call: np.ndarray           # [slices, width] bool: calls at/above the forward
    one_sided_k: np.ndarray       # [slices, bucket] log-moneyness of one-sided OTM quotes (NaN pad)
    one_sided_upper: np.ndarray   # [slices, bucket] no bid: the ask's total variance iv_ask^2 T
    one_sided_lower: np.ndarray   # [slices, bucket] no ask: the bid's total variance iv_bid^2 T


def slice_index(rows: pd.DataFrame) -> np.ndarray:
    """Slice number of every row (order of first appearance of (underlying, expiry))."""
    return rows.groupby(["underlying", "expiry"], sort=False).ngroup().to_numpy()


def _otm(rows: pd.DataFrame) -> np.ndarray:
    """Out of the money: calls at or above the forward, puts below it."""
    forward = rows["forward"].to_numpy()
    strike = rows["strike"].to_numpy()
    is_call = rows["option_type"].astype(str).str.upper().str.startswith("C").to_numpy()
    return np.where(is_call, strike >= forward, strike < forward)


def _usable(rows: pd.DataFrame) -> np.ndarray:
    forward = rows["forward"].to_numpy()
    otm = _otm(rows)
    clean = (rows["usable"].to_numpy(bool) if "usable" in rows.columns
             else rows["quality_flags"].to_numpy() == 0)
    return (otm & clean
            & np.isfinite(rows["iv_mid"].to_numpy()) & np.isfinite(forward))


def _one_sided(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(no bid, no ask): OTM quotes with one side only whose other side still carries
    information. No bid: a zero or missing bid and a finite positive ask with a finite
    positive implied vol; no ask: a missing ask and a positive bid with a finite positive
    implied vol. Strike, expiry and forward finite and positive, and no excluding flag other
    than those the missing side implies (ZERO_BID, NON_FINITE for the NaN side, IV_UNSOLVED
    for the mid)."""
    from jaxvol.chains import Flag
    from jaxvol.chains.flags import DEFAULT_EXCLUDE
    flags = rows["quality_flags"].to_numpy().astype(np.int64)
    other = int(DEFAULT_EXCLUDE) & ~int(Flag.ZERO_BID | Flag.IV_UNSOLVED | Flag.NON_FINITE)
    values = {name: rows[name].to_numpy(float)
              for name in ("forward", "strike", "expiry", "bid", "ask", "iv_bid", "iv_ask")}
    positive = lambda x: np.isfinite(x) & (x > 0)  # noqa: E731
    base = (_otm(rows) & ((flags & other) == 0) & positive(values["forward"])
            & positive(values["strike"]) & positive(values["expiry"]))
    no_bid = (base & ((values["bid"] == 0) | np.isnan(values["bid"]))
              & positive(values["ask"]) & positive(values["iv_ask"]))
    no_ask = (base & np.isnan(values["ask"]) & positive(values["bid"])
              & positive(values["iv_bid"]))
    return no_bid, no_ask


def _pack_one_sided(rows: pd.DataFrame, slice_id: np.ndarray, n_slices: int,
                    strikes: tuple[np.ndarray, np.ndarray], min_width: int):
    """([slices, bucket] log-moneyness, lower, upper total variance) of the one-sided quotes of
    every slice (:func:`_one_sided`) beyond its two-sided quotes (strikes below the lowest or
    above the highest usable strike, ``strikes`` = (lowest, highest) per slice), NaN padded to
    a strike bucket, at least ``min_width`` (the quotes' width: one program shape for every
    chunk of a night, as a slice's one-sided and two-sided quotes share its strikes). A
    one-sided quote among two-sided quotes is a defect, not a wing without buyers or
    sellers: measured on the synthetic market, whose injected zero-bid rows keep a stale ask
    (e.g. bid 0 / ask 0.10 between calls bid 0.50 and 0.30), such a bound lay at a quarter of
    the neighbours' total variance and no fit could honour it."""
    no_bid, no_ask = _one_sided(rows)
    keep = no_bid | no_ask
    strike = rows["strike"].to_numpy()
    low, high = strikes
    ids_all = np.where(keep, slice_id, 0)
    keep &= (strike < low[ids_all]) | (strike > high[ids_all])
    ids = slice_id[keep]
    k = np.log(strike[keep] / rows["forward"].to_numpy()[keep])
    expiry = rows["expiry"].to_numpy(float)[keep]
    upper = np.where(no_bid[keep], rows["iv_ask"].to_numpy(float)[keep] ** 2 * expiry, np.nan)
    lower = np.where(no_ask[keep], rows["iv_bid"].to_numpy(float)[keep] ** 2 * expiry, np.nan)
    order = np.lexsort((k, ids))
    ids, k, lower, upper = ids[order], k[order], lower[order], upper[order]
    counts = np.bincount(ids, minlength=n_slices)
    width = max(strike_bucket(max(int(counts.max(initial=0)), 1)), min_width)
    position = np.arange(len(ids)) - np.repeat(np.cumsum(counts) - counts, counts)
    out = [np.full((n_slices, width), np.nan) for _ in range(3)]
    for array, values in zip(out, (k, lower, upper)):
        array[ids, position] = values
    return tuple(out)


def _weights(rows: pd.DataFrame) -> np.ndarray:
    """1 / bid-ask spread in vol (floored at 0.5 vol point; 2 vol points when a side is NaN)."""
    spread = (rows["iv_ask"] - rows["iv_bid"]).to_numpy()
    spread = np.where(np.isfinite(spread), np.maximum(spread, 0.005), 0.02)
    return 0.01 / spread


def _with_parity_check(table: pd.DataFrame, rows: pd.DataFrame, slice_id) -> pd.DataFrame:
    """``parity_forward`` and ``forward_mismatch`` (the FORWARD_MISMATCH flag of the slice's
    rows) beside the slice's forward, when the analysis gave them."""
    from jaxvol.chains import Flag, flagged
    if "parity_forward" in rows.columns:
        table["parity_forward"] = rows["parity_forward"].groupby(slice_id).median().to_numpy()
    if "quality_flags" in rows.columns:
        mismatch = flagged(rows["quality_flags"], Flag.FORWARD_MISMATCH)
        table["forward_mismatch"] = pd.Series(mismatch).groupby(slice_id).any().to_numpy()
    return table


def pack_otm(rows: pd.DataFrame, min_strikes: int) -> SliceBatch:
    """Pack the usable OTM quotes of every slice of ``rows`` (slices with fewer than
    ``min_strikes`` quotes keep their table row but an all-False mask)."""
    slice_id = slice_index(rows)
    table = (rows.assign(slice=slice_id).groupby("slice", sort=True)
             .agg(underlying=("underlying", "first"), expiry=("expiry", "first"),
                  forward=("forward", "median"), discount=("discount", "median"))
             .reset_index(drop=True))
    table = _with_parity_check(table, rows, slice_id)
    keep = _usable(rows)
    usable = rows[keep].assign(slice=slice_id[keep], weight=_weights(rows[keep]),
                               price=0.5 * (rows["bid"][keep] + rows["ask"][keep]))
    usable = usable.sort_values(["slice", "strike"], kind="stable")
    counts = np.bincount(usable["slice"].to_numpy(), minlength=len(table))
    table["n_quotes"] = counts
    width = strike_bucket(max(int(counts.max(initial=0)), 1))
    by_slice = usable.groupby("slice")["strike"]
    low = by_slice.min().reindex(range(len(table))).to_numpy(float)
    high = by_slice.max().reindex(range(len(table))).to_numpy(float)
    # a slice without two-sided quotes has no fit to bound: its one-sided quotes are dropped
    one_k, one_lower, one_upper = _pack_one_sided(rows, slice_id, len(table),
                                       (np.where(np.isfinite(low), low, np.inf),
                                        np.where(np.isfinite(high), high, -np.inf)), width)
    table["n_one_sided"] = np.isfinite(one_k).sum(axis=1)
    position = usable.groupby("slice").cumcount().to_numpy()
    index = (usable["slice"].to_numpy(), position)
    arrays = {}
    for name, column, fill in (("strike", "strike", 1.0), ("implied_vol", "iv_mid", 0.2),
                               ("weight", "weight", 0.0), ("price", "price", 1.0)):
        out = np.full((len(table), width), fill)
        out[index] = usable[column].to_numpy()
        arrays[name] = out
    mask = np.zeros((len(table), width), bool)
    mask[index] = True
    mask &= (counts >= min_strikes)[:, None]
    forward = table["forward"].to_numpy()[:, None]
    forward = np.where(np.isfinite(forward) & (forward > 0), forward, 1.0)
    expiry = table["expiry"].to_numpy()[:, None]
    strike = np.where(mask, arrays["strike"], forward)
    vol = np.where(mask, arrays["implied_vol"], 0.2)
    return SliceBatch(table, strike, np.log(strike / forward), vol ** 2 * expiry, vol,
                      np.where(mask, arrays["weight"], 0.0), mask,
                      np.where(mask, arrays["price"], 1.0), strike >= forward, one_k, one_upper,
                      one_lower)
