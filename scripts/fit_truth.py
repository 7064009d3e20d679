"""Fit error against the synthetic truth: how far each fitted model is from the surface that
generated the quotes, inside the quoted strikes and beyond them (issue 20).

The default market of ``jaxvol nightly`` is generated from known surfaces (SSVI for most
underlyings, Heston for a share: ``jaxvol.synthetic.market_parameters``). This script reads a
nightly output folder, regenerates the true parameters from the run's resolved config, and
reports, per model (SVI, SSVI, SABR, Heston) and expiry bucket, the absolute implied-vol error
of the fits against the truth in basis points (1 bp = 0.0001 vol):
- *inside*: on 21 log-moneyness points spanning each slice's usable (fitted) quotes;
- *beyond*: on 10 points in the margins of half the quoted range below and above them,
and the share of each model's fits per status.

    python scripts/fit_truth.py nightly-out            # after `jaxvol nightly`
    python scripts/fit_truth.py nightly-out --converged-only
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tomllib
import warnings

import numpy as np
import pandas as pd

import jax

jax.config.update("jax_enable_x64", True)

import jaxvol  # noqa: E402
from jaxvol import heston, sabr, ssvi, synthetic  # noqa: E402
from jaxvol.status import status_names  # noqa: E402

INSIDE, BEYOND = 21, 5      # points inside the quoted range; points in each margin
MARGIN = 0.5                # margin beyond the quotes, as a share of the quoted k range
BUCKETS = [0, 14, 45, 120, 400]  # expiry buckets in days


def true_vol(params: pd.DataFrame, k: np.ndarray, expiry: np.ndarray) -> np.ndarray:
    """True implied vol [S, P] of each slice's underlying at log forward moneyness k."""
    ssvi_vol = _ssvi_truth(params, k, expiry)
    out = ssvi_vol.copy()
    is_heston = (params["model"] == "heston").to_numpy()
    if is_heston.any():
        out[is_heston] = _heston_truth(params[is_heston], k[is_heston], expiry[is_heston])
    return out


def _ssvi_truth(p: pd.DataFrame, k, expiry):
    col = lambda name: p[name].to_numpy()[:, None]  # noqa: E731
    t = expiry[:, None]
    theta = col("atm_vol") ** 2 * t * (1.0 + col("term_slope") * np.log1p(t))
    phi = col("ssvi_eta") / (theta ** col("ssvi_gamma") * (1.0 + theta) ** (1 - col("ssvi_gamma")))
    rho = col("ssvi_rho")
    w = 0.5 * theta * (1 + rho * phi * k + np.sqrt((phi * k + rho) ** 2 + 1 - rho ** 2))
    return np.sqrt(w / t)


def _heston_truth(p: pd.DataFrame, k, expiry):
    col = lambda name: p[name].to_numpy()[:, None]  # noqa: E731
    spot, rate, div = col("spot"), col("rate"), col("div")
    t = expiry[:, None]
    forward = spot * np.exp((rate - div) * t)
    strike = forward * np.exp(k)
    is_call = k >= 0
    price = np.asarray(heston.price(strike, t, spot=spot, rate=rate, div=div, v0=col("v0"),
                                    kappa=col("kappa"), theta=col("theta"),
                                    sigma=col("sigma"), rho=col("rho"), is_call=is_call))
    iv = jaxvol.implied_vol(price, forward, strike, t, is_call, discount=np.exp(-rate * t))
    return np.asarray(iv.vol)


def _grid(rows: pd.DataFrame, slices: pd.DataFrame):
    """Inside and beyond k grids [S, INSIDE], [S, 2*BEYOND] from each slice's usable quotes."""
    usable = rows[rows["usable"]] if "usable" in rows else rows
    k = np.log(usable["strike"] / usable["forward"])
    span = k.groupby([usable["underlying"], usable["expiry"]]).agg(["min", "max"])
    span = span.reindex(pd.MultiIndex.from_frame(slices[["underlying", "expiry"]]))
    low, high = span["min"].to_numpy()[:, None], span["max"].to_numpy()[:, None]
    u = np.linspace(0.0, 1.0, INSIDE)[None, :]
    inside = low + (high - low) * u
    width = (high - low) * MARGIN
    m = np.linspace(1.0 / BEYOND, 1.0, BEYOND)[None, :]
    beyond = np.concatenate([low - width * m, high + width * m], axis=1)
    return inside, beyond


def model_vols(name: str, slices: pd.DataFrame, under: pd.DataFrame, k: np.ndarray):
    """Fitted implied vol [S, P] of model ``name`` at k, and the status per slice."""
    t = slices["expiry"].to_numpy()[:, None]
    if name == "svi":
        a, b, rho, m, sig = (slices[f"svi_{x}"].to_numpy()[:, None]
                             for x in ("a", "b", "rho", "m", "sigma"))
        w = a + b * (rho * (k - m) + np.sqrt((k - m) ** 2 + sig ** 2))
        return np.sqrt(np.where(w > 0, w, np.nan) / t), slices["svi_status"].to_numpy()
    if name == "sabr":
        f = slices["forward"].to_numpy()[:, None]
        vol = sabr.implied_vol(f, f * np.exp(k), t, slices["sabr_alpha"].to_numpy()[:, None],
                               slices["sabr_beta"].to_numpy()[:, None],
                               slices["sabr_rho"].to_numpy()[:, None],
                               slices["sabr_nu"].to_numpy()[:, None])
        return np.asarray(vol), slices["sabr_status"].to_numpy()
    u = under.set_index("underlying").reindex(slices["underlying"])
    if name == "ssvi":
        phi_cols = sorted(c for c in u.columns if c.startswith("ssvi_phi_"))
        theta = slices["ssvi_theta"].to_numpy()[:, None]
        phi_params = [u[c].to_numpy()[:, None] for c in phi_cols]
        phi = (ssvi.power_law_phi(theta, *phi_params) if len(phi_params) == 2
               else ssvi.heston_phi(theta, *phi_params))
        w = np.asarray(ssvi.total_variance(k, theta, u["ssvi_rho"].to_numpy()[:, None], phi))
        return np.sqrt(np.where(w > 0, w, np.nan) / t), u["ssvi_status"].to_numpy()
    if name == "heston":
        # the forward measure: spot = F, no drift, undiscounted (the implied vol is the same)
        p = pd.DataFrame({"model": "heston", "spot": slices["forward"].to_numpy(),
                          "rate": 0.0, "div": 0.0})
        for x in ("v0", "kappa", "theta", "sigma", "rho"):
            p[x] = u[f"heston_{x}"].to_numpy()
        return _heston_truth(p, k, slices["expiry"].to_numpy()), u["heston_status"].to_numpy()
    raise ValueError(name)


# Outputs written before the library-wide status numbering (jaxvol.status) carry the old
# FitStatus codes and no *_status_name column.
_LEGACY = {0: "CONVERGED", 1: "MAX_ITERATIONS", 2: "NON_FINITE", 3: "BAD_INPUT"}


def _names(model, slices, under, status):
    """Status names per fit: the output's own ``<model>_status_name`` column where written."""
    table = slices if model in ("svi", "sabr") else (
        under.set_index("underlying").reindex(slices["underlying"]))
    column = f"{model}_status_name"
    if column in table:
        return table[column].astype(str).to_numpy()
    if "svi_status_name" not in slices:
        return np.array([_LEGACY.get(int(c), f"CODE_{int(c)}") for c in status], dtype=object)
    return status_names(status)


def _summary(err_in, err_out, status, expiry, model):
    days = expiry * 365.0
    bucket = pd.cut(days, BUCKETS, labels=[f"{a}-{b}d" for a, b in zip(BUCKETS, BUCKETS[1:])])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # slices with no finite model vol
        frame = pd.DataFrame({"bucket": bucket, "inside": np.nanmedian(err_in, axis=1),
                              "beyond": np.nanmedian(err_out, axis=1)})
    frame = frame.dropna(subset=["inside"])
    agg = frame.groupby("bucket", observed=True).agg(
        slices=("inside", "size"), inside_bp_median=("inside", "median"),
        inside_bp_p90=("inside", lambda x: np.quantile(x, 0.9)),
        beyond_bp_median=("beyond", "median"),
        beyond_bp_p90=("beyond", lambda x: np.nanquantile(x, 0.9)))
    agg.insert(0, "model", model)
    return agg.reset_index()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="nightly output folder")
    parser.add_argument("--converged-only", action="store_true",
                        help="error statistics over status-0 fits only")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    config = tomllib.loads((out / "config.toml").read_text())
    market = config["market"]
    slices = pd.read_parquet(out / "slices.parquet")
    under = pd.read_parquet(out / "underlyings.parquet")
    rows = pd.read_parquet(out / "rows.parquet")
    names = synthetic.underlying_names(0, int(market["underlyings"]))
    slices = slices[slices["underlying"].isin(names)].reset_index(drop=True)
    params = synthetic.market_parameters(0, int(market["underlyings"]), seed=market["seed"],
                                         day=market["day"], heston_share=market["heston_share"])
    params = params.set_index("underlying").reindex(slices["underlying"]).reset_index()
    inside, beyond = _grid(rows, slices)
    expiry = slices["expiry"].to_numpy()
    truth_in, truth_out = true_vol(params, inside, expiry), true_vol(params, beyond, expiry)
    tables, shares = [], []
    for model in ("svi", "ssvi", "sabr", "heston"):
        try:
            fit_in, status = model_vols(model, slices, under, inside)
            fit_out, _ = model_vols(model, slices, under, beyond)
        except KeyError as missing:
            print(f"{model}: column {missing} not in the output, skipped", file=sys.stderr)
            continue
        share = pd.Series(_names(model, slices, under, status)).value_counts(normalize=True)
        shares.append(share.rename(model))
        keep = status == 0 if args.converged_only else np.ones(len(status), bool)
        err_in = np.abs(fit_in - truth_in)[keep] * 1e4
        err_out = np.abs(fit_out - truth_out)[keep] * 1e4
        tables.append(_summary(err_in, err_out, status[keep], expiry[keep], model))
    pd.set_option("display.width", 160)
    print("IV error against the synthetic truth (bp of vol; median over slices of the median "
          "over points, and the 90% quantile)")
    print(pd.concat(tables).to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    print("\nshare of slices per fit status (SSVI and Heston: the status of the slice's underlying)")
    print(pd.concat(shares, axis=1).fillna(0).to_string(float_format=lambda x: f"{x:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
