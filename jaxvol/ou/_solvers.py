"""Fixed-iteration solvers for one lane (vmapped by the callers): a safeguarded Newton root
finder on a bracket, and a damped Newton (Levenberg) maximiser for a few parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["bracketed_root", "damped_newton_max"]


def bracketed_root(fun, lo, hi, x0, iterations):
    """Root of ``fun`` on [lo, hi] with fun(lo) > 0 > fun(hi) (Newton, bisection fallback).

    ``fun`` returns (value, derivative). Fixed iteration count; returns the last iterate.
    """
    def body(_, state):
        lo, hi, x = state
        f, d = fun(x)
        lo = jnp.where(f > 0, x, lo)
        hi = jnp.where(f > 0, hi, x)
        newton = x - f / jnp.where(d == 0, -1.0, d)
        inside = (newton > lo) & (newton < hi) & (d < 0) & jnp.isfinite(newton)
        x_next = jnp.where(inside, newton, 0.5 * (lo + hi))
        x_next = jnp.where(f == 0, x, x_next)
        return lo, hi, x_next

    _, _, x = jax.lax.fori_loop(0, iterations, body, (lo, hi, x0))
    return x


def damped_newton_max(fun, p0, lower, upper, iterations, max_step=2.0):
    """Maximise a smooth scalar ``fun`` of a few parameters from ``p0`` (box-clipped).

    Levenberg–Marquardt damping on the negative Hessian, a step is taken only when it raises
    ``fun``. Returns (p, value, gradient, hessian, newton_decrement) at the final point.
    """
    grad = jax.grad(fun)
    hess = jax.jacfwd(grad)
    eye = jnp.eye(p0.shape[0], dtype=p0.dtype)

    def body(_, state):
        p, value, damp = state
        g = grad(p)
        h = hess(p)
        scale = jnp.maximum(jnp.abs(jnp.diag(h)), 1e-12)
        a = -h + damp * jnp.diag(scale)
        step = jnp.linalg.solve(a, g)
        step = jnp.clip(step, -max_step, max_step)
        trial = jnp.clip(p + step, lower, upper)
        trial_value = fun(trial)
        better = jnp.isfinite(trial_value) & (trial_value >= value)
        p = jnp.where(better, trial, p)
        value = jnp.where(better, trial_value, value)
        damp = jnp.where(better, damp * 0.2, damp * 5.0)
        damp = jnp.clip(damp, 1e-12, 1e12)
        return p, value, damp

    init = (p0, fun(p0), jnp.asarray(1e-3, p0.dtype))
    p, value, _ = jax.lax.fori_loop(0, iterations, body, init)
    g = grad(p)
    h = hess(p)
    info = -h
    step = jnp.linalg.solve(info + 1e-300 * eye, g)
    decrement = jnp.dot(g, step)
    return p, value, g, h, decrement
