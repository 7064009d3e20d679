"""Research sweep: error of the Cboe-method and VXJ-method 30-day indices against the strike
spacing of the listed grid, on synthetic Heston markets whose true value is known.

For each number of strikes per expiry (the listed grid spans about +-3 ATM standard deviations,
so more strikes means a finer spacing), the nightly job (configs/sweep.toml, fits disabled)
runs on an all-Heston synthetic market without bad rows; each underlying's indices are compared
with the analytic 30-day fair variance theta + (v0 - theta)(1 - e^{-kappa T})/(kappa T)
(jaxvol.heston.fair_variance). The job's VXJ index uses the default C1 monotone cubic
interpolation in z; a second pass with the piecewise-linear one (``interpolation="linear"``,
method "vxj-linear") shows what the cubic changed. Prints a table (median / mean / p90 error and,
for each doubling of the strike count, i.e. halving of the spacing, the median per-underlying
change of the error) and writes sweep_strike_spacing.png.

Run:  .venv/bin/python scripts/sweep_strike_spacing.py [n_underlyings] [out_dir]
"""

from __future__ import annotations

import contextlib
import functools
import pathlib
import sys

import numpy as np
import pandas as pd

import jaxvol
from jaxvol import synthetic
from jaxvol.jobs import load_config, merge_overrides, run_nightly

STRIKES = (12, 20, 40, 80)
CONFIG = pathlib.Path(__file__).resolve().parent.parent / "configs" / "sweep.toml"


def truth(n_underlyings: int, target_days: int) -> pd.Series:
    """Analytic 30-day index (vol points) of each synthetic Heston underlying."""
    p = synthetic.market_parameters(0, n_underlyings, heston_share=1.0)
    variance = np.asarray(jaxvol.heston.fair_variance(
        target_days / 365.0, p["v0"].to_numpy(), p["kappa"].to_numpy(), p["theta"].to_numpy()))
    return pd.Series(100 * np.sqrt(variance), index=p["underlying"])


@contextlib.contextmanager
def _vxj_interpolation(interpolation: str):
    """The job looks jaxvol.indices.vxj_index_batch up at call time: swap in the option. The
    job keeps its jitted stage programs across runs of a process (jaxvol.batching.run_blocks), so
    they are dropped on the way in and out, or the first run's VXJ would be reused."""
    from jaxvol import batching

    original = jaxvol.indices.vxj_index_batch
    batching.clear_programs()
    jaxvol.indices.vxj_index_batch = functools.partial(original, interpolation=interpolation)
    try:
        yield
    finally:
        jaxvol.indices.vxj_index_batch = original
        batching.clear_programs()


def run(strikes: int, n_underlyings: int, out: pathlib.Path) -> pd.DataFrame:
    config = merge_overrides(load_config(CONFIG), {
        "market.underlyings": n_underlyings, "market.strikes": strikes,
        "market.heston_share": 1.0, "market.bad_row_share": 0.0,
        "svi.enabled": False, "sabr.enabled": False, "ssvi.enabled": False,
        "heston.enabled": False, "report.enabled": False})
    run_nightly(config, out=out / f"strikes-{strikes}", fresh=True)
    return pd.read_parquet(out / f"strikes-{strikes}" / "indices.parquet")


def main(n_underlyings: int = 50, out: str = "sweep-out") -> None:
    jaxvol.configure()
    out = pathlib.Path(out)
    true = truth(n_underlyings, 30)
    rows, errors = [], {}
    for strikes in STRIKES:
        table = run(strikes, n_underlyings, out).set_index("underlying")
        with _vxj_interpolation("linear"):
            linear = run(strikes, n_underlyings, out / "linear").set_index("underlying")
        for method, column in (("cboe", table["cboe_30d"]), ("vxj", table["vxj_30d"]),
                               ("vxj-linear", linear["vxj_30d"])):
            error = column - true.reindex(column.index)
            errors[strikes, method] = error
            rows.append({"strikes": strikes, "method": method,
                         "median |error| (vol pts)": float(np.nanmedian(np.abs(error))),
                         "mean error (vol pts)": float(np.nanmean(error)),
                         "p90 |error|": float(np.nanquantile(np.abs(error), 0.9))})
    result = pd.DataFrame(rows)
    print(result.to_string(index=False))
    print("\nmedian over underlyings of |error(2n strikes) - error(n strikes)| (vol points):")
    for coarse, fine in ((20, 40), (40, 80)):
        changes = {m: float(np.nanmedian(np.abs(errors[fine, m] - errors[coarse, m])))
                   for m in ("cboe", "vxj", "vxj-linear")}
        print(f"  {coarse:3d} -> {fine:3d} strikes: " + "  ".join(
            f"{m} {v:.4f}" for m, v in changes.items())
            + f"  (Cboe / VXJ {changes['cboe'] / changes['vxj']:.1f}x)")
    _plot(result, out / "sweep_strike_spacing.png")


def _plot(result: pd.DataFrame, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, ax = plt.subplots(figsize=(6, 3.6))
    for method, group in result.groupby("method"):
        ax.plot(group["strikes"], group["median |error| (vol pts)"], "o-", label=method)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("strikes per expiry (finer spacing ->)")
    ax.set_ylabel("median |index - truth| (vol points)")
    ax.legend()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    print(f"plot: {path}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50,
         sys.argv[2] if len(sys.argv) > 2 else "sweep-out")
