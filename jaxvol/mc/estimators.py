"""Monte Carlo estimators: per-path statistics, their block sums, price and standard errors.

A payoff gives, per path, ``values[n, k]`` (k quantities priced together: strikes, payoffs)
and optionally ``controls[n, m]`` (control variates with known means). :func:`path_statistics`
turns them into the statistics the engine sums (:func:`jaxvol.mc.engine.lane_sums`):

- with antithetic variates the sample is the pair mean y = (x_j + x_{j + block/2}) / 2;
- ``sum_y``, ``sum_yy`` over samples; ``sum_xx`` over single paths (for the plain error);
- ``sum_c``, ``sum_cc``, ``sum_cy`` for the controls (m may be 0).

:func:`estimate` turns the sums into an :class:`MCResult`: ``price`` (the control-variate
estimator when controls are given: y - beta (c - E c), beta the least-squares coefficient of
the same paths, whose bias is O(1/paths)), ``stderr`` (of the estimator actually reported: pairs
for antithetic, regression residuals for controls) and ``stderr_plain`` (what independent
paths without any reduction would give: the single-path standard deviation / sqrt(paths)).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from jaxvol.status import domain_status

__all__ = ["MCResult", "MCStatus", "path_statistics", "estimate"]

MCStatus = domain_status("MCStatus", "mc", {
    "OK": 0, "BAD_INPUT": 1, "NON_FINITE_INPUT": 2, "NON_FINITE": 3,
}, doc="Per-lane outcome of a Monte Carlo estimate (shared codes of jaxvol.status).")


class MCResult(NamedTuple):
    """A Monte Carlo estimate per lane (and per priced quantity).

    price: the estimate (NaN where the lane is bad); stderr: its standard error (after the
    variance reductions used); stderr_plain: the standard error of plain Monte Carlo with the
    same number of independent paths; paths: paths simulated per lane (int32); status:
    :class:`MCStatus` code (int32)."""

    price: jnp.ndarray
    stderr: jnp.ndarray
    stderr_plain: jnp.ndarray
    paths: jnp.ndarray
    status: jnp.ndarray


def path_statistics(values, controls, blocks: int, antithetic: bool):
    """Per-sample statistics with leading axes [blocks, samples per block] (see module doc).

    values[n, k], controls[n, m] (or None) with n = blocks x block paths, antithetic partners at
    j and j + block/2 inside each block."""
    k = values.shape[-1]
    x = values.reshape(blocks, -1, k)
    stats = {"sum_xx": x * x}
    y = 0.5 * (x[:, : x.shape[1] // 2] + x[:, x.shape[1] // 2:]) if antithetic else x
    stats.update(sum_y=y, sum_yy=y * y)
    if controls is not None:
        c = controls.reshape(blocks, -1, controls.shape[-1])
        c = 0.5 * (c[:, : c.shape[1] // 2] + c[:, c.shape[1] // 2:]) if antithetic else c
        stats.update(sum_c=c, sum_cc=c[..., :, None] * c[..., None, :],
                     sum_cy=c[..., :, None] * y[..., None, :])
    return stats


def estimate(sums, paths: int, antithetic: bool, control_means=None, ok=None):
    """An :class:`MCResult` from the summed statistics of :func:`path_statistics`.

    ``paths`` the total paths of the lane; ``control_means[m]`` the known means of the controls;
    ``ok`` a per-lane bool (False: the lane's inputs were bad, result NaN / BAD_INPUT)."""
    samples = paths // 2 if antithetic else paths
    mean_y = sums["sum_y"] / samples
    var_y = (sums["sum_yy"] - samples * mean_y * mean_y) / (samples - 1)
    mean_x = mean_y
    var_x = (sums["sum_xx"] - paths * mean_x * mean_x) / (paths - 1)
    price, var = mean_y, var_y
    if control_means is not None and "sum_c" in sums:
        mean_c = sums["sum_c"] / samples
        cov_cc = (sums["sum_cc"] - samples * mean_c[:, None] * mean_c[None, :]) / (samples - 1)
        cov_cy = (sums["sum_cy"] - samples * mean_c[:, None] * mean_y[None, :]) / (samples - 1)
        m = mean_c.shape[0]
        scale = jnp.sqrt(jnp.maximum(jnp.diagonal(cov_cc), jnp.finfo(cov_cc.dtype).tiny))
        corr = cov_cc / (scale[:, None] * scale[None, :])
        ridge = corr + jnp.eye(m, dtype=corr.dtype) * (64 * jnp.finfo(corr.dtype).eps)
        beta = jnp.linalg.solve(ridge, cov_cy / scale[:, None]) / scale[:, None]
        price = mean_y - jnp.sum(beta * (mean_c - control_means)[:, None], axis=0)
        explained = jnp.sum(beta * cov_cy, axis=0)
        var = jnp.maximum(var_y - explained, 0.0) * (samples - 1) / max(samples - m - 1, 1)
    stderr = jnp.sqrt(jnp.maximum(var, 0.0) / samples)
    stderr_plain = jnp.sqrt(jnp.maximum(var_x, 0.0) / paths)
    finite = jnp.isfinite(price) & jnp.isfinite(stderr)
    status = jnp.where(finite, int(MCStatus.OK), int(MCStatus.NON_FINITE))
    if ok is not None:
        status = jnp.where(ok, status, int(MCStatus.BAD_INPUT))
        finite = finite & ok
    nan = jnp.nan
    return MCResult(jnp.where(finite, price, nan), jnp.where(finite, stderr, nan),
                    jnp.where(finite, stderr_plain, nan),
                    jnp.full(status.shape, paths, jnp.int32), status.astype(jnp.int32))
