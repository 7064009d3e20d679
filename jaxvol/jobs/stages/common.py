"""What every stage shares: the chunk, the job environment, the blocked calls over devices,
yesterday's parameters and the fallback of failed lanes."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import numpy as np
import pandas as pd

from jaxvol import batching
from jaxvol.calibrate import NO_SOLUTION
from jaxvol.jobs import slices as slices_mod
from jaxvol.jobs.errors import StageUnavailable

__all__ = ["Chunk", "JobEnv", "FAILED", "HOST_BLOCK", "MIN_SLOTS", "MINUTES_PER_YEAR",
           "atm_vol", "by_underlying", "ensure_batch", "fallback", "host_call", "merge_tables",
           "needs", "previous_slices", "rmse", "sharded"]

MINUTES_PER_YEAR = 525600.0
FAILED = tuple(int(s) for s in NO_SOLUTION)
"""Fit statuses whose lanes take yesterday's parameters on a warm night."""


@dataclasses.dataclass
class JobEnv:
    """What every chunk shares: the resolved config, the device mesh, yesterday's fits."""

    config: dict
    mesh: Any
    previous_slices: pd.DataFrame | None = None
    previous_underlyings: pd.DataFrame | None = None

    @property
    def devices(self) -> int:
        return self.mesh.size

    @property
    def warm(self) -> bool:
        return self.previous_slices is not None

    def iterations(self, section: str) -> int:
        base = self.config[section]["max_iterations"]
        return min(base, self.config["warm_start"]["max_iterations"]) if self.warm else base


@dataclasses.dataclass
class Chunk:
    """One chunk of underlyings flowing through the stages."""

    index: int
    rows: pd.DataFrame
    analysis: Any = None
    batch: slices_mod.SliceBatch | None = None
    slices: pd.DataFrame | None = None
    underlyings: pd.DataFrame | None = None
    indices: pd.DataFrame | None = None
    arbitrage: pd.DataFrame | None = None

    def tables(self) -> dict[str, pd.DataFrame]:
        names = ("rows", "slices", "underlyings", "indices", "arbitrage")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def needs(chunk: Chunk, *columns: str) -> None:
    missing = [c for c in columns if c not in chunk.rows.columns]
    if missing:
        raise StageUnavailable(f"needs columns {missing} from the analyze stage")


def ensure_batch(chunk: Chunk, env: JobEnv) -> slices_mod.SliceBatch:
    """The chunk's packed OTM slices (packed once, by the first stage that needs them)."""
    if chunk.batch is None:
        needs(chunk, "quality_flags", "forward", "discount", "iv_mid", "iv_bid", "iv_ask")
        chunk.batch = slices_mod.pack_otm(chunk.rows, env.config["chains"]["min_strikes"])
        chunk.slices = chunk.batch.table.copy()
    return chunk.batch


# --------------------------------------------------------------------------------- calls
def sharded(env: JobEnv, fn: Callable, lane_arrays: list, *, key: str, per: str = "slice",
            sections: tuple[str, ...] = ()):
    """``fn(*arrays)`` over the lane axis in blocks of ``job.<per>_block`` lanes per device,
    split over the job's mesh (:func:`jaxvol.batching.run_blocks` with a DeviceMap: one
    executable on every device, a one-device run bitwise identical to an eight-device run).

    ``key`` names the program for reuse within and across runs of the process; ``fn`` may
    depend only on the config ``sections`` named, the warm-start cap and whether the night is
    warm (they key the program too)."""
    block = env.config["job"][f"{per}_block"]
    settings = [{name: env.config[name] for name in sections}, env.config["warm_start"],
                env.warm]
    return batching.run_blocks(fn, lane_arrays, block, mesh=env.mesh, name=f"job-{key}",
                               settings=settings)


HOST_BLOCK = 256
"""Leading-axis block of the small unsharded helper calls (Black prices of the Heston quotes,
the VXJ term structure): one compiled shape for every chunk."""


def host_call(fn: Callable, arrays: list, *, key: str, **static):
    """``fn(*arrays, **static)`` on the default device in blocks of :data:`HOST_BLOCK` lanes
    (:func:`jaxvol.batching.run_blocks`), as numpy without the padding."""
    settings = {k: np.asarray(v).tolist() for k, v in static.items()}
    return batching.run_blocks(lambda *a: fn(*a, **static), arrays, HOST_BLOCK,
                               name=f"job-host-{key}", settings=json.dumps(settings))


# --------------------------------------------------------------------------------- warm start
def previous_slices(env: JobEnv, table: pd.DataFrame, columns: list[str]) -> np.ndarray | None:
    """Yesterday's ``columns`` for each slice of ``table`` (nearest expiry within 10 days of the
    same underlying), NaN where there is none; None when not warm-starting."""
    previous = env.previous_slices
    if previous is None or not set(columns) <= set(previous.columns):
        return None
    left = table[["underlying", "expiry"]].reset_index().sort_values("expiry")
    right = previous[["underlying", "expiry"] + columns].dropna().sort_values("expiry")
    matched = pd.merge_asof(left, right.astype({"underlying": str}), on="expiry",
                            by="underlying", direction="nearest", tolerance=10 / 365)
    return matched.sort_values("index")[columns].to_numpy(np.float64)


def previous_underlyings(env: JobEnv, names: np.ndarray, columns: list[str]) -> np.ndarray | None:
    """Yesterday's per-underlying ``columns`` for ``names`` (NaN where none); None when cold."""
    previous = env.previous_underlyings
    if previous is None or not set(columns) <= set(previous.columns):
        return None
    return previous.set_index("underlying")[columns].reindex(names).to_numpy(np.float64)


def fallback(status: np.ndarray, params: np.ndarray, previous: np.ndarray | None,
             bad_codes: tuple[int, ...] = FAILED) -> tuple[np.ndarray, np.ndarray]:
    """Failed lanes (status in ``bad_codes``) take yesterday's parameters where they exist."""
    if previous is None:
        return params, np.zeros(len(params), bool)
    use = np.isin(status, bad_codes) & np.all(np.isfinite(previous), axis=1)
    return np.where(use[:, None], previous, params), use


def warm_rows(previous: np.ndarray | None) -> np.ndarray | None:
    """Lanes with a complete set of yesterday's parameters (None when cold)."""
    return None if previous is None else np.isfinite(previous).all(axis=1)


# --------------------------------------------------------------------------------- tables
def rmse(model_vol: np.ndarray, batch: slices_mod.SliceBatch) -> np.ndarray:
    error = np.where(batch.mask, model_vol - batch.implied_vol, 0.0)
    count = batch.mask.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.sqrt((error ** 2).sum(axis=1) / count), np.nan)


def atm_vol(batch: slices_mod.SliceBatch) -> np.ndarray:
    """Implied vol of the usable quote nearest the money in each slice (0.2 where none)."""
    distance = np.where(batch.mask, np.abs(batch.log_moneyness), np.inf)
    nearest = np.argmin(distance, axis=1)
    vol = np.take_along_axis(batch.implied_vol, nearest[:, None], axis=1)[:, 0]
    return np.where(batch.mask.any(axis=1), vol, 0.2)


MIN_SLOTS = 8
"""Expiry slots per underlying at least (a power of two above): the calendar of the embedded
market, so that the SPX board's two expiries run the same Heston program as the others."""

_FILLS = {"strike": 1.0, "is_call": True, "price": 1.0, "vega": 1.0, "mask": False,
          "expiry": 1.0, "spot": 1.0, "rate": 0.0, "minutes": 1.0, "variance": 0.0,
          "valid": False}


def by_underlying(underlying: np.ndarray, quotes: dict, smiles: dict,
                  min_slots: int = MIN_SLOTS):
    """Regroup per-slice rows into [underlyings, expiry slots, ...] (slots: a power of two,
    at least ``min_slots``; empty slots hold the well-posed fills of ``_FILLS``)."""
    order = pd.unique(underlying)
    lane = pd.Index(order).get_indexer(underlying)
    slot = pd.Series(lane).groupby(lane).cumcount().to_numpy()
    slots = max(min_slots, 1 << max(0, int(slot.max()).bit_length()))
    out = {}
    for name, value in {**quotes, **smiles}.items():
        grid = np.full((len(order), slots) + value.shape[1:], _FILLS[name], dtype=value.dtype)
        grid[lane, slot] = value
        out[name] = grid
    return order, out


def merge_tables(current: pd.DataFrame | None, table: pd.DataFrame) -> pd.DataFrame:
    """The chunk's per-underlying table with ``table``'s columns added."""
    if current is None:
        return table
    return current.merge(table, on="underlying", how="outer", sort=False)
