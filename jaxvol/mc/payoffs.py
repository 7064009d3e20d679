"""Path payoffs: pure functions ``payoff(path, args) -> values[n, k]``, discounted to 0.

``path`` is a dict: ``spot`` and ``variance`` [obs, n] at the observation steps, ``times``
[obs] (years), ``discount`` [obs] (e^{-rate t} to each observation date), ``spot0`` and ``v0``
(scalars). ``args`` a dict of arrays (``strike[k]``, ``is_call[k]``, ...). A payoff paid at
the last observation multiplies by ``discount[-1]``; the pricing functions
(:func:`jaxvol.mc.heston_price`, :func:`jaxvol.mc.simulate`) average what it returns.

- :func:`european`, :func:`digital` (cash-or-nothing, pays 1): on the last observation, or,
  with ``args["date"][k]`` (indices of observation dates), each column at its own date: a whole
  surface (expiries x strikes) from one set of paths.
- :func:`asian`: arithmetic average of the spot over all observation dates.
- :func:`barrier`: discretely monitored at the observation dates; ``args``: ``strike``,
  ``is_call``, ``barrier`` (scalar), ``up`` and ``knock_in`` (bools), ``correction`` (bool):
  with it, the Broadie-Glasserman-Kou continuity correction moves the barrier towards the spot
  by exp(-0.5826 sqrt(v_i dt_i)) (up) or exp(+...) (down), v_i the path's variance at the date
  and dt_i the monitoring interval, so the discretely monitored simulation prices the
  continuously monitored barrier (error o(sqrt(dt)) instead of O(sqrt(dt))).
- :func:`forward_start`: (S_T - m S_{t0})^+ (call) with t0 the observation ``start`` (an index
  into the observation dates) and ``moneyness`` m.
- :func:`realized_variance`: (1/T) sum_i log(S_i / S_{i-1})^2 over all observation dates from
  spot0 (T the last observation time), minus ``strike`` (a variance-swap payoff, notional 1 in
  variance units).
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["european", "digital", "asian", "barrier", "forward_start", "realized_variance",
           "BGK_BETA"]

BGK_BETA = 0.5825971579390106  #: -zeta(1/2)/sqrt(2 pi), Broadie, Glasserman & Kou (1997)


def _vanilla(s, strike, is_call):
    return jnp.maximum(jnp.where(is_call[None, :], s[:, None] - strike[None, :],
                                 strike[None, :] - s[:, None]), 0.0)


def _at_dates(path, args):
    """(spot [n, k] or [n, 1], discount [k] or [1]) at each column's date (default: last)."""
    if "date" in args:
        date = jnp.asarray(args["date"])
        return path["spot"][date].T, path["discount"][date]
    return path["spot"][-1][:, None], path["discount"][-1:]


def european(path, args):
    """max(S_T - K, 0) or max(K - S_T, 0), discounted: args ``strike[k]``, ``is_call[k]``,
    optional ``date[k]``."""
    s, discount = _at_dates(path, args)
    intrinsic = jnp.where(args["is_call"][None, :], s - args["strike"][None, :],
                          args["strike"][None, :] - s)
    return discount[None, :] * jnp.maximum(intrinsic, 0.0)


def digital(path, args):
    """1{S_T > K} (call) or 1{S_T < K} (put), discounted: args ``strike[k]``, ``is_call[k]``,
    optional ``date[k]``."""
    s, discount = _at_dates(path, args)
    up = (s > args["strike"][None, :]).astype(s.dtype)
    return discount[None, :] * jnp.where(args["is_call"][None, :], up, 1.0 - up)


def asian(path, args):
    """Arithmetic-average option on the mean spot over the observation dates."""
    return path["discount"][-1] * _vanilla(jnp.mean(path["spot"], axis=0), args["strike"],
                                           args["is_call"])


def _monitoring_intervals(times):
    return jnp.diff(jnp.concatenate([jnp.zeros((1,), times.dtype), times]))


def barrier(path, args):
    """Discretely monitored knock-out / knock-in vanilla (module docstring for ``args``)."""
    spot = path["spot"]
    dt = _monitoring_intervals(path["times"])[:, None]
    shift = BGK_BETA * jnp.sqrt(jnp.maximum(path["variance"], 0.0) * dt)
    up = jnp.asarray(args["up"], bool)
    correction = jnp.asarray(args.get("correction", False), bool)
    level = args["barrier"] * jnp.exp(jnp.where(correction, jnp.where(up, -shift, shift), 0.0))
    crossed = jnp.where(up, jnp.any(spot >= level, axis=0), jnp.any(spot <= level, axis=0))
    alive = jnp.where(jnp.asarray(args["knock_in"], bool), crossed, ~crossed)
    value = _vanilla(spot[-1], args["strike"], args["is_call"])
    return path["discount"][-1] * jnp.where(alive[:, None], value, 0.0)


def forward_start(path, args):
    """(S_T - m S_{t0})^+ or (m S_{t0} - S_T)^+: args ``start`` (int index of t0 among the
    observation dates), ``moneyness[k]``, ``is_call[k]``."""
    start = jnp.take(path["spot"], args["start"], axis=0)
    strike = args["moneyness"][None, :] * start[:, None]
    s = path["spot"][-1][:, None]
    value = jnp.maximum(jnp.where(args["is_call"][None, :], s - strike, strike - s), 0.0)
    return path["discount"][-1] * value


def realized_variance(path, args):
    """Annualised realised variance of log returns minus ``strike[k]`` (args)."""
    spot = path["spot"]
    logs = jnp.log(jnp.concatenate([jnp.broadcast_to(path["spot0"], spot[:1].shape), spot]))
    variance = jnp.sum(jnp.diff(logs, axis=0) ** 2, axis=0) / path["times"][-1]
    return path["discount"][-1] * (variance[:, None] - args["strike"][None, :])
