"""The one batched Levenberg–Marquardt engine of jaxvol.

Per lane: Gauss–Newton steps on the weighted, masked residuals with Nielsen's adaptive damping
and Marquardt's diagonal scaling; the Jacobian comes from :func:`jax.jacfwd`; the damped normal
equations (P x P, P small) are solved by an unrolled Cholesky factorisation. Every lane does
the same fixed work per iteration; a lane that has converged (or failed) is frozen with
``jnp.where``. The batch is a ``vmap`` over lanes, compiled once per (residual function,
shapes, config, bounds).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvol.calibrate import _implicit
from jaxvol.calibrate.linalg import cholesky_solve
from jaxvol.calibrate._types import FitResult, FitStatus, LMConfig, has_solution, rmse_of
from jaxvol.calibrate.transforms import Bounds, make_bounds, to_bounded, to_unbounded

__all__ = ["RUNNING", "batched_loop", "least_squares", "multistart", "tolerances",
           "weighted_residual_fn"]

RUNNING = -1  #: the status of a lane still iterating (never returned)


class _State(NamedTuple):
    u: jax.Array  # [P] unconstrained parameters
    residuals: jax.Array  # [M] weighted, masked residuals at u
    jacobian: jax.Array  # [M, P] their Jacobian
    cost: jax.Array  # 0.5 * |residuals|^2
    damping: jax.Array
    growth: jax.Array  # Nielsen's nu
    scale: jax.Array  # [P] running max of diag(J^T J) (Marquardt scaling)
    status: jax.Array  # int32: RUNNING or a FitStatus
    iterations: jax.Array  # int32


def weighted_residual_fn(residual_fn, bounds: Bounds):
    """r(u, args, weights, mask) = where(mask, weights * residual_fn(x(u), *args), 0)."""

    def fn(u, args, weights, mask):
        raw = residual_fn(to_bounded(u, bounds), *args).astype(u.dtype)
        return jnp.where(mask, weights * jnp.where(mask, raw, 0), 0)

    return fn


def _residuals_and_jacobian(fn, u, args, weights, mask):
    def with_aux(v):
        r = fn(v, args, weights, mask)
        return r, r

    jacobian, residuals = jax.jacfwd(with_aux, has_aux=True)(u)
    return residuals, jacobian


def _cost(residuals):
    return 0.5 * jnp.sum(residuals * residuals)


def tolerances(config: LMConfig, dtype):
    """(ftol, xtol, gtol) of ``config``, each raised to 4 machine epsilons of ``dtype``."""
    eps = float(jnp.finfo(dtype).eps)
    return (max(config.ftol, 4 * eps), max(config.xtol, 4 * eps), max(config.gtol, 4 * eps))


def _init(fn, u0, args, weights, mask, num_params, initial_damping):
    residuals, jacobian = _residuals_and_jacobian(fn, u0, args, weights, mask)
    cost = _cost(residuals)
    usable = jnp.sum(mask.astype(jnp.int32))
    too_few = usable < num_params
    bad = ~jnp.all(jnp.isfinite(u0))
    non_finite = ~jnp.isfinite(cost) | ~jnp.all(jnp.isfinite(jacobian))
    status = jnp.where(too_few, FitStatus.TOO_FEW_POINTS, jnp.where(
        bad, FitStatus.BAD_INPUT,
        jnp.where(non_finite, FitStatus.NON_FINITE, RUNNING))).astype(jnp.int32)
    diag = jnp.sum(jacobian * jacobian, axis=0)
    damping = jnp.asarray(initial_damping, u0.dtype)  # relative: multiplies scaled diag(J^T J)
    return _State(u0, residuals, jacobian, cost, damping, jnp.asarray(2.0, u0.dtype),
                  diag, status, jnp.asarray(0, jnp.int32))


def _damped_step(state: _State):
    """Solve (J^T J + lambda * D) delta = -J^T r; return delta, gradient, predicted reduction."""
    jacobian = state.jacobian  # elementwise products + sums: fast across lanes under vmap
    jtj = jnp.sum(jacobian[:, :, None] * jacobian[:, None, :], axis=0)
    gradient = jnp.sum(jacobian * state.residuals[:, None], axis=0)
    floor = jnp.finfo(state.u.dtype).eps * jnp.max(state.scale)
    scale = jnp.maximum(state.scale, floor)
    delta = cholesky_solve(jtj + jnp.diag(state.damping * scale), -gradient)
    predicted = -jnp.sum(gradient * delta) - 0.5 * jnp.sum(delta * jnp.sum(jtj * delta, axis=1))
    return delta, gradient, predicted


def _gradient_cosine(state: _State, gradient):
    column_norms = jnp.sqrt(jnp.sum(state.jacobian * state.jacobian, axis=0))
    residual_norm = jnp.sqrt(2.0 * state.cost)
    denominator = column_norms * residual_norm
    safe = denominator > 0
    cosine = jnp.abs(gradient) / jnp.where(safe, denominator, 1.0)
    return jnp.max(jnp.where(safe, cosine, 0.0))


def _iterate(fn, args, weights, mask, config: LMConfig, state: _State) -> _State:
    ftol, xtol, gtol = tolerances(config, state.u.dtype)
    delta, gradient, predicted = _damped_step(state)
    trial_u = state.u + delta
    trial_r, trial_j = _residuals_and_jacobian(fn, trial_u, args, weights, mask)
    trial_cost = _cost(trial_r)
    reduction = state.cost - trial_cost
    finite = jnp.isfinite(trial_cost) & jnp.all(jnp.isfinite(trial_j))
    accept = finite & (reduction > 0) & jnp.all(jnp.isfinite(delta))
    ratio = reduction / jnp.where(predicted > 0, predicted, 1.0)
    shrink = jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
    damping = jnp.where(accept, state.damping * shrink, state.damping * state.growth)
    growth = jnp.where(accept, 2.0, 2.0 * state.growth)
    small_step = jnp.sqrt(delta @ delta) <= xtol * (jnp.sqrt(state.u @ state.u) + xtol)
    small_reduction = accept & (reduction <= ftol * state.cost) & (predicted <= ftol * state.cost)
    converged = ((_gradient_cosine(state, gradient) <= gtol) | (state.cost <= 0)
                 | small_step | small_reduction)
    new = _State(
        jnp.where(accept, trial_u, state.u), jnp.where(accept, trial_r, state.residuals),
        jnp.where(accept, trial_j, state.jacobian), jnp.where(accept, trial_cost, state.cost),
        damping, growth, jnp.maximum(state.scale, jnp.sum(trial_j * trial_j, axis=0)),
        jnp.where(converged, FitStatus.CONVERGED, RUNNING).astype(jnp.int32),
        state.iterations + 1)
    running = state.status == RUNNING
    return jax.tree.map(lambda n, o: jnp.where(running, n, o), new, state)


def batched_loop(fn, u0, args, weights, mask, config: LMConfig):
    """Run the lanes ([lanes, ...] inputs) for config.max_iterations frozen-aware iterations."""
    num_params = u0.shape[-1]
    start = lambda u, a, w, m: _init(fn, u, a, w, m, num_params, config.initial_damping)  # noqa
    init = jax.vmap(start)(u0, args, weights, mask)
    step = jax.vmap(lambda s, a, w, m: _iterate(fn, a, w, m, config, s))

    if config.early_exit:
        def cond(carry):
            count, state = carry
            return (count < config.max_iterations) & jnp.any(state.status == RUNNING)

        _, final = jax.lax.while_loop(
            cond, lambda c: (c[0] + 1, step(c[1], args, weights, mask)), (0, init))
    else:
        final = jax.lax.fori_loop(
            0, config.max_iterations, lambda _, s: step(s, args, weights, mask), init)
    status = jnp.where(final.status == RUNNING, FitStatus.MAX_ITERATIONS, final.status)
    return final.u, status.astype(jnp.int32), final.iterations


def least_squares(residual_fn, params0, *args, weights=None, mask=None, lower=None, upper=None,
                  config: LMConfig = LMConfig()) -> FitResult:
    """Fit every lane of a batch by Levenberg–Marquardt.

    Args:
      residual_fn: ``residual_fn(params[P], *lane_args) -> residuals[M]`` for ONE lane; a
        module-level function (it is a static jit argument: a fresh lambda per call recompiles).
      params0: start parameters [lanes, P] (warm start: pass the previous fit's params).
      *args: arrays with a leading lanes axis, sliced per lane into ``residual_fn``.
      weights: [lanes, M] multipliers of the residuals (e.g. 1/spread), default 1.
      mask: [lanes, M] bool, False drops a point (its residual may be NaN), default all True.
      lower, upper: concrete box bounds [P] (+-inf or None for unbounded), enforced by the smooth
        transforms of :mod:`jaxvol.calibrate.transforms`.
      config: :class:`LMConfig`.

    Returns:
      :class:`FitResult`. Lanes never interact: a failing lane gets a status and NaN params and
      changes no other lane's value or gradient. ``params`` are differentiable with respect to
      ``args`` and ``weights`` by the implicit-function theorem at the solution (the start point
      has zero derivative).
    """
    params0 = jnp.asarray(params0)
    if params0.ndim != 2:
        raise ValueError(f"params0 must have shape [lanes, P], got {params0.shape}")
    if not jnp.issubdtype(params0.dtype, jnp.floating):
        raise ValueError(f"params0 must be floating point, got dtype {params0.dtype}")
    lanes = params0.shape[0]
    _check_lanes(args, lanes)
    bounds = make_bounds(lower, upper, params0.shape[1])
    return _least_squares(residual_fn, config, bounds, params0, tuple(args), weights, mask)


def _check_lanes(args, lanes):
    for i, leaf in enumerate(jax.tree.leaves(args)):
        if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != lanes:
            raise ValueError(
                f"argument leaf {i} must have a leading lanes axis of {lanes}, got shape "
                f"{jnp.shape(leaf)}")


def _default_weights_mask(residual_fn, params0, args, weights, mask):
    lane_args = jax.tree.map(lambda a: a[0], args)
    shape = jax.eval_shape(residual_fn, params0[0], *lane_args).shape
    if len(shape) != 1:
        raise ValueError(f"residual_fn must return a vector [M] per lane, got shape {shape}")
    full = (params0.shape[0], shape[0])
    weights = jnp.ones(full, params0.dtype) if weights is None else jnp.asarray(weights)
    mask = jnp.ones(full, bool) if mask is None else jnp.asarray(mask)
    if weights.shape != full or mask.shape != full:
        raise ValueError(f"weights and mask must have shape {full}, got {weights.shape} and "
                         f"{mask.shape}")
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
    return weights.astype(params0.dtype), mask


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _least_squares(residual_fn, config, bounds, params0, args, weights, mask):
    weights, mask = _default_weights_mask(residual_fn, params0, args, weights, mask)
    fn = weighted_residual_fn(residual_fn, bounds)
    u0 = jax.vmap(lambda x: to_unbounded(x, bounds))(params0)
    u, status, iterations = _implicit.solve(
        lambda *a: batched_loop(fn, *a, config), _implicit.least_squares_gradient(fn),
        u0, args, weights, mask)
    failed = ~has_solution(status)
    # Double where: failed lanes are evaluated at a safe point, then overwritten with NaN, so a
    # zero cotangent on a NaN output cannot turn into NaN upstream.
    u_safe = jnp.where(failed[:, None], 0, u)
    params = jax.vmap(lambda v: to_bounded(v, bounds))(u_safe)
    raw = jax.vmap(lambda p, a: residual_fn(p, *a))(params, args).astype(params.dtype)
    usable = mask & ~failed[:, None]
    residuals = jnp.where(usable, raw, 0)
    weighted = jnp.where(usable, weights * residuals, 0)
    loss = 0.5 * jnp.sum(weighted * weighted, axis=1)
    nan_if_failed = lambda x: jnp.where(  # noqa: E731
        failed.reshape(failed.shape + (1,) * (x.ndim - 1)), jnp.nan, x)
    residuals = nan_if_failed(residuals)
    return FitResult(nan_if_failed(params), status, nan_if_failed(loss), iterations,
                     rmse_of(residuals, mask), residuals)


def multistart(residual_fn, starts, *args, weights=None, mask=None, lower=None, upper=None,
               config: LMConfig = LMConfig()) -> FitResult:
    """:func:`least_squares` from several start points per lane; keeps each lane's best.

    ``starts`` is [lanes, S, P]; every (lane, start) pair is one engine lane (args, weights and
    mask are repeated S times), and per lane the start with the lowest loss among those that
    did not fail wins (ties: the first). A lane whose starts all fail reports the first start's
    status.
    """
    starts = jnp.asarray(starts)
    if starts.ndim != 3:
        raise ValueError(f"starts must have shape [lanes, S, P], got {starts.shape}")
    lanes, count, num_params = starts.shape
    _check_lanes(args, lanes)
    repeat = lambda x: None if x is None else jnp.repeat(jnp.asarray(x), count, axis=0)  # noqa
    result = least_squares(residual_fn, starts.reshape(lanes * count, num_params),
                           *jax.tree.map(repeat, args), weights=repeat(weights),
                           mask=repeat(mask), lower=lower, upper=upper, config=config)
    result = jax.tree.map(lambda x: x.reshape((lanes, count) + x.shape[1:]), result)
    usable = has_solution(result.status)
    best = jnp.argmin(jnp.where(usable, result.loss, jnp.inf), axis=1)
    return jax.tree.map(lambda x: jnp.take_along_axis(
        x, best.reshape((lanes, 1) + (1,) * (x.ndim - 2)), axis=1)[:, 0], result)
