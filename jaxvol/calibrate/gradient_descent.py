"""The optax path: batched first-order / quasi-Newton minimisation of any scalar objective.

For research objectives that are not least squares (regularised, penalised, robust losses):
``minimize(loss_fn, params0, *args, optimizer="adam" | "lbfgs" | an optax transformation,
steps=...)`` runs a fixed number of steps per lane (``lax.scan`` inside ``vmap``), with the same
bound transforms, per-lane status, implicit differentiation and post-processing of the result
as :func:`jaxvol.calibrate.least_squares` (:func:`jaxvol.calibrate.driver.solve`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from jaxvol.calibrate import driver
from jaxvol.calibrate._types import FitResult, FitStatus
from jaxvol.calibrate.levenberg_marquardt import check_lanes
from jaxvol.calibrate.transforms import make_bounds, to_bounded, to_unbounded

__all__ = ["make_optimizer", "minimize"]


def make_optimizer(optimizer, learning_rate: float) -> optax.GradientTransformation:
    """Resolve "adam" / "lbfgs" or pass an optax GradientTransformation through."""
    if isinstance(optimizer, str):
        if optimizer == "adam":
            return optax.adam(learning_rate)
        if optimizer == "lbfgs":
            return optax.lbfgs()
        raise ValueError(f"optimizer must be 'adam', 'lbfgs' or an optax transformation, "
                         f"got {optimizer!r}")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(f"optimizer must be 'adam', 'lbfgs' or an optax transformation, "
                         f"got {optimizer!r}")
    return optimizer


def _objective(loss_fn, bounds):
    return lambda u, args: loss_fn(to_bounded(u, bounds), *args).astype(u.dtype)


def _run_lane(objective, optimizer, steps, gtol, u0, args):
    value_fn = lambda u: objective(u, args)  # noqa: E731
    state0 = optimizer.init(u0)
    # Line-search optimizers (L-BFGS) cache value and gradient in their state; reuse them.
    if optax.tree_utils.tree_get(state0, "value") is not None:
        value_and_grad = optax.value_and_grad_from_state(value_fn)
    else:
        value_and_grad = lambda u, state: jax.value_and_grad(value_fn)(u)  # noqa: E731

    def step(carry, _):
        u, state = carry
        value, grad = value_and_grad(u, state=state)
        updates, state = optimizer.update(grad, state, u, value=value, grad=grad,
                                          value_fn=value_fn)
        return (optax.apply_updates(u, updates), state), None

    # optax's L-BFGS mixes int32 and int64 internally; trace it under standard promotion (a
    # local, trace-time context: no global configuration changes).
    with jax.numpy_dtype_promotion("standard"):
        (u, _), _ = jax.lax.scan(step, (u0, state0), None, length=steps)
    value, grad = jax.value_and_grad(value_fn)(u)
    return u, _status(u0, value, grad, gtol)


def _status(u0, value, grad, gtol):
    bad = ~jnp.all(jnp.isfinite(u0))
    non_finite = ~jnp.isfinite(value) | ~jnp.all(jnp.isfinite(grad))
    converged = jnp.max(jnp.abs(grad)) <= gtol
    return jnp.where(bad, FitStatus.BAD_INPUT, jnp.where(
        non_finite, FitStatus.NON_FINITE,
        jnp.where(converged, FitStatus.CONVERGED, FitStatus.MAX_ITERATIONS))).astype(jnp.int32)


def minimize(loss_fn, params0, *args, optimizer="adam", steps: int = 500,
             learning_rate: float = 1e-2, gtol: float = 1e-8, lower=None,
             upper=None) -> FitResult:
    """Minimise ``loss_fn(params[P], *lane_args) -> scalar`` for every lane.

    ``optimizer``: "adam" (with ``learning_rate``), "lbfgs" (optax's L-BFGS with its zoom line
    search) or any optax ``GradientTransformation``. Every lane runs ``steps`` steps;
    ``status`` is CONVERGED where the final gradient in the transformed parameters has
    max-norm <= ``gtol``. ``residuals`` is an empty [lanes, 0] array and ``rmse`` NaN (the
    objective has no residuals); ``iterations`` = steps.
    ``params`` are differentiable with respect to ``args`` (implicit function theorem on the
    gradient, exact Hessian).
    """
    params0 = jnp.asarray(params0)
    if params0.ndim != 2 or not jnp.issubdtype(params0.dtype, jnp.floating):
        raise ValueError(f"params0 must be a floating array [lanes, P], got {params0.shape} "
                         f"{params0.dtype}")
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    check_lanes(args, params0.shape[0])
    bounds = make_bounds(lower, upper, params0.shape[1])
    optimizer = make_optimizer(optimizer, learning_rate)
    return _minimize(loss_fn, optimizer, int(steps), float(gtol), bounds, params0, tuple(args))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _minimize(loss_fn, optimizer, steps, gtol, bounds, params0, args):
    objective = _objective(loss_fn, bounds)
    lanes = params0.shape[0]
    empty = jnp.zeros((lanes, 0), params0.dtype)
    u0 = jax.vmap(lambda x: to_unbounded(x, bounds))(params0)

    def batched_solver(u_start, lane_args, weights, mask):
        u, status = jax.vmap(functools.partial(_run_lane, objective, optimizer, steps, gtol))(
            u_start, lane_args)
        return u, status, jnp.full(status.shape, steps, jnp.int32)

    gradient_fn = lambda u, a, w, m: jax.grad(objective)(u, a)  # noqa: E731
    loss = lambda params, args: jax.vmap(lambda p, a: loss_fn(p, *a))(params, args)  # noqa
    return driver.solve(batched_solver, gradient_fn, u0, args, empty, empty.astype(bool),
                        bounds=bounds, loss=loss)
