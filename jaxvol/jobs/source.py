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
import pathlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jaxvol import synthetic

__all__ = ["SyntheticSource", "FileSource", "make_source"]

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


def _batches(path: pathlib.Path, batch_rows: int = 500_000):
    """The table as pandas frames of at most ``batch_rows`` rows (streamed)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            yield batch.to_pandas()
    else:
        yield from pd.read_csv(path, chunksize=batch_rows)


def _check_columns(frame: pd.DataFrame, path: pathlib.Path) -> None:
    missing = [name for name in REQUIRED if name not in frame.columns]
    if missing:
        raise ValueError(f"{path}: required column(s) {missing} missing; the chains schema needs "
                         f"{list(REQUIRED)}")


class FileSource:
    """A chains table on disk, split into per-chunk Parquet files under ``work_dir``."""

    kind = "file"

    def __init__(self, path: str | pathlib.Path, work_dir: pathlib.Path):
        self.path = pathlib.Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"input table not found: {self.path}")
        self.work_dir = pathlib.Path(work_dir)
        self.names = self._underlyings()

    def identity(self) -> dict:
        return {"kind": self.kind, "path": str(self.path.resolve()),
                "digest": _file_digest(self.path)}

    def _underlyings(self) -> list[str]:
        seen: dict[str, None] = {}
        for frame in _batches(self.path):
            _check_columns(frame, self.path)
            seen.update(dict.fromkeys(frame["underlying"].astype(str).unique()))
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
            frame.insert(0, "row_id", np.arange(offset, offset + len(frame), dtype=np.int64))
            offset += len(frame)
            frame["underlying"] = frame["underlying"].astype(str)
            chunk = frame["underlying"].map(chunk_of).to_numpy()
            for index in np.unique(chunk):
                if int(index) not in chunks:
                    continue
                table = pa.Table.from_pandas(frame[chunk == index], preserve_index=False)
                if index not in writers:
                    writers[index] = pq.ParquetWriter(self._chunk_path(int(index)), table.schema)
                writers[index].write_table(table.cast(writers[index].schema))
        for writer in writers.values():
            writer.close()
        done.write_text(json.dumps(sorted(chunks)))

    def _chunk_path(self, index: int) -> pathlib.Path:
        return self.work_dir / f"input-{index:05d}.parquet"

    def chunk_rows(self, index: int) -> pd.DataFrame:
        return pd.read_parquet(self._chunk_path(index))


def make_source(input_path: str, market: dict, work_dir: pathlib.Path):
    """The file source for ``input_path``, or the synthetic market when it is empty."""
    if input_path:
        return FileSource(input_path, work_dir)
    return SyntheticSource(market)
