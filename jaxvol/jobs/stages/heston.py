"""Heston stage: :func:`jaxvol.heston.calibrate` per underlying, all expiries at once.

Each underlying's surface holds ``heston.strikes_per_expiry`` out-of-the-money quotes per
expiry (spread evenly over the slice's usable quotes), priced by Black at the mid implied vol;
the fit is the domain's vega-scaled price objective (``objective="vol"``) in the domain's box,
from :func:`jaxvol.heston.vol_start` on a cold night and from yesterday's parameters on a warm
one: the same model either way.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd

import jaxvol
from jaxvol import heston as heston_model
from jaxvol.calibrate import LMConfig
from jaxvol.jobs import slices as slices_mod
from jaxvol.jobs.errors import StageUnavailable
from jaxvol.jobs.stages.common import (Chunk, JobEnv, by_underlying, ensure_batch, fallback,
                                       host_call, merge_tables, previous_underlyings, sharded)

__all__ = ["HESTON_PARAMS", "heston"]

HESTON_PARAMS = ["heston_v0", "heston_kappa", "heston_theta", "heston_sigma", "heston_rho"]


def _pick_quotes(batch: slices_mod.SliceBatch, per_slice: int) -> np.ndarray:
    """Column indices [slices, per_slice] spread evenly over each slice's usable quotes (which
    sit at columns 0..count-1 in strike order); -1 marks an unused slot."""
    count = batch.mask.sum(axis=1)[:, None]
    slot = np.arange(per_slice)[None, :]
    spread = np.round(np.linspace(0.0, 1.0, per_slice)[None, :] * (count - 1)).astype(np.int64)
    return np.where(count >= per_slice, spread, np.where(slot < count, slot, -1))


def _black_price(forward, strike, expiry, vol, is_call, discount):
    return jaxvol.black_price(forward, strike, expiry, vol, is_call, discount=discount)


def _surfaces(chunk: Chunk, env: JobEnv):
    """Per underlying [U, slots, q] quotes (strike, is_call, price, mask) and [U, slots] smile
    inputs: spot = the first slot's F D, rate = -log(D) / T and div chosen so that every
    slot's model forward is its slice's forward."""
    batch, table = chunk.batch, chunk.slices
    pick = _pick_quotes(batch, env.config["heston"]["strikes_per_expiry"])
    take = np.maximum(pick, 0)
    forward = table["forward"].to_numpy()[:, None]
    forward = np.where(np.isfinite(forward) & (forward > 0), forward, 1.0)
    discount = table["discount"].to_numpy()[:, None]
    discount = np.where(np.isfinite(discount) & (discount > 0), discount, 1.0)
    expiry = table["expiry"].to_numpy()[:, None]
    strike = np.take_along_axis(batch.strike, take, axis=1)
    vol = np.take_along_axis(batch.implied_vol, take, axis=1)
    valid = (pick >= 0) & np.take_along_axis(batch.mask, take, axis=1)
    is_call = strike >= forward
    lanes = np.broadcast_arrays(forward, strike, expiry, vol, is_call, discount)
    price = host_call(_black_price, lanes, key="black")
    quotes = {"strike": strike, "is_call": is_call, "price": np.where(valid, price, 1.0),
              "mask": valid}
    smiles = {"expiry": expiry, "spot": forward * discount, "rate": -np.log(discount) / expiry}
    names, grid = by_underlying(table["underlying"].to_numpy(), quotes, smiles)
    expiry, rate = grid["expiry"][..., 0], grid["rate"][..., 0]
    spot = grid["spot"][:, 0, 0]
    slot_spot = grid["spot"][..., 0]  # F D per slot: F = spot exp((rate - div) T)
    div = rate - np.log(slot_spot * np.exp(rate * expiry) / spot[:, None]) / expiry
    return names, [grid["strike"], expiry, grid["price"], grid["is_call"], spot, rate, div,
                   grid["mask"]]


def _calibrate(env: JobEnv, surface_arrays: list, previous: np.ndarray | None):
    settings = env.config["heston"]
    config = LMConfig(max_iterations=env.iterations("heston"))
    nodes, contours = settings["nodes"], settings["contours"]

    def fit(strike, expiry, quote, is_call, spot, rate, div, mask, *start):
        surface = heston_model.Surface(strike, expiry, quote, is_call, spot, rate, div, mask)
        initial = heston_model.vol_start(surface)
        if start:  # yesterday's parameters where they exist
            initial = _complete_rows(start[0], initial)
        return heston_model.calibrate(surface, initial=initial, config=config, nodes=nodes,
                                      contours=contours)

    arrays = surface_arrays + ([] if previous is None else [previous])
    return sharded(env, fit, arrays, key="heston" if previous is None else "heston-warm",
                   per="underlying", sections=("heston",))


def _complete_rows(previous, default):
    """``previous`` rows that are complete (all finite), ``default`` rows elsewhere."""
    complete = jnp.all(jnp.isfinite(previous), axis=-1, keepdims=True)
    return jnp.where(complete, previous, default)


def heston(chunk: Chunk, env: JobEnv) -> None:
    """Heston per underlying, all expiries at once (jaxvol.heston.calibrate)."""
    if not env.config["heston"]["enabled"]:
        raise StageUnavailable("disabled by heston.enabled = false")
    ensure_batch(chunk, env)
    names, surface = _surfaces(chunk, env)
    previous = previous_underlyings(env, names, HESTON_PARAMS)
    fit = _calibrate(env, surface, previous)
    params, status = np.asarray(fit.params), np.asarray(fit.status)
    params, used_previous = fallback(status, params, previous)
    count = surface[-1].reshape(len(names), -1).sum(axis=1)
    table = pd.DataFrame(params, columns=HESTON_PARAMS)
    table.insert(0, "underlying", names)
    table["heston_status"] = status.astype(np.int32)
    table["heston_iterations"] = np.asarray(fit.iterations).astype(np.int32)
    table["heston_previous"] = used_previous
    table["heston_rmse"] = np.asarray(fit.rmse)  # vega-scaled price errors ~ vol errors
    table["heston_quotes"] = count
    chunk.underlyings = merge_tables(chunk.underlyings, table)
