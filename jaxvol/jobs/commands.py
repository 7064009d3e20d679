"""The ``nightly`` and ``merge`` subcommands of the ``jaxvol`` CLI (registered by jaxvol.cli)."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["add_commands", "nightly_main", "merge_main", "exit_code", "EXIT_OK",
           "EXIT_STAGE_FAILED", "EXIT_INVALID", "EXIT_BUSY", "EXIT_INTERRUPTED"]


def add_commands(subparsers) -> None:
    """Register ``nightly`` and ``merge`` on an argparse subparsers object."""
    nightly = subparsers.add_parser(
        "nightly", help="recalibration job: chains -> flags, IVs, fits, Heston, indices, report",
        description="Run the nightly job. Without --input it runs on the embedded synthetic "
        "market (2,000 underlyings x 8 expiries x 40 strikes) plus the SPX board of the Cboe "
        "VIX example.", epilog=INPUT_SCHEMA + "\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    nightly.add_argument("--config", help="TOML config (default: the embedded nightly config)")
    nightly.add_argument("--input", help="chains table (Parquet or CSV) in the long schema")
    nightly.add_argument("--out", default="nightly-out", help="output folder")
    nightly.add_argument("--warm-start", metavar="PREVIOUS_OUT",
                         help="previous run's output folder: fits start from its parameters")
    nightly.add_argument("--num-processes", type=int, default=1,
                         help="processes sharing the job (each runs with its --process-id)")
    nightly.add_argument("--process-id", type=int, default=0)
    nightly.add_argument("--distributed", action="store_true",
                         help="take process count and id from jax.distributed.initialize() "
                         "(environment discovery on a cluster)")
    where = nightly.add_mutually_exclusive_group()
    where.add_argument("--cluster", metavar="local:N",
                       help="run the chunks as Dask tasks on a LocalCluster of N worker "
                       "processes started here (needs jaxvol[dask])")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the chunks as Dask tasks on a running cluster, e.g. "
                       "tcp://head:8786 (workers must reach --out and --input)")
    nightly.add_argument("--fresh", action="store_true",
                         help="discard checkpoints in --out instead of resuming")
    nightly.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                         help="override a config value (TOML syntax), e.g. --set "
                         "market.underlyings=200")
    nightly.set_defaults(handler=nightly_main)
    merge = subparsers.add_parser("merge", help="assemble the partitions of a multi-process "
                                  "nightly run into its outputs and report", epilog=EXIT_CODES,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    merge.add_argument("--out", required=True, help="the run's output folder")
    merge.set_defaults(handler=merge_main)


def _overrides(items: list[str]) -> dict:
    import tomllib
    from jaxvol.jobs.config import ConfigError
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r} must look like section.key=value")
        try:
            values[key.strip()] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            values[key.strip()] = text
    return values


EXIT_OK = 0
EXIT_STAGE_FAILED = 1
EXIT_INVALID = 2
EXIT_BUSY = 3
EXIT_INTERRUPTED = 130
EXIT_CODES = f"""exit codes:
  {EXIT_OK}    every stage succeeded on every chunk
  {EXIT_STAGE_FAILED}    the run finished but a stage failed on some chunk (the summary counts
       failures per stage and shows the first error of each; tracebacks are in run.log)
  {EXIT_INVALID}    invalid configuration, arguments or input, found before any work started
  {EXIT_BUSY}    the output folder is in use by another run (nothing was written)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); rerun the same command to resume"""

INPUT_SCHEMA = """input table (--input, Parquet or CSV, one row per quote):
  underlying   identifier, read as text ("0005" stays "0005")
  expiry       time to expiry in years, or a date/timestamp (ISO 8601 in CSV, a datetime
               column in Parquet) together with quote_time; year fraction by input.day_count
               (ACT/365F default); a date alone means 00:00 of that day
  strike       strike price
  option_type  C / P (or call / put, any case)
  bid, ask     best bid and ask (NaN allowed: the row is flagged)
 optional:
  quote_time   time of the quotes (required with date expiries; time zones on both or neither)
  mid          replaces (bid + ask) / 2
  spot, forward, rate, dividend_yield, discount
               carry inputs (rate and dividend_yield continuous per year); rows of a slice
               must agree (a disagreeing row is flagged INCONSISTENT_CARRY)
 A bad cell (text in a number column, unknown option type, missing key) flags its row
 (quality_flags, with the input row number row_id = data row, 0-based); it never stops the
 run. Columns named like outputs (row_id, input_flags, quality_flags, usable, forward_se,
 discount_se, parity_forward, expiry_date, expiry_input, iv_*) are rejected."""


class _ConsoleFormatter(logging.Formatter):
    """One line per record on the console: tracebacks go to the run log only."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text = saved


def _logging() -> logging.Handler:
    """jaxvol's progress on stderr (INFO); everything else (JAX, XLA) at WARNING only."""
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ConsoleFormatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("jaxvol")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for old in [h for h in logger.handlers if getattr(h, "_jaxvol_console", False)]:
        logger.removeHandler(old)
    handler._jaxvol_console = True
    logger.addHandler(handler)
    for name in ("jax", "jax._src", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


def _console(function):
    """Run a subcommand with the console handler attached, and detached afterwards."""
    def run(args: argparse.Namespace) -> int:
        handler = _logging()
        try:
            return function(args)
        finally:
            logger = logging.getLogger("jaxvol")
            logger.removeHandler(handler)
            logger.propagate = True
    run.__name__ = function.__name__
    run.__doc__ = function.__doc__
    return run


def _error(command: str, error: BaseException) -> None:
    print(f"jaxvol {command}: error: {error}", file=sys.stderr)


def exit_code(summary: dict) -> int:
    """EXIT_STAGE_FAILED when any stage failed (or was blocked by a failure) on any chunk."""
    failed = sum(info.get("failed", 0) for info in summary.get("stages", {}).values())
    return EXIT_STAGE_FAILED if failed else EXIT_OK


def _dask_client(args: argparse.Namespace):
    """A context manager giving the Dask client of ``--cluster``/``--scheduler`` (or None)."""
    import contextlib
    from jaxvol.jobs.config import ConfigError
    if not (args.cluster or args.scheduler):
        return contextlib.nullcontext(None)
    if args.num_processes != 1 or args.distributed:
        raise ConfigError("--cluster/--scheduler run every chunk of the job; they do not go "
                          "with --num-processes/--process-id/--distributed")
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("--cluster/--scheduler need Dask: pip install 'jaxvol[dask]'"
                          ) from None
    if args.scheduler:
        from jaxvol.jobs.errors import JobError
        try:
            return Client(args.scheduler, timeout="30s")
        except OSError as error:
            raise JobError(f"--scheduler {args.scheduler}: cannot connect ({error})") from None
    kind, _, count = args.cluster.partition(":")
    if kind != "local" or not count.isdigit() or int(count) < 1:
        raise ConfigError(f"--cluster {args.cluster!r} must look like local:N (N >= 1 worker "
                          "processes); for a cluster you run, use --scheduler ADDRESS")
    from jaxvol.jobs.cluster import start_local_cluster

    @contextlib.contextmanager
    def local():
        with start_local_cluster(int(count)) as cluster, Client(cluster) as client:
            yield client
    return local()


@_console
def nightly_main(args: argparse.Namespace) -> int:
    import jaxvol
    jaxvol.configure()
    from jaxvol.jobs import ConfigError, JobError, load_config, merge_overrides, run_nightly
    from jaxvol.jobs.merge import format_summary
    from jaxvol.jobs.pipeline import OutputBusy
    from jaxvol.jobs.source import InputError
    try:
        config = merge_overrides(load_config(args.config), _overrides(args.set))
        num_processes, process_id = args.num_processes, args.process_id
        if num_processes < 1:
            raise ConfigError(f"--num-processes must be >= 1, got {num_processes}")
        if args.distributed:
            import jax
            jax.distributed.initialize()
            num_processes, process_id = jax.process_count(), jax.process_index()
        with _dask_client(args) as client:
            summary = run_nightly(config, out=args.out, input_path=args.input,
                                  warm_start=args.warm_start, num_processes=num_processes,
                                  process_id=process_id, fresh=args.fresh, client=client)
    except OutputBusy as error:
        _error("nightly", error)
        return EXIT_BUSY
    except (ConfigError, InputError, JobError, FileNotFoundError) as error:
        _error("nightly", error)
        return EXIT_INVALID
    except KeyboardInterrupt:
        _error("nightly", "interrupted; rerun the same command to resume from the checkpoints")
        return EXIT_INTERRUPTED
    if "stages" in summary:
        print(format_summary(summary))
        return exit_code(summary)
    print(f"process {process_id} of {num_processes} finished chunks {summary['chunks']}; "
          f"run `jaxvol merge --out {args.out}` when all processes are done")
    return EXIT_STAGE_FAILED if summary.get("failed") else EXIT_OK


@_console
def merge_main(args: argparse.Namespace) -> int:
    import jaxvol
    jaxvol.configure()
    from jaxvol.jobs import JobError
    from jaxvol.jobs.merge import format_summary, merge
    from jaxvol.jobs.pipeline import OutputBusy, output_lock
    try:
        with output_lock(args.out, "merge"):
            summary = merge(args.out)
    except OutputBusy as error:
        _error("merge", error)
        return EXIT_BUSY
    except (JobError, FileNotFoundError) as error:
        _error("merge", error)
        return EXIT_INVALID
    print(format_summary(summary))
    return exit_code(summary)
