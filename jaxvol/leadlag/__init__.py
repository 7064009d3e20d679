"""Lead–lag between asynchronously observed series (spot and implied vol, FX crosses, ...).

- :func:`hayashi_yoshida`: HY covariance and correlation (optionally lag-shifted).
- :func:`contrast`: the signed Hoffmann–Rosenbaum–Yoshida contrast on any lag grid, one pass.
- :func:`contrast_grid`: the same on -max_lag..max_lag every resolution seconds (FFT engine).
- :func:`estimate`: lag (argmax |U|), lead–lag ratio, correlation, bootstrap intervals, status.
- :func:`lead_lag_matrix`: estimates for every pair of several instruments.
- :func:`epps_curve`: correlation against the sampling interval (the Epps effect).

Sign convention everywhere: a **positive lag means x leads y**. Times and lags in seconds.
"""

from jaxvol.leadlag.hry import (Contrast, HayashiYoshida, contrast, contrast_grid,
                                hayashi_yoshida)
from jaxvol.leadlag.epps import EppsCurve, epps_curve
from jaxvol.leadlag.estimate import LeadLagEstimate, estimate, lead_lag_matrix
from jaxvol.leadlag.options import LeadLagOptions
from jaxvol.leadlag.status import LeadLagStatus

__all__ = ["Contrast", "EppsCurve", "HayashiYoshida", "LeadLagEstimate", "LeadLagOptions",
           "LeadLagStatus", "contrast", "contrast_grid", "epps_curve", "estimate",
           "hayashi_yoshida", "lead_lag_matrix"]
