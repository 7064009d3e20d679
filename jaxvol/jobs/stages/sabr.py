"""SABR stage: :func:`jaxvol.sabr.fit` per slice (beta fixed), sharded over the local devices.

Cold nights use sabr.fit's multi-start; warm nights the same fit from yesterday's parameters
(``initial=``): the same residuals and bounds, so a warm night fits the same model.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxvol.jobs.errors import StageUnavailable
from jaxvol.jobs.stages.common import (Chunk, JobEnv, ensure_batch, fallback, previous_slices,
                                       rmse, sharded)
from jaxvol.smile import sabr as sabr_model

__all__ = ["SABR_PARAMS", "sabr"]

SABR_PARAMS = ["sabr_alpha", "sabr_rho", "sabr_nu"]


def _fit(env: JobEnv, lanes: list, previous: np.ndarray | None):
    beta = env.config["sabr"]["beta"]
    config = dataclasses.replace(sabr_model.FIT_CONFIG, max_iterations=env.iterations("sabr"))
    if previous is None:
        return sharded(env, lambda f, k, t, vol, weight, mask: sabr_model.fit(
            f, k, t, vol, beta=beta, weights=weight, mask=mask, config=config), lanes,
            key="sabr-cold", sections=("sabr",))
    return sharded(env, lambda f, k, t, vol, weight, mask, start: sabr_model.fit(
        f, k, t, vol, beta=beta, weights=weight, mask=mask, initial=start, config=config),
        lanes + [previous], key="sabr-warm", sections=("sabr",))


def sabr(chunk: Chunk, env: JobEnv) -> None:
    """SABR per slice: the multi-start fit on a cold night, yesterday's parameters as the start
    on a warm one (slices without them start from sabr.fit's default start)."""
    if not env.config["sabr"]["enabled"]:
        raise StageUnavailable("disabled by sabr.enabled = false")
    batch = ensure_batch(chunk, env)
    table = chunk.slices
    forward = table["forward"].to_numpy()
    forward = np.where(np.isfinite(forward) & (forward > 0), forward, 1.0)
    expiry = table["expiry"].to_numpy()
    previous = previous_slices(env, table, SABR_PARAMS)
    lanes = [forward, batch.strike, expiry, batch.implied_vol, batch.weight, batch.mask]
    fit = _fit(env, lanes, previous)
    params, status = np.asarray(fit.params), np.asarray(fit.status)
    params, used_previous = fallback(status, params, previous)
    table[SABR_PARAMS] = params
    table["sabr_beta"] = env.config["sabr"]["beta"]
    table["sabr_status"] = status.astype(np.int32)
    table["sabr_iterations"] = np.asarray(fit.iterations).astype(np.int32)
    table["sabr_previous"] = used_previous
    model = batch.implied_vol + np.asarray(fit.residuals)
    table["sabr_rmse"] = rmse(np.where(batch.mask, model, 0.0), batch)
