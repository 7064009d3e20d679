"""Capped-iteration solvers for one lane (vmapped by the callers; while loops that stop at
convergence): a safeguarded Newton root finder on a bracket, and a damped Newton (Levenberg)
maximiser for a few parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["bracketed_root", "damped_newton_max", "newton_summary", "value_grad_hessian"]


def bracketed_root(fun, lo, hi, x0, iterations, skip=False):
    """Root of ``fun`` on [lo, hi] with fun(lo) > 0 > fun(hi) (Newton, bisection fallback).

    ``fun`` returns (value, derivative). At most ``iterations`` steps (a while loop that stops
    once an accepted Newton step is below 1e-11 (1 + |x|): quadratic convergence leaves the
    iterate ~1e-20 from the root) or the bracket is below 1e-12 (1 + |x|); ``skip`` (bool)
    marks a lane whose root is not wanted (it returns ``x0`` at once). Returns the last iterate.
    """
    def cond(state):
        i, _, _, _, done = state
        return (i < iterations) & ~done

    def body(state):
        i, lo, hi, x, _ = state
        f, d = fun(x)
        lo = jnp.where(f > 0, x, lo)
        hi = jnp.where(f > 0, hi, x)
        newton = x - f / jnp.where(d == 0, -1.0, d)
        inside = (newton > lo) & (newton < hi) & (d < 0) & jnp.isfinite(newton)
        x_next = jnp.where(inside, newton, 0.5 * (lo + hi))
        done = ((f == 0) | (inside & (jnp.abs(newton - x) < 1e-11 * (1.0 + jnp.abs(x))))
                | (hi - lo < 1e-12 * (1.0 + jnp.abs(x))))
        x_next = jnp.where(f == 0, x, x_next)
        return i + 1, lo, hi, x_next, done

    _, _, _, x, _ = jax.lax.while_loop(cond, body, (jnp.asarray(0), lo, hi, x0,
                                                     jnp.asarray(skip)))
    return x


def damped_newton_max(fun, p0, lower, upper, iterations, max_step=2.0):
    """Maximise a smooth scalar ``fun`` of a few parameters from ``p0`` (box-clipped).

    Levenberg–Marquardt damping on the negative Hessian, a step is taken only when it raises
    ``fun``; at most ``iterations`` steps, stopping early (a while loop) once the Newton
    decrement is below 1e-12 relative. Returns the final point (its value, gradient, Hessian
    and decrement come from :func:`newton_summary`).
    """
    eye = jnp.eye(p0.shape[0], dtype=p0.dtype)

    def cond(state):
        i, _, _, _, done = state
        return (i < iterations) & ~done

    def body(state):
        i, p, value, damp, _ = state
        _, g, h = value_grad_hessian(fun, p)
        g, h = _project(p, g, h, lower, upper)
        # stop once the undamped Newton decrement is negligible (the converged-status test
        # of the callers is 1e-8 relative): later iterations would move p by ~1e-12 only
        full = jnp.linalg.solve(-h + 1e-300 * eye, g)
        done = jnp.abs(jnp.dot(g, full)) < 1e-12 * jnp.maximum(1.0, jnp.abs(value))
        scale = jnp.maximum(jnp.abs(jnp.diag(h)), 1e-12)
        a = -h + damp * jnp.diag(scale)
        step = jnp.linalg.solve(a, g)
        step = jnp.clip(step, -max_step, max_step)
        trial = jnp.clip(p + step, lower, upper)
        trial_value = fun(trial)
        better = jnp.isfinite(trial_value) & (trial_value >= value) & ~done
        p = jnp.where(better, trial, p)
        value = jnp.where(better, trial_value, value)
        damp = jnp.where(better, damp * 0.2, damp * 5.0)
        damp = jnp.clip(damp, 1e-12, 1e12)
        return i + 1, p, value, damp, done

    init = (jnp.asarray(0), p0, fun(p0), jnp.asarray(1e-3, p0.dtype), jnp.asarray(False))
    _, p, _, _, _ = jax.lax.while_loop(cond, body, init)
    return p


def _project(p, g, h, lower, upper):
    """Freeze the coordinates on a bound whose gradient points outwards (projected Newton):
    the others then converge to their optimum given the bound, so the decrement test and
    the implicit derivative (score = 0 in the free coordinates) hold at a bound too."""
    active = ((p <= lower) & (g < 0)) | ((p >= upper) & (g > 0))
    g = jnp.where(active, 0.0, g)
    h = jnp.where(active[:, None] | active[None, :], 0.0, h)
    return g, h - jnp.diag(jnp.where(active, 1.0, 0.0))


def value_grad_hessian(fun, p):
    """(f, gradient, Hessian) of a scalar ``fun`` of a few parameters in one forward-over-
    forward pass (P + P^2 tangents carried through the same loop; no reverse-mode tape of a
    scan over the ticks, as jacfwd(grad) of the Kalman scan does)."""
    basis = jnp.eye(p.shape[0], dtype=p.dtype)

    def first(q):
        value, g = jax.vmap(lambda e: jax.jvp(fun, (q,), (e,)), out_axes=(None, 0))(basis)
        return g, (g, value)

    h, (g, value) = jax.jacfwd(first, has_aux=True)(p)
    return value, g, 0.5 * (h + h.T)


def newton_summary(fun, p):
    """(value, gradient, hessian, newton_decrement) of ``fun`` at ``p`` (differentiable: the
    callers evaluate it at the implicitly differentiated optimum)."""
    value, g, h = value_grad_hessian(fun, p)
    eye = jnp.eye(p.shape[0], dtype=p.dtype)
    step = jnp.linalg.solve(-h + 1e-300 * eye, g)
    return value, g, h, jnp.dot(g, step)
