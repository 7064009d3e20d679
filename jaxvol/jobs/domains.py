"""Defensive access to the domain packages the job strings together.

Each stage asks for the public names it needs; a missing package or name raises
:class:`StageUnavailable`, which the runner records as a skipped stage (never a crash).
"""

from __future__ import annotations

import importlib

__all__ = ["StageUnavailable", "require"]


class StageUnavailable(RuntimeError):
    """A stage cannot run here: a domain module or input it needs is not available."""


def _module(dotted: str):
    try:
        return importlib.import_module(dotted)
    except ImportError as error:
        raise StageUnavailable(f"{dotted} is not available ({error})") from None


def require(dotted: str, *names: str):
    """``jaxvol.x`` (or the attributes ``names`` of it) or :class:`StageUnavailable`."""
    module = _module(dotted)
    missing = [name for name in names if not hasattr(module, name)]
    if missing:
        raise StageUnavailable(f"{dotted} has no {', '.join(missing)} yet")
    if not names:
        return module
    values = tuple(getattr(module, name) for name in names)
    return values[0] if len(values) == 1 else values
