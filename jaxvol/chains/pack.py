"""Ragged chains -> padded, masked [slices, strikes] batches, and back.

A *slice* is one (underlying, expiry).  Its calls and puts share one strike grid (the sorted
distinct strikes of its rows).  Slices are grouped by the bucket of their strike count
(``strike_buckets``: the smallest bucket >= count) and each bucket becomes one
:class:`ChainBatch` whose slice axis is padded too (to a power of two up to ``slice_block``,
then to a multiple of ``slice_block``; kernels run block by block).  A nightly run over any
number of underlyings therefore compiles each kernel once per (strike bucket, slice block
shape), never per slice.  All grouping is vectorised (groupby/ngroup, lexsort, cumulative sums).

Row maps (:class:`PackedChain` ``row_*``) send every input row to its cell, so results come
back aligned with the input (:func:`unpack_cells`, :func:`unpack_slices`); rows that have no
cell (non-finite or non-positive strike, duplicates) are kept and get NaN cell values.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import pandas as pd

from jaxvol import batching
from jaxvol.batching import STRIKE_BUCKETS, padded_size, power_of_two
from jaxvol.chains.flags import DEFAULT_EXCLUDE, QUOTE_LEVEL, Flag

__all__ = ["ChainBatch", "DEFAULT_SLICE_BLOCK", "DEFAULT_STRIKE_BUCKETS", "gather_slices",
           "iter_blocks", "pack", "PackedChain", "slice_capacity", "strike_capacity",
           "unpack_cells", "unpack_slices"]

DEFAULT_STRIKE_BUCKETS = STRIKE_BUCKETS  #: the library's one table (jaxvol.batching)
DEFAULT_SLICE_BLOCK = 4096
_MIN_SLICES = 8


class ChainBatch(NamedTuple):
    """One bucket of slices, padded; every array is [slices, strikes] unless noted.

    Padding cells hold NaN quotes and False masks; padding slices have ``slice_mask`` False.
    """

    strike: np.ndarray
    call_bid: np.ndarray
    call_ask: np.ndarray
    call_mid: np.ndarray
    put_bid: np.ndarray
    put_ask: np.ndarray
    put_mid: np.ndarray
    call_mask: np.ndarray     #: bool: a call quote with no excluding quote-level flag
    put_mask: np.ndarray      #: bool: same for puts
    expiry: np.ndarray        #: [slices] years
    forward_in: np.ndarray    #: [slices] user-supplied forward, NaN if none
    discount_in: np.ndarray   #: [slices] user-supplied discount factor, NaN if none
    slice_mask: np.ndarray    #: [slices] bool: a real slice (not padding)


@dataclasses.dataclass(frozen=True)
class PackedChain:
    """Padded batches plus the maps between input rows, slices and cells.

    ``slices``: one row per slice (global slice id = its position): ``underlying``, ``expiry``,
    ``n_strikes``, ``batch`` (index into ``batches``), ``position`` (slice index in the batch).
    ``row_slice`` [rows]: global slice id of each input row.  ``row_batch``, ``row_position``,
    ``row_column`` [rows]: the row's cell, -1 when it has none; ``row_is_call`` [rows].
    """

    batches: tuple[ChainBatch, ...]
    slices: pd.DataFrame
    row_slice: np.ndarray
    row_batch: np.ndarray
    row_position: np.ndarray
    row_column: np.ndarray
    row_is_call: np.ndarray
    slice_block: int

    @property
    def n_rows(self) -> int:
        return len(self.row_slice)


def slice_capacity(n_slices: int, slice_block: int = DEFAULT_SLICE_BLOCK) -> int:
    """Padded slice count: a power of two (>= 8) up to ``slice_block``, then its multiples."""
    if n_slices > slice_block:
        return padded_size(n_slices, slice_block)
    return power_of_two(n_slices, _MIN_SLICES)


def strike_capacity(n_strikes: np.ndarray, strike_buckets=DEFAULT_STRIKE_BUCKETS) -> np.ndarray:
    """Bucket width for each strike count (:func:`jaxvol.batching.strike_buckets`): the smallest
    bucket holding it; above the largest, its multiples."""
    return batching.strike_buckets(n_strikes, strike_buckets)


def pack(frame: pd.DataFrame, row_flags: np.ndarray, *, exclude: int = DEFAULT_EXCLUDE,
         strike_buckets=DEFAULT_STRIKE_BUCKETS, slice_block: int = DEFAULT_SLICE_BLOCK,
         dtype=np.float64) -> PackedChain:
    """Pack a normalised chain frame (``schema.validate``) with its quote-level flags."""
    if slice_block < _MIN_SLICES or slice_block & (slice_block - 1):
        raise ValueError(f"slice_block must be a power of two >= {_MIN_SLICES}, got {slice_block}")
    if len(strike_buckets) == 0 or min(strike_buckets) < 1:
        raise ValueError(f"strike_buckets must be positive sizes, got {strike_buckets}")
    row_flags = np.asarray(row_flags, dtype=np.int64)
    row_slice, slices = _slice_ids(frame)
    strike = frame["strike"].to_numpy(dtype=np.float64)
    has_cell = (np.isfinite(strike) & (strike > 0) & np.isfinite(frame["expiry"].to_numpy())
                & ((row_flags & int(Flag.DUPLICATE)) == 0))
    column, n_strikes = _strike_columns(row_slice, strike, has_cell, len(slices))
    slices["n_strikes"] = n_strikes
    supplied = frame[["forward", "discount"]].groupby(row_slice).first()  # first non-NaN
    slices["forward_in"] = supplied["forward"].reindex(slices.index).to_numpy()
    slices["discount_in"] = supplied["discount"].reindex(slices.index).to_numpy()
    slices["batch"], slices["position"], widths = _bucket_positions(
        n_strikes, strike_buckets)
    maps = _row_maps(row_slice, column, has_cell, slices)
    usable = has_cell & ((row_flags & int(exclude) & int(QUOTE_LEVEL)) == 0)
    batches = tuple(_fill_batch(frame, slices, b, width, maps, usable, slice_block, dtype)
                    for b, width in enumerate(widths))
    return PackedChain(batches, slices, row_slice, maps[0], maps[1], maps[2],
                       frame["is_call"].to_numpy(dtype=bool), slice_block)


def _slice_ids(frame: pd.DataFrame):
    keys = frame[["underlying", "expiry"]]
    grouped = keys.groupby(["underlying", "expiry"], sort=True, dropna=False, observed=True)
    row_slice = grouped.ngroup().to_numpy(dtype=np.int64)
    first = np.unique(row_slice, return_index=True)[1]
    slices = keys.iloc[first].reset_index(drop=True)
    return row_slice, slices


def _strike_columns(row_slice, strike, has_cell, n_slices):
    """Column of each row in its slice's sorted distinct-strike grid, and strikes per slice."""
    rows = np.flatnonzero(has_cell)
    order = rows[np.lexsort((strike[rows], row_slice[rows]))]
    s, k = row_slice[order], strike[order]
    slice_start = np.r_[True, s[1:] != s[:-1]] if len(s) else np.zeros(0, bool)
    new_strike = slice_start | np.r_[True, k[1:] != k[:-1]] if len(s) else slice_start
    unique_id = np.cumsum(new_strike) - 1
    start_id = np.maximum.accumulate(np.where(slice_start, unique_id, 0)) if len(s) else unique_id
    column = np.full(len(strike), -1, dtype=np.int64)
    column[order] = unique_id - start_id
    n_strikes = np.bincount(s[new_strike], minlength=n_slices) if len(s) else np.zeros(
        n_slices, dtype=np.int64)
    return column, n_strikes


def _bucket_positions(n_strikes, strike_buckets):
    width = strike_capacity(n_strikes, strike_buckets)
    widths, batch = np.unique(width, return_inverse=True)
    order = np.argsort(batch, kind="stable")
    counts = np.bincount(batch, minlength=len(widths))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    position = np.empty(len(batch), dtype=np.int64)
    position[order] = np.arange(len(batch)) - np.repeat(starts, counts)
    return batch, position, [int(w) for w in widths]


def _row_maps(row_slice, column, has_cell, slices):
    batch = np.where(has_cell, slices["batch"].to_numpy()[row_slice], -1)
    position = np.where(has_cell, slices["position"].to_numpy()[row_slice], -1)
    return batch, position, np.where(has_cell, column, -1)


def _fill_batch(frame, slices, b, width, maps, usable, slice_block, dtype) -> ChainBatch:
    in_batch = slices["batch"].to_numpy() == b
    capacity = slice_capacity(int(in_batch.sum()), slice_block)
    rows = np.flatnonzero(maps[0] == b)
    pos, col = maps[1][rows], maps[2][rows]
    is_call = frame["is_call"].to_numpy()[rows]
    grid = lambda: np.full((capacity, width), np.nan, dtype=dtype)  # noqa: E731
    strike = grid()
    strike[pos, col] = frame["strike"].to_numpy()[rows]
    quotes = {}
    for side, chosen in (("call", is_call), ("put", ~is_call)):
        p, c, r = pos[chosen], col[chosen], rows[chosen]
        for field in ("bid", "ask", "mid"):
            quotes[f"{side}_{field}"] = grid()
            quotes[f"{side}_{field}"][p, c] = frame[field].to_numpy()[r]
        quotes[f"{side}_mask"] = np.zeros((capacity, width), dtype=bool)
        quotes[f"{side}_mask"][p, c] = usable[r]
    return ChainBatch(strike=strike, **quotes,
                      **_slice_fields(slices, in_batch, capacity, dtype))


def _slice_fields(slices, in_batch, capacity, dtype):
    ids = np.flatnonzero(in_batch)
    position = slices["position"].to_numpy()[ids]

    def column(name):
        out = np.full(capacity, np.nan, dtype=dtype)
        out[position] = slices[name].to_numpy(dtype=np.float64)[ids]
        return out

    mask = np.zeros(capacity, dtype=bool)
    mask[position] = True
    return dict(expiry=column("expiry"), forward_in=column("forward_in"),
                discount_in=column("discount_in"), slice_mask=mask)


def iter_blocks(batch: ChainBatch, slice_block: int):
    """The batch cut along its slice axis into ``slice_block``-sized pieces (or whole)."""
    n = batch.expiry.shape[0]
    if n <= slice_block:
        yield batch
        return
    for start in range(0, n, slice_block):
        yield ChainBatch(*(a[start:start + slice_block] for a in batch))


def unpack_cells(packed: PackedChain, call_values, put_values, fill=np.nan) -> np.ndarray:
    """Per-row values from per-batch [slices, strikes] call and put arrays (``fill`` if no cell)."""
    out = np.full(packed.n_rows, fill, dtype=np.result_type(
        *(np.asarray(v).dtype for v in call_values), np.asarray(fill).dtype))
    for b, (calls, puts) in enumerate(zip(call_values, put_values)):
        rows = np.flatnonzero(packed.row_batch == b)
        pos, col = packed.row_position[rows], packed.row_column[rows]
        is_call = packed.row_is_call[rows]
        out[rows] = np.where(is_call, np.asarray(calls)[pos, col], np.asarray(puts)[pos, col])
    return out


def gather_slices(packed: PackedChain, slice_values) -> np.ndarray:
    """Per-slice values [n_slices] (global slice order) from per-batch [slices] arrays."""
    batch = packed.slices["batch"].to_numpy()
    position = packed.slices["position"].to_numpy()
    first = np.asarray(slice_values[0])
    out = np.empty((len(batch),) + first.shape[1:], dtype=first.dtype)
    for b, values in enumerate(slice_values):
        chosen = batch == b
        out[chosen] = np.asarray(values)[position[chosen]]
    return out


def unpack_slices(packed: PackedChain, slice_values) -> np.ndarray:
    """Per-row values from per-batch per-slice [slices] arrays (every row gets its slice's)."""
    return gather_slices(packed, slice_values)[packed.row_slice]
