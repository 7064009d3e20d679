"""The plain Levenberg–Marquardt step of the driver, and the batched engine built on it.

Per lane: Gauss–Newton steps on the weighted, masked residuals with Nielsen's adaptive damping
and Marquardt's diagonal scaling (the controller of :mod:`jaxvol.calibrate.driver`); the
Jacobian comes from :func:`jax.jacfwd`; the damped normal equations (P x P, P small) are solved
by an unrolled Cholesky factorisation. Every lane does the same fixed work per iteration; a lane
that has converged (or failed) is frozen with ``jnp.where``. The batch is a ``vmap`` over lanes,
compiled once per (residual function, shapes, config, bounds).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jaxvol.calibrate import _implicit, driver
from jaxvol.calibrate.linalg import cholesky_solve
from jaxvol.calibrate._types import FitResult, FitStatus, LMConfig, has_solution
from jaxvol.calibrate.transforms import Bounds, make_bounds, to_bounded, to_unbounded

__all__ = ["DenseStep", "RUNNING", "batched_loop", "check_lanes", "least_squares", "multistart",
           "tolerances", "weighted_residual_fn"]

RUNNING = driver.RUNNING  #: the status of a lane still iterating (never returned)
tolerances = driver.tolerances


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


@dataclasses.dataclass(frozen=True)
class DenseStep:
    """The plain Levenberg–Marquardt step of ONE lane (the driver's step type; ``vmap`` over
    lanes): point u [P] (unbounded coordinates), model (residuals [M], Jacobian [M, P]) of the
    weighted residual function ``fn(u, args, weights, mask)``, diagonal diag(J^T J), and the
    step of the damped normal equations (J^T J + lambda D) delta = -J^T r."""

    fn: Callable
    args: tuple
    weights: jax.Array
    mask: jax.Array

    def evaluate(self, u):
        residuals, jacobian = _residuals_and_jacobian(self.fn, u, self.args, self.weights,
                                                      self.mask)
        cost = 0.5 * jnp.sum(residuals * residuals)
        return (residuals, jacobian), cost, jnp.isfinite(cost) & jnp.all(jnp.isfinite(jacobian))

    @staticmethod
    def diagonal(model):
        _, jacobian = model
        return jnp.sum(jacobian * jacobian, axis=0)

    @staticmethod
    def norm(vector):
        return jnp.sqrt(vector @ vector)

    @staticmethod
    def converged_at(point, model, cost, ftol):
        return None

    @staticmethod
    def propose(state: driver.DriverState) -> driver.Proposal:
        residuals, jacobian = state.model  # elementwise products + sums: fast under vmap
        jtj = jnp.sum(jacobian[:, :, None] * jacobian[:, None, :], axis=0)
        gradient = jnp.sum(jacobian * residuals[:, None], axis=0)
        floor = jnp.finfo(state.point.dtype).eps * jnp.max(state.scale)
        scale = jnp.maximum(state.scale, floor)
        delta = cholesky_solve(jtj + jnp.diag(state.damping * scale), -gradient)
        predicted = -jnp.sum(gradient * delta) - 0.5 * jnp.sum(
            delta * jnp.sum(jtj * delta, axis=1))
        return driver.Proposal(state.point + delta, delta, predicted,
                               _gradient_cosine(jacobian, state.cost, gradient),
                               jnp.all(jnp.isfinite(delta)))


def _gradient_cosine(jacobian, cost, gradient):
    column_norms = jnp.sqrt(jnp.sum(jacobian * jacobian, axis=0))
    residual_norm = jnp.sqrt(2.0 * cost)
    denominator = column_norms * residual_norm
    safe = denominator > 0
    cosine = jnp.abs(gradient) / jnp.where(safe, denominator, 1.0)
    return jnp.max(jnp.where(safe, cosine, 0.0))


def batched_loop(fn, u0, args, weights, mask, config: LMConfig):
    """Run the lanes ([lanes, ...] inputs) for config.max_iterations frozen-aware iterations of
    the driver with the :class:`DenseStep`; returns (u, status, iterations)."""
    num_params = u0.shape[-1]

    def begin(u, a, w, m):
        too_few = jnp.sum(m.astype(jnp.int32)) < num_params
        bad = ~jnp.all(jnp.isfinite(u))
        return driver.start(DenseStep(fn, a, w, m), u, config,
                            ((too_few, FitStatus.TOO_FEW_POINTS), (bad, FitStatus.BAD_INPUT)))

    init = jax.vmap(begin)(u0, args, weights, mask)
    step = jax.vmap(lambda s, a, w, m: driver.iterate(DenseStep(fn, a, w, m), config, s))
    final, status = driver.run(lambda s: step(s, args, weights, mask), init, config)
    return final.point, status, final.iterations


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
    check_lanes(args, lanes)
    bounds = make_bounds(lower, upper, params0.shape[1])
    return _least_squares(residual_fn, config, bounds, params0, tuple(args), weights, mask)


def check_lanes(args, lanes):
    """ValueError unless every leaf of ``args`` has a leading lanes axis of ``lanes``."""
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
    residuals = lambda params, args: jax.vmap(  # noqa: E731
        lambda p, a: residual_fn(p, *a))(params, args)
    return driver.solve(lambda *a: batched_loop(fn, *a, config),
                        _implicit.least_squares_gradient(fn), u0, args, weights, mask,
                        bounds=bounds, residuals=residuals)


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
    check_lanes(args, lanes)
    repeat = lambda x: None if x is None else jnp.repeat(jnp.asarray(x), count, axis=0)  # noqa
    result = least_squares(residual_fn, starts.reshape(lanes * count, num_params),
                           *jax.tree.map(repeat, args), weights=repeat(weights),
                           mask=repeat(mask), lower=lower, upper=upper, config=config)
    result = jax.tree.map(lambda x: x.reshape((lanes, count) + x.shape[1:]), result)
    usable = has_solution(result.status)
    best = jnp.argmin(jnp.where(usable, result.loss, jnp.inf), axis=1)
    return jax.tree.map(lambda x: jnp.take_along_axis(
        x, best.reshape((lanes, 1) + (1,) * (x.ndim - 2)), axis=1)[:, 0], result)
