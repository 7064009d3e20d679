"""The calibration engine: one batched least-squares driver and an optax path.

``least_squares(residual_fn, params0, *args, weights=None, mask=None, lower=None, upper=None,
config=LMConfig())`` fits every lane of a batch; ``minimize(loss_fn, params0, *args, ...)`` runs
Adam or L-BFGS for objectives that are not least squares. Both return :class:`FitResult` with a
per-lane :class:`FitStatus`, the result shape of every jaxvol fit (the domains' result types
subclass it). :mod:`jaxvol.calibrate.driver` is the one Levenberg–Marquardt controller (damping,
tolerances, lane freezing, early exit, implicit derivatives, post-processing); the plain step
(:class:`~jaxvol.calibrate.levenberg_marquardt.DenseStep`) and the box-projected step of
reduced, separable problems (:class:`~jaxvol.calibrate.projected.ProjectedStep`, SVI's variable
projection) are its two step types. The building blocks that the domain fits share (the frozen-lane
loop, the implicit derivative of a batched solution, :func:`has_solution`) are public here, so
no domain imports a private name of this package.
"""

from jaxvol.calibrate import driver
from jaxvol.calibrate._implicit import least_squares_gradient
from jaxvol.calibrate._implicit import solve as implicit_solve
from jaxvol.calibrate._types import (NO_SOLUTION, FitResult, FitStatus, LMConfig, has_solution,
                                    rmse_of)
from jaxvol.calibrate.chunks import map_chunks
from jaxvol.calibrate.gradient_descent import minimize
from jaxvol.calibrate.levenberg_marquardt import least_squares, multistart
from jaxvol.calibrate.quality import distinct_count, near_bounds, refine_status

__all__ = ["FitResult", "FitStatus", "LMConfig", "NO_SOLUTION", "distinct_count", "driver",
           "has_solution", "implicit_solve", "least_squares", "least_squares_gradient",
           "map_chunks", "minimize", "multistart", "near_bounds", "refine_status", "rmse_of"]
