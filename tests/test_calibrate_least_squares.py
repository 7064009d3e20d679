"""Tests of the batched Levenberg–Marquardt engine jaxvol.calibrate.least_squares."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from jaxvol import calibrate
from jaxvol.calibrate import FitStatus, LMConfig

TIMES = np.linspace(0.0, 3.0, 20)


def rosenbrock(params, scale):
    """Rosenbrock as least squares: unique zero-residual minimum at (1, 1)."""
    return jnp.stack([10.0 * (params[1] - params[0] ** 2), scale * (1.0 - params[0])])


def exponential(params, times, observed):
    return params[0] * jnp.exp(-params[1] * times) - observed


def _observed(amplitude=2.0, rate=1.3, wiggle=0.01):
    return amplitude * np.exp(-rate * TIMES) + wiggle * np.sin(7.0 * TIMES)


def _fit_one(observed, **kwargs):
    return calibrate.least_squares(exponential, jnp.array([[1.0, 1.0]]), TIMES[None],
                                   jnp.asarray(observed)[None], **kwargs)


def test_rosenbrock_reaches_known_minimum_per_lane():
    starts = jnp.array([[-1.2, 1.0], [2.0, 2.0], [0.0, -3.0]])
    result = calibrate.least_squares(rosenbrock, starts, jnp.ones(3))
    # Zero-residual problem: LM converges quadratically, so 1e-10 is far above the attained
    # accuracy (~1e-15) yet far below any wrong answer.
    np.testing.assert_allclose(result.params, 1.0, atol=1e-10)
    assert result.status.tolist() == [FitStatus.CONVERGED] * 3
    assert np.all(result.loss < 1e-20)
    assert np.all(result.iterations > 0)


def test_exponential_fit_matches_scipy_with_nonzero_residuals():
    observed = _observed()
    result = _fit_one(observed)
    reference = scipy.optimize.least_squares(
        lambda p: p[0] * np.exp(-p[1] * TIMES) - observed, [1.0, 1.0],
        method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    # Both minimise the same smooth function to convergence; the minimiser is determined to
    # ~sqrt(eps)-level changes in cost, i.e. ~1e-9 in the parameters (condition ~10).
    np.testing.assert_allclose(result.params[0], reference.x, rtol=1e-8)
    np.testing.assert_allclose(result.loss[0], reference.cost, rtol=1e-10)
    np.testing.assert_allclose(result.residuals[0], reference.fun, atol=1e-9)
    assert result.status[0] == FitStatus.CONVERGED


def test_status_per_lane_and_failures_do_not_disturb_others():
    observed = np.stack([_observed(), _observed(3.0, 0.7), _observed(), _observed()])
    observed[2, 5] = np.nan  # NaN at a usable point -> NON_FINITE
    mask = np.ones_like(observed, dtype=bool)
    mask[3, 2:] = False  # two usable points for two parameters is fine ...
    mask[3, 1:] = False  # ... one is not -> TOO_FEW_POINTS
    starts = jnp.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    times = np.broadcast_to(TIMES, observed.shape)
    batch = calibrate.least_squares(exponential, starts, times, observed, mask=mask)
    assert batch.status.tolist() == [FitStatus.CONVERGED, FitStatus.CONVERGED,
                                     FitStatus.NON_FINITE, FitStatus.TOO_FEW_POINTS]
    assert np.all(np.isnan(batch.params[2:])) and np.all(np.isnan(batch.loss[2:]))
    alone = _fit_one(observed[0])
    # Lanes never interact: bit-for-bit identical to fitting lane 0 alone.
    np.testing.assert_array_equal(batch.params[0], alone.params[0])
    np.testing.assert_array_equal(batch.iterations[0], alone.iterations[0])


def test_masked_nan_points_are_ignored():
    observed = _observed()
    dirty = observed.copy()
    dirty[[3, 11]] = np.nan
    mask = ~np.isnan(dirty)
    masked = _fit_one(dirty, mask=mask[None])
    clean = calibrate.least_squares(exponential, jnp.array([[1.0, 1.0]]), TIMES[mask][None],
                                    observed[mask][None])
    # Same problem up to floating-point summation order.
    np.testing.assert_allclose(masked.params, clean.params, rtol=1e-12)
    assert masked.residuals[0, 3] == 0.0 and masked.status[0] == FitStatus.CONVERGED


def test_max_iterations_status():
    result = calibrate.least_squares(rosenbrock, jnp.array([[-1.2, 1.0]]), jnp.ones(1),
                                     config=LMConfig(max_iterations=3))
    assert result.status[0] == FitStatus.MAX_ITERATIONS and result.iterations[0] == 3
    assert np.all(np.isfinite(result.params))


def test_fixed_iterations_without_early_exit_give_same_result():
    starts = jnp.array([[-1.2, 1.0], [2.0, 2.0]])
    early = calibrate.least_squares(rosenbrock, starts, jnp.ones(2))
    fixed = calibrate.least_squares(rosenbrock, starts, jnp.ones(2),
                                    config=LMConfig(early_exit=False))
    # Frozen lanes never move, so stopping the batch early changes nothing.
    np.testing.assert_array_equal(early.params, fixed.params)
    np.testing.assert_array_equal(early.iterations, fixed.iterations)


def test_weights_scale_residuals():
    observed = _observed()
    weights = np.linspace(0.5, 2.0, TIMES.size)
    result = _fit_one(observed, weights=weights[None])
    reference = scipy.optimize.least_squares(
        lambda p: weights * (p[0] * np.exp(-p[1] * TIMES) - observed), [1.0, 1.0],
        method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    np.testing.assert_allclose(result.params[0], reference.x, rtol=1e-8)  # as above


def test_bounds_are_respected_and_bind():
    observed = _observed()
    result = _fit_one(observed, lower=[0.0, 1.5], upper=[1.9, np.inf])
    amplitude, rate = np.asarray(result.params[0])
    # Unconstrained optimum is (2.004, 1.302): both bounds bind. The sigmoid/exp transforms
    # approach a binding bound as the unconstrained parameter diverges; within the iteration
    # budget the gap closes to well under 1e-4 (and rounding may land exactly on the bound,
    # never beyond it).
    assert 1.9 - 1e-4 < amplitude <= 1.9 and 1.5 <= rate < 1.5 + 1e-4


def test_implicit_gradient_matches_finite_differences():
    observed = _observed()
    fit = lambda y: _fit_one(y).params[0]  # noqa: E731
    forward = jax.jacfwd(fit)(jnp.asarray(observed))
    reverse = jax.jacrev(fit)(jnp.asarray(observed))
    step = 1e-3
    basis = np.eye(TIMES.size)
    central = np.stack([(fit(observed + step * e) - fit(observed - step * e)) / (2 * step)
                        for e in basis[::4]], axis=1)
    # Central differences: truncation O(step^2) ~ 1e-6 plus solution noise ~1e-10/step = 1e-7,
    # against entries of size ~0.5.
    np.testing.assert_allclose(forward[:, ::4], central, atol=3e-6)
    np.testing.assert_allclose(reverse, forward, rtol=1e-12, atol=1e-15)


def test_gradient_of_healthy_lane_unchanged_by_nan_lane():
    observed = np.stack([_observed(), _observed()])
    observed[1, 4] = np.nan
    times = np.broadcast_to(TIMES, observed.shape)

    def total(obs):
        params = calibrate.least_squares(exponential, jnp.ones((2, 2)), times, obs).params
        return jnp.sum(jnp.where(jnp.isfinite(params), params, 0.0))

    gradient = jax.grad(total)(jnp.asarray(observed))
    alone = jax.grad(lambda y: jnp.sum(_fit_one(y).params))(jnp.asarray(observed[0]))
    np.testing.assert_allclose(gradient[0], alone, rtol=1e-12)
    np.testing.assert_array_equal(gradient[1], 0.0)


def test_float32_in_float32_out():
    observed = _observed().astype(np.float32)
    result = calibrate.least_squares(exponential, jnp.ones((1, 2), jnp.float32),
                                     TIMES[None].astype(np.float32), observed[None])
    assert result.params.dtype == jnp.float32 and result.loss.dtype == jnp.float32
    # float32 solution of a condition-~10 problem: ~1e-5 relative.
    np.testing.assert_allclose(result.params[0], _fit_one(_observed()).params[0], rtol=1e-4)
    assert result.status[0] == FitStatus.CONVERGED


def test_compiles_once_per_shape():
    traces = []

    def counted(params, scale):
        traces.append(1)
        return rosenbrock(params, scale)

    for scale in (1.0, 2.0, 3.0):
        calibrate.least_squares(counted, jnp.array([[-1.2, 1.0]]), jnp.array([scale]))
    first = len(traces)
    calibrate.least_squares(counted, jnp.array([[-1.2, 1.0]]), jnp.array([4.0]))
    assert len(traces) == first  # the same shapes reuse the compiled program


def test_static_misuse_raises_value_error():
    with pytest.raises(ValueError, match="params0"):
        calibrate.least_squares(rosenbrock, jnp.ones(2), jnp.ones(1))
    with pytest.raises(ValueError, match="lanes"):
        calibrate.least_squares(rosenbrock, jnp.ones((2, 2)), jnp.ones(3))
    with pytest.raises(ValueError, match="lower < upper"):
        calibrate.least_squares(rosenbrock, jnp.ones((1, 2)), jnp.ones(1), lower=[0, 2],
                                upper=[1, 1])
    with pytest.raises(ValueError, match="max_iterations"):
        LMConfig(max_iterations=0)
