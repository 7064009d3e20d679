"""Lag events between a leader and a follower series: cross-pair lags and skew cracks.

Both are the residual of a follower against the move of a leader that it normally follows
one for one (times a beta), D = y - y(t0) - beta (x - x(t0)) at the follower's ticks (the
leader as of each tick, beta by :func:`jaxvol.divergence.dimson_beta` unless given):

* ``cross_pair_lag``: x = ln S of a correlated pair that moves first (EURJPY), y = ln S of the
  follower (EURUSD): when the leader jumps and the follower has not moved yet, D opens and
  closes as the follower catches up;
* ``skew_crack``: x = the ATM vol, y = a wing vol (e.g. the 25-delta put, from
  :func:`jaxvol.divergence.option_iv_series`): the ATM vol is re-marked and the wing lags,
  D is the wing's residual against the ATM move.

:func:`lag_events` fits D's OU (exact likelihood, all pairs in one padded batch; refitted with
first-pass events masked, as the session pipeline does), standardises it, finds hysteresis
events and labels each row: the pair's kind where the leader's move over ``lookback``
seconds either side of the start accounts for more than ``share`` of D's opening over the
same window (-beta dx / dD > share: the follower was left behind), else ``other`` (the
follower moved alone). The test is scale-free (no estimate of the leader's noise is needed),
and the window reaches past the start because a leader built from quotes (an ATM vol from a
smile fit) takes a moment to complete its own move.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxvol.divergence.events import EVENT_COLUMNS, events, hysteresis, standardise
from jaxvol.divergence.fair import dimson_beta
from jaxvol.divergence.session import _pad, _rows

__all__ = ["LagPair", "LAG_KINDS", "pair_residual", "lag_events"]

LAG_KINDS = ("cross_pair_lag", "skew_crack")


class LagPair(NamedTuple):
    """One leader/follower pair for :func:`lag_events`."""

    name: str          #: label in the event table's ``series`` (e.g. ``EURUSD<-EURJPY``)
    kind: str          #: ``cross_pair_lag`` or ``skew_crack``
    t_lead: object     #: leader tick times (s)
    lead: object       #: leader values (spot mids or ATM vols)
    t_follow: object   #: follower tick times (s)
    follow: object     #: follower values
    log: bool = False  #: compare logs (spots) instead of levels (vols)
    spread: object = None     #: follower's spread per tick (reported at event starts)
    quote_age: object = None  #: follower's quote age per tick


def pair_residual(t_lead, lead, t_follow, follow, *, log: bool = False, beta=None,
                  resolution: float = 5.0, lags: int = 3):
    """(D, beta, leader as of the follower's ticks) for one pair (numpy; D NaN before the
    leader's first tick)."""
    t_lead, t_follow = np.asarray(t_lead, np.float64), np.asarray(t_follow, np.float64)
    x, y = np.asarray(lead, np.float64), np.asarray(follow, np.float64)
    if log:
        x, y = np.log(x), np.log(y)
    if beta is None:
        beta = dimson_beta(t_lead, x, t_follow, y, resolution=resolution, lags=lags)
    i = np.searchsorted(t_lead, t_follow, side="right") - 1
    x_at = np.where(i >= 0, x[np.maximum(i, 0)], np.nan)
    first = int(np.argmax(np.isfinite(x_at)))
    d = y - y[first] - beta * (x_at - x_at[first])
    return d, float(beta), x_at


def _detrend(t, d, window):
    """d less its centred rolling median over ``window`` seconds (NaN kept)."""
    import pandas as pd

    if window is None:
        return d
    index = pd.to_timedelta(np.asarray(t, np.float64), unit="s")
    base = pd.Series(d, index=index).rolling(pd.Timedelta(seconds=window), center=True,
                                             min_periods=1).median().to_numpy()
    return d - base


def _change(t, x, at, lookback):
    """x as of ``at + lookback`` less x as of ``at - lookback`` (NaN before the first
    tick)."""
    i1 = np.searchsorted(t, at + lookback, side="right") - 1
    i0 = max(np.searchsorted(t, at - lookback, side="right") - 1, 0)
    return float(x[i1] - x[i0]) if i1 >= 0 else float("nan")


def _quiet_fit(times, d, mask, count, enter, exit):
    """Exact OU fit, then again with the first pass's events masked (their kicks would
    inflate eta and shrink z); the first ``count`` rows are real."""
    from jaxvol import ou

    first = ou.fit(times, d, mask=mask)
    quiet = mask.copy()
    for i in range(count):
        lam, mu, eta = (float(np.asarray(a)[i]) for a in (first.lam, first.mu, first.eta))
        z = np.asarray(standardise(d[i], lam, mu, eta))
        state = np.asarray(hysteresis(np.where(mask[i], z, 0.0), enter=enter, exit=exit))
        quiet[i] &= state == 0
    return _rows(ou.fit(times, d, mask=quiet), count)


def lag_events(pairs, *, enter: float = 4.0, exit: float = 1.0, lookback: float = 2.0,
               share: float = 0.5, detrend: float | None = 60.0, bucket: int = 1024):
    """Event table (:data:`jaxvol.divergence.EVENT_COLUMNS`, plus ``beta``, ``lam`` of the
    pair's OU fit) of the residuals of several :class:`LagPair` s, fitted in one batch.

    ``detrend`` (seconds, or None): D less its centred rolling median over that window before
    the fit. An error in the estimated beta leaves (beta_true - beta) x the leader's level in
    D, a slow random walk (the leader's re-marks accumulate) that inflates D's variance and
    hides the events; a window several times the events' duration removes it and keeps
    them."""
    import pandas as pd

    pairs = list(pairs)
    for p in pairs:
        if p.kind not in LAG_KINDS:
            raise ValueError(f"LagPair.kind must be one of {LAG_KINDS}; got {p.kind!r}")
    if not pairs:
        return pd.DataFrame(columns=list(EVENT_COLUMNS) + ["beta", "lam"])
    resid = [pair_residual(p.t_lead, p.lead, p.t_follow, p.follow, log=p.log) for p in pairs]
    resid = [(_detrend(p.t_follow, d, detrend), beta, x)
             for p, (d, beta, x) in zip(pairs, resid)]
    keep = [np.isfinite(r[0]) for r in resid]
    times, mask = _pad([np.asarray(p.t_follow, np.float64)[k] for p, k in zip(pairs, keep)],
                       bucket=bucket)
    d, _ = _pad([r[0][k] for r, k in zip(resid, keep)], bucket=bucket)
    fit = _quiet_fit(times, d, mask, len(pairs), enter, exit)
    tables = []
    for i, (p, (di, beta, _), k) in enumerate(zip(pairs, resid, keep)):
        lam, mu, eta = (float(np.asarray(a)[i]) for a in (fit.lam, fit.mu, fit.eta))
        t = np.asarray(p.t_follow, np.float64)[k]
        pick = (lambda a: None if a is None else np.asarray(a, np.float64)[k])  # noqa: E731
        ev = events(t, di[k], lam=lam, mu=mu, eta=eta, enter=enter, exit=exit,
                    spread=pick(p.spread), quote_age=pick(p.quote_age), series=p.name)
        t_lead = np.asarray(p.t_lead, np.float64)
        x = np.asarray(p.lead, np.float64)
        x = np.log(x) if p.log else x
        kinds = []
        for row in ev.itertuples():
            move = _change(t_lead, x, row.start, lookback)
            opening = _change(t, di[k], row.start, lookback)
            led = np.isfinite(move) and opening != 0 and -beta * move / opening > share
            kinds.append(p.kind if led else "other")
        ev["kind"] = kinds
        ev["beta"], ev["lam"] = beta, lam
        tables.append(ev)
    return pd.concat(tables, ignore_index=True)
