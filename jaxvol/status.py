"""One status vocabulary for the whole library.

Every per-lane status in jaxvol is an ``int32`` code from one numbering: a code means the same
thing in every domain and every output table. The shared outcomes (success, bad input, too few
points, iteration budget, a fit at a bound or at a degenerate limit, ...) have codes 0-9; each
domain owns a block of ten for its own outcomes. A domain's enumeration (``IVStatus``,
``FitStatus``, ...) is an :class:`enum.IntEnum` built by :func:`domain_status`, which checks
that shared names keep their shared codes and that the domain's own codes sit in its block, so
two domains can never reuse a code with another meaning.

Code 0 is success: a usable value (``OK``) or a usable fit (``CONVERGED``: a convergence test
passed *and* the fit is not at a bound or degenerate). Output tables store the code in
``<name>_status`` and its name in ``<name>_status_name`` (:func:`status_name`).
"""

from __future__ import annotations

import enum
import sys

import numpy as np

__all__ = ["Status", "DOMAIN_BLOCKS", "domain_status", "status_name", "status_names"]


class Status(enum.IntEnum):
    """The shared outcomes (codes 0-9), the same in every domain."""

    OK = 0                #: success: a usable value, or a usable fit (named CONVERGED in fits)
    BAD_INPUT = 1         #: an input out of its domain (non-positive spot, |rho| >= 1, ...)
    NON_FINITE_INPUT = 2  #: a NaN or infinite input
    NON_FINITE = 3        #: the computation produced a non-finite value from finite inputs
    TOO_FEW_POINTS = 4    #: too few usable points (quotes, nodes, ticks, pairs) for the task
    MAX_ITERATIONS = 5    #: the iteration budget ran out; the value is the best point found
    AT_BOUND = 6          #: a fitted parameter sits on a bound of its box: not a free optimum
    DEGENERATE = 7        #: a degenerate limit (rho = +-1 with sigma at its floor, b huge, ...)
    UNIDENTIFIED = 8      #: the data cannot identify the model (constant k, all quotes equal)
    ARBITRAGE = 9         #: the value violates a static no-arbitrage bound


#: The block of codes each domain owns for its own outcomes (first code, last code).
DOMAIN_BLOCKS = {
    "implied": (10, 19), "chains": (20, 29), "indices": (30, 39), "fx": (40, 49),
    "calibrate": (50, 59), "mc": (60, 69), "localvol": (70, 79), "ou": (80, 89),
    "leadlag": (90, 99), "divergence": (100, 109), "jobs": (110, 119),
}

_REGISTRY: dict[int, str] = {int(s): s.name for s in Status}
_REGISTRY[0] = "OK"
_ALIASES = {"CONVERGED": 0, "SUCCESS": 0}


def domain_status(name: str, domain: str, members: dict[str, int], doc: str = "",
                  aliases: dict[str, str] | None = None) -> type:
    """An IntEnum for one domain: shared names at their shared codes, own codes in its block.

    ``members`` maps member names to codes. A name of :class:`Status` (or ``CONVERGED``, the
    fits' name for 0) must have its shared code; any other name must have a code in
    ``DOMAIN_BLOCKS[domain]`` that no other domain registered under another name.
    ``aliases`` maps old member names to a member's name (``{"INVALID_INPUT": "BAD_INPUT"}``):
    ``Enum.INVALID_INPUT is Enum.BAD_INPUT``, so user code written against an older name keeps
    working, while tables and ``Enum(code).name`` use the canonical name.
    """
    low, high = DOMAIN_BLOCKS[domain]
    for member, code in members.items():
        code = int(code)
        if member in Status.__members__ or member in _ALIASES:
            shared = _ALIASES.get(member, Status.__members__.get(member))
            if code != int(shared):
                raise ValueError(f"{name}.{member} must have the shared code {int(shared)}, "
                                 f"got {code}")
            continue
        if not low <= code <= high:
            raise ValueError(f"{name}.{member} = {code} lies outside the {domain!r} block "
                             f"{low}-{high}")
        known = _REGISTRY.get(code)
        if known is not None and known != member:
            raise ValueError(f"{name}.{member} = {code} collides with {known} = {code}")
        _REGISTRY[code] = member
    items = [(m, int(c)) for m, c in members.items()]
    for old, new in (aliases or {}).items():
        if new not in members:
            raise ValueError(f"{name}: alias {old} names an unknown member {new}")
        if old in members:
            raise ValueError(f"{name}: alias {old} is also a member")
        items.append((old, int(members[new])))  # a later equal value is an enum alias
    module = sys._getframe(1).f_globals.get("__name__", __name__)  # so members pickle
    enum_type = enum.IntEnum(name, items, module=module)
    enum_type.__doc__ = doc or f"Per-lane outcome codes of jaxvol.{domain} (see jaxvol.status)."
    return enum_type


def status_name(code, enum_type: type | None = None) -> str:
    """The name of one status code: ``enum_type``'s member name if given (so a fit's 0 reads
    ``CONVERGED``), else the library-wide name; ``"UNKNOWN_<code>"`` if none is registered."""
    code = int(code)
    if enum_type is not None:
        try:
            return enum_type(code).name
        except ValueError:
            pass
    return _REGISTRY.get(code, f"UNKNOWN_{code}")


def status_names(codes, enum_type: type | None = None) -> np.ndarray:
    """Names of an array of codes (object array of str, same shape), for output tables."""
    codes = np.asarray(codes)
    lookup = {int(c): status_name(c, enum_type) for c in np.unique(codes)}
    flat = [lookup[int(c)] for c in codes.reshape(-1)]
    return np.asarray(flat, dtype=object).reshape(codes.shape)
