"""``jaxvol`` command line: ``demo``, ``nightly``, ``merge`` (``jaxvol --help`` lists them)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["build_parser", "main"]


def _add_demo(subparsers) -> None:
    demo = subparsers.add_parser(
        "demo", help="invert a synthetic option board in one jitted batch and print a summary")
    demo.add_argument("--underlyings", type=int, default=300)
    demo.add_argument("--expiries", type=int, default=12)
    demo.add_argument("--strikes", type=int, default=60)
    demo.add_argument("--seed", type=int, default=2026)
    demo.add_argument("--float32", action="store_true", help="run in float32 instead of float64")
    demo.set_defaults(handler=_demo_main)


def _demo_main(args: argparse.Namespace) -> int:
    from jaxvol.jobs.demo import run_demo

    print(run_demo(underlyings=args.underlyings, expiries=args.expiries, strikes=args.strikes,
                   seed=args.seed, float32=args.float32))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxvol", description="Batch volatility analytics in pure JAX.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(subparsers)
    from jaxvol.jobs.commands import add_commands

    add_commands(subparsers)
    from jaxvol.divergence.command import add_command as add_divergence

    add_divergence(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from jaxvol._runtime import configure

    args = build_parser().parse_args(argv)
    configure(x64=not getattr(args, "float32", False))
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
