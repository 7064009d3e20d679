"""The Cboe VIX method, exactly as in the current Cboe methodology document.

Per expiry ("term"), with T = minutes / 525,600 and R the continuously compounded rate:

1. Mid quotes of calls and puts. The forward comes from the strike K* with the smallest
   |C - P| of mids among strikes where both the call and the put have a positive bid, using the
   *signed* difference: F = K* + e^{RT} (C - P).
2. K0 is the listed strike at or immediately below F; it is priced as the average of its put
   and call mids.
3. Puts are walked downward from K0 and calls upward: a zero-bid strike is skipped, and the walk
   stops for good after two *consecutive* zero bids (strikes beyond are never used).
4. Delta-K of a strike is half the distance between its neighbours among the strikes that
   survived selection; at the two ends it is the distance to the single neighbour.
5. sigma^2 = (2/T) sum_i dK_i / K_i^2 e^{RT} Q(K_i) - (1/T) (F/K0 - 1)^2.
6. The two terms are interpolated linearly in total variance to the target (30 days) and
   VIX = 100 sqrt(sigma_30^2).

The computation is one scalar-per-lane kernel on padded arrays (sorted inside the kernel, fixed
work: sorts and cumulative scans only), vmapped at the public edge. Bad data never raises: the
lane gets NaN and a :class:`CboeStatus`.

The private :class:`_Rules` switches exist only so that tests can show that each rule matters
(the "mutants": counting all zero bids, |C - P|, delta-K over listed strikes).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvol.status import domain_status
from jaxvol.indices.term import MINUTES_30_DAYS, MINUTES_PER_YEAR, interpolate_variance
from jaxvol.indices.term import variance_to_index

__all__ = ["CboeStatus", "CBOE_RULES", "CboeTerm", "CboeBatch", "ScreenedQuotes", "screen_quotes",
           "cboe_variance", "cboe_vix_batch", "QUOTE_COLUMNS", "CboeVix", "cboe_vix"]


CboeStatus = domain_status("CboeStatus", "indices", {
    "OK": 0,
    "BAD_INPUT": 1,         # minutes <= 0 or a non-finite rate (old name BAD_EXPIRY)
    "NON_FINITE": 3,        # a used quote or the result is not finite
    "TOO_FEW_POINTS": 4,    # no out-of-the-money put or no call survived (old TOO_FEW_STRIKES)
    "ARBITRAGE": 9,         # the screened quotes still hold a vertical-spread arbitrage
    "NO_FORWARD": 30,       # no strike with positive call and put bids
}, "Per-term outcome of the Cboe computation (the index takes the larger code of its two "
   "terms; codes: jaxvol.status).",
    aliases={"BAD_EXPIRY": "BAD_INPUT", "TOO_FEW_STRIKES": "TOO_FEW_POINTS"})


@dataclasses.dataclass(frozen=True)
class _Rules:
    """Methodology switches; the defaults are Cboe's rules, the others are test mutants."""

    forward_difference: str = "signed"     # or "absolute" (wrong: F = K* + e^{RT}|C - P|)
    zero_bid_stop: str = "consecutive"     # or "total" (wrong: stop after any two zero bids)
    delta_k: str = "surviving"             # or "listed" (wrong: neighbours among listed strikes)

    def __post_init__(self):
        choices = {"forward_difference": ("signed", "absolute"),
                   "zero_bid_stop": ("consecutive", "total"),
                   "delta_k": ("surviving", "listed")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"_Rules.{name}={getattr(self, name)!r}; expected one of {allowed}")


CBOE_RULES = _Rules()


class CboeTerm(NamedTuple):
    """One expiry of the Cboe computation (arrays sorted by strike, padding last)."""

    variance: jax.Array       # [...] annualised sigma^2 of the term
    forward: jax.Array        # [...] forward index level F
    k0: jax.Array             # [...] strike at or immediately below F
    expiry: jax.Array         # [...] years, minutes / 525,600
    strike: jax.Array         # [..., strikes] sorted strikes (padding: +inf)
    mid: jax.Array            # [..., strikes] Q(K): put mid below K0, call above, average at K0
    delta_k: jax.Array        # [..., strikes] delta-K (0 where unused)
    contribution: jax.Array   # [..., strikes] dK/K^2 e^{RT} Q(K) (0 where unused)
    used: jax.Array           # [..., strikes] bool, strike in the strip
    status: jax.Array         # [...] int32 CboeStatus
    excluded: jax.Array = 0   # [...] int32 quotes the screen left out (see screen_quotes)


class CboeBatch(NamedTuple):
    """Cboe index of many underlyings from two terms (axis -1 of the per-term fields)."""

    index: jax.Array          # [...] 100 * sqrt(target-tenor variance)
    variance: jax.Array       # [..., 2] sigma^2 of near and next terms
    target_variance: jax.Array  # [...] interpolated annualised variance at the target tenor
    forward: jax.Array        # [..., 2]
    k0: jax.Array             # [..., 2]
    status: jax.Array         # [...] worst CboeStatus of the two terms
    terms: CboeTerm           # per-term detail with a [..., 2] batch shape
    excluded: jax.Array = 0   # [...] int32 quotes the screen left out, both terms


# ----------------------------------------------------------------------------------- kernels
def _mid(bid, ask):
    return 0.5 * (bid + ask)


def _has_bid(bid):
    """Positive, finite bid (a missing quote counts as a zero bid)."""
    return jnp.isfinite(bid) & (bid > 0)


def _sort_by_strike(strike, mask, *columns, presorted=False):
    """Valid strikes ascending, padding last (strike +inf). ``presorted`` skips the sort (the
    caller guarantees that order; XLA's CPU sort is the most expensive step of the kernel)."""
    key = jnp.where(mask, strike, jnp.inf)
    if presorted:
        return (key, mask) + tuple(columns)
    order = jnp.argsort(key)
    return (key[order], mask[order]) + tuple(c[order] for c in columns)


def _forward(strike, call_mid, put_mid, candidate, growth, rules):
    """F = K* + e^{RT}(C - P) at the strike with the smallest |C - P| among ``candidate``."""
    difference = call_mid - put_mid
    gap = jnp.where(candidate, jnp.abs(jnp.where(candidate, difference, 0.0)), jnp.inf)
    best = jnp.argmin(gap)
    chosen = difference[best]
    if rules.forward_difference == "absolute":
        chosen = jnp.abs(chosen)
    return strike[best] + growth * chosen


def _walk_wing(zero_bid, wing, rules):
    """Strikes kept when walking in array order through ``wing`` (outward from K0)."""
    zero = zero_bid & wing
    position = jnp.arange(zero.shape[-1], dtype=jnp.int32)
    if rules.zero_bid_stop == "consecutive":
        previous_zero = jnp.concatenate([jnp.zeros((1,), bool), zero[:-1]])
        pair = zero & previous_zero     # second of two consecutive zero bids: the walk stops
        stop = jnp.min(jnp.where(pair, position, zero.shape[-1]))
        stopped = position >= stop
    else:
        stopped = jnp.cumsum(zero.astype(jnp.int32)) >= 2
    return wing & ~zero_bid & ~stopped


def _neighbour_delta_k(strike, basis):
    """Half the distance between neighbours in ``basis`` (one-sided at the ends)."""
    below = jnp.where(basis, strike, -jnp.inf)
    above = jnp.where(basis, strike, jnp.inf)
    previous = jnp.concatenate([jnp.full((1,), -jnp.inf, strike.dtype),
                                jax.lax.cummax(below)[:-1]])
    following = jnp.concatenate([jax.lax.cummin(above, reverse=True)[1:],
                                 jnp.full((1,), jnp.inf, strike.dtype)])
    finite_strike = jnp.where(jnp.isfinite(strike), strike, 0.0)
    has_previous, has_following = jnp.isfinite(previous), jnp.isfinite(following)
    previous = jnp.where(has_previous, previous, finite_strike)
    following = jnp.where(has_following, following, finite_strike)
    both = has_previous & has_following
    return jnp.where(both, 0.5 * (following - previous),
                     (following - finite_strike) + (finite_strike - previous))


def _select_strip(strike, mask, call_bid, put_bid, k0_index, rules):
    """Used-strike mask: walked put wing, K0, walked call wing."""
    position = jnp.arange(strike.shape[-1], dtype=jnp.int32)
    put_wing = mask & (position < k0_index)
    call_wing = mask & (position > k0_index)
    puts = _walk_wing(~_has_bid(put_bid)[::-1], put_wing[::-1], rules)[::-1]
    calls = _walk_wing(~_has_bid(call_bid), call_wing, rules)
    return puts, calls, mask & (position == k0_index)


def _term_status(expiry_ok, has_forward, puts, calls, finite):
    status = jnp.where(finite, CboeStatus.OK, CboeStatus.NON_FINITE)
    status = jnp.where(jnp.any(puts) & jnp.any(calls), status, CboeStatus.TOO_FEW_STRIKES)
    status = jnp.where(has_forward, status, CboeStatus.NO_FORWARD)
    return jnp.where(expiry_ok, status, CboeStatus.BAD_EXPIRY).astype(jnp.int32)


def _cboe_term_lane(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate, rules,
                    presorted=False):
    """One term of one underlying: 1-D quote arrays of equal length, scalar minutes and rate."""
    strike, mask, call_bid, call_ask, put_bid, put_ask = _sort_by_strike(
        strike, mask, call_bid, call_ask, put_bid, put_ask, presorted=presorted)
    expiry_ok = (minutes > 0) & jnp.isfinite(minutes) & jnp.isfinite(rate)
    expiry = jnp.where(expiry_ok, minutes, 1.0) / MINUTES_PER_YEAR
    growth = jnp.exp(jnp.where(expiry_ok, rate, 0.0) * expiry)
    call_mid, put_mid = _mid(call_bid, call_ask), _mid(put_bid, put_ask)
    candidate = mask & _has_bid(call_bid) & _has_bid(put_bid)
    candidate = candidate & jnp.isfinite(call_mid) & jnp.isfinite(put_mid)
    forward = _forward(strike, call_mid, put_mid, candidate, growth, rules)
    k0_index = jnp.sum(mask & (strike <= forward), dtype=jnp.int32) - 1
    puts, calls, at_k0 = _select_strip(strike, mask, call_bid, put_bid, k0_index, rules)
    used = puts | calls | at_k0
    k0 = jnp.where(k0_index >= 0, strike[jnp.maximum(k0_index, 0)], jnp.nan)
    mid = jnp.where(puts, put_mid, jnp.where(calls, call_mid, 0.5 * (put_mid + call_mid)))
    mid = jnp.where(used, mid, 0.0)
    basis = used if rules.delta_k == "surviving" else mask
    delta_k = jnp.where(used, _neighbour_delta_k(strike, basis), 0.0)
    safe_strike = jnp.where(used, strike, 1.0)
    contribution = jnp.where(used, delta_k / safe_strike**2 * growth * mid, 0.0)
    safe_k0 = jnp.where(jnp.isfinite(k0), k0, forward)
    variance = (2.0 * jnp.sum(contribution) - (forward / safe_k0 - 1.0) ** 2) / expiry
    status = _term_status(expiry_ok, jnp.any(candidate), puts, calls,
                          jnp.isfinite(variance) & (k0_index >= 0))
    variance = jnp.where(status == CboeStatus.OK, variance, jnp.nan)
    return CboeTerm(variance, forward, k0, expiry, strike, mid, delta_k, contribution, used,
                    status)


class ScreenedQuotes(NamedTuple):
    """Quotes after :func:`screen_quotes` (sorted by strike, padding last)."""

    strike: jax.Array
    call_bid: jax.Array
    call_ask: jax.Array
    put_bid: jax.Array
    put_ask: jax.Array
    mask: jax.Array
    excluded: jax.Array       # [...] int32 quotes left out (a strike's call and put count 2)
    arbitrage: jax.Array      # [...] bool: a vertical-spread arbitrage among the kept quotes


def _screen_lane(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate,
                 presorted=False):
    strike, mask, call_bid, call_ask, put_bid, put_ask = _sort_by_strike(
        strike, mask, call_bid, call_ask, put_bid, put_ask, presorted=presorted)
    expiry_ok = (minutes > 0) & jnp.isfinite(minutes) & jnp.isfinite(rate)
    expiry = jnp.where(expiry_ok, minutes, 1.0) / MINUTES_PER_YEAR
    discount = jnp.exp(-jnp.where(expiry_ok, rate, 0.0) * expiry)
    duplicate = mask & jnp.concatenate([jnp.zeros((1,), bool), strike[1:] == strike[:-1]])
    mask = mask & ~duplicate

    def basic(bid, ask):  # crossed or negative
        return mask & (((bid > ask) & jnp.isfinite(bid) & jnp.isfinite(ask))
                       | (bid < 0) | (ask < 0))

    call_mid, put_mid = _mid(call_bid, call_ask), _mid(put_bid, put_ask)
    put_bad = basic(put_bid, put_ask) | (mask & jnp.isfinite(put_mid)
                                         & (put_mid > discount * strike))
    call_basic = basic(call_bid, call_ask)
    candidate = (mask & _has_bid(call_bid) & _has_bid(put_bid) & ~put_bad & ~call_basic
                 & jnp.isfinite(call_mid) & jnp.isfinite(put_mid))
    forward = _forward(strike, call_mid, put_mid, candidate, 1.0 / discount, CBOE_RULES)
    above = jnp.isfinite(call_mid) & (call_mid > discount * forward) & jnp.any(candidate)
    call_bad = call_basic | (mask & above)
    nan = jnp.nan
    call_bid, call_ask = jnp.where(call_bad, nan, call_bid), jnp.where(call_bad, nan, call_ask)
    put_bid, put_ask = jnp.where(put_bad, nan, put_bid), jnp.where(put_bad, nan, put_ask)
    excluded = (2 * jnp.sum(duplicate) + jnp.sum(call_bad) + jnp.sum(put_bad)).astype(jnp.int32)
    # vertical spreads: buy the lower-strike call at its ask, sell the higher one at its bid
    # (or the reverse for puts): a positive cash flow for a non-negative payoff
    scale = 1e-12 * jnp.max(jnp.where(mask, jnp.abs(strike), 0.0))
    call_ask_ok = jnp.where(mask & jnp.isfinite(call_ask), call_ask, jnp.inf)
    cheapest_below = jnp.concatenate([jnp.full((1,), jnp.inf, strike.dtype),
                                      jax.lax.cummin(call_ask_ok)[:-1]])
    call_arb = mask & _has_bid(call_bid) & (call_bid > cheapest_below + scale)
    put_bid_ok = jnp.where(mask & _has_bid(put_bid), put_bid, -jnp.inf)
    richest_below = jnp.concatenate([jnp.full((1,), -jnp.inf, strike.dtype),
                                     jax.lax.cummax(put_bid_ok)[:-1]])
    put_arb = mask & jnp.isfinite(put_ask) & (put_ask < richest_below - scale)
    arbitrage = jnp.any(call_arb) | jnp.any(put_arb)
    strike, mask, call_bid, call_ask, put_bid, put_ask = _sort_by_strike(
        strike, mask, call_bid, call_ask, put_bid, put_ask)  # duplicates out: padding last
    return ScreenedQuotes(strike, call_bid, call_ask, put_bid, put_ask, mask, excluded,
                          arbitrage)


@functools.partial(jax.jit, static_argnames=("presorted",))
def screen_quotes(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate, *,
                  presorted: bool = False) -> ScreenedQuotes:
    """Static no-arbitrage screen of raw quote chains before a model-free index.

    Per term (``[..., strikes]`` quotes, ``[...]`` minutes and rate), a quote is left out (its
    bid and ask set to NaN, which the Cboe rules treat as a zero bid) when it is crossed
    (bid > ask), negative, or its mid lies above the static bound (a put above D K, a call
    above D F with Cboe's parity forward from the clean quotes); a repeated strike keeps only
    its first listing. ``excluded`` counts what was left out; ``arbitrage`` is True when the
    kept quotes still allow a vertical-spread arbitrage (a call bid above the ask of a lower
    strike, a put ask below the bid of a lower strike): the index built on them is then
    reported ``ARBITRAGE``, not OK. Returns the quotes sorted by strike, padding last.
    """
    args = _cast_inputs(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate)
    lane = functools.partial(_screen_lane, presorted=presorted)
    signature = "(n),(n),(n),(n),(n),(n),(),()->(n),(n),(n),(n),(n),(n),(),()"
    return ScreenedQuotes(*jnp.vectorize(lane, signature=signature)(*args))


def _cast_inputs(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate):
    call_bid = jnp.asarray(call_bid)
    if not jnp.issubdtype(call_bid.dtype, jnp.floating):
        raise ValueError(f"call_bid must be a floating array, got dtype {call_bid.dtype}")
    dtype = call_bid.dtype
    floats = [jnp.asarray(x).astype(dtype) for x in (strike, call_bid, call_ask, put_bid,
                                                     put_ask)]
    mask = jnp.ones(floats[0].shape, bool) if mask is None else jnp.asarray(mask, bool)
    return (*floats, mask, jnp.asarray(minutes).astype(dtype), jnp.asarray(rate).astype(dtype))


@functools.partial(jax.jit, static_argnames=("presorted", "screen", "_rules"))
def cboe_variance(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate, *,
                  presorted: bool = False, screen: bool = True,
                  _rules: _Rules = CBOE_RULES) -> CboeTerm:
    """Cboe sigma^2 of one term for a batch of padded chains.

    Args:
      strike, call_bid, call_ask, put_bid, put_ask: ``[..., strikes]`` quotes (any strike order;
        missing quotes may be NaN and count as zero bids).
      mask: ``[..., strikes]`` bool, False for padding (or None: all valid).
      minutes: ``[...]`` minutes to expiry (Cboe's N_T); rate: ``[...]`` continuous rate R.
      presorted: the caller guarantees valid strikes ascending with padding last (as
        ``jaxvol.chains`` packs them); skips the per-lane sort, the kernel's costliest step.
      screen: apply :func:`screen_quotes` first (default): crossed, negative, above-bound and
        repeated quotes are left out (``excluded`` counts them) and a term whose kept quotes
        hold a vertical-spread arbitrage gets status ARBITRAGE. ``screen=False`` is the bare
        methodology on the quotes as given.

    Returns a :class:`CboeTerm` in the dtype of ``call_bid``.
    """
    args = _cast_inputs(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate)
    excluded = jnp.zeros(args[0].shape[:-1], jnp.int32)
    arbitrage = jnp.zeros(args[0].shape[:-1], bool)
    if screen:
        screened = screen_quotes(*args, presorted=presorted)
        args = (*screened[:6], args[6], args[7])
        excluded, arbitrage, presorted = screened.excluded, screened.arbitrage, True
    lane = functools.partial(_cboe_term_lane, rules=_rules, presorted=presorted)
    fields = lambda *a: tuple(lane(*a))[:10]  # noqa: E731 (excluded is set below)
    signature = "(n),(n),(n),(n),(n),(n),(),()->(),(),(),(),(n),(n),(n),(n),(n),()"
    term = CboeTerm(*jnp.vectorize(fields, signature=signature)(*args))
    status = jnp.where((term.status == CboeStatus.OK) & arbitrage, CboeStatus.ARBITRAGE,
                       term.status).astype(jnp.int32)
    return term._replace(status=status, excluded=excluded)


@functools.partial(jax.jit, static_argnames=("presorted", "screen", "_rules"))
def cboe_vix_batch(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate, *,
                   target_minutes=MINUTES_30_DAYS, presorted: bool = False,
                   screen: bool = True, _rules: _Rules = CBOE_RULES) -> CboeBatch:
    """Cboe index of many underlyings at once.

    Args:
      strike, call_bid, call_ask, put_bid, put_ask, mask: ``[..., 2, strikes]`` padded quotes
        of the near (index 0) and next (index 1) terms.
      minutes, rate: ``[..., 2]`` minutes to expiry and continuous rates of the two terms.
      target_minutes: tenor of the index (43,200 = 30 days), scalar or ``[...]``.
      presorted: strikes already ascending with padding last (see :func:`cboe_variance`).
      screen: the quote screen of :func:`screen_quotes` (default on).

    Returns a :class:`CboeBatch`; lanes with bad data get NaN and a non-zero status; a lane
    built on quotes that hold an arbitrage keeps its value with status ARBITRAGE.
    """
    terms = cboe_variance(strike, call_bid, call_ask, put_bid, put_ask, mask, minutes, rate,
                          presorted=presorted, screen=screen, _rules=_rules)
    minutes = jnp.asarray(minutes).astype(terms.variance.dtype)
    target = interpolate_variance(minutes[..., 0], terms.variance[..., 0], minutes[..., 1],
                                  terms.variance[..., 1], target_minutes)
    status = jnp.max(terms.status, axis=-1)
    return CboeBatch(variance_to_index(target), terms.variance, target, terms.forward,
                     terms.k0, status, terms, jnp.sum(terms.excluded, axis=-1))


# ------------------------------------------------------------------------- DataFrame front end
QUOTE_COLUMNS = ("strike", "call_bid", "call_ask", "put_bid", "put_ask")


@dataclasses.dataclass(frozen=True)
class CboeVix:
    """Result of :func:`cboe_vix` for one underlying (plain numpy/pandas values)."""

    index: float
    variance: np.ndarray        # [2] sigma^2 of near and next terms
    target_variance: float
    forward: np.ndarray         # [2]
    k0: np.ndarray              # [2]
    expiry: np.ndarray          # [2] years
    status: tuple               # (CboeStatus near, CboeStatus next)
    strikes: "object"           # pandas DataFrame: term, strike, option, mid, delta_k, contribution
    excluded: tuple = (0, 0)    # quotes the screen left out (near, next)

    @property
    def near(self):
        """Strikes used in the near term."""
        return self.strikes[self.strikes["term"] == "near"].reset_index(drop=True)

    @property
    def next(self):
        """Strikes used in the next term."""
        return self.strikes[self.strikes["term"] == "next"].reset_index(drop=True)


def _pack_terms(tables, width):
    """Stack quote tables into [terms, width] arrays sorted by strike, padded with NaN at the
    end (mask False): the layout ``presorted=True`` expects."""
    arrays = {name: np.full((len(tables), width), np.nan) for name in QUOTE_COLUMNS}
    mask = np.zeros((len(tables), width), bool)
    for row, table in enumerate(tables):
        missing = [c for c in QUOTE_COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"quote table lacks columns {missing}; needs {QUOTE_COLUMNS}")
        table = table.sort_values("strike", kind="stable")
        for name in QUOTE_COLUMNS:
            arrays[name][row, :len(table)] = np.asarray(table[name], float)
        mask[row, :len(table)] = True
    return [arrays[name] for name in QUOTE_COLUMNS], mask


def _strip_table(terms: CboeTerm):
    import pandas as pd

    frames = []
    for row, name in enumerate(("near", "next")):
        used = np.asarray(terms.used[row])
        strike = np.asarray(terms.strike[row])[used]
        k0 = float(terms.k0[row])
        option = np.where(strike < k0, "put", np.where(strike > k0, "call", "put/call average"))
        frames.append(pd.DataFrame({
            "term": name, "strike": strike, "option": option,
            "mid": np.asarray(terms.mid[row])[used],
            "delta_k": np.asarray(terms.delta_k[row])[used],
            "contribution": np.asarray(terms.contribution[row])[used]}))
    return pd.concat(frames, ignore_index=True)


def cboe_vix(near, next, *, near_minutes, next_minutes, near_rate, next_rate,
             target_minutes=MINUTES_30_DAYS, screen: bool = True,
             _rules: _Rules = CBOE_RULES) -> CboeVix:
    """The Cboe VIX of one underlying from near- and next-term quote tables.

    Args:
      near, next: pandas DataFrames with columns strike, call_bid, call_ask, put_bid, put_ask.
      near_minutes, next_minutes: minutes to each expiry (N_T1, N_T2).
      near_rate, next_rate: continuously compounded risk-free rates (0.00031664 for 0.031664 %).
      target_minutes: index tenor in minutes (43,200 for 30 days).

    Returns a :class:`CboeVix` with ``.index``, ``.variance`` (sigma^2 per term), ``.forward``,
    ``.k0`` and ``.strikes`` (each used strike with its mid, delta-K and contribution).
    Computed in float64 when x64 is enabled, otherwise float32.
    """
    (strike, call_bid, call_ask, put_bid, put_ask), mask = _pack_terms(
        [near, next], max(len(near), len(next)))
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    as_array = functools.partial(jnp.asarray, dtype=dtype)
    batch = cboe_vix_batch(
        *map(as_array, (strike, call_bid, call_ask, put_bid, put_ask)), mask,
        as_array([near_minutes, next_minutes]), as_array([near_rate, next_rate]),
        target_minutes=as_array(target_minutes), presorted=True, screen=screen, _rules=_rules)
    return CboeVix(
        index=float(batch.index), variance=np.asarray(batch.variance),
        target_variance=float(batch.target_variance), forward=np.asarray(batch.forward),
        k0=np.asarray(batch.k0), expiry=np.asarray(batch.terms.expiry),
        status=tuple(CboeStatus(int(s)) for s in np.asarray(batch.terms.status)),
        strikes=_strip_table(batch.terms),
        excluded=tuple(int(e) for e in np.asarray(batch.terms.excluded)))
