"""The one least-squares driver of jaxvol: a Levenberg–Marquardt controller with a pluggable step.

As optimistix composes its Levenberg–Marquardt from a search (the damping, accepting or
rejecting a step) and a descent (the damped Gauss–Newton step), the controller here is written
once and a *step* type supplies the model-specific algebra:

* :func:`start` evaluates the step's model at the start point and assigns the start statuses
  (the step's failed-input checks, then NON_FINITE where the model is not finite there);
* :func:`iterate` is one iteration: the step proposes a damped step, the controller evaluates
  the trial point, accepts it where the cost falls, updates Nielsen's damping (with Marquardt's
  running-max diagonal scaling, the step's ``diagonal`` of its model), applies the ftol / xtol /
  gtol tests of :class:`LMConfig` (raised to 4 machine epsilons, :func:`tolerances`) and
  freezes a lane once it has converged or failed (``jnp.where``: a frozen lane never moves);
* :func:`run` iterates every lane ``config.max_iterations`` times, or until no lane runs
  (``config.early_exit``, which changes no lane's result), and reports MAX_ITERATIONS for the
  lanes still running;
* :func:`solve` runs a batched solver under the implicit-function rule of
  :mod:`jaxvol.calibrate._implicit` and post-processes the solution into a
  :class:`~jaxvol.calibrate.FitResult` (:func:`fit_result`: bounded params, loss, rmse,
  residuals, NaN where a lane has no solution), the same for every fit of the package.

Two step types exist: the dense Levenberg–Marquardt step on a residual vector
(:class:`jaxvol.calibrate.levenberg_marquardt.DenseStep`, one lane under ``vmap``) and the
box-projected step of a two-parameter reduced problem
(:class:`jaxvol.calibrate.projected.ProjectedStep`, SVI's variable projection, every quantity a
[lanes, 1] column). The optax path (:mod:`jaxvol.calibrate.gradient_descent`) has no damping
but shares :func:`solve` and its post-processing.

A step provides: ``evaluate(point) -> (model, cost, finite)`` (``cost`` = 0.5 |r|^2, ``finite``
whether the model is usable there), ``diagonal(model)`` (the diagonal of the Gauss–Newton
matrix, a pytree like the scale), ``propose(state) -> Proposal`` (the damped step from the
state, using ``state.damping`` and ``state.scale``), ``norm(vector)`` (Euclidean norm of a point
or step) and ``converged_at(point, model, cost, ftol)`` (an extra convergence test at an
accepted trial point, or None).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxvol.calibrate import _implicit
from jaxvol.calibrate._types import FitResult, FitStatus, LMConfig, has_solution, rmse_of
from jaxvol.calibrate.transforms import Bounds, to_bounded

__all__ = ["DriverState", "Proposal", "RUNNING", "fit_result", "iterate", "run", "solve",
           "start", "tolerances"]

RUNNING = -1  #: the status of a lane still iterating (never returned)


class DriverState(NamedTuple):
    """The controller's state of a lane (or of a batch of [lanes, 1] columns): the step's
    ``point`` and ``model`` there (pytrees of the step), the cost 0.5 |r|^2, Nielsen's damping
    and growth, the running max ``scale`` of the step's diagonal, status and iterations."""

    point: Any
    model: Any
    cost: jax.Array
    damping: jax.Array
    growth: jax.Array
    scale: Any
    status: jax.Array  # int32: RUNNING or a FitStatus
    iterations: jax.Array  # int32


class Proposal(NamedTuple):
    """A step's proposal: the trial ``point``, the ``step`` taken to reach it (for the xtol
    test), the reduction of the cost the local model ``predicted``, the gradient ``cosine`` at
    the current point (MINPACK's scale-free gtol test) and whether the step is ``finite``."""

    point: Any
    step: Any
    predicted: jax.Array
    cosine: jax.Array
    finite: jax.Array


def tolerances(config: LMConfig, dtype):
    """(ftol, xtol, gtol) of ``config``, each raised to 4 machine epsilons of ``dtype``."""
    eps = float(jnp.finfo(dtype).eps)
    return (max(config.ftol, 4 * eps), max(config.xtol, 4 * eps), max(config.gtol, 4 * eps))


def start(step, point, config: LMConfig, failed=()) -> DriverState:
    """The state at ``point``. ``failed``: (condition, status) pairs in order of precedence
    (the first that holds wins; e.g. TOO_FEW_POINTS, BAD_INPUT); otherwise NON_FINITE where the
    model is not finite at the point, else running."""
    model, cost, finite = step.evaluate(point)
    status = jnp.where(finite, RUNNING, FitStatus.NON_FINITE)
    for condition, code in reversed(tuple(failed)):
        status = jnp.where(condition, code, status)
    return DriverState(point, model, cost, jnp.full_like(cost, config.initial_damping),
                       jnp.full_like(cost, 2.0), step.diagonal(model),
                       status.astype(jnp.int32), jnp.zeros_like(cost, dtype=jnp.int32))


def iterate(step, config: LMConfig, state: DriverState) -> DriverState:
    """One damped iteration (see the module docstring); frozen lanes keep their state."""
    ftol, xtol, gtol = tolerances(config, state.cost.dtype)
    proposal = step.propose(state)
    model, cost, finite = step.evaluate(proposal.point)
    reduction = state.cost - cost
    accept = finite & proposal.finite & (reduction > 0)
    predicted = proposal.predicted
    ratio = reduction / jnp.where(predicted > 0, predicted, 1.0)
    shrink = jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
    damping = jnp.where(accept, state.damping * shrink, state.damping * state.growth)
    growth = jnp.where(accept, 2.0, 2.0 * state.growth)
    small_step = step.norm(proposal.step) <= xtol * (step.norm(state.point) + xtol)
    small_reduction = accept & (reduction <= ftol * state.cost) & (predicted <= ftol * state.cost)
    converged = (proposal.cosine <= gtol) | (state.cost <= 0) | small_step | small_reduction
    extra = step.converged_at(proposal.point, model, cost, ftol)
    if extra is not None:
        converged = converged | (accept & extra)
    pick = lambda new, old: jnp.where(accept, new, old)  # noqa: E731
    new = DriverState(
        jax.tree.map(pick, proposal.point, state.point), jax.tree.map(pick, model, state.model),
        pick(cost, state.cost), damping, growth,
        jax.tree.map(jnp.maximum, state.scale, step.diagonal(model)),
        jnp.where(converged, FitStatus.CONVERGED, RUNNING).astype(jnp.int32),
        state.iterations + 1)
    running = state.status == RUNNING
    return jax.tree.map(lambda n, o: jnp.where(running, n, o), new, state)


def run(batched_iterate, state: DriverState, config: LMConfig):
    """Apply ``batched_iterate(state) -> state`` (every lane at once) ``config.max_iterations``
    times, or until no lane runs (``config.early_exit``). Returns the final state and the status
    (int32; MAX_ITERATIONS for lanes still running)."""
    if config.early_exit:
        def cond(carry):
            count, s = carry
            return (count < config.max_iterations) & jnp.any(s.status == RUNNING)

        _, final = jax.lax.while_loop(
            cond, lambda c: (c[0] + 1, batched_iterate(c[1])), (0, state))
    else:
        final = jax.lax.fori_loop(0, config.max_iterations, lambda _, s: batched_iterate(s),
                                  state)
    status = jnp.where(final.status == RUNNING, FitStatus.MAX_ITERATIONS, final.status)
    return final, status.astype(jnp.int32)


def solve(batched_solver, optimality, u0, args, weights, mask, *, bounds: Bounds,
          residuals=None, loss=None) -> FitResult:
    """Run ``batched_solver(u0, args, weights, mask) -> (u, status, iterations)`` (u: [lanes, P]
    in the unbounded coordinates of ``bounds``) with implicit derivatives from the one-lane
    optimality condition ``optimality(u, args, weights, mask) -> [P]``
    (:func:`jaxvol.calibrate.implicit_solve`), and post-process it (:func:`fit_result`)."""
    u, status, iterations = _implicit.solve(batched_solver, optimality, u0, args, weights, mask)
    return fit_result(u, status, iterations, bounds, args, weights, mask, residuals=residuals,
                      loss=loss)


def fit_result(u, status, iterations, bounds: Bounds, args, weights, mask, *, residuals=None,
               loss=None) -> FitResult:
    """The :class:`~jaxvol.calibrate.FitResult` of a solution u [lanes, P] (unbounded
    coordinates). Least squares: ``residuals(params, args) -> [lanes, M]`` unweighted residuals
    of the bounded params; the loss is 0.5 sum (weight * residual)^2 over the ``mask``ed points
    and the rmse their root mean square. Other objectives: ``loss(params, args) -> [lanes]``
    (residuals [lanes, 0], rmse NaN). Lanes without a solution (:func:`has_solution` False) get
    NaN; they are evaluated at a safe point first (double where), so a zero cotangent on a NaN
    output cannot turn into NaN upstream."""
    failed = ~has_solution(status)
    u_safe = jnp.where(failed[:, None], 0, u)
    params = jax.vmap(lambda v: to_bounded(v, bounds))(u_safe)
    nan_if_failed = lambda x: jnp.where(  # noqa: E731
        failed.reshape(failed.shape + (1,) * (x.ndim - 1)), jnp.nan, x)
    if loss is not None:
        value = loss(params, args).astype(params.dtype)
        empty = jnp.zeros((params.shape[0], 0), params.dtype)
        return FitResult(nan_if_failed(params), status, nan_if_failed(value), iterations,
                         jnp.full(status.shape, jnp.nan, params.dtype), empty)
    raw = residuals(params, args).astype(params.dtype)
    usable = mask & ~failed[:, None]
    values = jnp.where(usable, raw, 0)
    weighted = jnp.where(usable, weights * values, 0)
    value = 0.5 * jnp.sum(weighted * weighted, axis=1)
    values = nan_if_failed(values)
    return FitResult(nan_if_failed(params), status, nan_if_failed(value), iterations,
                     rmse_of(values, mask), values)
