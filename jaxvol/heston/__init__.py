"""Heston stochastic-volatility model: semi-analytic European prices and batched calibration."""

from jaxvol.heston.analytic import fair_variance, integrated_variance, log_mgf, price

__all__ = ["fair_variance", "integrated_variance", "log_mgf", "price"]
