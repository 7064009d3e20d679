"""jaxvol.ou.fit on exact OU simulations with known truth: the MLE against an independent
scipy maximisation of the same likelihood, bias theory, bias correction, interval coverage,
statuses of bad series."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

import jaxvol.ou as ou

LAM = math.log(2.0) / 5.0   # 5 s half-life
WINDOW = 60.0               # seconds
RATE = 2.0                  # ticks per second (Poisson)


def poisson_grid(seed, series, ticks, rate=RATE):
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, (series, ticks))
    gaps[:, 0] = 0.0
    return np.cumsum(gaps, axis=1)


@pytest.fixture(scope="module")
def batch():
    """2,000 series of 120 Poisson ticks (~60 s), one simulate and one fit call."""
    times = poisson_grid(1, 2000, 120)
    values = ou.simulate(jax.random.key(7), times, lam=LAM, mu=0.3, eta=0.1)
    return times, np.asarray(values), ou.fit(times, values)


def numpy_loglik(params, t, x):
    """The exact OU likelihood written independently (numpy, no profiling)."""
    log_lam, mu, log_eta = params
    lam, eta2 = math.exp(log_lam), math.exp(2 * log_eta)
    dt = np.diff(t)
    phi = np.exp(-lam * dt)
    var = eta2 * (1 - np.exp(-2 * lam * dt)) / (2 * lam)
    mean = mu + phi * (x[:-1] - mu)
    var0 = eta2 / (2 * lam)
    ll = -0.5 * (math.log(2 * math.pi * var0) + (x[0] - mu) ** 2 / var0)
    return ll - 0.5 * np.sum(np.log(2 * math.pi * var) + (x[1:] - mean) ** 2 / var)


def numpy_profile(u, t, x):
    """The same likelihood profiled over mu (GLS) and eta^2 in plain numpy, complex-safe
    (exp(z) - 1 instead of expm1) so that its derivative in u can be taken by complex step."""
    lam = np.exp(u)
    dt = np.diff(t)
    phi = np.exp(-lam * dt)
    q = (1 - np.exp(-2 * lam * dt)) / (2 * lam)
    a = 1 - phi
    y = x[1:] - phi * x[:-1]
    q0 = 1 / (2 * lam)
    mu = (x[0] / q0 + np.sum(a * y / q)) / (1 / q0 + np.sum(a * a / q))
    ssq = (x[0] - mu) ** 2 / q0 + np.sum((y - mu * a) ** 2 / q)
    n = x.size
    eta2 = ssq / n
    ll = -0.5 * n * (np.log(2 * np.pi * eta2) + 1) - 0.5 * (np.log(q0) + np.sum(np.log(q)))
    return ll, mu, eta2


def test_mle_matches_scipy_on_the_same_likelihood(batch):
    """scipy's brentq on the complex-step score of an independently written profile likelihood
    (xtol 1e-15) gives lam; the full (unprofiled) numpy likelihood at jaxvol's (lam, mu, eta)
    must equal the profile maximum and be a stationary point. Agreement 1e-8 relative (the
    acceptance point); both roots are solved to ~1e-13, so this is not loose."""
    times, values, res = batch
    for i in range(6):
        t, x = times[i], values[i]
        score = lambda u: numpy_profile(u + 1e-30j, t, x)[0].imag / 1e-30  # noqa: E731
        u0 = math.log(float(res.lam[i]))
        root = optimize.brentq(score, u0 - 0.5, u0 + 0.5, xtol=1e-15, rtol=1e-15)
        ll, mu, eta2 = numpy_profile(root, t, x)
        assert float(res.lam[i]) == pytest.approx(math.exp(root), rel=1e-8)
        assert float(res.mu[i]) == pytest.approx(mu, rel=1e-8, abs=1e-12)
        assert float(res.eta[i]) == pytest.approx(math.sqrt(eta2), rel=1e-8)
        full = numpy_loglik([root, mu, 0.5 * math.log(eta2)], t, x)
        assert float(res.loglik[i]) == pytest.approx(full, rel=1e-12)
        # the full likelihood is stationary there (central differences, step 1e-5: error
        # ~h^2 f''' ~ 1e-7 against curvatures of 1e2-1e4)
        p0 = np.array([root, mu, 0.5 * math.log(eta2)])
        for j in range(3):
            e = np.zeros(3)
            e[j] = 1e-5
            slope = (numpy_loglik(p0 + e, t, x) - numpy_loglik(p0 - e, t, x)) / 2e-5
            assert abs(slope) < 1e-4


def test_bias_matches_theory_and_correction_removes_it(batch):
    """5 s half-life over 60 s (lam T = 8.3), 2,000 series. First-order theory (Tang & Chen
    2009): bias = (7 + e^{2 lam h}) / (2T) ~ 4.07/T with mu estimated; 2,000 series give the
    mean bias x T a standard error of ~0.14, and the second-order term adds ~+0.3 at lam T = 8,
    so |bias T - 4.07| < 0.6 (4 SE). lam_corrected (REML estimate less its known-mean first-order
    bias) must be within 5% of lam on average (the acceptance point; SE of the mean ~1.7%)."""
    times, values, res = batch
    assert np.all(np.asarray(res.status) == 0)
    span = times[:, -1] - times[:, 0]
    h = span / (times.shape[1] - 1)
    lam_hat = np.asarray(res.lam)
    bias_t = np.mean((lam_hat - LAM) * span)
    theory = np.mean((7 + np.exp(2 * LAM * h)) / 2)
    se = np.std(lam_hat * span) / math.sqrt(lam_hat.size)
    print(f"bias*T = {bias_t:.3f} (theory {theory:.3f}, se {se:.3f}); corrected rel bias "
          f"{np.mean(res.lam_corrected) / LAM - 1:+.4f}")
    assert 2.0 < bias_t and abs(bias_t - theory) < 0.6
    assert abs(np.mean(res.lam_corrected) / LAM - 1) < 0.05
    # the half-life follows lam everywhere
    np.testing.assert_allclose(res.half_life, math.log(2) / lam_hat, rtol=1e-14)


def test_interval_coverage(batch):
    """90% profile intervals cover the true lam in 86-94% of 2,000 series (binomial SE 0.67%,
    so the band is +-6 SE around 90%) and bracket the point estimate."""
    _, _, res = batch
    low, high = np.asarray(res.lam_low), np.asarray(res.lam_high)
    coverage = np.mean((low <= LAM) & (LAM <= high))
    print(f"coverage {coverage:.4f}")
    assert 0.86 <= coverage <= 0.94
    assert np.all(low < high)


def test_bad_series_get_a_status_and_do_not_touch_others():
    """Too few points, NaN, duplicate and decreasing times, constant values, white noise,
    padding in the middle: each bad row gets its own status and NaN; the good rows are
    unchanged by the bad ones (compared with the same rows fitted in a clean batch)."""
    times = poisson_grid(3, 2000, 120)  # the fixture's shape: one compiled program for both
    values = np.asarray(ou.simulate(jax.random.key(7), times, lam=0.3, mu=0.0, eta=1.0))
    mask = np.ones(times.shape, bool)
    t, v = times.copy(), values.copy()
    mask[1, 4:] = False                      # 4 valid ticks < min_points
    v[2, 10] = np.nan                        # NaN value
    t[3, 20] = t[3, 19]                      # duplicate time
    t[4, 30] = t[4, 29] - 0.1                # decreasing time
    v[5] = 1.0                               # constant
    mask[6, 1::2] = False                    # padding in the middle: still fitted
    v[7] = np.random.default_rng(0).standard_normal(120)  # white noise: a half-life < 1 gap
    res = ou.fit(t, v, mask=mask)
    status = np.asarray(res.status)
    S = ou.OUStatus
    assert list(status[1:7]) == [S.TOO_FEW_POINTS, S.NON_FINITE_INPUT, S.NON_INCREASING_TIMES,
                                 S.NON_INCREASING_TIMES, S.UNIDENTIFIED, S.CONVERGED]
    assert float(res.half_life[7]) < 0.5 * np.median(np.diff(times[7]))
    assert np.all(np.isnan(np.asarray(res.lam)[1:6]))
    clean = ou.fit(times, values)   # same shape: no new compile
    assert status[0] == 0
    assert float(res.lam[0]) == float(clean.lam[0])
    # the masked row equals the fit of its even ticks alone (padded with masked ticks)
    half = np.zeros(times.shape, bool)
    half[:, :60] = True
    tt = np.tile(times[6, ::2], (2000, 2))
    vv = np.tile(values[6, ::2], (2000, 2))
    alone = ou.fit(tt, vv, mask=half)
    np.testing.assert_allclose(res.lam[6], alone.lam[6], rtol=1e-12)
    # one series, float32: scalars of float32 out
    single = ou.fit(times[0].astype(np.float32), values[0].astype(np.float32))
    assert single.lam.shape == () and single.lam.dtype == jnp.float32
    assert float(single.lam) == pytest.approx(float(clean.lam[0]), rel=1e-3)


def test_reverse_mode_gradient_matches_finite_differences(batch):
    """jax.grad of a function of the fitted parameters (lam, mu, eta, the interval ends and
    lam_corrected) with respect to the data (values and tick times), through the implicit
    derivative at the optimum (no while loop is differentiated), against central finite
    differences along one random direction of both (for the times, random relative changes
    of the gaps). The fixture's shape (one fit program for the
    differences); one series is white noise (lam on its upper bound: its lam follows the
    bound, a function of the times only) and one has a NaN (no solution: zero gradient, and
    the other rows' gradients stay finite). Step 1e-6 in values and in times: truncation
    ~h^2 f''' and rounding ~1e-16 |f| / h are both below 1e-7 relative; the solvers converge
    to ~1e-13, so 1e-6 relative is the test's tolerance."""
    times, values, _ = batch
    values = values.copy()
    values[1] = np.random.default_rng(4).standard_normal(values.shape[1]) * 0.05
    values[2, 7] = np.nan
    weights = np.random.default_rng(5).uniform(0.5, 1.5, (6, times.shape[0]))

    def summary(t, x):
        res = ou.fit(t, x)
        parts = (res.lam, res.mu, res.eta, res.lam_low, res.lam_high, res.lam_corrected)
        return sum(jnp.sum(jnp.where(jnp.isfinite(p), w * p, 0.0))
                   for p, w in zip(parts, weights))

    status = np.asarray(ou.fit(times, values).status)
    assert status[1] == ou.OUStatus.AT_BOUND and status[2] == ou.OUStatus.NON_FINITE_INPUT
    g_t, g_x = jax.grad(summary, argnums=(0, 1))(jnp.asarray(times), jnp.asarray(values))
    assert np.all(np.isfinite(g_t)) and np.all(np.isfinite(g_x))
    assert np.all(np.asarray(g_x[2]) == 0.0) and np.all(np.asarray(g_t[2]) == 0.0)
    # one central difference along a joint direction of values and times (two fits instead
    # of four); the times move each gap by a multiple of itself: a plain random shift of 1e-6
    # would make one of the fixture's ~5 gaps below 1e-5 non-increasing (a status change,
    # not a derivative). Both parts contribute (~1140 and ~180), so a 1e-6 error in either
    # shows.
    rng = np.random.default_rng(6)
    d_x, d_t = rng.standard_normal(times.shape), rng.standard_normal(times.shape)
    d_t[:, 0] = 0.0
    d_t = np.cumsum(d_t * np.diff(times, prepend=times[:, :1]), axis=1)
    h = 1e-6
    fd = (float(summary(times + h * d_t, values + h * d_x))
          - float(summary(times - h * d_t, values - h * d_x))) / (2 * h)
    parts = float(np.sum(np.asarray(g_x) * d_x)), float(np.sum(np.asarray(g_t) * d_t))
    print(f"grad . direction: values {parts[0]:.10g} + times {parts[1]:.10g}; central "
          f"difference {fd:.10g}")
    assert abs(parts[1]) > 10.0 and abs(parts[0]) > 10.0
    assert sum(parts) == pytest.approx(fd, rel=1e-6)
