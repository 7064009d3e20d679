"""SVI stage: :func:`jaxvol.svi.fit` per slice, sharded over the local devices.

On a warm night with ``svi.warm_start`` the slices that have yesterday's parameters start from
them (``svi.fit(initial=...)``), the others from svi.fit's own quasi-explicit start; by default
every slice starts from svi.fit's own start (measured better: warm starts converged on 27% of
small noisy slices vs 55% cold, median RMSE 12% worse) and yesterday's parameters serve only as
the fallback of failed slices.

With ``svi.prior = "ssvi"`` (the default) every slice is regularised towards its SSVI smile (the
SSVI stage runs first): ``svi.fit(prior=...)`` (measured on the synthetic market, issue 20 in
docs/benchmarks.md: 88% CONVERGED against 37%, closer to the truth inside and beyond the
quotes in every expiry bucket).
"""

from __future__ import annotations

import numpy as np

from jaxvol.calibrate import LMConfig
from jaxvol.jobs import slices as slices_mod
from jaxvol.jobs.errors import StageUnavailable
from jaxvol.jobs.stages.common import (Chunk, JobEnv, ensure_batch, fallback, previous_slices,
                                       rmse, sharded, warm_rows)
from jaxvol.smile import svi as svi_model

__all__ = ["SVI_PARAMS", "ssvi_prior", "svi", "svi_total_variance"]

SVI_PARAMS = ["svi_a", "svi_b", "svi_rho", "svi_m", "svi_sigma"]


def svi_total_variance(k: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Raw SVI total variance in numpy (params [..., 5] broadcast against k); the formula of
    jaxvol.svi.total_variance, evaluated on the host (no compile per chunk shape)."""
    a, b, rho, m, sigma = np.moveaxis(np.asarray(params, np.float64), -1, 0)
    x = k - m
    return a + b * (rho * x + np.sqrt(x * x + sigma * sigma))


def ssvi_prior(chunk: Chunk, env: JobEnv) -> np.ndarray | None:
    """[slices, 5] raw SVI parameters of each slice's SSVI smile (the SSVI stage's surface of
    its underlying at its expiry: ``ssvi_theta`` with the underlying's rho and phi), NaN where
    the SSVI stage gave none; None when ``svi.prior`` is "none" or the SSVI stage did not run
    (then every slice gets the plain fit)."""
    if env.config["svi"]["prior"] == "none":
        return None
    table, under = chunk.slices, chunk.underlyings
    if "ssvi_theta" not in table or under is None or "ssvi_rho" not in under:
        return None
    u = under.set_index("underlying").reindex(table["underlying"])
    theta = table["ssvi_theta"].to_numpy(float)
    phi_params = [u[c].to_numpy(float) for c in sorted(c for c in u.columns
                                                       if c.startswith("ssvi_phi_"))]
    rho = u["ssvi_rho"].to_numpy(float)
    with np.errstate(all="ignore"):
        if env.config["ssvi"]["phi"] == "power_law":
            eta, gamma = phi_params
            phi = eta / (theta ** gamma * (1.0 + theta) ** (1.0 - gamma))
        else:
            x = phi_params[0] * theta
            phi = (x - 1.0 + np.exp(-x)) / (x * x)  # ssvi.heston_phi (no series: a prior)
        raw = np.stack([theta / 2 * (1 - rho ** 2), theta * phi / 2, rho, -rho / phi,
                        np.sqrt(1 - rho ** 2) / phi], axis=1)
    return np.where(np.all(np.isfinite(raw), axis=1, keepdims=True) & (theta > 0)[:, None],
                    raw, np.nan)


def _fit(env: JobEnv, arrays: list, initial: np.ndarray | None, prior: np.ndarray | None):
    """svi.fit over the lanes of ``arrays`` (k, w, weight, mask, then the one-sided quotes' k,
    lower and upper total variance; from ``initial`` when given, regularised towards ``prior`` when
    given), sharded."""
    settings = env.config["svi"]
    options = dict(no_arbitrage=settings["no_arbitrage"],
                   config=LMConfig(max_iterations=settings["max_iterations"]))
    if prior is not None:
        options["prior_weight"] = settings["prior_weight"]
    key = "svi-cold" if prior is None else "svi-prior"
    names = []
    if initial is not None:
        names, arrays = ["initial"], arrays + [initial]
        key = "svi-warm" if prior is None else "svi-warm-prior"
    if prior is not None:
        names, arrays = names + ["prior"], arrays + [prior]

    def fn(k, w, weight, mask, one_k, one_lower, one_upper, *extra):
        return svi_model.fit(k, w, weights=weight, mask=mask,
                             one_sided=(one_k, one_lower, one_upper),
                             **dict(zip(names, extra)), **options)

    return sharded(env, fn, arrays, key=key, sections=("svi",))


def _fits(env: JobEnv, arrays: list, previous: np.ndarray | None, prior: np.ndarray | None):
    """(params, status, iterations) per slice: cold fits, and warm ones where enabled."""
    warm = warm_rows(previous) if env.config["svi"]["warm_start"] else None
    if warm is None or not warm.any():
        fit = _fit(env, arrays, None, prior)
        return np.asarray(fit.params), np.asarray(fit.status), np.asarray(fit.iterations)
    params = np.full((len(warm), len(SVI_PARAMS)), np.nan)
    status = np.zeros(len(warm), np.int32)
    iterations = np.zeros(len(warm), np.int32)
    for lanes, initial in ((~warm, None), (warm, previous[warm])):
        if lanes.any():
            fit = _fit(env, [a[lanes] for a in arrays], initial,
                       None if prior is None else prior[lanes])
            params[lanes], status[lanes] = fit.params, fit.status
            iterations[lanes] = fit.iterations
    return params, status, iterations


def svi(chunk: Chunk, env: JobEnv) -> None:
    if not env.config["svi"]["enabled"]:
        raise StageUnavailable("disabled by svi.enabled = false")
    batch = ensure_batch(chunk, env)
    previous = previous_slices(env, batch.table, SVI_PARAMS)
    arrays = [batch.log_moneyness, batch.total_variance, batch.weight, batch.mask,
              batch.one_sided_k, batch.one_sided_lower, batch.one_sided_upper]
    params, status, iterations = _fits(env, arrays, previous, ssvi_prior(chunk, env))
    params, used_previous = fallback(status, params, previous)
    expiry = batch.table["expiry"].to_numpy()[:, None]
    model = svi_total_variance(batch.log_moneyness, params[:, None, :])
    table = chunk.slices
    table[SVI_PARAMS] = params
    table["svi_status"] = status.astype(np.int32)
    table["svi_iterations"] = iterations.astype(np.int32)
    table["svi_previous"] = used_previous
    table["svi_rmse"] = rmse(np.sqrt(np.maximum(model, 0.0) / expiry), batch)
    _row_model_vol(chunk, params)


def _row_model_vol(chunk: Chunk, params: np.ndarray) -> None:
    """``iv_svi``: the fitted SVI vol at every row's strike (NaN where the slice has none)."""
    rows = chunk.rows
    slice_id = slices_mod.slice_index(rows)
    p = params[slice_id]
    forward = rows["forward"].to_numpy()
    ok = np.isfinite(forward) & (forward > 0) & np.all(np.isfinite(p), axis=1)
    k = np.log(rows["strike"].to_numpy() / np.where(ok, forward, 1.0))
    w = svi_total_variance(np.where(ok, k, 0.0), np.where(ok[:, None], p, 0.1))
    expiry = rows["expiry"].to_numpy()
    ok &= np.isfinite(expiry) & (expiry > 0)  # a bad expiry cell: NaN, not a sqrt warning
    variance = np.maximum(w, 0.0) / np.where(ok, expiry, 1.0)
    rows["iv_svi"] = np.where(ok & (w > 0), np.sqrt(variance), np.nan)
