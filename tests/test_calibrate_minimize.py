"""Tests of the optax path jaxvol.calibrate.minimize (Adam and L-BFGS)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvol import calibrate
from jaxvol.calibrate import FitStatus


def rosenbrock(params, a):
    """Minimum 0 at (a, a^2)."""
    return (a - params[0]) ** 2 + 100.0 * (params[1] - params[0] ** 2) ** 2


def ridge(params, design, target, penalty):
    """Ridge regression: a non-least-squares-shaped objective with a closed-form minimiser."""
    residual = design @ params - target
    return jnp.sum(residual ** 2) + penalty * jnp.sum(params ** 2)


def _ridge_problem():
    rng = np.random.default_rng(0)
    design = rng.normal(size=(2, 12, 3))
    target = rng.normal(size=(2, 12))
    penalty = np.array([0.5, 2.0])
    exact = np.stack([np.linalg.solve(d.T @ d + p * np.eye(3), d.T @ t)
                      for d, t, p in zip(design, target, penalty)])
    return design, target, penalty, exact


def test_lbfgs_finds_rosenbrock_minimum_per_lane():
    result = calibrate.minimize(rosenbrock, jnp.array([[-1.2, 1.0], [0.5, 0.5]]),
                                jnp.array([1.0, 2.0]), optimizer="lbfgs", steps=100)
    # L-BFGS with a zoom line search converges superlinearly; 1e-8 is ~1e6x above its
    # attainable accuracy but far below any wrong answer.
    np.testing.assert_allclose(result.params, [[1.0, 1.0], [2.0, 4.0]], atol=1e-8)
    assert result.status.tolist() == [FitStatus.CONVERGED] * 2


def test_adam_solves_ridge_regression():
    design, target, penalty, exact = _ridge_problem()
    result = calibrate.minimize(ridge, jnp.zeros((2, 3)), design, target, penalty,
                                optimizer=optax.adam(0.05), steps=3000, gtol=1e-6)
    # Adam with a fixed step oscillates at the minimum with amplitude ~lr * (noise in the
    # update direction); on this well-conditioned problem it settles well below 1e-5.
    np.testing.assert_allclose(result.params, exact, atol=1e-5)


def test_minimize_implicit_gradient():
    grad = jax.jacfwd(lambda a: calibrate.minimize(
        rosenbrock, jnp.array([[0.5, 0.5]]), a, optimizer="lbfgs", steps=100).params[0])(
        jnp.array([2.0]))
    # Exact derivative of the minimiser (a, a^2) is (1, 2a) = (1, 4); the IFT with an exact
    # Hessian at a converged point reproduces it to ~1e-8 (the solution's accuracy).
    np.testing.assert_allclose(grad[:, 0], [1.0, 4.0], rtol=1e-7)


def test_minimize_ridge_gradient_wrt_target():
    design, target, penalty, exact = _ridge_problem()
    grad = jax.jacrev(lambda t: calibrate.minimize(
        ridge, jnp.zeros((2, 3)), design, t, penalty, optimizer="lbfgs", steps=50).params[0])(
        jnp.asarray(target))
    d = design[0]
    expected = np.linalg.solve(d.T @ d + penalty[0] * np.eye(3), d.T)  # linear in the target
    np.testing.assert_allclose(grad[:, 0], expected, atol=1e-10)  # quadratic: exact IFT
    np.testing.assert_array_equal(grad[:, 1], 0.0)  # lanes do not interact


def test_minimize_bad_lane_and_misuse():
    result = calibrate.minimize(rosenbrock, jnp.array([[np.nan, 1.0], [0.5, 0.5]]),
                                jnp.array([1.0, 1.0]), optimizer="lbfgs", steps=60)
    assert result.status.tolist() == [FitStatus.BAD_INPUT, FitStatus.CONVERGED]
    assert np.all(np.isnan(result.params[0]))
    with pytest.raises(ValueError, match="optimizer"):
        calibrate.minimize(rosenbrock, jnp.ones((1, 2)), jnp.ones(1), optimizer="sgd-ish")
    with pytest.raises(ValueError, match="steps"):
        calibrate.minimize(rosenbrock, jnp.ones((1, 2)), jnp.ones(1), steps=0)
