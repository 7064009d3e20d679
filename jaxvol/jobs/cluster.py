"""The nightly job on a Dask cluster: one task per chunk, the client only assembles.

``run_nightly(config, out=..., client=client)`` plans the chunks as the in-process job does and
submits one task per chunk not yet checkpointed: :func:`run_chunk`, a pure function of (config,
chunk id, input location). A task reads its own slice of the input on the worker (the synthetic
market generated for its underlyings, or the chunk's Parquet file of the split input), runs
every stage, writes the chunk's checkpoint atomically (``out/chunks/chunk-NNNNN/``, the same
folder and format as the in-process job) and returns a small summary: no table travels through
the scheduler. The client logs each chunk's progress and stage times (console and run log) and
merges the checkpoints with :func:`jaxvol.jobs.merge` once all are written.

Workers are long-lived processes, so the programs a chunk compiles (jit caches, the device-map
executables of :mod:`jaxvol.batching`) serve every later chunk on that worker; the client's JAX
settings (x64, dtype promotion, the persistent compilation cache folder and thresholds) are
applied on the worker before its first task, so workers share the compilation cache and compute
with the same precision as the in-process job. The first pending chunk runs alone: it writes
the compiled programs to the shared cache whole before other workers look them up (JAX writes
cache entries in place, and a reader of a half-written entry can crash).

Faults: a worker that dies mid-chunk (SIGKILL, out of memory, lost node) leaves no checkpoint
(the chunk folder appears by one rename), and the scheduler runs the task again on another
worker; an exception in a task is retried ``retries`` times. Two attempts of one chunk that both
finish write the same bytes; the second finds the folder there and reports it. A client that
dies loses nothing written: rerun, and the chunks on disk are reused. The output folder's lock
(:class:`jaxvol.jobs.pipeline.output_lock`) is held by the client, so a second client on the
same ``--out`` refuses before writing anything.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import socket
import time
import uuid

from jaxvol.jobs import pipeline
from jaxvol.jobs.errors import JobError

__all__ = ["RETRIES", "RUNTIME_OPTIONS", "HOLD_ENV", "MALLOC_ENV", "run_chunk", "run_chunks",
           "runtime_settings", "source_spec", "start_local_cluster"]

log = logging.getLogger("jaxvol.jobs")

RETRIES = 2
"""Reruns of a chunk whose task raised (a worker's death is handled by the scheduler apart:
its tasks go to other workers, up to ``distributed.scheduler.allowed-failures`` times)."""

RUNTIME_OPTIONS = ("jax_enable_x64", "jax_numpy_dtype_promotion", "jax_default_matmul_precision",
                   "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
                   "jax_persistent_cache_min_entry_size_bytes", "jax_compilation_cache_max_size")
"""JAX settings the client passes to its workers (the job's results depend on the first two;
the cache settings make the workers share the client's persistent compilation cache, under
JAX's file lock when a size cap is set: see :func:`jaxvol.enable_compilation_cache`)."""

HOLD_ENV = "JAXVOL_TEST_HOLD_DIR"
"""Test hook (set in the workers' environment): when ``$JAXVOL_TEST_HOLD_DIR/hold-chunk-K``
exists, the first task of chunk K to start renames it to ``held-chunk-K``, writes its process
id there and sleeps (so that a test can kill the worker in the middle of a chunk)."""


# ------------------------------------------------------------------------------ client side
def runtime_settings() -> dict:
    """The JAX settings of this process that workers take over (see :data:`RUNTIME_OPTIONS`)."""
    import jax
    settings = {}
    for name in RUNTIME_OPTIONS:
        try:
            settings[name] = getattr(jax.config, name)
        except AttributeError:  # pragma: no cover - an option this JAX does not have
            continue
    return settings


def source_spec(source) -> dict:
    """Where a worker finds a chunk's rows: the synthetic market's settings, or the folder of
    the split input's per-chunk Parquet files (a path, never the table)."""
    from jaxvol.jobs.source import FileSource
    if isinstance(source, FileSource):
        return {"kind": "file", "work_dir": str(source.work_dir.resolve())}
    return {"kind": "synthetic", "market": dict(source.market)}


MALLOC_ENV = "MALLOC_TRIM_THRESHOLD_"
"""Dask's nannies start workers with ``MALLOC_TRIM_THRESHOLD_=65536``
(``distributed.nanny.pre-spawn-environ``), which makes glibc return freed memory at once: the
SSVI stage then runs about 3x slower (1.2 s -> 3.6 s per 125 underlyings, measured in-process
with and without the variable) and a LocalCluster job ran slower than in-process. Local clusters
start their workers without it; a worker that has it logs a warning (remote clusters: set
``distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_: null`` in the workers' Dask
config)."""


def start_local_cluster(workers: int, **kwargs):
    """A LocalCluster of ``workers`` processes with one thread each (a chunk uses every core of
    its process through XLA; two chunks in one process would share JAX's global settings),
    started without Dask's malloc trim setting (see :data:`MALLOC_ENV`)."""
    import dask
    from distributed import LocalCluster
    options = {"n_workers": workers, "threads_per_worker": 1, "processes": True}
    options.update(kwargs)
    # read by each Nanny when it is created (and kept for the workers it restarts)
    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{MALLOC_ENV}": None}):
        return LocalCluster(**options)


def _check_workers(client) -> int:
    threads = client.nthreads()
    if not threads:
        log.info("dask: no worker connected yet; tasks wait for the first one")
    crowded = [address for address, count in threads.items() if count > 1]
    if crowded:
        log.warning("dask: %d worker(s) run %d+ threads; jaxvol chunks are best run one per "
                    "process (start workers with --nthreads 1): XLA uses every core anyway",
                    len(crowded), max(threads.values()))
    return len(threads)


def run_chunks(client, config: dict, out: pathlib.Path, source, chunks: list[tuple[int, int]],
               warm_start: str | None, started: float) -> dict:
    """Submit the chunks not yet checkpointed, log each as it finishes, wait for all.

    Returns ``{"workers", "dashboard", "computed", "reused", "tasks"}`` for the run summary.
    Raises the first task error (after its retries), :class:`JobError` when workers kept dying
    on a chunk, and :class:`SimulatedCrash` on the :data:`pipeline.CRASH_ENV` hook.
    """
    from distributed import as_completed
    pending = [c for c in range(len(chunks)) if not pipeline._chunk_dir(out, c).exists()]
    reused = [c for c in range(len(chunks)) if c not in set(pending)]
    workers = _check_workers(client)
    dashboard = getattr(client, "dashboard_link", None)
    log.info("dask: scheduler %s, %d worker(s); dashboard: %s", client.scheduler.address,
             workers, dashboard or "none")
    if reused:
        log.info("%d of %d chunks already checkpointed: reused (resume)", len(reused),
                 len(chunks))
    token = uuid.uuid4().hex[:8]
    spec, runtime = source_spec(source), runtime_settings()

    submitted = []

    def submit(index):
        submitted.append(client.submit(
            run_chunk, config, index, chunks[index], spec, str(out), warm_start, runtime,
            key=f"jaxvol-chunk-{index:05d}-{token}", retries=RETRIES, pure=False))
        return submitted[-1]

    crash_after = os.environ.get(pipeline.CRASH_ENV)
    tasks, rest = [], pending[1:]
    queue = as_completed([submit(pending[0])] if pending else [])
    try:
        for position, future in enumerate(queue, start=1):
            summary = _result(future)
            tasks.append(summary)
            _progress(position, len(pending), summary, source, chunks,
                      time.perf_counter() - started)
            if crash_after is not None and int(crash_after) == summary["chunk"]:
                raise pipeline.SimulatedCrash(f"simulated crash after chunk {summary['chunk']}")
            for index in rest:  # the first chunk has filled the compilation cache: fan out
                queue.add(submit(index))
            rest = []
    except BaseException:
        client.cancel(submitted)  # a task already running finishes (and checkpoints) anyway
        raise
    found = [t["chunk"] for t in tasks if t["status"] != "computed"]  # written meanwhile
    return {"workers": workers, "dashboard": dashboard, "reused": sorted(reused + found),
            "computed": sorted(t["chunk"] for t in tasks if t["status"] == "computed"),
            "tasks": sorted(tasks, key=lambda t: t["chunk"])}


def _result(future) -> dict:
    from distributed import KilledWorker
    try:
        return future.result()
    except KilledWorker as error:
        raise JobError(f"{future.key}: the workers running it died too often ({error}); the "
                       "chunks already written are kept: rerun the same command to resume"
                       ) from None


def _progress(position, total, summary, source, chunks, elapsed):
    bar_width = 24
    filled = int(round(bar_width * position / max(total, 1)))
    eta = elapsed / position * (total - position)
    start, stop = chunks[summary["chunk"]]
    stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in summary["stages"].items())
    problems = summary.get("problems") or []
    log.info("[%s%s] %d/%d chunks | chunk %d (%s..%s) %.1f s on %s (%s) | elapsed %.0f s, "
             "ETA %.0f s | stages s: %s%s", "#" * filled, "." * (bar_width - filled), position,
             total, summary["chunk"], source.names[start], source.names[stop - 1],
             summary["seconds"], summary["worker"], summary["status"], elapsed, eta, stages,
             (" | " + ", ".join(problems)) if problems else "")


# ------------------------------------------------------------------------------ worker side
_WORKER: dict = {"runtime": None, "envs": {}, "sources": {}}
"""What a worker process keeps between tasks: the applied JAX settings, the job environments
(device mesh, yesterday's tables) and the synthetic sources, by their settings."""


def _apply_runtime(runtime: dict) -> None:
    """The client's JAX settings in this worker (once; before its first JAX computation)."""
    if _WORKER["runtime"] == runtime:
        return
    import jax
    for name, value in runtime.items():
        if name == "jax_compilation_cache_dir" and value:
            try:
                pathlib.Path(value).mkdir(parents=True, exist_ok=True)
            except OSError as error:  # not shared with this machine: compile without it
                log.warning("compilation cache %s unusable here (%s)", value, error)
                continue
        try:
            jax.config.update(name, value)
        except (AttributeError, ValueError) as error:  # pragma: no cover - another JAX
            log.warning("cannot apply %s=%r on this worker: %s", name, value, error)
    from jax.experimental.compilation_cache import compilation_cache
    compilation_cache.reset_cache()  # JAX reads the cache settings again at the next compile
    _WORKER["runtime"] = dict(runtime)


def _env(config: dict, warm_start: str | None):
    key = json.dumps([config, warm_start], sort_keys=True, default=str)
    env = _WORKER["envs"].get(key)
    if env is None:
        env = pipeline._make_env(config, warm_start)
        env.first_chunk = -1
        _WORKER["envs"] = {key: env}  # one run at a time per worker: drop older ones
    return env


def _rows(spec: dict, index: int, span: tuple[int, int]):
    from jaxvol.jobs.source import SyntheticSource, chunk_input_path
    if spec["kind"] == "file":
        import pandas as pd
        return pd.read_parquet(chunk_input_path(pathlib.Path(spec["work_dir"]), index))
    key = json.dumps(spec["market"], sort_keys=True)
    source = _WORKER["sources"].get(key)
    if source is None:
        source = _WORKER["sources"][key] = SyntheticSource(spec["market"])
    return source.rows(*span)


def _hold(index: int) -> None:
    folder = os.environ.get(HOLD_ENV)
    if not folder:
        return
    request = pathlib.Path(folder) / f"hold-chunk-{index}"
    held = request.with_name(f"held-chunk-{index}")
    try:
        os.rename(request, held)  # one attempt wins
    except FileNotFoundError:
        return
    held.write_text(str(os.getpid()))
    time.sleep(600)


def run_chunk(config: dict, index: int, span: tuple[int, int], spec: dict, out: str,
              warm_start: str | None, runtime: dict) -> dict:
    """One chunk on a worker: read its rows, run the stages, checkpoint it atomically.

    A pure function of its arguments: a rerun (another attempt, a resumed run) writes the same
    checkpoint, and a chunk already on disk is reported, not recomputed. Returns a small summary
    (chunk, status ``computed`` / ``reused`` / ``written by another attempt``, seconds, stage
    seconds, problems, programs compiled and loaded here, worker, pid).
    """
    from jaxvol import batching
    out = pathlib.Path(out)
    final = pipeline._chunk_dir(out, index)
    summary = {"chunk": index, "worker": socket.gethostname(), "pid": os.getpid(),
               "seconds": 0.0, "stages": {}, "problems": [], "compiled": 0, "loaded": 0}
    try:
        from distributed import get_worker
        summary["worker"] = get_worker().address
    except (ImportError, ValueError):
        pass
    if final.exists():
        return dict(summary, status="reused")
    _apply_runtime(runtime)
    _hold(index)
    started = time.perf_counter()
    before = dict(batching.COUNTS)
    with _run_log(out, summary["worker"]):
        if os.environ.get(MALLOC_ENV) and not _WORKER.get("malloc_warned"):
            _WORKER["malloc_warned"] = True  # once per worker, in the run log
            log.warning("this worker runs with %s=%s (Dask's default): the fits run up to 3x "
                        "slower; start workers with distributed.nanny.pre-spawn-environ.%s: "
                        "null", MALLOC_ENV, os.environ[MALLOC_ENV], MALLOC_ENV)
        rows = _rows(spec, index, tuple(span))
        env = _env(config, warm_start)
        chunk, stage_log = pipeline._process_chunk(index, rows, env,
                                                   time.perf_counter() - started)
        status = _save(out, chunk, stage_log)
    summary.update(
        status=status, seconds=time.perf_counter() - started, rows=len(rows),
        stages={e["stage"]: float(e.get("seconds", 0.0)) for e in stage_log},
        problems=[f"{e['stage']}:{e['status']}" for e in stage_log if e["status"] != "ok"],
        compiled=batching.COUNTS["compiled"] - before.get("compiled", 0),
        loaded=batching.COUNTS["loaded"] - before.get("loaded", 0))
    return summary


class _run_log:
    """The task's jaxvol log records (stage failures with their tracebacks) appended to the
    run's ``run.log``, tagged with the worker, for the duration of the task."""

    def __init__(self, out: pathlib.Path, worker: str):
        self.out, self.worker, self.handler = out, worker, None

    def __enter__(self):
        logger = logging.getLogger("jaxvol")
        self.handler = logging.FileHandler(self.out / "run.log")  # appends (O_APPEND)
        self.handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s %(name)s [{self.worker} pid {os.getpid()}]: "
            "%(message)s"))
        logger.addHandler(self.handler)
        self.level = logger.level
        logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
        return self

    def __exit__(self, *exc):
        logger = logging.getLogger("jaxvol")
        logger.removeHandler(self.handler)
        logger.setLevel(self.level)
        self.handler.close()
        return False


def _save(out: pathlib.Path, chunk, stage_log) -> str:
    """Checkpoint the chunk; another attempt may have renamed its identical folder first."""
    final = pipeline._chunk_dir(out, chunk.index)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        pipeline._save_chunk(out, chunk, stage_log)
    except OSError:
        if not final.exists():
            raise
        import shutil
        shutil.rmtree(final.with_name(f".{final.name}.{os.getpid()}.tmp"), ignore_errors=True)
        return "written by another attempt"
    return "computed"
