"""The box-projected step of two-parameter reduced (separable) fits, a step type of the driver.

A separable least-squares problem (some parameters enter linearly) reduces to a small problem in
the nonlinear ones (variable projection: Golub & Pereyra 1973, Kaufman 1975): the model supplies
``evaluate(m, log_sigma) -> (coefficients, cost, gradient, hessian)`` (the linear coefficients
solved at the point, the reduced cost, its gradient and Gauss–Newton matrix, each per lane as
[lanes, 1] columns), and :class:`ProjectedStep` is the step the controller of
:mod:`jaxvol.calibrate.driver` runs on it (the same controller as the dense engine's: Nielsen's
damping with Marquardt's running-max scaling, the ftol / xtol / gtol tests of :class:`LMConfig`,
lane freezing and the early exit). Three things are specific to the reduced problem: steps are
projected onto a box of the two parameters (a held coordinate's gradient is zeroed), a trust cap
bounds one step by ``max_step`` times a per-lane ``span`` (and ``max_step`` in the second
coordinate), and an accepted point whose full Gauss–Newton step would gain at most ftol counts
as converged (it saves the confirming iteration). The 2 x 2 solves are closed-form.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jaxvol.calibrate import driver
from jaxvol.calibrate._types import FitStatus, LMConfig

__all__ = ["ProjectedStep", "free_gradient", "reduced_solve", "start_state"]


def free_gradient(gradient, m, log_sigma, box):
    """The gradient with the components that push against an active bound of theta zeroed
    (projected gradient), and whether each coordinate is held at its bound."""
    (gm, gt), (m_lo, m_hi, t_lo, t_hi) = gradient, box
    hold_m = ((m <= m_lo) & (gm > 0)) | ((m >= m_hi) & (gm < 0))
    hold_t = ((log_sigma <= t_lo) & (gt > 0)) | ((log_sigma >= t_hi) & (gt < 0))
    return (jnp.where(hold_m, 0.0, gm), jnp.where(hold_t, 0.0, gt)), hold_m | hold_t


def _all_finite(values):
    return functools.reduce(jnp.logical_and, [jnp.isfinite(v) for v in values])


@dataclasses.dataclass(frozen=True)
class ProjectedStep:
    """The driver's step for a reduced two-parameter problem, batched over lanes: point
    (m, log_sigma) and every model quantity [lanes, 1] columns; model = (coefficients,
    gradient, hessian (hmm, hmt, htt)); diagonal (hmm, htt); ``box`` = (m_lo, m_hi, t_lo,
    t_hi); ``span`` [lanes, 1] and ``max_step`` the trust cap (see the module docstring)."""

    model: Callable
    box: tuple
    span: jax.Array
    max_step: float

    def evaluate(self, point):
        coefficients, cost, gradient, hessian = self.model(*point)
        finite = jnp.isfinite(cost) & _all_finite(gradient + hessian)
        return (coefficients, gradient, hessian), cost, finite

    @staticmethod
    def diagonal(model):
        hessian = model[2]
        return hessian[0], hessian[2]

    @staticmethod
    def norm(vector):
        a, b = vector
        return jnp.sqrt(a * a + b * b)

    def converged_at(self, point, model, cost, ftol):
        """The full Gauss–Newton step from the accepted point (held coordinates fixed) would
        lower the cost by at most ftol."""
        _, gradient, (h0, h1, h2) = model
        (g0, g1), held = free_gradient(gradient, *point, self.box)
        h1 = jnp.where(held, 0.0, h1)
        det = h0 * h2 - h1 * h1
        gain = 0.5 * (h2 * g0 * g0 - 2.0 * h1 * g0 * g1 + h0 * g1 * g1) / det
        return (det > 0) & (gain <= ftol * cost)

    def propose(self, state: driver.DriverState) -> driver.Proposal:
        m, log_sigma = state.point
        _, gradient, (hmm, hmt, htt) = state.model
        (gm, gt), held = free_gradient(gradient, m, log_sigma, self.box)
        hmt_free = jnp.where(held, 0.0, hmt)
        floor = jnp.finfo(m.dtype).eps * jnp.maximum(*state.scale)
        dm_scale, dt_scale = (jnp.maximum(s, floor) for s in state.scale)
        p = hmm + state.damping * dm_scale
        q = htt + state.damping * dt_scale
        det = p * q - hmt_free * hmt_free
        step_m = -(q * gm - hmt_free * gt) / det
        step_t = -(p * gt - hmt_free * gm) / det
        # trust cap: |dm| <= max_step * span, |d log sigma| <= max_step. From a grid
        # start the first Gauss–Newton step often overshoots far outside the data, and the
        # damping would need several rejected steps to find a sensible length.
        cap = jnp.minimum(1.0, self.max_step * jnp.minimum(self.span / jnp.abs(step_m),
                                                            1.0 / jnp.abs(step_t)))
        m_lo, m_hi, t_lo, t_hi = self.box
        trial_m = jnp.clip(m + step_m * cap, m_lo, m_hi)  # projected onto the box
        trial_t = jnp.clip(log_sigma + step_t * cap, t_lo, t_hi)
        step_m, step_t = trial_m - m, trial_t - log_sigma
        g_m, g_t = gradient
        predicted = -(g_m * step_m + g_t * step_t) - 0.5 * (
            hmm * step_m * step_m + 2.0 * hmt * step_m * step_t + htt * step_t * step_t)
        residual_norm = jnp.sqrt(2.0 * state.cost)
        cosine = jnp.maximum(*[jnp.abs(g) / jnp.where(h > 0, jnp.sqrt(h) * residual_norm,
                                                      jnp.inf)
                               for g, h in ((gm, hmm), (gt, htt))])
        return driver.Proposal((trial_m, trial_t), (step_m, step_t), predicted, cosine,
                               jnp.isfinite(step_m) & jnp.isfinite(step_t))


def start_state(step: ProjectedStep, m, log_sigma, ok, config: LMConfig) -> driver.DriverState:
    """The driver's state at (m, log_sigma) ([lanes, 1]): BAD_INPUT where ``ok`` is False,
    NON_FINITE where the model is not finite there, else running."""
    return driver.start(step, (m, log_sigma), config, ((~ok, FitStatus.BAD_INPUT),))


def reduced_solve(step: ProjectedStep, config: LMConfig, state: driver.DriverState):
    """Run the driver with ``step`` until every lane is frozen or ``config.max_iterations``;
    returns the final state and the status (MAX_ITERATIONS for lanes still running)."""
    return driver.run(functools.partial(driver.iterate, step, config), state, config)
