"""Matplotlib figures of the nightly report, rendered to PNG bytes (Agg backend, no display)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["png_base64", "clipped", "smiles", "atm_term_structures", "status_quality",
           "histograms", "term_structures", "arbitrage", "timings", "flag_counts"]


def png_base64(figure) -> str:
    """The figure as a base64 PNG (for an <img src="data:image/png;base64,...">)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _grid(count: int, columns: int = 3, size=(4.2, 3.0)):
    rows = max(1, int(np.ceil(count / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(size[0] * columns, size[1] * rows),
                                squeeze=False)
    for ax in axes.ravel()[count:]:
        ax.set_visible(False)
    return figure, axes.ravel()


MODEL_STYLE = {"SVI": "C1", "SSVI": "C2", "SABR": "C3", "Heston": "C4"}


def _otm_quotes(rows: pd.DataFrame, underlying: str, expiry: float):
    """(k, quotes, usable mask) of a slice's out-of-the-money rows with a forward."""
    q = rows[(rows["underlying"] == underlying) & (rows["expiry"] == expiry)]
    q = q[np.isfinite(q["forward"])]
    k = np.log(q["strike"] / q["forward"]).to_numpy()
    otm = np.where(q["option_type"] == "C", q["strike"] >= q["forward"],
                   q["strike"] < q["forward"])
    usable = q["usable"].to_numpy(bool) if "usable" in q else np.ones(len(q), bool)
    return k[otm], q[otm], usable[otm]


def _vol_limits(*values):
    finite = np.concatenate([np.asarray(v, np.float64).ravel() for v in values])
    finite = finite[np.isfinite(finite) & (finite > 0)]
    if not len(finite):
        return 0.0, 1.0
    low, high = np.quantile(finite, [0.0, 1.0])
    pad = 0.15 * (high - low) + 0.01
    return max(0.0, low - pad), high + pad


def smiles(rows: pd.DataFrame, slices: pd.DataFrame, models=None):
    """Per slice: quoted bid-ask implied vols (bars), mids (dots), flagged quotes (x) and the
    fitted model curves: ``models[i]`` = (k grid, {model: (vols, status name)}) for the i-th
    slice (SVI, SSVI, SABR, Heston; dashed where the fit is not CONVERGED). The vol axis spans
    the quotes (a curve that explodes in a wing leaves the panel instead of squashing it)."""
    figure, axes = _grid(len(slices), size=(4.4, 3.3))
    for index, (ax, (_, s)) in enumerate(zip(axes, slices.iterrows())):
        failed = []
        k, q, good = _otm_quotes(rows, s["underlying"], s["expiry"])
        bid, mid, ask = (q[c].to_numpy(np.float64) for c in ("iv_bid", "iv_mid", "iv_ask"))
        ax.vlines(k[good], np.where(np.isfinite(bid[good]), bid[good], 0.0), ask[good],
                  color="0.65", lw=1, label="bid-ask")
        ax.plot(k[good], mid[good], ".", color="C0", ms=4, label="mid")
        if (~good).any():
            ax.plot(k[~good], mid[~good], "x", color="0.3", ms=4, label="flagged")
        curves = models[index] if models is not None else None
        if curves is not None:
            grid, fitted = curves
            for name, (vol, status) in fitted.items():
                converged = status in ("CONVERGED", "")
                ax.plot(grid, vol, "-" if converged else "--", color=MODEL_STYLE.get(name, "k"),
                        lw=1.2, label=name)
                if not converged:
                    failed.append(f"{name} {status}")
        elif "iv_svi" in q:
            order = np.argsort(k)
            ax.plot(k[order], q["iv_svi"].to_numpy()[order], "-", color="C1", lw=1.2,
                    label="SVI fit")
        ax.set_ylim(*_vol_limits(bid[good], mid[good], ask[good]))
        rmse = s.get("svi_rmse", np.nan)
        ax.set_title(f"{s['underlying']}  T={s['expiry']:.3f}  SVI rmse={rmse:.2g}\n"
                     + ("not CONVERGED: " + _wrapped(failed) if failed else "all fits CONVERGED"),
                     fontsize=8)
        ax.set_xlabel("log-moneyness ln(K/F)", fontsize=7)
        ax.set_ylabel("implied vol", fontsize=7)
        ax.tick_params(labelsize=7)
    _shared_legend(figure, axes[:len(slices)], dashed_note=True)
    return figure


def _shared_legend(figure, axes, dashed_note: bool = False):
    """One legend for all panels above them (the union of their labels, models drawn solid;
    with ``dashed_note`` an entry saying what a dashed line means). No figure title: the
    report's section heading names the figure."""
    from matplotlib.lines import Line2D
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label in MODEL_STYLE:
                handle = Line2D([], [], color=MODEL_STYLE[label], lw=1.5)
            handles.setdefault(label, handle)
    if dashed_note:
        handles["dashed: fit not CONVERGED"] = Line2D([], [], color="0.3", ls="--", lw=1.2)
    rows = int(np.ceil(len(axes) / 3))
    top = 1.0 - 0.35 / (3.3 * rows)  # room for one legend row of ~0.35 inch
    figure.tight_layout(rect=(0, 0, 1, top))
    if handles:
        figure.legend(handles.values(), handles.keys(), loc="upper center", ncol=len(handles),
                      fontsize=8, bbox_to_anchor=(0.5, 1.0), frameon=False)


def _wrapped(items: list[str], per_line: int = 2) -> str:
    return "\n".join(", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line))


def atm_term_structures(curves: dict):
    """ATM vol against expiry per underlying: ``curves[name]`` is a frame with ``expiry`` and
    one column per source (market, SVI, SSVI, SABR, Heston)."""
    figure, axes = _grid(len(curves), size=(4.4, 3.0))
    for ax, (name, frame) in zip(axes, curves.items()):
        for column in frame.columns.drop("expiry"):
            values = frame[column].to_numpy(np.float64)
            if not np.isfinite(values).any():
                continue
            if column == "market":
                ax.plot(frame["expiry"], values, "o", color="C0", ms=5, label="market (mid)")
            else:
                ax.plot(frame["expiry"], values, "-", marker=".", color=MODEL_STYLE.get(
                    column, "k"), lw=1.1, ms=3, label=column)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("expiry (years)", fontsize=7)
        ax.set_ylabel("ATM implied vol (k = 0)", fontsize=7)
        ax.tick_params(labelsize=7)
    _shared_legend(figure, axes[:len(curves)])
    return figure


def status_quality(quality: pd.DataFrame):
    """Left: the share of each model's fits per status (stacked bars, counts in the bars);
    right: the median RMSE (vol) of each model's fits per status."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 0.5 * quality["model"].nunique()
                                                         + 2.2))
    models = list(dict.fromkeys(quality["model"]))
    statuses = list(dict.fromkeys(quality.sort_values("count", ascending=False)["status"]))
    colours = {s: plt.cm.tab10(i % 10) for i, s in enumerate(statuses)}
    seen = set()
    for row, model in enumerate(models):
        own = quality[quality["model"] == model].set_index("status")
        start = 0.0
        for status in statuses:
            if status not in own.index:
                continue
            share = float(own.loc[status, "share"])
            left.barh(row, share, left=start, color=colours[status],
                      label=None if status in seen else status)
            seen.add(status)
            if share > 0.06:
                left.text(start + share / 2, row, f"{int(own.loc[status, 'count']):,}",
                          ha="center", va="center", fontsize=6)
            start += share
        for status in statuses:
            if status in own.index:
                right.plot(own.loc[status, "median rmse (vol)"], row, "o",
                           color=colours[status], ms=6)
    for ax in (left, right):
        ax.set_yticks(range(len(models)), models)
        ax.set_ylabel("model")
        ax.invert_yaxis()
    left.set_xlabel("share of fits")
    left.set_xlim(0, 1)
    left.set_title("fits per status (count in the bar)", fontsize=9)
    right.set_xscale("log")
    right.set_xlabel("median RMSE (vol, log scale)")
    right.set_title("median RMSE by status (colours as left)", fontsize=9)
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    figure.legend(*left.get_legend_handles_labels(), loc="lower center", ncol=len(seen),
                  fontsize=8, frameon=False)
    return figure


def clipped(values: np.ndarray, low: float = 0.01, high: float = 0.99, fence: float = 5.0):
    """(values inside the shown range, count below, count above): the [low, high] quantiles,
    narrowed to the quartiles -+ ``fence`` interquartile ranges where the tail is heavier (SVI's
    b: the 99% quantile is 1e5 times the median), so that a few absurd values cannot squash
    the histogram into a single bar."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return values, 0, 0
    lo, q1, q3, hi = np.quantile(values, [low, 0.25, 0.75, high])
    spread = q3 - q1
    if spread > 0:
        lo, hi = max(lo, q1 - fence * spread), min(hi, q3 + fence * spread)
    return values[(values >= lo) & (values <= hi)], int((values < lo).sum()), int(
        (values > hi).sum())


def histograms(table: pd.DataFrame, columns: list[str], title: str):
    """One histogram per parameter column: finite values inside the range of :func:`clipped`,
    with the number beyond it in the panel title."""
    figure, axes = _grid(len(columns), columns=min(5, max(1, len(columns))), size=(3.2, 2.6))
    for ax, name in zip(axes, columns):
        values, below, above = clipped(table[name].to_numpy(np.float64))
        if len(values):
            ax.hist(values, bins=40, color="C0")
        beyond = f"\n{below} below, {above} above the range shown" if below or above else ""
        ax.set_title(name + beyond, fontsize=8)
        ax.set_xlabel(name, fontsize=7)
        ax.set_ylabel("count", fontsize=7)
        ax.tick_params(labelsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def term_structures(indices: pd.DataFrame, columns: list[str], days: list[float], sample: int):
    """VXJ term structures of a sample of underlyings (and SPX), plus the Cboe 30-day histogram."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 3.6),
                                         gridspec_kw={"width_ratios": (1.2, 1)})
    shown = indices.head(sample)
    if (indices["underlying"] == "SPX").any():
        shown = pd.concat([shown, indices[indices["underlying"] == "SPX"]])
    for _, row in shown.iterrows():
        left.plot(days, [row[c] for c in columns], "o-", ms=3, lw=1, label=row["underlying"])
    left.set_xlabel("days")
    left.set_ylabel("index (vol points)")
    left.set_title("VXJ-method term structure")
    left.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    cboe = [c for c in indices.columns if c.startswith("cboe_") and c.endswith("d")]
    if cboe:
        values, below, above = clipped(indices[cboe[0]].to_numpy(np.float64))
        right.hist(values, bins=40, color="C2")
        right.set_title(f"Cboe-method {cboe[0][5:]} index, all underlyings"
                        + (f" ({below + above} beyond the range shown)" if below + above else ""),
                        fontsize=9)
        right.set_xlabel("index (vol points)")
        right.set_ylabel("underlyings")
    figure.tight_layout()
    return figure


def arbitrage(report: pd.DataFrame):
    """Violations per relation (count of slices) and the distribution of their sizes."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
    size_col = next((c for c in ("size", "worst", "violation") if c in report.columns), None)
    relation_col = next((c for c in ("relation", "check") if c in report.columns), None)
    if size_col and relation_col:
        violated = report[report[size_col].fillna(0) > 0]
        counts = violated[relation_col].astype(str).value_counts().sort_index()
        left.barh(counts.index, counts.to_numpy(), color="C3")
        left.set_title(f"slices violating each relation ({len(violated)} slice-relations)",
                       fontsize=9)
        left.set_xlabel("slices")
        left.set_ylabel("relation")
        sizes = violated[size_col].to_numpy(np.float64)
        if len(sizes):
            right.hist(np.log10(sizes[sizes > 0]), bins=40, color="C3")
        right.set_title("log10 violation size", fontsize=9)
        right.set_xlabel("log10 size (price units; calendar: total variance)")
        right.set_ylabel("slice-relations")
    figure.tight_layout()
    return figure


def timings(seconds: dict[str, float]):
    figure, ax = plt.subplots(figsize=(7, 0.35 * len(seconds) + 1))
    names = list(seconds)
    ax.barh(names, [seconds[n] for n in names], color="C0")
    ax.invert_yaxis()
    ax.set_xlabel("seconds (summed over chunks)")
    ax.set_ylabel("stage")
    ax.set_title("wall time per stage")
    figure.tight_layout()
    return figure


def flag_counts(counts: dict[str, int]):
    figure, ax = plt.subplots(figsize=(7, 0.3 * len(counts) + 1))
    ax.barh(list(counts), list(counts.values()), color="C1")
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("rows (log scale)")
    ax.set_ylabel("flag")
    ax.set_title("rows carrying each quality flag")
    figure.tight_layout()
    return figure
