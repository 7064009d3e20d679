"""Index stage: Cboe-method and VXJ-method 30-day indices from the raw quotes of the two
expiries bracketing the target (:func:`jaxvol.indices.cboe_vix_batch`,
:func:`jaxvol.indices.vxj_index_batch`), and the VXJ term structure from every slice's OTM
mids (:func:`jaxvol.indices.vxj_variance_from_prices`, :func:`jaxvol.indices.term_structure_status`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jaxvol import batching, indices as indices_model
from jaxvol.jobs.errors import StageUnavailable
from jaxvol.jobs.stages.common import (MINUTES_PER_YEAR, Chunk, JobEnv, by_underlying,
                                       host_call, sharded)
from jaxvol.status import Status

__all__ = ["indices"]


def _cboe_terms(rows: pd.DataFrame, target_years: float):
    """Per underlying, the two expiries bracketing the target (near <= target < next, or the
    two nearest) as padded [U, 2, strikes] quote arrays."""
    frame = rows[["underlying", "expiry", "strike", "option_type", "bid", "ask"]].copy()
    frame["is_call"] = frame["option_type"].astype(str).str.upper().str.startswith("C")
    expiries = frame.groupby("underlying", sort=False)["expiry"].unique()
    chosen = {u: _bracket(np.sort(e), target_years) for u, e in expiries.items()}
    chosen = {u: pair for u, pair in chosen.items() if pair is not None}
    if not chosen:
        return [], None
    names = list(chosen)
    term_of = {(u, t): i for u in names for i, t in enumerate(chosen[u])}
    frame["term"] = [term_of.get(key, -1) for key in zip(frame["underlying"], frame["expiry"])]
    frame = frame[frame["term"] >= 0]
    wide = frame.pivot_table(index=["underlying", "term", "strike"], columns="is_call",
                             values=["bid", "ask"], aggfunc="first")
    wide.columns = [f"{side}_{'call' if is_call else 'put'}" for side, is_call in wide.columns]
    wide = wide.reset_index()
    return names, _pad_terms(wide, names, chosen)


def _bracket(expiries: np.ndarray, target: float):
    if len(expiries) < 2:
        return None
    after = np.searchsorted(expiries, target, side="right")
    after = min(max(after, 1), len(expiries) - 1)
    return (expiries[after - 1], expiries[after])


def _pad_terms(wide: pd.DataFrame, names: list[str], chosen: dict):
    lane = {u: i for i, u in enumerate(names)}
    u_index = wide["underlying"].map(lane).to_numpy()
    term = wide["term"].to_numpy().astype(np.int64)
    position = wide.groupby(["underlying", "term"]).cumcount().to_numpy()
    width = batching.strike_bucket(int(position.max()) + 1)
    shape = (len(names), 2, width)
    arrays = {}
    for name, column in (("strike", "strike"), ("call_bid", "bid_call"),
                         ("call_ask", "ask_call"), ("put_bid", "bid_put"),
                         ("put_ask", "ask_put")):
        grid = np.full(shape, np.nan)
        values = wide[column].to_numpy(np.float64) if column in wide.columns else np.nan
        grid[u_index, term, position] = values
        arrays[name] = grid
    arrays["mask"] = np.isfinite(arrays["strike"]) & np.isfinite(arrays["call_bid"]) & \
        np.isfinite(arrays["put_bid"])
    for name in ("strike", "call_bid", "call_ask", "put_bid", "put_ask"):
        arrays[name] = np.where(arrays["mask"], arrays[name], 0.0)
    arrays["strike"] = np.where(arrays["mask"], arrays["strike"],
                                1e9 + np.arange(width)[None, None, :])  # padding sorts last
    years = np.array([[chosen[u][0], chosen[u][1]] for u in names])
    arrays["minutes"] = years * MINUTES_PER_YEAR
    return arrays


def _term_rates(rows: pd.DataFrame, names: list[str], years: np.ndarray) -> np.ndarray:
    """Continuous rate of each chosen term: the input ``rate`` column, else -log(D)/T."""
    source = "rate" if "rate" in rows.columns else None
    rates = np.zeros_like(years)
    by = rows.groupby(["underlying", "expiry"], sort=False)
    rate_of = (by["rate"].first() if source else
               -np.log(by["discount"].median()) / by["expiry"].first())
    for i, u in enumerate(names):
        for j in range(2):
            value = rate_of.get((u, years[i, j]), np.nan)
            rates[i, j] = value if np.isfinite(value) else 0.0
    return rates


def indices(chunk: Chunk, env: JobEnv) -> None:
    """Cboe-method and VXJ-method 30-day indices from the raw quotes of the two expiries
    bracketing the target, and the VXJ term structure from every slice's OTM mids."""
    if not env.config["indices"]["enabled"]:
        raise StageUnavailable("disabled by indices.enabled = false")
    target_days = env.config["indices"]["target_days"]
    names, arrays = _cboe_terms(chunk.rows, target_days / 365.0)
    table = pd.DataFrame({"underlying": pd.unique(chunk.rows["underlying"])})
    if names:
        rate = _term_rates(chunk.rows, names, arrays["minutes"] / MINUTES_PER_YEAR)
        lanes = [arrays[n] for n in ("strike", "call_bid", "call_ask", "put_bid", "put_ask",
                                     "mask", "minutes")] + [rate]
        target = float(target_days * 1440)
        cboe = sharded(env, lambda *a: indices_model.cboe_vix_batch(
            *a, target_minutes=target), lanes, key="cboe", per="underlying",
            sections=("indices",))
        vxj = sharded(env, lambda *a: indices_model.vxj_index_batch(
            *a, target_minutes=target), lanes, key="vxj", per="underlying",
            sections=("indices",))
        found = pd.DataFrame({
            "underlying": names, f"cboe_{target_days}d": cboe.index,
            "cboe_status": cboe.status.astype(np.int32), f"vxj_{target_days}d": vxj.index,
            "vxj_status": vxj.status.astype(np.int32),
            "cboe_excluded": np.asarray(cboe.excluded).astype(np.int32),
            "vxj_excluded": np.asarray(vxj.excluded).astype(np.int32),
            "near_expiry": arrays["minutes"][:, 0] / MINUTES_PER_YEAR,
            "next_expiry": arrays["minutes"][:, 1] / MINUTES_PER_YEAR})
        table = table.merge(found, on="underlying", how="left")
    if chunk.batch is not None:
        table = table.merge(_vxj_term_structure(chunk, env), on="underlying", how="left")
    chunk.indices = table


def _vxj_term_structure(chunk: Chunk, env: JobEnv) -> pd.DataFrame:
    """``vxj_{d}d`` columns: constant-maturity VXJ indices (vol points) per underlying."""
    batch, table = chunk.batch, chunk.slices
    forward = table["forward"].to_numpy()
    ok = np.isfinite(forward) & (forward > 0)
    forward = np.where(ok, forward, 1.0)
    discount = np.where(np.isfinite(table["discount"]), table["discount"], 1.0)
    expiry = table["expiry"].to_numpy()
    term = sharded(env, lambda k, p, c, m, f, t, d: indices_model.vxj_variance_from_prices(
        k, p, c, m, f, t, d), [batch.strike, batch.price, batch.is_call, batch.mask, forward,
                               expiry, discount], key="vxj-term", sections=())
    variance = np.where(ok & (np.asarray(term.status) == Status.OK), term.variance, np.nan)
    names, grid = by_underlying(table["underlying"].to_numpy(), {}, {
        "minutes": expiry * MINUTES_PER_YEAR, "variance": variance,
        "valid": np.isfinite(variance)})
    days = env.config["indices"]["term_days"]
    targets = np.asarray(days, np.float64) * 1440.0
    valid = grid["valid"]
    term = host_call(indices_model.term_structure_status, [
        np.where(valid, grid["minutes"], 1.0), np.where(valid, grid["variance"], 0.0), valid],
        key="vxj-term-structure", target_minutes=targets)
    # NaN with a status where a value cannot be computed (was 0.0: np.maximum(annual, 0))
    out = pd.DataFrame({"underlying": names})
    for j, d in enumerate(days):
        out[f"vxj_term_{d}d"] = np.asarray(term.index)[:, j]
        out[f"vxj_term_{d}d_status"] = np.asarray(term.status)[:, j].astype(np.int32)
    return out


