"""jaxvol.divergence: schema checks, fair-IV conventions, hysteresis, first passage, and the
synthetic session's planted events recovered by the pipeline (recall, precision, kinds,
half-close times against the planted lambda), plus the report."""

import math

import jax
import numpy as np
import pandas as pd
import pytest

from jaxvol import divergence
from jaxvol.divergence.command import write_report


@pytest.fixture(scope="module")
def session():
    table, truth = divergence.synthetic_session(0)
    return table, truth, divergence.analyse(table, progress=lambda m: None)


def _match(events, planted, tol=3.0):
    hit = [bool(np.any((events.series == n) & (np.abs(events.start - t) < tol)))
           for n, t, _ in planted]
    kind = [next((k for n, t, k in planted if n == r.series and abs(r.start - t) < tol), None)
            for r in events.itertuples()]
    return np.array(hit), kind


def test_planted_events_found_with_their_half_close_times(session):
    """Seed 0: 32 planted events (8 stationary sd kicks) over 2 x 1200 s. Recall and precision
    >= 0.9 (a start within 3 s of the planted time; measured 0.97 / 0.97), the pattern label
    right for >= 90% of the matched events, and the median time to half-close of the calm-book
    events (IV lag / IV leads) within 30% of ln 2 / lam = 3 s (about 20 events, each
    half-close spread ~40% by the OU noise and the tick sampling, so the median's SE is ~10%);
    the blow-outs, planted 3x slower, close slower."""
    table, truth, out = session
    ev = out["events"]
    planted = [(e["instrument"], e["time"], e["kind"]) for e in truth.events]
    hit, kinds = _match(ev, planted)
    matched = np.array([k is not None for k in kinds])
    recall, precision = hit.mean(), matched.mean()
    right = np.mean([k == r for k, r in zip(kinds, ev.kind) if k is not None])
    calm = ev[matched & ev.kind.isin(["iv_lag", "iv_leads"]).to_numpy()]
    wide = ev[matched & (ev.kind == "spread_blowout").to_numpy()]
    planted_half = math.log(2) / truth.lam
    print(f"recall {recall:.3f} precision {precision:.3f} kinds {right:.3f} half-close "
          f"{np.median(calm.half_close):.2f} s (planted {planted_half:.2f}), blow-outs "
          f"{np.median(wide.half_close):.2f} s")
    assert recall >= 0.9 and precision >= 0.9 and right >= 0.9
    assert abs(np.median(calm.half_close) / planted_half - 1) < 0.3
    assert np.median(wide.half_close) > np.median(calm.half_close)
    # the OU fit on the quiet ticks recovers the planted half-life within 50% per instrument
    # (measured 3.04 s and 1.72 s: the gaps that bridge a masked event and the leak of the
    # estimated spot-vol beta's error into D both read as faster reversion)
    exact = out["fits"][out["fits"].fit == "exact"]
    assert np.all(np.abs(exact.half_life / planted_half - 1) < 0.5)
    # the covariate fit says reversion slows when spreads widen (planted: 3x slower)
    cov = out["fits"][out["fits"].fit == "spread_covariate"]
    assert np.all(cov.spread_coefficient < 0)


def test_report_and_tables(session, tmp_path):
    """The report is written with its three plots inline, and the tables have their columns."""
    table, truth, out = session
    write_report(out, tmp_path / "report.html", truth=truth)
    text = (tmp_path / "report.html").read_text()
    assert text.count("data:image/png;base64") == 4
    # spot leads the IV in the planted IV-lag events: the contrast peaks at lag >= 0
    c = out["contrast"]
    for name in c.instrument.unique():
        r = c[c.instrument == name]
        assert r.lag.iloc[int(np.argmax(np.abs(r.correlation)))] >= 0.0
    assert list(out["events"].columns) == list(divergence.EVENT_COLUMNS)
    assert {"d_sticky_strike", "d_sticky_delta", "d_ssr", "z", "state"} <= set(out["series"])
    assert set(out["fits"]["lam_status_name"]) <= {"CONVERGED", "AT_BOUND", "MAX_ITERATIONS"}


def test_schema_errors_and_flags():
    """Missing / mistyped columns and unknown kinds raise naming the column; duplicate and
    decreasing timestamps are flagged (1, 2) and every row is kept."""
    base = pd.DataFrame(dict(instrument="X", kind="spot", time=[0.0, 1.0, 1.0, 0.5, 2.0],
                             bid=1.0, ask=1.1))
    with pytest.raises(ValueError, match="missing column.*ask"):
        divergence.validate(base.drop(columns="ask"))
    with pytest.raises(ValueError, match="'bid' must be numeric"):
        divergence.validate(base.assign(bid="x"))
    with pytest.raises(ValueError, match="unknown value.*'quote'"):
        divergence.validate(base.assign(kind="quote"))
    with pytest.raises(ValueError, match="'time' must be float seconds or datetime64"):
        divergence.validate(base.assign(time="noon"))
    out = divergence.validate(base)
    assert len(out) == 5 and list(out.time_flag) == [0, 0, 1, 2, 0]
    stamps = pd.to_datetime("2026-01-02 10:00:00") + pd.to_timedelta(base.time, unit="s")
    np.testing.assert_allclose(divergence.validate(base.assign(time=stamps)).time, base.time)


def test_fair_iv_conventions():
    """Closed forms on a two-tick example: spot up 1% with the ATM IV unchanged. Sticky delta:
    D = 0 (the smile moved with spot); sticky strike with skew -0.5: the fair ATM vol fell by
    0.5 ln 1.01, so D = +0.5 ln 1.01; SSR with beta = -0.75: D = 0.75 ln 1.01. Exact to 1e-15."""
    t_spot, spot = np.array([0.0, 10.0]), np.array([100.0, 101.0])
    t_iv, iv = np.array([1.0, 11.0]), np.array([0.2, 0.2])
    res = divergence.residuals(t_spot, spot, t_iv, iv, skew=-0.5, beta=-0.75)
    g = math.log(1.01)
    np.testing.assert_allclose(res["sticky_delta"].d, [0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(res["sticky_strike"].d, [0.0, 0.5 * g], atol=1e-15)
    np.testing.assert_allclose(res["ssr"].d, [0.0, 0.75 * g], atol=1e-15)
    early = divergence.residual(t_spot + 5.0, spot, t_iv, iv, model="sticky_delta")
    assert int(early.status[0]) == divergence.DivergenceStatus.NO_SPOT_BEFORE
    assert np.isnan(float(early.d[0]))
    with pytest.raises(ValueError, match="needs the ATM skew"):
        divergence.residual(t_spot, spot, t_iv, iv, model="sticky_strike")


def test_spot_vol_beta_recovers_a_lagged_response():
    """IV = -0.6 ln S sampled with a 4 s refresh lag on asynchronous Poisson ticks: the Dimson
    beta (5 s grid, 3 lags) recovers -0.6 within 0.05 (no IV noise: the error is the
    previous-tick sampling), where a same-interval regression would read the lag as ~-0.3."""
    rng = np.random.default_rng(2)
    clock = np.arange(0.0, 3000.0, 0.1)
    ln_s = np.cumsum(3e-4 * rng.standard_normal(clock.size))
    t_spot = np.sort(rng.uniform(0, 3000, 9000))
    t_iv = np.sort(rng.uniform(5, 3000, 6000))
    spot = np.exp(np.interp(t_spot, clock, ln_s))
    iv = 0.2 - 0.6 * np.interp(t_iv - 4.0, clock, ln_s)
    beta = divergence.spot_vol_beta(t_spot, spot, t_iv, iv)
    assert abs(beta + 0.6) < 0.05


def test_hysteresis_and_first_passage():
    """Hysteresis on a hand-made z path (enter 3, exit 1): opens at 3.2, holds through 2.0,
    closes at 0.5; a sign flip closes a positive event. The OU first passage from z = 8 to 4
    has a median just below ln 2 / lam (the deterministic crossing): the noise (1/8 of the
    distance) makes a path touch the level first a little early; 2,000 paths give the median a
    ~1% SE, so 0.85-1.0 of ln 2 / lam."""
    z = np.array([0.0, 3.2, 2.0, 1.5, 0.5, -3.5, -2.0, 3.5, -1.2])
    state = np.asarray(divergence.hysteresis(z, enter=3.0, exit=1.0))
    assert list(state) == [0, 1, 1, 1, 0, -1, -1, 0, 0]
    median, _ = divergence.half_close_prediction(jax.random.key(0), lam=0.25, peak_z=8.0,
                                                 paths=2000, dt=0.02)
    assert 0.85 < median / (math.log(2) / 0.25) < 1.0
    with pytest.raises(ValueError, match="exit"):
        divergence.hysteresis(z, enter=1.0, exit=2.0)
