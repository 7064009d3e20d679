"""IV series from option quotes: at a fixed strike, a fixed delta or ATM, through
:func:`jaxvol.implied_vol` and a smile fit per snapshot, with quote age and spread alongside.

At each snapshot time the latest quote of every strike (as of that time) is inverted for
its mid, bid and ask vols (``jaxvol.implied_vol``, the forward at the quote's own time: a
stale quote keeps its vol at its strike, sticky strike), the snapshot's smile is fitted in
log-moneyness k = ln(K / F) against the snapshot's forward (``smile="svi"``:
``jaxvol.smile.svi.fit`` on all snapshots in one batch; ``"linear"``: total variance linear
in k between neighbouring strikes), and the target is read off it:

* ``target="atm"``: k = 0 (ATM forward);
* ``target=("strike", K)``: k = ln(K / F);
* ``target=("delta", d)``: the k whose forward delta is d on the fitted smile (call delta in
  (0, 1), put delta in (-1, 0)), by the fixed point k = s (s / 2 - N^{-1}(d_call)),
  s = vol(k) sqrt(T) (12 steps).

Alongside: ``quote_age`` (s) is the age of the older of the two quotes bracketing the
target's k, ``spread`` the bid/ask vol spread linearly interpolated between them; ``status``
is the smile fit's (``jaxvol.calibrate.FitStatus``; "linear": 0, or TOO_FEW_POINTS where the
target is outside the quoted strikes).
"""

from __future__ import annotations

from statistics import NormalDist

import jax.numpy as jnp
import numpy as np

__all__ = ["option_iv_series", "iv_rows", "IV_SERIES_COLUMNS"]

IV_SERIES_COLUMNS = ("time", "iv", "iv_bid", "iv_ask", "spread", "quote_age", "forward",
                     "log_moneyness", "status")


def _parse_target(target):
    if isinstance(target, str) and target.lower() == "atm":
        return "atm", 0.0
    if isinstance(target, tuple) and len(target) == 2 and target[0] in ("strike", "delta"):
        kind, value = target[0], float(target[1])
        if kind == "strike" and not value > 0:
            raise ValueError(f"target=('strike', K) needs K > 0; got {value!r}")
        if kind == "delta" and not (0 < abs(value) < 1):
            raise ValueError(f"target=('delta', d) needs 0 < |d| < 1; got {value!r}")
        return kind, value
    raise ValueError(f"target must be 'atm', ('strike', K) or ('delta', d); got {target!r}")


def _linear_vol(k, w, at):
    """Total variance linear in k through each snapshot's quoted points (k ascending along
    a row; NaN outside the quoted range or with fewer than two points)."""
    out = np.full(k.shape[0], np.nan)
    for row in range(k.shape[0]):
        ok = np.isfinite(w[row]) & np.isfinite(k[row])
        if ok.sum() >= 2 and k[row, ok][0] <= at[row] <= k[row, ok][-1]:
            out[row] = np.interp(at[row], k[row, ok], w[row, ok])
    return out


def option_iv_series(quotes, *, t_spot, spot, target="atm", times=None, rate: float = 0.0,
                     div: float = 0.0, smile: str = "svi", max_age: float = np.inf):
    """IV series of one expiry from option quote rows (pandas DataFrame in the tick schema:
    ``time``, ``bid``, ``ask``, ``expiry``, ``strike``, ``is_call``; one instrument).

    Args:
        t_spot, spot: spot ticks (s) and mids; the forward is spot e^{(rate - div) expiry}
            as of each quote and each snapshot.
        target: ``"atm"``, ``("strike", K)`` or ``("delta", d)`` (see the module docstring),
            or a list of them: one smile fit per snapshot serves all, and the result is a
            dict label -> DataFrame (labels ``ATM``, ``K=1.1``, ``25DP`` / ``25DC``).
        times: snapshot times (s); default every distinct option quote time.
        smile: ``"svi"`` (raw SVI per snapshot) or ``"linear"``.
        max_age: quotes older than this (s) at a snapshot are left out of its smile.

    Returns:
        DataFrame (or dict of them) with :data:`IV_SERIES_COLUMNS` (vols decimal; NaN where the snapshot has too
        few quotes).
    """
    from jaxvol import implied_vol
    from jaxvol.smile import svi

    several = isinstance(target, list)
    targets = [_parse_target(t) for t in (target if several else [target])]
    if smile not in ("svi", "linear"):
        raise ValueError(f"smile must be 'svi' or 'linear'; got {smile!r}")
    missing = [c for c in ("time", "bid", "ask", "expiry", "strike", "is_call")
               if c not in quotes.columns]
    if missing:
        raise ValueError(f"option quotes are missing column(s) {missing}")
    quotes = quotes.sort_values("time", kind="stable")
    t_spot, spot = np.asarray(t_spot, np.float64), np.asarray(spot, np.float64)
    expiry = float(np.median(quotes["expiry"]))
    carry = np.exp((rate - div) * expiry)
    discount = np.exp(-rate * expiry)
    snap = np.unique(quotes["time"].to_numpy(np.float64)) if times is None else \
        np.asarray(times, np.float64)
    i = np.searchsorted(t_spot, snap, side="right") - 1
    f_snap = np.where(i >= 0, spot[np.maximum(i, 0)], np.nan) * carry
    strikes = np.unique(quotes["strike"].to_numpy(np.float64))
    shape = (snap.size, strikes.size)
    mid, bid, ask, age = (np.full(shape, np.nan) for _ in range(4))
    # every quote inverted in one call (mid, bid, ask), forward as of the quote's own time
    tq_all = quotes["time"].to_numpy(np.float64)
    iq = np.searchsorted(t_spot, tq_all, side="right") - 1
    fq = np.where(iq >= 0, spot[np.maximum(iq, 0)], np.nan) * carry
    prices = np.stack([0.5 * (quotes["bid"] + quotes["ask"]).to_numpy(np.float64),
                       quotes["bid"].to_numpy(np.float64), quotes["ask"].to_numpy(np.float64)])
    strike_all = quotes["strike"].to_numpy(np.float64)
    vols = np.asarray(implied_vol(prices, fq, strike_all, quotes["expiry"].to_numpy(np.float64),
                                  quotes["is_call"].to_numpy(bool), discount=discount).vol)
    for j, strike in enumerate(strikes):
        rows = np.flatnonzero(strike_all == strike)
        tq = tq_all[rows]
        latest = np.searchsorted(tq, snap, side="right") - 1
        have = latest >= 0
        pick = rows[np.maximum(latest, 0)]
        mid[:, j] = np.where(have, vols[0, pick], np.nan)
        bid[:, j] = np.where(have, vols[1, pick], np.nan)
        ask[:, j] = np.where(have, vols[2, pick], np.nan)
        age[:, j] = np.where(have, snap - tq_all[pick], np.nan)
    fresh = np.isfinite(mid) & (age <= max_age)
    k = np.log(strikes[None, :] / f_snap[:, None])
    w = np.where(fresh, mid * mid * expiry, np.nan)
    if smile == "svi":
        res = svi.fit(jnp.asarray(np.nan_to_num(k)), jnp.asarray(np.nan_to_num(w, nan=1.0)),
                      mask=jnp.asarray(fresh & np.isfinite(k)))
        params = [res.params[:, j, None] for j in range(5)]
        status = np.asarray(res.status)

        def vol_at(x):
            return np.asarray(svi.implied_vol(jnp.asarray(x), expiry, *params))[:, 0]
    else:
        status = np.zeros(snap.size, np.int32)

        def vol_at(x):
            return np.sqrt(_linear_vol(k, w, x[:, 0]) / expiry)
    out = [_read_target(kind, value, vol_at, k, f_snap, strikes, age, bid, ask, status,
                        snap, expiry, smile) for kind, value in targets]
    return dict(zip([_label(t) for t in target], out)) if several else out[0]


def _label(target):
    kind, value = _parse_target(target)
    return "ATM" if kind == "atm" else (f"K={value:g}" if kind == "strike" else
                                        f"{abs(value) * 100:g}D{'P' if value < 0 else 'C'}")


def _read_target(kind, value, vol_at, k, f_snap, strikes, age, bid, ask, status, snap, expiry,
                 smile):
    """One target's series from the fitted smiles (k, ages and bid/ask vols per strike)."""
    import pandas as pd

    if kind == "atm":
        at = np.zeros((snap.size, 1))
    elif kind == "strike":
        at = np.log(value / f_snap)[:, None]
    else:
        z = NormalDist().inv_cdf(value + 1.0 if value < 0 else value)
        at = np.zeros((snap.size, 1))
        for _ in range(12):
            s = vol_at(at) * np.sqrt(expiry)
            at = (s * (0.5 * s - z))[:, None]
    iv = vol_at(at)
    if smile == "linear":
        status = np.where(np.isfinite(iv), 0, 4).astype(np.int32)
    # the two quoted strikes bracketing the target's k: their older age, their spread
    right = np.clip(np.searchsorted(strikes, f_snap * np.exp(at[:, 0])), 1, strikes.size - 1)
    left = right - 1
    rows = np.arange(snap.size)
    kl, kr = k[rows, left], k[rows, right]
    share = np.clip((at[:, 0] - kl) / (kr - kl), 0.0, 1.0)
    spread_vol = ask - bid
    spread = (1 - share) * spread_vol[rows, left] + share * spread_vol[rows, right]
    quote_age = np.maximum(age[rows, left], age[rows, right])
    return pd.DataFrame(dict(time=snap, iv=iv, iv_bid=iv - 0.5 * spread,
                             iv_ask=iv + 0.5 * spread, spread=spread, quote_age=quote_age,
                             forward=f_snap, log_moneyness=at[:, 0], status=status))


def iv_rows(series, instrument, tenor):
    """An :func:`option_iv_series` result as ``kind="iv"`` rows of the tick schema (bid/ask
    in vol, ``quote_age`` kept), for :func:`jaxvol.divergence.analyse` and friends."""
    import pandas as pd

    ok = np.isfinite(series["iv"].to_numpy()) & np.isfinite(series["spread"].to_numpy())
    s = series[ok]
    return pd.DataFrame(dict(instrument=instrument, kind="iv", tenor=tenor, time=s["time"],
                             bid=s["iv_bid"], ask=s["iv_ask"], quote_age=s["quote_age"]))
