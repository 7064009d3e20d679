"""``jaxvol divergence``: the pipeline on the embedded synthetic session or a tick file,
writing Parquet tables (series, fits, events, curves) and an HTML report with plots."""

from __future__ import annotations

import argparse
import base64
import html
import io
import pathlib
import time

__all__ = ["add_command", "run", "write_report"]


def add_command(subparsers) -> None:
    cmd = subparsers.add_parser(
        "divergence", help="IV-spot micro-divergence: residuals, OU fits, events, HTML report")
    cmd.add_argument("--input", help="tick table (.parquet or .csv) in the tick schema "
                     "(jaxvol.divergence.ticks); default: the embedded synthetic session")
    cmd.add_argument("--out", default="divergence-out", help="output folder")
    cmd.add_argument("--seed", type=int, default=0, help="seed of the synthetic session")
    cmd.add_argument("--skew", type=float, default=-0.4, help="ATM skew d vol / d ln K "
                     "(sticky-strike fair IV)")
    cmd.add_argument("--enter", type=float, default=3.0, help="|z| that opens an event")
    cmd.add_argument("--exit", type=float, default=1.0, help="|z| that closes it")
    cmd.set_defaults(handler=run)


def _read(path):
    import pandas as pd

    path = pathlib.Path(path)
    if not path.exists():
        raise SystemExit(f"jaxvol divergence: input {path} does not exist")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    raise SystemExit(f"jaxvol divergence: --input must be .parquet or .csv, got {path.name}")


def run(args: argparse.Namespace) -> int:
    from jaxvol.divergence.session import analyse
    from jaxvol.divergence.ticks import synthetic_session

    start = time.perf_counter()
    say = lambda m: print(f"[{time.perf_counter() - start:6.1f}s] {m}", flush=True)  # noqa
    if args.input:
        table, truth = _read(args.input), None
        say(f"read {len(table)} ticks from {args.input}")
    else:
        table, truth = synthetic_session(args.seed)
        say(f"synthetic session: {len(table)} ticks, {len(truth.events)} planted events")
    try:
        out = analyse(table, skew=args.skew, enter=args.enter, exit=args.exit, progress=say)
    except ValueError as err:
        raise SystemExit(f"jaxvol divergence: {err}") from None
    folder = pathlib.Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("series", "fits", "events", "curves", "spread_buckets", "contrast"):
        out[name].to_parquet(folder / f"{name}.parquet", index=False)
    write_report(out, folder / "report.html", truth=truth)
    say(f"wrote {folder}/{{series,fits,events,curves,spread_buckets,contrast}}.parquet and report.html")
    return 0


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _figures(out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figs = []
    series, events, curves = out["series"], out["events"], out["curves"]
    names = sorted(series["instrument"].unique())
    fig, axes = plt.subplots(len(names), 1, figsize=(11, 2.6 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        s = series[series.instrument == name]
        for col, label in (("d_sticky_strike", "sticky strike"),
                           ("d_sticky_delta", "sticky delta"), ("d_ssr", "SSR")):
            ax.plot(s.time, 100 * (s[col] - np.nanmean(s[col])), lw=0.6, label=label)
        for e in events[events.series == name].itertuples():
            ax.axvspan(e.start, e.end, color="red", alpha=0.15)
        ax.set_title(f"{name}: residual D = IV - g(S) (vol points, demeaned); events shaded")
        ax.set_xlabel("time (s)")
        ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    figs.append(("Residual paths", _png(fig)))
    plt.close(fig)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        c = curves[curves.instrument == name]
        ax.plot(c.horizon, c.aligned_mean, "o-", ms=3, label="event-aligned mean D / D_peak")
        ax.plot(c.horizon, c.ou_decay, "k--", label="OU decay exp(-lam t)")
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set_title(name)
        ax.set_xlabel("seconds after peak")
        ax.legend(fontsize=7)
    figs.append(("Event-aligned divergence against the fitted OU decay", _png(fig)))
    plt.close(fig)
    b = out["spread_buckets"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name in names:
        r = b[b.instrument == name]
        ax.plot(r.spread_ratio, r.half_life, "o-", label=name)
    ax.set_xscale("log")
    ax.set_xticks([0.5, 1, 3, 5], ["0.5", "1", "3", "5"])
    ax.minorticks_off()
    ax.set_xlabel("spread / median spread")
    ax.set_ylabel("half-life (s)")
    ax.set_title("OU half-life by spread bucket (covariate fit)")
    ax.legend(fontsize=7)
    figs.append(("Reversion speed by spread bucket", _png(fig)))
    plt.close(fig)
    c = out["contrast"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name in names:
        r = c[c.instrument == name]
        ax.plot(r.lag, r.correlation, label=name)
    ax.axvline(0.0, color="grey", lw=0.5)
    ax.set_xlabel("lag (s), positive = spot leads IV")
    ax.set_ylabel("HRY contrast (correlation)")
    ax.set_title("Lead-lag contrast: log spot vs ATM IV (jaxvol.leadlag)")
    ax.legend(fontsize=7)
    figs.append(("Lead–lag contrast curve", _png(fig)))
    plt.close(fig)
    return figs


def write_report(out, path, *, truth=None) -> None:
    """A self-contained HTML page: fits and events tables, the plots as inline PNGs."""
    figs = _figures(out)
    fits = out["fits"].drop(columns=["mu"]).to_html(index=False, float_format="%.4g")
    events = out["events"].to_html(index=False, float_format="%.3f")
    parts = ["<html><head><meta charset='utf-8'><title>jaxvol divergence</title>",
             "<style>body{font-family:sans-serif;margin:24px;max-width:1200px}"
             "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
             "padding:2px 6px}img{max-width:100%}</style></head><body>",
             "<h1>IV–spot micro-divergence</h1>"]
    if truth is not None:
        parts.append(f"<p>Synthetic session: planted half-life {0.6931 / truth.lam:.2f} s "
                     f"(wide spreads {0.6931 / truth.lam_wide:.2f} s), spot-vol beta "
                     f"{truth.beta:.3f}, {len(truth.events)} planted events.</p>")
    if out.get("flagged"):
        parts.append(f"<p><b>{out['flagged']} rows flagged</b> for duplicate or decreasing "
                     "timestamps (kept in the input, excluded from the series).</p>")
    for title, png in figs:
        parts.append(f"<h2>{html.escape(title)}</h2><img src='data:image/png;base64,{png}'>")
    parts += ["<h2>OU fits</h2>", fits, f"<h2>Events ({len(out['events'])})</h2>", events,
              "</body></html>"]
    pathlib.Path(path).write_text("\n".join(parts), encoding="utf-8")
