"""Tests of SSVI surfaces (jaxvol.ssvi): formulas, arbitrage conditions and surface fits."""

import jax
import mpmath
import numpy as np
import pytest
from scipy.special import ndtr

import jaxvol
from jaxvol.calibrate import FitStatus
from jaxvol.smile import ssvi, svi

EXPIRIES = np.array([0.1, 0.25, 0.5, 1.0, 2.0, 3.0])
UNDERLYINGS, STRIKES = 4, 21


def _grid():
    unit = np.linspace(-0.8, 0.5, STRIKES)
    return np.tile(unit, (UNDERLYINGS, EXPIRIES.size, 1)) * np.sqrt(EXPIRIES)[None, :, None]


def _surface(theta, rho, phi):
    return np.asarray(ssvi.total_variance(_grid(), theta[..., None], rho[:, None, None],
                                          phi[..., None]))


def _heston_market(seed, lam_offset=(0.1, 2.0)):
    rng = np.random.default_rng(seed)
    theta = 0.04 * EXPIRIES[None, :] * rng.uniform(0.5, 2.0, (UNDERLYINGS, 1))
    rho = rng.uniform(-0.8, -0.1, UNDERLYINGS)
    lam = (1 + np.abs(rho)) / 4 + rng.uniform(*lam_offset, UNDERLYINGS)
    phi = np.asarray(ssvi.heston_phi(theta, lam[:, None]))
    return theta, rho, lam, _surface(theta, rho, phi)


def _black_call(k, w):
    """Undiscounted Black call on a unit forward at strike e^k with total variance w
    (intrinsic value where w = 0, which a fit on the rho = -1 boundary can produce)."""
    positive = w > 0
    s = np.sqrt(np.where(positive, w, 1.0))
    d1 = -k / s + s / 2
    return np.where(positive, ndtr(d1) - np.exp(k) * ndtr(d1 - s), np.maximum(1 - np.exp(k), 0))


def _assert_no_static_arbitrage_on_dense_grid(theta, rho, phi_fn):
    """Price-based checks on k in [-3, 3] (2001 points): calls convex in strike per expiry,
    and total variance non-decreasing in expiry at fixed k (calendar), plus Durrleman's g."""
    k = np.linspace(-3.0, 3.0, 2001)
    phi = np.asarray(phi_fn(theta))
    w = np.asarray(ssvi.total_variance(k[None, :], theta[:, None], rho, phi[:, None]))
    strikes = np.exp(k)
    calls = _black_call(k[None, :], w)
    slopes = np.diff(calls, axis=1) / np.diff(strikes)[None, :]
    # Convexity: call slopes non-decreasing in strike. A slope is a difference of prices <= 1
    # over dK, so rounding makes it uncertain by ~2 eps / dK; allow 8 eps / min dK (~1e-11).
    rounding = 8 * np.finfo(float).eps / np.min(np.diff(strikes))
    assert np.all(np.diff(slopes, axis=1) >= -rounding)
    # Calendar: w non-decreasing in expiry at fixed k. w is a sum of terms of size
    # ~theta (1 + phi |k|) that cancel to ~0 in a wing when rho -> -1, so allow 8 eps of that.
    scale = theta[:, None] * (1 + phi[:, None] * np.abs(k)[None, :])
    tolerance = 8 * np.finfo(float).eps * np.maximum(scale[1:], scale[:-1])
    assert np.all(np.diff(w, axis=0) >= -tolerance)
    g_min, _ = svi.g_minimum(*ssvi.to_raw_svi(theta, rho, phi), k_lower=-3.0, k_upper=3.0,
                             num=2001)
    assert np.all(np.asarray(g_min) >= 0)


def test_public_names():
    assert jaxvol.ssvi is ssvi


def test_slice_is_raw_svi():
    k = np.linspace(-2, 2, 31)
    theta, rho, phi = 0.09, -0.6, 1.7
    direct = ssvi.total_variance(k, theta, rho, phi)
    via_raw = svi.total_variance(k, *ssvi.to_raw_svi(theta, rho, phi))
    np.testing.assert_allclose(direct, via_raw, rtol=1e-14)  # algebraic identity, rounding only
    # theta is the ATM total variance
    np.testing.assert_allclose(ssvi.total_variance(0.0, theta, rho, phi), theta, rtol=1e-15)


@pytest.mark.parametrize("x", [1e-7, 1e-4, 0.0999, 0.1001, 0.5, 30.0])
def test_heston_phi_against_mpmath(x):
    mpmath.mp.dps = 40
    theta = 0.5
    lam = x / theta
    exact = (mpmath.mpf(x) - 1 + mpmath.exp(-mpmath.mpf(x))) / mpmath.mpf(x) ** 2
    # 13-term series below x = 0.1, expm1 form above (cancellation 2 eps / x <= 5e-15): a few
    # ulps either way; 1e-14 relative.
    np.testing.assert_allclose(float(ssvi.heston_phi(theta, lam)), float(exact), rtol=1e-14)


def test_heston_round_trip():
    theta, rho, lam, w = _heston_market(0)
    result = ssvi.fit(_grid(), w)
    assert np.all(result.status == FitStatus.CONVERGED)
    # Noiseless surface: the acceptance bound 1e-8 (attained ~1e-14).
    np.testing.assert_allclose(result.theta, theta, atol=1e-8)
    np.testing.assert_allclose(result.rho, rho, atol=1e-8)
    np.testing.assert_allclose(result.phi_params[:, 0], lam, atol=1e-8)


def test_power_law_round_trip():
    rng = np.random.default_rng(1)
    theta, rho, _, _ = _heston_market(1)
    eta = 2 / (1 + np.abs(rho)) * rng.uniform(0.3, 0.9, UNDERLYINGS)
    gamma = rng.uniform(0.1, 0.45, UNDERLYINGS)
    w = _surface(theta, rho, np.asarray(ssvi.power_law_phi(theta, eta[:, None], gamma[:, None])))
    result = ssvi.fit(_grid(), w, phi="power_law")
    assert np.all(result.status == FitStatus.CONVERGED)
    np.testing.assert_allclose(result.theta, theta, atol=1e-8)  # as above
    np.testing.assert_allclose(result.phi_params, np.stack([eta, gamma], axis=1), atol=1e-8)


@pytest.mark.parametrize("form", ["heston", "power_law"])
def test_fit_to_arbitrageable_data_is_arbitrage_free(form):
    # Power-law data with eta = 5 (eta (1 + |rho|) far above 2) and gamma = 0.45: every
    # underlying's generating surface has butterfly arbitrage (g < 0, checked), and the fit
    # must not. Noise on top.
    theta, rho, _, _ = _heston_market(2)
    phi = np.asarray(ssvi.power_law_phi(theta, 5.0, 0.45))
    w = _surface(theta, rho, phi) + 2e-5 * np.random.default_rng(3).standard_normal(
        (UNDERLYINGS, EXPIRIES.size, STRIKES))
    generating_g, _ = svi.g_minimum(*ssvi.to_raw_svi(theta, rho[:, None], phi))
    assert np.all(np.min(generating_g, axis=1) < 0)  # the data really are arbitrageable
    result = ssvi.fit(_grid(), w, phi=form)
    # The best arbitrage-free fit of arbitrageable data sits on the no-arbitrage limit of phi
    # (eta (1 + |rho|) -> 2, lambda -> (1 + |rho|) / 4): AT_BOUND since issue 20 (it read
    # CONVERGED before); a lane off the limit is CONVERGED.
    assert np.all(np.isin(result.status, [FitStatus.CONVERGED, FitStatus.AT_BOUND]))
    assert np.any(result.status == FitStatus.AT_BOUND)
    for lane in range(UNDERLYINGS):
        params = np.asarray(result.phi_params[lane])
        if form == "heston":
            phi_fn = lambda t, p=params: ssvi.heston_phi(t, p[0])  # noqa: E731
            assert params[0] >= (1 + abs(float(result.rho[lane]))) / 4
        else:
            phi_fn = lambda t, p=params: ssvi.power_law_phi(t, p[0], p[1])  # noqa: E731
            assert params[0] * (1 + abs(float(result.rho[lane]))) <= 2 and params[1] <= 0.5
        theta_fit, rho_fit = np.asarray(result.theta[lane]), float(result.rho[lane])
        assert np.all(ssvi.butterfly_free(theta_fit, rho_fit, phi_fn(theta_fit)))
        assert bool(ssvi.calendar_free(theta_fit, rho_fit, phi_fn))
        _assert_no_static_arbitrage_on_dense_grid(theta_fit, rho_fit, phi_fn)


def test_garbage_underlyings_get_status_and_do_not_disturb_others():
    theta, rho, lam, w = _heston_market(4)
    dirty = w.copy()
    dirty[1] = np.nan  # nothing usable
    dirty[2, 3] = -1.0  # one expiry with only crossed quotes (negative variance)
    clean = ssvi.fit(_grid(), w)
    result = ssvi.fit(_grid(), dirty)
    assert result.status.tolist() == [FitStatus.CONVERGED, FitStatus.TOO_FEW_POINTS,
                                      FitStatus.TOO_FEW_POINTS, FitStatus.CONVERGED]
    assert np.all(np.isnan(np.asarray(result.theta)[[1, 2]]))
    # Same shapes, same program: healthy lanes are bit-for-bit unchanged.
    np.testing.assert_array_equal(np.asarray(result.theta)[[0, 3]],
                                  np.asarray(clean.theta)[[0, 3]])


def test_misuse():
    with pytest.raises(ValueError, match="phi"):
        ssvi.fit(_grid(), _grid(), phi="sabr")
    with pytest.raises(ValueError, match="underlyings, expiries, strikes"):
        ssvi.fit(np.zeros((2, 3)), np.zeros((2, 3)))


def test_gradient_of_fit_wrt_quotes_is_finite():
    theta, rho, lam, w = _heston_market(0)
    grad = jax.grad(lambda x: ssvi.fit(_grid(), x).rho[0])(w)
    assert np.all(np.isfinite(grad)) and np.any(grad[0] != 0)
    np.testing.assert_array_equal(grad[1:], 0.0)  # other underlyings do not move rho[0]
