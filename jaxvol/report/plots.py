"""Matplotlib figures of the nightly report, rendered to PNG bytes (Agg backend, no display)."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

__all__ = ["png_base64", "clipped", "smiles", "histograms", "term_structures", "arbitrage", "timings",
           "flag_counts"]


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


def smiles(rows: pd.DataFrame, slices: pd.DataFrame, title: str):
    """Quoted bid/ask implied vols (bars), mids (dots), fitted SVI (line) per slice."""
    figure, axes = _grid(len(slices))
    for ax, (_, s) in zip(axes, slices.iterrows()):
        q = rows[(rows["underlying"] == s["underlying"]) & (rows["expiry"] == s["expiry"])]
        q = q[np.isfinite(q["forward"])]
        k = np.log(q["strike"] / q["forward"])
        otm = np.where(q["option_type"] == "C", q["strike"] >= q["forward"],
                       q["strike"] < q["forward"])
        good = otm & q.get("usable", pd.Series(True, index=q.index)).to_numpy(bool)
        ax.vlines(k[good], q["iv_bid"][good], q["iv_ask"][good], color="0.6", lw=1,
                  label="bid-ask")
        ax.plot(k[good], q["iv_mid"][good], ".", color="C0", ms=4, label="mid")
        ax.plot(k[otm & ~good], q["iv_mid"][otm & ~good], "x", color="C3", ms=4,
                label="flagged")
        if "iv_svi" in q:
            order = np.argsort(k.to_numpy())
            ax.plot(k.to_numpy()[order], q["iv_svi"].to_numpy()[order], "-", color="C1",
                    lw=1.2, label="SVI fit")
        rmse = s.get("svi_rmse", np.nan)
        ax.set_title(f"{s['underlying']} T={s['expiry']:.3f} rmse={rmse:.2g}", fontsize=9)
        ax.set_xlabel("log(K/F)", fontsize=8)
        ax.set_ylabel("implied vol", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def clipped(values: np.ndarray, low: float = 0.01, high: float = 0.99):
    """(values inside the [low, high] quantiles, count below, count above): histograms that
    one absurd value (b = 2e12) cannot squash into a single bar."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return values, 0, 0
    lo, hi = np.quantile(values, [low, high])
    return values[(values >= lo) & (values <= hi)], int((values < lo).sum()), int(
        (values > hi).sum())


def histograms(table: pd.DataFrame, columns: list[str], title: str):
    """One histogram per parameter column: finite values inside the 1-99% quantiles, with the
    number beyond them in the panel title."""
    figure, axes = _grid(len(columns), columns=min(5, max(1, len(columns))), size=(3.2, 2.6))
    for ax, name in zip(axes, columns):
        values, below, above = clipped(table[name].to_numpy(np.float64))
        if len(values):
            ax.hist(values, bins=40, color="C0")
        beyond = f"\n{below} below, {above} above (1-99% shown)" if below or above else ""
        ax.set_title(name + beyond, fontsize=8)
        ax.set_xlabel(name, fontsize=7)
        ax.set_ylabel("count", fontsize=7)
        ax.tick_params(labelsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def term_structures(indices: pd.DataFrame, columns: list[str], days: list[float], sample: int):
    """VXJ term structures of a sample of underlyings (and SPX), plus the Cboe 30-day histogram."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    shown = indices.head(sample)
    if (indices["underlying"] == "SPX").any():
        shown = pd.concat([shown, indices[indices["underlying"] == "SPX"]])
    for _, row in shown.iterrows():
        left.plot(days, [row[c] for c in columns], "o-", ms=3, lw=1, label=row["underlying"])
    left.set_xlabel("days")
    left.set_ylabel("index (vol points)")
    left.set_title("VXJ-method term structure")
    left.legend(fontsize=6, ncol=2)
    cboe = [c for c in indices.columns if c.startswith("cboe_") and c.endswith("d")]
    if cboe:
        values, below, above = clipped(indices[cboe[0]].to_numpy(np.float64))
        right.hist(values, bins=40, color="C2")
        right.set_title(f"Cboe-method {cboe[0][5:]} index, all underlyings"
                        + (f" ({below + above} beyond 1-99%)" if below + above else ""),
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
    ax.set_title("wall time per stage")
    return figure


def flag_counts(counts: dict[str, int]):
    figure, ax = plt.subplots(figsize=(7, 0.3 * len(counts) + 1))
    ax.barh(list(counts), list(counts.values()), color="C1")
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("rows (log scale)")
    ax.set_title("rows carrying each quality flag")
    figure.tight_layout()
    return figure
