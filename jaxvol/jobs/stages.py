"""The per-chunk stages of the nightly job.

Each stage reads and extends a :class:`Chunk` (the rows of a few hundred underlyings and what
has been computed from them) and calls one domain's public API:

``analyze``    jaxvol.chains.analyze: quality flags, forwards, bid/mid/ask implied vols
``arbitrage``  jaxvol.chains.arbitrage_report: static no-arbitrage violations per slice
``svi``        jaxvol.svi.fit per slice (sharded over the local devices)
``sabr``       jaxvol.sabr.implied_vol through jaxvol.calibrate.least_squares per slice
``ssvi``       jaxvol.ssvi fit per underlying (all expiries at once)
``heston``     jaxvol.heston calibration per underlying (vega-scaled price residuals)
``indices``    jaxvol.indices: Cboe-method 30-day index and VXJ-method term structure

A stage whose domain module is missing raises :class:`StageUnavailable` (recorded as skipped).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxvol.jobs import slices as slices_mod
from jaxvol.jobs.domains import StageUnavailable, module, require

from jaxvol.jobs.sharding import DeviceMap, pad_leading, padded_size

__all__ = ["Chunk", "JobEnv", "STAGES", "StageUnavailable"]

log = logging.getLogger("jaxvol.jobs")
MINUTES_PER_YEAR = 525600.0


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


def _accepted(fn: Callable, options: dict) -> dict:
    """The subset of ``options`` that ``fn`` accepts as keywords."""
    parameters = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k in parameters}


def _needs(chunk: Chunk, *columns: str) -> None:
    missing = [c for c in columns if c not in chunk.rows.columns]
    if missing:
        raise StageUnavailable(f"needs columns {missing} from the analyze stage")


# --------------------------------------------------------------------------------- analyze
def _input_table(chunk: Chunk) -> pd.DataFrame:
    return chunk.rows.drop(columns=["row_id"])


def _chain_options(env: JobEnv) -> dict:
    options = {"min_strikes": env.config["chains"]["min_strikes"]}
    if env.config["chains"]["max_relative_spread"] > 0:
        options["max_relative_spread"] = env.config["chains"]["max_relative_spread"]
    return options


def analyze(chunk: Chunk, env: JobEnv) -> None:
    """chains.compute once (flags, forwards, IVs, arbitrage), then its per-row frame."""
    compute, rows_frame = require("jaxvol.chains", "compute", "rows_frame")
    table = _input_table(chunk)
    chunk.analysis = compute(table, **_accepted(compute, _chain_options(env)))
    result = rows_frame(chunk.analysis)
    if len(result) != len(table):
        raise RuntimeError(f"chains.analyze returned {len(result)} rows for {len(table)}")
    new = [c for c in result.columns if c not in chunk.rows.columns]
    chunk.rows = pd.concat([chunk.rows, result[new].set_axis(chunk.rows.index)], axis=1)


def arbitrage(chunk: Chunk, env: JobEnv) -> None:
    if not env.config["chains"]["arbitrage"]:
        raise StageUnavailable("disabled by chains.arbitrage = false")
    if chunk.analysis is None:
        raise StageUnavailable("needs the analyze stage")
    report = require("jaxvol.chains", "report")
    chunk.arbitrage = pd.DataFrame(report(chunk.analysis)).reset_index(drop=True)


# --------------------------------------------------------------------------------- packing
def _ensure_batch(chunk: Chunk, env: JobEnv) -> slices_mod.SliceBatch:
    if chunk.batch is None:
        _needs(chunk, "quality_flags", "forward", "discount", "iv_mid", "iv_bid", "iv_ask")
        chunk.batch = slices_mod.pack_otm(chunk.rows, env.config["chains"]["min_strikes"])
        chunk.slices = chunk.batch.table.copy()
    return chunk.batch


def pack(chunk: Chunk, env: JobEnv) -> None:
    """Per-slice OTM arrays and the slice table (forward, discount, usable quotes)."""
    _ensure_batch(chunk, env)


def _sharded_call(env: JobEnv, fn: Callable, lane_arrays: list[np.ndarray], *,
                  key: str | None = None, per: str = "slice"):
    """``fn(*arrays)`` over the lane axis, split across the mesh; the outputs (a PyTree of
    arrays with a lane axis) come back as numpy, unpadded.

    ``per`` ("slice" or "underlying") picks the block B (``job.slice_block`` or
    ``job.underlying_block``). The lanes are padded to a multiple of B x D (D devices; padded
    lanes repeat the first lane, so they are well-posed problems) and run in calls of B x D
    lanes, B per device, through a :class:`~jaxvol.jobs.sharding.DeviceMap`: every device runs
    one executable of ``fn`` compiled for the local shape [B, ...], whatever D or the chunk
    size. One program per stage for the whole run, and a one-device run bitwise identical to
    an eight-device run. ``key`` names ``fn`` for reuse of the compiled programs within and
    across runs of the process (``fn`` must then depend only on the config)."""
    lanes = lane_arrays[0].shape[0]
    block = env.config["job"][f"{per}_block"]
    size = padded_size(lanes, block, env.devices)
    padded = [pad_leading(np.asarray(a), size, None) for a in lane_arrays]
    mapped = _mapped(env, fn, key)
    step = block * env.devices
    parts = []
    for i in range(0, size, step):
        out = mapped(env.mesh, *(a[i:i + step] for a in padded))
        parts.append(jax.tree.map(np.asarray, out))  # host copies: device buffers freed
    return jax.tree.map(lambda *leaves: np.concatenate(leaves)[:lanes], *parts)


_MAPPED: dict = {}
"""Device maps kept across runs of this process (a later run with the same settings, a resumed
run, a run on another number of devices, reuses the traced and compiled programs instead of
tracing them again)."""


_SETTINGS = {"svi": ("svi",), "sabr": ("sabr",), "ssvi": ("ssvi",), "heston": ("heston",),
             "cboe": ("indices",), "vxj": ("indices",)}


def _settings_key(env: JobEnv, key: str) -> str:
    """What the fitting function named ``key`` may depend on besides its inputs: its section of
    the config (found by the key's prefix), the warm-start cap, whether the night is warm."""
    sections = _SETTINGS.get(key.split("-")[0], tuple(env.config))
    relevant = {name: env.config[name] for name in sections}
    return json.dumps([relevant, env.config["warm_start"], env.warm], sort_keys=True,
                      default=str)


def _mapped(env: JobEnv, fn: Callable, key: str | None) -> DeviceMap:
    # Not keyed by the mesh: a DeviceMap keeps its executables per device, so a one-device run
    # after an eight-device one (or the reverse) runs the very same executable on device 0.
    full_key = (key, _settings_key(env, key)) if key else None
    cached = _MAPPED.get(full_key) if key else None
    if cached is None:
        cached = DeviceMap(fn)
        if key:
            if len(_MAPPED) > 64:  # many distinct settings in one process: start afresh
                _MAPPED.clear()
            _MAPPED[full_key] = cached
    return cached


_JITTED: dict = {}
HOST_BLOCK = 256
"""Leading-axis multiple of the small unsharded helper calls (Black prices of the Heston quotes,
the VXJ term structure): one compiled shape for every chunk."""


def _padded_jit(fn: Callable, arrays: list[np.ndarray], *, block: int = HOST_BLOCK, **static):
    """``jax.jit(fn)(*arrays, **static)`` with the leading axis padded to a multiple of
    ``block`` (repeating the first row), returned as numpy without the padding."""
    key = (fn, json.dumps({k: np.asarray(v).tolist() for k, v in static.items()},
                          sort_keys=True))
    jitted = _JITTED.get(key)
    if jitted is None:
        jitted = _JITTED[key] = jax.jit(functools.partial(fn, **static))
    lanes = np.shape(arrays[0])[0]
    size = max(1, -(-lanes // block)) * block
    out = jitted(*(pad_leading(np.asarray(a), size, None) for a in arrays))
    return jax.tree.map(lambda x: np.asarray(x)[:lanes], out)


def _svi_total_variance(k: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Raw SVI total variance in numpy (params [..., 5] broadcast against k); the formula of
    jaxvol.svi.total_variance, evaluated on the host (no compile per chunk shape)."""
    a, b, rho, m, sigma = np.moveaxis(np.asarray(params, np.float64), -1, 0)
    x = k - m
    return a + b * (rho * x + np.sqrt(x * x + sigma * sigma))


def _previous_for(env: JobEnv, table: pd.DataFrame, columns: list[str]) -> np.ndarray | None:
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


def _fallback(status: np.ndarray, params: np.ndarray, previous: np.ndarray | None,
              bad_codes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Failed lanes (status in ``bad_codes``) take yesterday's parameters where they exist."""
    if previous is None:
        return params, np.zeros(len(params), bool)
    use = np.isin(status, bad_codes) & np.all(np.isfinite(previous), axis=1)
    return np.where(use[:, None], previous, params), use


def _rmse(model_vol: np.ndarray, batch: slices_mod.SliceBatch) -> np.ndarray:
    error = np.where(batch.mask, model_vol - batch.implied_vol, 0.0)
    count = batch.mask.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.sqrt((error ** 2).sum(axis=1) / count), np.nan)


# --------------------------------------------------------------------------------- SVI
SVI_PARAMS = ["svi_a", "svi_b", "svi_rho", "svi_m", "svi_sigma"]


def svi(chunk: Chunk, env: JobEnv) -> None:
    if not env.config["svi"]["enabled"]:
        raise StageUnavailable("disabled by svi.enabled = false")
    svi_mod = module("jaxvol.svi", "fit", "total_variance")
    batch = _ensure_batch(chunk, env)
    previous = _previous_for(env, batch.table, SVI_PARAMS)
    # svi.fit's quasi-explicit start beats yesterday's parameters (measured: warm starts
    # converged on 27% of small noisy slices vs 55% cold, median RMSE 12% worse), so on a warm
    # night yesterday's SVI parameters serve only as the fallback of failed slices
    options = {"config": _lm_config(svi_mod.fit, env.config["svi"]["max_iterations"]),
               "no_arbitrage": env.config["svi"]["no_arbitrage"]}
    arrays = [batch.log_moneyness, batch.total_variance, batch.weight, batch.mask]
    fit = _svi_fit(svi_mod.fit, env, arrays, None, options)
    params, status = np.asarray(fit.params), np.asarray(fit.status)
    params, used_previous = _fallback(status, params, previous, (2, 3))
    expiry = batch.table["expiry"].to_numpy()[:, None]
    model = _svi_total_variance(batch.log_moneyness, params[:, None, :])
    table = chunk.slices
    table[SVI_PARAMS] = params
    table["svi_status"] = status.astype(np.int32)
    if getattr(fit, "iterations", None) is not None:
        table["svi_iterations"] = np.asarray(fit.iterations).astype(np.int32)
    table["svi_previous"] = used_previous
    table["svi_rmse"] = _rmse(np.sqrt(np.maximum(model, 0.0) / expiry), batch)
    _row_model_vol(chunk, params)


def _lm_config(fit_fn, max_iterations: int):
    """The fit's default LMConfig with ``max_iterations`` replaced."""
    default = inspect.signature(fit_fn).parameters.get("config")
    base = default.default if default is not None and default.default is not None else None
    if base is None or not dataclasses.is_dataclass(base):
        lm_config = require("jaxvol.calibrate", "LMConfig")
        return lm_config(max_iterations=max_iterations)
    return dataclasses.replace(base, max_iterations=max_iterations)


def _init_keyword(fit_fn) -> str | None:
    parameters = inspect.signature(fit_fn).parameters
    return next((n for n in ("params0", "init", "initial") if n in parameters), None)


def _svi_fit(fit_fn, env, arrays, previous, options):
    """svi.fit, sharded; warm lanes start from yesterday's parameters, the others from a
    generic start (only when warm-starting and svi.fit takes start parameters)."""
    kwargs = _accepted(fit_fn, options)
    init_name = _init_keyword(fit_fn)
    if previous is None or init_name is None:
        return _sharded_call(env, lambda k, w, weight, mask: fit_fn(
            k, w, weights=weight, mask=mask, **kwargs), arrays, key="svi-cold")
    k, w, _, mask = arrays
    atm = np.nanmin(np.where(mask, w, np.nan), axis=1, initial=np.inf)
    atm = np.where(np.isfinite(atm), atm, 0.01)
    generic = np.stack([0.8 * atm, np.full_like(atm, 0.1), np.full_like(atm, -0.3),
                        np.zeros_like(atm), np.full_like(atm, 0.1)], axis=1)
    start = np.where(np.isfinite(previous).all(axis=1, keepdims=True), previous, generic)
    return _sharded_call(env, lambda k, w, weight, mask, p0: fit_fn(
        k, w, weights=weight, mask=mask, **{init_name: p0}, **kwargs), arrays + [start],
        key="svi-warm")


def _row_model_vol(chunk: Chunk, params: np.ndarray) -> None:
    """``iv_svi``: the fitted SVI vol at every row's strike (NaN where the slice has none)."""
    rows = chunk.rows
    slice_id = slices_mod.slice_index(rows)
    p = params[slice_id]
    forward = rows["forward"].to_numpy()
    ok = np.isfinite(forward) & (forward > 0) & np.all(np.isfinite(p), axis=1)
    k = np.log(rows["strike"].to_numpy() / np.where(ok, forward, 1.0))
    w = _svi_total_variance(np.where(ok, k, 0.0), np.where(ok[:, None], p, 0.1))
    expiry = rows["expiry"].to_numpy()
    rows["iv_svi"] = np.where(ok & (w > 0), np.sqrt(np.maximum(w, 0.0) / expiry), np.nan)


# --------------------------------------------------------------------------------- SABR
SABR_PARAMS = ["sabr_alpha", "sabr_rho", "sabr_nu"]


def _sabr_residual(params, forward, strike, expiry, vol, beta):
    from jaxvol import sabr
    alpha, rho, nu = params[0], params[1], params[2]
    return sabr.implied_vol(forward, strike, expiry, alpha, beta, rho, nu) - vol


def sabr(chunk: Chunk, env: JobEnv) -> None:
    """SABR per slice, beta fixed: ``jaxvol.sabr.fit`` (multi-start) on a cold night; from
    yesterday's parameters through the engine when warm-starting."""
    if not env.config["sabr"]["enabled"]:
        raise StageUnavailable("disabled by sabr.enabled = false")
    sabr_mod = module("jaxvol.sabr", "implied_vol")
    batch = _ensure_batch(chunk, env)
    beta = env.config["sabr"]["beta"]
    table = chunk.slices
    forward = table["forward"].to_numpy()
    forward = np.where(np.isfinite(forward) & (forward > 0), forward, 1.0)
    expiry = table["expiry"].to_numpy()
    previous = _previous_for(env, table, SABR_PARAMS)
    lanes = [forward, batch.strike, expiry, batch.implied_vol, batch.weight, batch.mask]
    if previous is None and hasattr(sabr_mod, "fit"):
        config = _lm_config(sabr_mod.fit, env.iterations("sabr"))
        fit = _sharded_call(env, lambda f, k, t, vol, weight, mask: sabr_mod.fit(
            f, k, t, vol, beta=beta, weights=weight, mask=mask, config=config), lanes,
            key="sabr-cold")
    else:
        fit = _sabr_from_start(env, lanes, _sabr_start(batch, forward, beta, previous), beta)
    params, status = np.asarray(fit.params), np.asarray(fit.status)
    params, used_previous = _fallback(status, params, previous, (2, 3))
    table[SABR_PARAMS] = params
    table["sabr_beta"] = beta
    table["sabr_status"] = status.astype(np.int32)
    table["sabr_iterations"] = np.asarray(fit.iterations).astype(np.int32)
    table["sabr_previous"] = used_previous
    model = batch.implied_vol + np.asarray(fit.residuals)
    table["sabr_rmse"] = _rmse(np.where(batch.mask, model, 0.0), batch)


def _sabr_start(batch, forward, beta, previous):
    atm = _atm_vol(batch)
    start = np.stack([atm * forward ** (1.0 - beta), np.full_like(atm, -0.3),
                      np.full_like(atm, 0.8)], axis=1)
    if previous is not None:
        start = np.where(np.isfinite(previous).all(axis=1, keepdims=True), previous, start)
    return start


def _sabr_from_start(env, lanes, start, beta):
    least_squares, lm_config = require("jaxvol.calibrate", "least_squares", "LMConfig")
    config = lm_config(max_iterations=env.iterations("sabr"))

    def call(p0, f, k, t, vol, weight, mask, b):
        usable = mask & (vol > 0)
        return least_squares(_sabr_residual, p0, f, k, t, jnp.where(usable, vol, 1.0), b,
                             weights=jnp.where(usable, weight, 0.0), mask=usable,
                             lower=[1e-8, -0.999, 1e-4], upper=[np.inf, 0.999, 10.0],
                             config=config)

    return _sharded_call(env, call, [start] + lanes + [np.full_like(lanes[0], beta)],
                         key="sabr-warm")


def _atm_vol(batch: slices_mod.SliceBatch) -> np.ndarray:
    """Implied vol of the usable quote nearest the money in each slice (0.2 where none)."""
    distance = np.where(batch.mask, np.abs(batch.log_moneyness), np.inf)
    nearest = np.argmin(distance, axis=1)
    vol = np.take_along_axis(batch.implied_vol, nearest[:, None], axis=1)[:, 0]
    return np.where(batch.mask.any(axis=1), vol, 0.2)


# --------------------------------------------------------------------------------- SSVI
SSVI_MIN_SLOTS = 4
"""Expiry slots per SSVI surface at least (the SPX board's two expiries then share the program
of four-expiry markets; empty slots repeat the last slice at negligible weight)."""

def _ssvi_grid(chunk: Chunk):
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
    """An SSVI surface per underlying (all expiries at once, no butterfly/calendar arbitrage by
    construction); theta per slice goes to the slice table."""
    if not env.config["ssvi"]["enabled"]:
        raise StageUnavailable("disabled by ssvi.enabled = false")
    ssvi_mod = module("jaxvol.ssvi", "fit")
    _ensure_batch(chunk, env)
    names, source, k, w, weight, mask = _ssvi_grid(chunk)
    if not len(names):
        return
    form = env.config["ssvi"]["phi"]
    config = _lm_config(ssvi_mod.fit, env.iterations("ssvi"))
    fit = _sharded_call(env, lambda k, w, weight, mask: ssvi_mod.fit(
        k, w, weights=weight, mask=mask, phi=form, config=config), [k, w, weight, mask],
        key="ssvi", per="underlying")
    phi = np.asarray(fit.phi_params).reshape(len(names), -1)
    table = pd.DataFrame({"underlying": names, "ssvi_rho": np.asarray(fit.rho)})
    for i in range(phi.shape[1]):
        table[f"ssvi_phi_{i}"] = phi[:, i]
    table["ssvi_status"] = np.asarray(fit.status).astype(np.int32)
    table["ssvi_rmse"] = np.asarray(fit.rmse)
    chunk.underlyings = _merge_underlyings(chunk.underlyings, table)
    theta = np.full(len(chunk.slices), np.nan)
    own = source >= 0  # slots holding their own (not a repeated) slice
    theta[source[own]] = np.asarray(fit.theta)[own]
    chunk.slices["ssvi_theta"] = theta


# --------------------------------------------------------------------------------- Heston
HESTON_PARAMS = ["heston_v0", "heston_kappa", "heston_theta", "heston_sigma", "heston_rho"]
HESTON_LOWER = [1e-4, 0.05, 1e-4, 0.01, -0.999]
HESTON_UPPER = [4.0, 20.0, 4.0, 4.0, 0.999]


def _heston_residual(params, strike, expiry, spot, rate, is_call, price, vega, *, nodes,
                     contours):
    """Vega-scaled price errors of one underlying (about the implied-vol errors), flattened.

    strike, is_call, price, vega: [expiries, quotes]; expiry, spot, rate: [expiries, 1], so
    jaxvol.heston.price evaluates the characteristic function once per smile."""
    from jaxvol import heston
    model = heston.price(strike, expiry, spot=spot, rate=rate, div=0.0, v0=params[0],
                         kappa=params[1], theta=params[2], sigma=params[3], rho=params[4],
                         is_call=is_call, nodes=nodes, contours=contours)
    return ((model - price) / vega).reshape(-1)


@functools.lru_cache(maxsize=None)
def _heston_residual_for(nodes: int, contours: int):
    """One residual function object per quadrature setting (a static jit argument)."""
    return functools.partial(_heston_residual, nodes=nodes, contours=contours)


def _pick_quotes(batch: slices_mod.SliceBatch, per_slice: int) -> np.ndarray:
    """Column indices [slices, per_slice] spread evenly over each slice's usable quotes (which
    sit at columns 0..count-1 in strike order); -1 marks an unused slot."""
    count = batch.mask.sum(axis=1)[:, None]
    slot = np.arange(per_slice)[None, :]
    spread = np.round(np.linspace(0.0, 1.0, per_slice)[None, :] * (count - 1)).astype(np.int64)
    return np.where(count >= per_slice, spread, np.where(slot < count, slot, -1))


def _heston_quotes(chunk: Chunk, env: JobEnv):
    """Per underlying [U, expiries, q] quotes (strike, is_call, price, vega, mask) and
    [U, expiries, 1] smile inputs (expiry, spot = F D, rate = -log(D) / T, so that the model
    forward is the slice's forward)."""
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
    price = _padded_jit(_black_price, lanes)
    std = vol * np.sqrt(expiry)
    d1 = np.log(forward / strike) / std + 0.5 * std
    vega = discount * forward * np.sqrt(expiry) * np.exp(-0.5 * d1 ** 2) / np.sqrt(2 * np.pi)
    quotes = {"strike": strike, "is_call": is_call, "price": np.where(valid, price, 1.0),
              "vega": np.where(valid, np.maximum(vega, 1e-8), 1.0), "mask": valid}
    smiles = {"expiry": expiry, "spot": forward * discount, "rate": -np.log(discount) / expiry}
    return _by_underlying(table["underlying"].to_numpy(), quotes, smiles)


MIN_SLOTS = 8
"""Expiry slots per underlying at least (a power of two above): the calendar of the embedded
market, so that the SPX board's two expiries run the same Heston program as the others."""


def _black_price(forward, strike, expiry, vol, is_call, discount):
    import jaxvol
    return jaxvol.black_price(forward, strike, expiry, vol, is_call, discount=discount)


def _by_underlying(underlying: np.ndarray, quotes: dict, smiles: dict,
                   min_slots: int = MIN_SLOTS):
    """Regroup per-slice rows into [underlyings, expiry slots, ...] (slots: a power of two,
    at least ``min_slots``)."""
    order = pd.unique(underlying)
    lane = pd.Index(order).get_indexer(underlying)
    slot = pd.Series(lane).groupby(lane).cumcount().to_numpy()
    slots = max(min_slots, 1 << max(0, int(slot.max()).bit_length()))
    fills = {"strike": 1.0, "is_call": True, "price": 1.0, "vega": 1.0, "mask": False,
             "expiry": 1.0, "spot": 1.0, "rate": 0.0, "minutes": 1.0, "variance": 0.0,
             "valid": False}
    out = {}
    for name, value in {**quotes, **smiles}.items():
        grid = np.full((len(order), slots) + value.shape[1:], fills[name], dtype=value.dtype)
        grid[lane, slot] = value
        out[name] = grid
    return order, out


def heston(chunk: Chunk, env: JobEnv) -> None:
    """Heston per underlying, all expiries at once, vega-scaled price residuals."""
    if not env.config["heston"]["enabled"]:
        raise StageUnavailable("disabled by heston.enabled = false")
    require("jaxvol.heston", "price")
    least_squares, lm_config = require("jaxvol.calibrate", "least_squares", "LMConfig")
    _ensure_batch(chunk, env)
    names, q = _heston_quotes(chunk, env)
    start = _heston_start(chunk, names, env)
    config = lm_config(max_iterations=env.iterations("heston"))
    mask = q["mask"].reshape(len(names), -1)
    residual = _heston_residual_for(env.config["heston"]["nodes"],
                                    env.config["heston"]["contours"])

    def call(p0, strike, expiry, spot, rate, is_call, price, vega, mask):
        return least_squares(residual, p0, strike, expiry, spot, rate, is_call, price,
                             vega, mask=mask, lower=HESTON_LOWER, upper=HESTON_UPPER,
                             config=config)

    fit = _sharded_call(env, call, [start, q["strike"], q["expiry"], q["spot"], q["rate"],
                                    q["is_call"], q["price"], q["vega"], mask], key="heston",
                        per="underlying")
    params, status = np.asarray(fit.params), np.asarray(fit.status)
    previous = _previous_underlyings(env, names)
    params, used_previous = _fallback(status, params, previous, (2, 3))
    count = mask.sum(axis=1)
    errors = np.where(mask, np.asarray(fit.residuals), 0.0)  # (not `residual`: `call` closes
    with np.errstate(invalid="ignore", divide="ignore"):   # over that name and is reused)
        rmse = np.where(count > 0, np.sqrt((errors ** 2).sum(axis=1) / count), np.nan)
    table = pd.DataFrame(params, columns=HESTON_PARAMS)
    table.insert(0, "underlying", names)
    table["heston_status"] = status.astype(np.int32)
    table["heston_iterations"] = np.asarray(fit.iterations).astype(np.int32)
    table["heston_previous"] = used_previous
    table["heston_rmse"] = rmse
    table["heston_quotes"] = count
    chunk.underlyings = _merge_underlyings(chunk.underlyings, table)


def _heston_start(chunk: Chunk, names: np.ndarray, env: JobEnv) -> np.ndarray:
    atm = pd.Series(_atm_vol(chunk.batch), index=chunk.slices.index)
    by = chunk.slices.assign(atm=atm).sort_values("expiry").groupby("underlying", sort=False)
    first = by["atm"].first().reindex(names).to_numpy()
    last = by["atm"].last().reindex(names).to_numpy()
    start = np.stack([first ** 2, np.full_like(first, 2.0), last ** 2,
                      np.full_like(first, 0.6), np.full_like(first, -0.6)], axis=1)
    previous = _previous_underlyings(env, names)
    if previous is not None:
        start = np.where(np.isfinite(previous).all(axis=1, keepdims=True), previous, start)
    return np.clip(start, np.array(HESTON_LOWER) * 1.01 + 1e-6, np.array(HESTON_UPPER) * 0.99)


def _previous_underlyings(env: JobEnv, names: np.ndarray) -> np.ndarray | None:
    previous = env.previous_underlyings
    if previous is None or not set(HESTON_PARAMS) <= set(previous.columns):
        return None
    return previous.set_index("underlying")[HESTON_PARAMS].reindex(names).to_numpy(np.float64)


def _merge_underlyings(current: pd.DataFrame | None, table: pd.DataFrame) -> pd.DataFrame:
    if current is None:
        return table
    return current.merge(table, on="underlying", how="outer", sort=False)


# --------------------------------------------------------------------------------- indices
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
    width = slices_mod.strike_bucket(int(position.max()) + 1)
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
    cboe_vix_batch, vxj_index_batch = require("jaxvol.indices", "cboe_vix_batch",
                                              "vxj_index_batch")
    target_days = env.config["indices"]["target_days"]
    names, arrays = _cboe_terms(chunk.rows, target_days / 365.0)
    table = pd.DataFrame({"underlying": pd.unique(chunk.rows["underlying"])})
    if names:
        rate = _term_rates(chunk.rows, names, arrays["minutes"] / MINUTES_PER_YEAR)
        lanes = [arrays[n] for n in ("strike", "call_bid", "call_ask", "put_bid", "put_ask",
                                     "mask", "minutes")] + [rate]
        target = float(target_days * 1440)
        cboe = _sharded_call(env, lambda *a: cboe_vix_batch(*a, target_minutes=target), lanes,
                             key="cboe", per="underlying")
        vxj = _sharded_call(env, lambda *a: vxj_index_batch(*a, target_minutes=target), lanes,
                            key="vxj", per="underlying")
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
    from_prices, term_structure = require("jaxvol.indices", "vxj_variance_from_prices",
                                          "term_structure_status")
    batch, table = chunk.batch, chunk.slices
    forward = table["forward"].to_numpy()
    ok = np.isfinite(forward) & (forward > 0)
    forward = np.where(ok, forward, 1.0)
    discount = np.where(np.isfinite(table["discount"]), table["discount"], 1.0)
    expiry = table["expiry"].to_numpy()
    term = _sharded_call(env, lambda k, p, c, m, f, t, d: from_prices(k, p, c, m, f, t, d),
                         [batch.strike, batch.price, batch.is_call, batch.mask, forward, expiry,
                          discount], key="vxj-term")
    variance = np.where(ok & (np.asarray(term.status) == 0), term.variance, np.nan)
    names, grid = _by_underlying(table["underlying"].to_numpy(), {}, {
        "minutes": expiry * MINUTES_PER_YEAR, "variance": variance,
        "valid": np.isfinite(variance)})
    days = env.config["indices"]["term_days"]
    targets = np.asarray(days, np.float64) * 1440.0
    valid = grid["valid"]
    term = _padded_jit(term_structure, [np.where(valid, grid["minutes"], 1.0),
                                        np.where(valid, grid["variance"], 0.0), valid],
                       target_minutes=targets)
    # NaN with a status where a value cannot be computed (was 0.0: np.maximum(annual, 0))
    out = pd.DataFrame({"underlying": names})
    for j, d in enumerate(days):
        out[f"vxj_term_{d}d"] = term.index[:, j]
        out[f"vxj_term_{d}d_status"] = term.status[:, j].astype(np.int32)
    return out


STAGES: dict[str, Callable[[Chunk, JobEnv], None]] = {
    "analyze": analyze, "arbitrage": arbitrage, "pack": pack, "svi": svi, "sabr": sabr,
    "ssvi": ssvi, "heston": heston,
    "indices": indices,
}
