"""Tests of raw SVI (jaxvol.svi): formulas, reference values, quasi-explicit guess and fits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvol
from jaxvol.calibrate import FitStatus
from jaxvol.smile import svi

# Gatheral & Jacquier (2014), example 3.1 (Vogt's raw parameters, t = 1), as given in
# ../shared/reference/README.md: g has its minimum -0.0328636 at k = 0.879263, and the
# jump-wings form is (v, psi, p, c, v_tilde) = (0.01742625, -0.1752111, 0.6997381, 1.3167982,
# 0.0116249).
VOGT = (-0.0410, 0.1331, 0.3060, 0.3586, 0.4153)
VOGT_G_MIN, VOGT_K_MIN = -0.0328636, 0.879263
VOGT_JW = (0.01742625, -0.1752111, 0.6997381, 1.3167982, 0.0116249)

STRIKES = 30
K = np.linspace(-1.2, 0.6, STRIKES)
# Every float64 fit below uses this one [slices, strikes] shape, so svi.fit compiles once for
# the whole file (compilation, not fitting, dominates the test time).
SLICES = 64


def _synthetic(slices, seed):
    rng = np.random.default_rng(seed)
    params = np.stack([rng.uniform(0.005, 0.05, slices), rng.uniform(0.05, 0.3, slices),
                       rng.uniform(-0.8, 0.3, slices), rng.uniform(-0.2, 0.2, slices),
                       rng.uniform(0.05, 0.4, slices)], axis=1)
    k = np.tile(K, (slices, 1))
    w = np.array(svi.total_variance(k, *[params[:, i:i + 1] for i in range(5)]))
    return params, k, w


def test_public_names():
    assert jaxvol.svi is svi and jaxvol.svi.fit is svi.fit


def test_vogt_g_minimum_reference():
    g_min, k_min = svi.g_minimum(*VOGT)
    # The reference is printed to 6 significant digits: half a unit in the last digit.
    assert abs(float(g_min) - VOGT_G_MIN) <= 5e-8
    assert abs(float(k_min) - VOGT_K_MIN) <= 5e-7
    # and the minimum is a stationary point of g (Newton-polished): g'(k_min) ~ 0
    slope = jax.grad(lambda k: svi.durrleman_g(k, *VOGT))(k_min)
    assert abs(float(slope)) < 1e-10


def test_vogt_jump_wings_reference_and_round_trip():
    jw = svi.raw_to_jump_wings(*VOGT, expiry=1.0)
    # Printed to 7-8 significant digits: half a unit in the last printed digit.
    np.testing.assert_allclose(jw, VOGT_JW, atol=5e-8, rtol=0)
    np.testing.assert_allclose(svi.jump_wings_to_raw(*jw, expiry=1.0), VOGT, rtol=1e-13,
                               atol=1e-15)


@pytest.mark.parametrize("raw", [(0.01, 0.2, -0.4, 0.0, 0.3), (0.02, 0.1, 0.5, 0.2, 0.1),
                                 (-0.01, 0.3, -0.9, -0.3, 0.5)])
def test_jump_wings_round_trip_other_shapes(raw):
    expiry = 0.5
    back = svi.jump_wings_to_raw(*svi.raw_to_jump_wings(*raw, expiry=expiry), expiry=expiry)
    # Condition of the inverse is mild for these shapes: 1e-12 leaves ~1e3 ulps of room.
    np.testing.assert_allclose(back, raw, rtol=1e-12, atol=1e-14)


def test_derivatives_and_g_match_autodiff():
    k = jnp.linspace(-2.0, 2.0, 41)
    params = (0.02, 0.15, -0.5, 0.1, 0.2)
    w, dw, d2w = svi.total_variance_derivatives(k, *params)
    total = lambda x: svi.total_variance(x, *params)  # noqa: E731
    np.testing.assert_allclose(dw, jax.vmap(jax.grad(total))(k), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(d2w, jax.vmap(jax.grad(jax.grad(total)))(k), rtol=1e-12)
    # Durrleman's g from its definition with autodiff derivatives (an independent route).
    dwa, d2wa = jax.vmap(jax.grad(total))(k), jax.vmap(jax.grad(jax.grad(total)))(k)
    g_ref = (1 - k * dwa / (2 * w)) ** 2 - dwa ** 2 / 4 * (1 / w + 0.25) + d2wa / 2
    np.testing.assert_allclose(svi.durrleman_g(k, *params), g_ref, rtol=1e-12, atol=1e-14)


def test_lee_wing_bound():
    left, right = svi.lee_wing_slopes(1.5, -0.5)
    assert (float(left), float(right)) == (2.25, 0.75)  # exact in binary
    assert not bool(svi.satisfies_lee_bound(1.5, -0.5))
    assert bool(svi.satisfies_lee_bound(1.0, 0.9))


def test_initial_guess_is_already_close_on_clean_slices():
    params, k, w = _synthetic(SLICES, seed=3)
    guess = svi.initial_guess(k, w)
    # Variable projection solves the clean problem almost exactly; 1e-4 only checks that the
    # guess lands in the basin (a bad grid start is off by O(0.1)).
    np.testing.assert_allclose(guess, params, atol=1e-4)


def _arbitrage_free_slices(params):
    """True where a slice's g >= 0 over the range svi.fit checks (the quoted k range and half
    its width beyond), on an independent dense grid (2001 points + Newton)."""
    span = K[-1] - K[0]
    g_min, _ = svi.g_minimum(*[params[:, i] for i in range(5)], k_lower=K[0] - span / 2,
                             k_upper=K[-1] + span / 2, num=2001)
    return np.asarray(g_min) >= -1e-9


def _expected_status(params):
    """CONVERGED, or ARBITRAGE for a generating slice with butterfly arbitrage in the checked
    range (a few of the random slices: their exact fit is not a usable smile)."""
    return np.where(_arbitrage_free_slices(params), FitStatus.CONVERGED, FitStatus.ARBITRAGE)


def test_noiseless_round_trip_recovers_parameters():
    params, k, w = _synthetic(SLICES, seed=1)
    result = svi.fit(k, w, no_arbitrage="off")  # the plain fit: recovers even arbitrage
    assert result.params.shape == (SLICES, 5)
    np.testing.assert_array_equal(result.status, _expected_status(params))
    # The acceptance bound: parameters to 1e-8 (attained ~1e-12).
    np.testing.assert_allclose(result.params, params, atol=1e-8)
    assert np.all(result.rmse < 1e-12)


def test_noisy_fit_reaches_noise_level():
    params, k, w = _synthetic(SLICES, seed=2)
    noise = 1e-4
    noisy = w + noise * np.random.default_rng(7).standard_normal(w.shape)
    result = svi.fit(k, noisy, no_arbitrage="off")
    assert np.all(np.isin(result.status, [FitStatus.CONVERGED, FitStatus.ARBITRAGE]))
    assert np.mean(result.status == FitStatus.CONVERGED) >= 0.9
    # A least-squares fit with 5 parameters leaves rmse ~ noise sqrt((N - 5)/N) = 0.91 noise;
    # the median over 64 slices lies within a few percent of it.
    expected = noise * np.sqrt((STRIKES - 5) / STRIKES)
    assert 0.85 * expected < np.median(result.rmse) < 1.05 * expected
    # and no slice is stuck in a worse local minimum than the true parameters give
    true_rmse = np.sqrt(np.mean((w - noisy) ** 2, axis=1))
    assert np.all(result.rmse <= true_rmse * (1 + 1e-9))


def test_optimum_on_the_rho_bound_is_reached_exactly():
    """Slices whose best fit has |rho| = 1 (a smile linear on one side: short-dated, noisy
    quotes often want it) converge onto the bound instead of creeping towards it (before,
    such slices ended at the iteration limit)."""
    params, k, w = _synthetic(SLICES, seed=11)
    params[0, 2], params[1, 2] = -1.0, 1.0  # exact data on the bound: found to rounding
    params[2, 2], params[3, 2] = -1.1, 1.1  # the formula beyond it: the best fit is on it
    w[:4] = np.array(svi.total_variance(k[:4], *[params[:4, i:i + 1] for i in range(5)]))
    result = svi.fit(k, w, no_arbitrage="off")
    # on the bound is not a free optimum: AT_BOUND (before issue 20 these read CONVERGED)
    assert np.all(result.status[:4] == FitStatus.AT_BOUND)
    np.testing.assert_array_equal(result.status[4:], _expected_status(params[4:]))
    np.testing.assert_allclose(result.params[:2], params[:2], atol=1e-8)  # as in round trip
    assert np.all(result.rmse[:2] < 1e-12)
    assert result.params[2, 2] == -1.0 and result.params[3, 2] == 1.0  # exactly on the bound
    assert np.all(result.rmse[2:4] > 1e-6)  # rho = +-1.1 is out of reach
    np.testing.assert_allclose(result.params[4:], params[4:], atol=1e-8)


def test_sigma_stays_in_its_box():
    """sigma is kept within [R / 100, 10 R] (R the quoted k range): a kinked slice (true sigma
    1e-4, far below R / 100 = 0.018) converges with sigma on that floor."""
    params, k, w = _synthetic(SLICES, seed=12)
    params[0] = (0.02, 0.2, -0.3, 0.0, 1e-4)
    w[0] = np.asarray(svi.total_variance(k[0], *params[0]))
    result = svi.fit(k, w, no_arbitrage="off")
    # sigma on its floor is not a free optimum: AT_BOUND (before issue 20: CONVERGED)
    assert result.status[0] == FitStatus.AT_BOUND
    np.testing.assert_array_equal(result.status[1:], _expected_status(params[1:]))
    floor = (K[-1] - K[0]) / 100
    np.testing.assert_allclose(result.params[0, 4], floor, rtol=1e-12)
    # the kink is smoothed over the floor's width: the true parameters with sigma on the floor
    # miss no quote by more than b * floor (sqrt(x^2 + s^2) - |x| <= s), so the fit does not
    # either (measured: rmse 2.1e-4 against b * floor = 3.6e-3)
    assert float(result.rmse[0]) < 0.2 * floor
    np.testing.assert_allclose(result.params[1:], params[1:], atol=1e-8)


def test_implicit_gradient_on_the_rho_bound_matches_finite_differences():
    """At an optimum on rho = -1 the derivatives follow the bound: rho does not move, the other
    parameters move as the finite differences say. Slice 0 comes from the SVI formula with
    rho = -1.1 (outside the model), so its best fit lies on the bound with room to spare."""
    params, k, w = _synthetic(SLICES, seed=13)
    params[0, 2] = -1.1
    w[0] = np.asarray(svi.total_variance(k[0], *params[0]))
    noisy = w + 1e-4 * np.random.default_rng(14).standard_normal(w.shape)
    fit = lambda row: svi.fit(k, jnp.asarray(noisy).at[0].set(row)).params[0]  # noqa: E731
    assert float(fit(jnp.asarray(noisy[0]))[2]) == -1.0
    jacobian = jax.jacfwd(fit)(jnp.asarray(noisy[0]))
    assert np.all(jacobian[2] == 0)
    for j in [0, 15, 29]:
        e = np.zeros_like(noisy[0])
        e[j] = 1e-5  # small enough to stay on the bound, as the check of rho below shows
        up, down = fit(noisy[0] + e), fit(noisy[0] - e)
        assert float(up[2]) == float(down[2]) == -1.0
        # same error budget as the interior test (a central difference, no extrapolation:
        # truncation O(h^2) ~ 1e-10 relative, solver noise ~1e-10 / 1e-5 = 1e-5)
        np.testing.assert_allclose(jacobian[:, j], (up - down) / 2e-5, rtol=1e-4, atol=1e-4)


def test_garbage_slices_get_status_and_do_not_disturb_others():
    params, k, w = _synthetic(SLICES, seed=4)
    garbage = w.copy()
    garbage[1] = np.nan  # all NaN
    garbage[2, 2:] = np.nan  # two usable strikes
    garbage[3, :] = -0.01  # crossed quotes: negative total variance everywhere
    clean = svi.fit(k, w)
    dirty = svi.fit(k, garbage)
    expected = _expected_status(params).tolist()  # CONVERGED (or ARBITRAGE: see above)
    expected[1:4] = [FitStatus.TOO_FEW_POINTS] * 3  # no usable point, 2, none (w < 0)
    assert dirty.status.tolist() == expected
    assert np.all(np.isnan(dirty.params[1:4])) and np.all(np.isnan(dirty.rmse[1:4]))
    # Same batch shape, same program: the healthy slices are bit-for-bit unchanged.
    healthy = np.r_[0, 4:SLICES]
    np.testing.assert_array_equal(np.asarray(dirty.params)[healthy],
                                  np.asarray(clean.params)[healthy])


def test_masked_and_nan_points_are_ignored():
    params, k, w = _synthetic(SLICES, seed=5)
    dirty = w.copy()
    dirty[0, [3, 17]] = np.nan
    mask = np.ones_like(w, dtype=bool)
    mask[1, 5] = False
    dirty[1, 5] = 99.0  # a wild quote that the mask removes
    result = svi.fit(k, dirty, mask=mask)
    np.testing.assert_allclose(result.params, params, atol=1e-8)  # as in the round trip


def test_arbitrage_aware_fit_removes_butterfly_arbitrage():
    _, k, w = (np.array(x) for x in _synthetic(SLICES, seed=10))  # Vogt in row 0 (shared shape)
    k[0] = np.linspace(-1.5, 1.5, STRIKES)
    w[0] = np.asarray(svi.total_variance(k[0], *VOGT))
    plain = svi.fit(k, w, no_arbitrage="off")
    np.testing.assert_allclose(plain.params[0], VOGT, atol=1e-8)  # Vogt's slice has g < 0
    assert plain.status[0] == FitStatus.ARBITRAGE  # ... so the plain fit is not CONVERGED
    k, w = k[:1], w[:1]
    free = svi.fit(k, w, no_arbitrage=True)
    assert free.status[0] == FitStatus.CONVERGED
    # The penalty pushes g towards >= 1e-3 at 25 points and at g's polished minimum over
    # [-3, 3]; checked on an independent dense grid (2001 points + Newton) over that range.
    g_min, _ = svi.g_minimum(*free.params[0], k_lower=-3.0, k_upper=3.0, num=2001)
    assert float(g_min) >= 0.0
    assert bool(svi.satisfies_lee_bound(free.params[0, 1], free.params[0, 2]))
    # Removing the arbitrage must move the fit (rmse > 0) yet keep it close: within 5% of the
    # slice's mean total variance (measured: 2.4e-3 against a mean of ~0.07, i.e. ~3.4%).
    assert 0 < float(free.rmse[0]) < 0.05 * float(np.mean(w))


def test_implicit_gradient_of_fit_matches_finite_differences():
    params, k, w = _synthetic(SLICES, seed=6)
    noisy = w + 1e-4 * np.random.default_rng(8).standard_normal(w.shape)
    # A noisy SVI fit is ill-conditioned: solver stopping points scatter by ~1e-10 in the
    # parameters, so tiny steps are useless. Use step h = 2e-4 with Richardson extrapolation
    # (4 D(h/2) - D(h)) / 3: truncation O(h^4) ~ 1e-7, solver noise ~1e-10 / 1e-4 ~ 1e-6.
    # Slice 0 is differentiated inside the shared batch shape (the other slices are fixed).
    fit = lambda row: svi.fit(k, jnp.asarray(noisy).at[0].set(row)).params[0]  # noqa: E731
    jacobian = jax.jacfwd(fit)(jnp.asarray(noisy[0]))

    def central(j, step):
        e = np.zeros_like(noisy[0])
        e[j] = step
        return (fit(noisy[0] + e) - fit(noisy[0] - e)) / (2 * step)

    for j in [0, 10, 20, 29]:
        richardson = (4 * central(j, 1e-4) - central(j, 2e-4)) / 3
        # entries are O(0.1-10); 1e-5 relative + 1e-5 absolute covers the error budget above
        np.testing.assert_allclose(jacobian[:, j], richardson, rtol=1e-5, atol=1e-5)


def test_float32_fit():
    params, k, w = _synthetic(4, seed=9)
    result = svi.fit(k.astype(np.float32), w.astype(np.float32))
    assert result.params.dtype == jnp.float32 and result.rmse.dtype == jnp.float32
    # float32 data carry ~1e-8 absolute error in w; the fit reproduces w to that level.
    assert np.all(result.rmse < 1e-6)


def test_shape_misuse():
    with pytest.raises(ValueError, match="slices, strikes"):
        svi.fit(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="weights of shape"):
        svi.fit(np.zeros((3, 5)), np.ones((3, 5)), weights=np.ones(4))
    with pytest.raises(ValueError, match="mask of shape"):
        svi.fit(np.zeros((3, 5)), np.ones((3, 5)), mask=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="boolean"):
        svi.fit(np.zeros((3, 5)), np.ones((3, 5)), mask=np.ones((3, 5)))
    with pytest.raises(ValueError, match="num"):
        svi.g_minimum(*VOGT, num=2)
