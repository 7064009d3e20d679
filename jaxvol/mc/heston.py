"""Heston paths: QE-M, full-truncation Euler and an exact-in-distribution variance step.

Model: d ln S = (mu - v/2) dt + sqrt(v) dZ1, dv = kappa (theta - v) dt + sigma sqrt(v) dZ2,
d<Z1, Z2> = rho dt, mu = rate - div under Q. Every scheme works on (ln S, v) with dt = expiry /
steps and takes two independent normals per path and step.

Schemes (``scheme=``):

- ``"qe_m"`` (default): Andersen (2008) quadratic-exponential variance step with psi_c = 1.5 and
  his log-spot step with gamma1 = gamma2 = 1/2 and the martingale correction K0* (E[S_{t+dt} |
  S_t] = S_t e^{mu dt} exactly, for both branches; where the correction does not exist, A >=
  1/(2a) or A >= beta, the uncorrected K0 is used). Bias: the variance step matches the first
  two conditional moments exactly; the remaining bias comes from the drift-interpolated
  integrated variance and the moment matching, and is small at dt = 1/8 year even with Feller
  badly violated (Andersen's cases; tests/test_mc_heston.py). Use for pricing.
- ``"qe_m_smooth"``: QE-M with the branch switch at psi_c blended over psi in
  [SMOOTH_LOW, SMOOTH_HIGH] (a C1 smoothstep weight of the two branches' samples drawn from the
  same uniform, and of their K0*). The paths are then differentiable in every parameter, so
  ``jax.grad`` gives pathwise greeks without the jump term that the hard switch drops. Residual
  bias: inside the window the blend is a convex combination of two comonotone samples with the
  right mean, so the conditional variance is slightly low and the martingale correction
  approximate; outside the window it is QE-M exactly. Use for greeks.
- ``"euler"``: full-truncation Euler (Lord, Koekkoek & van Dijk 2010) on ln S: v+ = max(v, 0)
  in drift and diffusion. First-order weak bias (halving dt roughly halves it), large when
  Feller is violated; differentiable. A baseline and a check.
- ``"exact"``: the variance step drawn exactly from its noncentral chi-square law (a Poisson
  mixture of gammas, ``jax.random.poisson`` / ``jax.random.gamma``), the integrated variance by
  the trapezoid (v_t + v_{t+dt}) dt / 2, and ln S by Broadie & Kaya's conditional step
  ln S += mu dt - I/2 + rho/sigma (v' - v - kappa theta dt + kappa I) + sqrt((1 - rho^2) I) Z.
  Bias: only the trapezoid (O(dt^2) for the integrated variance itself; no martingale
  correction, so E[S_T] is off by a small O(dt) amount when sigma is large). The E[v_T],
  Var[v_T] reference scheme; not differentiable in kappa, theta, sigma, v0 (the Poisson count).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from jaxvol import heston as analytic
from jaxvol.heston.measures import to_physical
from jaxvol.mc import batch, engine, estimators
from jaxvol.mc.estimators import MCResult, MCStatus
from jaxvol.mc.keys import key_parts, wrap_key

__all__ = ["SCHEMES", "PSI_C", "SMOOTH_LOW", "SMOOTH_HIGH", "HestonPaths", "heston_paths",
           "heston_european", "heston_price", "heston_step", "lane_valid"]

SCHEMES = ("qe_m", "qe_m_smooth", "euler", "exact")
PSI_C = 1.5  #: Andersen's switching level of psi = s^2 / m^2
SMOOTH_LOW, SMOOTH_HIGH = 1.25, 1.75  #: blending window of "qe_m_smooth"
GAMMA1 = GAMMA2 = 0.5  #: Andersen's drift-interpolation weights (central)
NOISE = 2  #: normals per path per step

_NAMES = ("spot", "v0", "kappa", "theta", "sigma", "rho", "rate", "div", "expiry", "drift")
_SAFE = dict(spot=1.0, v0=0.04, kappa=1.0, theta=0.04, sigma=0.5, rho=0.0, rate=0.0, div=0.0,
             expiry=1.0, drift=0.0)


def _safe_sqrt(x):
    """sqrt(max(x, 0)) with a finite gradient at 0 (the "double where")."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _qe_moments(v, dt, kappa, theta, sigma):
    decay = jnp.exp(-kappa * dt)
    one_minus = -jnp.expm1(-kappa * dt)
    m = theta + (v - theta) * decay
    s2 = (v * sigma ** 2 * decay * one_minus / kappa
          + theta * sigma ** 2 * one_minus ** 2 / (2.0 * kappa))
    m = jnp.maximum(m, jnp.finfo(m.dtype).tiny)
    return m, s2, s2 / (m * m)


def _qe_quadratic(m, psi, zv, big_a):
    """Quadratic branch (valid for psi <= 2) and its martingale constant exp part."""
    inv = 1.0 / jnp.clip(psi, jnp.finfo(psi.dtype).tiny, 2.0)
    b2 = 2.0 * inv - 1.0 + jnp.sqrt(2.0 * inv) * _safe_sqrt(2.0 * inv - 1.0)
    a = m / (1.0 + b2)
    b = jnp.sqrt(b2)
    v_new = a * (b + zv) ** 2
    arg = 1.0 - 2.0 * big_a * a
    ok = arg > 0
    safe = jnp.where(ok, arg, 1.0)
    log_mgf = big_a * b2 * a / safe - 0.5 * jnp.log(safe)  # log E[exp(A v')]
    return v_new, log_mgf, ok


def _qe_exponential(m, psi, zv, big_a):
    """Exponential branch (valid for psi >= 1): v' = 0 w.p. p, else exponential(beta)."""
    p = jnp.clip((psi - 1.0) / (psi + 1.0), 0.0, 1.0 - 1e-12)
    beta = (1.0 - p) / m
    upper = ndtr(-zv)  # 1 - u, u = Phi(zv): accurate in the tail u -> 1 (erfc)
    tail = jnp.log1p(-p) - jnp.log(jnp.maximum(upper, jnp.finfo(upper.dtype).tiny))
    v_new = jnp.where(upper < 1.0 - p, jnp.maximum(tail, 0.0) / beta, 0.0)
    ok = big_a < beta
    safe = jnp.where(ok, beta - big_a, 1.0)
    log_mgf = jnp.log(p + beta * (1.0 - p) / safe)
    return v_new, log_mgf, ok


def _smoothstep(x):
    x = jnp.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _qe_step(x, v, z, p, dt, smooth):
    kappa, theta, sigma, rho = p["kappa"], p["theta"], p["sigma"], p["rho"]
    zv, zx = z[:, 0], z[:, 1]
    k0 = -rho * kappa * theta * dt / sigma
    k1 = GAMMA1 * dt * (kappa * rho / sigma - 0.5) - rho / sigma
    k2 = GAMMA2 * dt * (kappa * rho / sigma - 0.5) + rho / sigma
    k3 = GAMMA1 * dt * (1.0 - rho * rho)
    k4 = GAMMA2 * dt * (1.0 - rho * rho)
    big_a = k2 + 0.5 * k4
    m, _, psi = _qe_moments(v, dt, kappa, theta, sigma)
    vq, lq, okq = _qe_quadratic(m, psi, zv, big_a)
    ve, le, oke = _qe_exponential(m, psi, zv, big_a)
    uncorrected = k0 + (k1 + 0.5 * k3) * v  # K0 + (K1 + K3/2) v: the k0 fallback
    if smooth:
        w = _smoothstep((psi - SMOOTH_LOW) / (SMOOTH_HIGH - SMOOTH_LOW))  # 0: quadratic
        v_new = (1.0 - w) * vq + w * ve
        log_mgf = jnp.where(okq & oke, (1.0 - w) * lq + w * le,
                            jnp.where(w < 0.5, jnp.where(okq, lq, -uncorrected),
                                      jnp.where(oke, le, -uncorrected)))
    else:
        quadratic = psi <= PSI_C
        v_new = jnp.where(quadratic, vq, ve)
        log_mgf = jnp.where(quadratic, jnp.where(okq, lq, -uncorrected),
                            jnp.where(oke, le, -uncorrected))
    k0_star = -log_mgf - (k1 + 0.5 * k3) * v
    x_new = (x + p["mu"] * dt + k0_star + k1 * v + k2 * v_new
             + _safe_sqrt(k3 * v + k4 * v_new) * zx)
    return x_new, v_new


def _euler_step(x, v, z, p, dt):
    vp = jnp.maximum(v, 0.0)
    root = _safe_sqrt(vp * dt)
    z1 = z[:, 0]
    z2 = p["rho"] * z1 + jnp.sqrt(1.0 - p["rho"] ** 2) * z[:, 1]
    x_new = x + (p["mu"] - 0.5 * vp) * dt + root * z1
    v_new = v + p["kappa"] * (p["theta"] - vp) * dt + p["sigma"] * root * z2
    return x_new, v_new


def _exact_step(x, v, z, extra, p, dt, blocks):
    kappa, theta, sigma, rho = p["kappa"], p["theta"], p["sigma"], p["rho"]
    decay = jnp.exp(-kappa * dt)
    scale = sigma ** 2 * -jnp.expm1(-kappa * dt) / (4.0 * kappa)
    dof = 4.0 * kappa * theta / sigma ** 2
    half_nc = 0.5 * jnp.maximum(v, 0.0) * decay / scale
    shape = (blocks, v.shape[0] // blocks)

    def draw(key, rate):
        k_poisson, k_gamma = jax.random.split(key)
        count = jax.random.poisson(k_poisson, rate, shape[1:])
        return jax.random.gamma(k_gamma, 0.5 * dof + count.astype(rate.dtype), shape[1:],
                                rate.dtype)

    gamma = jax.vmap(draw)(extra, half_nc.reshape(shape)).reshape(v.shape)
    v_new = 2.0 * scale * gamma
    integrated = 0.5 * (v + v_new) * dt
    x_new = (x + p["mu"] * dt - 0.5 * integrated
             + rho / sigma * (v_new - v - kappa * theta * dt + kappa * integrated)
             + _safe_sqrt((1.0 - rho * rho) * integrated) * z[:, 1])
    return x_new, v_new


def heston_step(scheme: str, x, v, z, extra, p, dt, blocks):
    """One step of ``scheme`` for arrays of paths: (ln S, v) -> (ln S, v). ``p`` holds kappa,
    theta, sigma, rho and the drift ``mu``; z[n, 2] normals; ``extra`` per-block keys."""
    if scheme == "qe_m":
        return _qe_step(x, v, z, p, dt, smooth=False)
    if scheme == "qe_m_smooth":
        return _qe_step(x, v, z, p, dt, smooth=True)
    if scheme == "euler":
        return _euler_step(x, v, z, p, dt)
    if scheme == "exact":
        return _exact_step(x, v, z, extra, p, dt, blocks)
    raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def lane_valid(p):
    """Parameter sets the schemes can simulate: finite, spot, expiry, kappa, sigma > 0, v0,
    theta >= 0, |rho| < 1."""
    finite = jnp.all(jnp.isfinite(jnp.stack([p[n] for n in _NAMES])))
    return finite & (p["spot"] > 0) & (p["expiry"] > 0) & (p["kappa"] > 0) & (
        p["sigma"] > 0) & (p["v0"] >= 0) & (p["theta"] >= 0) & (jnp.abs(p["rho"]) < 1)


def _lane_model(params, measure):
    """Safe lane parameters (bad lanes replaced, the double where), their validity, and the
    dynamics under ``measure`` (kappa, theta and mu of the simulation)."""
    ok = lane_valid(params)
    p = {n: jnp.where(ok, params[n], _SAFE[n]) for n in _NAMES}
    if measure == "P":
        kappa, theta = to_physical(p["kappa"], p["theta"], params["lambda"])
        ok = ok & jnp.isfinite(kappa) & jnp.isfinite(theta) & jnp.isfinite(params["lambda"])
        p["kappa"] = jnp.where(ok, kappa, 1.0)
        p["theta"] = jnp.where(ok, theta, 0.04)
        p["mu"] = p["drift"]
    else:
        p["mu"] = p["rate"] - p["div"]
    return p, ok


def _simulation(p, scheme, config, dtype):
    """(init, step, observe) closures of one lane for :func:`jaxvol.mc.engine.lane_sums`."""
    dt = p["expiry"] / config.steps
    blocks = config.chunk_blocks

    def init(n):
        return (jnp.zeros(n, dtype), jnp.full(n, p["v0"], dtype))

    def step(state, z, extra, i):
        return heston_step(scheme, state[0], state[1], z, extra, p, dt, blocks)

    def observe(state):
        return {"spot": p["spot"] * jnp.exp(state[0]), "variance": state[1]}

    return init, step, observe




def _check(scheme, measure, steps, paths):
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if measure not in ("Q", "P"):
        raise ValueError(f"measure must be 'Q' or 'P', got {measure!r}")
    for name, value in (("steps", steps), ("paths", paths)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 2:
            raise ValueError(f"{name} must be an integer >= 2, got {value!r}")


def _lanes(values: dict, extra_shapes=()):
    """Broadcast the lane parameters to one lane shape; returns (dict of [L] arrays, shape)."""
    dtype = jnp.result_type(*values.values())
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    arrays = {n: jnp.asarray(x, dtype) for n, x in values.items()}
    shape = np.broadcast_shapes(*(a.shape for a in arrays.values()), *extra_shapes)
    lanes = math.prod(shape)
    return {n: jnp.broadcast_to(a, shape).reshape(lanes) for n, a in arrays.items()}, shape, dtype


class HestonPaths(NamedTuple):
    """Simulated paths at the observation steps: ``times[obs]`` (years), ``spot`` and
    ``variance`` [..., obs, paths] (lane shape first)."""

    times: jnp.ndarray
    spot: jnp.ndarray
    variance: jnp.ndarray


def _observe_steps(observe, steps):
    if observe is None:
        return (steps,)
    return tuple(int(s) for s in np.atleast_1d(np.asarray(observe)))


def heston_paths(key, *, spot, v0, kappa, theta, sigma, rho, rate, div, expiry, steps, paths,
                 scheme="qe_m", measure="Q", drift=None, vol_risk_premium=0.0, observe=None,
                 block=1024, chunk=16, lane=None):
    """Heston paths observed after the steps ``observe`` (1-based step numbers, default the
    last), for one or a batch of parameter sets (lanes; all parameters broadcast together).

    ``kappa``, ``theta`` are the risk-neutral parameters. ``measure="P"`` simulates the physical
    dynamics: kappa_P = kappa - lambda, theta_P = kappa theta / kappa_P with lambda =
    ``vol_risk_premium`` (:func:`jaxvol.heston.to_physical`) and spot drift ``drift`` (default
    rate - div). ``paths`` is rounded up to a multiple of ``block``. Returns
    :class:`HestonPaths` (float dtype of the inputs); bad lanes are NaN.
    """
    _check(scheme, measure, steps, paths)
    observe_steps = _observe_steps(observe, steps)
    config = engine.MCConfig(paths=int(paths), steps=int(steps), block=block, chunk=chunk)
    values = dict(spot=spot, v0=v0, kappa=kappa, theta=theta, sigma=sigma, rho=rho, rate=rate,
                  div=div, expiry=expiry, drift=rate - div if drift is None else drift,
                  **{"lambda": vol_risk_premium})
    arrays, shape, dtype = _lanes(values)
    data, impl = key_parts(key)
    lanes = arrays["spot"].shape[0]
    lane_ids = jnp.arange(lanes, dtype=jnp.int32) if lane is None else jnp.broadcast_to(
        jnp.asarray(lane, jnp.int32), shape).reshape(lanes)
    out = _paths_jit(data, lane_ids, arrays, impl=impl, scheme=scheme, measure=measure,
                     config=config, observe_steps=observe_steps, dtype=jnp.dtype(dtype))
    times = arrays["expiry"].reshape(shape + (1,)) * jnp.asarray(observe_steps, dtype) / steps
    return HestonPaths(times, out["spot"].reshape(shape + out["spot"].shape[1:]),
                       out["variance"].reshape(shape + out["variance"].shape[1:]))


@functools.partial(jax.jit, static_argnames=("impl", "scheme", "measure", "config",
                                             "observe_steps", "dtype"))
def _paths_jit(data, lane_ids, arrays, *, impl, scheme, measure, config, observe_steps, dtype):
    def one(lane_id, params):
        p, ok = _lane_model(params, measure)
        init, step, observe = _simulation(p, scheme, config, dtype)
        out = engine.lane_paths(wrap_key(data, impl), lane_id, init=init, step=step,
                                observe=observe, observe_steps=observe_steps, noise=NOISE,
                                dtype=dtype, config=config)
        return jax.tree.map(lambda a: jnp.where(ok, a, jnp.nan), out)

    return jax.vmap(one)(lane_ids, arrays)


def _european_values(s_t, strike, is_call, discount):
    """Discounted call/put payoffs [n, k] of terminal spots s_t[n]."""
    intrinsic = jnp.where(is_call[None, :], s_t[:, None] - strike[None, :],
                          strike[None, :] - s_t[:, None])
    return discount * jnp.maximum(intrinsic, 0.0)


def _european_lane(data, lane_id, params, strike, is_call, control_price, *, impl, scheme, config,
                   control, dtype):
    p, ok = _lane_model(params, "Q")
    init, step, observe = _simulation(p, scheme, config, dtype)
    strike_ok = jnp.isfinite(strike) & (strike > 0)
    forward = p["spot"] * jnp.exp((p["rate"] - p["div"]) * p["expiry"])
    discount = jnp.exp(-p["rate"] * p["expiry"])
    safe_strike = jnp.where(strike_ok, strike, forward)

    def summarize(observed, state, blocks):
        s_t = observed["spot"][-1]
        values = _european_values(s_t, safe_strike, is_call, discount)
        controls = None
        if control:
            controls = jnp.stack([discount * s_t, discount * jnp.maximum(s_t - forward, 0.0)],
                                 axis=-1)
        return estimators.path_statistics(values, controls, blocks, config.antithetic)

    sums = engine.lane_sums(wrap_key(data, impl), lane_id, init=init, step=step, observe=observe,
                            summarize=summarize, observe_steps=(config.steps,), noise=NOISE,
                            dtype=dtype, config=config)
    means = None
    if control == "given":
        means = jnp.stack([p["spot"] * jnp.exp(-p["div"] * p["expiry"]), control_price])
    elif control:
        atm = analytic.price(forward, p["expiry"], spot=p["spot"], rate=p["rate"],
                             div=p["div"], v0=p["v0"], kappa=p["kappa"], theta=p["theta"],
                             sigma=p["sigma"], rho=p["rho"], is_call=True)
        means = jnp.stack([p["spot"] * jnp.exp(-p["div"] * p["expiry"]), atm])
    result = estimators.estimate(sums, config.total_paths, config.antithetic, means, ok)
    return result._replace(
        price=jnp.where(strike_ok, result.price, jnp.nan),
        stderr=jnp.where(strike_ok, result.stderr, jnp.nan),
        stderr_plain=jnp.where(strike_ok, result.stderr_plain, jnp.nan),
        status=jnp.where(strike_ok | ~ok, result.status, int(MCStatus.BAD_INPUT)))


def _lane_ids(lane, shape, lanes):
    if lane is None:
        return jnp.arange(lanes, dtype=jnp.int32)
    return jnp.broadcast_to(jnp.asarray(lane, jnp.int32), shape).reshape(lanes)


def heston_european(key, strike, expiry, *, spot, rate, div, v0, kappa, theta, sigma, rho,
                    is_call, paths, steps, scheme="qe_m", antithetic=True,
                    control_variate=False, control_price=None, block=1024, chunk=16, lane=None,
                    devices=None):
    """European options under Heston by simulation; returns an :class:`MCResult`.

    Lanes: the parameters (expiry, spot, rate, div, v0, kappa, theta, sigma, rho) broadcast to
    a lane shape; each lane simulates its own ``paths`` (rounded up to a multiple of ``block``)
    with ``steps`` steps of expiry / steps. ``strike`` (and ``is_call``) either have the lane
    shape (one option per lane) or one more trailing axis of strikes priced on the same paths
    (result shape lane shape + (strikes,)).

    ``antithetic``: antithetic normals. ``control_variate``: regress on two controls with known
    means, the discounted terminal spot (mean spot e^{-div T}) and the at-the-money-forward call
    (mean ``jaxvol.heston.price``); ``stderr_plain`` stays the plain-MC error.
    ``control_price``: that at-the-money-forward call's price when the caller already has it
    (lane shape; e.g. from an earlier ``jaxvol.heston.price`` call): the simulation then
    neither traces nor compiles the Fourier pricer (which costs more to compile than a small
    simulation). Ignored without ``control_variate``. Bad lanes
    (non-finite, spot, expiry, kappa, sigma <= 0, v0, theta < 0, |rho| >= 1) and bad strikes are
    NaN with ``BAD_INPUT`` and change nothing in other lanes. ``lane``: integer lane ids for the
    keys (default 0..L-1 in C order): a lane keeps its numbers in any batch with the same id.
    ``devices``: local devices to shard lanes over (None: all; ignored under a transformation).
    Results are bitwise identical for any ``chunk`` and any device count.
    """
    _check(scheme, "Q", steps, paths)
    config = engine.MCConfig(paths=int(paths), steps=int(steps), block=block, chunk=chunk,
                             antithetic=bool(antithetic))
    values = dict(spot=spot, v0=v0, kappa=kappa, theta=theta, sigma=sigma, rho=rho, rate=rate,
                  div=div, expiry=expiry, drift=0.0, **{"lambda": 0.0})
    dtype = jnp.result_type(strike, *values.values())
    dtype = dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)
    values = {n: jnp.asarray(x, dtype) for n, x in values.items()}
    strike = jnp.asarray(strike, dtype)
    call = jnp.asarray(is_call)
    call = call if call.dtype == jnp.bool_ else call != 0
    lane_shape = np.broadcast_shapes(*(a.shape for a in values.values()))
    option_shape = np.broadcast_shapes(strike.shape, call.shape)
    if len(option_shape) > len(lane_shape):
        lane_shape = np.broadcast_shapes(lane_shape, option_shape[:-1])
        strikes = option_shape[-1]
        out_shape = lane_shape + (strikes,)
    else:
        lane_shape = np.broadcast_shapes(lane_shape, option_shape)
        strikes = 1
        out_shape = lane_shape
    lanes = math.prod(lane_shape)
    arrays = {n: jnp.broadcast_to(a, lane_shape).reshape(lanes) for n, a in values.items()}
    strike = jnp.broadcast_to(strike, out_shape).reshape(lanes, strikes)
    call = jnp.broadcast_to(call, out_shape).reshape(lanes, strikes)
    data, impl = key_parts(key)
    data = jnp.broadcast_to(data, (lanes,) + data.shape)
    given = bool(control_variate) and control_price is not None
    control = "given" if given else bool(control_variate)
    control_price = (jnp.broadcast_to(jnp.asarray(control_price, dtype), lane_shape).reshape(
        lanes) if given else jnp.zeros(lanes, dtype))
    statics = dict(impl=impl, scheme=scheme, config=config, control=control,
                   dtype=jnp.dtype(dtype))
    fn = functools.partial(_european_lane, **statics)
    result = batch.run_lanes(fn, (data, _lane_ids(lane, lane_shape, lanes), arrays, strike,
                                  call, control_price), devices=devices,
                             cache_key=("heston_european", tuple(sorted(statics.items()))))
    return MCResult(*(a.reshape(out_shape) for a in result))


def _payoff_lane(data, lane_id, params, args, *, impl, scheme, measure, config, payoff,
                 observe_steps, dtype):
    p, ok = _lane_model(params, measure)
    init, step, observe = _simulation(p, scheme, config, dtype)
    times = p["expiry"] * jnp.asarray(observe_steps, dtype) / config.steps
    discount = jnp.exp(-p["rate"] * times)

    def summarize(observed, state, blocks):
        path = dict(observed, times=times, discount=discount, spot0=p["spot"], v0=p["v0"])
        values = payoff(path, args)
        return estimators.path_statistics(values, None, blocks, config.antithetic)

    sums = engine.lane_sums(wrap_key(data, impl), lane_id, init=init, step=step, observe=observe,
                            summarize=summarize, observe_steps=observe_steps, noise=NOISE,
                            dtype=dtype, config=config)
    return estimators.estimate(sums, config.total_paths, config.antithetic, None, ok)


def heston_price(key, payoff, payoff_args=None, *, spot, v0, kappa, theta, sigma, rho, rate,
                 div, expiry, steps, paths, observe=None, scheme="qe_m", measure="Q",
                 drift=None, vol_risk_premium=0.0, antithetic=True, block=1024, chunk=16,
                 lane=None, devices=None):
    """The expectation E[payoff(path)] of any (discounted) path payoff; an
    :class:`MCResult` of shape lane shape + (k,).

    ``payoff(path, payoff_args)`` returns values [n, k] from ``path``, a dict with ``spot`` and
    ``variance`` [obs, n] at the observation steps ``observe`` (1-based, default the last),
    ``times`` [obs], ``spot0`` and ``v0`` (see :mod:`jaxvol.mc.payoffs`). ``payoff`` must be a
    module-level (hashable, stable) function; ``payoff_args`` a PyTree of arrays shared by all
    lanes. ``measure``, ``drift``, ``vol_risk_premium`` as in :func:`heston_paths` (under P the
    discounting still uses ``rate``).
    """
    _check(scheme, measure, steps, paths)
    observe_steps = _observe_steps(observe, steps)
    engine.observation_index(steps, observe_steps)
    config = engine.MCConfig(paths=int(paths), steps=int(steps), block=block, chunk=chunk,
                             antithetic=bool(antithetic))
    values = dict(spot=spot, v0=v0, kappa=kappa, theta=theta, sigma=sigma, rho=rho, rate=rate,
                  div=div, expiry=expiry, drift=rate - div if drift is None else drift,
                  **{"lambda": vol_risk_premium})
    arrays, shape, dtype = _lanes(values)
    lanes = arrays["spot"].shape[0]
    args = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a), (lanes,) + jnp.shape(a)),
                        {} if payoff_args is None else payoff_args)
    data, impl = key_parts(key)
    data = jnp.broadcast_to(data, (lanes,) + data.shape)
    statics = dict(impl=impl, scheme=scheme, measure=measure, config=config, payoff=payoff,
                   observe_steps=observe_steps, dtype=jnp.dtype(dtype))
    fn = functools.partial(_payoff_lane, **statics)
    result = batch.run_lanes(fn, (data, _lane_ids(lane, shape, lanes), arrays, args),
                             devices=devices,
                             cache_key=("heston_price", tuple(sorted(statics.items(),
                                                                     key=lambda kv: kv[0]))))
    return MCResult(*(a.reshape(shape + a.shape[1:]) for a in result))
