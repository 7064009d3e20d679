"""Fault isolation of the nightly job (issue 21): a bad cell costs its row, inputs are read as
written, errors name the file, output folders are safe, exit codes say what happened.

The input-reading tests need no JAX. The two job runs use a 3-underlying CSV (4 expiries x 12
strikes) with the heavy stages off (SABR, SSVI, Heston, indices): the second run reuses the
first one's compiled programs.
"""

import json
import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from jaxvol import synthetic
from jaxvol.chains import Flag
from jaxvol.jobs import load_config, merge_overrides, run_nightly
from jaxvol.jobs.pipeline import OutputBusy, output_lock, write_atomic
from jaxvol.jobs.source import FileSource, InputError, normalize_rows

SMALL = {"job.name": "faults", "job.chunk_underlyings": 2, "sabr.enabled": False,
         "ssvi.enabled": False, "heston.enabled": False, "indices.enabled": False,
         "report.enabled": False, "chains.arbitrage": False,
         # the plain SVI fit: these tests are about faults, not fit modes, and the default
         # repair's penalised refit would add its compile to every run here
         "svi.no_arbitrage": "off"}


@pytest.fixture(scope="module")
def clean():
    return synthetic.market(3, 4, 12, seed=7, bad_row_share=0.0)


def _faulty(clean):
    bad = clean.astype({"bid": object, "expiry": object}).copy()
    bad.loc[10, "bid"] = "abc"        # unparseable number (underlying 0, first slice)
    bad.loc[150, "expiry"] = np.nan   # NaN key (underlying 1)
    return bad


# ------------------------------------------------------------------ reading (no JAX)
def test_bad_cells_become_flags_on_their_rows(clean):
    bad = _faulty(clean)
    bad = bad.astype({"option_type": object})
    bad.loc[200, "option_type"] = "X"
    bad.loc[201, "bid"] = True          # a boolean in a number column is not 1.0
    out = normalize_rows(bad.astype(str).replace("nan", ""), "chain.csv")
    flags = out["input_flags"].to_numpy()
    assert flags[10] & int(Flag.BAD_VALUE) and np.isnan(out["bid"][10])
    assert flags[150] & int(Flag.MISSING_KEY) and out["expiry"][150] == -1.0
    assert flags[200] & int(Flag.BAD_OPTION_TYPE)
    assert flags[201] & int(Flag.BAD_VALUE) and np.isnan(out["bid"][201])
    others = np.setdiff1d(np.arange(len(bad)), [10, 150, 200, 201])
    assert not flags[others].any()
    np.testing.assert_array_equal(out["strike"].to_numpy(), clean["strike"].to_numpy())


def test_identifiers_stay_strings(tmp_path, clean):
    table = pd.concat([clean.head(4).assign(underlying="0005"),
                       clean.head(4).assign(underlying="5")])
    table.to_csv(tmp_path / "ids.csv", index=False)
    source = FileSource(tmp_path / "ids.csv", tmp_path / "work")
    assert source.names == ["0005", "5"]   # before: both read as the number 5


@pytest.mark.parametrize("column", ["quality_flags", "usable", "iv_mid", "row_id"])
def test_columns_colliding_with_outputs_are_rejected(tmp_path, clean, column):
    clean.head(8).assign(**{column: 1}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(InputError, match=rf"c\.csv.*\['{column}'\].*collide"):
        FileSource(tmp_path / "c.csv", tmp_path / "work")


def test_unreadable_inputs_give_one_error_naming_the_file(tmp_path, clean):
    clean.to_parquet(tmp_path / "good.parquet")
    data = (tmp_path / "good.parquet").read_bytes()
    cases = {"truncated.parquet": data[: len(data) // 2], "corrupt.parquet": b"PAR1" + b"x" * 64,
             "zero.csv": b"", "zero.parquet": b""}
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
    clean.head(0).to_csv(tmp_path / "header_only.csv", index=False)
    clean.head(0).to_parquet(tmp_path / "no_rows.parquet")
    for name in [*cases, "header_only.csv", "no_rows.parquet"]:
        with pytest.raises(InputError, match=name.replace(".", r"\.")):
            FileSource(tmp_path / name, tmp_path / "work")
    with pytest.raises(InputError, match="not found"):
        FileSource(tmp_path / "missing.csv", tmp_path / "work")


def test_date_expiries_act_365f_and_time_zones(clean):
    quote = pd.Timestamp("2026-11-20 16:00")
    days = np.round(clean["expiry"].to_numpy() * 365.0)
    expiry = quote.normalize() + pd.to_timedelta(days, unit="D")
    table = clean.assign(expiry=expiry.strftime("%Y-%m-%d"), quote_time=str(quote))
    out = normalize_rows(table.astype(str))
    # a date alone is 00:00 of that day: (days - 16 h) / 365 days (ACT/365F)
    np.testing.assert_allclose(out["expiry"], (days - 16 / 24) / 365.0, rtol=0, atol=1e-15)
    assert (out["expiry_date"].dt.strftime("%Y-%m-%d") == table["expiry"]).all()
    act360 = normalize_rows(table.astype(str), day_count="ACT/360")
    np.testing.assert_allclose(act360["expiry"], out["expiry"] * 365 / 360, rtol=1e-14)
    aware = table.assign(expiry=[e + "T16:00:00+00:00" for e in table["expiry"]])
    with pytest.raises(InputError, match="'expiry' has a time zone.*'quote_time' has none"):
        normalize_rows(aware)
    both = aware.assign(quote_time="2026-11-20T11:00:00-05:00")  # = 16:00 UTC
    np.testing.assert_allclose(normalize_rows(both)["expiry"], days / 365.0, atol=1e-15)
    with pytest.raises(InputError, match="quote_time"):
        normalize_rows(table.drop(columns="quote_time"))


# ------------------------------------------------------------------ safe folders (no JAX)
def test_second_run_on_a_locked_folder_refuses_and_touches_nothing(tmp_path):
    out = tmp_path / "out"
    with output_lock(out, "process-0-of-1"):
        before = sorted(p.name for p in out.iterdir())
        with pytest.raises(OutputBusy, match="in use by another jaxvol run"):
            run_nightly(load_config(None), out=out)
        assert sorted(p.name for p in out.iterdir()) == before
    with output_lock(out, "process-0-of-1"):  # released: the next run takes it
        pass


def test_runs_of_different_layouts_exclude_each_other(tmp_path):
    # The processes of one --num-processes 2 run share the folder (each its own role lock);
    # an in-process run, a 3-process run or `jaxvol merge` started meanwhile refuses and
    # writes nothing; once the 2-process run is over the others take the folder. (flock locks
    # belong to an open file, so one test process holding both roles is a real conflict.)
    out = tmp_path / "out"
    with output_lock(out, "process-0-of-2"), output_lock(out, "process-1-of-2"):
        for role in ("process-0-of-1", "process-2-of-3", "merge"):
            with pytest.raises(OutputBusy, match="layout '2'"):
                with output_lock(out, role):
                    pass
            assert not (out / f".lock-{role}").exists()  # refused before its own lock file
    with output_lock(out, "merge"):
        with pytest.raises(OutputBusy, match="jaxvol merge"):
            with output_lock(out, "process-0-of-2"):
                pass
    with output_lock(out, "process-0-of-1"):
        pass


def test_lock_is_held_across_processes_and_dies_with_its_holder(tmp_path):
    # The lock is an flock, not the file's existence: a lock held by another process refuses
    # us (the holder's line in the message); once the holder is killed (-9) the stale file
    # blocks nothing and is rewritten. The holder is a bare Python (no JAX import: cheap);
    # jaxvol against jaxvol is test_two_concurrent_runs_on_one_folder.
    import os
    import signal
    import subprocess
    import sys
    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".lock-process-0-of-1"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"handle = open({str(lock)!r}, 'a+')\n"
         "fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
         "handle.write(f'pid {os.getpid()} since now\\n'); handle.flush()\n"
         "print('held', flush=True); time.sleep(600)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusy, match=f"pid {holder.pid} since"):
            with output_lock(out, "process-0-of-1"):
                pass
        assert lock.read_text() == f"pid {holder.pid} since now\n"   # refused: untouched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    with output_lock(out, "process-0-of-1"):     # stale file, no holder: taken and rewritten
        assert lock.read_text().startswith(f"pid {os.getpid()} since")


def test_interrupted_write_leaves_no_truncated_table(tmp_path):
    table = pd.DataFrame({"x": np.arange(100_000.0)})
    path = tmp_path / "rows.parquet"

    def full_disk(tmp):
        with pq.ParquetWriter(tmp, pq.read_schema(tmp_path / "schema.parquet")) as writer:
            writer.write_table(pq.read_table(tmp_path / "schema.parquet"))
            raise OSError(28, "No space left on device")

    table.head(10).to_parquet(tmp_path / "schema.parquet")
    with pytest.raises(OSError, match="No space"):
        write_atomic(path, full_disk)
    assert not path.exists() and not list(tmp_path.glob(".rows.parquet*"))
    write_atomic(path, lambda tmp: table.to_parquet(tmp))        # a complete write
    with pytest.raises(OSError):
        write_atomic(path, full_disk)                            # a failed rewrite ...
    assert len(pd.read_parquet(path)) == len(table)              # ... keeps the whole old one


# ------------------------------------------------------------------ the job (JAX)
@pytest.fixture(scope="module")
def runs(tmp_path_factory, clean):
    root = tmp_path_factory.mktemp("faults")
    clean.to_csv(root / "clean.csv", index=False)
    _faulty(clean).to_csv(root / "bad.csv", index=False)
    config = merge_overrides(load_config(None), SMALL)
    out = {}
    for name in ("clean", "bad"):
        out[name] = run_nightly(config, out=root / name, input_path=str(root / f"{name}.csv"))
    return root, out


def test_one_bad_cell_costs_one_row(runs):
    root, summaries = runs
    assert all(v["failed"] == 0 for v in summaries["bad"]["stages"].values())
    rows = pd.read_parquet(root / "bad" / "rows.parquet")
    assert len(rows) == 288
    flagged = rows.set_index("row_id")["quality_flags"]
    assert flagged[10] & int(Flag.BAD_VALUE) and flagged[150] & int(Flag.MISSING_KEY)
    assert "BAD_VALUE" in rows.set_index("row_id")["quality_flag_names"][10]
    clean = pd.read_parquet(root / "clean" / "slices.parquet")
    bad = pd.read_parquet(root / "bad" / "slices.parquet")
    key = ["underlying", "expiry"]
    merged = clean.merge(bad, on=key, suffixes=("", "_bad"))
    assert len(merged) == len(clean) == 12       # the NaN-expiry row's own slice aside
    touched = (merged["underlying"] == "SYN00000") & (merged["expiry"] == clean["expiry"].min())
    touched |= merged["underlying"] == "SYN00001"  # lost one row (row 150)
    params = ["svi_a", "svi_b", "svi_rho", "svi_m", "svi_sigma", "svi_status"]
    untouched = merged[~touched]
    assert len(untouched) >= 7
    for p in params:  # float64 bitwise where the slice's inputs are unchanged
        np.testing.assert_array_equal(untouched[p].to_numpy(), untouched[p + "_bad"].to_numpy())
    assert (bad["svi_status_name"].notna()).all()


def test_exit_codes(runs, tmp_path, monkeypatch, capsys):
    import jax

    from jaxvol import cli
    from jaxvol.jobs import stages
    root, _ = runs
    # cli.main calls jaxvol.configure(): keep JAX's compilation cache on the suite's folder
    monkeypatch.setenv("JAXVOL_CACHE_DIR", jax.config.jax_compilation_cache_dir)
    settings = sum((["--set", f"{k}={json.dumps(v)}"] for k, v in SMALL.items()), [])
    settings += ["--set", "svi.enabled=false"]
    good = ["nightly", "--input", str(root / "clean.csv"), *settings]
    assert cli.main(good + ["--out", str(tmp_path / "ok")]) == 0
    with output_lock(tmp_path / "ok", "process-0-of-1"):
        assert cli.main(good + ["--out", str(tmp_path / "ok"), "--fresh"]) == 3
    assert cli.main(["nightly", "--input", str(tmp_path / "none.csv"), "--out",
                     str(tmp_path / "x")]) == 2
    (tmp_path / "dates.csv").write_text("underlying,expiry,strike,option_type,bid,ask\n"
                                        "A,2026-12-18,100,C,1,2\n")
    assert cli.main(["nightly", "--input", str(tmp_path / "dates.csv"), "--out",
                     str(tmp_path / "y")]) == 2     # dates without a quote_time
    assert "quote_time" in capsys.readouterr().err.splitlines()[-1]
    (tmp_path / "dates.csv").write_text((root / "clean.csv").read_text())  # fixed input:
    assert cli.main(good[:2] + [str(tmp_path / "dates.csv")] + good[3:]    # the rerun needs
                    + ["--out", str(tmp_path / "y")]) == 0                 # no --fresh
    with pytest.raises(SystemExit) as usage:
        cli.main(["demo", "--underlyings", "0"])
    assert usage.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("must be >= 1, got 0")
    with pytest.raises(SystemExit):
        cli.main(["nightly", "--help"])
    help_text = capsys.readouterr().out
    assert "quote_time" in help_text and "exit codes" in help_text and "ACT/365F" in help_text
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.startswith("jaxvol 0.")

    def broken(chunk, env):
        raise RuntimeError("simulated stage failure")
    monkeypatch.setitem(stages.STAGES, "pack", broken)
    assert cli.main(good + ["--out", str(tmp_path / "failed")]) == 1
    text = capsys.readouterr()
    assert re.search(r"first error: chunk 0: underlyings \['SYN00000'.*RuntimeError: "
                     "simulated stage failure", text.out)
    assert "Traceback" not in text.err and "Traceback" in (
        tmp_path / "failed" / "run.log").read_text()
    summary = json.loads((tmp_path / "failed" / "run.json").read_text())
    assert summary["stages"]["pack"]["failed"] == 2


def test_a_stage_failing_on_one_underlying_costs_only_that_underlying(runs, tmp_path,
                                                                      monkeypatch):
    # pack works on the whole chunk: its failure is isolated by rerunning the chunk's
    # underlyings in halves; SVI, which needs pack, is then blocked on that underlying only
    from jaxvol.jobs import stages
    root, _ = runs
    original = stages.STAGES["pack"]

    def fails_on_one(chunk, env):
        if (chunk.rows["underlying"] == "SYN00001").any():
            raise FloatingPointError("simulated failure on SYN00001")
        return original(chunk, env)
    monkeypatch.setitem(stages.STAGES, "pack", fails_on_one)
    config = merge_overrides(load_config(None), SMALL)
    summary = run_nightly(config, out=tmp_path / "one", input_path=str(root / "clean.csv"))
    assert summary["stages"]["pack"]["failed"] == summary["stages"]["svi"]["failed"] == 1
    assert "SYN00001" in summary["stages"]["pack"]["first_error"]
    slices = pd.read_parquet(tmp_path / "one" / "slices.parquet")
    clean = pd.read_parquet(root / "clean" / "slices.parquet")
    lost = slices["underlying"] == "SYN00001"
    assert (slices.loc[lost, "svi_status_name"] == "STAGE_FAILED").all()
    assert slices.loc[lost, "failed_stages"].str.contains("simulated failure").all()
    assert (slices.loc[~lost, "failed_stages"] == "").all()
    params = ["svi_a", "svi_b", "svi_rho", "svi_m", "svi_sigma"]
    np.testing.assert_array_equal(slices.loc[~lost, params].to_numpy(),
                                  clean.loc[clean["underlying"] != "SYN00001", params].to_numpy())
    assert len(pd.read_parquet(tmp_path / "one" / "rows.parquet")) == 288


def test_carry_tolerances_are_job_settings(runs, tmp_path):
    # one row's spot 1e-4 (relative) off its slice's: flagged INCONSISTENT_CARRY under the
    # default chains.carry_tolerance (1e-6), accepted under 1e-3; nothing else changes
    root, _ = runs
    frame = pd.read_csv(root / "clean.csv")
    frame.loc[40, "spot"] *= 1.0 + 1e-4
    frame.to_csv(tmp_path / "spot.csv", index=False)
    bit = int(Flag.INCONSISTENT_CARRY)
    flags = {}
    for name, tolerance in (("strict", None), ("loose", 1e-3)):
        extra = {} if tolerance is None else {"chains.carry_tolerance": tolerance}
        config = merge_overrides(load_config(None), {**SMALL, **extra})
        run_nightly(config, out=tmp_path / name, input_path=str(tmp_path / "spot.csv"))
        rows = pd.read_parquet(tmp_path / name / "rows.parquet").set_index("row_id")
        flags[name] = rows["quality_flags"].to_numpy() & bit
    assert flags["strict"][40] and np.flatnonzero(flags["strict"]).tolist() == [40]
    assert not flags["loose"].any()
    with pytest.raises(ValueError, match="carry_tolerance"):
        merge_overrides(load_config(None), {"chains.carry_tolerance": 0.0})


def test_a_stage_failing_on_one_slice_costs_only_that_slice(runs, tmp_path, monkeypatch):
    # SVI fits each slice on its own quotes: a failure is narrowed down to the slice (reruns
    # on halves of the chunk's slices, same compiled programs); every other slice, of the same
    # underlying too, keeps the clean run's parameters and row vols bitwise.
    from jaxvol.jobs import stages
    root, _ = runs
    clean = pd.read_parquet(root / "clean" / "slices.parquet")
    target = ("SYN00001", float(np.sort(clean["expiry"].unique())[1]))
    original = stages.STAGES["svi"]
    calls = []

    def fails_on_one(chunk, env):
        calls.append(len(chunk.slices))
        if target in set(zip(chunk.slices["underlying"].astype(str), chunk.slices["expiry"])):
            raise FloatingPointError("simulated failure on one slice")
        return original(chunk, env)
    monkeypatch.setitem(stages.STAGES, "svi", fails_on_one)
    config = merge_overrides(load_config(None), SMALL)
    out = tmp_path / "slice"
    summary = run_nightly(config, out=out, input_path=str(root / "clean.csv"))
    assert summary["stages"]["svi"]["failed"] == 1          # counted: the run exits 1
    assert f"{target[0]} {target[1]:.6g}" in summary["stages"]["svi"]["first_error"]
    assert summary["stages"]["pack"]["failed"] == 0
    assert calls == [8, 4, 4, 2, 1, 1, 2, 4]   # chunk 0: 8 -> halves -> the slice; chunk 1: 4
    slices = pd.read_parquet(out / "slices.parquet")
    key = ["underlying", "expiry"]
    merged = clean.merge(slices, on=key, suffixes=("", "_new"), validate="1:1")
    assert len(merged) == len(clean) == 12
    lost = (merged["underlying"] == target[0]) & (merged["expiry"] == target[1])
    assert lost.sum() == 1
    assert merged.loc[lost, "svi_status_name_new"].eq("STAGE_FAILED").all()
    assert merged.loc[lost, "failed_stages"].str.startswith(
        "svi: FloatingPointError: simulated failure").all()
    assert merged.loc[~lost, "failed_stages"].eq("").all()
    assert merged.loc[lost, "svi_a_new"].isna().all()
    for p in ["svi_a", "svi_b", "svi_rho", "svi_m", "svi_sigma", "svi_status", "svi_rmse",
              "svi_iterations"]:
        np.testing.assert_array_equal(merged.loc[~lost, p].to_numpy(),
                                      merged.loc[~lost, p + "_new"].to_numpy())
    rows = pd.read_parquet(out / "rows.parquet").set_index("row_id")
    clean_rows = pd.read_parquet(root / "clean" / "rows.parquet").set_index("row_id")
    in_lost = (rows["underlying"] == target[0]) & (rows["expiry"] == target[1])
    assert in_lost.sum() == 24 and rows.loc[in_lost, "iv_svi"].isna().all()
    np.testing.assert_array_equal(rows.loc[~in_lost, "iv_svi"], clean_rows.loc[~in_lost, "iv_svi"])


def test_two_concurrent_runs_on_one_folder(runs, tmp_path):
    # Two `python -m jaxvol.jobs nightly` processes started together on one --out: the flock
    # on out/.lock-process-0-of-1 lets one through; the other exits 3 with one line on stderr
    # before it opens anything but the lock file. The winner's tables equal the lone run's.
    import os
    import pathlib
    import subprocess
    import sys

    import jax
    root, _ = runs
    repo = pathlib.Path(__file__).resolve().parents[1]
    out, lone = tmp_path / "both", tmp_path / "lone"
    small = {**SMALL, "svi.enabled": False}   # the chain stages only: a cheap subprocess
    run_nightly(merge_overrides(load_config(None), small), out=lone,
                input_path=str(root / "clean.csv"))
    settings = sum((["--set", f"{k}={json.dumps(v)}"] for k, v in small.items()), [])
    command = [sys.executable, "-m", "jaxvol.jobs", "nightly", "--input",
               str(root / "clean.csv"), "--out", str(out), *settings]
    env = dict(os.environ, JAXVOL_CACHE_DIR=jax.config.jax_compilation_cache_dir,
               PYTHONPATH=str(repo))
    procs = [subprocess.Popen(command, env=env, cwd=repo, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    texts = [p.communicate(timeout=900) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 3], (codes, [t[1][-2000:] for t in texts])
    winner, loser = codes.index(0), codes.index(3)
    message = texts[loser][1].strip().splitlines()[-1]     # one line, no traceback
    assert message.startswith("jaxvol nightly: error:") and "Traceback" not in texts[loser][1]
    assert "in use by another jaxvol run" in message and "nothing was written" in message
    lock = (out / ".lock-process-0-of-1").read_text()
    assert lock.startswith(f"pid {procs[winner].pid} ")       # the loser did not write it
    log_text = (out / "run.log").read_text()
    assert log_text.count("process 0/1:") == 1                # one run logged, the winner
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in lone.iterdir())
    for name in ("rows", "slices"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{name}.parquet"),
                                      pd.read_parquet(lone / f"{name}.parquet"))


def test_report_renders_in_a_browser(runs, tmp_path):
    # The report of the faulty run, written with the report on, rendered by headless Chromium
    # (skipped where it is not installed: `apt-get install -y chromium`).
    import shutil
    import subprocess

    from jaxvol.jobs import config as cfg
    from jaxvol.jobs.merge import TABLES
    from jaxvol.report import write_report
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    root, summaries = runs
    out = tmp_path / "night"
    shutil.copytree(root / "bad", out, ignore=shutil.ignore_patterns(".lock-*"))
    config = cfg.load_config(out / "config.toml")
    config["report"]["enabled"] = True
    tables = {n: pd.read_parquet(out / f"{n}.parquet") if (out / f"{n}.parquet").exists()
              else None for n in TABLES}
    write_report(out, config, summaries["bad"], tables, None)
    page = (out / "report.html").read_text()
    for heading in ("Fit quality by status", "Failed, at-bound and degenerate fits",
                    "Fitted smiles", "SVI parameters", "Quality flags"):
        assert heading in page
    assert "MAX_ITERATIONS" in page or "CONVERGED" in page
    if browser is None:
        pytest.skip("chromium not installed: the report was written but not rendered")
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                    f"--screenshot={shot}", "--window-size=1300,3000",
                    (out / "report.html").as_uri()], check=True, timeout=120,
                   capture_output=True)
    assert shot.stat().st_size > 50_000      # a page with figures, not a blank one
