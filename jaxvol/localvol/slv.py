"""Heston stochastic-local volatility: leverage by the particle method, vanillas by Monte Carlo.

Model (log forward moneyness k = ln(S/F(t)), flat continuous rate and dividend yield):

    dk = -L^2(k, t) v/2 dt + L(k, t) sqrt(v) dW1,
    dv = kappa (theta - v) dt + eta sigma sqrt(v) dW2,      d<W1, W2> = rho dt,

eta the mixing factor on the vol of variance (eta = 0: pure local vol, eta = 1: full Heston
vol of variance). Gyongy's theorem makes the model reprice the surface's vanillas when
L^2(k, t) = sigma_L^2(k, t) / E[v_t | k_t = k].

Calibration (Guyon & Henry-Labordere 2012, the particle method): all ``paths`` particles are
stepped together; at each step E[v | k] is estimated by kernel regression on a grid of ``bins``
nodes spanning mean(k) +- ``width`` std(k) (a hat kernel of one node spacing, i.e. cloud-in-
cell deposit of v and of the particle count onto the two nearest nodes, shrunk towards the
population mean by 0.01 pseudo-particle per node so that empty nodes are defined), the leverage
at the nodes is sigma_L(node, t_mid) / sqrt(E[v | node]) (capped at ``leverage_cap``), and the
particles move with L interpolated linearly between nodes (flat beyond). Variance: full-
truncation Euler; spot: log-Euler (so e^k is an exact discrete martingale). Gyongy holds for
the discrete scheme up to the regression and the Euler error, which is what the repricing
error measures.

Repricing: fresh, independent paths (another key lane) with the leverage table fixed, streamed
by :func:`jaxvol.mc.engine.lane_sums`; control variates are e^{k_T} (mean 1 exactly) and the
same-noise local-vol twin dk = -sigma_L^2/2 dt + sigma_L dW1 whose mean is the surface's Black
price (its own Euler bias carries over, with the coefficient of the regression: documented in
docs/benchmarks.md). Errors are reported in implied vol (and their Monte Carlo standard error).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvol._dtypes import as_bool, float_dtype
from jaxvol.black import black_price
from jaxvol.implied import implied_vol
from jaxvol.localvol.gatheral import LVStatus, _local_vol_kernel, apply_policy
from jaxvol.localvol.montecarlo import DEFAULT_POLICY, interpolate_nodes, time_grid
from jaxvol.mc import engine, estimators, keys
from jaxvol.mc.keys import key_parts, wrap_key

PSEUDO_PARTICLES = 0.01  # per node: defines empty nodes, biases a node of n particles by 1%/n

__all__ = ["HestonSLV", "SLVCalibration", "calibrate_slv", "slv_european_mc"]


class HestonSLV(NamedTuple):
    """Heston parameters of the SLV model (``mixing`` multiplies the vol of variance)."""

    v0: jax.Array
    kappa: jax.Array
    theta: jax.Array
    sigma: jax.Array
    rho: jax.Array
    mixing: jax.Array


class SLVCalibration(NamedTuple):
    """Result of :func:`calibrate_slv`.

    leverage [steps, bins]: L at the nodes ``k_nodes`` [steps, bins] (log forward moneyness) of
    each step of the time grid ``times`` [steps + 1] (the value used over step i); ``status``:
    OK when the leverage is finite and every vanilla reprices within max(``tolerance``, 3 MC
    standard errors) in implied vol, else REPRICING_ERROR (or NON_FINITE); ``loss``: mean
    absolute implied-vol error; ``iterations``: 1 (one particle pass); ``rmse``: RMS
    implied-vol error; ``local_vol`` [steps, bins] at the nodes; the vanillas' ``strike``,
    ``expiry``, SLV ``price`` and ``stderr``, ``implied_vol``, ``iv_error`` (SLV minus surface)
    and ``iv_stderr``; ``model`` the :class:`HestonSLV` parameters."""

    leverage: jax.Array
    status: jax.Array
    loss: jax.Array
    iterations: jax.Array
    rmse: jax.Array
    times: jax.Array
    k_nodes: jax.Array
    local_vol: jax.Array
    strike: jax.Array
    expiry: jax.Array
    price: jax.Array
    stderr: jax.Array
    implied_vol: jax.Array
    iv_error: jax.Array
    iv_stderr: jax.Array
    model: HestonSLV


# --------------------------------------------------------------------------- calibration
def _nodes(k, atm_std, bins, width):
    mean = jnp.mean(k)
    std = jnp.maximum(jnp.std(k), atm_std)
    return mean + width * std * jnp.linspace(-1.0, 1.0, bins, dtype=k.dtype)


def conditional_variance(k, v, nodes):
    """E[v | k] at uniform ``nodes`` by a hat kernel of one node spacing (cloud-in-cell),
    shrunk to the population mean by PSEUDO_PARTICLES per node."""
    h = nodes[1] - nodes[0]
    u = jnp.clip((k - nodes[0]) / h, 0.0, nodes.shape[0] - 1.0)
    j = jnp.clip(jnp.floor(u), 0, nodes.shape[0] - 2).astype(jnp.int32)
    frac = u - j.astype(u.dtype)
    weight = jnp.concatenate([1.0 - frac, frac])
    values = jnp.stack([weight, weight * jnp.concatenate([v, v])], axis=1)
    sums = jnp.zeros((nodes.shape[0], 2), nodes.dtype).at[jnp.concatenate([j, j + 1])].add(
        values)  # one scatter: (count, mass) per node
    return (sums[:, 1] + PSEUDO_PARTICLES * jnp.mean(v)) / (sums[:, 0] + PSEUDO_PARTICLES)


def _correlated(z, rho):
    return rho * z[:, 1] + jnp.sqrt(1.0 - rho * rho) * z[:, 0], z[:, 1]


def _heston_step(k, v, lev, z, model, dt):
    vp = jnp.maximum(v, 0.0)
    root = jnp.sqrt(vp * dt)
    z1, z2 = _correlated(z, model.rho)
    k_new = k - 0.5 * lev * lev * vp * dt + lev * root * z1
    v_new = v + model.kappa * (model.theta - vp) * dt + model.mixing * model.sigma * root * z2
    return k_new, v_new


def _lv_at(w, nodes, t, policy):
    def one(k):
        vol, status = _local_vol_kernel(w, k, t)
        implied = jnp.sqrt(jnp.maximum(w(k, t), 0.0) / t)
        return apply_policy(vol, status, implied, policy)[0]
    return jax.vmap(one)(nodes)


def _calibrate_pass(w, key, model, times, *, paths, block, bins, width, leverage_cap, policy,
                    dtype):
    blocks = paths // block
    block_keys = jax.vmap(lambda b: keys.block_key(key, jnp.int32(0), b))(
        jnp.arange(blocks, dtype=jnp.int32))
    atm_vol = jnp.sqrt(jnp.maximum(w(jnp.zeros((), dtype), times[-1]), 1e-8) / times[-1])

    def one_step(state, i):
        k, v = state
        t, dt = times[i], times[i + 1] - times[i]
        nodes = _nodes(k, atm_vol * jnp.sqrt(t + dt), bins, width)
        sigma_lv = _lv_at(w, nodes, t + 0.5 * dt, policy)
        expected = conditional_variance(k, jnp.maximum(v, 0.0), nodes)
        lev = jnp.minimum(sigma_lv / jnp.sqrt(jnp.maximum(expected, 1e-12)), leverage_cap)
        step_keys = jax.vmap(lambda b: keys.step_key(b, i))(block_keys)
        z = jax.vmap(lambda s: keys.block_normals(s, block, 2, dtype, True))(step_keys)
        k, v = _heston_step(k, v, interpolate_nodes(lev, nodes, k), z.reshape(paths, 2), model,
                            dt)
        return (k, v), (lev, nodes, sigma_lv)

    init = (jnp.zeros(paths, dtype), jnp.full(paths, model.v0, dtype))
    _, (lev, nodes, sigma_lv) = jax.lax.scan(one_step, init,
                                             jnp.arange(times.shape[0] - 1, dtype=jnp.int32))
    return lev, nodes, sigma_lv


# --------------------------------------------------------------------------- repricing
def _reprice(key, lane, model, times, lev, nodes, sigma_lv, strike, is_call, option_obs,
             option_expiry, spot, rate, div, surface_price, *, config, observe_steps, dtype):
    def init(n):
        return (jnp.zeros(n, dtype), jnp.full(n, model.v0, dtype), jnp.zeros(n, dtype))

    def step(state, z, extra, i):
        k, v, k_lv = state
        dt = times[i + 1] - times[i]
        k_new, v_new = _heston_step(k, v, interpolate_nodes(lev[i], nodes[i], k), z, model, dt)
        vol = interpolate_nodes(sigma_lv[i], nodes[i], k_lv)
        z1, _ = _correlated(z, model.rho)
        return k_new, v_new, k_lv - 0.5 * vol * vol * dt + vol * jnp.sqrt(dt) * z1

    forward = spot * jnp.exp((rate - div) * option_expiry)
    discount = jnp.exp(-rate * option_expiry)

    def payoff(k_t):
        s_t = forward[:, None] * jnp.exp(k_t)
        intrinsic = jnp.where(is_call[:, None], s_t - strike[:, None], strike[:, None] - s_t)
        return (discount[:, None] * jnp.maximum(intrinsic, 0.0)).T

    def summarize(observed, state, blocks):
        k_obs, lv_obs = observed
        controls = jnp.concatenate([payoff(lv_obs[option_obs]), jnp.exp(k_obs).T], axis=1)
        return estimators.path_statistics(payoff(k_obs[option_obs]), controls, blocks,
                                          config.antithetic)

    sums = engine.lane_sums(key, jnp.int32(lane), init=init, step=step,
                            observe=lambda s: (s[0], s[2]), summarize=summarize,
                            observe_steps=observe_steps, noise=2, dtype=dtype, config=config)
    means = jnp.concatenate([surface_price, jnp.ones(len(observe_steps), dtype)])
    return estimators.estimate(sums, config.total_paths, config.antithetic, means)


def _surface_prices(w, strike, is_call, option_expiry, spot, rate, div):
    forward = spot * jnp.exp((rate - div) * option_expiry)
    total = jax.vmap(w)(jnp.log(strike / forward), option_expiry)
    vol = jnp.sqrt(total / option_expiry)
    return black_price(forward, strike, option_expiry, vol, is_call,
                       discount=jnp.exp(-rate * option_expiry)), vol, forward


def _iv_errors(price, stderr, strike, is_call, option_expiry, forward, vol, rate):
    discount = jnp.exp(-rate * option_expiry)
    iv = implied_vol(price, forward, strike, option_expiry, is_call, discount=discount).vol
    d1 = (jnp.log(forward / strike) + 0.5 * vol * vol * option_expiry) / (vol * jnp.sqrt(
        option_expiry))
    vega = discount * forward * jnp.exp(-0.5 * d1 * d1) / jnp.sqrt(2 * jnp.pi) * jnp.sqrt(
        option_expiry)
    return iv, iv - vol, stderr / vega


def _calibrate_core(w, data, model, times, strike, is_call, option_obs, option_expiry, spot,
                    rate, div, tolerance, *, impl, paths, block, bins, width, leverage_cap,
                    policy, reprice_config, observe_steps, dtype):
    key = wrap_key(data, impl)
    lev, nodes, sigma_lv = _calibrate_pass(w, key, model, times, paths=paths, block=block,
                                           bins=bins, width=width, leverage_cap=leverage_cap,
                                           policy=policy, dtype=dtype)
    surface_price, vol, forward = _surface_prices(w, strike, is_call, option_expiry, spot, rate,
                                                  div)
    result = _reprice(key, 1, model, times, lev, nodes, sigma_lv, strike, is_call, option_obs,
                      option_expiry, spot, rate, div, surface_price, config=reprice_config,
                      observe_steps=observe_steps, dtype=dtype)
    iv, error, iv_se = _iv_errors(result.price, result.stderr, strike, is_call, option_expiry,
                                  forward, vol, rate)
    finite = jnp.all(jnp.isfinite(lev)) & jnp.all(jnp.isfinite(error))
    within = jnp.all(jnp.abs(error) <= jnp.maximum(tolerance, 3.0 * iv_se))
    status = jnp.where(~finite, LVStatus.NON_FINITE,
                       jnp.where(within, LVStatus.OK, LVStatus.REPRICING_ERROR)).astype(jnp.int32)
    loss = jnp.mean(jnp.abs(error))
    rmse = jnp.sqrt(jnp.mean(error * error))
    return SLVCalibration(lev, status, loss, jnp.ones((), jnp.int32), rmse, times, nodes,
                          sigma_lv, strike, option_expiry, result.price, result.stderr, iv,
                          error, iv_se, model)


_STATIC = ("impl", "paths", "block", "bins", "width", "leverage_cap", "policy",
           "reprice_config", "observe_steps", "dtype")
_calibrate_traced = jax.jit(_calibrate_core, static_argnames=_STATIC)
_calibrate_static = jax.jit(_calibrate_core, static_argnums=(0,), static_argnames=_STATIC)



def _check_model(v0, kappa, theta, sigma, rho, mixing):
    values = dict(v0=v0, kappa=kappa, theta=theta, sigma=sigma, rho=rho, mixing=mixing)
    bad = {n: x for n, x in values.items() if not np.isfinite(x)}
    if bad or v0 < 0 or kappa <= 0 or theta < 0 or sigma < 0 or not abs(rho) < 1 or mixing < 0:
        raise ValueError(f"calibrate_slv: Heston parameters out of their domain: {values}")


def calibrate_slv(key, w, strike, expiry, *, spot, rate, div, v0, kappa, theta, sigma, rho,
                  mixing=1.0, paths, steps, bins=128, width=4.0, leverage_cap=8.0,
                  reprice_paths=None, is_call=None, tolerance=5e-4, policy=DEFAULT_POLICY,
                  block=1024, chunk=16) -> SLVCalibration:
    """Calibrate the Heston-SLV leverage to the surface ``w`` by the particle method and
    reprice the vanillas (``strike``, ``expiry``: host arrays that also set the time grid).

    Args:
      key: JAX random key; w: total variance w(k, t) (function or unbatched surface object).
      spot, rate, div: spot, flat continuous rate and dividend yield.
      v0, kappa, theta, sigma, rho: Heston parameters (host scalars); mixing: eta on sigma.
      paths, steps, bins: particles (a multiple of ``block``), uniform time steps to the last
        expiry (expiries inserted), regression nodes per step; width: nodes span +- width
        standard deviations of the particles; leverage_cap: L is capped there.
      reprice_paths: independent repricing paths (default ``paths``); is_call: default
        out-of-the-money (puts below the forward, calls at or above); tolerance: implied-vol
        error (decimal, 5e-4 = 5 bp) below which a vanilla counts as repriced (3 MC standard
        errors if larger).

    Returns :class:`SLVCalibration`.
    """
    _check_model(v0, kappa, theta, sigma, rho, mixing)
    for name, value in (("paths", paths), ("steps", steps), ("bins", bins)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 4:
            raise ValueError(f"{name} must be an integer >= 4, got {value!r}")
    if paths % block:
        raise ValueError(f"paths must be a multiple of block={block}, got {paths}")
    if not callable(w):
        raise ValueError(f"w must be a JAX function w(k, t) or a surface object, got {type(w)!r}")
    dtype = jnp.dtype(float_dtype(strike, spot, rate, div))
    expiry_host = np.asarray(expiry, float)
    shape = np.broadcast_shapes(np.shape(strike), expiry_host.shape)
    expiry_host = np.broadcast_to(expiry_host, shape).reshape(-1)
    if not np.all(np.isfinite(expiry_host) & (expiry_host > 0)):
        raise ValueError(f"expiry must be finite and positive, got {expiry_host}")
    strike_host = np.broadcast_to(np.asarray(strike, float), shape).reshape(-1)
    if not np.all(np.isfinite(strike_host) & (strike_host > 0)):
        raise ValueError(f"strike must be finite and positive, got {strike_host}")
    forward = spot * np.exp((rate - div) * expiry_host)
    calls = (strike_host >= forward if is_call is None
             else np.broadcast_to(np.asarray(is_call) != 0, shape).reshape(-1))
    times, observe_steps = time_grid(expiry_host, steps)
    unique = np.unique(expiry_host)
    option_obs = np.searchsorted(unique, expiry_host)
    reprice = engine.MCConfig(paths=int(reprice_paths or paths), steps=len(times) - 1,
                              block=block, chunk=chunk)
    model = HestonSLV(*(jnp.asarray(x, dtype) for x in (v0, kappa, theta, sigma, rho, mixing)))
    data, impl = key_parts(key)
    core = _calibrate_traced if hasattr(w, "tree_flatten") else _calibrate_static
    return core(w, data, model, jnp.asarray(times, dtype), jnp.asarray(strike_host, dtype),
                jnp.asarray(calls), jnp.asarray(option_obs, jnp.int32),
                jnp.asarray(expiry_host, dtype), jnp.asarray(spot, dtype),
                jnp.asarray(rate, dtype), jnp.asarray(div, dtype),
                jnp.asarray(tolerance, dtype),
                impl=impl, paths=int(paths), block=int(block), bins=int(bins),
                width=float(width), leverage_cap=float(leverage_cap), policy=policy,
                reprice_config=reprice, observe_steps=observe_steps, dtype=dtype)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("config", "observe_steps",
                                                                   "dtype", "impl"))
def _price_static(w, data, calibration, strike, is_call, option_obs, option_expiry, spot, rate,
                  div, *, config, observe_steps, dtype, impl):
    return _price_core(w, data, calibration, strike, is_call, option_obs, option_expiry, spot,
                       rate, div, config=config, observe_steps=observe_steps, dtype=dtype,
                       impl=impl)


@functools.partial(jax.jit, static_argnames=("config", "observe_steps", "dtype", "impl"))
def _price_traced(w, data, calibration, strike, is_call, option_obs, option_expiry, spot, rate,
                  div, *, config, observe_steps, dtype, impl):
    return _price_core(w, data, calibration, strike, is_call, option_obs, option_expiry, spot,
                       rate, div, config=config, observe_steps=observe_steps, dtype=dtype,
                       impl=impl)


def _price_core(w, data, calibration, strike, is_call, option_obs, option_expiry, spot, rate,
                div, *, config, observe_steps, dtype, impl):
    key = wrap_key(data, impl)
    surface_price, _, _ = _surface_prices(w, strike, is_call, option_expiry, spot, rate, div)
    return _reprice(key, 2, calibration.model, calibration.times, calibration.leverage,
                    calibration.k_nodes, calibration.local_vol, strike, is_call, option_obs,
                    option_expiry, spot, rate, div, surface_price, config=config,
                    observe_steps=observe_steps, dtype=dtype)


def slv_european_mc(key, w, calibration: SLVCalibration, strike, expiry, *, spot, rate, div,
                    paths, is_call=True, block=1024, chunk=16):
    """European options under a calibrated SLV model (its time grid: ``expiry`` values must
    be points of ``calibration.times``), with the calibration's control variates. Returns
    :class:`jaxvol.mc.MCResult`."""
    times = np.asarray(calibration.times)
    expiry_host = np.asarray(expiry, float)
    shape = np.broadcast_shapes(np.shape(strike), expiry_host.shape, np.shape(is_call))
    expiry_host = np.broadcast_to(expiry_host, shape).reshape(-1)
    unique = np.unique(expiry_host)
    index = np.searchsorted(times, unique - 1e-12)
    if np.any(index >= len(times)) or np.any(np.abs(times[np.minimum(index, len(times) - 1)]
                                                    - unique) > 1e-12):
        raise ValueError(f"expiries {unique} are not all points of the calibration's time grid")
    dtype = calibration.leverage.dtype
    config = engine.MCConfig(paths=int(paths), steps=len(times) - 1, block=block, chunk=chunk)
    data, impl = key_parts(key)
    fn = _price_traced if hasattr(w, "tree_flatten") else _price_static
    result = fn(w, data, calibration, jnp.broadcast_to(jnp.asarray(strike, dtype),
                                                       shape).reshape(-1),
                jnp.broadcast_to(as_bool(is_call), shape).reshape(-1),
                jnp.asarray(np.searchsorted(unique, expiry_host), jnp.int32),
                jnp.asarray(expiry_host, dtype), jnp.asarray(spot, dtype),
                jnp.asarray(rate, dtype), jnp.asarray(div, dtype), config=config,
                observe_steps=tuple(int(i) for i in index), dtype=jnp.dtype(dtype), impl=impl)
    return jax.tree.map(lambda x: x.reshape(shape), result)
