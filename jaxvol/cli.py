"""``jaxvol`` command line: ``demo``, ``nightly``, ``merge`` (``jaxvol --help`` lists them)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["build_parser", "main"]


def _at_least(low: int):
    """argparse type: an integer >= ``low`` (a one-line usage error otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"
    return parse


def _add_demo(subparsers) -> None:
    demo = subparsers.add_parser(
        "demo", help="invert a synthetic option board in one jitted batch and print a summary")
    demo.add_argument("--underlyings", type=_at_least(1), default=300)
    demo.add_argument("--expiries", type=_at_least(1), default=12)
    demo.add_argument("--strikes", type=_at_least(1), default=60)
    demo.add_argument("--seed", type=_at_least(0), default=2026)
    demo.add_argument("--float32", action="store_true", help="run in float32 instead of float64")
    demo.set_defaults(handler=_demo_main)


def _demo_main(args: argparse.Namespace) -> int:
    from jaxvol.jobs.demo import run_demo

    print(run_demo(underlyings=args.underlyings, expiries=args.expiries, strikes=args.strikes,
                   seed=args.seed, float32=args.float32))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from jaxvol import __version__
    parser = argparse.ArgumentParser(
        prog="jaxvol", description="Batch volatility analytics in pure JAX.")
    parser.add_argument("--version", action="version", version=f"jaxvol {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(subparsers)
    from jaxvol.jobs.commands import add_commands

    add_commands(subparsers)
    from jaxvol.divergence.command import add_command as add_divergence

    add_divergence(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # XLA's INFO lines off the console
    from jaxvol._runtime import configure

    args = build_parser().parse_args(argv)
    configure(x64=not getattr(args, "float32", False))
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
