"""Where the nightly job's option rows come from, chunk by chunk.

A source knows the ordered list of underlyings (order of first appearance) and returns the rows
of any subset of consecutive underlyings with a ``row_id`` column: the row's position in the
whole input. Two kinds:

* :class:`SyntheticSource`: the embedded market of :mod:`jaxvol.synthetic` (generated chunk by
  chunk, never materialised whole) plus, optionally, the real SPX board of the Cboe example.
* :class:`FileSource`: a Parquet or CSV table. One streaming pass splits it into per-chunk
  Parquet files (bounded memory), which the chunks then read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jaxvol import synthetic

__all__ = ["SyntheticSource", "FileSource", "InputError", "chunk_input_path", "make_source",
           "normalize_rows", "RESERVED", "DAY_COUNTS"]

log = logging.getLogger("jaxvol.jobs")

REQUIRED = ("underlying", "expiry", "strike", "option_type", "bid", "ask")


class SyntheticSource:
    """The generated market (config section ``[market]``) plus the SPX board."""

    kind = "synthetic"

    def __init__(self, market: dict):
        self.market = dict(market)
        self.count = market["underlyings"]
        self.rows_per_underlying = market["expiries"] * market["strikes"] * 2
        self.spx = synthetic.spx_board() if market["include_spx"] else None
        self.names = synthetic.underlying_names(0, self.count) + (
            ["SPX"] if self.spx is not None else [])

    def identity(self) -> dict:
        return {"kind": self.kind, "market": self.market}

    def rows(self, start: int, stop: int) -> pd.DataFrame:
        """Rows of underlyings ``start .. stop-1`` with their global ``row_id``."""
        m = self.market
        parts = []
        if start < self.count:
            part = synthetic.market(
                m["underlyings"], m["expiries"], m["strikes"], seed=m["seed"], day=m["day"],
                heston_share=m["heston_share"], bad_row_share=m["bad_row_share"],
                start=start, stop=min(stop, self.count))
            part.insert(0, "row_id", np.arange(len(part), dtype=np.int64)
                        + start * self.rows_per_underlying)
            parts.append(part)
        if self.spx is not None and stop > self.count:
            spx = self.spx.copy()
            spx.insert(0, "row_id", np.arange(len(spx), dtype=np.int64)
                       + self.count * self.rows_per_underlying)
            parts.append(spx)
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _file_digest(path: pathlib.Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()
                          ).hexdigest()[:16]


class InputError(ValueError):
    """The input table cannot be read as a chains table; the message names the file (and the
    column or row where there is one). Raised before any stage runs."""


#: Columns the job writes into ``rows.parquet``: an input column of the same name would be
#: silently overwritten (or taken as the job's own result), so it is rejected.
RESERVED = ("row_id", "input_flags", "quality_flags", "quality_flag_names", "usable",
            "forward_se", "discount_se", "parity_forward", "expiry_date", "expiry_input")
RESERVED_PREFIXES = ("iv_",)
NUMERIC = ("strike", "bid", "ask", "mid", "spot", "forward", "rate", "dividend_yield",
           "discount")
DAY_COUNTS = {"ACT/365F": 365.0, "ACT/365.25": 365.25, "ACT/360": 360.0}
MISSING_EXPIRY = -1.0
"""Year fraction written for a row whose expiry cannot be read (flagged MISSING_KEY): a slice
of its own that no stage fits, instead of a NaN key that grouping would drop."""


def _batches(path: pathlib.Path, batch_rows: int = 500_000):
    """The table as pandas frames of at most ``batch_rows`` rows (streamed). CSV cells are
    read as written (strings; numbers are parsed by :func:`normalize_rows`), so identifiers
    such as "0005" stay strings. Any read failure is an :class:`InputError` naming the file."""
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")
    parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        if parquet:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
                yield batch.to_pandas()
        else:
            yield from pd.read_csv(path, chunksize=batch_rows, dtype=str,
                                   keep_default_na=False, na_values=[""])
    except InputError:
        raise
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: no header and no rows (an empty CSV file)") from None
    except (pa.ArrowException, OSError, ValueError, UnicodeDecodeError,
            pd.errors.ParserError) as error:
        kind = "Parquet" if parquet else "CSV"
        raise InputError(f"{path}: not a readable {kind} file ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from error


def _check_columns(frame: pd.DataFrame, path: pathlib.Path) -> None:
    missing = [name for name in REQUIRED if name not in frame.columns]
    if missing:
        raise InputError(f"{path}: required column(s) {missing} missing; the chains schema "
                         f"needs {list(REQUIRED)} (see `jaxvol nightly --help`)")
    clash = [str(c) for c in frame.columns
             if str(c) in RESERVED or str(c).startswith(RESERVED_PREFIXES)]
    if clash:
        raise InputError(f"{path}: column(s) {clash} collide with the job's output columns "
                         f"(reserved: {list(RESERVED)} and names starting with "
                         f"{list(RESERVED_PREFIXES)}); rename or drop them")


def _strings(column: pd.Series) -> pd.Series:
    """Identifiers as strings, exactly as written (missing stays missing)."""
    text = column.astype("string")
    return text.astype(object).where(text.notna(), None)


def _cell_numbers(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, bad-cell mask): text that is not a number and booleans are bad."""
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_datetime64_any_dtype(column):
        return np.full(len(column), np.nan), column.notna().to_numpy()
    raw = column
    boolean = np.zeros(len(raw), dtype=bool)
    if raw.dtype == object:
        boolean = raw.map(type).isin((bool, np.bool_)).to_numpy()
        raw = raw.where(~boolean, None)
        if raw.map(type).eq(str).any():
            raw = raw.str.strip() if pd.api.types.is_string_dtype(raw) else raw
    values = pd.to_numeric(raw, errors="coerce")
    bad = (values.isna() & raw.notna()).to_numpy() | boolean
    values = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(bad, np.nan, values), bad


def _timestamps(column: pd.Series, name: str, path) -> tuple[pd.Series, np.ndarray]:
    """(timestamps, bad mask) from a datetime column or ISO strings."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return column, np.zeros(len(column), dtype=bool)
    text = column.astype("string").str.strip()
    try:
        stamps = pd.to_datetime(text, format="ISO8601", errors="coerce")
    except (ValueError, TypeError) as error:  # mixed time zones and the like
        raise InputError(f"{path}: column {name!r} holds timestamps pandas cannot combine "
                         f"({error}); give every value in one form (ISO 8601, one time zone "
                         "or none)") from None
    return stamps, (stamps.isna() & text.notna()).to_numpy()


def _looks_like_dates(column: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(column):
        return True
    if pd.api.types.is_numeric_dtype(column):
        return False
    text = column.dropna().astype(str).str.strip()
    if text.empty:
        return False
    numeric = pd.to_numeric(text, errors="coerce").notna().mean()
    return bool(numeric < 0.5 and text.str.match(r"^\d{4}-\d{2}-\d{2}").mean() >= 0.5)


def _year_fractions(frame: pd.DataFrame, path, days_per_year: float):
    """(years, expiry timestamps or None, bad mask) of the ``expiry`` column: year fractions
    as given, or dates/timestamps measured from ``quote_time`` (ACT/days_per_year)."""
    column = frame["expiry"]
    if not _looks_like_dates(column):
        years, bad = _cell_numbers(column)
        return years, None, bad
    if "quote_time" not in frame.columns:
        raise InputError(f"{path}: column 'expiry' holds dates, so a 'quote_time' column (the "
                         "time of the quotes, ISO 8601) is required to measure time to expiry")
    expiry, bad_expiry = _timestamps(column, "expiry", path)
    quote, bad_quote = _timestamps(frame["quote_time"], "quote_time", path)
    zones = [getattr(c.dt, "tz", None) for c in (expiry, quote)]
    if (zones[0] is None) != (zones[1] is None):
        aware, naive = ("expiry", "quote_time") if zones[0] is not None else (
            "quote_time", "expiry")
        raise InputError(f"{path}: column {aware!r} has a time zone ({zones[0] or zones[1]}) "
                         f"but {naive!r} has none; give both with a time zone or both without")
    if zones[0] is not None:
        expiry, quote = expiry.dt.tz_convert("UTC"), quote.dt.tz_convert("UTC")
    seconds = (expiry - quote).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
    return seconds / (days_per_year * 86400.0), expiry, bad_expiry | bad_quote


def normalize_rows(frame: pd.DataFrame, path="input", day_count: str = "ACT/365F"):
    """The job's reading of an input table: the columns the stages use get their types, and
    every bad cell becomes a flag on its row (``input_flags``, bits of
    :class:`jaxvol.chains.Flag`) instead of an error.

    * ``underlying``: strings as written ("0005" stays "0005"); a missing one becomes "" and is
      flagged MISSING_KEY.
    * ``expiry``: year fractions, or dates/timestamps (ISO strings, datetime columns) measured
      from ``quote_time`` with ``day_count`` (the timestamp is kept in ``expiry_date``; a date
      without a time means 00:00 of that day). A cell that cannot be read is flagged
      MISSING_KEY (BAD_VALUE too if it held text) and gets expiry -1 (never fitted).
    * numeric columns (strike, bid, ask, mid, spot, forward, rate, dividend_yield, discount):
      float64; text and booleans are bad cells (NaN, flagged BAD_VALUE).
    * ``option_type``: stripped text; anything but C/P/call/put is flagged BAD_OPTION_TYPE.
    """
    from jaxvol.chains import Flag
    days = DAY_COUNTS[day_count]
    out = frame.copy()
    flags = np.zeros(len(out), dtype=np.int64)
    underlying = _strings(out["underlying"])
    missing = underlying.isna().to_numpy()
    flags[missing] |= int(Flag.MISSING_KEY)
    out["underlying"] = underlying.where(~missing, "")
    years, stamps, bad = _year_fractions(out, path, days)
    flags[bad] |= int(Flag.BAD_VALUE)
    unknown = ~np.isfinite(years)
    flags[unknown] |= int(Flag.MISSING_KEY)
    if stamps is not None:
        out["expiry_input"] = _strings(out["expiry"])
        out["expiry_date"] = stamps
    out["expiry"] = np.where(unknown, MISSING_EXPIRY, years)
    for name in NUMERIC:
        if name in out.columns:
            values, bad = _cell_numbers(out[name])
            flags[bad] |= int(Flag.BAD_VALUE)
            out[name] = values
    flags[~np.isfinite(out["strike"].to_numpy())] |= int(Flag.MISSING_KEY)
    kind = out["option_type"].astype("string").str.strip()
    known = kind.str.lower().isin(["c", "p", "call", "put"]).fillna(False).to_numpy(bool)
    flags[~known] |= int(Flag.BAD_OPTION_TYPE)
    out["option_type"] = kind.astype(object).where(kind.notna(), "")
    out["input_flags"] = flags
    return out


class FileSource:
    """A chains table on disk, split into per-chunk Parquet files under ``work_dir``."""

    kind = "file"

    def __init__(self, path: str | pathlib.Path, work_dir: pathlib.Path,
                 day_count: str = "ACT/365F"):
        self.path = pathlib.Path(path)
        if not self.path.exists():
            raise InputError(f"input table not found: {self.path}")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder, not a Parquet or CSV file")
        self.work_dir = pathlib.Path(work_dir)
        self.day_count = day_count
        self.names = self._underlyings()

    def identity(self) -> dict:
        return {"kind": self.kind, "path": str(self.path.resolve()),
                "digest": _file_digest(self.path)}

    def _underlyings(self) -> list[str]:
        seen: dict[str, None] = {}
        rows = 0
        for frame in _batches(self.path):
            _check_columns(frame, self.path)
            if rows == 0 and len(frame):  # dates without quote_time, time zones: fail early
                normalize_rows(frame.head(1000), self.path, self.day_count)
            rows += len(frame)
            names = _strings(frame["underlying"])
            seen.update(dict.fromkeys(names.where(names.notna(), "").unique()))
        if rows == 0:
            raise InputError(f"{self.path}: the table has its columns but no rows")
        return list(seen)

    def split(self, chunk_of: dict[str, int], chunks: set[int]) -> None:
        """One pass over the input writing the rows of ``chunks`` to per-chunk files."""
        done = self.work_dir / "split.done"
        if done.exists():
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        writers: dict[int, pq.ParquetWriter] = {}
        offset = 0
        for frame in _batches(self.path):
            frame = normalize_rows(frame, self.path, self.day_count)
            frame.insert(0, "row_id", np.arange(offset, offset + len(frame), dtype=np.int64))
            offset += len(frame)
            chunk = frame["underlying"].map(chunk_of).to_numpy()
            for index in np.unique(chunk):
                if int(index) not in chunks:
                    continue
                table = pa.Table.from_pandas(frame[chunk == index], preserve_index=False)
                if index not in writers:
                    writers[index] = pq.ParquetWriter(self._chunk_path(int(index)), table.schema)
                try:
                    table = table.cast(writers[index].schema)
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                    raise InputError(f"{self.path}: a column changes type within the file "
                                     f"(first batch {writers[index].schema}, later "
                                     f"{table.schema})") from None
                writers[index].write_table(table)
        for writer in writers.values():
            writer.close()
        tmp = done.with_name(".split.done.tmp")
        tmp.write_text(json.dumps(sorted(chunks)))
        os.replace(tmp, done)

    def _chunk_path(self, index: int) -> pathlib.Path:
        return chunk_input_path(self.work_dir, index)

    def chunk_rows(self, index: int) -> pd.DataFrame:
        return pd.read_parquet(self._chunk_path(index))


def chunk_input_path(work_dir: pathlib.Path, index: int) -> pathlib.Path:
    """The Parquet file holding chunk ``index``'s rows once :meth:`FileSource.split` has run
    (what a Dask worker reads: its own slice, never the whole table)."""
    return pathlib.Path(work_dir) / f"input-{index:05d}.parquet"


def make_source(input_path: str, market: dict, work_dir: pathlib.Path,
                day_count: str = "ACT/365F"):
    """The file source for ``input_path``, or the synthetic market when it is empty."""
    if input_path:
        return FileSource(input_path, work_dir, day_count)
    return SyntheticSource(market)
