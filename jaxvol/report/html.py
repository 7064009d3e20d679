"""Writes ``report.html`` for a nightly run folder (self-contained: plots embedded as PNG)."""

from __future__ import annotations

import html
import logging
import pathlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from jaxvol.report import curves, plots

__all__ = ["write_report", "sample_slices", "worst_slices", "fit_reasons", "atm_vols"]

log = logging.getLogger("jaxvol.report")

ROW_COLUMNS = ["underlying", "expiry", "strike", "option_type", "forward", "iv_bid", "iv_mid",
               "iv_ask", "iv_svi", "usable"]
IV_STATUS_COLUMNS = ["iv_bid_status", "iv_mid_status", "iv_ask_status"]
FAILED_PER_STATUS = 5   # rows of the failed-fits table per (model, status)


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


def _table_html(frame: pd.DataFrame, digits: int = 6, table_id: str | None = None) -> str:
    table = frame.to_html(index=False, float_format=lambda v: f"{v:.{digits}g}", border=0,
                          classes="t", table_id=table_id)
    return f'<div class="wide">{table}</div>'  # a wide table scrolls instead of overflowing


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def _img(figure, alt: str = "") -> str:
    return (f'<img alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{plots.png_base64(figure)}"/>')


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

_GENERIC_REASONS = {
    "MAX_ITERATIONS": "the optimiser stopped at max_iterations without passing its convergence "
                      "test",
    "TOO_FEW_POINTS": "too few usable quotes to fit",
    "UNIDENTIFIED": "the quotes do not identify the model (too few distinct strikes or a flat "
                    "smile)",
    "NON_FINITE": "the fit produced non-finite values",
    "BAD_INPUT": "invalid input",
    "OUTSIDE_QUOTES": "the fitted smile lies above the ask of a quote without a bid, or below "
                      "the bid of a quote without an ask (a one-sided bound), by more than 1% "
                      "in total variance",
}


def _svi_reason(row) -> str:
    b, rho = row.get("svi_b", np.nan), row.get("svi_rho", np.nan)
    parts = []
    if np.isfinite(b) and np.isfinite(rho):
        if b * (1.0 + abs(rho)) > 2.0:
            parts.append(f"Lee's wing bound: b(1+|rho|) = {b * (1 + abs(rho)):.3g} > 2")
        if abs(rho) >= 1.0 - 1e-9:
            parts.append(f"rho = {rho:+.0f} (on the face)")
        if b <= 0:
            parts.append("b = 0")
    if row.get("svi_status_name") == "ARBITRAGE":
        parts.append("Durrleman g < 0 or negative variance over the checked range")
    if not parts and row.get("svi_status_name") in ("AT_BOUND", "DEGENERATE"):
        parts.append(_svi_box_reason(row))
    return "; ".join(parts)


def _svi_box_reason(row) -> str:
    """Which of sigma and m is on its box (svi.fit's box from the fitted quotes' k range
    [k_lo, k_lo + R]: sigma in [R / 100, 10 R], m in [k_lo - R, k_lo + 2 R]; on it within
    1e-6 relative, as in the fit's check), when the row carries ``k_lo`` and ``k_span``."""
    sigma, m = row.get("svi_sigma", np.nan), row.get("svi_m", np.nan)
    k_lo, span = row.get("k_lo", np.nan), row.get("k_span", np.nan)
    if not (np.isfinite(k_lo) and np.isfinite(span)):
        return f"sigma = {sigma:.3g} or m = {m:.3g} on its box"
    span = max(span, 1e-3)
    found = []
    if sigma <= span / 100 * (1 + 1e-6):
        found.append(f"sigma = {sigma:.3g} on its floor R/100 (R = {span:.3g}, the quoted "
                     "k range)")
    if sigma >= 10 * span * (1 - 1e-6):
        found.append(f"sigma = {sigma:.3g} on its cap 10 R (R = {span:.3g})")
    if m <= k_lo - span + 1e-6 * span or m >= k_lo + 2 * span - 1e-6 * span:
        found.append(f"m = {m:.3g} on the edge of [k_lo - R, k_lo + 2R] = "
                     f"[{k_lo - span:.3g}, {k_lo + 2 * span:.3g}]")
    return "; ".join(found) or f"sigma = {sigma:.3g} or m = {m:.3g} on its box"


def _sabr_reason(row) -> str:
    rho, nu, expiry = row.get("sabr_rho", np.nan), row.get("sabr_nu", np.nan), row.get(
        "expiry", np.nan)
    if row.get("sabr_status_name") == "DEGENERATE":
        return f"nu^2 T = {nu * nu * expiry:.3g} > 25"
    if row.get("sabr_status_name") == "AT_BOUND":
        return f"|rho| = {abs(rho):.6g}" if abs(rho) > 0.99 else f"nu = {nu:.4g} at its bound"
    return ""


def _ssvi_reason(row) -> str:
    if row.get("ssvi_status_name") != "AT_BOUND":
        return ""
    rho = row.get("ssvi_rho", np.nan)
    if abs(rho) >= 0.999 - 1e-6:
        return f"|rho| = {abs(rho):.4g} at 0.999"
    return ("phi at the edge of its no-arbitrage range (phi_0 = "
            f"{row.get('ssvi_phi_0', np.nan):.4g}, phi_1 = {row.get('ssvi_phi_1', np.nan):.4g})")


def _heston_reason(row) -> str:
    """The Heston parameters within 1e-6 (relative) of jaxvol.heston's box (the job fits in
    the default box)."""
    if row.get("heston_status_name") != "AT_BOUND":
        return ""
    from jaxvol.heston import LOWER, UPPER, PARAM_NAMES
    found = []
    for name, low, high in zip(PARAM_NAMES, LOWER, UPPER):
        value = row.get(f"heston_{name}", np.nan)
        for bound, side in ((low, "lower"), (high, "upper")):
            if abs(value - bound) <= 1e-6 * max(abs(bound), 1e-3):
                found.append(f"{name} = {value:.4g} at its {side} bound {bound:g}")
    return "; ".join(found) or "a parameter on its box"


_REASONS = {"svi": _svi_reason, "sabr": _sabr_reason, "ssvi": _ssvi_reason,
            "heston": _heston_reason}


def fit_reasons(table: pd.DataFrame, model: str) -> pd.Series:
    """Why each non-CONVERGED fit of ``model`` got its status, in words: the status's meaning
    and, for AT_BOUND / DEGENERATE / ARBITRAGE, which parameter or condition it is."""
    column = f"{model}_status_name"
    reasons = []
    for _, row in table.iterrows():
        specific = _REASONS[model](row)
        reasons.append(specific or _GENERIC_REASONS.get(row[column], ""))
    return pd.Series(reasons, index=table.index, dtype=object)


def _status_tables(tables):
    """(model, table, status-name column) of every fitted model whose table has its statuses."""
    for table_name, model in FIT_MODELS:
        table = tables.get(table_name)
        column = f"{model}_status_name"
        if table is not None and column in table:
            yield model, table, column


def _quality_frame(tables) -> pd.DataFrame:
    quality = []
    for model, table, column in _status_tables(tables):
        rmse = table[f"{model}_rmse"] if f"{model}_rmse" in table else pd.Series(np.nan,
                                                                                 table.index)
        for name, group in table.groupby(column, sort=False):
            values = rmse[group.index]
            quality.append({"model": model, "status": name, "count": len(group),
                            "share": len(group) / len(table),
                            "median rmse (vol)": float(values.median()),
                            "p90 rmse (vol)": float(values.quantile(0.9))})
    frame = pd.DataFrame(quality)
    if len(frame):
        order = {model: i for i, (_, model) in enumerate(FIT_MODELS)}
        frame = frame.assign(_order=frame["model"].map(order)).sort_values(
            ["_order", "count"], ascending=[True, False], kind="stable").drop(columns="_order")
    return frame


def _fitted_ranges(out: pathlib.Path, slices: pd.DataFrame) -> pd.DataFrame:
    """``slices`` with ``k_lo`` and ``k_span``: the k range of the quotes each SVI fit used
    (usable, out of the money, finite mid IV), read from rows.parquet for these slices."""
    if not len(slices) or not (out / "rows.parquet").exists():
        return slices
    rows = _rows_of(out, sorted(set(slices["underlying"])))
    if not len(rows):
        return slices
    ranges = []
    for _, s in slices.iterrows():
        k, q, good = plots._otm_quotes(rows, s["underlying"], s["expiry"])
        k = k[good & np.isfinite(q["iv_mid"].to_numpy(np.float64))]
        ranges.append((k.min(), k.max() - k.min()) if len(k) else (np.nan, np.nan))
    k_lo, span = zip(*ranges)
    return slices.assign(k_lo=k_lo, k_span=span)


def _failed_frame(out: pathlib.Path, tables) -> pd.DataFrame:
    """Up to FAILED_PER_STATUS fits per (model, non-CONVERGED status), the largest RMSE first,
    with the reason of each; fits of whole underlyings (SSVI, Heston) show "all" expiries."""
    frames = []
    for model, table, column in _status_tables(tables):
        bad = table[table[f"{model}_status"] != 0]
        if f"{model}_rmse" in bad:
            bad = bad.sort_values(f"{model}_rmse", ascending=False, kind="stable",
                                  na_position="last")
        bad = bad.groupby(column, sort=False, group_keys=False).head(FAILED_PER_STATUS)
        bad = bad.sort_values(column, kind="stable")
        if model == "svi":
            bad = _fitted_ranges(out, bad)
        keys = [c for c in ("underlying", "expiry", "expiry_date") if c in bad]
        extra = [c for c in (f"{model}_rmse", "n_quotes") if c in bad]
        frame = bad[[column] + keys + extra].rename(columns={column: "status",
                                                             f"{model}_rmse": "rmse (vol)"})
        frame.insert(0, "model", model)
        frame["reason"] = fit_reasons(bad, model).to_numpy()
        if "expiry" in frame:
            frame["expiry"] = [f"{t:.4g}" for t in frame["expiry"]]
        else:
            frame.insert(3, "expiry", "all")  # a fit of the whole underlying
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _iv_status_frame(out: pathlib.Path) -> pd.DataFrame:
    """Rows per implied-vol status of the bid, mid and ask (all rows, and the usable ones)."""
    path = out / "rows.parquet"
    if not path.exists():
        return pd.DataFrame()
    names = set(pq.read_schema(path).names)
    columns = [c for c in IV_STATUS_COLUMNS if c in names]
    if not columns:
        return pd.DataFrame()
    from jaxvol.implied import IVStatus
    from jaxvol.status import status_name
    table = pq.read_table(path, columns=columns + (["usable"] if "usable" in names else []))
    usable = (table.column("usable").to_numpy(zero_copy_only=False).astype(bool)
              if "usable" in names else None)
    counts = {}
    for column in columns:
        codes = table.column(column).to_numpy(zero_copy_only=False).astype(np.int64)
        side = column[3:-7]
        counts[f"{side} (all rows)"] = pd.Series(codes).value_counts()
        if usable is not None:
            counts[f"{side} (usable rows)"] = pd.Series(codes[usable]).value_counts()
    frame = pd.DataFrame(counts).fillna(0).astype(np.int64).sort_index()
    frame.index = [f"{status_name(c, IVStatus)} ({c})" for c in frame.index]
    return frame.rename_axis("status").reset_index()


def _arbitrage_offenders(tables) -> pd.DataFrame:
    report = tables.get("arbitrage")
    if report is None or "size" not in report:
        return pd.DataFrame()
    worst = report[report["size"].fillna(0) > 0].sort_values(
        "size", ascending=False, kind="stable").head(15)
    slices = tables.get("slices")
    if slices is not None and "svi_status_name" in slices and len(worst):
        fitted = slices[["underlying", "expiry", "svi_status_name"]].rename(
            columns={"svi_status_name": "SVI status"})
        worst = worst.merge(fitted, on=["underlying", "expiry"], how="left")
    return worst.drop(columns=[c for c in ("violated",) if c in worst])


def _status_sections(out, tables) -> list[str]:
    """Fit quality by status (counts, shares, RMSE), the fits that are not CONVERGED with their
    reasons, implied-vol failures by status, the worst static-arbitrage offenders and the
    index values by status."""
    parts = []
    quality = _quality_frame(tables)
    if len(quality):
        parts.append(_section("Fit quality by status",
                              _img(plots.status_quality(quality), "fits per status and "
                                   "median RMSE by status, per model")
                              + _table_html(quality, table_id="fit-quality")))
    failed = _failed_frame(out, tables)
    if len(failed) or len(quality):
        body = (f"<p>up to {FAILED_PER_STATUS} fits per model and status, the largest RMSE "
                "first; the counts are in the table above</p>"
                + _table_html(failed, table_id="failed-fits")
                if len(failed) else "<p>every fit CONVERGED</p>")
        parts.append(_section("Failed, at-bound and degenerate fits with their reasons", body))
    iv = _iv_status_frame(out)
    if len(iv):
        parts.append(_section("Implied-vol failures by status (rows per bid / mid / ask "
                              "status)", _table_html(iv, table_id="iv-status")))
    if tables.get("arbitrage") is not None:
        worst = _arbitrage_offenders(tables)
        parts.append(_section("Worst static-arbitrage offenders (largest violation size)",
                              _table_html(worst, table_id="arbitrage-offenders")
                              if len(worst) else "<p>none</p>"))
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


def _underlying_row(under: pd.DataFrame | None, name: str):
    if under is None or name not in under.index:
        return None
    return under.loc[name]


def _model_curves(rows, sample, under, phi_form):
    """Per sample slice: (k grid over the quoted range and a quarter of it beyond, the model
    vols) from the fitted parameters (numpy: nothing is compiled for the report)."""
    out = []
    for _, s in sample.iterrows():
        k, _, good = plots._otm_quotes(rows, s["underlying"], s["expiry"])
        k = k[good] if good.any() else k
        if not len(k):
            out.append(None)
            continue
        low, high = float(k.min()), float(k.max())
        pad = 0.25 * max(high - low, 0.05)
        grid = np.linspace(low - pad, high + pad, 121)
        out.append((grid, curves.slice_models(s, _underlying_row(under, s["underlying"]),
                                              grid, phi_form)))
    return out


def _market_atm(rows, underlying, expiry) -> float:
    """The mid implied vol at k = 0, interpolated linearly between the nearest usable OTM
    quotes on either side (NaN if the quotes do not straddle the forward)."""
    k, q, good = plots._otm_quotes(rows, underlying, expiry)
    mid = q["iv_mid"].to_numpy(np.float64)
    keep = good & np.isfinite(mid)
    k, mid = k[keep], mid[keep]
    if not len(k) or k.min() > 0 or k.max() < 0:
        return np.nan
    order = np.argsort(k)
    return float(np.interp(0.0, k[order], mid[order]))


def atm_vols(rows, slices, under, names, phi_form: str = "power_law") -> dict:
    """{underlying: frame of expiry, market (mid at k = 0) and each model's ATM vol}."""
    result = {}
    for name in names:
        own = slices[slices["underlying"] == name].sort_values("expiry")
        records = []
        for _, s in own.iterrows():
            fitted = curves.slice_models(s, _underlying_row(under, name), np.zeros(1),
                                         phi_form)
            record = {"expiry": s["expiry"],
                      "market": _market_atm(rows, name, s["expiry"])}
            record.update({model: float(vol[0]) for model, (vol, _) in fitted.items()})
            records.append(record)
        if records:
            result[name] = pd.DataFrame(records)
    return result


def _fit_sections(out, config, tables) -> list[str]:
    slices = tables.get("slices")
    if slices is None or "svi_rmse" not in slices:
        return [_section("Fitted smiles", "<p>no SVI fits in this run</p>")]
    under = tables.get("underlyings")
    under = under.set_index("underlying") if under is not None else None
    phi_form = config.get("ssvi", {}).get("phi", "power_law")
    min_quotes = config["chains"]["min_strikes"]
    sample = sample_slices(slices, config["report"]["sample_slices"], min_quotes)
    worst = worst_slices(slices, config["report"]["worst_slices"], min_quotes)
    names = sorted(set(sample["underlying"]) | set(worst["underlying"]))
    rows = _rows_of(out, names) if names else pd.DataFrame(columns=ROW_COLUMNS)
    parts = []
    legend = ("<p>bars: bid-ask implied vols; dots: mids; x: flagged quotes; lines: the fitted "
              "SVI, SSVI, SABR and Heston smiles (dashed, with the status, where the fit is "
              "not CONVERGED), drawn a quarter of the quoted range beyond the quotes</p>")
    if len(sample):
        models = _model_curves(rows, sample, under, phi_form)
        parts.append(_section("Fitted smiles: a sample", legend + _img(
            plots.smiles(rows, sample, models), _smiles_alt(sample, models))))
        term = atm_vols(rows, slices, under, list(dict.fromkeys(sample["underlying"]))[:6],
                        phi_form)
        if term:
            drawn = sorted({c for f in term.values() for c in f.columns.drop("expiry")
                            if f[c].notna().any()})
            parts.append(_section("ATM vol term structures (sample underlyings)", _img(
                plots.atm_term_structures(term), f"ATM vol against expiry of {len(term)} "
                f"underlyings: {', '.join(drawn)}")))
    if len(worst):
        models = _model_curves(rows, worst, under, phi_form)
        parts.append(_section("Fitted smiles: the worst fits (largest SVI RMSE in vol)",
                              legend + _img(plots.smiles(rows, worst, models),
                                            _smiles_alt(worst, models))))
    return parts


def _smiles_alt(slices, models) -> str:
    """The alt text of a smiles figure: its slices and the model curves drawn on them."""
    drawn = sorted({name for m in models if m is not None for name in m[1]})
    return (f"bid-ask, mids and the {', '.join(drawn) or 'no'} curves of {len(slices)} "
            f"slices: " + ", ".join(f"{u} T={t:.3f}" for u, t in zip(slices["underlying"],
                                                                    slices["expiry"])))


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
            parts.append(_section(title, _img(plots.histograms(table, columns, title),
                                                     f"histograms of {', '.join(columns)}")))
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
        body += _img(plots.term_structures(indices, columns, days, 8),
                     "VXJ-method term structures and the Cboe-method index histogram")
    spx = indices[indices["underlying"] == "SPX"]
    if len(spx):
        body += "<p>SPX board of the Cboe VIX worked example (published VIX: 13.93)</p>"
        body += _table_html(spx.T.reset_index().set_axis(["column", "SPX"], axis=1))
    values = [c for c in indices.columns if pd.api.types.is_float_dtype(indices[c])
              and not c.endswith("_status")]
    if values:
        body += "<p>all underlyings (values in vol points; NaN where the status says why)</p>"
        body += _table_html(indices[values].describe().T.rename_axis("value").reset_index())
    return [_section("Volatility indices", body)]


def _arbitrage_section(tables) -> list[str]:
    report = tables.get("arbitrage")
    if report is None:
        return [_section("Static arbitrage", "<p>no arbitrage report in this run</p>")]
    return [_section("Static arbitrage (bid/ask aware violations)",
                     _img(plots.arbitrage(report),
                          "slices violating each relation; violation sizes"))]


STYLE = """<style>body{font-family:sans-serif;margin:2em;max-width:1300px}
table.t{border-collapse:collapse;font-size:12px}table.t td,table.t th{padding:2px 8px;
border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}
.wide{overflow-x:auto}</style>"""


def write_report(out, config: dict, summary: dict, tables: dict, stages: pd.DataFrame) -> None:
    """Write ``out/report.html``."""
    out = pathlib.Path(out)
    headline = {k: v for k, v in summary.items() if np.isscalar(v) or v is None}
    parts = [f"<h1>jaxvol nightly: {html.escape(config['job']['name'])}</h1>",
             _table_html(pd.DataFrame([headline]).T.reset_index().set_axis(
                 ["quantity", "value"], axis=1)),
             _section("Stages", _table_html(_stage_frame(summary))
                      + _img(plots.timings(summary["timings"]), "wall time per stage"))]
    parts += _status_sections(out, tables)
    parts += _fit_sections(out, config, tables)
    parts += _histogram_sections(tables)
    parts += _index_section(config, tables)
    parts += _arbitrage_section(tables)
    counts = _flag_counts(out)
    if counts:
        parts.append(_section("Quality flags", _img(plots.flag_counts(counts),
                                                              "rows per quality flag")))
    config_text = html.escape((out / "config.toml").read_text()) if (
        out / "config.toml").exists() else ""
    parts.append(_section("Resolved configuration", f"<pre>{config_text}</pre>"))
    page = f"<!doctype html><html><head><meta charset='utf-8'>{STYLE}</head><body>" + \
        "\n".join(parts) + "</body></html>"
    from jaxvol.jobs.pipeline import write_atomic
    write_atomic(out / "report.html", lambda tmp: tmp.write_text(page))
