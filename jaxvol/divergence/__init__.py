"""IV–spot micro-divergence: fair IV g(S) under sticky strike / sticky delta / SSR, the
residual D = IV - g(S) (:func:`residual`, :func:`residuals`), standardised divergence and
hysteresis events (:func:`events`), cross-pair lag and skew-crack events of a follower against
a leader (:func:`lag_events`), IV series at a fixed strike, delta or ATM from option quotes
(:func:`option_iv_series`), the tick schema and synthetic sessions with known truth
(:mod:`jaxvol.divergence.ticks`), and the ``jaxvol divergence`` pipeline (:func:`analyse`)."""

from jaxvol.divergence import ticks  # noqa: F401
from jaxvol.divergence.events import (EVENT_COLUMNS, aligned_mean, events,
                                      half_close_prediction, hysteresis, standardise)
from jaxvol.divergence.builders import IV_SERIES_COLUMNS, iv_rows, option_iv_series
from jaxvol.divergence.fair import (MODELS, DivergenceStatus, Residual, asof, dimson_beta,
                                    residual, residuals, spot_vol_beta)
from jaxvol.divergence.lag import LAG_KINDS, LagPair, lag_events, pair_residual
from jaxvol.divergence.session import analyse, iv_series
from jaxvol.divergence.ticks import synthetic_option_session, synthetic_session, validate

__all__ = ["residual", "residuals", "Residual", "DivergenceStatus", "MODELS", "asof",
           "spot_vol_beta", "events", "hysteresis", "standardise", "aligned_mean",
           "half_close_prediction", "EVENT_COLUMNS", "analyse", "iv_series",
           "synthetic_session", "validate", "ticks", "dimson_beta", "option_iv_series",
           "iv_rows", "IV_SERIES_COLUMNS", "LagPair", "LAG_KINDS", "lag_events",
           "pair_residual", "synthetic_option_session"]
