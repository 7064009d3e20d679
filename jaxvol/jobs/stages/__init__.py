"""The per-chunk stages of the nightly job, one module per domain.

Each stage reads and extends a :class:`Chunk` (the rows of a few hundred underlyings and what
has been computed from them) and calls one domain's public API; the job fits nothing itself:

``analyze``    jaxvol.chains.compute: quality flags, forwards, bid/mid/ask implied vols
``arbitrage``  jaxvol.chains.report: static no-arbitrage violations per slice
``pack``       the per-slice out-of-the-money arrays (jaxvol.jobs.slices)
``ssvi``       jaxvol.ssvi.fit per underlying (all expiries at once)
``svi``        jaxvol.svi.fit per slice (``prior=`` the slice's SSVI smile with ``svi.prior``)
``sabr``       jaxvol.sabr.fit per slice (``initial=`` yesterday's parameters when warm)
``heston``     jaxvol.heston.calibrate per underlying (``initial=`` yesterday's when warm)
``indices``    jaxvol.indices: Cboe-method 30-day index and VXJ-method term structure

Every fit runs through :func:`jaxvol.batching.run_blocks` over the job's device mesh, in fixed
blocks: one program per stage and bucket for the whole run. A stage that cannot run raises
:class:`StageUnavailable` (recorded as skipped). :func:`run_stage` runs one stage; a failure of
a per-slice stage (:data:`SLICE_STAGES`) is narrowed down to the failing slices
(:mod:`jaxvol.jobs.stages.isolation`).
"""

from __future__ import annotations

from typing import Callable

from jaxvol.jobs.errors import StageUnavailable
from jaxvol.jobs.stages.chains import analyze, arbitrage, pack
from jaxvol.jobs.stages.common import Chunk, JobEnv
from jaxvol.jobs.stages.heston import HESTON_PARAMS, heston
from jaxvol.jobs.stages.indices import indices
from jaxvol.jobs.stages.isolation import SLICE_STAGES, isolate_slices
from jaxvol.jobs.stages.sabr import SABR_PARAMS, sabr
from jaxvol.jobs.stages.ssvi import ssvi
from jaxvol.jobs.stages.svi import SVI_PARAMS, svi

__all__ = ["Chunk", "HESTON_PARAMS", "JobEnv", "SABR_PARAMS", "SLICE_STAGES", "STAGES",
           "SVI_PARAMS", "StageUnavailable", "run_stage"]

STAGES: dict[str, Callable[[Chunk, JobEnv], None]] = {
    "analyze": analyze, "arbitrage": arbitrage, "pack": pack, "ssvi": ssvi, "svi": svi,
    "sabr": sabr, "heston": heston, "indices": indices,
}


def run_stage(name: str, chunk: Chunk, env: JobEnv) -> None:
    """``STAGES[name](chunk, env)`` (looked up at call time); a per-slice stage that fails is
    rerun on parts of the chunk until the failing slices are found
    (:func:`~jaxvol.jobs.stages.isolation.isolate_slices`: raises
    :class:`~jaxvol.jobs.errors.SlicesFailed` when some were lost)."""
    if name in SLICE_STAGES:
        return isolate_slices(name, STAGES[name], chunk, env)
    return STAGES[name](chunk, env)
