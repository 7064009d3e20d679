"""The two-parameter, box-projected Levenberg–Marquardt controller of separable fits.

A separable least-squares problem (some parameters enter linearly) reduces to a small problem in
the nonlinear ones (variable projection: Golub & Pereyra 1973, Kaufman 1975): the model supplies
``evaluate(m, log_sigma) -> (coefficients, cost, gradient, hessian)`` (the linear coefficients
solved at the point, the reduced cost, its gradient and Gauss–Newton matrix, each per lane as
[lanes, 1] columns), and this module runs the controller the dense engine
(:mod:`jaxvol.calibrate.levenberg_marquardt`) also runs: Nielsen's damping with Marquardt's
running-max scaling, the ftol / xtol / gtol tests of :class:`LMConfig` (raised to 4 eps), lane
freezing and an early exit once no lane runs. Two things are specific to the reduced problem:
steps are projected onto a box of the two parameters (a held coordinate's gradient is zeroed),
and a trust cap bounds one step by ``max_step`` times a per-lane ``span`` (and ``max_step`` in
the second coordinate). The 2 x 2 solves are closed-form. :func:`compacted` re-runs a function
on the lanes still pending, gathered a fixed number at a time (the slow tail of a batch).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvol.calibrate._types import FitStatus, LMConfig
from jaxvol.calibrate.levenberg_marquardt import RUNNING, tolerances

__all__ = ["ReducedState", "compacted", "free_gradient", "reduced_solve", "reduced_step",
           "start_state"]


class ReducedState(NamedTuple):
    """Per-lane state of the reduced solver; every field a [lanes, 1] column (coefficients,
    gradient, hessian and scale: tuples of them)."""

    m: jax.Array
    log_sigma: jax.Array
    coefficients: tuple
    cost: jax.Array
    gradient: tuple
    hessian: tuple  # (hmm, hmt, htt)
    damping: jax.Array
    growth: jax.Array
    scale: tuple  # running max of diag(H) (Marquardt scaling)
    status: jax.Array
    iterations: jax.Array


def free_gradient(gradient, m, log_sigma, box):
    """The gradient with the components that push against an active bound of theta zeroed
    (projected gradient), and whether each coordinate is held at its bound."""
    (gm, gt), (m_lo, m_hi, t_lo, t_hi) = gradient, box
    hold_m = ((m <= m_lo) & (gm > 0)) | ((m >= m_hi) & (gm < 0))
    hold_t = ((log_sigma <= t_lo) & (gt > 0)) | ((log_sigma >= t_hi) & (gt < 0))
    return (jnp.where(hold_m, 0.0, gm), jnp.where(hold_t, 0.0, gt)), hold_m | hold_t


def reduced_step(evaluate, box, span, max_step, config, state: ReducedState) -> ReducedState:
    """One projected Levenberg–Marquardt iteration of every lane (see the module docstring)."""
    ftol, xtol, gtol = tolerances(config, state.m.dtype)
    hmm, hmt, htt = state.hessian
    (gm, gt), held = free_gradient(state.gradient, state.m, state.log_sigma, box)
    hmt_free = jnp.where(held, 0.0, hmt)
    floor = jnp.finfo(state.m.dtype).eps * jnp.maximum(*state.scale)
    dm_scale, dt_scale = (jnp.maximum(s, floor) for s in state.scale)
    p = hmm + state.damping * dm_scale
    q = htt + state.damping * dt_scale
    det = p * q - hmt_free * hmt_free
    step_m = -(q * gm - hmt_free * gt) / det
    step_t = -(p * gt - hmt_free * gm) / det
    # trust cap: |dm| <= max_step * span, |d log sigma| <= max_step. From a grid
    # start the first Gauss–Newton step often overshoots far outside the data, and the damping
    # would need several rejected steps to find a sensible length.
    cap = jnp.minimum(1.0, max_step * jnp.minimum(span / jnp.abs(step_m),
                                                   1.0 / jnp.abs(step_t)))
    m_lo, m_hi, t_lo, t_hi = box
    trial_m = jnp.clip(state.m + step_m * cap, m_lo, m_hi)  # projected onto the box
    trial_t = jnp.clip(state.log_sigma + step_t * cap, t_lo, t_hi)
    step_m, step_t = trial_m - state.m, trial_t - state.log_sigma
    g_m, g_t = state.gradient
    predicted = -(g_m * step_m + g_t * step_t) - 0.5 * (
        hmm * step_m * step_m + 2.0 * hmt * step_m * step_t + htt * step_t * step_t)
    coefficients, cost, gradient, hessian = evaluate(trial_m, trial_t)
    reduction = state.cost - cost
    finite = (jnp.isfinite(cost) & jnp.isfinite(step_m) & jnp.isfinite(step_t)
              & functools.reduce(jnp.logical_and, [jnp.isfinite(v) for v in gradient + hessian]))
    accept = finite & (reduction > 0)
    ratio = reduction / jnp.where(predicted > 0, predicted, 1.0)
    shrink = jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
    damping = jnp.where(accept, state.damping * shrink, state.damping * state.growth)
    growth = jnp.where(accept, 2.0, 2.0 * state.growth)
    step_norm = jnp.sqrt(step_m * step_m + step_t * step_t)
    theta_norm = jnp.sqrt(state.m * state.m + state.log_sigma * state.log_sigma)
    small_step = step_norm <= xtol * (theta_norm + xtol)
    small_reduction = accept & (reduction <= ftol * state.cost) & (predicted <= ftol * state.cost)
    residual_norm = jnp.sqrt(2.0 * state.cost)
    cosine = jnp.maximum(*[jnp.abs(g) / jnp.where(h > 0, jnp.sqrt(h) * residual_norm, jnp.inf)
                           for g, h in ((gm, hmm), (gt, htt))])
    # ... and at the accepted point: the full Gauss–Newton step from it (held coordinates
    # fixed) would lower the cost by at most ftol (saves the confirming iteration)
    (g0, g1), held_new = free_gradient(gradient, trial_m, trial_t, box)
    h0, h1, h2 = hessian
    h1 = jnp.where(held_new, 0.0, h1)
    det_new = h0 * h2 - h1 * h1
    next_gain = 0.5 * (h2 * g0 * g0 - 2.0 * h1 * g0 * g1 + h0 * g1 * g1) / det_new
    converged = ((cosine <= gtol) | (state.cost <= 0) | small_step | small_reduction
                 | (accept & (det_new > 0) & (next_gain <= ftol * cost)))
    pick = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
    new = ReducedState(
        pick(trial_m, state.m), pick(trial_t, state.log_sigma),
        tuple(map(pick, coefficients, state.coefficients)), pick(cost, state.cost),
        tuple(map(pick, gradient, state.gradient)), tuple(map(pick, hessian, state.hessian)),
        damping, growth,
        (jnp.maximum(state.scale[0], hessian[0]), jnp.maximum(state.scale[1], hessian[2])),
        jnp.where(converged, FitStatus.CONVERGED, RUNNING).astype(jnp.int32),
        state.iterations + 1)
    running = state.status == RUNNING
    return jax.tree.map(lambda n, o: jnp.where(running, n, o), new, state)


def start_state(evaluate, m, log_sigma, ok, config: LMConfig) -> ReducedState:
    """The state at (m, log_sigma) ([lanes, 1]): BAD_INPUT where ``ok`` is False, NON_FINITE
    where the model is not finite there, else running."""
    coefficients, cost, gradient, hessian = evaluate(m, log_sigma)
    finite = jnp.isfinite(cost) & functools.reduce(
        jnp.logical_and, [jnp.isfinite(v) for v in gradient + hessian])
    status = jnp.where(~ok, FitStatus.BAD_INPUT,
                       jnp.where(finite, RUNNING, FitStatus.NON_FINITE)).astype(jnp.int32)
    one = jnp.ones_like(m)
    return ReducedState(m, log_sigma, coefficients, cost, gradient, hessian,
                        config.initial_damping * one, 2.0 * one, (hessian[0], hessian[2]),
                        status, jnp.zeros_like(m, dtype=jnp.int32))


def reduced_solve(evaluate, box, span, max_step, config: LMConfig, state: ReducedState):
    """Iterate :func:`reduced_step` until every lane is frozen or ``config.max_iterations``;
    returns the final state and the status (MAX_ITERATIONS for lanes still running)."""
    def cond(carry):
        count, s = carry
        return (count < config.max_iterations) & jnp.any(s.status == RUNNING)

    step = functools.partial(reduced_step, evaluate, box, span, max_step, config)
    _, state = jax.lax.while_loop(cond, lambda c: (c[0] + 1, step(c[1])), (0, state))
    status = jnp.where(state.status == RUNNING, FitStatus.MAX_ITERATIONS, state.status)
    return state, status


def compacted(pending, lanes, fn, arrays, outputs):
    """Re-run ``fn`` on the pending lanes only, gathered ``lanes`` at a time from the batch.

    ``fn(valid, *gathered_arrays) -> gathered outputs``; each round scatters its results into
    ``outputs`` (a tuple of [batch, ...] arrays) and clears those lanes from ``pending``."""
    size = pending.shape[0]

    def one_round(carry):
        pending, outputs = carry
        index = jnp.nonzero(pending, size=lanes, fill_value=0)[0]
        valid = jnp.arange(lanes) < jnp.sum(pending.astype(jnp.int32))
        new = fn(valid, *(x[index] for x in arrays))
        target = jnp.where(valid, index, size)  # out of range: dropped
        return (pending.at[target].set(False, mode="drop"),
                tuple(o.at[target].set(n, mode="drop") for o, n in zip(outputs, new)))

    return jax.lax.while_loop(lambda carry: jnp.any(carry[0]), one_round,
                              (pending, outputs))[1]
