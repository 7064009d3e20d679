"""Heston under the physical (P) and the pricing (Q) measure, and the variance risk premium.

Physical variance dynamics dv = kappa_P (theta_P - v) dt + sigma sqrt(v) dZ2. With Heston's
market price of volatility risk (phi = lambda sqrt(v) in the pricing drift alpha - beta sqrt(v)
phi, beta = 1) the Q drift is kappa_P (theta_P - v) - lambda v, so

    kappa_Q = kappa_P + lambda,   theta_Q = kappa_P theta_P / (kappa_P + lambda),

and kappa_Q theta_Q = kappa_P theta_P (the long-run drift level is the same). lambda < 0 (the
usual sign for equity indices) makes the Q variance mean-revert more slowly to a higher level:
implied variance above expected realised variance. sigma, rho and v0 are the same under both.

Closed forms (CIR): E[v_t] = theta + (v0 - theta) e^{-kappa t},
Var[v_t] = v0 sigma^2 e^{-kappa t}(1 - e^{-kappa t}) / kappa + theta sigma^2 (1 - e^{-kappa t})^2
/ (2 kappa), E[int_0^T v dt] = theta T + (v0 - theta)(1 - e^{-kappa T}) / kappa; the variance
risk premium is E_Q - E_P of the annualised integrated variance (1/T) int_0^T v dt.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from jaxvol.heston.analytic import fair_variance, integrated_variance

__all__ = ["to_risk_neutral", "to_physical", "expected_variance", "variance_of_variance",
           "expected_integrated_variance", "variance_risk_premium", "VarianceRiskPremium"]


def to_risk_neutral(kappa, theta, vol_risk_premium):
    """(kappa_Q, theta_Q) from the physical (kappa_P, theta_P) and lambda: kappa_P + lambda,
    kappa_P theta_P / (kappa_P + lambda). NaN where kappa_P + lambda <= 0."""
    kappa_q = kappa + vol_risk_premium
    ok = kappa_q > 0
    safe = jnp.where(ok, kappa_q, 1.0)
    return (jnp.where(ok, kappa_q, jnp.nan), jnp.where(ok, kappa * theta / safe, jnp.nan))


def to_physical(kappa, theta, vol_risk_premium):
    """(kappa_P, theta_P) from the risk-neutral (kappa_Q, theta_Q) and lambda: kappa_Q - lambda,
    kappa_Q theta_Q / (kappa_Q - lambda). NaN where kappa_Q - lambda <= 0."""
    kappa_p = kappa - vol_risk_premium
    ok = kappa_p > 0
    safe = jnp.where(ok, kappa_p, 1.0)
    return (jnp.where(ok, kappa_p, jnp.nan), jnp.where(ok, kappa * theta / safe, jnp.nan))


def expected_variance(t, v0, kappa, theta):
    """E[v_t] = theta + (v0 - theta) e^{-kappa t} (in the measure of kappa, theta)."""
    return theta + (v0 - theta) * jnp.exp(-kappa * t)


def variance_of_variance(t, v0, kappa, theta, sigma):
    """Var[v_t] of the CIR variance."""
    decay = jnp.exp(-kappa * t)
    one_minus = -jnp.expm1(-kappa * t)
    return (v0 * sigma ** 2 * decay * one_minus / kappa
            + theta * sigma ** 2 * one_minus ** 2 / (2.0 * kappa))


def expected_integrated_variance(expiry, v0, kappa, theta):
    """E[int_0^T v_t dt] = theta T + (v0 - theta)(1 - e^{-kappa T}) / kappa."""
    return integrated_variance(expiry, v0, kappa, theta)


class VarianceRiskPremium(NamedTuple):
    """Annualised expected integrated variance under Q and P and their difference Q - P."""

    fair_q: jnp.ndarray
    fair_p: jnp.ndarray
    premium: jnp.ndarray


def variance_risk_premium(expiry, *, v0, kappa, theta, vol_risk_premium, measure="Q"):
    """E_Q - E_P of (1/T) int_0^T v dt, with (kappa, theta) given under ``measure`` ("Q" or
    "P") and lambda = ``vol_risk_premium`` linking the two (module docstring)."""
    if measure not in ("Q", "P"):
        raise ValueError(f"measure must be 'Q' or 'P', got {measure!r}")
    if measure == "Q":
        kq, tq = kappa, theta
        kp, tp = to_physical(kappa, theta, vol_risk_premium)
    else:
        kp, tp = kappa, theta
        kq, tq = to_risk_neutral(kappa, theta, vol_risk_premium)
    fair_q = fair_variance(expiry, v0, kq, tq)
    fair_p = fair_variance(expiry, v0, kp, tp)
    return VarianceRiskPremium(fair_q, fair_p, fair_q - fair_p)
