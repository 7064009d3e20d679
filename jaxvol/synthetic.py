"""A deterministic synthetic option market in the chains long schema.

``market(...)`` generates listed-style option boards for many underlyings: per underlying a spot,
rate, dividend yield and a volatility surface (SSVI for most underlyings, Heston for a share),
expiries on a fixed calendar, listed-style strike grids (fine near the money, coarser in the
wings, rounded to "nice" increments), a call and a put at every strike, bid/ask quotes on the
exchange tick grid, and a controlled share of bad rows: crossed quotes (bid > ask), zero bids
where the option has value, and stale quotes (priced off a moved spot).

Every underlying draws its parameters from its own random stream ``(seed, index)``, so any
range of underlyings (a chunk of the nightly job, a process's partition) is generated
identically whichever way the market is split. ``day`` moves the parameters by a small daily
random walk, which gives "tonight" and "last night" markets for warm-start runs.

Columns: ``underlying``, ``expiry`` (years), ``strike``, ``option_type`` ("C"/"P"), ``bid``,
``ask``, ``spot``, ``rate`` (continuous), ``dividend_yield`` (continuous; the optional column
names of the chains schema, so ``chains.analyze`` uses the true forwards), and with
``include_defects=True`` the injected ``defect`` code (:class:`Defect`).
"""

from __future__ import annotations

import enum
import functools
import importlib.resources

import numpy as np
import pandas as pd

__all__ = ["Defect", "EXPIRY_DAYS", "market", "market_parameters", "spx_board",
           "underlying_names"]

EXPIRY_DAYS = (7, 21, 35, 63, 91, 182, 273, 365)
"""Quote calendar in days; a market with ``n`` expiries uses the first ``n``."""

_DAYS_PER_YEAR = 365.0


class Defect(enum.IntEnum):
    """The bad-row kinds that :func:`market` injects (``defect`` column)."""

    NONE = 0
    CROSSED = 1
    ZERO_BID = 2
    STALE = 3


def underlying_names(start: int, stop: int) -> list[str]:
    """Names of underlyings ``start .. stop-1`` ("SYN00000", ...)."""
    return [f"SYN{index:05d}" for index in range(start, stop)]


# --------------------------------------------------------------------------------------------
# Parameters per underlying

def _draw(rng: np.random.Generator, heston_share: float) -> dict[str, float]:
    """Day-0 parameters of one underlying (realistic equity ranges)."""
    atm_vol = rng.uniform(0.12, 0.55)
    return {
        "is_heston": float(rng.uniform() < heston_share),
        "spot": float(10.0 ** rng.uniform(1.0, 2.7)),
        "rate": rng.uniform(0.0, 0.05), "div": rng.uniform(0.0, 0.03),
        # SSVI: ATM total variance theta_t = atm_vol^2 t (1 + slope log(1+t)), power-law phi
        "atm_vol": atm_vol, "term_slope": rng.uniform(-0.3, 0.4),
        "ssvi_rho": rng.uniform(-0.8, -0.05), "ssvi_eta": rng.uniform(0.4, 1.1),
        "ssvi_gamma": rng.uniform(0.3, 0.5),
        # Heston, in the box of typical equity calibrations
        "v0": atm_vol ** 2, "theta": rng.uniform(0.5, 1.5) * atm_vol ** 2,
        "kappa": rng.uniform(0.5, 5.0), "sigma": rng.uniform(0.2, 1.0),
        "rho": rng.uniform(-0.9, -0.2),
        # market microstructure
        "vol_spread": rng.uniform(0.004, 0.02), "stale_move": rng.choice([-1, 1]) * rng.uniform(
            0.01, 0.03),
    }


def _drift(params: dict[str, float], rng: np.random.Generator) -> None:
    """One day of parameter moves (small, so yesterday's fit is a good start)."""
    z = rng.standard_normal(6)
    params["spot"] *= float(np.exp(0.015 * z[0]))
    params["atm_vol"] *= float(np.exp(0.02 * z[1]))
    params["v0"] *= float(np.exp(0.04 * z[2]))
    params["ssvi_rho"] = float(np.clip(params["ssvi_rho"] + 0.01 * z[3], -0.9, 0.0))
    params["rho"] = float(np.clip(params["rho"] + 0.01 * z[4], -0.95, 0.0))
    params["theta"] *= float(np.exp(0.01 * z[5]))


def _parameters(index: int, *, seed: int, day: int, heston_share: float) -> dict[str, float]:
    params = _draw(np.random.default_rng([seed, index]), heston_share)
    for d in range(1, day + 1):
        _drift(params, np.random.default_rng([seed, index, d]))
    return params


def market_parameters(start: int = 0, stop: int = 2000, *, seed: int = 20261121, day: int = 0,
                      heston_share: float = 0.3) -> pd.DataFrame:
    """The true parameters of underlyings ``start .. stop-1`` (one row per underlying)."""
    rows = [_parameters(i, seed=seed, day=day, heston_share=heston_share)
            for i in range(start, stop)]
    table = pd.DataFrame(rows)
    table.insert(0, "underlying", underlying_names(start, stop))
    table["model"] = np.where(table.pop("is_heston") > 0, "heston", "ssvi")
    return table


# --------------------------------------------------------------------------------------------
# Strike grids, prices, quotes

_NICE = np.array([0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 20.0, 25.0, 50.0, 100.0])


def _nice_increment(target: np.ndarray) -> np.ndarray:
    """The listed-style increment nearest to ``target`` (in log terms)."""
    distance = np.abs(np.log(_NICE) - np.log(target)[..., None])
    return _NICE[np.argmin(distance, axis=-1)]


def _strike_grid(forward: np.ndarray, atm_std: np.ndarray, n_strikes: int) -> np.ndarray:
    """Listed-style strikes [..., n]: fine increments near the money, doubled in the wings."""
    n_wing = n_strikes // 5
    n_inner = n_strikes - 2 * n_wing
    span = 6.0 * atm_std * forward                       # about +-3 sd covered
    increment = _nice_increment(span / (n_inner + 4 * n_wing))[..., None]
    center = np.round(forward[..., None] / increment) * increment
    offsets = np.arange(n_inner) - n_inner // 2
    wing = np.arange(1, n_wing + 1)
    steps = np.concatenate([offsets[0] - 2 * wing[::-1], offsets, offsets[-1] + 2 * wing])
    strikes = center + increment * steps
    lowest = strikes[..., :1]
    return np.where(lowest <= 0, strikes - lowest + increment, strikes)


def _ssvi_vol(params: pd.DataFrame, strike, forward, expiry) -> np.ndarray:
    """Implied vol of the SSVI surface (power-law phi, Gatheral & Jacquier 2014)."""
    col = {name: params[name].to_numpy()[:, None, None] for name in
           ("atm_vol", "term_slope", "ssvi_rho", "ssvi_eta", "ssvi_gamma")}
    theta = col["atm_vol"] ** 2 * expiry * (1.0 + col["term_slope"] * np.log1p(expiry))
    phi = col["ssvi_eta"] / (theta ** col["ssvi_gamma"] * (1.0 + theta) ** (1 - col["ssvi_gamma"]))
    k = np.log(strike / forward)
    rho = col["ssvi_rho"]
    total_variance = 0.5 * theta * (1 + rho * phi * k + np.sqrt((phi * k + rho) ** 2 + 1 - rho ** 2))
    return np.sqrt(total_variance / expiry)


_BLOCK = 8
"""Underlyings per compiled pricing call: every range of underlyings is priced in blocks of
this many (the last one padded by repeating its first underlying), so any chunking of the
market runs the same two compiled programs (Black and Heston)."""


@functools.lru_cache(maxsize=None)
def _jitted(kind: str):
    import jax

    import jaxvol
    from jaxvol import heston

    if kind == "black":
        return jax.jit(lambda f, k, t, v, c, d: jaxvol.black_price(f, k, t, v, c, discount=d))
    return jax.jit(lambda k, t, c, s, r, q, v0, kappa, theta, sigma, rho: heston.price(
        k, t, spot=s, rate=r, div=q, v0=v0, kappa=kappa, theta=theta, sigma=sigma, rho=rho,
        is_call=c))


def _blocked(kind: str, *arrays) -> np.ndarray:
    """The jitted pricer over [U, ...] arrays (leading axes broadcast; trailing shapes kept, so
    Heston smile parameters stay [U, E, 1]), ``_BLOCK`` underlyings per call
    (:func:`jaxvol.batching.run_blocks`)."""
    from jaxvol import batching

    count = max(np.shape(a)[0] for a in arrays)
    arrays = [np.broadcast_to(a, (count,) + np.shape(a)[1:]) for a in arrays]
    return batching.run_blocks(_jitted(kind), arrays, _BLOCK, name=f"synthetic-{kind}")


def _black(forward, strike, expiry, vol, is_call, discount):
    """Black-76 prices through the foundation's kernel."""
    return _blocked("black", forward, strike, expiry, vol, is_call, discount)


def _heston(params: pd.DataFrame, strike, expiry, is_call, spot_scale) -> np.ndarray:
    """Heston prices through jaxvol.heston.price (one characteristic function per smile)."""
    col = {name: params[name].to_numpy()[:, None, None] for name in
           ("spot", "rate", "div", "v0", "kappa", "theta", "sigma", "rho")}
    spot = col.pop("spot") * spot_scale
    count = len(params)
    smile = lambda a: np.broadcast_to(a, (count,) + np.shape(expiry)[1:2] + (1,))  # noqa: E731
    return _blocked("heston", strike, smile(expiry), is_call, smile(spot),
                    *(smile(col[n]) for n in ("rate", "div", "v0", "kappa", "theta", "sigma",
                                              "rho")))


def _prices(params: pd.DataFrame, strike, expiry, is_call, spot_scale) -> np.ndarray:
    """Model prices [U, E, 2S] with the spot multiplied by ``spot_scale`` [U, 1, 1]."""
    spot = params["spot"].to_numpy()[:, None, None] * spot_scale
    rate = params["rate"].to_numpy()[:, None, None]
    div = params["div"].to_numpy()[:, None, None]
    forward = spot * np.exp((rate - div) * expiry)
    discount = np.exp(-rate * expiry)
    vol = _ssvi_vol(params, strike, forward, expiry)
    price = np.array(_black(forward, strike, expiry, vol, is_call, discount))
    heston_rows = (params["model"] == "heston").to_numpy()
    if heston_rows.any():
        price[heston_rows] = _heston(params[heston_rows], strike[heston_rows], expiry,
                                     is_call[heston_rows], spot_scale[heston_rows])
    return price, _vega(forward, strike, expiry, vol, discount)


def _vega(forward, strike, expiry, vol, discount):
    """Black vega (per unit vol) at the SSVI vol: sizes the quoted spreads."""
    std = vol * np.sqrt(expiry)
    d1 = np.log(forward / strike) / std + 0.5 * std
    return discount * forward * np.sqrt(expiry) * np.exp(-0.5 * d1 ** 2) / np.sqrt(2 * np.pi)


def _tick(price: np.ndarray) -> np.ndarray:
    """Exchange minimum tick: 0.05 below 3.00, 0.10 above."""
    return np.where(price < 3.0, 0.05, 0.10)


def _quotes(mid, vega, vol_spread):
    """Bid/ask on the tick grid around ``mid`` with a spread of about vol_spread * vega."""
    tick = _tick(mid)
    half = np.maximum(tick, 0.5 * vol_spread * vega)
    bid = np.floor((mid - half) / tick + 1e-9) * tick
    ask = np.ceil((mid + half) / tick - 1e-9) * tick
    return np.maximum(bid, 0.0), np.maximum(ask, tick)


def _defect_draws(start: int, stop: int, shape: tuple[int, ...], seed: int, day: int):
    """Uniform draws [U, ...] deciding the defects, one stream per underlying and day."""
    return np.stack([np.random.default_rng([seed, index, 7919, day]).uniform(size=shape)
                     for index in range(start, stop)]).reshape((stop - start,) + shape)


def _inject_defects(bid, ask, stale_bid, stale_ask, draw, share):
    """Apply crossed, zero-bid and stale defects to a random ``share`` of the rows."""
    kind = np.where(draw < share / 3, Defect.CROSSED,
                    np.where(draw < 2 * share / 3, Defect.ZERO_BID,
                             np.where(draw < share, Defect.STALE, Defect.NONE)))
    kind = np.where((kind == Defect.ZERO_BID) & (bid <= 0), Defect.NONE, kind)
    crossed = kind == Defect.CROSSED
    bid, ask = np.where(crossed, ask + _tick(ask), bid), np.where(crossed, bid, ask)
    bid = np.where(kind == Defect.ZERO_BID, 0.0, bid)
    stale = kind == Defect.STALE
    return (np.where(stale, stale_bid, bid), np.where(stale, stale_ask, ask),
            kind.astype(np.int8))


def market(n_underlyings: int = 2000, n_expiries: int = 8, n_strikes: int = 40, *,
           seed: int = 20261121, day: int = 0, heston_share: float = 0.3,
           bad_row_share: float = 0.03, start: int = 0, stop: int | None = None,
           include_defects: bool = False) -> pd.DataFrame:
    """Option quotes of underlyings ``start .. stop-1`` of an ``n_underlyings`` market.

    Rows are ordered by underlying, expiry, strike, then call before put; the frame holds
    ``(stop - start) * n_expiries * n_strikes * 2`` rows.
    """
    stop = n_underlyings if stop is None else min(stop, n_underlyings)
    if not (0 <= start <= stop) or n_expiries > len(EXPIRY_DAYS) or n_strikes < 8:
        raise ValueError(f"bad market range: start={start}, stop={stop}, "
                         f"n_expiries={n_expiries}, n_strikes={n_strikes}")
    params = market_parameters(start, stop, seed=seed, day=day, heston_share=heston_share)
    expiry = np.asarray(EXPIRY_DAYS[:n_expiries], dtype=np.float64)[None, :, None] / _DAYS_PER_YEAR
    spot = params["spot"].to_numpy()[:, None, None]
    forward = spot * np.exp((params["rate"].to_numpy() - params["div"].to_numpy())[:, None, None]
                            * expiry)
    atm_std = params["atm_vol"].to_numpy()[:, None] * np.sqrt(expiry[..., 0])
    strikes = _strike_grid(forward[..., 0], atm_std, n_strikes)          # [U, E, S]
    strike = np.repeat(strikes, 2, axis=-1)                              # C, P per strike
    is_call = np.tile(np.array([True, False]), strikes.shape[-1])[None, None, :]
    is_call = np.broadcast_to(is_call, strike.shape)
    one = np.ones_like(spot)
    mid, vega = _prices(params, strike, expiry, is_call, one)
    stale_mid, _ = _prices(params, strike, expiry, is_call,
                           1.0 + params["stale_move"].to_numpy()[:, None, None])
    vol_spread = params["vol_spread"].to_numpy()[:, None, None]
    bid, ask = _quotes(mid, vega, vol_spread)
    stale_bid, stale_ask = _quotes(stale_mid, vega, vol_spread)
    draw = _defect_draws(start, stop, bid.shape[1:], seed, day)
    bid, ask, defect = _inject_defects(bid, ask, stale_bid, stale_ask, draw, bad_row_share)
    shape = strike.shape
    table = pd.DataFrame({
        "underlying": np.repeat(params["underlying"].to_numpy(), shape[1] * shape[2]),
        "expiry": np.broadcast_to(expiry, shape).ravel(),
        "strike": strike.ravel(),
        "option_type": np.where(is_call.ravel(), "C", "P"),
        "bid": np.round(bid.ravel(), 2), "ask": np.round(ask.ravel(), 2),
        "spot": np.broadcast_to(spot, shape).ravel(),
        "rate": np.broadcast_to(params["rate"].to_numpy()[:, None, None], shape).ravel(),
        "dividend_yield": np.broadcast_to(params["div"].to_numpy()[:, None, None],
                                          shape).ravel(),
    })
    if include_defects:
        table["defect"] = defect.ravel()
    return table


# --------------------------------------------------------------------------------------------
# The real SPX board of the Cboe VIX worked example

_SPX_MINUTES = {"near": 34484, "next": 44954}
_SPX_RATE = {"near": 0.00031664, "next": 0.00028797}


def spx_board() -> pd.DataFrame:
    """The SPX quotes of Cboe's VIX worked example in the long schema (rate supplied).

    Source: jaxvol/data/cboe_vix_example.csv (Cboe VIX methodology worked example); expiry is
    minutes to expiry / 525,600.
    """
    resource = importlib.resources.files("jaxvol") / "data" / "cboe_vix_example.csv"
    with resource.open("r") as handle:
        wide = pd.read_csv(handle)
    parts = []
    for option_type, prefix in (("C", "call"), ("P", "put")):
        part = pd.DataFrame({
            "underlying": "SPX", "term": wide["term"],
            "expiry": wide["term"].map(_SPX_MINUTES) / 525600.0,
            "strike": wide["strike"].astype(np.float64), "option_type": option_type,
            "bid": wide[f"{prefix}_bid"], "ask": wide[f"{prefix}_ask"],
            "rate": wide["term"].map(_SPX_RATE)})
        parts.append(part)
    board = pd.concat(parts).sort_values(["expiry", "strike", "option_type"], kind="stable")
    return board.drop(columns="term").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# FX quotes (ATM, risk reversals, market strangles per pair and tenor)

FX_TENORS = {"1W": 7, "1M": 30, "3M": 91, "6M": 182, "1Y": 365}


def fx_quotes(n_pairs: int = 4, *, seed: int = 20261121) -> pd.DataFrame:
    """A quotes table for :func:`jaxvol.fx.calibrate_smile`: one row per pair and tenor with
    spot, expiry (years), continuous rd and rf, and ATM / 25- and 10-delta RR and market BF vols
    (decimals) in the ranges of G10 pairs; spot delta, delta-neutral-straddle ATM."""
    rows = []
    for index in range(n_pairs):
        rng = np.random.default_rng([seed, 424242, index])
        spot, rd, rf = 10 ** rng.uniform(-0.3, 2.2), rng.uniform(0.0, 0.05), rng.uniform(0, 0.05)
        atm0, rr0, bf0 = rng.uniform(0.05, 0.14), rng.uniform(-0.025, 0.01), rng.uniform(
            0.002, 0.007)
        for tenor, days in FX_TENORS.items():
            scale = (days / 91.0) ** 0.1
            rows.append({"pair": f"FX{index:03d}", "tenor": tenor, "spot": spot,
                         "expiry": days / 365.0, "rd": rd, "rf": rf, "atm": atm0 * scale,
                         "rr25": rr0 * scale, "bf25": bf0 * scale, "rr10": 1.9 * rr0 * scale,
                         "bf10": 3.2 * bf0 * scale, "delta_type": "spot", "atm_type": "dns"})
    return pd.DataFrame(rows)
