"""The nightly job on a Dask cluster: the same tables as in-process, a worker killed mid-chunk,
a client restarted after a crash, a second client on the same output folder.

Cost: the in-process reference, one cluster run, and one faulted run shared by the kill and
resume tests (the client dies after chunk 0; the rerun has a worker killed in chunk 1).

One LocalCluster of 2 worker processes (one thread each) serves the module; the workers take
over this process's JAX settings (x64, strict promotion, the test compilation cache), so they
load the programs the in-process reference run compiled. Every comparison is exact (pandas
``equals``: same dtypes, float64 bit for bit, NaN where NaN): a chunk is the same computation on
a worker as in-process, so any difference at all is a defect.
"""

import os
import pathlib
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed")

from jaxvol import cli  # noqa: E402
from jaxvol.jobs import load_config, run_nightly  # noqa: E402
from jaxvol.jobs.config import merge_overrides  # noqa: E402
from jaxvol.jobs import cluster as cluster_mod  # noqa: E402
from jaxvol.jobs import pipeline  # noqa: E402
from jaxvol.jobs.pipeline import OutputBusy, output_lock  # noqa: E402

QUICK = pathlib.Path(__file__).resolve().parent.parent / "configs" / "quick.toml"
TABLES = ("rows", "slices", "underlyings", "indices", "arbitrage")
CHUNKS = 4  # 8 underlyings in chunks of 2
# What the cluster path must get right (chunks as tasks, checkpoints, retries, the merge) does
# not depend on which fits a chunk runs, but every new worker process traces each stage once
# (tens of CPU seconds for Heston, SSVI and the indices even with a warm cache), and the kill
# test starts a third worker: the cluster tests run the chains stages and SVI only, on 8
# synthetic underlyings in 4 chunks, so the file costs about a minute on 2 cores instead of
# eleven. The in-process quick job with every stage is covered by test_jobs_pipeline.py.
SMALL = {"market.underlyings": 8, "market.include_spx": False, "job.chunk_underlyings": 2,
         "sabr.enabled": False, "ssvi.enabled": False, "heston.enabled": False,
         "indices.enabled": False, "report.enabled": False,
         "svi.no_arbitrage": "off"}  # the plain fit: the repair's compile adds nothing here


def quick():
    return merge_overrides(load_config(QUICK), SMALL)


def assert_same_outputs(left, right):
    present = [name for name in TABLES if (right / f"{name}.parquet").exists()]
    assert [n for n in TABLES if (left / f"{n}.parquet").exists()] == present
    assert {"rows", "slices", "arbitrage"} <= set(present)  # what the SMALL config writes
    for name in present:
        a, b = (pd.read_parquet(folder / f"{name}.parquet") for folder in (left, right))
        if not a.equals(b):  # the detailed difference
            pd.testing.assert_frame_equal(a, b, check_exact=True, obj=name)
        assert a.equals(b), name


@pytest.fixture(scope="module")
def hold_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hold")


@pytest.fixture(scope="module")
def client(hold_dir):
    from distributed import Client
    cluster = cluster_mod.start_local_cluster(
        2, dashboard_address=":0", env={cluster_mod.HOLD_ENV: str(hold_dir)})
    with cluster, Client(cluster) as dask_client:
        yield dask_client


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The quick job in this process (it also fills the compilation cache for the workers)."""
    out = tmp_path_factory.mktemp("in-process")
    run_nightly(quick(), out=out)
    return out


def test_cluster_tables_equal_the_in_process_run(reference, client, tmp_path):
    summary = run_nightly(quick(), out=tmp_path, client=client)
    assert_same_outputs(tmp_path, reference)
    info = summary["cluster"]
    assert info["workers"] == 2 and info["computed"] == list(range(CHUNKS))
    assert info["reused"] == [] and "dashboard" in info
    # the programs came from the persistent cache the in-process run filled: nothing compiled
    assert sum(task["compiled"] for task in info["tasks"]) == 0
    # rows in (as the tasks read them) = rows out, in run.json's per-task summaries too
    assert sum(task["rows"] for task in info["tasks"]) == summary["rows"]
    log = (tmp_path / "run.log").read_text()
    assert "dashboard" in log and f"{CHUNKS}/{CHUNKS} chunks" in log and "stages s:" in log


@pytest.fixture(scope="module")
def faulted(client, hold_dir, tmp_path_factory):
    """One output folder through both faults (one run's compute for two tests): the client
    dies once chunk 0 is checkpointed; the restarted client's run has the worker that holds
    chunk 1 killed (SIGKILL, by its pid) in the middle of the chunk."""
    out = tmp_path_factory.mktemp("faulted")
    os.environ[pipeline.CRASH_ENV] = "0"
    try:
        with pytest.raises(pipeline.SimulatedCrash):
            run_nightly(quick(), out=out, client=client)
    finally:
        del os.environ[pipeline.CRASH_ENV]
    written = sorted(p.name for p in (out / "chunks").iterdir() if not p.name.startswith("."))
    stamp = (out / "chunks" / "chunk-00000" / "stages.json").stat().st_mtime_ns
    workers = set(client.run(os.getpid).values())
    (hold_dir / "hold-chunk-1").write_text("")  # the first attempt of chunk 1 waits
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        summary=run_nightly(quick(), out=out, client=client)), daemon=True)
    thread.start()
    held = hold_dir / "held-chunk-1"
    deadline = time.monotonic() + 600
    while not (held.exists() and held.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    pid = int(held.read_text())
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=900)
    assert not thread.is_alive() and "summary" in result
    return {"out": out, "written": written, "stamp": stamp, "workers": workers, "pid": pid,
            "summary": result["summary"], "workers_after": set(client.run(os.getpid).values())}


def test_a_worker_killed_mid_chunk_loses_nothing(reference, faulted):
    assert faulted["pid"] in faulted["workers"]  # the killed process was a worker
    assert faulted["workers_after"] != faulted["workers"]  # the nanny started a new one
    assert_same_outputs(faulted["out"], reference)
    rows = pd.read_parquet(faulted["out"] / "rows.parquet")
    np.testing.assert_array_equal(rows["row_id"], np.arange(len(rows)))  # once each, in order
    tasks = {t["chunk"]: t for t in faulted["summary"]["cluster"]["tasks"]}
    assert sorted(tasks) == list(range(1, CHUNKS)) and tasks[1]["pid"] != faulted["pid"]


def test_a_restarted_client_resumes_from_the_checkpoints(reference, faulted):
    assert faulted["written"] == ["chunk-00000"]  # the first chunk runs alone: nothing else
    info = faulted["summary"]["cluster"]
    assert info["reused"] == [0] and info["computed"] == list(range(1, CHUNKS))
    stages = faulted["out"] / "chunks" / "chunk-00000" / "stages.json"
    assert stages.stat().st_mtime_ns == faulted["stamp"]  # not written again
    assert_same_outputs(faulted["out"], reference)


def test_local_workers_run_without_dask_malloc_trim(client):
    # Dask's MALLOC_TRIM_THRESHOLD_=65536 made the SSVI stage ~3x slower on the workers
    assert set(client.run(os.environ.get, cluster_mod.MALLOC_ENV).values()) == {None}


def test_a_worker_with_dask_malloc_trim_warns_in_the_run_log(tmp_path, monkeypatch):
    # run_chunk in this process, stopped right after the check (no chunk is computed)
    class Stop(Exception):
        pass

    def stop(*args):
        raise Stop

    monkeypatch.setenv(cluster_mod.MALLOC_ENV, "65536")
    monkeypatch.setitem(cluster_mod._WORKER, "runtime", {})  # settings already applied
    monkeypatch.delitem(cluster_mod._WORKER, "malloc_warned", raising=False)
    monkeypatch.setattr(cluster_mod, "_rows", stop)
    with pytest.raises(Stop):
        cluster_mod.run_chunk({}, 0, (0, 1), {}, str(tmp_path), None, {})
    assert "MALLOC_TRIM_THRESHOLD_=65536" in (tmp_path / "run.log").read_text()


def test_a_second_client_on_the_same_folder_refuses(client, tmp_path):
    with output_lock(tmp_path, "process-0-of-1"):
        with pytest.raises(OutputBusy, match="in use by another jaxvol run"):
            run_nightly(quick(), out=tmp_path, client=client)
    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.parametrize("options", [["--cluster", "remote:2"], ["--cluster", "local:0"],
                                     ["--cluster", "local:2", "--num-processes", "2"]])
def test_cli_rejects_bad_cluster_options(tmp_path, capsys, monkeypatch, options):
    import jax  # cli.main calls jaxvol.configure(): keep this process on the test cache
    monkeypatch.setenv("JAXVOL_CACHE_DIR", jax.config.jax_compilation_cache_dir)
    assert cli.main(["nightly", *options, "--out", str(tmp_path / "o")]) == 2
    assert "--cluster" in capsys.readouterr().err
