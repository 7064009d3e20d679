"""Local volatility from an implied surface: Gatheral's formula by autodiff, Dupire as a check.

Gatheral (2006, eq 1.10) in total variance w(k, T) at fixed log forward moneyness k:

    sigma_L^2(k, T) = (dw/dT) / g(k, T),
    g = (1 - k w'/(2w))^2 - (w'^2 / 4)(1/w + 1/4) + w''/2      (Durrleman's function),

with w' = dw/dk, w'' = d2w/dk2 and dw/dT at fixed k, every derivative by forward-mode autodiff
of ``w`` (no finite differences). The local vol is that of the spot at S = F(T) e^k.

Where dw/dT <= 0 (calendar arbitrage), g <= 0 (butterfly arbitrage), w <= 0, or the inputs are
not finite, the value is NaN with a per-point :data:`LVStatus`, never an exception (QuantLib's
``LocalVolSurface`` throws "black vol surface is not smooth enough", and the job dies). Gradients
are NaN-safe: an undefined point has zero gradient and never touches another point's.

Dupire (1994) in call prices C(K, T) with continuous rate r and dividend yield q:

    sigma_L^2(K, T) = (dC/dT + (r - q) K dC/dK + q C) / (K^2 / 2 d2C/dK2),

is :func:`dupire_local_vol`, an independent cross-check (different variables, different
derivatives).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvol._dtypes import float_dtype
from jaxvol.black import black_price
from jaxvol.status import domain_status

__all__ = ["LVStatus", "LocalVol", "SurfaceDiagnostics", "SimulationPolicy", "local_vol",
           "local_vol_parts", "dupire_local_vol", "call_prices", "diagnostics",
           "violation_summary", "apply_policy"]

LVStatus = domain_status("LVStatus", "localvol", {
    "OK": 0,
    "BAD_INPUT": 1,              # expiry <= 0
    "NON_FINITE_INPUT": 2,       # NaN or infinite k or expiry
    "NON_FINITE": 3,             # the surface or a derivative is not finite there
    "CALENDAR_ARBITRAGE": 70,    # dw/dT <= 0 at fixed k (Dupire: numerator <= 0)
    "BUTTERFLY_ARBITRAGE": 71,   # Durrleman's g <= 0 (Dupire: d2C/dK2 <= 0)
    "CALENDAR_AND_BUTTERFLY": 72,  # both
    "NON_POSITIVE_VARIANCE": 73,   # w(k, T) <= 0
    "FLOORED": 74,               # simulation policy: below the floor, floored
    "CAPPED": 75,                # simulation policy: above the cap, capped
    "REPLACED": 76,              # simulation policy: undefined, replaced by the implied vol
    "REPRICING_ERROR": 77,       # SLV: a vanilla is repriced outside the tolerance
}, doc="Per-point outcome of jaxvol.localvol (shared codes 0-9, own codes 70-79).")


class LocalVol(NamedTuple):
    """Local volatility (NaN where undefined) and its :data:`LVStatus` code per point."""

    vol: jax.Array
    status: jax.Array


class SurfaceDiagnostics(NamedTuple):
    """Per point of a (k, T) grid: total variance ``w``, ``dw_dt`` (fixed k), Durrleman's ``g``,
    the violation sizes ``butterfly = max(-g, 0)`` and ``calendar = max(-dw_dt, 0)``, and the
    local-vol ``status`` there."""

    w: jax.Array
    dw_dt: jax.Array
    g: jax.Array
    butterfly: jax.Array
    calendar: jax.Array
    status: jax.Array


@dataclasses.dataclass(frozen=True)
class SimulationPolicy:
    """What a simulation does with local vol: clip to [``floor``, ``cap``] (annualised vols)
    and, where it is undefined (arbitrage, NaN), use the implied vol sqrt(w/T) at that point
    (``undefined="implied"``) or the floor (``undefined="floor"``). Every changed point keeps a
    status (FLOORED, CAPPED, REPLACED) so a user sees how much of a grid was touched."""

    floor: float = 0.01
    cap: float = 4.0
    undefined: str = "implied"

    def __post_init__(self):
        if self.undefined not in ("implied", "floor"):
            raise ValueError(f"undefined must be 'implied' or 'floor', got {self.undefined!r}")
        if not 0.0 <= self.floor < self.cap:
            raise ValueError(f"need 0 <= floor < cap, got floor={self.floor}, cap={self.cap}")


# --------------------------------------------------------------------------- kernels
def _w_derivatives(w, k, t):
    """(w, dw/dk, d2w/dk2, dw/dt) at one point by forward-mode autodiff."""
    one = jnp.ones_like(k)
    dk = lambda kk: jax.jvp(lambda x: w(x, t), (kk,), (one,))  # noqa: E731
    (value, slope), (_, curvature) = jax.jvp(dk, (k,), (one,))
    _, dt = jax.jvp(lambda s: w(k, s), (t,), (jnp.ones_like(t),))
    return value, slope, curvature, dt


def _durrleman(k, value, slope, curvature):
    safe = jnp.where(value > 0, value, 1.0)
    return ((1.0 - k * slope / (2.0 * safe)) ** 2 - 0.25 * slope * slope * (1.0 / safe + 0.25)
            + 0.5 * curvature)


def _status(finite_input, t, value, dt, g, finite):
    calendar, butterfly = dt <= 0, g <= 0
    code = jnp.where(calendar & butterfly, LVStatus.CALENDAR_AND_BUTTERFLY,
                     jnp.where(calendar, LVStatus.CALENDAR_ARBITRAGE,
                               jnp.where(butterfly, LVStatus.BUTTERFLY_ARBITRAGE, LVStatus.OK)))
    code = jnp.where(value <= 0, LVStatus.NON_POSITIVE_VARIANCE, code)
    code = jnp.where(finite, code, LVStatus.NON_FINITE)
    code = jnp.where(t > 0, code, LVStatus.BAD_INPUT)
    return jnp.where(finite_input, code, LVStatus.NON_FINITE_INPUT).astype(jnp.int32)


def _safe_point(k, t):
    finite_input = jnp.isfinite(k) & jnp.isfinite(t)
    usable = finite_input & (t > 0)
    return finite_input, jnp.where(usable, k, 0.0), jnp.where(usable, t, 1.0)


def _parts_kernel(w, k, t):
    finite_input, k_safe, t_safe = _safe_point(k, t)
    value, slope, curvature, dt = _w_derivatives(w, k_safe, t_safe)
    g = _durrleman(k_safe, value, slope, curvature)
    finite = jnp.isfinite(value) & jnp.isfinite(slope) & jnp.isfinite(curvature) & jnp.isfinite(dt)
    status = _status(finite_input, t, value, dt, g, finite)
    return value, dt, g, status


def _local_vol_kernel(w, k, t):
    value, dt, g, status = _parts_kernel(w, k, t)
    ok = status == LVStatus.OK
    variance = jnp.where(ok, dt, 1.0) / jnp.where(ok, g, 1.0)  # double where: NaN-safe grads
    return LocalVol(jnp.where(ok, jnp.sqrt(variance), jnp.nan), status)


# --------------------------------------------------------------------------- batching edge
def _batch_shape(w):
    return tuple(getattr(w, "batch_shape", ()))


def _check_callable(w):
    if not callable(w):
        raise ValueError(f"w must be a JAX function w(k, t) or a surface object, got {type(w)!r}")


def _map_points(kernel, w, k, t):
    """Apply a scalar kernel(w, k, t) over broadcast points; a batched surface maps its lanes
    over the leading axes of the points."""
    _check_callable(w)
    leaves = jax.tree_util.tree_leaves(w) if _is_pytree_surface(w) else []
    dtype = float_dtype(k, t, *leaves)
    k, t = jnp.asarray(k, dtype), jnp.asarray(t, dtype)
    batch = _batch_shape(w)
    shape = np.broadcast_shapes(k.shape, t.shape)
    if batch:
        if len(shape) < len(batch):
            shape = (1,) * (len(batch) - len(shape)) + tuple(shape)
        try:
            lead = np.broadcast_shapes(tuple(shape[:len(batch)]), batch)
        except ValueError:
            raise ValueError(f"points of shape {shape} do not start with the surface's batch "
                             f"shape {batch} (points are [*batch, ...])") from None
        if lead != batch:
            raise ValueError(f"points of shape {shape} do not start with the surface's batch "
                             f"shape {batch}")
        shape = batch + tuple(shape[len(batch):])
    k, t = jnp.broadcast_to(k, shape), jnp.broadcast_to(t, shape)
    point = jax.vmap(lambda surface, kk, tt: kernel(surface, kk, tt), in_axes=(None, 0, 0))
    lanes = int(np.prod(batch)) if batch else 1
    flat = lambda x: x.reshape(lanes, -1)  # noqa: E731
    if batch:
        surfaces = jax.tree_util.tree_map(lambda x: x.reshape((lanes,) + x.shape[len(batch):]), w)
        out = jax.vmap(point)(surfaces, flat(k), flat(t))
    else:
        out = point(w, k.reshape(-1), t.reshape(-1))
    return jax.tree_util.tree_map(lambda x: x.reshape(shape), out)


@functools.partial(jax.jit, static_argnums=(0,))
def _jit_points(kernel, w, k, t):
    return _map_points(kernel, w, k, t)


def _is_pytree_surface(w):
    return hasattr(w, "tree_flatten")


def _dispatch(kernel, w, k, t):
    if _is_pytree_surface(w):  # a PyTree: traced, one program per shape
        return _jit_points(kernel, w, k, t)
    _check_callable(w)  # a plain function: static (hashable by identity)
    return _jit_callable(kernel, w, k, t)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _jit_callable(kernel, w, k, t):
    return _map_points(kernel, w, k, t)


def local_vol(w, log_moneyness, expiry) -> LocalVol:
    """Local volatility by Gatheral's formula, every derivative of ``w`` by autodiff.

    Args:
      w: total implied variance ``w(k, t)`` as a JAX function of scalars (log forward moneyness
        k, expiry t in years), or a surface object (:class:`SVISurface`, :class:`SSVISurface`,
        batched over underlyings in its leading axes).
      log_moneyness, expiry: broadcasting arrays of points ([*batch, ...] for a batched
        surface).

    Returns:
      :class:`LocalVol`: ``vol`` (NaN where undefined) and ``status`` (:data:`LVStatus`):
      CALENDAR_ARBITRAGE where dw/dT <= 0, BUTTERFLY_ARBITRAGE where g <= 0, BAD_INPUT where
      expiry <= 0, NON_FINITE_INPUT / NON_FINITE. Composes with jit, vmap and grad (gradients
      with respect to the surface's parameters, for risk).
    """
    return _dispatch(_local_vol_kernel, w, log_moneyness, expiry)


def _parts_tuple(w, k, t):
    return _parts_kernel(w, k, t)


def local_vol_parts(w, log_moneyness, expiry):
    """(w, dw/dT, g, status) per point: the ingredients of Gatheral's formula."""
    return _dispatch(_parts_tuple, w, log_moneyness, expiry)


def _diagnostics_kernel(w, k, t):
    value, dt, g, status = _parts_kernel(w, k, t)
    return SurfaceDiagnostics(value, dt, g, jnp.maximum(-g, 0.0), jnp.maximum(-dt, 0.0), status)


def diagnostics(w, log_moneyness, expiry) -> SurfaceDiagnostics:
    """Butterfly (Durrleman g) and calendar (dw/dT at fixed k) diagnostics per grid point.

    Pass a grid, e.g. ``k[:, None]`` and ``t[None, :]``; see :func:`violation_summary` for the
    size and location of the worst violations."""
    return _dispatch(_diagnostics_kernel, w, log_moneyness, expiry)


def violation_summary(diag: SurfaceDiagnostics, log_moneyness, expiry) -> dict:
    """Host-side summary: count, worst size and its (k, T) for butterfly and calendar."""
    k, t = np.broadcast_arrays(np.asarray(log_moneyness), np.asarray(expiry),
                               np.asarray(diag.g))[:2]
    out = {}
    for name in ("butterfly", "calendar"):
        size = np.asarray(getattr(diag, name))
        bad = size > 0
        worst = int(np.argmax(size)) if bad.any() else None
        out[name] = {"count": int(bad.sum()), "points": int(size.size),
                     "worst": float(size.reshape(-1)[worst]) if worst is not None else 0.0,
                     "at_k": float(k.reshape(-1)[worst]) if worst is not None else None,
                     "at_expiry": float(t.reshape(-1)[worst]) if worst is not None else None}
    return out


# --------------------------------------------------------------------------- Dupire
def call_prices(w, *, spot, rate, div):
    """C(K, T): discounted Black call prices of the surface ``w`` (flat continuous rate and
    dividend yield), a JAX function for :func:`dupire_local_vol`."""
    def price(strike, expiry):
        forward = spot * jnp.exp((rate - div) * expiry)
        variance = w(jnp.log(strike / forward), expiry)
        vol = jnp.sqrt(variance / expiry)
        return black_price(forward, strike, expiry, vol, True, discount=jnp.exp(-rate * expiry))
    return price


def _dupire_kernel(call, rate, div, strike, t):
    finite_input = jnp.isfinite(strike) & jnp.isfinite(t)
    usable = finite_input & (t > 0) & (strike > 0)
    strike_s, t_s = jnp.where(usable, strike, 1.0), jnp.where(usable, t, 1.0)
    one = jnp.ones_like(strike_s)
    dk = lambda kk: jax.jvp(lambda x: call(x, t_s), (kk,), (one,))  # noqa: E731
    (value, c_k), (_, c_kk) = jax.jvp(dk, (strike_s,), (one,))
    _, c_t = jax.jvp(lambda s: call(strike_s, s), (t_s,), (jnp.ones_like(t_s),))
    numerator = c_t + (rate - div) * strike_s * c_k + div * value
    denominator = 0.5 * strike_s * strike_s * c_kk
    finite = jnp.isfinite(numerator) & jnp.isfinite(denominator)
    status = _status(finite_input, jnp.where(strike > 0, t, 0.0), jnp.ones_like(value),
                     numerator, denominator, finite)
    ok = status == LVStatus.OK
    variance = jnp.where(ok, numerator, 1.0) / jnp.where(ok, denominator, 1.0)
    return LocalVol(jnp.where(ok, jnp.sqrt(variance), jnp.nan), status)


@functools.partial(jax.jit, static_argnums=(0,))
def _dupire_jit(call, strike, expiry, rate, div):
    shape = np.broadcast_shapes(strike.shape, expiry.shape)
    strike, expiry = jnp.broadcast_to(strike, shape), jnp.broadcast_to(expiry, shape)
    kernel = jax.vmap(lambda kk, tt: _dupire_kernel(call, rate, div, kk, tt))
    out = kernel(strike.reshape(-1), expiry.reshape(-1))
    return jax.tree_util.tree_map(lambda x: x.reshape(shape), out)


def dupire_local_vol(call_price, strike, expiry, *, rate, div) -> LocalVol:
    """Dupire's local vol from a JAX function ``call_price(K, T)`` of discounted call prices
    (derivatives by autodiff), at strikes K and expiries T (broadcasting); rate and dividend
    yield continuous and flat. Statuses as :func:`local_vol` (numerator <= 0 is
    CALENDAR_ARBITRAGE, d2C/dK2 <= 0 BUTTERFLY_ARBITRAGE; strike <= 0 BAD_INPUT)."""
    if not callable(call_price):
        raise ValueError(f"call_price must be a JAX function C(K, T), got {type(call_price)!r}")
    dtype = float_dtype(strike, expiry, rate, div)
    return _dupire_jit(call_price, jnp.asarray(strike, dtype), jnp.asarray(expiry, dtype),
                       jnp.asarray(rate, dtype), jnp.asarray(div, dtype))


# --------------------------------------------------------------------------- policy
def apply_policy(vol, status, implied, policy: SimulationPolicy):
    """Local vols ready for simulation: clipped to [floor, cap], undefined points replaced
    (see :class:`SimulationPolicy`); returns (vol, status) with FLOORED / CAPPED / REPLACED."""
    defined = jnp.isfinite(vol)
    fallback = implied if policy.undefined == "implied" else jnp.full_like(vol, policy.floor)
    fallback = jnp.where(jnp.isfinite(fallback), fallback, policy.floor)
    value = jnp.where(defined, vol, fallback)
    clipped = jnp.clip(value, policy.floor, policy.cap)
    code = jnp.where(~defined, LVStatus.REPLACED,
                     jnp.where(value < policy.floor, LVStatus.FLOORED,
                               jnp.where(value > policy.cap, LVStatus.CAPPED, status)))
    return clipped, code.astype(jnp.int32)
