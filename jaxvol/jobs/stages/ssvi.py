"""SSVI stage: :func:`jaxvol.ssvi.fit` per underlying (all expiries at once, no butterfly or
calendar arbitrage by construction); theta per slice goes to the slice table."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from jaxvol.jobs.errors import StageUnavailable
from jaxvol.jobs.stages.common import Chunk, JobEnv, ensure_batch, merge_tables, sharded
from jaxvol.smile import ssvi as ssvi_model

__all__ = ["SSVI_MIN_SLOTS", "ssvi"]

SSVI_MIN_SLOTS = 4
"""Expiry slots per SSVI surface at least (the SPX board's two expiries then share the program
of four-expiry markets; empty slots repeat the last slice at negligible weight)."""


def _grid(chunk: Chunk):
    """[U, slots, width] k / w / weight / mask of each underlying's fittable slices in expiry
    order; empty slots repeat the last slice at 1e-3 weight (ssvi.fit needs every expiry slot
    to hold points; the near-zero theta increment absorbs the duplicate)."""
    batch, table = chunk.batch, chunk.slices
    fittable = np.flatnonzero(batch.mask.any(axis=1))
    order = fittable[np.lexsort((table["expiry"].to_numpy()[fittable],
                                 pd.Index(pd.unique(table["underlying"])).get_indexer(
                                     table["underlying"].to_numpy()[fittable])))]
    names = pd.unique(table["underlying"].to_numpy()[order])
    lane = pd.Index(names).get_indexer(table["underlying"].to_numpy()[order])
    slot = pd.Series(lane).groupby(lane).cumcount().to_numpy()
    count = np.bincount(lane, minlength=len(names))
    slots = max(SSVI_MIN_SLOTS, 1 << max(0, int(count.max(initial=1) - 1).bit_length()))
    source = np.full((len(names), slots), -1)
    source[lane, slot] = order
    last = source[np.arange(len(names)), count - 1]
    duplicate = source < 0
    source = np.where(duplicate, last[:, None], source)
    pick = lambda a: a[source]  # noqa: E731
    weight = pick(batch.weight) * np.where(duplicate, 1e-3, 1.0)[..., None]
    return names, np.where(duplicate, -1, source), pick(batch.log_moneyness), \
        pick(batch.total_variance), weight, pick(batch.mask)


def ssvi(chunk: Chunk, env: JobEnv) -> None:
    if not env.config["ssvi"]["enabled"]:
        raise StageUnavailable("disabled by ssvi.enabled = false")
    ensure_batch(chunk, env)
    names, source, k, w, weight, mask = _grid(chunk)
    if not len(names):
        return
    form = env.config["ssvi"]["phi"]
    config = dataclasses.replace(ssvi_model.FIT_CONFIG, max_iterations=env.iterations("ssvi"))
    fit = sharded(env, lambda k, w, weight, mask: ssvi_model.fit(
        k, w, weights=weight, mask=mask, phi=form, config=config), [k, w, weight, mask],
        key="ssvi", per="underlying", sections=("ssvi",))
    phi = np.asarray(fit.phi_params).reshape(len(names), -1)
    table = pd.DataFrame({"underlying": names, "ssvi_rho": np.asarray(fit.rho)})
    for i in range(phi.shape[1]):
        table[f"ssvi_phi_{i}"] = phi[:, i]
    table["ssvi_status"] = np.asarray(fit.status).astype(np.int32)
    table["ssvi_rmse"] = np.asarray(fit.rmse)
    chunk.underlyings = merge_tables(chunk.underlyings, table)
    theta = np.full(len(chunk.slices), np.nan)
    own = source >= 0  # slots holding their own (not a repeated) slice
    theta[source[own]] = np.asarray(fit.theta)[own]
    chunk.slices["ssvi_theta"] = theta
