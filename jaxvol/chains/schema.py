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

__all__ = ["ChainSchema", "load", "make_schema", "NORMALISED_COLUMNS", "read_table", "SchemaError",
           "validate"]

NORMALISED_COLUMNS = ("underlying", "expiry", "strike", "is_call", "bid", "ask", "mid",
                      "forward", "discount")
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


def validate(table: pd.DataFrame, schema: ChainSchema | None = None,
             **column_names) -> pd.DataFrame:
    """Check ``table`` against the schema and return the normalised frame (see module doc)."""
    if not isinstance(table, pd.DataFrame):
        raise SchemaError(f"a chain must be a pandas DataFrame, got {type(table).__name__}")
    schema = make_schema(schema, **column_names)
    missing = [c for c in schema.required if c not in table.columns]
    if missing:
        raise SchemaError(f"missing required column(s) {missing}; table has {list(table.columns)}")
    out = pd.DataFrame(index=pd.RangeIndex(len(table)))
    out["underlying"] = _underlying(table, schema.underlying)
    out["expiry"] = _expiry_years(table, schema)
    out["strike"] = _numeric(table, schema.strike)
    out["is_call"] = _is_call(table, schema.option_type)
    out["bid"] = _numeric(table, schema.bid)
    out["ask"] = _numeric(table, schema.ask)
    mid = _optional(table, schema.mid)
    out["mid"] = np.where(np.isnan(mid), 0.5 * (out["bid"].to_numpy() + out["ask"].to_numpy()), mid)
    out["forward"], out["discount"] = _carry(table, schema, out["expiry"].to_numpy())
    return out


def _offending(table: pd.DataFrame, bad: np.ndarray) -> str:
    labels = list(table.index[bad][:_SHOWN_ROWS])
    more = int(bad.sum()) - len(labels)
    return f"rows {labels}" + (f" and {more} more" if more > 0 else "")


def _numeric(table: pd.DataFrame, column: str) -> np.ndarray:
    raw = table[column]
    if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_datetime64_any_dtype(raw):
        raise SchemaError(f"column {column!r} must be numeric, has dtype {raw.dtype}")
    values = pd.to_numeric(raw, errors="coerce")
    bad = (values.isna() & raw.notna()).to_numpy()
    if bad.any():
        raise SchemaError(f"column {column!r} holds non-numeric values at "
                          f"{_offending(table, bad)}: {list(raw[bad][:3])}")
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _optional(table: pd.DataFrame, column: str) -> np.ndarray:
    if column not in table.columns:
        return np.full(len(table), np.nan)
    return _numeric(table, column)


def _underlying(table: pd.DataFrame, column: str) -> pd.Categorical:
    raw = table[column]
    bad = raw.isna().to_numpy()
    if bad.any():
        raise SchemaError(f"column {column!r} is missing values at {_offending(table, bad)}")
    return pd.Categorical(raw)  # integer codes: fast grouping of millions of rows


def _is_call(table: pd.DataFrame, column: str) -> np.ndarray:
    codes, words = pd.factorize(table[column], use_na_sentinel=False)  # map distinct values only
    meaning = pd.Series(words).astype("string").str.strip().str.lower().map(_CALL_WORDS)
    bad_word = meaning.isna().to_numpy()
    bad = bad_word[codes]
    if bad.any():
        raise SchemaError(f"column {column!r} must hold 'C'/'P' (or 'call'/'put'); "
                          f"bad values at {_offending(table, bad)}: "
                          f"{list(table[column][bad][:3])}")
    return meaning.to_numpy(dtype=bool, na_value=False)[codes]


def _expiry_years(table: pd.DataFrame, schema: ChainSchema) -> np.ndarray:
    raw = table[schema.expiry]
    if not pd.api.types.is_datetime64_any_dtype(raw):
        return _numeric(table, schema.expiry)
    if schema.quote_time not in table.columns:
        raise SchemaError(f"column {schema.expiry!r} holds timestamps, so column "
                          f"{schema.quote_time!r} (quote time) is required")
    quote = table[schema.quote_time]
    if not pd.api.types.is_datetime64_any_dtype(quote):
        raise SchemaError(f"column {schema.quote_time!r} must hold timestamps, "
                          f"has dtype {quote.dtype}")
    seconds = (raw - quote).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
    return seconds / (schema.days_per_year * 86400.0)


def _carry(table: pd.DataFrame, schema: ChainSchema, expiry: np.ndarray):
    """Per-row forward and discount factor from whatever optional columns the table has."""
    forward = _optional(table, schema.forward)
    discount = _optional(table, schema.discount)
    rate = _optional(table, schema.rate)
    spot = _optional(table, schema.spot)
    dividend = _optional(table, schema.dividend_yield)
    with np.errstate(invalid="ignore", over="ignore"):
        discount = np.where(np.isnan(discount), np.exp(-rate * expiry), discount)
        carry = rate - np.where(np.isnan(dividend), 0.0, dividend)
        forward = np.where(np.isnan(forward), spot * np.exp(carry * expiry), forward)
    return forward, discount
