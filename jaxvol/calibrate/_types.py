"""Configuration, status codes and result PyTree of the calibration engine."""

from __future__ import annotations

import dataclasses
import enum
from typing import NamedTuple

from jax import Array


class FitStatus(enum.IntEnum):
    """Per-lane outcome of a fit (stored as int32 in :class:`FitResult.status`)."""

    CONVERGED = 0  #: a convergence test (ftol, xtol, gtol or zero loss) passed
    MAX_ITERATIONS = 1  #: the iteration budget ran out; params are the best point found
    NON_FINITE = 2  #: residuals or Jacobian were not finite at the start point
    BAD_INPUT = 3  #: non-finite start parameters or fewer usable points than parameters


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
    """Batched result of :func:`least_squares` / :func:`minimize` (leading axis: lanes).

    ``params`` [lanes, P] (NaN where the status is NON_FINITE or BAD_INPUT); ``status`` [lanes]
    int32 :class:`FitStatus`; ``loss`` [lanes] = 0.5 * sum over unmasked points of
    (weight * residual)^2 (the scipy "cost"); ``iterations`` [lanes] int32 (iterations taken
    before the lane froze); ``residuals`` [lanes, M] unweighted residuals at ``params``, zero at
    masked points.
    """

    params: Array
    status: Array
    loss: Array
    iterations: Array
    residuals: Array
