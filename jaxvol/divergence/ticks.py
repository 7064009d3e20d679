"""The long tick schema, its validation, and a synthetic tick session with known truth.

Tick schema (one row per quote; several instruments per table):

=============  ===========================  ================================================
column         type                         meaning
=============  ===========================  ================================================
instrument     str                          underlying name (e.g. ``EURUSD``)
kind           str                          ``spot``, ``iv`` (a ready IV quote, bid/ask in
                                            vol) or ``option`` (a price quote)
time           float seconds or datetime64  quote time; datetimes become seconds from the
                                            table's first time
bid, ask       float                        prices (spot, option) or vols (iv, decimal)
tenor          str, optional                IV series label (``ATM``, ``25D``, ``K=1.10``)
expiry         float years, option rows     time to expiry
strike         float, option rows           option strike
is_call        bool, option rows            call or put
=============  ===========================  ================================================

:func:`validate` raises ``ValueError`` naming a missing or mistyped column and returns the
table with a ``time_flag`` column (0 ok, 1 duplicate of the previous time of the same
instrument/kind/tenor, 2 earlier than it): such rows are flagged and kept, never dropped.

:func:`synthetic_session` generates a session with known truth: Poisson spot and IV quote
arrivals, bid/ask noise, an ATM IV that follows the SSR fair value g(S) plus an OU residual
whose speed drops in wide-spread regimes, and planted events (IV lag after a spot jump, IV
leading with no spot move, spread blow-outs) whose list is returned alongside.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["REQUIRED_COLUMNS", "SessionTruth", "OptionTruth", "synthetic_session",
           "synthetic_option_session", "validate", "to_seconds"]

REQUIRED_COLUMNS = {"instrument": "string", "kind": "string", "time": "time", "bid": "float",
                    "ask": "float"}
OPTION_COLUMNS = {"expiry": "float", "strike": "float", "is_call": "bool"}
KINDS = ("spot", "iv", "option")


def to_seconds(values):
    """Seconds (float64) from a float or datetime64 column (seconds from its first value)."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.datetime64):
        ns = values.astype("datetime64[ns]").astype(np.int64)
        return (ns - ns.min()) * 1e-9
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"column 'time' must be float seconds or datetime64; got dtype "
                         f"{values.dtype}")
    return values.astype(np.float64)


def validate(table):
    """Check a tick table against the schema; returns a copy with seconds and ``time_flag``."""
    import pandas as pd

    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"a tick table must be a pandas DataFrame; got {type(table).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"tick table is missing column(s) {missing}; required: "
                         f"{list(REQUIRED_COLUMNS)}")
    out = table.copy()
    for col in ("bid", "ask"):
        if not pd.api.types.is_numeric_dtype(out[col]):
            raise ValueError(f"column {col!r} must be numeric; got dtype {out[col].dtype}")
    bad_kind = sorted(set(out["kind"].astype(str)) - set(KINDS))
    if bad_kind:
        raise ValueError(f"column 'kind' has unknown value(s) {bad_kind}; allowed {KINDS}")
    if (out["kind"] == "option").any():
        absent = [c for c in OPTION_COLUMNS if c not in out.columns]
        if absent:
            raise ValueError(f"option rows need column(s) {absent}")
    out["time"] = to_seconds(out["time"].to_numpy())
    if "tenor" not in out.columns:
        out["tenor"] = np.where(out["kind"] == "iv", "ATM", "")
    out["time_flag"] = np.zeros(len(out), np.int8)
    for _, idx in out.groupby(["instrument", "kind", "tenor"], sort=False).groups.items():
        t = out.loc[idx, "time"].to_numpy()
        dt = np.diff(t, prepend=-np.inf)
        out.loc[idx, "time_flag"] = np.where(dt == 0, 1, np.where(dt < 0, 2, 0)).astype(np.int8)
    return out


@dataclasses.dataclass(frozen=True)
class SessionTruth:
    """What the generator planted: parameters and the event list (one dict per event)."""

    lam: float            #: residual OU speed in calm books, 1/s
    lam_wide: float       #: speed in wide-spread regimes
    eta: float            #: residual OU diffusion (vol / sqrt(s))
    beta: float           #: spot-vol beta of the fair ATM IV, d vol / d ln S
    skew: float           #: ATM skew d vol / d ln K (SSR = beta / skew)
    events: tuple         #: planted events: instrument, time, kind, kick (vol)


def _spread_regime(rng, duration, events):
    """Wide-spread windows [start, end) around the planted blow-outs."""
    return [(e["time"], e["time"] + 30.0) for e in events if e["kind"] == "spread_blowout"]


def synthetic_session(seed: int = 0, *, duration: float = 1200.0,
                      instruments=("EURUSD", "USDJPY"), spot_rate: float = 4.0,
                      iv_rate: float = 3.0, half_life: float = 3.0, wide_factor: float = 3.0,
                      events_per_instrument: int = 16, kick_sd: float = 8.0):
    """A tick session (pandas DataFrame in the tick schema) and its :class:`SessionTruth`.

    Spot: log-Brownian with 3e-5 per sqrt(s), quotes Poisson(``spot_rate``), spread 1e-4 (x5 in
    blow-outs). ATM IV mid: g(S) = iv0 + beta ln(S / S0) with beta = SSR x skew (SSR 1.5,
    skew -0.4), plus an OU residual D (sd 0.05 vol points, half-life ``half_life`` s,
    ``wide_factor`` times slower in the 30 s wide-spread window after each blow-out) kicked by
    ``kick_sd`` stationary sd at each planted event (for ``iv_lag`` the spot jumps by
    -kick / beta and the IV is left behind); IV quotes Poisson(``iv_rate``) with a vol spread of
    0.1 vol points (x5 in blow-outs) and quote noise of 0.1 of D's sd.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    lam = math.log(2.0) / half_life
    lam_wide = lam / wide_factor
    sd = 0.0005                                # stationary sd of D: 0.05 vol points
    eta = sd * math.sqrt(2.0 * lam)
    skew, ssr = -0.4, 1.5
    beta = ssr * skew
    spot_vol = 3e-5                            # per sqrt(second)
    rows, planted = [], []
    kinds = ("iv_lag", "iv_leads", "spread_blowout")
    for n, name in enumerate(instruments):
        s0 = 1.1 if n == 0 else 150.0
        iv0 = 0.08 + 0.02 * n
        slots = np.sort(rng.choice(np.arange(2, int(duration // 60) * 2 - 1),
                                   min(events_per_instrument, int(duration // 30) - 4),
                                   replace=False)) * 30.0 + rng.uniform(0, 10, 1)
        events = [dict(instrument=name, time=float(t), kind=kinds[i % 3],
                       sign=float(rng.choice([-1.0, 1.0]))) for i, t in enumerate(slots)]
        wide = _spread_regime(rng, duration, events)
        # one fine clock carries spot and D; quotes sample it
        clock = np.arange(0.0, duration, 0.01)
        in_wide = np.zeros(clock.size, bool)
        for a, b in wide:
            in_wide |= (clock >= a) & (clock < b)
        ln_s = np.cumsum(spot_vol * math.sqrt(0.01) * rng.standard_normal(clock.size))
        lam_t = np.where(in_wide, lam_wide, lam)
        phi = np.exp(-lam_t * 0.01)
        step_sd = eta * np.sqrt(-np.expm1(-2 * lam_t * 0.01) / (2 * lam_t))
        shocks = step_sd * rng.standard_normal(clock.size)
        kick_at = np.zeros(clock.size)
        for e in events:
            i = int(np.searchsorted(clock, e["time"]))
            size = kick_sd * sd * e["sign"]
            if e["kind"] == "iv_lag":          # spot jumps, the IV is left behind
                jump = -size / beta
                ln_s[i:] += jump
                e["spot_jump"] = jump
            kick_at[i] += size
            e["kick"] = size
        d = np.empty(clock.size)
        d[0] = sd * rng.standard_normal()
        for i in range(1, clock.size):
            d[i] = phi[i - 1] * d[i - 1] + shocks[i] + kick_at[i]
        spot = s0 * np.exp(ln_s)
        fair = iv0 + beta * ln_s
        iv = fair + d
        planted.extend(events)
        t_spot = np.sort(rng.uniform(0, duration, rng.poisson(spot_rate * duration)))
        t_iv = np.sort(rng.uniform(0, duration, rng.poisson(iv_rate * duration)))
        js = np.minimum(np.searchsorted(clock, t_spot, side="right") - 1, clock.size - 1)
        ji = np.minimum(np.searchsorted(clock, t_iv, side="right") - 1, clock.size - 1)
        half_spread = 0.5e-4 * s0 * np.where(in_wide[js], 5.0, 1.0)
        mid = spot[js]
        rows.append(pd.DataFrame(dict(instrument=name, kind="spot", tenor="", time=t_spot,
                                      bid=mid - half_spread, ask=mid + half_spread)))
        vol_half = 0.0005 * np.where(in_wide[ji], 5.0, 1.0)
        mid_iv = iv[ji] + 0.1 * sd * rng.standard_normal(ji.size)
        rows.append(pd.DataFrame(dict(instrument=name, kind="iv", tenor="ATM", time=t_iv,
                                      bid=mid_iv - vol_half, ask=mid_iv + vol_half)))
    table = pd.concat(rows, ignore_index=True)
    truth = SessionTruth(lam=lam, lam_wide=lam_wide, eta=eta, beta=beta, skew=skew,
                         events=tuple(planted))
    return table, truth


@dataclasses.dataclass(frozen=True)
class OptionTruth:
    """What :func:`synthetic_option_session` planted: the true smile on a 10 ms clock.

    vol(t, k) = atm(t) + skew k + curvature k^2 + wing(t) (k / k_wing)^2, k = ln(K / F(t)),
    F(t) = spot(t) (zero carry); ``atm`` follows the SSR fair value plus its own OU residual
    and jumps at the planted skew cracks, where ``wing`` (an OU residual) is kicked by minus
    the jump: the wings (|k| = k_wing) stay and catch up with half-life ``half_life``."""

    clock: np.ndarray     #: seconds, 10 ms grid
    spot: np.ndarray      #: follower spot (EURUSD) on the clock
    leader: np.ndarray    #: leader spot (EURJPY) on the clock
    atm: np.ndarray       #: ATM-forward vol on the clock
    wing: np.ndarray      #: wing residual on the clock (vol)
    skew: float
    curvature: float
    k_wing: float
    expiry: float         #: years (constant over the session)
    lam: float            #: OU speed of the lag residuals, 1/s
    beta: float           #: d ln S_follower / d ln S_leader
    events: tuple         #: dicts: instrument, time, kind (cross_pair_lag, skew_crack, ...)

    def vol(self, t, k):
        """True vol at times ``t`` (s, previous clock tick) and log-moneyness ``k``."""
        i = np.clip(np.searchsorted(self.clock, t, side="right") - 1, 0, self.clock.size - 1)
        return (self.atm[i] + self.skew * k + self.curvature * k * k
                + self.wing[i] * (k / self.k_wing) ** 2)

    def delta_log_moneyness(self, t, delta):
        """k of the forward delta ``delta`` (call delta in (0, 1); a put delta in (-1, 0) is
        the call delta 1 + delta) on the true smile (fixed point, 30 steps)."""
        from statistics import NormalDist
        d = delta + 1.0 if delta < 0 else delta
        z = NormalDist().inv_cdf(d)
        k = np.zeros(np.shape(t))
        for _ in range(30):
            s = self.vol(t, k) * math.sqrt(self.expiry)
            k = s * (0.5 * s - z)
        return k


def _black(forward, strike, expiry, vol, is_call):
    """Undiscounted Black price in numpy (the generator stays independent of the solver
    it tests)."""
    erf = np.vectorize(math.erf, otypes=[np.float64])
    cdf = lambda x: 0.5 * (1.0 + erf(x / math.sqrt(2.0)))  # noqa: E731
    s = vol * math.sqrt(expiry)
    d1 = np.log(forward / strike) / s + 0.5 * s
    d2 = d1 - s
    if is_call:
        return forward * cdf(d1) - strike * cdf(d2)
    return strike * cdf(-d2) - forward * cdf(-d1)


def synthetic_option_session(seed: int = 0, *, duration: float = 900.0, strikes: int = 9,
                             spot_rate: float = 4.0, quote_rate: float = 1.0,
                             half_life: float = 3.0, events: int = 16, jump: float = 0.003):
    """Option quotes with a known smile, and a correlated pair that moves first.

    Instruments: ``EURUSD`` (spot quotes Poisson(``spot_rate``), option quotes on ``strikes``
    fixed strikes around the initial spot for one expiry, each strike quoted Poisson
    (``quote_rate``), OTM side, price bid/ask of +-2% of the price around the true Black
    price) and ``EURJPY`` (spot only; ln S_EURUSD = 0.8 ln S_EURJPY + R with R an OU
    residual). Planted events (alternating, ``events`` in all): ``cross_pair_lag`` (EURJPY
    jumps by 10 of R's stationary sd / 0.8, EURUSD follows as R decays), ``skew_crack`` (the
    ATM vol jumps by ``jump``, the wings lag). Returns (table in the tick schema, with
    ``expiry``, ``strike``, ``is_call`` on option rows; :class:`OptionTruth`).
    """
    import pandas as pd

    rng = np.random.default_rng([seed, 15])
    dt = 0.01
    clock = np.arange(0.0, duration, dt)
    lam = math.log(2.0) / half_life
    phi = math.exp(-lam * dt)
    beta_pair, spot_vol = 0.8, 3e-5
    r_sd = 2e-4                                 # stationary sd of the pair residual (log)
    wing_sd, atm_sd = 2e-4, 2e-4                # vol
    slots = np.sort(rng.choice(np.arange(2, int(duration // 30) - 1), min(
        events, int(duration // 30) - 3), replace=False)) * 30.0 + rng.uniform(0, 10, 1)
    planted = [dict(instrument="EURUSD", time=float(t), sign=float(rng.choice([-1.0, 1.0])),
                    kind=("cross_pair_lag", "skew_crack")[i % 2]) for i, t in enumerate(slots)]

    def ou_path(sd, kicks):
        shocks = sd * math.sqrt(1 - phi * phi) * rng.standard_normal(clock.size) + kicks
        x = np.empty(clock.size)
        x[0] = sd * rng.standard_normal()
        for i in range(1, clock.size):
            x[i] = phi * x[i - 1] + shocks[i]
        return x

    ln_lead = np.cumsum(spot_vol * math.sqrt(dt) * rng.standard_normal(clock.size))
    r_kick, wing_kick, atm_jump = (np.zeros(clock.size) for _ in range(3))
    for e in planted:
        i = int(np.searchsorted(clock, e["time"]))
        if e["kind"] == "cross_pair_lag":
            size = 10.0 * r_sd * e["sign"]
            ln_lead[i:] += size / beta_pair
            r_kick[i] -= size
        else:
            atm_jump[i] += jump * e["sign"]
            wing_kick[i] -= jump * e["sign"]
        e["kick"] = float(e["sign"] * (10.0 * r_sd if e["kind"] == "cross_pair_lag" else jump))
    ln_follow = beta_pair * ln_lead + ou_path(r_sd, r_kick)
    spot = 1.1 * np.exp(ln_follow)
    atm = 0.08 + (-0.6) * ln_follow + np.cumsum(atm_jump) + ou_path(atm_sd, 0.0)
    wing = ou_path(wing_sd, wing_kick)
    expiry = 0.1
    truth = OptionTruth(clock=clock, spot=spot, leader=140.0 * np.exp(ln_lead), atm=atm,
                        wing=wing, skew=-0.2, curvature=12.0, k_wing=0.017, expiry=expiry,
                        lam=lam, beta=beta_pair, events=tuple(planted))
    rows = []
    for name, path in (("EURUSD", truth.spot), ("EURJPY", truth.leader)):
        t = np.sort(rng.uniform(0, duration, rng.poisson(spot_rate * duration)))
        mid = path[np.minimum(np.searchsorted(clock, t, side="right") - 1, clock.size - 1)]
        rows.append(pd.DataFrame(dict(instrument=name, kind="spot", tenor="", time=t,
                                      bid=mid * (1 - 0.5e-4), ask=mid * (1 + 0.5e-4))))
    strike_grid = 1.1 * np.exp(np.linspace(-0.035, 0.035, strikes))
    for strike in strike_grid:
        t = np.sort(rng.uniform(0, duration, rng.poisson(quote_rate * duration)))
        i = np.minimum(np.searchsorted(clock, t, side="right") - 1, clock.size - 1)
        forward = spot[i]
        vol = truth.vol(t, np.log(strike / forward))
        is_call = bool(strike >= 1.1)
        price = _black(forward, strike, expiry, vol, is_call)
        rows.append(pd.DataFrame(dict(
            instrument="EURUSD", kind="option", tenor="", time=t, bid=price * 0.98,
            ask=price * 1.02, expiry=expiry, strike=strike, is_call=is_call)))
    table = pd.concat(rows, ignore_index=True)
    return table, truth
