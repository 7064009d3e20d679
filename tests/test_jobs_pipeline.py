"""The nightly job end to end: outputs aligned with the input, resume after a crash, one device
vs eight, two processes + merge, warm start, failures recorded instead of fatal.

Every comparison between runs is exact (``assert_frame_equal`` with ``check_exact=True``): the
job is deterministic by construction (per-underlying random streams, per-lane fits on fixed
per-device block shapes, one executable per fit run by every device), so any difference at all
is a defect.

Compile time dominates these tests, so every run shares its shapes: 2 underlyings per chunk x 4
expiries x 180 strikes puts every slice in the same fit bucket (192 quotes) as the SPX board's
two expiries, one lane per device per call, and Heston/SSVI slots padded alike; a stage is then
compiled once for all chunks, the SPX chunk and every run of the module.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from jaxvol import batching, synthetic
from jaxvol.jobs import (JobError, SimulatedCrash, default_config, merge, merge_overrides,
                         run_nightly)
from jaxvol.jobs import pipeline, sharding, stages
from jaxvol.jobs.sharding import local_mesh, shard_leading

TABLES = ("rows", "slices", "underlyings", "indices", "arbitrage")

# A small job for the run-to-run comparisons: 6 underlyings in 3 chunks of 2, 4 expiries x 180
# strikes, one slice and one underlying per device per call, the per-slice stages and indices
# (the per-underlying Heston and SSVI stages, whose compile dominates on this machine, run in the
# end-to-end test `full` instead).
N, E, S = 6, 4, 180
SMALL = {
    "job.chunk_underlyings": 2, "job.fail_fast": True,
    "job.slice_block": 1, "job.underlying_block": 1,
    "market.underlyings": N, "market.expiries": E, "market.strikes": S,
    "market.include_spx": False, "market.heston_share": 0.5,
    "svi.max_iterations": 30, "sabr.max_iterations": 30,
    "heston.enabled": False, "ssvi.enabled": False,
    "indices.term_days": [9, 30, 60], "report.enabled": False,
    # the plain SVI fit: the run-to-run comparisons hold for any mode, and the default repair's
    # penalised refit compiles once more per program; the `full` fixture runs the default
    "svi.no_arbitrage": "off",
}


def small_config(**extra):
    return merge_overrides(default_config(), {**SMALL, **extra})


def read_outputs(out):
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in TABLES
            if (out / f"{name}.parquet").exists()}


def assert_same_outputs(left, right):
    a, b = read_outputs(left), read_outputs(right)
    assert set(a) == set(b)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted single-process run on all (8) local devices."""
    out = tmp_path_factory.mktemp("reference")
    run_nightly(small_config(), out=out)
    return out


def test_every_input_row_is_in_the_output(reference):
    rows = pd.read_parquet(reference / "rows.parquet")
    market = synthetic.market(N, E, S, heston_share=0.5, include_defects=True)
    assert len(rows) == len(market) == N * E * S * 2
    np.testing.assert_array_equal(rows["row_id"], np.arange(len(market)))
    for column in ("underlying", "option_type", "strike", "bid", "ask", "expiry"):
        np.testing.assert_array_equal(rows[column], market[column])
    for column in ("quality_flags", "forward", "iv_mid", "iv_svi"):
        assert column in rows
    from jaxvol.chains import Flag
    for defect, flag in ((synthetic.Defect.CROSSED, Flag.CROSSED),
                         (synthetic.Defect.ZERO_BID, Flag.ZERO_BID)):
        injected = market["defect"].to_numpy() == defect
        assert injected.any()
        assert np.all(rows["quality_flags"].to_numpy()[injected] & int(flag))


def test_tables_and_run_log(reference):
    out = read_outputs(reference)
    slices = out["slices"]
    assert len(slices) == N * E  # one row per (underlying, expiry), fitted or not
    for column in ("svi_a", "svi_status", "svi_rmse", "sabr_alpha", "sabr_status", "n_quotes"):
        assert column in slices
    assert "cboe_30d" in out["indices"] and "vxj_term_30d" in out["indices"]
    summary = json.loads((reference / "run.json").read_text())
    statuses = {name: info["status"] for name, info in summary["stages"].items()}
    assert not any("failed" in s for s in statuses.values()), statuses
    assert (reference / "config.toml").exists() and (reference / "run.log").exists()


def test_resume_after_crash_gives_identical_outputs(reference, tmp_path, monkeypatch):
    out = tmp_path / "crashed"
    monkeypatch.setenv(pipeline.CRASH_ENV, "1")
    with pytest.raises(SimulatedCrash):
        run_nightly(small_config(), out=out)
    done = sorted(p.name for p in (out / "chunks").iterdir())
    assert done == ["chunk-00000", "chunk-00001"]  # chunk 2 never ran
    monkeypatch.delenv(pipeline.CRASH_ENV)
    calls = []
    original = pipeline._process_chunk
    monkeypatch.setattr(pipeline, "_process_chunk",
                        lambda index, *a: calls.append(index) or original(index, *a))
    run_nightly(small_config(), out=out)  # same arguments: resumes
    assert calls == [2]
    assert_same_outputs(out, reference)


def test_one_device_matches_eight(reference, tmp_path):
    """Bitwise: every table, every column. A DeviceMap runs one executable on every device (as
    replicas), so the lanes that the eight-device reference ran on devices 1-7 must come out
    exactly as they do on the only device here. (With jit(shard_map), XLA optimised the program
    partitioned over eight devices differently from the one-device program and
    Levenberg-Marquardt turned that into visible differences: this test failed on it.)"""
    assert local_mesh(0).size == 8
    before = dict(sharding.COUNTS)
    out = tmp_path / "one-device"
    run_nightly(small_config(**{"job.devices": 1}), out=out)
    assert_same_outputs(out, reference)
    # the same bytes as the reference's programs, loaded as one replica: nothing compiled
    assert sharding.COUNTS["loaded"] - before.get("loaded", 0) >= 3  # svi, sabr, indices
    assert sharding.COUNTS["compiled"] == before.get("compiled", 0)
    assert sharding.COUNTS["fallback"] == before.get("fallback", 0)


def test_batches_are_sharded_over_all_devices():
    mesh = local_mesh(0)
    (placed,) = shard_leading(mesh, np.zeros((16, 3)))
    assert len(placed.sharding.device_set) == 8
    assert placed.addressable_shards[0].data.shape == (2, 3)
    # A DeviceMap compiles once for the local block, runs that executable on all 8 devices
    # (8 replicas) and returns arrays sharded like the inputs
    import jax.numpy as jnp
    before = dict(sharding.COUNTS)
    mapped = sharding.DeviceMap(lambda x, y: {"z": jnp.cumsum(jnp.sin(x) * y, axis=1)})
    x, y = np.random.default_rng(0).normal(size=(2, 16, 5))
    out = mapped(mesh, x, y)["z"]
    assert out.sharding == placed.sharding and out.shape == (16, 5)
    assert [s.device for s in out.addressable_shards] == list(mesh.devices.flat)
    compiled = sharding.COUNTS["compiled"]
    assert compiled - before.get("compiled", 0) <= 1  # none if the payload store had it
    assert sharding.COUNTS["loaded"] - before.get("loaded", 0) == 1
    one = local_mesh(1)
    lanes = [np.asarray(mapped(one, x[i:i + 2], y[i:i + 2])["z"]) for i in range(0, 16, 2)]
    np.testing.assert_array_equal(np.asarray(out), np.concatenate(lanes))
    assert sharding.COUNTS["compiled"] == compiled  # the same bytes, loaded as one replica
    assert sharding.COUNTS["loaded"] - before.get("loaded", 0) == 2
    assert sharding.COUNTS["fallback"] == before.get("fallback", 0)


def test_device_map_falls_back_to_per_device_compiles(monkeypatch):
    # Where the executable cannot be loaded as replicas (another JAX), each device gets its
    # own compilation of the same module: same results, a warning, counted as fallbacks
    import jax.numpy as jnp

    def refuse(*args):
        raise RuntimeError("no replicas here")

    monkeypatch.setattr(batching, "_load", refuse)
    before = sharding.COUNTS["fallback"]
    mapped = sharding.DeviceMap(lambda x: (jnp.exp(x) * x).sum(axis=1))
    x = np.random.default_rng(1).normal(size=(16, 7))
    out = mapped(local_mesh(0), x)
    assert sharding.COUNTS["fallback"] - before == 8
    assert [s.device for s in out.addressable_shards] == list(local_mesh(0).devices.flat)
    one = [np.asarray(mapped(local_mesh(1), x[i:i + 2])) for i in range(0, 16, 2)]
    np.testing.assert_array_equal(np.asarray(out), np.concatenate(one))


def _process(out, config_path, process_id):
    import jax
    # The worker's own compile cache: the subprocesses run one at a time while this process
    # waits, and reuse the reference run's compilations.
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAXVOL_CACHE_DIR=jax.config.jax_compilation_cache_dir)
    return subprocess.Popen(
        [sys.executable, "-m", "jaxvol.jobs", "nightly", "--config", str(config_path),
         "--out", str(out), "--num-processes", "2", "--process-id", str(process_id)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_processes_and_merge(reference, tmp_path):
    from jaxvol.jobs.config import dump_toml
    config_path = tmp_path / "small.toml"
    config_path.write_text(dump_toml(small_config()))
    out = tmp_path / "two"
    first = _process(out, config_path, 0)
    first_log = first.communicate()[0]
    assert first.returncode == 0, first_log
    with pytest.raises(JobError, match=r"chunks \[1\] are not finished"):
        merge(out)  # process 1 has not run yet
    second = _process(out, config_path, 1)
    second_log = second.communicate()[0]
    assert second.returncode == 0, second_log
    owned = [json.loads(p.read_text())["chunks"] for p in sorted((out / "partitions").iterdir())]
    assert owned == [[0, 2], [1]]
    merge(out)
    assert_same_outputs(out, reference)


def test_other_settings_refuse_the_same_folder(reference):
    with pytest.raises(JobError, match="other inputs or settings"):
        run_nightly(small_config(**{"svi.max_iterations": 31}), out=reference)


def test_warm_start_from_yesterday(reference, tmp_path):
    cold = tmp_path / "cold"
    warm = tmp_path / "warm"
    run_nightly(small_config(**{"market.day": 1}), out=cold)
    run_nightly(small_config(**{"market.day": 1}), out=warm, warm_start=str(reference))
    a, b = pd.read_parquet(cold / "slices.parquet"), pd.read_parquet(warm / "slices.parquet")
    fitted = a["n_quotes"] >= 5
    # SABR from yesterday's optimum needs fewer iterations on a market that moved a little
    # (measured 10.9 vs 12.7 on average)
    assert b["sabr_iterations"][fitted].mean() < a["sabr_iterations"][fitted].mean()
    # and reaches fits as good: median RMSE within 1% of the cold multi-start fit's (measured
    # equal to 1e-11; a worse local optimum would show up here)
    assert b["sabr_rmse"][fitted].median() <= 1.01 * a["sabr_rmse"][fitted].median()
    # SVI always starts from its own quasi-explicit guess (better than yesterday's): identical
    # fits wherever the fit ran (failed slices take yesterday's parameters on a warm night)
    from jaxvol.calibrate import NO_SOLUTION
    ran = ~a["svi_status"].isin([int(s) for s in NO_SOLUTION]).to_numpy()
    assert ran.sum() >= 12
    np.testing.assert_array_equal(a["svi_rmse"][ran], b["svi_rmse"][ran])


def test_failed_slice_keeps_yesterdays_parameters(reference, tmp_path):
    market = synthetic.market(N, E, S, heston_share=0.5, day=1)
    bad = (market["underlying"] == "SYN00003") & (market["expiry"] == market["expiry"].max())
    market.loc[bad, ["bid", "ask"]] = np.nan  # the whole slice is garbage tonight
    path = tmp_path / "chains.parquet"
    market.to_parquet(path)
    out = tmp_path / "file-input"
    run_nightly(small_config(), out=out, input_path=str(path), warm_start=str(reference))
    slices = pd.read_parquet(out / "slices.parquet")
    yesterday = pd.read_parquet(reference / "slices.parquet")
    row = slices[(slices["underlying"] == "SYN00003")
                 & (slices["expiry"] == market["expiry"].max())].iloc[0]
    old = yesterday[(yesterday["underlying"] == "SYN00003")
                    & (yesterday["expiry"] == market["expiry"].max())].iloc[0]
    assert row["svi_status"] != 0 and row["svi_previous"]
    np.testing.assert_array_equal(row[stages.SVI_PARAMS].to_numpy(float),
                                  old[stages.SVI_PARAMS].to_numpy(float))
    rows = pd.read_parquet(out / "rows.parquet")
    assert len(rows) == len(market) and rows["quality_flags"][bad.to_numpy()].gt(0).all()


def test_stage_errors_are_recorded_not_fatal(tmp_path, monkeypatch):
    def broken(chunk, env):
        raise ZeroDivisionError("boom")

    monkeypatch.setitem(stages.STAGES, "sabr", broken)
    monkeypatch.setitem(stages.STAGES, "ssvi", lambda c, e: (_ for _ in ()).throw(
        stages.StageUnavailable("jaxvol.ssvi is not available")))
    out = tmp_path / "broken"
    config = small_config(**{"job.fail_fast": False, "market.underlyings": 2,
                             "svi.enabled": False, "indices.enabled": False})
    summary = run_nightly(config, out=out)
    assert summary["stages"]["sabr"]["status"] == {"failed": 1}
    assert "ZeroDivisionError: boom" in summary["stages"]["sabr"]["messages"][0]
    assert summary["stages"]["ssvi"]["status"] == {"skipped": 1}
    assert summary["stages"]["svi"]["status"] == {"skipped": 1}
    assert len(pd.read_parquet(out / "rows.parquet")) == 2 * E * S * 2


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """Every stage: the small market plus the SPX board, Heston, SSVI, FX quotes and the report
    (configs/quick.toml's stages on the shapes of the other tests; on one device, so that the
    one-device path runs every stage: the eight-device path is the other tests')."""
    out = tmp_path_factory.mktemp("full")
    quotes = out / "fx_quotes.csv"
    synthetic.fx_quotes(2).to_csv(quotes, index=False)
    config = small_config(**{
        "job.devices": 1, "market.include_spx": True, "heston.enabled": True,
        "ssvi.enabled": True, "heston.strikes_per_expiry": 4, "heston.max_iterations": 10,
        "report.enabled": True, "report.sample_slices": 3, "report.worst_slices": 3,
        "svi.no_arbitrage": default_config()["svi"]["no_arbitrage"], "fx.quotes": str(quotes)})
    summary = run_nightly(config, out=out / "run")
    return out / "run", summary


def test_every_stage_end_to_end(full):
    out, summary = full
    statuses = {name: info["status"] for name, info in summary["stages"].items()}
    assert all(set(s) == {"ok"} for s in statuses.values()), statuses
    tables = read_outputs(out)
    assert {"heston_v0", "heston_status", "ssvi_rho", "ssvi_status"} <= set(
        tables["underlyings"].columns)
    assert len(tables["underlyings"]) == N + 1  # synthetic + SPX
    fx = pd.read_parquet(out / "fx.parquet")
    assert len(fx) == 10 and (fx["status"] == 0).all()
    html = (out / "report.html").read_text()
    for section in ("Fitted smiles: a sample", "worst fits", "SVI parameters",
                    "Heston parameters", "Volatility indices", "Static arbitrage",
                    "Quality flags", "Stages", "Resolved configuration"):
        assert section in html
    assert html.count("data:image/png;base64,") >= 8


def _one_sided_rows(rows: pd.DataFrame):
    """(no bid, no ask) masks of the rows the SVI fit must take as bounds, written from the
    rule (independently of jobs/slices.py): out of the money, no excluding flag but those a
    missing side implies, the other side's implied vol finite and positive, and a strike beyond
    the slice's two-sided OTM quotes (a one-sided quote among them is a defect)."""
    from jaxvol.chains import Flag
    from jaxvol.chains.flags import DEFAULT_EXCLUDE
    flags = rows["quality_flags"].to_numpy().astype(np.int64)
    other = int(DEFAULT_EXCLUDE) & ~int(Flag.ZERO_BID | Flag.IV_UNSOLVED | Flag.NON_FINITE)
    call = rows["option_type"].astype(str).str.upper().str.startswith("C").to_numpy()
    otm = np.where(call, rows["strike"] >= rows["forward"], rows["strike"] < rows["forward"])
    bid, ask = rows["bid"].to_numpy(), rows["ask"].to_numpy()
    iv_bid, iv_ask = rows["iv_bid"].to_numpy(), rows["iv_ask"].to_numpy()
    base = otm & ((flags & other) == 0) & np.isfinite(rows["strike"].to_numpy())
    no_bid = base & ((bid == 0) | np.isnan(bid)) & (ask > 0) & np.isfinite(iv_ask) & (iv_ask > 0)
    no_ask = base & np.isnan(ask) & (bid > 0) & np.isfinite(iv_bid) & (iv_bid > 0)
    two_sided = rows[otm & rows["usable"].to_numpy(bool) & np.isfinite(rows["iv_mid"])]
    span = two_sided.groupby(["underlying", "expiry"])["strike"].agg(["min", "max"])
    edges = span.reindex(pd.MultiIndex.from_frame(rows[["underlying", "expiry"]]))
    beyond = ((rows["strike"].to_numpy() < edges["min"].to_numpy())
              | (rows["strike"].to_numpy() > edges["max"].to_numpy()))
    return no_bid & beyond, no_ask & beyond


def _assert_bounds_counted_and_kept(rows, slices, min_upper, min_lower):
    """Every one-sided row is counted in its slice's ``n_one_sided``, and no CONVERGED smile
    lies more than ONE_SIDED_TOLERANCE (1% in total variance) above an ask without a bid or
    below a bid without an ask; returns the bounded rows of the CONVERGED slices."""
    from jaxvol.smile.svi import ONE_SIDED_TOLERANCE
    no_bid, no_ask = _one_sided_rows(rows)
    per_slice = rows[no_bid | no_ask].groupby(["underlying", "expiry"]).size()
    counted = slices.set_index(["underlying", "expiry"])["n_one_sided"]
    assert counted.sum() == per_slice.sum()
    assert (counted.reindex(per_slice.index) == per_slice).all()
    status = slices[["underlying", "expiry", "svi_status_name"]]
    out = {}
    for name, side, mask, least in (("upper", "iv_ask", no_bid, min_upper),
                                    ("lower", "iv_bid", no_ask, min_lower)):
        bounded = rows[mask].merge(status, on=["underlying", "expiry"])
        converged = bounded[bounded["svi_status_name"] == "CONVERGED"]
        assert mask.sum() >= least, (name, mask.sum())
        assert least == 0 or len(converged) >= 10, (name, len(converged))
        ratio = (converged["iv_svi"] / converged[side]) ** 2
        if name == "upper":
            assert (ratio <= 1.0 + ONE_SIDED_TOLERANCE + 1e-12).all(), ratio.max()
        else:
            assert (ratio >= 1.0 - ONE_SIDED_TOLERANCE - 1e-12).all(), ratio.min()
        out[name] = converged
    return out


def test_zero_bid_wings_are_upper_bounds_of_the_svi_smiles(full):
    """Issue 20, "one-sided quotes as bounds": every zero-bid OTM quote with an ask implied vol
    (and no other excluding flag) beyond the slice's two-sided quotes is counted in its slice's
    ``n_one_sided`` and reaches the SVI
    fit as an upper bound; no CONVERGED smile lies more than 1% (in total variance) above such
    an ask (the fit's ONE_SIDED_TOLERANCE). Before, zero-bid rows were dropped from the fits:
    nothing kept a wing below the asks of the strikes beyond the two-sided quotes."""
    out, _ = full
    rows = pd.read_parquet(out / "rows.parquet")
    slices = pd.read_parquet(out / "slices.parquet")
    _assert_bounds_counted_and_kept(rows, slices, min_upper=20, min_lower=0)


def test_quotes_with_one_side_missing_bound_the_svi_smiles_from_both_sides(tmp_path):
    """Issue 20, "uses every quote that carries information": a user's chain whose two
    outermost two-sided OTM calls of every slice lost their ask (bid-only: a lower bound) and
    whose two outermost OTM puts lost their bid (NaN, not zero: an upper bound, like the
    zero-bid wings further out). Every such row is counted in ``n_one_sided`` and no CONVERGED
    smile lies more than 1% below such a bid or above such an ask. Fails before the change:
    only zero bids were packed, so the bid-only and NaN-bid rows were dropped uncounted (and
    nothing kept the right wing above the bids). The SVI program is the reference run's
    (same shapes): the test costs one small run."""
    # SVI-family smiles only: on this small market without the SSVI prior, most Heston slices
    # end AT_BOUND or DEGENERATE, which leaves too few CONVERGED ones to check (measured: 9 of
    # 24 CONVERGED here, 2 OUTSIDE_QUOTES: smiles the repair could not lift above the bids)
    market = synthetic.market(N, E, S, heston_share=0.0)
    call = market["option_type"].eq("C")
    keys = ["underlying", "expiry"]
    quoted = market[(market["bid"] > 0) & (market["ask"] > market["bid"])]  # not the bad rows
    calls = quoted[call[quoted.index]].sort_values(keys + ["strike"]).groupby(keys).tail(2)
    puts = quoted[~call[quoted.index]].sort_values(keys + ["strike"]).groupby(keys).head(2)
    market.loc[calls.index, "ask"] = np.nan
    market.loc[puts.index, "bid"] = np.nan
    path = tmp_path / "one-sided.parquet"
    market.to_parquet(path)
    out = tmp_path / "out"
    run_nightly(small_config(**{"sabr.enabled": False, "indices.enabled": False,
                                "svi.no_arbitrage": default_config()["svi"]["no_arbitrage"]}),
                out=out,
                input_path=str(path))
    rows = pd.read_parquet(out / "rows.parquet")
    slices = pd.read_parquet(out / "slices.parquet")
    assert len(rows) == len(market)
    n = len(slices)
    _assert_bounds_counted_and_kept(rows, slices, min_upper=2 * n, min_lower=2 * n)
    # the rows this change adds all reach the fit: every bid-only call, every NaN-bid put
    no_bid, no_ask = _one_sided_rows(rows)
    assert no_ask.sum() == len(calls), (no_ask.sum(), len(calls))
    assert rows.loc[no_bid, "row_id"].isin(puts.index).sum() == len(puts)


def _html_table(page: str, table_id: str) -> list[list[str]]:
    """The body rows of the report's table ``table_id`` as lists of cell texts."""
    match = re.search(rf'<table[^>]*id="{table_id}"[^>]*>(.*?)</table>', page, re.S)
    assert match, f"no table {table_id} in the report"
    body = match.group(1).split("<tbody>")[-1]
    return [re.findall(r"<td>(.*?)</td>", row, re.S)
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def test_report_of_every_stage_shows_the_four_models_and_the_failures(full):
    """The report (issue 20): SSVI, SABR and Heston curves beside SVI on the sample smiles
    (the figure's alt text lists the curves drawn), ATM term structures, fit quality per
    status, IV failures per status, arbitrage offenders, and a failed-fits table that lists
    every non-CONVERGED status of every model with a reason (the largest-RMSE SVI slice at a
    bound or degenerate among them). Before, the report drew SVI only and listed the first 40
    failures per model (one status could hide the others)."""
    out, _ = full
    page = (out / "report.html").read_text()
    for section in ("Fit quality by status", "Failed, at-bound and degenerate fits",
                    "Implied-vol failures by status", "Worst static-arbitrage offenders",
                    "ATM vol term structures"):
        assert section in page, section
    smiles = [a for a in re.findall(r'alt="([^"]*)"', page)
              if a.startswith("bid-ask, mids and the")]
    assert len(smiles) == 2  # the sample and the worst fits
    for alt in smiles:
        assert "Heston, SABR, SSVI, SVI curves" in alt, alt
    assert "ATM vol against expiry" in page
    tables = read_outputs(out)
    failed = _html_table(page, "failed-fits")
    listed = {(row[0], row[1]) for row in failed}  # model, status, underlying, expiry, ...
    for table, model in (("slices", "svi"), ("slices", "sabr"), ("underlyings", "ssvi"),
                         ("underlyings", "heston")):
        statuses = set(tables[table][f"{model}_status_name"]) - {"CONVERGED"}
        assert {(model, s) for s in statuses} <= listed, (model, statuses)
    assert all(row[-1] for row in failed)  # every listed fit carries a reason
    slices = tables["slices"]
    bounded = slices[slices["svi_status_name"].isin(["AT_BOUND", "DEGENERATE"])]
    assert len(bounded)  # the small market has some (its short expiries pin rho at -1)
    worst = bounded.sort_values("svi_rmse", ascending=False).iloc[0]
    assert ["svi", worst["svi_status_name"], worst["underlying"],
            f"{worst['expiry']:.4g}"] in [row[:4] for row in failed], worst
    iv = _html_table(page, "iv-status")
    assert any(row[0].startswith("OK (0)") for row in iv)


def test_spx_board_gives_the_published_vix(full):
    out, _ = full
    spx = pd.read_parquet(out / "indices.parquet").set_index("underlying").loc["SPX"]
    # Cboe's worked example: sqrt of the 30-day variance 0.13927842 (published to 8 decimals:
    # +-5e-9, i.e. +-5e-7 index points; 1e-6 leaves room for float rounding); published 13.93
    assert abs(spx["cboe_30d"] - 13.927842) < 1e-6
    assert round(spx["cboe_30d"], 2) == 13.93
    assert spx["cboe_status"] == 0


# ------------------------------------------------------------------ the job as a thin client
def _spy(monkeypatch, module, name, calls):
    """Wrap ``module.name`` so that each trace of it records its keyword arguments."""
    original = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append((f"{module.__name__}.{name}", kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)


def test_cold_and_warm_nights_fit_the_same_models(tmp_path, monkeypatch):
    """Both nights call the domains' fits (sabr.fit, heston.calibrate) with the same settings,
    the warm one with ``initial=``; so the same model (residuals, bounds) is fitted, and where
    both nights converge they find the same optimum. (Before, the warm night ran the job's own
    SABR residual with other bounds, and Heston never went through heston.calibrate.)"""
    import jaxvol.heston
    import jaxvol.smile.sabr
    import jaxvol.smile.svi
    from jaxvol import batching
    from jaxvol.calibrate import FitStatus

    calls = []
    _spy(monkeypatch, jaxvol.smile.sabr, "fit", calls)
    _spy(monkeypatch, jaxvol.heston, "calibrate", calls)
    _spy(monkeypatch, jaxvol.smile.svi, "fit", calls)
    monkeypatch.setattr(batching, "_PROGRAMS", {})  # trace afresh, so the spies see the fits
    settings = {"market.day": 1, "heston.enabled": True, "heston.strikes_per_expiry": 4,
                "heston.max_iterations": 10, "warm_start.max_iterations": 10,
                "job.devices": 1}
    yesterday = tmp_path / "yesterday"
    run_nightly(small_config(**{**settings, "market.day": 0}), out=yesterday)  # traces: cold
    cold, warm = tmp_path / "cold", tmp_path / "warm"
    run_nightly(small_config(**settings), out=cold)
    # the warm night also takes the live warm SVI path (svi.warm_start): svi.fit(initial=...)
    run_nightly(small_config(**settings, **{"svi.warm_start": True}), out=warm,
                warm_start=str(yesterday))
    # (each program traces once per process: yesterday's run traced the cold ones, the cold
    # night reuses them, the warm night traces its own; slices without a usable fit yesterday
    # run svi.fit's own start on the warm night too)
    started = [kw.get("initial") is not None for n, kw in calls if n.endswith("svi.fit")]
    assert started[0] is False and started[-1] is True, started
    by_night = [[(n, "initial" in kw and kw["initial"] is not None, kw.get("config"))
                 for n, kw in calls if n.endswith(fit)] for fit in ("sabr.fit", "calibrate")]
    for night_calls in by_night:
        # cold (yesterday's run traced the cold programs): own start; warm: initial= (a
        # program may be traced more than once; measured: twice on the warm night)
        flags = [c[1] for c in night_calls]
        if night_calls[0][0].endswith("calibrate"):  # Heston: heston.vol_start cold, yesterday's
            assert len(flags) >= 2 and all(flags), flags  # params warm: initial= both nights
        else:
            assert flags[0] is False and flags[1:] and all(flags[1:]), flags
        # the same LMConfig on both nights but for the warm-start iteration cap
        cold_config, warm_config = night_calls[0][2], night_calls[-1][2]
        assert dataclasses.replace(cold_config, max_iterations=1) == dataclasses.replace(
            warm_config, max_iterations=1)
        assert warm_config.max_iterations == 10

    a, b = pd.read_parquet(cold / "slices.parquet"), pd.read_parquet(warm / "slices.parquet")
    both = ((a["sabr_status"] == FitStatus.CONVERGED) & (b["sabr_status"] == FitStatus.CONVERGED))
    assert both.sum() >= 12
    # the same optimum from two starts: LM stops within ftol/xtol (1e-12) of it, and the SABR
    # loss is well conditioned on these 180-strike slices; 1e-6 leaves room for flat valleys
    np.testing.assert_allclose(b.loc[both, stages.SABR_PARAMS], a.loc[both, stages.SABR_PARAMS],
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(b.loc[both, "sabr_rmse"], a.loc[both, "sabr_rmse"], rtol=1e-8)
    u, v = (pd.read_parquet(d / "underlyings.parquet").set_index("underlying")
            for d in (cold, warm))
    converged = (u["heston_status"] == FitStatus.CONVERGED) & (
        v["heston_status"] == FitStatus.CONVERGED)
    if converged.any():  # 10 iterations: few Heston fits converge on both nights
        np.testing.assert_allclose(v.loc[converged, stages.HESTON_PARAMS],
                                   u.loc[converged, stages.HESTON_PARAMS], rtol=1e-4)
    # every Heston fit stays inside the domain's box on both nights
    from jaxvol.heston import LOWER, UPPER
    for table in (u, v):
        values = table[stages.HESTON_PARAMS].to_numpy()
        finite = np.isfinite(values).all(axis=1)
        assert finite.sum() >= N - 1
        assert (values[finite] >= np.asarray(LOWER)).all()
        assert (values[finite] <= np.asarray(UPPER)).all()


def test_a_second_chunk_traces_nothing(tmp_path, monkeypatch):
    """The trace-count guard over every stage: with the job's programs dropped, the first chunk
    traces each stage's program once and every later chunk of the same shapes traces nothing
    at all (no JAX trace anywhere in the process: jaxvol.batching.count_traces)."""
    from jaxvol import batching

    monkeypatch.setattr(batching, "_PROGRAMS", {})
    traced = []
    original = pipeline._process_chunk

    def counted(index, *args):
        names_before = dict(batching.TRACE_COUNTS)
        with batching.count_traces() as traces:
            result = original(index, *args)
        new = {k: v - names_before.get(k, 0) for k, v in batching.TRACE_COUNTS.items()
               if v != names_before.get(k, 0)}
        traced.append((index, dict(traces), new))
        return result

    monkeypatch.setattr(pipeline, "_process_chunk", counted)
    config = small_config(**{"job.devices": 1, "heston.enabled": True, "ssvi.enabled": True,
                             "heston.strikes_per_expiry": 4, "heston.max_iterations": 10})
    summary = run_nightly(config, out=tmp_path / "guard")
    assert all(set(info["status"]) == {"ok"} for name, info in summary["stages"].items()
               if name != "fx"), summary["stages"]
    assert [i for i, _, _ in traced] == [0, 1, 2]
    first = traced[0][2]
    # SSVI runs, so the SVI stage fits with each slice's SSVI smile as its prior (svi.prior)
    for program in ("job-svi-prior", "job-sabr-cold", "job-ssvi", "job-heston", "job-cboe",
                    "job-vxj", "job-vxj-term", "job-host-black", "job-host-vxj-term-structure"):
        assert first.get(program) == 1, (program, first)
    for index, traces, new in traced[1:]:
        assert not traces and not new, (index, traces, new)
