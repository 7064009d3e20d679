"""Heston stochastic-volatility model: semi-analytic European prices and batched calibration.

``price`` (saddle-point Fourier inversion, 1e-10 relative), ``fair_variance``,
``calibrate`` (whole surfaces per underlying, vmapped, on :func:`jaxvol.calibrate.least_squares`).
"""

from jaxvol.heston.analytic import fair_variance, integrated_variance, log_mgf, price
from jaxvol.heston.measures import (VarianceRiskPremium, expected_integrated_variance,
                                    expected_variance, to_physical, to_risk_neutral,
                                    variance_of_variance, variance_risk_premium)
from jaxvol.heston.calibrate import (LOWER, PARAM_NAMES, UPPER, HestonFit, Surface, calibrate,
                                     implied_vol_rmse, model_surface, surface_prices, vol_start,
                                     with_vol_noise)

__all__ = ["HestonFit", "LOWER", "PARAM_NAMES", "UPPER", "Surface", "calibrate",
           "fair_variance", "implied_vol_rmse", "integrated_variance", "log_mgf",
           "model_surface", "price", "surface_prices", "vol_start", "with_vol_noise",
           "to_risk_neutral", "to_physical", "expected_variance", "variance_of_variance",
           "expected_integrated_variance", "variance_risk_premium", "VarianceRiskPremium"]
