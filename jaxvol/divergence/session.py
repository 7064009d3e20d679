"""The divergence pipeline on a tick table: IV series, residuals under the three fair-IV
conventions, batched OU fits (exact, noise-aware, spread covariate) and the event table."""

from __future__ import annotations

import math

import jax
import numpy as np

from jaxvol import ou
from jaxvol.divergence.events import aligned_mean, events, hysteresis, standardise
from jaxvol.divergence.fair import MODELS, residuals, spot_vol_beta
from jaxvol.divergence.ticks import validate
from jaxvol.status import status_names

__all__ = ["analyse", "iv_series"]


def iv_series(table, instrument, tenor="ATM"):
    """Spot and IV ticks of one instrument (rows flagged by ``time_flag`` excluded from the
    arrays, counted in the result): dict of numpy arrays with mids, spreads and quote ages
    (the table's ``quote_age`` column where it has one, as IV rows built from option quotes
    by :func:`jaxvol.divergence.iv_rows` do; else the time since the previous IV tick)."""
    rows = table[(table["instrument"] == instrument) & (table["time_flag"] == 0)]
    spot = rows[rows["kind"] == "spot"]
    iv = rows[(rows["kind"] == "iv") & (rows["tenor"] == tenor)]
    t_iv = iv["time"].to_numpy(np.float64)
    if "quote_age" in iv.columns and iv["quote_age"].notna().all():
        age = iv["quote_age"].to_numpy(np.float64)  # e.g. from option_iv_series / iv_rows
    else:
        age = np.diff(t_iv, prepend=t_iv[:1]) if t_iv.size else t_iv
    return dict(t_spot=spot["time"].to_numpy(np.float64),
                spot=0.5 * (spot["bid"] + spot["ask"]).to_numpy(np.float64),
                t_iv=t_iv, iv=0.5 * (iv["bid"] + iv["ask"]).to_numpy(np.float64),
                spread=(iv["ask"] - iv["bid"]).to_numpy(np.float64),
                quote_age=age)


def _pad(arrays, fill=0.0, bucket=1024, series_bucket=32):
    """[series, ticks] padded to multiples of ``bucket`` ticks and ``series_bucket`` series
    (padded rows are all masked: TOO_FEW_POINTS lanes), so the OU fits compile once per
    bucket and share their programs with other callers of the same bucket."""
    n = -(-max(a.size for a in arrays) // bucket) * bucket
    rows = -(-len(arrays) // series_bucket) * series_bucket
    out = np.full((rows, n), fill)
    mask = np.zeros((rows, n), bool)
    for i, a in enumerate(arrays):
        out[i, :a.size] = a
        mask[i, :a.size] = True
    return out, mask


def _rows(result, count):
    """The first ``count`` series of an OUFit (the padded rows dropped)."""
    return jax.tree_util.tree_map(lambda a: a[:count], result)


def _fit_table(names, result, label):
    import pandas as pd

    status = np.asarray(result.status)
    return pd.DataFrame(dict(
        instrument=names, fit=label, lam=np.asarray(result.lam),
        half_life=np.asarray(result.half_life), lam_corrected=np.asarray(result.lam_corrected),
        lam_low=np.asarray(result.lam_low), lam_high=np.asarray(result.lam_high),
        mu=np.asarray(result.mu), eta=np.asarray(result.eta),
        noise_variance=np.asarray(result.noise_variance),
        spread_coefficient=np.asarray(result.beta)[:, 1] if result.beta.shape[1] > 1
        else np.nan, points=np.asarray(result.points),
        lam_status=status, lam_status_name=status_names(status, ou.OUStatus)))


def _lead_lag(names, data, max_lag: float = 10.0, resolution: float = 0.25):
    """HRY contrast of log spot (x) against the ATM IV (y) on -max_lag..max_lag (positive
    lag = spot leads), through jaxvol.leadlag.contrast."""
    import pandas as pd
    from jaxvol import leadlag

    lags = np.arange(-max_lag, max_lag + 0.5 * resolution, resolution)
    rows = []
    for name in names:
        s = data[name]
        c = leadlag.contrast(s["t_spot"], np.log(s["spot"]), s["t_iv"], s["iv"], lags)
        rows.append(pd.DataFrame(dict(instrument=name, lag=lags,
                                      correlation=np.asarray(c.correlation))))
    return pd.concat(rows, ignore_index=True)


def analyse(table, *, skew: float = -0.4, enter: float = 3.0, exit: float = 1.0,
            progress=print):
    """Run the pipeline; returns dict of DataFrames ``series``, ``fits``, ``events`` and
    ``curves`` (event-aligned mean D against the OU decay, lam by spread bucket)."""
    import pandas as pd

    table = validate(table)
    flagged = int((table["time_flag"] != 0).sum())
    if flagged:
        progress(f"{flagged} rows with duplicate or decreasing timestamps flagged (time_flag)")
    names = sorted(table["instrument"].unique())
    data, frames = {}, []
    for name in names:
        s = iv_series(table, name)
        res = residuals(s["t_spot"], s["spot"], s["t_iv"], s["iv"], skew=skew)
        s["beta"] = spot_vol_beta(s["t_spot"], s["spot"], s["t_iv"], s["iv"])
        s.update({f"d_{m}": np.asarray(res[m].d) for m in MODELS})
        s["spot_aligned"] = np.asarray(res["ssr"].spot)
        data[name] = s
    progress(f"residuals for {len(names)} instruments under {', '.join(MODELS)}")
    ok = {n: np.isfinite(data[n]["d_ssr"]) for n in names}
    times, mask = _pad([data[n]["t_iv"][ok[n]] for n in names])
    d, _ = _pad([data[n]["d_ssr"][ok[n]] for n in names])
    spread, _ = _pad([data[n]["spread"][ok[n]] for n in names], 1.0)
    exact = ou.fit(times, d, mask=mask)
    # second pass: the events' own kicks inflate eta (and so shrink z); refit with the ticks
    # inside first-pass events masked, the usual robust two-step
    quiet = mask.copy()
    for i, name in enumerate(names):
        lam, mu, eta = (float(np.asarray(a)[i]) for a in (exact.lam, exact.mu, exact.eta))
        z = np.asarray(standardise(d[i], lam, mu, eta))
        state = np.asarray(hysteresis(np.where(mask[i], z, 0.0), enter=enter, exit=exit))
        quiet[i] &= state == 0
    exact = _rows(ou.fit(times, d, mask=quiet), len(names))
    progress("OU fit on quiet ticks (events of a first pass masked)")
    noisy = _rows(ou.fit(times, d, mask=quiet, noise_variance="estimate"), len(names))
    med = np.ones((spread.shape[0], 1))
    med[:len(names), 0] = [np.median(data[n]["spread"]) for n in names]
    z_spread = np.log(spread / med)
    covar = _rows(ou.fit(times, d, mask=quiet, covariates=z_spread[..., None]), len(names))
    progress("OU fits: exact, noise-aware (Kalman), spread covariate")
    fits = pd.concat([_fit_table(names, exact, "exact"), _fit_table(names, noisy, "kalman"),
                      _fit_table(names, covar, "spread_covariate")], ignore_index=True)
    tables, curves = [], []
    horizon = np.linspace(0.0, 15.0, 61)
    for i, name in enumerate(names):
        s = data[name]
        keep = ok[name]
        lam, mu, eta = (float(np.asarray(a)[i]) for a in (exact.lam, exact.mu, exact.eta))
        ev = events(s["t_iv"][keep], s["d_ssr"][keep], lam=lam, mu=mu, eta=eta, enter=enter,
                    exit=exit, spread=s["spread"][keep], quote_age=s["quote_age"][keep],
                    t_spot=s["t_spot"], spot=s["spot"], series=name)
        tables.append(ev)
        z = np.full(s["t_iv"].size, np.nan)
        z[keep] = np.asarray(standardise(s["d_ssr"][keep], lam, mu, eta))
        s["z"] = z
        s["state"] = np.asarray(hysteresis(np.nan_to_num(z), enter=enter, exit=exit))
        mean_path = aligned_mean(s["t_iv"][keep], s["d_ssr"][keep], ev["peak"].to_numpy(),
                                 horizon, mu=mu)
        curves.append(pd.DataFrame(dict(instrument=name, horizon=horizon,
                                        aligned_mean=mean_path,
                                        ou_decay=np.exp(-lam * horizon))))
        frames.append(pd.DataFrame(dict(
            instrument=name, time=s["t_iv"], iv=s["iv"], spot=s["spot_aligned"],
            spread=s["spread"], quote_age=s["quote_age"], z=z, state=s["state"],
            **{f"d_{m}": s[f"d_{m}"] for m in MODELS})))
    ev = pd.concat(tables, ignore_index=True)
    progress(f"{len(ev)} events")
    contrast = _lead_lag(names, data)
    progress("lead-lag contrast of log spot against ATM IV")
    buckets = []
    for i, name in enumerate(names):
        b = np.asarray(covar.beta)[i]
        for q, label in ((0.5, "tight"), (1.0, "median"), (3.0, "wide"), (5.0, "blow-out")):
            buckets.append(dict(instrument=name, bucket=label, spread_ratio=q,
                                lam=math.exp(b[0] + b[1] * math.log(q)),
                                half_life=math.log(2) / math.exp(b[0] + b[1] * math.log(q))))
    return dict(series=pd.concat(frames, ignore_index=True), fits=fits, events=ev,
                contrast=contrast,
                curves=pd.concat(curves, ignore_index=True),
                spread_buckets=pd.DataFrame(buckets), data=data, flagged=flagged)
