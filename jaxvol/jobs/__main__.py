"""``python -m jaxvol.jobs nightly|merge ...``: the job's subcommands without the full CLI."""

import argparse
import sys

from jaxvol.jobs.commands import add_commands

__all__ = ["main"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxvol.jobs")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
