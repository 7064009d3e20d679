"""Heston calibration on the shared Levenberg-Marquardt engine.

Data: tests/data/cui_calibration.csv (Cui, del Bano Rollin & Germano 2017, copied from the
project reference set). The 1,000-surface noisy study is `scripts/bench_heston.py calibration`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxvol import heston
from jaxvol.calibrate import FitStatus, LMConfig

from conftest import DATA

TRUE_CUI = np.array([0.08, 3.0, 0.10, 0.25, -0.8])  # (v0, kappa, theta, sigma, rho)
START_CUI = np.array([0.2, 1.2, 0.2, 0.3, -0.6])
EXPIRIES = (1 / 12, 0.25, 0.5, 1.0, 2.0)
MONEYNESS = (-2.0, -1.0, 0.0, 1.0, 2.0)
# Typical equity/FX sets inside the box (two violate Feller: 2 kappa theta / sigma^2 < 1).
SETS = np.array([[0.04, 1.5, 0.05, 0.6, -0.7], [0.02, 4.0, 0.03, 0.3, -0.3],
                 [0.09, 0.8, 0.06, 0.9, -0.8], [0.01, 2.5, 0.02, 0.2, 0.2]])


CONFIG = LMConfig(max_iterations=80)


def _five_lanes(params):
    return heston.model_surface(jnp.asarray(params), EXPIRIES, MONEYNESS, spot=100.0,
                                rate=0.02, div=0.01)


def _cui_surface():
    df = pd.read_csv(DATA / "cui_calibration.csv", comment="#")
    expiry = df.expiry.unique()
    shape = (1, len(expiry), len(df) // len(expiry))
    return heston.Surface(
        strike=jnp.asarray(df.strike.values).reshape(shape), expiry=jnp.asarray(expiry)[None],
        quote=jnp.asarray(df.call_price.values).reshape(shape), is_call=jnp.ones(shape, bool),
        spot=jnp.ones(1), rate=jnp.full((1, len(expiry)), 0.02),
        div=jnp.zeros((1, len(expiry))), mask=jnp.ones(shape, bool))


def test_cui_benchmark_recovers_true_parameters():
    # Cui et al.'s experiment: unconstrained LM with the exact Jacobian on price residuals from
    # their start point. Quotes are rounded to 1e-10, which moves the optimum by ~1e-8; the
    # issue asks for 1e-6 on every parameter (measured 8e-9).
    result = heston.calibrate(_cui_surface(), jnp.asarray(START_CUI)[None], objective="price",
                              lower=None, upper=None, config=LMConfig(max_iterations=60))
    assert int(result.status[0]) == FitStatus.CONVERGED
    np.testing.assert_allclose(np.asarray(result.params[0]), TRUE_CUI, rtol=0, atol=1e-6)


def test_batched_surfaces_recover_parameters_and_lanes_are_independent():
    # Four noise-free surfaces (5 expiries x 5 strikes) in one batch, vega-weighted implied-vol
    # objective, default bounds, default start. Exact quotes: the fit must reach the true
    # parameters (1e-4 absolute: the fit quadrature is 64 nodes / 4 contours, ~1e-9 in
    # price) and an implied-vol RMSE below 1e-6. A fifth lane with NaN quotes must fail alone.
    surface = _five_lanes(np.concatenate([SETS, SETS[:1]]))
    bad = surface._replace(quote=surface.quote.at[4].set(jnp.nan))
    result = heston.calibrate(bad, config=CONFIG)
    status = np.asarray(result.status)
    assert np.all(status[:4] == FitStatus.CONVERGED), status
    # all-NaN quotes leave no usable quote: TOO_FEW_POINTS since issue 20 (was BAD_INPUT)
    assert status[4] in (FitStatus.NON_FINITE, FitStatus.BAD_INPUT, FitStatus.TOO_FEW_POINTS)
    np.testing.assert_allclose(np.asarray(result.params[:4]), SETS, rtol=0, atol=1e-4)
    rmse = np.asarray(jax.jit(heston.implied_vol_rmse)(result.params[:4],
                                                       jax.tree.map(lambda x: x[:4], bad)))
    assert np.all(rmse < 1e-6), rmse


def test_feller_penalty_enforces_the_condition():
    # Quotes from a Feller-violating set (2 kappa theta / sigma^2 = 0.42). With a heavy penalty
    # the fit must end (nearly) on the Feller boundary: sigma^2 - 2 kappa theta <= 1e-3,
    # while the unpenalised fit keeps the violation.
    surface = _five_lanes(SETS[[2] * 5])  # same shapes as above: one compilation for both tests
    free = heston.calibrate(surface, config=CONFIG)
    penalised = heston.calibrate(surface, feller_weight=1e4, config=CONFIG)
    gap = lambda p: p[:, 3] ** 2 - 2 * p[:, 1] * p[:, 2]  # noqa: E731
    assert float(gap(free.params)[0]) > 0.3
    assert float(gap(penalised.params)[0]) < 1e-3
