"""IV–spot micro-divergence: fair IV g(S) under sticky strike / sticky delta / SSR, the
residual D = IV - g(S) (:func:`residual`, :func:`residuals`), standardised divergence and
hysteresis events (:func:`events`), the tick schema and a synthetic session with known truth
(:mod:`jaxvol.divergence.ticks`), and the ``jaxvol divergence`` pipeline (:func:`analyse`)."""

from jaxvol.divergence import ticks  # noqa: F401
from jaxvol.divergence.events import (EVENT_COLUMNS, aligned_mean, events,
                                      half_close_prediction, hysteresis, standardise)
from jaxvol.divergence.fair import (MODELS, DivergenceStatus, Residual, asof, residual,
                                    residuals, spot_vol_beta)
from jaxvol.divergence.session import analyse, iv_series
from jaxvol.divergence.ticks import synthetic_session, validate

__all__ = ["residual", "residuals", "Residual", "DivergenceStatus", "MODELS", "asof",
           "spot_vol_beta", "events", "hysteresis", "standardise", "aligned_mean",
           "half_close_prediction", "EVENT_COLUMNS", "analyse", "iv_series",
           "synthetic_session", "validate", "ticks"]
