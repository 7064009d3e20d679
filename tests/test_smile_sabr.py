"""Tests of SABR implied vols (jaxvol.sabr) and the beta-fixed batched fit."""

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
import QuantLib as ql

import jaxvol
from jaxvol.calibrate import FitStatus
from jaxvol.smile import sabr

# QuantLib's interpolation test (../shared/reference/README.md): F=0.039, T=1, alpha=0.3,
# beta=0.6, nu=0.02, rho=0.01.
QL_STRIKES = np.array([0.03, 0.05, 0.07, 0.09])
QL_VOLS = np.array([1.16725837321531, 1.05226642581503, 0.98110791455717, 0.930289384251337])

FORWARD, EXPIRY, BETA = 0.039, 1.5, 0.6
ALPHA, RHO, NU = 0.3 * 0.039 ** 0.4, -0.3, 0.5
STRIKES = FORWARD * np.array([0.3, 0.6, 0.9, 1 - 1e-7, 1.0, 1 + 1e-9, 1.1, 1.5, 2.5])


def _mp_sabr(forward, strike, expiry, alpha, beta, rho, nu, method):
    """Direct transcription at 50 digits (no series, no rearrangement): the independent route."""
    mpmath.mp.dps = 50
    f, k, t, a, b, r, n = [mpmath.mpf(x) for x in (forward, strike, expiry, alpha, beta, rho, nu)]
    q = mpmath.log(f / k)
    fk = (f * k) ** ((1 - b) / 2)
    correction = 1 + t * ((1 - b) ** 2 / 24 * a ** 2 / fk ** 2 + r * b * n * a / (4 * fk)
                          + (2 - 3 * r ** 2) * n ** 2 / 24)
    if method == "hagan":
        z = n / a * fk * q
    else:
        z = n * (f ** (1 - b) - k ** (1 - b)) / (a * (1 - b))
    x = mpmath.log((mpmath.sqrt(1 - 2 * r * z + z ** 2) + z - r) / (1 - r))
    if method == "hagan":
        c = ((1 - b) * q) ** 2
        return a / (fk * (1 + c / 24 + c ** 2 / 1920)) * z / x * correction
    return n * q / x * correction


def test_public_names():
    assert jaxvol.sabr is sabr
    assert jaxvol.sabr.implied_vol is sabr.implied_vol


def test_quantlib_reference_values():
    vols = sabr.implied_vol(0.039, QL_STRIKES, 1.0, 0.3, 0.6, 0.01, 0.02)
    np.testing.assert_allclose(vols, QL_VOLS, rtol=0, atol=1e-12)  # the stated tolerance


def test_matches_quantlib_away_from_the_money():
    wide = STRIKES[np.abs(STRIKES / FORWARD - 1) > 0.05]
    ours = sabr.implied_vol(FORWARD, wide, EXPIRY, ALPHA, BETA, RHO, NU)
    theirs = [ql.sabrVolatility(k, FORWARD, EXPIRY, ALPHA, BETA, NU, RHO) for k in wide]
    # Same formula, |z| well above QuantLib's series switch: agreement to rounding.
    np.testing.assert_allclose(ours, theirs, rtol=1e-13)
    normal = sabr.normal_vol(FORWARD, wide, EXPIRY, ALPHA, BETA, RHO, NU)
    theirs = [ql.shiftedSabrVolatility(k, FORWARD, EXPIRY, ALPHA, BETA, NU, RHO, 0.0, ql.Normal)
              for k in wide]
    np.testing.assert_allclose(normal, theirs, rtol=1e-13)


@pytest.mark.parametrize("method", ["hagan", "obloj"])
def test_matches_high_precision_transcription_including_near_the_money(method):
    ours = sabr.implied_vol(FORWARD, STRIKES, EXPIRY, ALPHA, BETA, RHO, NU, method=method)
    for strike, vol in zip(STRIKES, np.asarray(ours)):
        if strike == FORWARD:
            continue  # 0/0 in the transcription; the ATM limit is checked below
        reference = float(_mp_sabr(FORWARD, strike, EXPIRY, ALPHA, BETA, RHO, NU, method))
        # A few ulps of each elementary function, no cancellation (log1p forms and the series
        # within 1e-6 of z = 0): 2e-15 relative. QuantLib's naive z/x(z) loses ~1e-12 at
        # K = F (1 - 1e-7), which is why this check is against mpmath.
        assert abs(vol - reference) <= 2e-15 * reference


def test_at_the_money_limit_and_smoothness():
    atm = {m: sabr.implied_vol(FORWARD, FORWARD, EXPIRY, ALPHA, BETA, RHO, NU, method=m)
           for m in ("hagan", "obloj")}
    fk = FORWARD ** (1 - BETA)
    expected = ALPHA / fk * (1 + EXPIRY * ((1 - BETA) ** 2 / 24 * ALPHA ** 2 / fk ** 2
                                           + RHO * BETA * NU * ALPHA / (4 * fk)
                                           + (2 - 3 * RHO ** 2) * NU ** 2 / 24))
    for value in atm.values():
        np.testing.assert_allclose(value, expected, rtol=1e-15)  # closed form, a few ulps
    for method in ("hagan", "obloj"):
        f = lambda k: sabr.implied_vol(FORWARD, k, EXPIRY, ALPHA, BETA, RHO, NU,  # noqa: E731
                                       method=method)
        step = 1e-6 * FORWARD
        central = (f(FORWARD + step) - f(FORWARD - step)) / (2 * step)
        # the gradient through the small-z series equals the smooth neighbourhood's slope
        # (central difference: truncation ~step^2 f''' ~1e-9 relative)
        np.testing.assert_allclose(jax.grad(f)(FORWARD), central, rtol=1e-7)


def test_obloj_equals_hagan_for_lognormal_beta():
    hagan = sabr.implied_vol(FORWARD, STRIKES, EXPIRY, ALPHA, 1.0, RHO, NU)
    obloj = sabr.implied_vol(FORWARD, STRIKES, EXPIRY, ALPHA, 1.0, RHO, NU, method="obloj")
    np.testing.assert_allclose(obloj, hagan, rtol=1e-14)  # identical formulas when beta = 1


def test_limits_without_vol_of_vol():
    # nu -> 0 with beta = 1 (Black) or beta = 0 (Bachelier): the vol is alpha, up to Hagan's
    # O(T) alpha^2 term, which vanishes for these betas in the matching measure.
    tiny_nu = 1e-12
    black = sabr.implied_vol(FORWARD, STRIKES, EXPIRY, 0.2, 1.0, 0.0, tiny_nu)
    np.testing.assert_allclose(black, 0.2, rtol=1e-12)
    normal = sabr.normal_vol(FORWARD, STRIKES, EXPIRY, 0.01, 0.0, 0.0, tiny_nu)
    np.testing.assert_allclose(normal, 0.01, rtol=1e-12)


def test_dtype_and_method_validation():
    vol = sabr.implied_vol(np.float32(FORWARD), np.float32(0.05), np.float32(1.0),
                           np.float32(0.3), np.float32(0.6), np.float32(0.01), np.float32(0.02))
    assert vol.dtype == jnp.float32
    np.testing.assert_allclose(vol, QL_VOLS[1], rtol=1e-6)  # float32 rounding
    with pytest.raises(ValueError, match="method"):
        sabr.implied_vol(FORWARD, 0.05, 1.0, 0.3, 0.6, 0.0, 0.1, method="west")


def _market(slices, seed, method):
    rng = np.random.default_rng(seed)
    forward = rng.uniform(0.01, 0.05, slices)
    expiry = rng.uniform(0.25, 5.0, slices)
    params = np.stack([rng.uniform(0.1, 0.5, slices) * forward ** (1 - BETA),
                       rng.uniform(-0.7, 0.5, slices), rng.uniform(0.1, 1.2, slices)], axis=1)
    strike = forward[:, None] * np.exp(0.5 * np.linspace(-1.0, 1.0, 15))[None, :]
    vol = np.array(sabr.implied_vol(forward[:, None], strike, expiry[:, None],
                                     params[:, :1], BETA, params[:, 1:2], params[:, 2:],
                                     method=method))
    return forward, expiry, strike, vol, params


@pytest.mark.parametrize("method", ["hagan", "obloj"])
def test_fit_round_trip_and_garbage_slices(method):
    forward, expiry, strike, vol, params = _market(6, 0, method)
    vol[2] = np.nan  # nothing usable
    vol[4, 2:] = np.nan  # two usable strikes
    result = sabr.fit(forward, strike, expiry, vol, beta=BETA, method=method)
    good = [0, 1, 3, 5]
    assert result.status.tolist() == [FitStatus.CONVERGED, FitStatus.CONVERGED,
                                      FitStatus.TOO_FEW_POINTS, FitStatus.CONVERGED,
                                      FitStatus.TOO_FEW_POINTS, FitStatus.CONVERGED]
    # Noiseless data: the acceptance bound 1e-8 on the parameters (attained ~1e-14).
    np.testing.assert_allclose(np.asarray(result.params)[good], params[good], atol=1e-8)
    assert np.all(np.isnan(np.asarray(result.params)[[2, 4]]))
