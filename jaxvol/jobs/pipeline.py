"""The nightly job: chunks of underlyings through the stages, checkpoints, partitions, merge.

``run_nightly`` plans the chunks (consecutive underlyings in order of first appearance), takes
this process's share (chunk ``c`` belongs to process ``c % num_processes``), runs every stage of
:mod:`jaxvol.jobs.stages` on each chunk not yet checkpointed, and writes each finished chunk
atomically to ``out/chunks/chunk-NNNNN/``. A single-process run then merges; with several
processes ``merge`` assembles the partitions once all have finished. Restarted with the same
arguments, a run skips the chunks already on disk and produces the same outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import shutil
import time
from typing import Any

import numpy as np
import pandas as pd

from jaxvol.jobs import config as config_mod
from jaxvol.jobs.errors import JobError, SlicesFailed, StageUnavailable
from jaxvol.jobs.source import FileSource, make_source
from jaxvol.jobs.stages import STAGES, Chunk, JobEnv, run_stage
from jaxvol.status import domain_status

__all__ = ["JobError", "OutputBusy", "SimulatedCrash", "run_nightly", "plan_chunks",
           "chunk_owner", "CRASH_ENV", "DEPENDS", "output_lock", "write_atomic"]

log = logging.getLogger("jaxvol.jobs")

CRASH_ENV = "JAXVOL_TEST_CRASH_AFTER_CHUNK"
"""Test hook: when set to k, the run stops with :class:`SimulatedCrash` right after chunk k is
checkpointed (as if the machine had died there)."""


class OutputBusy(JobError):
    """Another jaxvol process holds the lock of this output folder (and process id)."""


class SimulatedCrash(RuntimeError):
    """Raised by the test hook :data:`CRASH_ENV`."""


def plan_chunks(names: list[str], chunk_underlyings: int) -> list[tuple[int, int]]:
    """(start, stop) ranges of consecutive underlyings, ``chunk_underlyings`` per chunk."""
    return [(start, min(start + chunk_underlyings, len(names)))
            for start in range(0, len(names), chunk_underlyings)]


def chunk_owner(chunk: int, num_processes: int) -> int:
    """The process that computes ``chunk`` (round robin: balanced and deterministic)."""
    return chunk % num_processes


# ------------------------------------------------------------------------------ safe folders
class output_lock:
    """An exclusive lock on ``out`` for one process of a run (``fcntl.flock`` on
    ``out/.lock-<role>``): a second run with the same role refuses with :class:`OutputBusy`
    before writing anything. The kernel drops the lock when the holder exits, however it
    exits (kill -9 included), so a rerun after a crash needs no manual repair.

    Runs with different layouts exclude each other too: every holder also keeps a shared lock
    on ``out/.lock-layout-<N>`` (N the number of processes of its run, or ``merge``), taken
    under a short admission lock after checking that no other layout's file is held. So the
    processes of one ``--num-processes N`` run share the folder, while a run with another N,
    an in-process run or ``jaxvol merge`` started during them refuses."""

    def __init__(self, out: pathlib.Path, role: str):
        self.path = pathlib.Path(out) / f".lock-{role}"
        _, _, count = role.rpartition("-of-")
        self.layout = count if role.startswith("process-") and count.isdigit() else role
        self.handle = self.layout_handle = None

    def _busy(self, holder: str) -> OutputBusy:
        return OutputBusy(f"{self.path.parent} is in use by another jaxvol run ({holder}); "
                          "nothing was written. Wait for it to finish or use another --out")

    def _admit(self, fcntl) -> None:
        """Take the shared layout lock, refusing when a run of another layout holds one."""
        folder = self.path.parent
        mine = folder / f".lock-layout-{self.layout}"
        with open(folder / ".lock-admission", "a+") as gate:
            fcntl.flock(gate, fcntl.LOCK_EX)  # held for a few file operations only
            for other in sorted(folder.glob(".lock-layout-*")):
                if other == mine:
                    continue
                with open(other, "a+") as probe:
                    try:
                        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        layout = other.name[len(".lock-layout-"):]
                        raise self._busy(f"a run of layout {layout!r}: "
                                         + ("jaxvol merge" if layout == "merge" else
                                            f"{layout} process(es)")) from None
                    fcntl.flock(probe, fcntl.LOCK_UN)
            self.layout_handle = open(mine, "a+")
            fcntl.flock(self.layout_handle, fcntl.LOCK_SH)

    def __enter__(self):
        import fcntl
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._admit(fcntl)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            self._release(fcntl)
            raise self._busy(holder) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self.handle = handle
        return self

    def _release(self, fcntl) -> None:
        for name in ("handle", "layout_handle"):
            handle = getattr(self, name)
            if handle is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
                setattr(self, name, None)

    def __exit__(self, *exc):
        import fcntl
        self._release(fcntl)
        return False


def write_atomic(path: pathlib.Path, write) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path``: readers see the old file or the whole
    new one, never a part. A failed write (full disk, crash) removes the temporary file."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------ bookkeeping
def _fingerprint(config: dict, source_identity: dict, warm_start: str | None) -> str:
    relevant = {k: v for k, v in config.items() if k not in ("report",)}
    relevant["job"] = {k: v for k, v in config["job"].items() if k not in ("fail_fast", "name")}
    payload = json.dumps({"config": relevant, "source": source_identity,
                          "warm_start": warm_start}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _write_json(path: pathlib.Path, value: Any) -> None:
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    write_atomic(path, lambda tmp: tmp.write_text(text))


def _claim_output(out: pathlib.Path, manifest: dict, fresh: bool) -> None:
    path = out / "manifest.json"
    if fresh and out.exists():
        for name in ("chunks", "partitions", "work"):
            shutil.rmtree(out / name, ignore_errors=True)
        path.unlink(missing_ok=True)
    started = out / "chunks"
    if path.exists() and not (started.exists() and any(started.iterdir())) and json.loads(
            path.read_text()).get("fingerprint") != manifest["fingerprint"]:
        # an earlier attempt that checkpointed nothing (e.g. rejected input, since fixed):
        # nothing to keep, so the rerun replaces it instead of asking for --fresh
        path.unlink()
        shutil.rmtree(out / "work", ignore_errors=True)
    if path.exists():
        existing = json.loads(path.read_text())
        if existing.get("fingerprint") != manifest["fingerprint"]:
            raise JobError(f"{out} holds a run with other inputs or settings (fingerprint "
                           f"{existing.get('fingerprint')} != {manifest['fingerprint']}); "
                           "use another --out or --fresh")
        return
    out.mkdir(parents=True, exist_ok=True)
    _write_json(path, manifest)


def _chunk_dir(out: pathlib.Path, index: int) -> pathlib.Path:
    return out / "chunks" / f"chunk-{index:05d}"


def _save_chunk(out: pathlib.Path, chunk: Chunk, stage_log: list[dict]) -> None:
    final = _chunk_dir(out, chunk.index)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, table in _with_dates(chunk).items():
        table.reset_index(drop=True).to_parquet(tmp / f"{name}.parquet", index=False)
    _write_json(tmp / "stages.json", stage_log)
    os.replace(tmp, final)


def _with_dates(chunk: Chunk) -> dict:
    """The chunk's tables, with the expiry date beside the year fraction in the per-slice
    tables when the input gave dates (``expiry_date`` of the rows)."""
    tables = dict(chunk.tables())
    rows = chunk.rows
    if rows is None or "expiry_date" not in rows.columns:
        return tables
    dates = (rows[["underlying", "expiry", "expiry_date"]].dropna()
             .drop_duplicates(["underlying", "expiry"]))
    for name in ("slices", "arbitrage"):
        table = tables.get(name)
        if table is None or "expiry" not in table or "expiry_date" in table:
            continue
        merged = table.merge(dates, on=["underlying", "expiry"], how="left")
        position = list(merged.columns).index("expiry") + 1
        column = merged.pop("expiry_date")
        merged.insert(position, "expiry_date", column)
        tables[name] = merged
    return tables


# ------------------------------------------------------------------------------ stages
DEPENDS = {"arbitrage": ("analyze",), "pack": ("analyze",), "svi": ("pack",),
           "sabr": ("pack",), "ssvi": ("pack",), "heston": ("pack",),
           "indices": ("analyze",)}
"""Stages each stage needs (a stage after a failed one is skipped, not run on missing data)."""


def _blocked(name: str, failed: dict) -> str | None:
    """The failed stage ``name`` depends on (directly or through another stage), if any."""
    todo = list(DEPENDS.get(name, ()))
    while todo:
        need = todo.pop()
        if need in failed:
            return need
        todo.extend(DEPENDS.get(need, ()))
    return None


def _run_stage(name: str, chunk: Chunk, env: JobEnv, failed: dict | None = None) -> dict:
    started = time.perf_counter()
    entry = {"chunk": chunk.index, "stage": name, "status": "ok", "message": ""}
    blocker = _blocked(name, failed or {})
    if blocker is not None:
        entry.update(status="blocked", message=f"not run: stage {blocker} failed "
                     f"({failed[blocker]})", seconds=0.0)
        return entry
    try:
        run_stage(name, chunk, env)
    except StageUnavailable as reason:
        entry.update(status="skipped", message=str(reason))
    except SlicesFailed as lost:  # failed on some slices only, already isolated and marked
        entry.update(status="failed", message=str(lost), isolated=True)
    except Exception as error:  # noqa: BLE001 - a stage failure is logged, not fatal
        if env.config["job"]["fail_fast"]:
            raise
        message = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        log.error("chunk %d: stage %s failed: %s", chunk.index, name, message,
                  exc_info=error)
        entry.update(status="failed", message=message)
    entry["seconds"] = time.perf_counter() - started
    return entry


JobStatus = domain_status("JobStatus", "jobs", {
    "OK": 0,
    "STAGE_FAILED": 110,   # the stage that computes this value failed on this underlying
}, "Outcomes of the nightly job itself (jaxvol.status numbering).")


def _process_chunk(index: int, rows: pd.DataFrame, env: JobEnv, load_seconds: float):
    """Run the stages on a chunk; if one fails, isolate the underlyings it fails on."""
    chunk, stage_log = _run_stages(index, rows, env, load_seconds)
    if not _needs_rerun(stage_log):
        return chunk, stage_log
    names = list(pd.unique(rows["underlying"]))
    if len(names) == 1:
        return _mark_failed(chunk, stage_log), stage_log
    log.warning("chunk %d: %s failed; running its %d underlyings in halves to isolate the "
                "failure (the others keep their results)", index,
                ", ".join(e["stage"] for e in stage_log if e["status"] == "failed"), len(names))
    parts = _bisect(index, rows, names, env)
    return _combine(index, rows, parts, stage_log, load_seconds)


def _bisect(index, rows, names, env):
    """(chunk, stage_log) of consecutive groups of underlyings: halves until a failing group
    is a single underlying (a few reruns: the compiled programs are reused)."""
    group = rows[rows["underlying"].isin(names)]
    chunk, stage_log = _run_stages(index, group, env, 0.0)
    if not _needs_rerun(stage_log):
        return [(chunk, stage_log)]
    if len(names) == 1:
        return [(_mark_failed(chunk, stage_log), stage_log)]
    half = len(names) // 2
    return _bisect(index, rows, names[:half], env) + _bisect(index, rows, names[half:], env)


def _needs_rerun(stage_log: list[dict]) -> bool:
    """A stage failed on the chunk as a whole (not one already isolated to its slices)."""
    return any(e["status"] == "failed" and not e.get("isolated") for e in stage_log)


def _mark_failed(chunk: Chunk, stage_log: list[dict]) -> Chunk:
    """Record on the chunk's per-slice and per-underlying tables which stages failed."""
    reason = "; ".join(f"{e['stage']}: {e['message']}" for e in stage_log
                       if e["status"] in ("failed", "blocked"))
    names = pd.unique(chunk.rows["underlying"])
    if chunk.slices is None:
        keys = chunk.rows[["underlying", "expiry"]].drop_duplicates()
        chunk.slices = keys.reset_index(drop=True)
    if chunk.underlyings is None:
        chunk.underlyings = pd.DataFrame({"underlying": names})
    for table in (chunk.slices, chunk.underlyings):
        table["failed_stages"] = reason
    return chunk


def _combine(index, rows, parts, stage_log, load_seconds):
    """One chunk from the isolated groups; the stage log says which underlyings failed."""
    combined = Chunk(index=index, rows=rows)
    for name in ("rows", "slices", "underlyings", "indices", "arbitrage"):
        tables = [getattr(c, name) for c, _ in parts if getattr(c, name) is not None]
        if not tables:
            setattr(combined, name, None)
            continue
        table = pd.concat(tables, ignore_index=True, sort=False)
        if name == "rows" and "row_id" in table:
            table = table.sort_values("row_id", kind="stable").reset_index(drop=True)
        for column in [c for c in table.columns if c.endswith("_status")]:
            if table[column].isna().any():  # groups where the stage failed
                table[column] = table[column].fillna(int(JobStatus.STAGE_FAILED))
            table[column] = table[column].astype(np.int32)
        if "failed_stages" in table:
            table["failed_stages"] = table["failed_stages"].fillna("")
        setattr(combined, name, table)
    log_out = [{"chunk": index, "stage": "load", "status": "ok", "message": "",
                "seconds": load_seconds}]
    for position, entry in enumerate(stage_log[1:], start=1):
        outcomes = [(c, log_[position]) for c, log_ in parts]
        bad = [(c, e) for c, e in outcomes if e["status"] in ("failed", "blocked")]
        merged = dict(entry, seconds=sum(e["seconds"] for _, e in outcomes) + entry["seconds"])
        if bad:
            who = [str(u) for c, _ in bad for u in pd.unique(c.rows["underlying"])]
            status = "failed" if any(e["status"] == "failed" for _, e in bad) else "blocked"
            merged.update(status=status, message=f"underlyings {who[:5]}"
                          f"{'...' if len(who) > 5 else ''} ({len(who)} of "
                          f"{rows['underlying'].nunique()}): {bad[0][1]['message']}")
        else:
            merged.update(status=outcomes[0][1]["status"], message=outcomes[0][1]["message"])
        log_out.append(merged)
    return combined, log_out


def _run_stages(index: int, rows: pd.DataFrame, env: JobEnv, load_seconds: float):
    chunk = Chunk(index=index, rows=rows)
    stage_log = [{"chunk": index, "stage": "load", "status": "ok", "message": "",
                  "seconds": load_seconds}]
    failed: dict = {}
    for name in STAGES:
        if index == getattr(env, "first_chunk", -1) and load_seconds > 0:
            log.info("chunk %d: stage %s%s", index, name,
                     " (first chunk: compiling)" if name != "analyze" else
                     " (first chunk: compiling; later chunks reuse the programs)")
        entry = _run_stage(name, chunk, env, failed)
        if entry["status"] in ("failed", "blocked") and not entry.get("isolated"):
            failed[name] = entry["message"]
        stage_log.append(entry)
    return chunk, stage_log


def _load_previous(warm_start: str | None):
    if not warm_start:
        return None, None
    folder = pathlib.Path(warm_start)
    tables = []
    for name in ("slices", "underlyings"):
        path = folder / f"{name}.parquet"
        tables.append(pd.read_parquet(path) if path.exists() else None)
    if tables[0] is None:
        raise JobError(f"--warm-start {folder}: no slices.parquet there (not a job output?)")
    return tables[0], tables[1]


def _make_env(config: dict, warm_start: str | None) -> JobEnv:
    from jaxvol.jobs.sharding import local_mesh
    previous_slices, previous_underlyings = _load_previous(warm_start)
    return JobEnv(config, local_mesh(config["job"]["devices"]), previous_slices,
                  previous_underlyings)


# ------------------------------------------------------------------------------ the run
def _setup_logging(out: pathlib.Path, process_id: int, num_processes: int) -> logging.Handler:
    name = "run.log" if num_processes == 1 else f"run-process-{process_id}-of-{num_processes}.log"
    handler = logging.FileHandler(out / name)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("jaxvol").addHandler(handler)
    logging.getLogger("jaxvol").setLevel(logging.INFO)
    return handler


def run_nightly(config: dict, *, out: str | os.PathLike, input_path: str | None = None,
                warm_start: str | None = None, num_processes: int = 1, process_id: int = 0,
                fresh: bool = False, client=None) -> dict:
    """Run (or resume) this process's chunks; merge when it is the only process.

    With ``client`` (a ``dask.distributed.Client``) every chunk not yet checkpointed is one
    task on the cluster (:mod:`jaxvol.jobs.cluster`): the workers read their own rows and write
    the checkpoints, this process only plans, logs progress and merges; the tables are those of
    an in-process run, bit for bit. ``out`` must then be a folder the workers can write (a
    shared file system on a multi-machine cluster).

    Returns the run summary (also written to ``out/run.json`` by the merge; with a client it
    has a ``cluster`` entry: workers, dashboard link, chunks computed and reused, per-task
    summaries).
    """
    if not 0 <= process_id < num_processes:
        raise JobError(f"--process-id {process_id} must be in 0..{num_processes - 1}")
    if client is not None and num_processes != 1:
        raise JobError("a Dask client runs every chunk of the job: use it without "
                       "--num-processes/--process-id")
    out = pathlib.Path(out)
    config = config_mod.validate_config(config)  # a copy, checked
    if input_path:
        config["input"]["path"] = str(input_path)
    if out.exists() and not out.is_dir():
        raise JobError(f"--out {out} exists and is not a folder")
    with output_lock(out, f"process-{process_id}-of-{num_processes}"):
        handler = _setup_logging(out, process_id, num_processes)
        try:
            return _run(config, out, warm_start, num_processes, process_id, fresh, client)
        finally:
            logging.getLogger("jaxvol").removeHandler(handler)
            handler.close()


def _run(config, out, warm_start, num_processes, process_id, fresh, client=None):
    started = time.perf_counter()
    work = out / "work" / f"process-{process_id}"
    source = make_source(config["input"]["path"], config["market"], work,
                         config["input"]["day_count"])
    chunks = plan_chunks(source.names, config["job"]["chunk_underlyings"])
    fingerprint = _fingerprint(config, source.identity(), warm_start)
    _claim_output(out, {"fingerprint": fingerprint, "chunks": len(chunks),
                        "underlyings": len(source.names), "warm_start": warm_start,
                        "input": config["input"]["path"] or "synthetic"}, fresh)
    (out / "config.toml").write_text(config_mod.dump_toml(config))
    mine = [c for c in range(len(chunks)) if chunk_owner(c, num_processes) == process_id]
    if isinstance(source, FileSource):
        chunk_of = {name: c for c, (a, b) in enumerate(chunks) for name in source.names[a:b]}
        source.split(chunk_of, set(mine))
    if client is not None:
        return _run_on_cluster(client, config, out, source, chunks, warm_start, started)
    env = _make_env(config, warm_start)
    env.first_chunk = next((c for c in mine if not _chunk_dir(out, c).exists()), -1)
    log.info("process %d/%d: %d of %d chunks, %d underlyings, %d device(s), warm start: %s",
             process_id, num_processes, len(mine), len(chunks), len(source.names), env.devices,
             warm_start or "no")
    _run_chunks(config, out, source, chunks, mine, env, started)
    partition = {"process_id": process_id, "num_processes": num_processes, "chunks": mine,
                 "seconds": time.perf_counter() - started}
    (out / "partitions").mkdir(exist_ok=True)
    _write_json(out / "partitions" / f"process-{process_id}-of-{num_processes}.json", partition)
    if num_processes == 1:
        from jaxvol.jobs.merge import merge
        return merge(out)
    log.info("process %d done; run `jaxvol merge --out %s` once every process has finished",
             process_id, out)
    return partition


def _run_on_cluster(client, config, out, source, chunks, warm_start, started):
    """Every chunk as a Dask task (:func:`jaxvol.jobs.cluster.run_chunks`), then the merge."""
    from jaxvol.jobs import cluster
    from jaxvol.jobs.merge import merge
    log.info("dask: %d chunks, %d underlyings, warm start: %s", len(chunks),
             len(source.names), warm_start or "no")
    info = cluster.run_chunks(client, config, out, source, chunks, warm_start, started)
    partition = {"process_id": 0, "num_processes": 1, "chunks": list(range(len(chunks))),
                 "seconds": time.perf_counter() - started, "cluster": info}
    (out / "partitions").mkdir(exist_ok=True)
    _write_json(out / "partitions" / "process-0-of-1.json", partition)
    summary = merge(out)
    summary["cluster"] = {k: v for k, v in info.items() if k != "tasks"}
    summary["cluster"]["seconds"] = time.perf_counter() - started
    summary["cluster"]["tasks"] = [{k: t[k] for k in ("chunk", "status", "seconds", "rows",
                                                      "worker", "pid", "compiled", "loaded")
                                    if k in t} for t in info["tasks"]]
    _write_json(out / "run.json", summary)
    return summary


def _run_chunks(config, out, source, chunks, mine, env, started):
    crash_after = os.environ.get(CRASH_ENV)
    done = 0
    for position, index in enumerate(mine):
        if _chunk_dir(out, index).exists():
            log.info("chunk %d already checkpointed: skipped (resume)", index)
            continue
        t0 = time.perf_counter()
        start, stop = chunks[index]
        rows = (source.chunk_rows(index) if isinstance(source, FileSource)
                else source.rows(start, stop))
        chunk, stage_log = _process_chunk(index, rows, env, time.perf_counter() - t0)
        _save_chunk(out, chunk, stage_log)
        done += 1
        _progress(position + 1, len(mine), index, source.names[start], source.names[stop - 1],
                  time.perf_counter() - t0, time.perf_counter() - started, stage_log)
        if crash_after is not None and int(crash_after) == index:
            raise SimulatedCrash(f"simulated crash after chunk {index}")


def _progress(position, total, index, first, last, seconds, elapsed, stage_log):
    bar_width = 24
    filled = int(round(bar_width * position / total))
    eta = elapsed / position * (total - position)
    problems = [f"{e['stage']}:{e['status']}" for e in stage_log if e["status"] != "ok"]
    log.info("[%s%s] %d/%d chunks | chunk %d (%s..%s) %.1f s | elapsed %.0f s, ETA %.0f s%s",
             "#" * filled, "." * (bar_width - filled), position, total, index, first, last,
             seconds, elapsed, eta, (" | " + ", ".join(problems)) if problems else "")
