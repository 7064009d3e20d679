"""Ornstein–Uhlenbeck estimation on irregular ticks: batched exact, noise-aware (Kalman) and
covariate fits with bias correction and intervals (:func:`fit`), exact simulation
(:func:`simulate`) and the likelihood kernels (:mod:`jaxvol.ou.likelihood`)."""

from jaxvol.ou import likelihood  # noqa: F401
from jaxvol.ou.estimation import OUConfig, OUFit, OUStatus, fit
from jaxvol.ou.simulate import simulate

__all__ = ["fit", "simulate", "OUFit", "OUConfig", "OUStatus", "likelihood"]
