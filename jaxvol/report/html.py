"""Writes ``report.html`` for a nightly run folder (self-contained: plots embedded as PNG)."""

from __future__ import annotations

import html
import logging
import pathlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from jaxvol.report import plots

__all__ = ["write_report", "sample_slices", "worst_slices"]

log = logging.getLogger("jaxvol.report")

ROW_COLUMNS = ["underlying", "expiry", "strike", "option_type", "forward", "iv_bid", "iv_mid",
               "iv_ask", "iv_svi", "usable"]


def sample_slices(slices: pd.DataFrame, count: int, min_quotes: int) -> pd.DataFrame:
    """``count`` fitted slices spread evenly over the table (deterministic)."""
    fitted = slices[slices["n_quotes"] >= min_quotes]
    if count <= 0 or fitted.empty:
        return fitted.head(0)
    step = max(1, len(fitted) // count)
    return fitted.iloc[::step].head(count)


def worst_slices(slices: pd.DataFrame, count: int, min_quotes: int) -> pd.DataFrame:
    if "svi_rmse" not in slices or count <= 0:
        return slices.head(0)
    fitted = slices[(slices["n_quotes"] >= min_quotes) & np.isfinite(slices["svi_rmse"])]
    return fitted.sort_values("svi_rmse", ascending=False, kind="stable").head(count)


def _rows_of(out: pathlib.Path, underlyings: list[str]) -> pd.DataFrame:
    path = out / "rows.parquet"
    names = set(pq.read_schema(path).names)
    columns = [c for c in ROW_COLUMNS if c in names]
    return pq.read_table(path, columns=columns,
                         filters=[("underlying", "in", list(underlyings))]).to_pandas()


def _flag_counts(out: pathlib.Path) -> dict[str, int]:
    try:
        from jaxvol.chains import Flag
    except ImportError:
        return {}
    file = pq.ParquetFile(out / "rows.parquet")
    if "quality_flags" not in file.schema_arrow.names:
        return {}
    bits = [f for f in Flag if f.value and bin(f.value).count("1") == 1]
    counts = dict.fromkeys((f.name for f in bits), 0)
    for batch in file.iter_batches(columns=["quality_flags"], batch_size=1_000_000):
        values = batch.column(0).to_numpy(zero_copy_only=False).astype(np.int64)
        for f in bits:
            counts[f.name] += int(np.count_nonzero(values & f.value))
    return {k: v for k, v in counts.items() if v}


def _table_html(frame: pd.DataFrame, digits: int = 6) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.{digits}g}", border=0,
                         classes="t")


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def _img(figure) -> str:
    return f'<img src="data:image/png;base64,{plots.png_base64(figure)}"/>'


def _stage_frame(summary: dict) -> pd.DataFrame:
    rows = []
    for name, info in summary["stages"].items():
        status = ", ".join(f"{k}: {v}" for k, v in info["status"].items())
        rows.append({"stage": name, "seconds": info["seconds"], "chunks": status,
                     "failed chunks": info.get("failed", 0),
                     "first error": info.get("first_error") or ""})
    return pd.DataFrame(rows)


FIT_MODELS = (("slices", "svi"), ("slices", "sabr"), ("underlyings", "ssvi"),
              ("underlyings", "heston"))


def _status_sections(tables) -> list[str]:
    """Fit quality by status (count, median RMSE), the fits that are not CONVERGED with their
    reasons, and the worst static-arbitrage offenders."""
    quality, failures = [], []
    for table_name, model in FIT_MODELS:
        table = tables.get(table_name)
        column = f"{model}_status_name"
        if table is None or column not in table:
            continue
        rmse = table[f"{model}_rmse"] if f"{model}_rmse" in table else pd.Series(np.nan,
                                                                                 table.index)
        for name, group in table.groupby(column, sort=False):
            quality.append({"model": model, "status": name, "count": len(group),
                            "share": len(group) / len(table),
                            "median rmse (vol)": float(rmse[group.index].median())})
        bad = table[table[f"{model}_status"] != 0]
        keys = [c for c in ("underlying", "expiry", "expiry_date") if c in bad]
        extra = [c for c in (f"{model}_rmse", "n_quotes", "failed_stages") if c in bad]
        frame = bad[keys + [column] + extra].rename(columns={column: "status",
                                                             f"{model}_rmse": "rmse"})
        failures.append(frame.assign(model=model).head(40))
    parts = []
    if quality:
        parts.append(_section("Fit quality by status", _table_html(pd.DataFrame(quality))))
    if failures:
        table = pd.concat(failures, ignore_index=True)
        body = (_table_html(table) if len(table) else "<p>every fit CONVERGED</p>")
        parts.append(_section("Fits not converged, at a bound or failed (first 40 per model)",
                              body))
    report = tables.get("arbitrage")
    if report is not None and "size" in report:
        worst = report[report["size"].fillna(0) > 0].sort_values(
            "size", ascending=False, kind="stable").head(15)
        parts.append(_section("Worst static-arbitrage offenders",
                              _table_html(worst) if len(worst) else "<p>none</p>"))
    indices = tables.get("indices")
    if indices is not None:
        columns = [c for c in indices.columns if c.endswith("_status_name")]
        counts = {c[:-12]: indices[c].value_counts().to_dict() for c in columns}
        if counts:
            frame = pd.DataFrame(counts).fillna(0).astype(int).T.reset_index().rename(
                columns={"index": "value"})
            parts.append(_section("Index and term-structure values by status",
                                  _table_html(frame)))
    return parts


def _fit_sections(out, config, tables) -> list[str]:
    slices = tables.get("slices")
    if slices is None or "svi_rmse" not in slices:
        return [_section("Fitted smiles", "<p>no SVI fits in this run</p>")]
    min_quotes = config["chains"]["min_strikes"]
    sample = sample_slices(slices, config["report"]["sample_slices"], min_quotes)
    worst = worst_slices(slices, config["report"]["worst_slices"], min_quotes)
    names = sorted(set(sample["underlying"]) | set(worst["underlying"]))
    rows = _rows_of(out, names) if names else pd.DataFrame(columns=ROW_COLUMNS)
    parts = []
    if len(sample):
        parts.append(_section("Fitted smiles: a sample",
                              _img(plots.smiles(rows, sample, "sample of slices"))))
    if len(worst):
        parts.append(_section("Fitted smiles: the worst fits (largest SVI RMSE in vol)",
                              _img(plots.smiles(rows, worst, "worst fits"))))
    return parts


def _histogram_sections(tables) -> list[str]:
    parts = []
    slices, under = tables.get("slices"), tables.get("underlyings")
    for table, prefix, title in ((slices, "svi_", "SVI parameters"),
                                 (slices, "sabr_", "SABR parameters"),
                                 (under, "heston_", "Heston parameters")):
        if table is None:
            continue
        columns = [c for c in table.columns if c.startswith(prefix) and c not in (
            f"{prefix}status", f"{prefix}previous", f"{prefix}quotes", f"{prefix}beta",
            f"{prefix}iterations") and pd.api.types.is_float_dtype(table[c])]
        if columns:
            parts.append(_section(title, _img(plots.histograms(table, columns, title))))
    return parts


def _index_section(config, tables) -> list[str]:
    indices = tables.get("indices")
    if indices is None:
        return [_section("Volatility indices", "<p>no indices in this run</p>")]
    days = config["indices"]["term_days"]
    columns = [f"vxj_term_{d}d" for d in days if f"vxj_term_{d}d" in indices]
    days = [d for d in days if f"vxj_term_{d}d" in indices]
    body = ""
    if columns:
        body += _img(plots.term_structures(indices, columns, days, 8))
    spx = indices[indices["underlying"] == "SPX"]
    if len(spx):
        body += "<p>SPX board of the Cboe VIX worked example (published VIX: 13.93)</p>"
        body += _table_html(spx)
    body += _table_html(indices.describe().reset_index())
    return [_section("Volatility indices", body)]


def _arbitrage_section(tables) -> list[str]:
    report = tables.get("arbitrage")
    if report is None:
        return [_section("Static arbitrage", "<p>no arbitrage report in this run</p>")]
    return [_section("Static arbitrage (bid/ask aware violations)",
                     _img(plots.arbitrage(report)))]


STYLE = """<style>body{font-family:sans-serif;margin:2em;max-width:1300px}
table.t{border-collapse:collapse;font-size:12px}table.t td,table.t th{padding:2px 8px;
border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}</style>"""


def write_report(out, config: dict, summary: dict, tables: dict, stages: pd.DataFrame) -> None:
    """Write ``out/report.html``."""
    out = pathlib.Path(out)
    headline = {k: v for k, v in summary.items() if np.isscalar(v) or v is None}
    parts = [f"<h1>jaxvol nightly: {html.escape(config['job']['name'])}</h1>",
             _table_html(pd.DataFrame([headline]).T.reset_index().set_axis(
                 ["quantity", "value"], axis=1)),
             _section("Stages", _table_html(_stage_frame(summary))
                      + _img(plots.timings(summary["timings"])))]
    parts += _status_sections(tables)
    parts += _fit_sections(out, config, tables)
    parts += _histogram_sections(tables)
    parts += _index_section(config, tables)
    parts += _arbitrage_section(tables)
    counts = _flag_counts(out)
    if counts:
        parts.append(_section("Quality flags", _img(plots.flag_counts(counts))))
    config_text = html.escape((out / "config.toml").read_text()) if (
        out / "config.toml").exists() else ""
    parts.append(_section("Resolved configuration", f"<pre>{config_text}</pre>"))
    page = f"<!doctype html><html><head><meta charset='utf-8'>{STYLE}</head><body>" + \
        "\n".join(parts) + "</body></html>"
    from jaxvol.jobs.pipeline import write_atomic
    write_atomic(out / "report.html", lambda tmp: tmp.write_text(page))
