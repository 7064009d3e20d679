"""Polynomial-in-delta smile (Clark, "Foreign Exchange Option Pricing", 2011, sec. 3.7).

``ln sigma(K) = sum_j c_j x^j`` with the "simple delta" ``x = N(ln(F/K) / (sigma_ATM sqrt(T)))``,
which uses the ATM vol instead of sigma(K) so that the smile is explicit in the strike (no fixed
point). A quadratic (3 coefficients) fits ATM, the 25-delta risk reversal and market strangle; a
quartic (5 coefficients) adds the 10-delta pair. Working in ln sigma keeps the smile positive.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvol._edge import edge
from jaxvol._dtypes import as_float, float_dtype
from jaxvol.fx._math import norm_cdf

__all__ = ["polynomial_kernel", "polynomial_vol", "simple_delta"]


def simple_delta(log_moneyness, atm_std_dev):
    """Clark's simple delta N(-ln(K/F) / (sigma_ATM sqrt(T)))."""
    return norm_cdf(-log_moneyness / atm_std_dev)


def polynomial_kernel(log_moneyness, coefficients, atm_std_dev):
    """sigma at ``log_moneyness`` = ln(K/F) for coefficients c_0.. (lowest order first)."""
    x = simple_delta(log_moneyness, atm_std_dev)
    log_vol = jnp.zeros_like(x)
    for c in coefficients[::-1]:  # Horner
        log_vol = log_vol * x + c
    return jnp.exp(log_vol)


@edge
def polynomial_vol(strike, *, forward, expiry, atm_vol, coefficients):
    """Polynomial-in-delta vol at ``strike``; ``coefficients`` on the last axis (broadcasts)."""
    dtype = float_dtype(strike, forward, expiry, atm_vol, coefficients)
    strike, forward, expiry, atm_vol = (as_float(dtype, a)[0]
                                        for a in (strike, forward, expiry, atm_vol))
    (coefficients,) = as_float(dtype, coefficients)
    return _polynomial_batch(jnp.log(strike / forward), coefficients, atm_vol * jnp.sqrt(expiry))


@jax.jit
def _polynomial_batch(log_moneyness, coefficients, atm_std_dev):
    kernel = jnp.vectorize(polynomial_kernel, signature="(),(n),()->()")
    return kernel(log_moneyness, coefficients, atm_std_dev)
