"""Assemble the per-chunk checkpoints of a nightly run into its outputs.

Outputs in the run folder: ``rows.parquet`` (every input row with its flags, forward, implied
vols and fitted SVI vol; ``row_id`` is the row's position in the input), ``slices.parquet``
(per-slice fit parameters, status, RMSE), ``underlyings.parquet`` (Heston parameters),
``indices.parquet``, ``arbitrage.parquet``, ``fx.parquet`` (when FX quotes are configured),
``run.json`` (stage statuses and timings), ``report.html``.
"""

from __future__ import annotations

import json
import logging
import pathlib
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jaxvol.jobs import config as config_mod
from jaxvol.jobs.errors import JobError
from jaxvol.jobs.pipeline import write_atomic

__all__ = ["merge", "TABLES", "add_status_names", "format_summary"]

log = logging.getLogger("jaxvol.jobs")

TABLES = ("slices", "underlyings", "indices", "arbitrage")
IN_MEMORY_SORT_ROWS = 5_000_000


def _chunk_dirs(out: pathlib.Path, count: int) -> list[pathlib.Path]:
    dirs = [out / "chunks" / f"chunk-{i:05d}" for i in range(count)]
    missing = [i for i, d in enumerate(dirs) if not d.exists()]
    if missing:
        raise JobError(f"{out}: chunks {missing[:10]}{'...' if len(missing) > 10 else ''} are "
                       "not finished; run the missing processes (same arguments) first")
    return dirs


def _write_rows(dirs: list[pathlib.Path], path: pathlib.Path) -> int:
    """Stream the chunks' row tables into one Parquet file (columns unified)."""
    files = [d / "rows.parquet" for d in dirs if (d / "rows.parquet").exists()]
    schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
    ordered = all(_monotonic(files))
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    schema = _with_names_schema(schema)
    if not ordered and total <= IN_MEMORY_SORT_ROWS:
        table = pa.concat_tables([_conform(_named(pq.read_table(f)), schema) for f in files])
        write_atomic(path, lambda tmp: pq.write_table(table.sort_by("row_id"), tmp))
        return total
    if not ordered:
        log.warning("input rows are not grouped by underlying and too many to sort in memory: "
                    "rows.parquet is in chunk order; sort by row_id to align with the input")

    def write(tmp):
        with pq.ParquetWriter(tmp, schema) as writer:
            for f in files:
                writer.write_table(_conform(_named(pq.read_table(f)), schema))
    write_atomic(path, write)
    return total


def _with_names_schema(schema: pa.Schema) -> pa.Schema:
    """The rows schema with a ``<name>_status_name`` string beside every ``*_status``."""
    fields = []
    for field in schema:
        if field.name.endswith("_status_name"):
            continue
        fields.append(field)
        if field.name.endswith("_status"):
            fields.append(pa.field(field.name + "_name", pa.string()))
        if field.name == "quality_flags":
            fields.append(pa.field("quality_flag_names", pa.string()))
    return pa.schema(fields)


def _named(table: pa.Table) -> pa.Table:
    frame = add_status_names(table.to_pandas())
    return pa.Table.from_pandas(frame, preserve_index=False)


def _monotonic(files):
    last = -1
    for f in files:
        ids = pq.read_table(f, columns=["row_id"])["row_id"].to_numpy()
        yield bool(len(ids) == 0 or (ids[0] > last and np.all(np.diff(ids) > 0)))
        last = ids[-1] if len(ids) else last


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [table[name].cast(field.type) if name in table.column_names
               else pa.nulls(len(table), field.type)
               for name, field in zip(schema.names, schema)]
    return pa.Table.from_arrays(columns, schema=schema)


def _concat(dirs: list[pathlib.Path], name: str) -> pd.DataFrame | None:
    parts = [pd.read_parquet(d / f"{name}.parquet") for d in dirs
             if (d / f"{name}.parquet").exists()]
    parts = [p for p in parts if len(p)]
    if not parts:
        return None
    table = pd.concat(parts, ignore_index=True)
    if "failed_stages" in table:  # written only by chunks where a stage failed
        table["failed_stages"] = table["failed_stages"].fillna("")
    return add_status_names(table)


def _enum_for(column: str):
    """The enumeration whose member names a status column shows (CONVERGED for fits)."""
    fit = ("svi_status", "sabr_status", "ssvi_status", "heston_status", "fx_status")
    if column.startswith("iv_"):
        from jaxvol.implied import IVStatus
        return IVStatus
    if column in fit:
        try:
            from jaxvol.calibrate import FitStatus
            return FitStatus
        except ImportError:  # pragma: no cover - the domain is always there
            return None
    return None


def add_status_names(frame: pd.DataFrame) -> pd.DataFrame:
    """Beside every ``<name>_status`` integer column a ``<name>_status_name`` string column
    (``jaxvol.status.status_names``); beside ``quality_flags`` the names of its set bits."""
    from jaxvol.status import status_names
    out = frame.copy()
    for column in [c for c in frame.columns if c.endswith("_status")]:
        codes = pd.to_numeric(frame[column], errors="coerce")
        if not pd.api.types.is_numeric_dtype(frame[column]):
            continue
        names = np.full(len(frame), None, dtype=object)
        known = codes.notna().to_numpy()
        if known.any():
            names[known] = status_names(codes[known].to_numpy(np.int64), _enum_for(column))
        position = list(out.columns).index(column) + 1
        out = out.drop(columns=[column + "_name"], errors="ignore")
        out.insert(min(position, len(out.columns)), column + "_name", names)
    if "quality_flags" in frame.columns and "quality_flag_names" not in frame.columns:
        from jaxvol.chains import describe
        codes = frame["quality_flags"].to_numpy(np.int64)
        lookup = {int(c): ",".join(describe(int(c))) for c in np.unique(codes)}
        position = list(out.columns).index("quality_flags") + 1
        out.insert(position, "quality_flag_names", [lookup[int(c)] for c in codes])
    return out


def _stage_table(dirs: list[pathlib.Path]) -> pd.DataFrame:
    entries = [e for d in dirs for e in json.loads((d / "stages.json").read_text())]
    return pd.DataFrame(entries)


def _fx_stage(config: dict, out: pathlib.Path) -> dict:
    from jaxvol.jobs import fx_stage
    return fx_stage.run(config, out)


def merge(out: str | pathlib.Path) -> dict:
    """Assemble outputs, write run.json and report.html; returns the run summary."""
    out = pathlib.Path(out)
    started = time.perf_counter()
    manifest = json.loads((out / "manifest.json").read_text())
    config = config_mod.load_config(out / "config.toml")
    dirs = _chunk_dirs(out, manifest["chunks"])
    row_count = _write_rows(dirs, out / "rows.parquet")
    tables = {}
    for name in TABLES:
        table = _concat(dirs, name)
        if table is not None:
            write_atomic(out / f"{name}.parquet",
                         lambda tmp, table=table: table.to_parquet(tmp, index=False))
        else:  # a stale table of an earlier attempt must not pass for this run's
            (out / f"{name}.parquet").unlink(missing_ok=True)
        tables[name] = table
    stages = _stage_table(dirs)
    extra = [_fx_stage(config, out)]
    extra.append({"chunk": -1, "stage": "merge", "status": "ok", "message": "",
                  "seconds": time.perf_counter() - started})
    stages = pd.concat([stages, pd.DataFrame(extra)], ignore_index=True)
    summary = _summary(config, manifest, stages, tables, row_count, out)
    if config["report"]["enabled"]:
        t0 = time.perf_counter()
        from jaxvol.report import write_report
        write_report(out, config, summary, tables, stages)
        summary["timings"]["report"] = time.perf_counter() - t0
    from jaxvol.jobs.dictionary import write_dictionary
    write_dictionary(out, tables)
    text = json.dumps(summary, indent=2, sort_keys=True, default=str)
    write_atomic(out / "run.json", lambda tmp: tmp.write_text(text))
    log.info("outputs in %s (report: %s)", out, out / "report.html")
    return summary


def _stage_summary(stages: pd.DataFrame) -> dict:
    """Per stage: seconds, chunk counts per outcome (ok, skipped, failed, blocked), the number
    of chunks where it failed or was blocked by a failure, and the first error (chunk order)."""
    summary = {}
    for name, group in stages.groupby("stage", sort=False):
        group = group.sort_values("chunk", kind="stable")
        counts = {str(k): int(v) for k, v in group["status"].value_counts().items()}
        bad = group[group["status"].isin(["failed", "blocked"])]
        errors = group[group["status"] == "failed"]
        first = errors.iloc[0] if len(errors) else (bad.iloc[0] if len(bad) else None)
        messages = sorted(set(group.loc[group["status"] != "ok", "message"]))
        summary[name] = {"seconds": float(group["seconds"].sum()), "status": counts,
                         "failed": int(len(bad)), "messages": messages[:5],
                         "first_error": None if first is None else
                         f"chunk {int(first['chunk'])}: {first['message']}"}
    return summary


def _status_counts(table: pd.DataFrame | None, column: str) -> dict:
    if table is None or column + "_name" not in table:
        return {}
    return {str(k): int(v) for k, v in table[column + "_name"].value_counts().items()}


def _summary(config, manifest, stages, tables, row_count, out) -> dict:
    stage_summary = _stage_summary(stages)
    summary = {"name": config["job"]["name"], "out": str(out), "rows": row_count,
               "underlyings": manifest["underlyings"], "chunks": manifest["chunks"],
               "warm_start": manifest.get("warm_start"), "input": manifest.get("input"),
               "stages": stage_summary,
               "timings": {k: v["seconds"] for k, v in stage_summary.items()}}
    summary["status_counts"] = {
        f"{table}.{column}": _status_counts(tables.get(table), column)
        for table in ("slices", "underlyings", "indices")
        for column in (list(tables[table].columns) if tables.get(table) is not None else [])
        if column.endswith("_status")}
    summary["failed_stages"] = {k: v["failed"] for k, v in stage_summary.items() if v["failed"]}
    slices = tables.get("slices")
    if slices is not None:
        summary["slices"] = len(slices)
        for model in ("svi", "sabr"):
            if f"{model}_status" in slices:
                fitted = slices[slices["n_quotes"] >= config["chains"]["min_strikes"]]
                summary[f"{model}_converged_share"] = float((fitted[f"{model}_status"] == 0).mean())
                summary[f"{model}_median_rmse"] = float(fitted[f"{model}_rmse"].median())
    under = tables.get("underlyings")
    if under is not None and "heston_status" in under:
        summary["heston_converged_share"] = float((under["heston_status"] == 0).mean())
        summary["heston_median_rmse"] = float(under["heston_rmse"].median())
    indices = tables.get("indices")
    if indices is not None and (indices["underlying"] == "SPX").any():
        spx = indices[indices["underlying"] == "SPX"].iloc[0]
        summary["spx_cboe"] = {k: float(v) for k, v in spx.items()
                               if k.startswith(("cboe_", "vxj_")) and np.isscalar(v)
                               and not isinstance(v, str)}  # not the *_status_name texts
    return summary


def format_summary(summary: dict) -> str:
    """A plain-text table of the run for the terminal."""
    lines = [f"jaxvol nightly '{summary['name']}': {summary['underlyings']} underlyings, "
             f"{summary.get('slices', 0)} slices, {summary['rows']} rows, "
             f"{summary['chunks']} chunks", "", f"{'stage':<12}{'seconds':>10}  status"]
    for name, info in summary["stages"].items():
        status = ", ".join(f"{k} {v}" for k, v in info["status"].items())
        lines.append(f"{name:<12}{info['seconds']:>10.2f}  {status}")
        if info.get("first_error"):
            lines.append(f"{'':<24}first error: {info['first_error']}")
    lines.append("")
    columns = summary.get("status_counts", {})
    width = max([24] + [len(column) + 2 for column in columns])  # names never run into values
    for column, counts in columns.items():
        if counts:
            lines.append(f"{column:<{width}}" + ", ".join(f"{k} {v}" for k, v in counts.items()))
    failed = summary.get("failed_stages")
    if failed:
        lines.append("FAILED: " + ", ".join(f"{k} on {v} chunk(s)" for k, v in failed.items())
                     + " (tracebacks in run.log)")
    for key in ("svi_converged_share", "svi_median_rmse", "sabr_converged_share",
                "sabr_median_rmse", "heston_converged_share", "heston_median_rmse"):
        if key in summary:
            lines.append(f"{key:<24}{summary[key]:.6g}")
    if "spx_cboe" in summary:
        lines.append("SPX (Cboe example): " + ", ".join(
            f"{k} {v:.6g}" for k, v in summary["spx_cboe"].items()))
    lines.append(f"report: {pathlib.Path(summary['out']) / 'report.html'}")
    return "\n".join(lines)
