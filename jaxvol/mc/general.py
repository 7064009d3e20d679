"""General stochastic-volatility models given as pure JAX functions.

dS = mu S dt + sqrt(v) S dZ1, dv = alpha(S, v, t) dt + eta beta(S, v, t) sqrt(v) dZ2,
d<Z1, Z2> = rho dt (Wilmott; Gatheral ch. 2). Under the pricing measure the variance drift is
alpha - beta sqrt(v) phi(S, v, t) (phi the market price of volatility risk) and mu = rate - div;
under the physical measure (``measure="P"``) the drift is alpha and mu = ``drift``.

A model is an :class:`SVModel` of module-level functions ``f(spot, v, t, params)`` (``params``
the lane's dict of model parameters, which must hold ``eta``). Ready-made: :data:`HESTON`
(alpha = kappa (theta - v), beta = 1, phi = lambda sqrt(v): Heston's choice), :data:`THREE_HALVES`
(alpha = kappa v (theta - v), beta = v: dv = kappa v (theta - v) dt + eta v^{3/2} dZ2) and
:data:`GARCH` (the GARCH diffusion, alpha = kappa (theta - v), beta = sqrt(v): dv = kappa (theta
- v) dt + eta v dZ2).

Schemes (log-spot, v+ = max(v, 0) in every coefficient, full truncation):

- ``"euler"``: full-truncation Euler; weak order 1.
- ``"milstein"``: adds Milstein's term g g_v (dW2^2 - dt) / 2 to the variance step, g(v) =
  eta beta(S, v, t) sqrt(v) and g_v by ``jax.jvp`` (the S-dependence of beta is frozen over the
  step: no Levy-area term). Strong order 1 in v instead of 1/2; its weak bias is usually smaller
  for square-root-type variance near 0 (for Heston it adds eta^2 (dW^2 - dt)/4).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvol.mc import batch, engine, estimators
from jaxvol.mc.estimators import MCResult
from jaxvol.mc.heston import NOISE, _lane_ids, _observe_steps, _safe_sqrt
from jaxvol.mc.keys import key_parts, wrap_key

__all__ = ["SVModel", "HESTON", "THREE_HALVES", "GARCH", "GENERAL_SCHEMES", "simulate",
           "sv_step"]

GENERAL_SCHEMES = ("euler", "milstein")


def _zero_phi(spot, v, t, params):
    return jnp.zeros_like(v)


class SVModel(NamedTuple):
    """A stochastic-volatility model: variance drift ``alpha``, diffusion multiplier ``beta``
    (the variance diffusion is eta beta sqrt(v)), market price of volatility risk ``phi``
    (None: alpha is already the pricing drift), each ``f(spot, v, t, params)``; ``params`` names
    the parameters the functions read (besides ``eta``), for checks and documentation."""

    alpha: Callable
    beta: Callable
    phi: Callable | None = None
    name: str = "sv"
    params: tuple = ()


def _heston_alpha(spot, v, t, p):
    return p["kappa"] * (p["theta"] - v)


def _one(spot, v, t, p):
    return jnp.ones_like(v)


def _heston_phi(spot, v, t, p):
    return p.get("lambda", 0.0) * _safe_sqrt(v)


def _three_halves_alpha(spot, v, t, p):
    return p["kappa"] * v * (p["theta"] - v)


def _identity(spot, v, t, p):
    return v


def _sqrt_v(spot, v, t, p):
    return _safe_sqrt(v)


HESTON = SVModel(_heston_alpha, _one, _heston_phi, "heston", ("kappa", "theta", "lambda"))
THREE_HALVES = SVModel(_three_halves_alpha, _identity, None, "three_halves", ("kappa", "theta"))
GARCH = SVModel(_heston_alpha, _sqrt_v, None, "garch", ("kappa", "theta"))


def sv_step(model: SVModel, scheme: str, x, v, z, t, dt, spot0, mu, rho, params, measure):
    """One step (ln(S/S0), v) -> (ln(S/S0), v) of ``scheme`` for arrays of paths."""
    vp = jnp.maximum(v, 0.0)
    spot = spot0 * jnp.exp(x)
    root = _safe_sqrt(vp)
    drift = model.alpha(spot, vp, t, params)
    if measure == "Q" and model.phi is not None:
        drift = drift - model.beta(spot, vp, t, params) * root * model.phi(spot, vp, t, params)
    sqdt = jnp.sqrt(dt)
    dw1 = sqdt * z[:, 0]
    dw2 = sqdt * (rho * z[:, 0] + jnp.sqrt(1.0 - rho * rho) * z[:, 1])

    def diffusion(var):
        return params["eta"] * model.beta(spot, var, t, params) * _safe_sqrt(var)

    g = diffusion(vp)
    v_new = v + drift * dt + g * dw2
    if scheme == "milstein":
        _, g_v = jax.jvp(diffusion, (vp,), (jnp.ones_like(vp),))
        v_new = v_new + 0.5 * g * jnp.where(vp > 0, g_v, 0.0) * (dw2 * dw2 - dt)
    elif scheme != "euler":
        raise ValueError(f"scheme must be one of {GENERAL_SCHEMES}, got {scheme!r}")
    x_new = x + (mu - 0.5 * vp) * dt + root * dw1
    return x_new, v_new


_BASE = ("spot", "v0", "rho", "rate", "div", "expiry", "drift")
_BASE_SAFE = dict(spot=1.0, v0=0.04, rho=0.0, rate=0.0, div=0.0, expiry=1.0, drift=0.0)


def _general_lane(data, lane_id, base, params, args, *, impl, model, scheme, measure, config,
                  payoff, observe_steps, dtype):
    finite = jnp.all(jnp.isfinite(jnp.stack([base[n] for n in _BASE]
                                            + [a for a in jax.tree.leaves(params)])))
    ok = finite & (base["spot"] > 0) & (base["expiry"] > 0) & (base["v0"] >= 0) & (
        jnp.abs(base["rho"]) < 1) & (params["eta"] > 0)
    b = {n: jnp.where(ok, base[n], _BASE_SAFE[n]) for n in _BASE}
    safe_params = {n: jnp.where(ok, a, 0.5) for n, a in params.items()}
    dt = b["expiry"] / config.steps
    mu = b["drift"] if measure == "P" else b["rate"] - b["div"]

    def init(n):
        return (jnp.zeros(n, dtype), jnp.full(n, b["v0"], dtype))

    def step(state, z, extra, i):
        t = i.astype(dtype) * dt
        return sv_step(model, scheme, state[0], state[1], z, t, dt, b["spot"], mu, b["rho"],
                       safe_params, measure)

    def observe(state):
        return {"spot": b["spot"] * jnp.exp(state[0]), "variance": state[1]}

    times = b["expiry"] * jnp.asarray(observe_steps, dtype) / config.steps
    discount = jnp.exp(-b["rate"] * times)

    def summarize(observed, state, blocks):
        path = dict(observed, times=times, discount=discount, spot0=b["spot"], v0=b["v0"])
        return estimators.path_statistics(payoff(path, args), None, blocks,
                                          config.antithetic)

    sums = engine.lane_sums(wrap_key(data, impl), lane_id, init=init, step=step, observe=observe,
                            summarize=summarize, observe_steps=observe_steps, noise=NOISE,
                            dtype=dtype, config=config)
    return estimators.estimate(sums, config.total_paths, config.antithetic, None, ok)


def simulate(key, model: SVModel, params: dict, payoff, payoff_args=None, *, spot, v0, rho,
             rate, div, expiry, steps, paths, scheme="euler", measure="Q", drift=None,
             observe=None, antithetic=True, block=1024, chunk=16, lane=None, devices=None):
    """E[payoff(path)] of a (discounted) path payoff under a general SV model; an
    :class:`MCResult` of shape lane shape + (k,).

    ``params``: the model's parameters (dict of arrays, must hold ``eta`` > 0), broadcast with
    spot, v0, rho, rate, div, expiry to the lane shape. ``payoff(path, payoff_args)`` as in
    :func:`jaxvol.mc.heston_price` (:mod:`jaxvol.mc.payoffs`). ``scheme``: ``"euler"`` or
    ``"milstein"``. ``measure="Q"``: variance drift alpha - beta sqrt(v) phi, spot drift
    rate - div; ``"P"``: alpha and ``drift``. Bad lanes (non-finite, spot, expiry, eta <= 0,
    v0 < 0, |rho| >= 1) are NaN with BAD_INPUT.
    """
    if not isinstance(model, SVModel):
        raise ValueError(f"model must be an SVModel, got {type(model).__name__}")
    if scheme not in GENERAL_SCHEMES:
        raise ValueError(f"scheme must be one of {GENERAL_SCHEMES}, got {scheme!r}")
    if measure not in ("Q", "P"):
        raise ValueError(f"measure must be 'Q' or 'P', got {measure!r}")
    if "eta" not in params:
        raise ValueError("params must hold 'eta' (the volatility-of-variance scale)")
    missing = [n for n in model.params if n not in params and n != "lambda"]
    if missing:
        raise ValueError(f"params of the {model.name} model miss {missing}")
    observe_steps = _observe_steps(observe, steps)
    config = engine.MCConfig(paths=int(paths), steps=int(steps), block=block, chunk=chunk,
                             antithetic=bool(antithetic))
    engine.observation_index(config.steps, observe_steps)
    base = dict(spot=spot, v0=v0, rho=rho, rate=rate, div=div, expiry=expiry,
                drift=rate - div if drift is None else drift)
    dtype = jnp.result_type(*base.values(), *params.values())
    dtype = dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)
    base = {n: jnp.asarray(x, dtype) for n, x in base.items()}
    params = {n: jnp.asarray(x, dtype) for n, x in params.items()}
    shape = np.broadcast_shapes(*(a.shape for a in base.values()),
                                *(a.shape for a in params.values()))
    lanes = math.prod(shape)
    base = {n: jnp.broadcast_to(a, shape).reshape(lanes) for n, a in base.items()}
    params = {n: jnp.broadcast_to(a, shape).reshape(lanes) for n, a in params.items()}
    args = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a), (lanes,) + jnp.shape(a)),
                        {} if payoff_args is None else payoff_args)
    data, impl = key_parts(key)
    data = jnp.broadcast_to(data, (lanes,) + data.shape)
    statics = dict(impl=impl, model=model, scheme=scheme, measure=measure, config=config,
                   payoff=payoff, observe_steps=observe_steps, dtype=jnp.dtype(dtype))
    fn = functools.partial(_general_lane, **statics)
    result = batch.run_lanes(fn, (data, _lane_ids(lane, shape, lanes), base, params, args),
                             devices=devices,
                             cache_key=("simulate", tuple(sorted(statics.items(),
                                                                 key=lambda kv: kv[0]))))
    return MCResult(*(a.reshape(shape + a.shape[1:]) for a in result))
