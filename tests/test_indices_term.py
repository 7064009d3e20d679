"""Constant-maturity interpolation: the Cboe 30-day rule and the term structure."""

import jax.numpy as jnp
import numpy as np

from jaxvol.indices import interpolate_variance, term_structure, variance_to_index


def test_cboe_30_day_rule_on_the_example():
    # Cboe worked example: sigma1^2, sigma2^2 as published, N1 = 34,484, N2 = 44,954.
    v30 = interpolate_variance(34_484.0, 0.019233906, 44_954.0, 0.019423884, 43_200.0)
    t1, t2 = 34_484 / 525_600, 44_954 / 525_600
    by_hand = (t1 * 0.019233906 * (44_954 - 43_200) / (44_954 - 34_484)
               + t2 * 0.019423884 * (43_200 - 34_484) / (44_954 - 34_484)) * 525_600 / 43_200
    assert abs(float(v30) - by_hand) < 1e-17
    # published 30-day volatility 0.13927842 (8 decimals) and VIX 13.93
    assert abs(np.sqrt(float(v30)) - 0.13927842) < 5e-9
    assert round(float(variance_to_index(v30)), 2) == 13.93
    assert np.isnan(float(variance_to_index(jnp.array(-1e-3))))


def test_term_structure_is_exact_for_linear_total_variance():
    # total variance linear in time (piecewise: a + b t) is reproduced exactly by the linear rule
    minutes = jnp.array([[44_954.0, 9_000.0, 200_000.0, 525_600.0, 1.0],
                         [20_000.0, 60_000.0, 0.0, 0.0, 0.0]])
    valid = jnp.array([[True, True, True, True, False], [True, True, False, False, False]])
    years = minutes / 525_600
    total = 0.001 + 0.04 * years                   # between expiries: linear in t
    variance = jnp.where(valid, total / years, jnp.nan)
    targets = jnp.array([9 * 1440.0, 43_200.0, 182.5 * 1440, 525_600.0])
    out = term_structure(minutes, variance, valid, targets)
    target_years = targets / 525_600
    expected = (0.001 + 0.04 * target_years) / target_years
    # lane 0 brackets every target, lane 1 extrapolates the same straight line: 1e-14 relative.
    np.testing.assert_allclose(np.asarray(out), np.stack([expected, expected]), rtol=1e-14)


def test_term_structure_needs_two_expiries():
    out = term_structure(jnp.array([[30_000.0, 50_000.0]]), jnp.array([[0.04, 0.05]]),
                         jnp.array([[True, False]]), jnp.array([43_200.0]))
    assert np.isnan(np.asarray(out)).all()
