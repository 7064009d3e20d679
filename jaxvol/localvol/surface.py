"""Implied-volatility surfaces as JAX functions of (log forward moneyness, expiry).

A surface is any callable ``w(k, t)`` returning total implied variance ``vol^2 * t`` at log
forward moneyness ``k = ln(strike / forward(t))`` and expiry ``t`` in years, written in JAX so
that :func:`jaxvol.localvol.local_vol` can differentiate it. Two fitted surfaces are provided as
PyTrees (they pass through ``jit``/``vmap``/``grad``, so local vol can be differentiated with
respect to their parameters):

* :class:`SVISurface`: raw SVI slices (a, b, rho, m, sigma) per expiry (:func:`jaxvol.svi.fit`).
  Between expiries total variance is interpolated **linearly in t at fixed k**: a convex
  combination of two slices, so dw/dt >= 0 wherever the slices are calendar-free (no calendar
  arbitrage is introduced); dw/dt is piecewise constant in t and jumps at the nodes (local vol
  is right-continuous in t there). Linear interpolation in w does not in general preserve
  Durrleman's condition between two butterfly-free slices: check with
  :func:`jaxvol.localvol.diagnostics`.
* :class:`SSVISurface`: an SSVI surface (:func:`jaxvol.ssvi.fit`): the ATM total variance
  theta(t) is interpolated linearly between expiries and w(k, t) = SSVI(k; theta(t), rho,
  phi(theta(t))), the SSVI surface's own interpolation, free of static arbitrage under the
  fitted form's conditions.

Extrapolation. SVI: before the first expiry T_1 the implied vol at fixed k is held
(w(k, t) = w(k, T_1) t / T_1, so w -> 0 as t -> 0 and dw/dt = w(k, T_1)/T_1 > 0); beyond the
last expiry T_E likewise (w(k, t) = w(k, T_E) t / T_E). SSVI: theta(t) = theta_1 t / T_1 before
T_1 and theta_E t / T_E beyond T_E, then the SSVI formula (theta stays increasing, so no
calendar arbitrage). In k the slice formulas apply as they are (SVI and SSVI wings are linear
in k, within Lee's bounds when fitted so).

:func:`from_tables` builds either surface from the nightly job's ``slices.parquet`` /
``underlyings.parquet`` tables.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxvol._dtypes import float_dtype
from jaxvol.smile import ssvi as _ssvi_mod
from jaxvol.smile import svi as _svi_mod

__all__ = ["SVISurface", "SSVISurface", "from_tables", "flat_surface", "interval_weights"]


def interval_weights(expiry_nodes, t):
    """(i, weight, scale) for t against sorted nodes [E]: inside [T_i, T_i+1] the value is
    (1 - weight) f_i + weight f_{i+1}; outside, scale * f_i at the end node (scale = t / T_i)."""
    nodes = expiry_nodes
    count = nodes.shape[-1]
    i = jnp.clip(jnp.searchsorted(nodes, t, side="right") - 1, 0, max(count - 2, 0))
    if count == 1:
        return i, jnp.zeros_like(t), t / nodes[0]
    lo, hi = nodes[i], nodes[i + 1]
    inside = (t >= nodes[0]) & (t <= nodes[-1])
    weight = jnp.where(inside, (t - lo) / (hi - lo), jnp.where(t > nodes[-1], 1.0, 0.0))
    end = jnp.where(t > nodes[-1], nodes[-1], nodes[0])
    scale = jnp.where(inside, 1.0, t / end)
    return i, weight, scale


def _interpolate(nodes, values_at, t):
    """Total variance between and beyond nodes from ``values_at(i) -> value at node i``."""
    i, weight, scale = interval_weights(nodes, t)
    if nodes.shape[-1] == 1:
        return scale * values_at(i)
    return scale * ((1.0 - weight) * values_at(i) + weight * values_at(i + 1))


@jax.tree_util.register_pytree_node_class
class SVISurface:
    """Raw SVI slices per expiry: ``expiry`` [..., E] (sorted ascending, years) and ``params``
    [..., E, 5] (a, b, rho, m, sigma); optional ``forward`` [..., E] (for strikes <-> k).

    Leading axes are a batch of underlyings: evaluate one lane with :meth:`lane` or let
    :func:`jaxvol.localvol.local_vol` vmap over them."""

    def __init__(self, expiry, params, forward=None):
        dtype = float_dtype(expiry, params)
        self.expiry = jnp.asarray(expiry, dtype)
        self.params = jnp.asarray(params, dtype)
        self.forward = None if forward is None else jnp.asarray(forward, dtype)
        if self.params.shape[-1:] != (5,) or self.params.shape[:-1] != self.expiry.shape:
            raise ValueError(f"SVISurface: params must be [..., E, 5] with expiry [..., E], got "
                             f"{self.params.shape} and {self.expiry.shape}")

    @property
    def batch_shape(self):
        return self.expiry.shape[:-1]

    def lane(self, index):
        pick = lambda x: None if x is None else x[index]  # noqa: E731
        return SVISurface(self.expiry[index], self.params[index], pick(self.forward))

    def slice_variance(self, k, i):
        return _svi_mod.total_variance(k, *(self.params[i, j] for j in range(5)))

    def __call__(self, k, t):
        """Total variance w(k, t) of an unbatched surface (scalars or broadcasting arrays)."""
        if self.batch_shape:
            raise ValueError("SVISurface with a batch of underlyings: call .lane(i) first, or use "
                             "jaxvol.localvol.local_vol, which maps over the batch")
        k, t = jnp.asarray(k, self.expiry.dtype), jnp.asarray(t, self.expiry.dtype)
        return _interpolate(self.expiry, lambda i: self.slice_variance(k, i), t)

    def tree_flatten(self):
        return (self.expiry, self.params, self.forward), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.expiry, obj.params, obj.forward = children
        return obj


@jax.tree_util.register_pytree_node_class
class SSVISurface:
    """An SSVI surface: ``expiry`` [..., E], ATM total variances ``theta`` [..., E]
    (non-decreasing), ``rho`` [...], ``phi_params`` [..., 1] (lambda, ``phi="heston"``) or
    [..., 2] (eta, gamma, ``phi="power_law"``); optional ``forward`` [..., E]."""

    def __init__(self, expiry, theta, rho, phi_params, phi="heston", forward=None):
        if phi not in _ssvi_mod.PHI_FORMS:
            raise ValueError(f"phi must be one of {_ssvi_mod.PHI_FORMS}, got {phi!r}")
        dtype = float_dtype(expiry, theta, rho, phi_params)
        self.expiry = jnp.asarray(expiry, dtype)
        self.theta = jnp.asarray(theta, dtype)
        self.rho = jnp.asarray(rho, dtype)
        self.phi_params = jnp.asarray(phi_params, dtype)
        self.forward = None if forward is None else jnp.asarray(forward, dtype)
        self.phi = phi
        need = 1 if phi == "heston" else 2
        if (self.theta.shape != self.expiry.shape or self.phi_params.shape[-1:] != (need,)
                or self.rho.shape != self.expiry.shape[:-1]):
            raise ValueError(f"SSVISurface: expected expiry/theta [..., E], rho [...], "
                             f"phi_params [..., {need}]; got {self.expiry.shape}, "
                             f"{self.theta.shape}, {self.rho.shape}, {self.phi_params.shape}")

    @property
    def batch_shape(self):
        return self.expiry.shape[:-1]

    def lane(self, index):
        pick = lambda x: None if x is None else x[index]  # noqa: E731
        return SSVISurface(self.expiry[index], self.theta[index], self.rho[index],
                           self.phi_params[index], self.phi, pick(self.forward))

    def phi_of(self, theta):
        if self.phi == "heston":
            return _ssvi_mod.heston_phi(theta, self.phi_params[..., 0])
        return _ssvi_mod.power_law_phi(theta, self.phi_params[..., 0], self.phi_params[..., 1])

    def atm_variance(self, t):
        t = jnp.asarray(t, self.expiry.dtype)
        return _interpolate(self.expiry, lambda i: self.theta[i], t)

    def __call__(self, k, t):
        if self.batch_shape:
            raise ValueError("SSVISurface with a batch of underlyings: call .lane(i) first, or "
                             "use jaxvol.localvol.local_vol, which maps over the batch")
        k = jnp.asarray(k, self.expiry.dtype)
        theta = self.atm_variance(t)
        safe = jnp.where(theta > 0, theta, 1.0)
        w = _ssvi_mod.total_variance(k, safe, self.rho, self.phi_of(safe))
        return jnp.where(theta > 0, w, 0.0)

    def tree_flatten(self):
        return (self.expiry, self.theta, self.rho, self.phi_params, self.forward), self.phi

    @classmethod
    def tree_unflatten(cls, phi, children):
        obj = object.__new__(cls)
        obj.expiry, obj.theta, obj.rho, obj.phi_params, obj.forward = children
        obj.phi = phi
        return obj


def flat_surface(vol):
    """w(k, t) = vol^2 t: the surface of a constant volatility (a plain function)."""
    def w(k, t):
        return jnp.zeros_like(k) + vol * vol * t
    return w


def from_tables(slices, underlyings=None, *, kind="svi", phi="heston", underlying=None):
    """Surfaces from the nightly job's tables (pandas DataFrames or parquet paths).

    ``kind="svi"`` uses ``slices`` columns ``underlying, expiry, forward, svi_a..svi_sigma``
    (slices whose ``svi_status`` is non-zero are dropped); ``kind="ssvi"`` uses
    ``slices.ssvi_theta`` and ``underlyings`` columns ``ssvi_rho, ssvi_phi_0[, ssvi_phi_1]``
    (``phi`` names the form the job ran with: its ``ssvi.phi`` setting). Returns a dict
    {underlying: surface} (or one surface when ``underlying`` is given). An underlying without
    a usable slice is left out.
    """
    import pandas as pd

    if kind not in ("svi", "ssvi"):
        raise ValueError(f"kind must be 'svi' or 'ssvi', got {kind!r}")
    slices = pd.read_parquet(slices) if not isinstance(slices, pd.DataFrame) else slices
    if kind == "ssvi":
        if underlyings is None:
            raise ValueError("kind='ssvi' needs the underlyings table (rho and phi parameters)")
        underlyings = (pd.read_parquet(underlyings)
                       if not isinstance(underlyings, pd.DataFrame) else underlyings)
    names = [underlying] if underlying is not None else list(dict.fromkeys(slices["underlying"]))
    out = {}
    for name in names:
        rows = slices[slices["underlying"] == name].sort_values("expiry")
        surface = (_svi_from_rows(rows) if kind == "svi"
                   else _ssvi_from_rows(rows, underlyings, name, phi))
        if surface is not None:
            out[name] = surface
    if underlying is not None:
        if underlying not in out:
            raise ValueError(f"underlying {underlying!r}: no usable {kind} slice in the tables")
        return out[underlying]
    return out


def _svi_from_rows(rows):
    params = rows[_SVI_COLUMNS].to_numpy(float)
    ok = np.all(np.isfinite(params), axis=1) & (rows["expiry"].to_numpy(float) > 0)
    if "svi_status" in rows.columns:
        ok &= rows["svi_status"].to_numpy() == 0
    if not ok.any():
        return None
    forward = rows["forward"].to_numpy(float)[ok] if "forward" in rows.columns else None
    return SVISurface(rows["expiry"].to_numpy(float)[ok], params[ok], forward)


_SVI_COLUMNS = ["svi_a", "svi_b", "svi_rho", "svi_m", "svi_sigma"]


def _ssvi_from_rows(rows, underlyings, name, phi):
    row = underlyings[underlyings["underlying"] == name]
    if not len(row) or "ssvi_theta" not in rows.columns:
        return None
    row = row.iloc[0]
    if "ssvi_status" in row.index and int(row["ssvi_status"]) != 0:
        return None
    theta = rows["ssvi_theta"].to_numpy(float)
    ok = np.isfinite(theta) & (theta > 0)
    count = 1 if phi == "heston" else 2
    phi_params = np.asarray([row[f"ssvi_phi_{i}"] for i in range(count)], float)
    if not ok.any() or not np.all(np.isfinite(phi_params)):
        return None
    forward = rows["forward"].to_numpy(float)[ok] if "forward" in rows.columns else None
    return SSVISurface(rows["expiry"].to_numpy(float)[ok], theta[ok], float(row["ssvi_rho"]),
                       phi_params, phi, forward)
