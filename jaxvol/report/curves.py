"""Model smiles of the report, evaluated on the host in numpy.

The report draws a handful of slices; compiling the JAX kernels for its shapes would cost more
than the rest of the report (tens of seconds on a loaded 2-core machine), so the four models'
vol formulas are written here once more in numpy (the same formulas as :mod:`jaxvol.smile` and
:mod:`jaxvol.heston`; ``tests/test_report_curves.py`` holds them to the library and to
published Heston prices). Vols are annualised decimals, ``log_moneyness`` is ln(K / F),
``expiry`` in years. ``scipy`` comes with JAX (a dependency of jax).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

__all__ = ["svi_vol", "ssvi_vol", "ssvi_phi", "sabr_vol", "heston_otm", "heston_vol",
           "black_otm", "implied_vol_otm"]


def _vol(total_variance, expiry):
    w = np.asarray(total_variance, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w >= 0, np.sqrt(np.maximum(w, 0.0) / expiry), np.nan)


def svi_vol(log_moneyness, expiry, a, b, rho, m, sigma):
    """Raw SVI: w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2)); NaN where w < 0."""
    x = np.asarray(log_moneyness, np.float64) - m
    return _vol(a + b * (rho * x + np.sqrt(x * x + sigma * sigma)), expiry)


def ssvi_phi(form: str, theta, phi_params):
    """phi(theta) of the SSVI forms of :mod:`jaxvol.smile.ssvi`: "power_law" (eta, gamma):
    eta / (theta^gamma (1 + theta)^(1 - gamma)); "heston" (lambda): (x - 1 + e^-x) / x^2,
    x = lambda theta."""
    theta = np.asarray(theta, np.float64)
    if form == "power_law":
        eta, gamma = phi_params[0], phi_params[1]
        return eta / (theta ** gamma * (1.0 + theta) ** (1.0 - gamma))
    if form == "heston":
        x = phi_params[0] * theta
        with np.errstate(invalid="ignore", divide="ignore"):
            direct = (x + np.expm1(-x)) / (x * x)
        return np.where(np.abs(x) < 1e-4, 0.5 - x / 6.0, direct)
    raise ValueError(f"form must be 'power_law' or 'heston', got {form!r}")


def ssvi_vol(log_moneyness, expiry, theta, rho, phi):
    """SSVI: w(k) = theta / 2 (1 + rho phi k + sqrt((phi k + rho)^2 + 1 - rho^2))."""
    k = np.asarray(log_moneyness, np.float64)
    x = phi * k + rho
    return _vol(0.5 * theta * (1.0 + rho * phi * k + np.sqrt(x * x + 1.0 - rho * rho)), expiry)


def sabr_vol(forward, strike, expiry, alpha, beta, rho, nu):
    """Hagan's lognormal SABR vol (``jaxvol.sabr.implied_vol(method="hagan")``)."""
    strike = np.asarray(strike, np.float64)
    one_minus_beta = 1.0 - beta
    log_fk = np.log(forward / strike)
    fk_half = (forward * strike) ** (0.5 * one_minus_beta)
    c = (one_minus_beta * log_fk) ** 2
    denominator = fk_half * (1.0 + c / 24.0 + c * c / 1920.0)
    z = nu / alpha * fk_half * log_fk
    small = np.abs(z) < 1e-6
    zs = np.where(small, 1.0, z)
    root = np.sqrt(1.0 - 2.0 * rho * zs + zs * zs)
    x = np.log((root + zs - rho) / (1.0 - rho))
    ratio = np.where(small, 1.0 - 0.5 * rho * z, zs / x)
    correction = 1.0 + expiry * (one_minus_beta ** 2 / 24.0 * alpha * alpha / fk_half ** 2
                                 + 0.25 * rho * beta * nu * alpha / fk_half
                                 + (2.0 - 3.0 * rho * rho) * nu * nu / 24.0)
    return alpha / denominator * ratio * correction


def _heston_log_mgf(w, expiry, v0, kappa, theta, sigma, rho):
    """log E[exp(w X)], X = ln(S_T / F), complex w (the little-trap form of
    :func:`jaxvol.heston.log_mgf`)."""
    s2 = sigma * sigma
    xi = kappa - sigma * rho * w
    ww = w * w - w
    d = np.sqrt(xi * xi - s2 * ww)
    xi_plus_d = xi + d
    xi_minus_d = s2 * ww / xi_plus_d
    g = xi_minus_d / xi_plus_d
    e = np.exp(-d * expiry)
    b = ww * -np.expm1(-d * expiry) / (xi_plus_d * (1.0 - g * e))
    log_ratio = np.log1p(g * -np.expm1(-d * expiry) / (1.0 - g))
    return kappa * theta / s2 * (xi_minus_d * expiry - 2.0 * log_ratio) + b * v0


def _legendre(n: int):
    return np.polynomial.legendre.leggauss(n)


def heston_otm(log_moneyness, expiry, v0, kappa, theta, sigma, rho, tolerance: float = 1e-11):
    """Out-of-the-money Heston values / (D F) (puts for k < 0, calls for k >= 0) by Lewis's
    formula C / (D F) = 1 - e^{k/2} / pi int_0^inf Re[e^{-iuk} M(1/2 + iu)] / (u^2 + 1/4) du.

    The integral runs over panels [0, 1/2], [1/2, 1], [1, 2], ... (the 1 / (u^2 + 1/4) peak
    first; then M decays like exp(-u^2 v T / 2) and, for large sigma and short expiries, only
    exponentially) of Gauss-Legendre nodes, at least 32 and about three per oscillation of
    e^{-iuk}, until a panel's integrand stays below ``tolerance`` (or u = 2^30)."""
    k = np.atleast_1d(np.asarray(log_moneyness, np.float64))
    k_max = float(np.max(np.abs(k), initial=0.0))
    total = np.zeros(k.shape)
    low, high = 0.0, 0.5
    with np.errstate(all="ignore"):
        for _ in range(32):
            nodes = int(min(4096, 32 + 0.5 * (high - low) * k_max))
            x, weight = _legendre(nodes)
            u = low + 0.5 * (high - low) * (x + 1.0)
            m = np.exp(_heston_log_mgf(0.5 + 1j * u, expiry, v0, kappa, theta, sigma, rho))
            size = np.abs(m) / (u * u + 0.25)
            integrand = np.real(np.exp(-1j * np.outer(k, u)) * m) / (u * u + 0.25)
            total += integrand @ (0.5 * (high - low) * weight)
            if not np.all(np.isfinite(size)) or size.max() * (high - low) < tolerance:
                break
            low, high = high, 2.0 * high
        call = 1.0 - np.exp(0.5 * k) / np.pi * total
    return np.where(k >= 0, call, call - (1.0 - np.exp(k)))


def black_otm(log_moneyness, total_std):
    """Normalised Black OTM value / (D F) for total standard deviation vol sqrt(T)."""
    k, s = np.asarray(log_moneyness, np.float64), np.asarray(total_std, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        d1, d2 = -k / s + 0.5 * s, -k / s - 0.5 * s
    call = ndtr(d1) - np.exp(k) * ndtr(d2)
    put = np.exp(k) * ndtr(-d2) - ndtr(-d1)
    return np.where(k >= 0, call, put)


def implied_vol_otm(log_moneyness, expiry, value, steps: int = 70):
    """The Black vol of an OTM value / (D F), by bisection on vol sqrt(T) in [1e-4, 10]
    (vectorised; NaN where the value lies outside the Black range or is not finite)."""
    k = np.asarray(log_moneyness, np.float64)
    value = np.asarray(value, np.float64)
    low, high = np.full(k.shape, 1e-4), np.full(k.shape, 10.0)
    for _ in range(steps):
        middle = 0.5 * (low + high)
        above = black_otm(k, middle) > value
        high, low = np.where(above, middle, high), np.where(above, low, middle)
    inside = (np.isfinite(value) & (value > black_otm(k, 1e-4))
              & (value < black_otm(k, 10.0)))
    return np.where(inside, 0.5 * (low + high) / np.sqrt(expiry), np.nan)


def heston_vol(log_moneyness, expiry, v0, kappa, theta, sigma, rho):
    """Black implied vols of the Heston model at ``log_moneyness`` (NaN where the OTM value is
    below 1e-12 of the forward: quadrature noise, not a vol)."""
    value = heston_otm(log_moneyness, expiry, v0, kappa, theta, sigma, rho)
    return implied_vol_otm(log_moneyness, expiry, np.where(value > 1e-12, value, np.nan))


def slice_models(slice_row, underlying_row, log_moneyness, phi_form: str = "power_law"):
    """{model: (vols at ``log_moneyness``, status name)} for one slice (a row of slices.parquet)
    and its underlying (a row of underlyings.parquet, or None): each of SVI, SSVI, SABR and
    Heston whose parameters are present and finite in the run's tables."""
    get = lambda row, name: (np.nan if row is None else float(row.get(name, np.nan)))  # noqa: E731
    status = lambda row, model: (  # noqa: E731
        "" if row is None else str(row.get(f"{model}_status_name", "")))
    k = np.asarray(log_moneyness, np.float64)
    expiry, forward = get(slice_row, "expiry"), get(slice_row, "forward")
    out = {}
    svi = [get(slice_row, f"svi_{p}") for p in ("a", "b", "rho", "m", "sigma")]
    if np.all(np.isfinite(svi)):
        out["SVI"] = (svi_vol(k, expiry, *svi), status(slice_row, "svi"))
    theta, rho = get(slice_row, "ssvi_theta"), get(underlying_row, "ssvi_rho")
    phi_params = [get(underlying_row, f"ssvi_phi_{i}") for i in range(2 if phi_form ==
                                                                      "power_law" else 1)]
    if np.all(np.isfinite([theta, rho, *phi_params])) and theta > 0:
        phi = ssvi_phi(phi_form, theta, phi_params)
        out["SSVI"] = (ssvi_vol(k, expiry, theta, rho, phi), status(underlying_row, "ssvi"))
    sabr = [get(slice_row, f"sabr_{p}") for p in ("alpha", "beta", "rho", "nu")]
    if np.all(np.isfinite(sabr)) and np.isfinite(forward) and forward > 0:
        with np.errstate(all="ignore"):
            out["SABR"] = (sabr_vol(forward, forward * np.exp(k), expiry, *sabr),
                           status(slice_row, "sabr"))
    heston = [get(underlying_row, f"heston_{p}") for p in ("v0", "kappa", "theta", "sigma",
                                                           "rho")]
    if np.all(np.isfinite(heston)) and heston[3] > 0:
        out["Heston"] = (heston_vol(k, expiry, *heston), status(underlying_row, "heston"))
    return out
