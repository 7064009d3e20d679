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

__all__ = ["merge", "TABLES"]

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
    if not ordered and total <= IN_MEMORY_SORT_ROWS:
        table = pa.concat_tables([_conform(pq.read_table(f), schema) for f in files])
        pq.write_table(table.sort_by("row_id"), path)
        return total
    if not ordered:
        log.warning("input rows are not grouped by underlying and too many to sort in memory: "
                    "rows.parquet is in chunk order; sort by row_id to align with the input")
    with pq.ParquetWriter(path, schema) as writer:
        for f in files:
            writer.write_table(_conform(pq.read_table(f), schema))
    return total


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
    return pd.concat(parts, ignore_index=True) if parts else None


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
            table.to_parquet(out / f"{name}.parquet", index=False)
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
    (out / "run.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    log.info("outputs in %s (report: %s)", out, out / "report.html")
    return summary


def _stage_summary(stages: pd.DataFrame) -> dict:
    summary = {}
    for name, group in stages.groupby("stage", sort=False):
        counts = group["status"].value_counts().to_dict()
        messages = sorted(set(group.loc[group["status"] != "ok", "message"]))
        summary[name] = {"seconds": float(group["seconds"].sum()), "status": counts,
                         "messages": messages[:5]}
    return summary


def _summary(config, manifest, stages, tables, row_count, out) -> dict:
    stage_summary = _stage_summary(stages)
    summary = {"name": config["job"]["name"], "out": str(out), "rows": row_count,
               "underlyings": manifest["underlyings"], "chunks": manifest["chunks"],
               "warm_start": manifest.get("warm_start"), "input": manifest.get("input"),
               "stages": stage_summary,
               "timings": {k: v["seconds"] for k, v in stage_summary.items()}}
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
                               if k.startswith(("cboe_", "vxj_")) and np.isscalar(v)}
    return summary


def format_summary(summary: dict) -> str:
    """A plain-text table of the run for the terminal."""
    lines = [f"jaxvol nightly '{summary['name']}': {summary['underlyings']} underlyings, "
             f"{summary.get('slices', 0)} slices, {summary['rows']} rows, "
             f"{summary['chunks']} chunks", "", f"{'stage':<12}{'seconds':>10}  status"]
    for name, info in summary["stages"].items():
        status = ", ".join(f"{k} {v}" for k, v in info["status"].items())
        lines.append(f"{name:<12}{info['seconds']:>10.2f}  {status}")
        lines.extend(f"{'':<24}{m}" for m in info["messages"][:2])
    lines.append("")
    for key in ("svi_converged_share", "svi_median_rmse", "sabr_converged_share",
                "sabr_median_rmse", "heston_converged_share", "heston_median_rmse"):
        if key in summary:
            lines.append(f"{key:<24}{summary[key]:.6g}")
    if "spx_cboe" in summary:
        lines.append("SPX (Cboe example): " + ", ".join(
            f"{k} {v:.6g}" for k, v in summary["spx_cboe"].items()))
    lines.append(f"report: {pathlib.Path(summary['out']) / 'report.html'}")
    return "\n".join(lines)
