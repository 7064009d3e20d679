"""Ornstein–Uhlenbeck log-likelihoods for one irregularly sampled series (scalar kernels).

The model is dX = -lam (X - mu) dt + eta dW. Over a gap dt the transition is Gaussian with
phi = exp(-lam dt) and conditional variance eta^2 (1 - phi^2) / (2 lam), written here as
eta^2 * q with q = -expm1(-2 lam dt) / (2 lam), so no cancellation occurs for lam dt -> 0.
The first point is drawn from the stationary law N(mu, eta^2 / (2 lam)).

All kernels take one series as 1-D arrays whose valid ticks form a prefix (``valid``), so
padded series vmap without branching; :func:`jaxvol.ou.fit` moves masked ticks to the end.

* :func:`exact_profile` - the exact likelihood with mu (GLS) and eta^2 (scale) profiled out,
  for a per-transition lam (constant, or lam_i = exp(beta' z_i) for covariates).
* :func:`kalman_profile` - the likelihood of X observed with independent Gaussian noise of
  per-tick variance r_i (a Kalman filter), mu profiled out by running the filter on the data
  and on the constant regressor at once (the gains do not depend on the data).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["exact_profile", "kalman_profile", "conditional_variance_factor"]

_LOG_2PI = math.log(2.0 * math.pi)


def conditional_variance_factor(lam, dt):
    """q = (1 - exp(-2 lam dt)) / (2 lam), evaluated with expm1 (equals dt as lam -> 0)."""
    x = 2.0 * lam * dt
    small = x < 1e-12
    safe = jnp.where(small, 1.0, x)
    return jnp.where(small, dt, -jnp.expm1(-safe) / safe * dt)


def exact_profile(lam_transition, lam_first, times, values, valid, restricted=False):
    """Exact OU log-likelihood profiled over mu and eta^2 for one series.

    Args:
        lam_transition: reversion speed for each transition i -> i+1 (shape [ticks - 1]).
        lam_first: reversion speed for the stationary law of the first point (scalar).
        times, values: [ticks] arrays, seconds and levels; ``valid`` [ticks] bool, a prefix.

        restricted: 0/False (ML) or 1/True: the restricted (REML) likelihood of the contrasts free of mu:
            eta^2 estimated with n - 1 degrees of freedom and the term -1/2 log of mu's
            information added (the Cox–Reid adjusted profile; it removes the 2/T of the
            bias that estimating mu adds and gives intervals with their nominal coverage).

    Returns:
        (loglik, mu_hat, eta2_hat), scalars (the maximum over mu and eta^2 at this lam).
    """
    dt = jnp.where(valid[1:], times[1:] - times[:-1], 1.0)
    lam = lam_transition
    phi = jnp.exp(-lam * dt)
    one_minus_phi = -jnp.expm1(-lam * dt)
    q = conditional_variance_factor(lam, dt)
    w = valid[1:]
    y = values[1:] - phi * values[:-1]
    y = jnp.where(w, y, 0.0)
    q0 = 0.5 / lam_first
    x0 = values[0]
    # GLS for mu with regressor a = 1 - phi (a^2 / q = 2 lam tanh(lam dt / 2), no cancellation)
    a_over_q = jnp.where(w, one_minus_phi / q, 0.0)
    a2_over_q = jnp.where(w, 2.0 * lam * jnp.tanh(0.5 * lam * dt), 0.0)
    information = 1.0 / q0 + jnp.sum(a2_over_q)
    mu = (x0 / q0 + jnp.sum(a_over_q * y)) / information
    e = jnp.where(w, y - mu * one_minus_phi, 0.0)
    n = 1.0 + jnp.sum(w).astype(values.dtype)
    ssq = (x0 - mu) ** 2 / q0 + jnp.sum(jnp.where(w, e * e / q, 0.0))
    logdet = jnp.log(q0) + jnp.sum(jnp.where(w, jnp.log(q), 0.0))
    r = jnp.asarray(restricted, values.dtype)  # 0: ML profile, 1: REML (a weight, so vmappable)
    eta2 = ssq / (n - r)
    loglik = (-0.5 * (n - r) * (_LOG_2PI + jnp.log(eta2) + 1.0) - 0.5 * logdet
              - 0.5 * r * jnp.log(information))
    return loglik, mu, eta2


def kalman_profile(lam, stationary_variance, noise, times, values, valid):
    """Log-likelihood of an OU observed with noise, profiled over mu, for one series.

    Y_i = X_i + e_i, e_i ~ N(0, noise_i); X stationary OU with speed ``lam`` and stationary
    variance ``stationary_variance`` (= eta^2 / (2 lam)).

    Returns:
        (loglik, mu_hat), scalars.
    """
    dt = jnp.where(valid[1:], times[1:] - times[:-1], 0.0)
    dt = jnp.concatenate([dt, jnp.zeros((1,), dt.dtype)])
    phi = jnp.exp(-lam * dt)
    q = -jnp.expm1(-2.0 * lam * dt)  # conditional variance / stationary variance
    s2 = stationary_variance
    zero = jnp.zeros((), values.dtype)

    def step(carry, tick):
        m_y, m_1, p = carry
        y, r, ok, ph, qq = tick
        f = p + r
        gain = p / f
        e_y = y - m_y
        e_1 = 1.0 - m_1
        m_y = m_y + gain * e_y
        m_1 = m_1 + gain * e_1
        p_filt = p * r / f
        new = (ph * m_y, ph * m_1, ph * ph * p_filt + s2 * qq)
        carry = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, carry)
        out = (jnp.where(ok, e_y, zero), jnp.where(ok, e_1, zero),
               jnp.where(ok, f, jnp.ones((), f.dtype)))
        return carry, out

    init = (zero, zero, s2 + zero)
    _, (e_y, e_1, f) = jax.lax.scan(step, init, (values, noise, valid, phi, q))
    s_yy = jnp.sum(e_y * e_y / f)
    s_y1 = jnp.sum(e_y * e_1 / f)
    s_11 = jnp.sum(e_1 * e_1 / f)
    mu = s_y1 / s_11
    n = jnp.sum(valid).astype(values.dtype)
    loglik = -0.5 * (n * _LOG_2PI + jnp.sum(jnp.log(f)) + s_yy - s_y1 * mu)
    return loglik, mu
