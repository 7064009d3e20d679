"""The calibration engine: one batched Levenberg–Marquardt solver and an optax path.

``least_squares(residual_fn, params0, *args, weights=None, mask=None, lower=None, upper=None,
config=LMConfig())`` fits every lane of a batch; ``minimize(loss_fn, params0, *args, ...)`` runs
Adam or L-BFGS for objectives that are not least squares. Both return :class:`FitResult` with a
per-lane :class:`FitStatus`.
"""

from jaxvol.calibrate._types import FitResult, FitStatus, LMConfig
from jaxvol.calibrate.chunks import map_chunks
from jaxvol.calibrate.gradient_descent import minimize
from jaxvol.calibrate.levenberg_marquardt import least_squares, multistart

__all__ = ["FitResult", "FitStatus", "LMConfig", "least_squares", "map_chunks", "minimize",
           "multistart"]
