"""Configuration, status codes and result PyTree of the calibration engine."""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

from jax import Array

from jaxvol.status import domain_status

__all__ = ["rmse_of", "FitResult", "FitStatus", "has_solution", "LMConfig", "NO_SOLUTION"]


FitStatus = domain_status("FitStatus", "calibrate", {
    "CONVERGED": 0,  # a convergence test passed and the fit is usable (not at a bound, ...)
    "BAD_INPUT": 1,  # non-finite start parameters or inputs out of their domain
    "NON_FINITE": 3,  # residuals or Jacobian were not finite at the start point
    "TOO_FEW_POINTS": 4,  # fewer usable points than parameters
    "MAX_ITERATIONS": 5,  # the iteration budget ran out; params are the best point found
    "AT_BOUND": 6,  # converged, but a parameter sits on a bound of its box
    "DEGENERATE": 7,  # converged to a degenerate limit (rho = +-1 with sigma at its floor, ...)
    "UNIDENTIFIED": 8,  # the data cannot identify the model (constant k, all quotes equal)
    "ARBITRAGE": 9,  # converged, but the fitted smile violates a static no-arbitrage bound
    "OUTSIDE_QUOTES": 50,  # converged, but the fitted smile contradicts a one-sided quote
}, """Per-lane outcome of a fit (int32 in ``status``; codes of :mod:`jaxvol.status`).

CONVERGED (0) is a usable fit; MAX_ITERATIONS, AT_BOUND, DEGENERATE, UNIDENTIFIED, ARBITRAGE
and OUTSIDE_QUOTES (the fitted smile lies above the ask of an option quoted without a bid, or
below the bid of one without an ask: :func:`jaxvol.svi.fit`'s ``one_sided``) carry the best
point found (finite params); BAD_INPUT, NON_FINITE and TOO_FEW_POINTS carry NaN params
(:func:`has_solution` is False).""")

#: statuses whose params are NaN: no solution was attempted or it failed at the start
NO_SOLUTION = (FitStatus.BAD_INPUT, FitStatus.NON_FINITE, FitStatus.TOO_FEW_POINTS)


def has_solution(status):
    """True where a fit status carries finite params (every status but :data:`NO_SOLUTION`)."""
    import jax.numpy as jnp

    status = jnp.asarray(status)
    return ~functools.reduce(jnp.logical_or, [status == int(s) for s in NO_SOLUTION])


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """Settings of the Levenberg–Marquardt engine (frozen, hashable: a static jit argument).

    ``ftol``: stop when an accepted step lowers the loss by less than ``ftol * loss`` (actual and
    predicted). ``xtol``: stop when the step in the transformed parameters is below
    ``xtol * (|u| + xtol)``. ``gtol``: stop when the cosine between the residual vector and every
    Jacobian column is below ``gtol`` (MINPACK's scale-free gradient test). Each tolerance is
    raised to a few machine epsilons of the working dtype so float32 fits can converge.
    ``initial_damping``: the first lambda of the damped normal equations
    ``(J^T J + lambda D) delta = -J^T r``, D = running max of diag(J^T J) (Marquardt's scaling),
    so lambda is dimensionless; it then follows Nielsen's update.
    ``max_iterations``: every lane runs this many iterations of fixed work (converged lanes are
    frozen with ``jnp.where``); ``early_exit`` lets the batched loop stop once *every* lane is
    frozen, which changes no lane's result (frozen lanes never move) and only saves time.
    """

    max_iterations: int = 100
    ftol: float = 1e-12
    xtol: float = 1e-12
    gtol: float = 1e-12
    initial_damping: float = 1e-3
    early_exit: bool = True

    def __post_init__(self):
        if int(self.max_iterations) < 1:
            raise ValueError(f"max_iterations must be >= 1, got {self.max_iterations!r}")
        for name in ("ftol", "xtol", "gtol"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if not self.initial_damping > 0.0:
            raise ValueError(f"initial_damping must be > 0, got {self.initial_damping!r}")


class FitResult(NamedTuple):
    """Batched result of :func:`least_squares` / :func:`minimize` (leading axis: lanes), and the
    one result shape of every jaxvol fit: the domains' types (``SVIFit``, ``SABRFit``,
    ``SSVIFit``, ``HestonFit``) are subclasses with these fields, the domain's extras as
    properties (docs/conventions.md). ``params`` [lanes, P]
    (NaN where :func:`has_solution` is False); ``status`` [lanes] int32 :class:`FitStatus`;
    ``loss`` [lanes] = 0.5 * sum over unmasked points of (weight * residual)^2 (the scipy
    "cost"); ``iterations`` [lanes] int32 (iterations taken before the lane froze); ``rmse``
    [lanes] root-mean-square unweighted residual over the unmasked points (NaN without
    residuals); then ``residuals`` [lanes, M] unweighted residuals at ``params``, zero at masked
    points.
    """

    params: Array
    status: Array
    loss: Array
    iterations: Array
    rmse: Array
    residuals: Array


def rmse_of(residuals, usable):
    """Root-mean-square of ``residuals`` over the ``usable`` points of each lane (last axes
    after the first), NaN for a lane without usable points."""
    import jax.numpy as jnp

    axes = tuple(range(1, residuals.ndim))
    count = jnp.sum(usable.astype(residuals.dtype), axis=axes)
    total = jnp.sum(jnp.where(usable, residuals * residuals, 0.0), axis=axes)
    return jnp.where(count > 0, jnp.sqrt(total / jnp.where(count > 0, count, 1.0)), jnp.nan)
