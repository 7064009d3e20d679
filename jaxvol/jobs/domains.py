"""Defensive access to the domain packages the job strings together.

Each stage asks for the public names it needs; a missing package or name raises
:class:`StageUnavailable`, which the runner records as a skipped stage (never a crash).
"""

from __future__ import annotations

import importlib

__all__ = ["StageUnavailable", "module", "require"]


class StageUnavailable(RuntimeError):
    """A stage cannot run here: a domain module or input it needs is not available."""


_ALIASES = {"jaxvol.svi": "jaxvol.smile.svi", "jaxvol.sabr": "jaxvol.smile.sabr",
            "jaxvol.ssvi": "jaxvol.smile.ssvi"}


def _module(dotted: str):
    """``jaxvol.x`` as a module, an attribute re-exported by its parent, or its home module."""
    parent, _, name = dotted.rpartition(".")
    try:
        return importlib.import_module(dotted)
    except ImportError as error:
        reason = error
    try:
        return getattr(importlib.import_module(parent), name)
    except (ImportError, AttributeError):
        pass
    if dotted in _ALIASES:
        try:
            return importlib.import_module(_ALIASES[dotted])
        except ImportError as error:
            reason = error
    raise StageUnavailable(f"{dotted} is not available ({reason})")


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


def module(dotted: str, *names: str):
    """The module ``jaxvol.x`` after checking that it has ``names`` (else StageUnavailable)."""
    require(dotted, *names)
    return _module(dotted)
