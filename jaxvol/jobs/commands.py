"""The ``nightly`` and ``merge`` subcommands of the ``jaxvol`` CLI (registered by jaxvol.cli)."""

from __future__ import annotations

import argparse
import logging
import sys

__all__ = ["add_commands", "nightly_main", "merge_main"]


def add_commands(subparsers) -> None:
    """Register ``nightly`` and ``merge`` on an argparse subparsers object."""
    nightly = subparsers.add_parser(
        "nightly", help="recalibration job: chains -> flags, IVs, fits, Heston, indices, report",
        description="Run the nightly job. Without --input it runs on the embedded synthetic "
        "market (2,000 underlyings x 8 expiries x 40 strikes) plus the SPX board of the Cboe "
        "VIX example.")
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
    nightly.add_argument("--fresh", action="store_true",
                         help="discard checkpoints in --out instead of resuming")
    nightly.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                         help="override a config value (TOML syntax), e.g. --set "
                         "market.underlyings=200")
    nightly.set_defaults(handler=nightly_main)
    merge = subparsers.add_parser("merge", help="assemble the partitions of a multi-process "
                                  "nightly run into its outputs and report")
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


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)


def nightly_main(args: argparse.Namespace) -> int:
    import jaxvol
    jaxvol.configure()
    from jaxvol.jobs import ConfigError, JobError, load_config, merge_overrides, run_nightly
    from jaxvol.jobs.merge import format_summary
    _logging()
    try:
        config = merge_overrides(load_config(args.config), _overrides(args.set))
        num_processes, process_id = args.num_processes, args.process_id
        if args.distributed:
            import jax
            jax.distributed.initialize()
            num_processes, process_id = jax.process_count(), jax.process_index()
        summary = run_nightly(config, out=args.out, input_path=args.input,
                              warm_start=args.warm_start, num_processes=num_processes,
                              process_id=process_id, fresh=args.fresh)
    except (ConfigError, JobError, FileNotFoundError) as error:
        print(f"jaxvol nightly: error: {error}", file=sys.stderr)
        return 2
    if "stages" in summary:
        print(format_summary(summary))
    else:
        print(f"process {process_id} of {num_processes} finished chunks {summary['chunks']}; "
              f"run `jaxvol merge --out {args.out}` when all processes are done")
    return 0


def merge_main(args: argparse.Namespace) -> int:
    import jaxvol
    jaxvol.configure()
    from jaxvol.jobs import JobError
    from jaxvol.jobs.merge import format_summary, merge
    _logging()
    try:
        summary = merge(args.out)
    except (JobError, FileNotFoundError) as error:
        print(f"jaxvol merge: error: {error}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0
