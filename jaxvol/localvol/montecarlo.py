"""Local-volatility Monte Carlo on the engine of :mod:`jaxvol.mc`.

Scheme: log-Euler in the log forward moneyness k_t = ln(S_t / F(t)) (flat continuous rate and
dividend yield, F(t) = S_0 e^{(r - q) t}):

    k_{i+1} = k_i - sigma_i^2 dt_i / 2 + sigma_i sqrt(dt_i) Z_i,
    sigma_i = sigma_L(k_i, t_i + dt_i / 2),

so E[e^{k_{i+1}} | k_i] = e^{k_i} exactly: the discrete forward is a martingale (no drift bias),
and e^{k_T} (known mean 1) is the control variate of every expiry. The time grid is ``steps``
uniform steps to the last expiry with every option expiry inserted as a grid point.

Local vol is evaluated either

* ``method="grid"`` (default): tabulated once per run on a uniform k grid of ``grid_points``
  nodes over +-``grid_width`` sqrt(w(0, T_max)) at every step's mid time, then interpolated
  linearly in k along each path (flat beyond the grid). One Gatheral evaluation per node and
  step instead of one per path and step (on the SSVI surface of ``scripts/bench_localvol.py
  mc``: 3.5e6 vs 1.8e6 path-steps/s for "exact", under a load average of 20; the gap grows with
  the cost of ``w``), at an interpolation error of order (h^2/8) max |sigma''| (h the node
  spacing), far below the Monte Carlo error at the default 513 nodes;
* ``method="exact"``: Gatheral's formula by autodiff at every path and step (the reference).

Where local vol is undefined or extreme the :class:`~jaxvol.localvol.SimulationPolicy` applies
(clip to [floor, cap]; undefined points take the implied vol sqrt(w/t) there);
:func:`tabulate` returns the grid with its per-node status so the touched nodes are visible.

Random numbers are the engine's (``jaxvol.mc.keys``: fold_in(fold_in(key, lane), block), then
the step), so a result is bitwise the same for any chunk size; antithetic pairs and the
martingale control variate are on by default. Discretisation bias: first order in dt (Euler);
measured in ``tests/test_localvol_mc.py`` and ``docs/benchmarks.md``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvol._dtypes import as_bool, float_dtype
from jaxvol.localvol.gatheral import (SimulationPolicy, _local_vol_kernel,
                                      apply_policy)
from jaxvol.mc import engine, estimators
from jaxvol.mc.estimators import MCResult, MCStatus
from jaxvol.mc.keys import key_parts, wrap_key

__all__ = ["LocalVolGrid", "european_mc", "tabulate", "time_grid", "METHODS"]

METHODS = ("grid", "exact")
DEFAULT_POLICY = SimulationPolicy()


class LocalVolGrid(NamedTuple):
    """Local vol tabulated for simulation: ``vol`` [steps, nodes] at the mid times ``t_mid``
    [steps] of the time grid and the uniform nodes ``k`` [nodes]; ``status`` [steps, nodes]
    (LVStatus: OK, or FLOORED / CAPPED / REPLACED by the policy)."""

    vol: jax.Array
    status: jax.Array
    t_mid: jax.Array
    k: jax.Array


def time_grid(expiries, steps: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """(times [n + 1], observe_steps): ``steps`` uniform steps to max(expiries) with each
    expiry inserted; observe_steps are the 1-based step numbers ending at each sorted unique
    expiry."""
    expiries = np.unique(np.asarray(expiries, float))
    base = np.linspace(0.0, expiries[-1], int(steps) + 1)
    times = np.unique(np.concatenate([base, expiries]))
    keep = np.concatenate([[True], np.diff(times) > 1e-10 * expiries[-1]])
    times = times[keep]
    index = np.searchsorted(times, expiries - 1e-10 * expiries[-1])
    times[index] = expiries  # exact expiry times
    return times, tuple(int(i) for i in index)


def _grid_nodes(w, t_max, grid_points, grid_width, dtype):
    atm = jnp.sqrt(jnp.maximum(w(jnp.zeros((), dtype), t_max), 1e-8))
    half = grid_width * atm + 0.05
    return jnp.linspace(-half, half, grid_points, dtype=dtype)


def _policy_vol(w, k, t, policy):
    vol, status = _local_vol_kernel(w, k, t)
    implied = jnp.sqrt(jnp.maximum(w(k, t), 0.0) / t)
    return apply_policy(vol, status, implied, policy)


def _tabulate(w, times, grid_points, grid_width, policy, dtype):
    t_mid = 0.5 * (times[1:] + times[:-1])
    nodes = _grid_nodes(w, times[-1], grid_points, grid_width, dtype)
    one_time = jax.vmap(lambda k, t: _policy_vol(w, k, t, policy), in_axes=(0, None))
    vol, status = jax.lax.map(lambda t: one_time(nodes, t), t_mid)
    return LocalVolGrid(vol, status, t_mid, nodes)


def interpolate_nodes(values, nodes, k):
    """Linear interpolation of values[nodes] at k on a uniform grid (flat beyond it)."""
    h = nodes[1] - nodes[0]
    u = (k - nodes[0]) / h
    j = jnp.clip(jnp.floor(u), 0, nodes.shape[0] - 2).astype(jnp.int32)
    frac = jnp.clip(u - j.astype(u.dtype), 0.0, 1.0)
    return values[j] + frac * (values[j + 1] - values[j])


def _lv_model(w, times, method, grid_points, grid_width, policy, dtype):
    """sigma(k[n], i): local vol along the paths at step i."""
    if method == "grid":
        grid = _tabulate(w, times, grid_points, grid_width, policy, dtype)
        return lambda k, i: interpolate_nodes(grid.vol[i], grid.k, k)
    t_mid = 0.5 * (times[1:] + times[:-1])
    point = jax.vmap(lambda k, t: _policy_vol(w, k, t, policy)[0], in_axes=(0, None))
    return lambda k, i: point(k, t_mid[i])


def _simulation(sigma, times, dtype):
    def init(n):
        return jnp.zeros(n, dtype)

    def step(k, z, extra, i):
        dt = times[i + 1] - times[i]
        vol = sigma(k, i)
        return k - 0.5 * vol * vol * dt + vol * jnp.sqrt(dt) * z[:, 0]

    return init, step, lambda k: k


def _european_core(w, data, strike, is_call, option_obs, option_expiry, times, spot, rate, div,
                   *, impl, config, observe_steps, method, grid_points, grid_width, policy,
                   control, dtype):
    key = wrap_key(data, impl)
    sigma = _lv_model(w, times, method, grid_points, grid_width, policy, dtype)
    init, step, observe = _simulation(sigma, times, dtype)
    forward = spot * jnp.exp((rate - div) * option_expiry)
    discount = jnp.exp(-rate * option_expiry)
    ok = jnp.isfinite(strike) & (strike > 0) & (option_obs >= 0)
    safe_strike = jnp.where(ok, strike, forward)
    obs = jnp.maximum(option_obs, 0)

    def summarize(observed, state, blocks):
        k_t = observed[obs]                       # [options, n]
        s_t = forward[:, None] * jnp.exp(k_t)
        payoff = jnp.where(is_call[:, None], s_t - safe_strike[:, None],
                           safe_strike[:, None] - s_t)
        values = (discount[:, None] * jnp.maximum(payoff, 0.0)).T
        controls = jnp.exp(observed).T if control else None
        return estimators.path_statistics(values, controls, blocks, config.antithetic)

    sums = engine.lane_sums(key, jnp.int32(0), init=init, step=step, observe=observe,
                            summarize=summarize, observe_steps=observe_steps, noise=1,
                            dtype=dtype, config=config)
    means = jnp.ones(len(observe_steps), dtype) if control else None
    result = estimators.estimate(sums, config.total_paths, config.antithetic, means)
    status = jnp.where(ok, result.status, int(MCStatus.BAD_INPUT)).astype(jnp.int32)
    nan = lambda x: jnp.where(ok, x, jnp.nan)  # noqa: E731
    return MCResult(nan(result.price), nan(result.stderr), nan(result.stderr_plain),
                    result.paths, status)


_STATIC = ("impl", "config", "observe_steps", "method", "grid_points", "grid_width", "policy",
           "control", "dtype")
_core_traced = jax.jit(_european_core, static_argnames=_STATIC)
_core_static = jax.jit(_european_core, static_argnums=(0,), static_argnames=_STATIC)



def _check(paths, steps, method, grid_points, policy):
    for name, value, low in (("paths", paths, 2), ("steps", steps, 1),
                             ("grid_points", grid_points, 8)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(policy, SimulationPolicy):
        raise ValueError(f"policy must be a SimulationPolicy, got {policy!r}")


def _options(strike, expiry, is_call, dtype):
    """Host-side option arrays: the time grid needs concrete expiries."""
    expiry_host = np.asarray(expiry, float)
    shape = np.broadcast_shapes(np.shape(strike), expiry_host.shape, np.shape(is_call))
    expiry_host = np.broadcast_to(expiry_host, shape).reshape(-1)
    usable = np.isfinite(expiry_host) & (expiry_host > 0)
    if not usable.any():
        raise ValueError("european_mc: no option has a finite positive expiry")
    strike = jnp.broadcast_to(jnp.asarray(strike, dtype), shape).reshape(-1)
    is_call = jnp.broadcast_to(as_bool(is_call), shape).reshape(-1)
    return shape, strike, is_call, expiry_host, usable


def european_mc(key, w, strike, expiry, *, spot, rate, div, paths, steps, is_call=True,
                method="grid", grid_points=513, grid_width=8.0, policy=DEFAULT_POLICY,
                control=True, antithetic=True, block=1024, chunk=16) -> MCResult:
    """European options under the local vol of the surface ``w`` by Monte Carlo.

    Args:
      key: a JAX random key (first, as in every random function).
      w: total variance ``w(k, t)`` (JAX function) or a surface object (unbatched).
      strike, expiry, is_call: options (broadcast together; expiry in years, host values: they
        define the time grid). A bad strike or expiry gives NaN with BAD_INPUT in its row.
      spot, rate, div: spot and flat continuous rate / dividend yield.
      paths, steps: paths (rounded up to a multiple of ``block``) and uniform time steps to the
        last expiry (each expiry is added to the grid).
      method: "grid" (tabulated local vol, default) or "exact" (autodiff at every path-step).
      policy: :class:`~jaxvol.localvol.SimulationPolicy` (floor, cap, undefined points).
      control: the martingale e^{k_T} as control variate per expiry; antithetic pairs.

    Returns :class:`jaxvol.mc.MCResult` (``price``, ``stderr``, ``stderr_plain``, ``paths``,
    ``status``) in the options' broadcast shape. Reproducible: same key, same bits for any
    ``chunk``.
    """
    _check(paths, steps, method, grid_points, policy)
    dtype = jnp.dtype(float_dtype(strike, spot, rate, div))
    shape, strike, is_call, expiry_host, usable = _options(strike, expiry, is_call, dtype)
    times, observe_steps = time_grid(expiry_host[usable], steps)
    unique = np.unique(expiry_host[usable])
    option_obs = np.where(usable, np.searchsorted(unique, np.where(usable, expiry_host, 0.0)), -1)
    option_expiry = np.where(usable, expiry_host, 1.0)
    config = engine.MCConfig(paths=int(paths), steps=len(times) - 1, block=block, chunk=chunk,
                             antithetic=antithetic)
    data, impl = key_parts(key)
    core = _core_traced if hasattr(w, "tree_flatten") else _core_static
    if not callable(w):
        raise ValueError(f"w must be a JAX function w(k, t) or a surface object, got {type(w)!r}")
    result = core(w, data, strike, is_call, jnp.asarray(option_obs, jnp.int32),
                  jnp.asarray(option_expiry, dtype), jnp.asarray(times, dtype),
                  jnp.asarray(spot, dtype), jnp.asarray(rate, dtype),
                  jnp.asarray(div, dtype), impl=impl, config=config,
                  observe_steps=observe_steps, method=method,
                  grid_points=int(grid_points), grid_width=float(grid_width),
                  policy=policy, control=bool(control), dtype=dtype)
    return jax.tree.map(lambda x: x.reshape(shape), result)


@functools.partial(jax.jit, static_argnames=("grid_points", "grid_width", "policy", "dtype"))
def _tabulate_traced(w, times, *, grid_points, grid_width, policy, dtype):
    return _tabulate(w, times, grid_points, grid_width, policy, dtype)


@functools.partial(jax.jit, static_argnums=(0,),
                   static_argnames=("grid_points", "grid_width", "policy", "dtype"))
def _tabulate_static(w, times, *, grid_points, grid_width, policy, dtype):
    return _tabulate(w, times, grid_points, grid_width, policy, dtype)


def tabulate(w, times, *, grid_points=513, grid_width=8.0, policy=DEFAULT_POLICY) -> LocalVolGrid:
    """The local-vol grid a ``method="grid"`` simulation on the time grid ``times`` uses."""
    times = jnp.asarray(times)
    dtype = jnp.dtype(float_dtype(times))
    fn = _tabulate_traced if hasattr(w, "tree_flatten") else _tabulate_static
    return fn(w, times.astype(dtype), grid_points=int(grid_points),
              grid_width=float(grid_width), policy=policy, dtype=dtype)



