"""One-call entry points: :func:`analyze` (per-row results) and :func:`arbitrage_report`.

Both run the same pipeline, :func:`compute`, which the nightly job can call directly:

1. ``schema.validate``: structural checks, normalised frame (pandas);
2. ``flags.row_flags``: quote-level flags and duplicates (vectorised numpy/pandas);
3. ``pack.pack``: padded [slices, strikes] batches per strike bucket (vectorised);
4. one jitted JAX kernel per batch block: parity forwards, bid/mid/ask implied vols, price
   bound flags, static arbitrage (compiled once per bucket shape);
5. one jitted calendar kernel over pairs of consecutive expiries (one shape per run);
6. slice-level flags and unpacking back onto the input rows (vectorised numpy).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxvol import batching
from jaxvol.chains import arbitrage, forwards, implied, pack as packing, schema as schemas
from jaxvol.chains.flags import DEFAULT_EXCLUDE, Flag, row_flags
from jaxvol.status import Status

__all__ = ["analyze", "arbitrage_report", "ChainAnalysis", "ChainOptions", "compute",
           "make_options", "report", "rows_frame"]

#: Number of traces of each JAX kernel in this process (a trace-count guard for tests).
TRACE_COUNTS = {"forwards": 0, "vols": 0, "checks": 0, "calendar": 0}


@dataclasses.dataclass(frozen=True)
class ChainOptions:
    """Options of :func:`analyze` / :func:`arbitrage_report` / :func:`compute`.

    schema: column names (``ChainSchema``); columns: renames as a dict (``{"strike": "K"}``).
    max_relative_spread, locked_tolerance: WIDE_SPREAD / LOCKED thresholds (``flags``).
    exclude: Flag bits that take a row out of fits and checks.
    min_strikes: a slice with fewer usable strikes is flagged SLICE_TOO_FEW_STRIKES.
    near_strikes, iterations, huber, reject: parity regression (``forwards.parity_forwards``).
    tolerance: relative size below which an arbitrage violation counts as zero.
    calendar_tolerance: the same, absolute, in total-variance units.
    strike_buckets, slice_block: packing (``pack.pack``); dtype: float32 or float64.
    bad_values: ``"raise"`` (a bad cell raises SchemaError naming column and rows) or
    ``"flag"`` (the row is kept and flagged BAD_VALUE / BAD_OPTION_TYPE / MISSING_KEY).
    carry_tolerance: relative disagreement of a row's forward/discount with its slice's median
    beyond which the row is flagged INCONSISTENT_CARRY (``schema.validate``).
    forward_tolerance: relative gap between a supplied forward and the put-call parity forward
    beyond which (and beyond 4 parity standard errors) the slice's rows are flagged
    FORWARD_MISMATCH (informational: the supplied forward is still used; add the bit to
    ``exclude`` to leave such slices out).
    """

    schema: schemas.ChainSchema | None = None
    columns: dict | None = None
    max_relative_spread: float = 1.0
    locked_tolerance: float = 0.0
    exclude: int = int(DEFAULT_EXCLUDE)
    min_strikes: int = 3
    near_strikes: int = 12
    iterations: int = 20
    huber: float = 1.345
    reject: float = 10.0
    tolerance: float = 1e-10
    calendar_tolerance: float = 1e-12
    strike_buckets: tuple = packing.DEFAULT_STRIKE_BUCKETS
    slice_block: int = packing.DEFAULT_SLICE_BLOCK
    dtype: object = np.float64
    bad_values: str = "raise"
    carry_tolerance: float = 1e-6
    forward_tolerance: float = 1e-3

    def __post_init__(self):
        if np.dtype(self.dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.min_strikes < 1:
            raise ValueError(f"min_strikes must be >= 1, got {self.min_strikes}")


def make_options(**options) -> ChainOptions:
    """:class:`ChainOptions` from keywords; an unknown keyword raises ValueError naming it."""
    known = {f.name for f in dataclasses.fields(ChainOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown chain option(s) {unknown}; options are {sorted(known)}")
    return ChainOptions(**options)


class ChainAnalysis(NamedTuple):
    """Everything :func:`compute` produced (host numpy arrays, aligned as documented)."""

    table: pd.DataFrame        #: the input table as given
    frame: pd.DataFrame        #: normalised frame (``schema.validate``)
    packed: packing.PackedChain
    quality_flags: np.ndarray  #: [rows] int64 bit-field of ``Flag``
    slice_forwards: forwards.ForwardResult  #: [slices] numpy, global slice order
    rows: dict                 #: [rows] arrays: forward, discount, *_se, iv_bid/mid/ask
    arbitrage: arbitrage.ArbitrageResult     #: worst/count/worst_strike [slices, 8]
    batch_results: tuple       #: per batch dict of [slices, ...] arrays; vols, iv_status and
    #:                            bound_flags are [slices, 2 (call, put), strikes]
    options: ChainOptions
    timings: dict              #: wall seconds per stage (see :func:`compute`)


def analyze(table: pd.DataFrame, **options) -> pd.DataFrame:
    """Per-row analysis of an option chain (DataFrame, or a CSV/Parquet path).

    Returns one row per input row, same index and order: the input columns plus
    ``quality_flags`` (int64 bit-field of :class:`~jaxvol.chains.Flag`; test bits with
    :func:`~jaxvol.chains.flagged`), ``usable`` (no bit of ``exclude`` set), the slice's
    ``forward``, ``discount`` and their standard errors ``forward_se``, ``discount_se``, the
    slice's ``parity_forward`` (put-call parity alone: the check of a supplied forward), and
    Black implied vols ``iv_bid``, ``iv_mid``, ``iv_ask`` (NaN where none solves).  Options:
    :class:`ChainOptions` (column names via ``columns={"strike": "K"}`` or ``schema=``).
    """
    return rows_frame(compute(table, **options))


def arbitrage_report(table: pd.DataFrame, **options) -> pd.DataFrame:
    """One row per (underlying, expiry, relation): size of the worst violation (price units;
    total variance for ``calendar``), number of violating strikes, strike of the worst one."""
    return report(compute(table, **options))


def rows_frame(result: ChainAnalysis) -> pd.DataFrame:
    """The per-row DataFrame of a :func:`compute` result (index and order of the input)."""
    out = result.table.copy()
    out["quality_flags"] = result.quality_flags
    exclude = int(result.options.exclude)
    out["usable"] = (result.quality_flags & exclude) == 0
    for name in ("forward", "discount", "forward_se", "discount_se", "parity_forward",
                 "iv_bid", "iv_mid", "iv_ask", "iv_bid_status", "iv_mid_status",
                 "iv_ask_status"):
        if name in result.rows:
            out[name] = result.rows[name]
    return out


def report(result: ChainAnalysis) -> pd.DataFrame:
    """The tidy arbitrage report of a :func:`compute` result."""
    arb = result.arbitrage
    return arbitrage.report_frame(result.packed.slices, arb.worst, arb.count, arb.worst_strike)


def compute(table, **options) -> ChainAnalysis:
    """Run the whole pipeline (see module doc); ``table`` is a DataFrame or a CSV/Parquet path.

    ``ChainAnalysis.timings`` holds wall seconds per stage: ``validate``, ``flags``, ``pack``,
    ``assemble`` (pandas/numpy) and ``jax_block``, ``jax_calendar`` (JAX, compile included).
    """
    opts = make_options(**options)
    timings = {}
    with _timed(timings, "validate"):
        if not isinstance(table, pd.DataFrame):
            table = schemas.read_table(table)
        source = schemas.validate(table, opts.schema, bad_values=opts.bad_values,
                                  carry_tolerance=opts.carry_tolerance, **(opts.columns or {}))
    if len(source) == 0:
        return _empty_analysis(table, source, opts, timings)
    with _timed(timings, "flags"):
        flags = row_flags(source, max_relative_spread=opts.max_relative_spread,
                          locked_tolerance=opts.locked_tolerance, exclude=opts.exclude)
    with _timed(timings, "pack"):
        packed = packing.pack(source, flags, exclude=opts.exclude,
                              strike_buckets=opts.strike_buckets, slice_block=opts.slice_block,
                              dtype=np.dtype(opts.dtype))
    with _timed(timings, "jax_block"):
        batch_results = tuple(_run_batch(b, packed.slice_block, opts) for b in packed.batches)
    with _timed(timings, "assemble"):
        result = _assemble(table, source, packed, flags, batch_results, opts, timings)
    timings["assemble"] -= timings["jax_calendar"]
    return result


def _empty_analysis(table, source, opts, timings) -> ChainAnalysis:
    """The analysis of a chain without rows: empty per-row arrays, no slices, no batches."""
    slices = pd.DataFrame({"underlying": source["underlying"].iloc[:0],
                           "expiry": np.zeros(0), "n_strikes": np.zeros(0, np.int64)})
    none = np.zeros(0, np.int64)
    packed = packing.PackedChain((), slices, none, none, none, none, np.zeros(0, bool),
                                 opts.slice_block)
    fwd = forwards.ForwardResult(*(np.zeros(0) for _ in range(4)), np.zeros(0, np.int32),
                                 np.zeros(0, np.int32), np.zeros(0), np.zeros(0),
                                 np.zeros(0, bool))
    rows = {name: np.zeros(0) for name in ("forward", "discount", "forward_se", "discount_se",
                                           "parity_forward", "iv_bid", "iv_mid", "iv_ask")}
    rows.update({f"iv_{side}_status": np.zeros(0, np.int32) for side in ("bid", "mid", "ask")})
    arb = arbitrage.ArbitrageResult(None, np.zeros((0, 8)), np.zeros((0, 8), np.int32),
                                    np.zeros((0, 8)))
    timings.update(flags=0.0, pack=0.0, jax_block=0.0, jax_calendar=0.0, assemble=0.0)
    return ChainAnalysis(table, source, packed, np.zeros(0, np.int64), fwd, rows, arb, (), opts,
                         timings)


@contextlib.contextmanager
def _timed(timings: dict, name: str):
    start = time.perf_counter()
    yield
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def _run_batch(batch: packing.ChainBatch, slice_block: int, opts: ChainOptions) -> dict:
    """The three kernels over the batch in blocks of ``slice_block`` slices (the batch is
    already padded to its slice capacity, so every block has one of a few shapes)."""
    kernel = functools.partial(_block_kernel, near_strikes=opts.near_strikes,
                               iterations=opts.iterations, huber=opts.huber,
                               reject=opts.reject, tolerance=opts.tolerance,
                               forward_tolerance=opts.forward_tolerance)
    block = min(slice_block, batch.expiry.shape[0])
    return batching.run_blocks(lambda *fields: kernel(packing.ChainBatch(*fields)), list(batch),
                               block, jit=False)


def _block_kernel(batch: packing.ChainBatch, *, near_strikes, iterations, huber, reject,
                  tolerance, forward_tolerance) -> dict:
    """Forwards, vols and checks of one block: three jitted kernels (each compiled once per
    block shape; measured faster on CPU than one fused jit, whose XLA schedule was 2.5x slower
    than the three parts together)."""
    fwd = _forward_kernel(batch, near_strikes=near_strikes, iterations=iterations, huber=huber,
                          reject=reject, forward_tolerance=forward_tolerance)
    vols = _vol_kernel(batch, fwd.forward, fwd.discount)
    return dict(**fwd._asdict(), **vols,
                **_check_kernel(batch, fwd.forward, fwd.discount, vols["iv_bid"],
                                vols["iv_ask"], tolerance=tolerance))


@functools.partial(jax.jit, static_argnames=("near_strikes", "iterations", "huber", "reject",
                                             "forward_tolerance"))
def _forward_kernel(batch, *, near_strikes, iterations, huber, reject, forward_tolerance):
    TRACE_COUNTS["forwards"] += 1
    return forwards.parity_forwards(
        batch.strike, batch.call_bid, batch.call_ask, batch.put_bid, batch.put_ask,
        batch.call_mask, batch.put_mask, batch.forward_in, batch.discount_in,
        call_mid=batch.call_mid, put_mid=batch.put_mid, near_strikes=near_strikes,
        iterations=iterations, huber=huber, reject=reject, forward_tolerance=forward_tolerance)


@jax.jit
def _vol_kernel(batch, forward, discount):
    TRACE_COUNTS["vols"] += 1
    vols = implied.quote_vols(batch.strike, batch.expiry, forward, discount,
                              (batch.call_bid, batch.call_mid, batch.call_ask),
                              (batch.put_bid, batch.put_mid, batch.put_ask))
    by_slice = lambda a: jnp.moveaxis(a, 0, 1)  # noqa: E731  [2, S, N] -> [S, 2, N]
    return dict(iv_bid=by_slice(vols.bid), iv_mid=by_slice(vols.mid),
                iv_ask=by_slice(vols.ask), iv_status=by_slice(vols.mid_status),
                iv_bid_status=by_slice(vols.bid_status),
                iv_ask_status=by_slice(vols.ask_status))


@functools.partial(jax.jit, static_argnames=("tolerance",))
def _check_kernel(batch, forward, discount, iv_bid, iv_ask, *, tolerance):
    TRACE_COUNTS["checks"] += 1
    arb = arbitrage.static_arbitrage(
        batch.strike, batch.call_bid, batch.call_ask, batch.put_bid, batch.put_ask,
        batch.call_mask, batch.put_mask, forward, discount, tolerance=tolerance)
    moneyness, w_bid = implied.total_variance_otm(batch.strike, batch.expiry, forward,
                                                  iv_bid[:, 0], iv_bid[:, 1])
    _, w_ask = implied.total_variance_otm(batch.strike, batch.expiry, forward,
                                          iv_ask[:, 0], iv_ask[:, 1])
    flags = _bound_flags(batch, forward, discount, tolerance)
    return dict(bound_flags=jnp.moveaxis(flags, 0, 1), arb_size=arb.size,
                arb_worst=arb.worst, arb_count=arb.count, arb_strike=arb.worst_strike,
                moneyness=moneyness, variance_bid=w_bid, variance_ask=w_ask)


def _bound_flags(batch, forward, discount, tolerance):
    """[2, slices, strikes] BELOW_INTRINSIC / ABOVE_MAX_PRICE bits (calls, puts)."""
    f, d = forward[:, None], discount[:, None]
    slack = tolerance * d * f
    k = batch.strike
    below = jnp.stack([batch.call_ask < d * jnp.maximum(f - k, 0.0) - slack,
                       batch.put_ask < d * jnp.maximum(k - f, 0.0) - slack])
    above = jnp.stack([batch.call_bid > d * f + slack, batch.put_bid > d * k + slack])
    return (jnp.where(below, int(Flag.BELOW_INTRINSIC), 0)
            | jnp.where(above, int(Flag.ABOVE_MAX_PRICE), 0)).astype(jnp.int32)


def _assemble(table, source, packed, flags, batch_results, opts, timings) -> ChainAnalysis:
    per_slice = lambda name: packing.gather_slices(  # noqa: E731
        packed, [r[name] for r in batch_results])
    fwd = forwards.ForwardResult(*(per_slice(name) for name in forwards.ForwardResult._fields))
    cells = lambda name, side: [r[name][:, side] for r in batch_results]  # noqa: E731
    flags = flags | packing.unpack_cells(packed, cells("bound_flags", 0),
                                         cells("bound_flags", 1), fill=0).astype(np.int64)
    iv_status = packing.unpack_cells(packed, cells("iv_status", 0), cells("iv_status", 1), fill=0)
    flags = flags | np.where((packed.row_batch >= 0) & (iv_status != 0),
                             int(Flag.IV_UNSOLVED), 0)
    flags = _slice_flags(packed, flags, fwd, opts)
    rows = {name: fwd_value[packed.row_slice] for name, fwd_value in (
        ("forward", fwd.forward), ("discount", fwd.discount), ("forward_se", fwd.forward_se),
        ("discount_se", fwd.discount_se), ("parity_forward", fwd.parity_forward))}
    unreadable = (flags & int(Flag.BAD_VALUE | Flag.BAD_OPTION_TYPE | Flag.MISSING_KEY)) != 0
    for name in ("iv_bid", "iv_mid", "iv_ask"):  # a row read wrong has no vol of its own
        rows[name] = np.where(unreadable, np.nan,
                              packing.unpack_cells(packed, cells(name, 0), cells(name, 1)))
    # per-row IV status of each side (jaxvol.IVStatus); NO_CELL where the row has no cell
    no_cell = int(Status.BAD_INPUT)
    for side, name in (("bid", "iv_bid_status"), ("mid", "iv_status"), ("ask", "iv_ask_status")):
        codes = packing.unpack_cells(packed, cells(name, 0), cells(name, 1), fill=no_cell)
        codes = np.where(unreadable | (packed.row_batch < 0), no_cell, codes)
        rows[f"iv_{side}_status"] = codes.astype(np.int32)
    with _timed(timings, "jax_calendar"):
        arb = _with_calendar(packed, batch_results, per_slice, fwd.forward, opts)
    return ChainAnalysis(table, source, packed, flags, fwd, rows, arb, batch_results, opts,
                         timings)


def _slice_flags(packed, flags, fwd: forwards.ForwardResult, opts):
    no_forward = ~np.isin(fwd.status, (forwards.ForwardStatus.OK,
                                       forwards.ForwardStatus.SUPPLIED))
    flags = flags | np.where(no_forward[packed.row_slice], int(Flag.NO_FORWARD), 0)
    mismatch = np.asarray(fwd.mismatch, dtype=bool)[packed.row_slice]
    flags = flags | np.where(mismatch, int(Flag.FORWARD_MISMATCH), 0)
    usable = ((flags & opts.exclude) == 0) & (packed.row_batch >= 0)
    width = int(packed.slices["n_strikes"].max()) if len(packed.slices) else 0
    present = np.zeros(len(packed.slices) * max(width, 1), dtype=bool)
    present[packed.row_slice[usable] * width + packed.row_column[usable]] = True
    strikes = present.reshape(len(packed.slices), -1).sum(axis=1)  # usable distinct strikes
    too_few = strikes < opts.min_strikes
    return flags | np.where(too_few[packed.row_slice], int(Flag.SLICE_TOO_FEW_STRIKES), 0)


def _with_calendar(packed, batch_results, per_slice, forward, opts) -> arbitrage.ArbitrageResult:
    width = max(r["moneyness"].shape[1] for r in batch_results)
    padded = lambda name: packing.gather_slices(packed, [  # noqa: E731
        np.pad(r[name], ((0, 0), (0, width - r[name].shape[1])), constant_values=np.nan)
        for r in batch_results])
    moneyness, w_bid, w_ask = padded("moneyness"), padded("variance_bid"), padded("variance_ask")
    underlying = pd.factorize(packed.slices["underlying"])[0]
    early = np.flatnonzero(underlying[:-1] == underlying[1:])  # slices sorted by (u, expiry)
    size, count, where = _calendar_pairs(moneyness, w_bid, w_ask, early, packed.slice_block, opts)
    n = len(packed.slices)
    cal_worst, cal_count, cal_strike = np.full(n, np.nan), np.zeros(n, np.int32), np.full(
        n, np.nan)
    known = np.isfinite(forward[early]) & np.isfinite(forward[early + 1])
    cal_worst[early], cal_count[early] = np.where(known, size, np.nan), count
    cal_strike[early] = forward[early] * np.exp(where)
    worst = np.concatenate([per_slice("arb_worst"), cal_worst[:, None]], axis=1)
    return arbitrage.ArbitrageResult(
        None, worst, np.concatenate([per_slice("arb_count"), cal_count[:, None]], axis=1),
        np.concatenate([per_slice("arb_strike"), cal_strike[:, None]], axis=1))


def _calendar_pairs(moneyness, w_bid, w_ask, early, slice_block, opts):
    n_pairs = len(early)
    if n_pairs == 0:
        return np.zeros(0), np.zeros(0, np.int32), np.zeros(0)
    capacity = packing.slice_capacity(n_pairs, slice_block)
    pad = lambda a: np.pad(a, ((0, capacity - n_pairs), (0, 0)), constant_values=np.nan)  # noqa
    inputs = (pad(moneyness[early]), pad(w_bid[early]), pad(moneyness[early + 1]),
              pad(w_ask[early + 1]))
    step = min(capacity, slice_block)
    parts = [jax.device_get(_calendar_kernel(*(a[i:i + step] for a in inputs),
                                             tolerance=opts.calendar_tolerance))
             for i in range(0, capacity, step)]
    worst = np.concatenate([p.worst[:, 0] for p in parts])[:n_pairs]
    count = np.concatenate([p.count[:, 0] for p in parts])[:n_pairs]
    where = np.concatenate([p.worst_strike[:, 0] for p in parts])[:n_pairs]
    return worst, count, where


@functools.partial(jax.jit, static_argnames=("tolerance",))
def _calendar_kernel(k1, w_bid1, k2, w_ask2, *, tolerance):
    TRACE_COUNTS["calendar"] += 1
    return arbitrage.calendar_arbitrage(k1, w_bid1, k2, w_ask2, tolerance=tolerance)
