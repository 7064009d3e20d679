"""Implicit differentiation of a batched least-squares solution.

At a solution u* of lane i the gradient G(u, theta) = J(u, theta)^T r(u, theta) vanishes, so by
the implicit-function theorem du*/dtheta = -H^{-1} dG/dtheta with H = dG/du (the full Hessian of
0.5 |r|^2, second-order residual terms included). Both derivatives are forward-mode, so masked
points (whose tangents are dropped by ``jnp.where``) cannot leak NaN. Failed lanes (non-finite
u*, or status NON_FINITE / BAD_INPUT) get zero tangents and, through the ``where`` on their
input tangents, zero cotangents.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxvol.calibrate._types import has_solution

__all__ = ["least_squares_gradient", "optimality_gradient", "solve"]



@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def solve(batched_solver, gradient_fn, u0, args, weights, mask):
    """Run ``batched_solver(u0, args, weights, mask) -> (u, status, iterations)``.

    ``gradient_fn(u, args, weights, mask) -> [P]`` is one lane's optimality condition (zero at
    the solution); it defines the implicit derivative of u.
    """
    return batched_solver(u0, args, weights, mask)


@solve.defjvp
def _solve_jvp(batched_solver, gradient_fn, primals, tangents):
    u0, args, weights, mask = primals
    _, d_args, d_weights, _ = tangents
    u, status, iterations = batched_solver(u0, args, weights, mask)
    lane = functools.partial(_lane_tangent, gradient_fn)
    ok = has_solution(status)  # lanes with a solution; the others get zero tangents
    du = jax.vmap(lane)(ok, u, args, weights, mask, d_args, d_weights)
    zero_int = lambda x: jnp.zeros(x.shape, jax.dtypes.float0)  # noqa: E731
    return (u, status, iterations), (du, zero_int(status), zero_int(iterations))


def optimality_gradient(fn, u, args, weights, mask):
    """G = J^T r for one lane (forward-mode Jacobian)."""

    def with_aux(v):
        r = fn(v, args, weights, mask)
        return r, r

    jacobian, residuals = jax.jacfwd(with_aux, has_aux=True)(u)
    return jacobian.T @ residuals


def least_squares_gradient(fn):
    """The optimality condition J^T r of the residual function fn(u, args, weights, mask)."""
    return lambda u, args, weights, mask: optimality_gradient(fn, u, args, weights, mask)


def _lane_tangent(gradient_fn, ok, u, args, weights, mask, d_args, d_weights):
    ok = ok & jnp.all(jnp.isfinite(u))
    u_safe = jnp.where(ok, u, 0)
    gradient = lambda v, a, w: gradient_fn(v, a, w, mask)  # noqa: E731
    hessian = jax.jacfwd(gradient)(u_safe, args, weights)
    hessian = jnp.where(ok, hessian, jnp.eye(u.shape[0], dtype=u.dtype))
    d_args = jax.tree.map(lambda t: _keep_if(ok, t), d_args)
    _, rhs = jax.jvp(lambda a, w: gradient(u_safe, a, w), (args, weights),
                     (d_args, _keep_if(ok, d_weights)))
    return jnp.where(ok, -jnp.linalg.solve(hessian, rhs), 0)


def _keep_if(ok, tangent):
    if tangent.dtype == jax.dtypes.float0:
        return tangent
    return jnp.where(ok, tangent, 0)
