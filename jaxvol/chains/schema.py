"""The long-format option-chain schema: one row per quote.

Required columns (default names; rename any of them with :class:`ChainSchema`):

==============  ===============================================================================
``underlying``  identifier of the underlying (any hashable value, not missing)
``expiry``      time to expiry in years (float), or a timestamp together with ``quote_time``
``strike``      strike price (float)
``option_type`` "C"/"P" (also accepted, any case: "call"/"put")
``bid``         best bid (float; NaN allowed, it is flagged)
``ask``         best ask (float; NaN allowed, it is flagged)
==============  ===============================================================================

Optional columns, used when present: ``quote_time`` (timestamp; needed when ``expiry`` is a
timestamp), ``mid`` (replaces (bid + ask) / 2), ``spot``, ``forward``, ``rate`` (continuously
compounded, per year), ``dividend_yield`` (continuous), ``discount`` (discount factor to expiry).
The slice's forward and discount factor come from, in order: ``forward`` / ``discount`` columns,
``discount = exp(-rate * expiry)``, ``forward = spot * exp((rate - dividend_yield) * expiry)``;
whatever stays unknown is estimated from put-call parity.

:func:`validate` returns the *normalised* frame used by the rest of :mod:`jaxvol.chains`: a
``RangeIndex`` (row position in the input), the columns of :data:`NORMALISED_COLUMNS`, float64
numbers, a categorical ``underlying`` and a boolean ``is_call``.  Structural problems (missing
column, a value of the wrong type) raise :class:`SchemaError` naming the column and the
offending rows; bad *values* (NaN, negative prices, ...) are not errors: they become quality
flags downstream.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np
import pandas as pd

from jaxvol.chains.flags import Flag

__all__ = ["NORMALISED_COLUMNS", "ChainSchema", "SchemaError", "make_schema", "read_table",
           "load", "validate"]

NORMALISED_COLUMNS = ("underlying", "expiry", "strike", "is_call", "bid", "ask", "mid",
                      "forward", "discount", "input_flags")
_CALL_WORDS = {"c": True, "call": True, "p": False, "put": False}
_SHOWN_ROWS = 10


class SchemaError(ValueError):
    """A required column is missing or holds values of the wrong type."""


@dataclasses.dataclass(frozen=True)
class ChainSchema:
    """Column names of the input table (defaults are the documented names)."""

    underlying: str = "underlying"
    expiry: str = "expiry"
    strike: str = "strike"
    option_type: str = "option_type"
    bid: str = "bid"
    ask: str = "ask"
    quote_time: str = "quote_time"
    mid: str = "mid"
    spot: str = "spot"
    forward: str = "forward"
    rate: str = "rate"
    dividend_yield: str = "dividend_yield"
    discount: str = "discount"
    days_per_year: float = 365.0  #: year fraction of timestamp expiries: ACT/days_per_year

    @property
    def required(self) -> tuple[str, ...]:
        return (self.underlying, self.expiry, self.strike, self.option_type, self.bid, self.ask)


def make_schema(schema: ChainSchema | None = None, **column_names) -> ChainSchema:
    """A schema from defaults, an existing schema, and keyword renames (``strike="K"``)."""
    schema = schema or ChainSchema()
    unknown = set(column_names) - {f.name for f in dataclasses.fields(ChainSchema)}
    if unknown:
        raise ValueError(f"unknown schema field(s) {sorted(unknown)}; "
                         f"fields are {[f.name for f in dataclasses.fields(ChainSchema)]}")
    return dataclasses.replace(schema, **column_names)


def read_table(path) -> pd.DataFrame:
    """Read a chain table from a CSV (``.csv``, ``.txt``, ``.gz``) or Parquet file, unchecked."""
    path = pathlib.Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix.lower() in (".csv", ".txt", ".gz"):
        return pd.read_csv(path)
    raise ValueError(f"unknown chain file type {path.suffix!r} of {str(path)!r}; "
                     "use .csv or .parquet")


def load(source, schema: ChainSchema | None = None, **column_names) -> pd.DataFrame:
    """Read a chain from a DataFrame, a CSV or a Parquet file and :func:`validate` it."""
    if isinstance(source, (str, os.PathLike)):
        source = read_table(source)
    return validate(source, schema, **column_names)


def validate(table: pd.DataFrame, schema: ChainSchema | None = None, *,
             bad_values: str = "raise", carry_tolerance: float = 1e-6,
             **column_names) -> pd.DataFrame:
    """Check ``table`` against the schema and return the normalised frame (see module doc).

    ``bad_values``: what a bad *cell* does (a non-numeric value in a numeric column, a boolean
    in a numeric column, an option type other than C/P/call/put, a missing underlying):
    ``"raise"`` (default) raises :class:`SchemaError` naming the column and the rows;
    ``"flag"`` keeps the row with NaN there and sets ``BAD_VALUE`` / ``BAD_OPTION_TYPE`` /
    ``MISSING_KEY`` in the frame's ``input_flags`` column (ORed into ``quality_flags``). Rows
    already flagged in an ``input_flags`` column of the table (bits of
    :class:`~jaxvol.chains.Flag`, e.g. set by the nightly job's reader) never raise.

    Per-row carry inputs (``spot``, ``forward``, ``rate``, ``dividend_yield``, ``discount``)
    must agree within a slice (same underlying and expiry): each slice takes the median of its
    rows' forwards and discount factors, and a row further than ``carry_tolerance`` (relative)
    from it is flagged ``INCONSISTENT_CARRY``, so one bad row can neither move the slice's
    forward nor be used.
    """
    if not isinstance(table, pd.DataFrame):
        raise SchemaError(f"a chain must be a pandas DataFrame, got {type(table).__name__}")
    if bad_values not in ("raise", "flag"):
        raise ValueError(f"bad_values must be 'raise' or 'flag', got {bad_values!r}")
    schema = make_schema(schema, **column_names)
    missing = [c for c in schema.required if c not in table.columns]
    if missing:
        raise SchemaError(f"missing required column(s) {missing}; table has {list(table.columns)}")
    cells = _Cells(table, bad_values == "flag")
    out = pd.DataFrame(index=pd.RangeIndex(len(table)))
    out["underlying"] = cells.underlying(schema.underlying)
    out["expiry"] = _expiry_years(table, schema, cells)
    out["strike"] = cells.numeric(schema.strike)
    out["is_call"] = cells.is_call(schema.option_type)
    out["bid"] = cells.numeric(schema.bid)
    out["ask"] = cells.numeric(schema.ask)
    mid = _optional(table, schema.mid, cells)
    out["mid"] = np.where(np.isnan(mid), 0.5 * (out["bid"].to_numpy() + out["ask"].to_numpy()), mid)
    forward, discount = _carry(table, schema, out["expiry"].to_numpy(), cells)
    keys = ~np.isfinite(out["expiry"].to_numpy()) | ~np.isfinite(out["strike"].to_numpy())
    cells.flags[keys] |= int(Flag.MISSING_KEY)
    out["forward"], out["discount"] = _consensus(out, forward, discount, cells, carry_tolerance)
    out["input_flags"] = cells.flags
    return out


class _Cells:
    """Cell-level parsing of one table: raises on a bad cell, or flags its row."""

    def __init__(self, table: pd.DataFrame, lenient: bool):
        self.table = table
        self.lenient = lenient
        self.flags = np.zeros(len(table), dtype=np.int64)
        if "input_flags" in table.columns:
            given = pd.to_numeric(table["input_flags"], errors="coerce").fillna(0)
            self.flags |= given.to_numpy(dtype=np.int64)
        self.exempt = self.flags != 0  # flagged upstream: already accounted for

    def bad(self, bad: np.ndarray, flag: int, message: str) -> None:
        """Flag the rows in ``bad``; raise ``message`` (with the rows) for unexempt ones."""
        strict = bad & ~self.exempt
        if strict.any() and not self.lenient:
            raise SchemaError(message.format(rows=_offending(self.table, strict)))
        self.flags[bad] |= int(flag)

    def numeric(self, column: str) -> np.ndarray:
        raw = self.table[column]
        if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_datetime64_any_dtype(raw):
            if not self.lenient:
                raise SchemaError(f"column {column!r} must be numeric, has dtype {raw.dtype}")
            self.flags |= int(Flag.BAD_VALUE)
            return np.full(len(raw), np.nan)
        boolean = np.zeros(len(raw), dtype=bool)
        if raw.dtype == object:  # True/False among numbers would read as 1.0/0.0
            boolean = raw.map(type).isin((bool, np.bool_)).to_numpy()
            raw = raw.where(~boolean, None)
        values = pd.to_numeric(raw, errors="coerce")
        bad = ((values.isna() & raw.notna()).to_numpy()) | boolean
        if bad.any():
            self.bad(bad, Flag.BAD_VALUE, f"column {column!r} holds non-numeric values at "
                     f"{{rows}}: {list(self.table[column][bad][:3])}")
        values = values.to_numpy(dtype=np.float64, na_value=np.nan)
        return np.where(bad, np.nan, values) if bad.any() else values

    def underlying(self, column: str) -> pd.Categorical:
        raw = self.table[column]
        bad = raw.isna().to_numpy()
        if bad.any():
            self.bad(bad, Flag.MISSING_KEY, f"column {column!r} is missing values at {{rows}}")
            raw = raw.astype(object).where(~bad, "")
        return pd.Categorical(raw)  # integer codes: fast grouping of millions of rows

    def is_call(self, column: str) -> np.ndarray:
        codes, words = pd.factorize(self.table[column], use_na_sentinel=False)
        meaning = pd.Series(words).astype("string").str.strip().str.lower().map(_CALL_WORDS)
        bad = meaning.isna().to_numpy()[codes]
        if bad.any():
            self.bad(bad, Flag.BAD_OPTION_TYPE,
                     f"column {column!r} must hold 'C'/'P' (or 'call'/'put'); bad values at "
                     f"{{rows}}: {list(self.table[column][bad][:3])}")
        return meaning.to_numpy(dtype=bool, na_value=False)[codes]


def _offending(table: pd.DataFrame, bad: np.ndarray) -> str:
    labels = list(table.index[bad][:_SHOWN_ROWS])
    more = int(bad.sum()) - len(labels)
    return f"rows {labels}" + (f" and {more} more" if more > 0 else "")


def _optional(table: pd.DataFrame, column: str, cells: _Cells) -> np.ndarray:
    if column not in table.columns:
        return np.full(len(table), np.nan)
    return cells.numeric(column)


def _expiry_years(table: pd.DataFrame, schema: ChainSchema, cells: _Cells) -> np.ndarray:
    raw = table[schema.expiry]
    if not pd.api.types.is_datetime64_any_dtype(raw):
        return cells.numeric(schema.expiry)
    if schema.quote_time not in table.columns:
        raise SchemaError(f"column {schema.expiry!r} holds timestamps, so column "
                          f"{schema.quote_time!r} (quote time) is required")
    quote = table[schema.quote_time]
    if not pd.api.types.is_datetime64_any_dtype(quote):
        raise SchemaError(f"column {schema.quote_time!r} must hold timestamps, "
                          f"has dtype {quote.dtype}")
    aware = [getattr(c.dt, "tz", None) is not None for c in (raw, quote)]
    if aware[0] != aware[1]:
        raise SchemaError(f"column {schema.expiry!r} is {'tz-aware' if aware[0] else 'naive'} "
                          f"but {schema.quote_time!r} is {'tz-aware' if aware[1] else 'naive'}; "
                          "give both with a time zone or both without")
    seconds = (raw - quote).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
    return seconds / (schema.days_per_year * 86400.0)


def _carry(table: pd.DataFrame, schema: ChainSchema, expiry: np.ndarray, cells: _Cells):
    """Per-row forward and discount factor from whatever optional columns the table has."""
    forward = _optional(table, schema.forward, cells)
    discount = _optional(table, schema.discount, cells)
    rate = _optional(table, schema.rate, cells)
    spot = _optional(table, schema.spot, cells)
    dividend = _optional(table, schema.dividend_yield, cells)
    with np.errstate(invalid="ignore", over="ignore"):
        discount = np.where(np.isnan(discount), np.exp(-rate * expiry), discount)
        carry = rate - np.where(np.isnan(dividend), 0.0, dividend)
        forward = np.where(np.isnan(forward), spot * np.exp(carry * expiry), forward)
    return forward, discount


def _consensus(frame: pd.DataFrame, forward: np.ndarray, discount: np.ndarray, cells: _Cells,
               tolerance: float):
    """Each slice's median forward and discount factor on all of its rows; rows that disagree
    (relative difference above ``tolerance``, or a non-finite or non-positive value where the
    slice has a value) are flagged INCONSISTENT_CARRY."""
    if not (np.isfinite(forward).any() or np.isfinite(discount).any()):
        return forward, discount
    keys = [frame["underlying"].cat.codes.to_numpy(), frame["expiry"].to_numpy()]
    slice_id = pd.MultiIndex.from_arrays(keys).factorize()[0] if len(frame) else keys[0]
    out = []
    for values in (forward, discount):
        given = np.where(values > 0, values, np.nan)
        present = ~np.isnan(values)  # what the row supplied (non-finite counts as supplied)
        with np.errstate(invalid="ignore"):
            finite = np.where(np.isfinite(given), given, np.nan)
        median = pd.Series(finite).groupby(slice_id).transform("median").to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            off = present & np.isfinite(median) & ~(np.abs(values / median - 1.0) <= tolerance)
        cells.flags[off] |= int(Flag.INCONSISTENT_CARRY)
        out.append(np.where(np.isfinite(median), median, values))
    return out[0], out[1]
