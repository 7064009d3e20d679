"""Exact simulation of an Ornstein–Uhlenbeck process on a given (irregular) time grid."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvol._dtypes import float_dtype
from jaxvol.ou.likelihood import conditional_variance_factor

__all__ = ["simulate"]


def _path(key, times, lam, mu, eta, x0, has_x0):
    """One series: x_{i+1} = mu + phi_i (x_i - mu) + eta sqrt(q_i) eps_i (exact)."""
    normals = jax.random.normal(key, times.shape, times.dtype)
    start = jnp.where(has_x0, x0, mu + eta * jnp.sqrt(0.5 / lam) * normals[0])
    dt = times[1:] - times[:-1]
    phi = jnp.exp(-lam * dt)
    sd = eta * jnp.sqrt(conditional_variance_factor(lam, dt))

    def step(x, inputs):
        ph, s, eps = inputs
        x = mu + ph * (x - mu) + s * eps
        return x, x

    _, rest = jax.lax.scan(step, start, (phi, sd, normals[1:]))
    return jnp.concatenate([start[None], rest])


@jax.jit
def _simulate(key, times, lam, mu, eta, x0, has_x0):
    batch = times.shape[:-1]
    flat = lambda a: jnp.broadcast_to(a, batch).reshape(-1)  # noqa: E731
    t = times.reshape(-1, times.shape[-1])
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(t.shape[0]))
    out = jax.vmap(_path, in_axes=(0, 0, 0, 0, 0, 0, None))(
        keys, t, flat(lam), flat(mu), flat(eta), flat(x0), has_x0)
    return out.reshape(times.shape)


def simulate(key, times, *, lam, mu, eta, x0=None):
    """Exact OU paths dX = -lam (X - mu) dt + eta dW sampled at ``times``.

    Args:
        key: a JAX random key; series ``i`` (row-major over the batch) uses
            ``fold_in(key, i)``, so a series' path does not depend on the batch around it.
        times: [..., ticks] increasing times in seconds.
        lam, mu, eta: parameters broadcastable to the batch shape ``times.shape[:-1]``.
        x0: starting values (batch shape); default a draw from the stationary law
            N(mu, eta^2 / (2 lam)).

    Returns:
        Array of ``times.shape`` in the float dtype of the inputs.
    """
    dtype = float_dtype(times, lam, mu, eta)
    times = jnp.asarray(times, dtype)
    if times.ndim < 1 or times.shape[-1] < 1:
        raise ValueError(f"times must be [..., ticks] with ticks >= 1; got {times.shape}")
    lam, mu, eta = (jnp.asarray(v, dtype) for v in (lam, mu, eta))
    has_x0 = x0 is not None
    x0 = jnp.asarray(0.0 if x0 is None else x0, dtype)
    return _simulate(key, times, lam, mu, eta, x0, has_x0)
