"""Slice-level isolation of the per-slice stages (``svi``, ``sabr``).

A per-slice stage fits every slice of the chunk in one batched call. When that call raises,
:func:`isolate_slices` reruns the stage on halves of the chunk's slices (a sub-chunk: the same
packed arrays restricted to those slices, so every rerun runs the programs already compiled
for the chunk, and a slice's result does not depend on its batch companions) until each
failing group is one slice, or the rerun budget :data:`ISOLATION_RERUNS` is spent (then the
groups still failing are lost as groups). The slices that pass keep their results (bitwise
those of a clean run); the lost ones get ``<stage>_status`` = ``STAGE_FAILED`` (110), NaN
values and the reason in ``failed_stages``; :class:`~jaxvol.jobs.errors.SlicesFailed` then tells
the pipeline that the stage failed on the chunk but needs no rerun of the chunk.

Stages over whole underlyings (``ssvi``, ``heston``, ``indices``) and the chain stages
(``analyze``, ``arbitrage``: the calendar check pairs neighbouring expiries; ``pack``) are not
split by slice: the pipeline isolates their failures down to one underlying.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import pandas as pd

from jaxvol.jobs import slices as slices_mod
from jaxvol.jobs.errors import SlicesFailed, StageUnavailable
from jaxvol.jobs.stages.common import Chunk, JobEnv

__all__ = ["ISOLATION_RERUNS", "SLICE_STAGES", "STAGE_FAILED", "isolate_slices"]

log = logging.getLogger("jaxvol.jobs")

SLICE_STAGES = ("svi", "sabr")
"""Stages whose result for a slice depends on that slice's quotes only."""

ISOLATION_RERUNS = 64
"""Most reruns of a stage to isolate one chunk's failure (one failing slice among n costs
about 2 log2(n) reruns; a stage failing everywhere stops at the budget, not at 2n)."""

STAGE_FAILED = 110  # jaxvol.jobs.pipeline.JobStatus.STAGE_FAILED (jobs block of jaxvol.status)


def isolate_slices(name: str, stage: Callable[[Chunk, JobEnv], None], chunk: Chunk,
                   env: JobEnv) -> None:
    """``stage(chunk, env)``; if it raises, the failure is narrowed down to its slices."""
    if env.config["job"]["fail_fast"]:
        return stage(chunk, env)
    before = {attr: list(getattr(chunk, attr).columns) if getattr(chunk, attr) is not None
              else None for attr in ("slices", "rows")}
    try:
        return stage(chunk, env)
    except StageUnavailable:
        raise
    except Exception as error:  # noqa: BLE001 - narrowed down below, then reported
        if chunk.batch is None or len(chunk.batch.table) < 2 or before["slices"] is None:
            raise
        for attr, columns in before.items():  # drop what the failed call wrote half-way
            setattr(chunk, attr, getattr(chunk, attr)[columns])
        first = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        log.error("chunk %d: stage %s failed: %s; rerunning it on halves of the chunk's %d "
                  "slices to isolate the failing ones", chunk.index, name, first,
                  len(chunk.batch.table), exc_info=error)
    results, lost = _bisect(stage, chunk, env, np.arange(len(chunk.batch.table)),
                            [ISOLATION_RERUNS], failed=first)
    _write_back(name, chunk, results, lost)
    if not lost:  # every part passed on its own: nothing is lost
        log.warning("chunk %d: stage %s passed on every part of the chunk", chunk.index, name)
        return None
    keys = [(str(chunk.slices["underlying"].iloc[i]), float(chunk.slices["expiry"].iloc[i]))
            for part, _ in lost for i in part]
    shown = ", ".join(f"{u} {e:.6g}" for u, e in keys[:5]) + ("..." if len(keys) > 5 else "")
    raise SlicesFailed(f"slices [{shown}] ({len(keys)} of {len(chunk.batch.table)}): "
                       f"{lost[0][1]}")


def _bisect(stage, chunk, env, part: np.ndarray, budget: list, failed: str | None = None):
    """([(part, sub-chunk)] that passed, [(part, message)] lost) for the slices ``part``
    (``failed``: the message of a failure of ``part`` already seen: not rerun)."""
    if failed is None:
        budget[0] -= 1
        sub = _sub_chunk(chunk, part)
        try:
            stage(sub, env)
            return [(part, sub)], []
        except StageUnavailable:
            raise
        except Exception as error:  # noqa: BLE001 - recorded on the lost slices
            failed = f"{type(error).__name__}: {error}".splitlines()[0][:300]
            log.error("chunk %d: stage failed on %d slice(s): %s", chunk.index, len(part),
                      failed, exc_info=error)
    if len(part) == 1 or budget[0] < 2:
        return [], [(part, failed)]
    half = len(part) // 2
    passed, lost = _bisect(stage, chunk, env, part[:half], budget)
    more_passed, more_lost = _bisect(stage, chunk, env, part[half:], budget)
    return passed + more_passed, lost + more_lost


def _sub_chunk(chunk: Chunk, part: np.ndarray) -> Chunk:
    """The chunk restricted to the slices ``part`` (positions in its packed batch, ascending):
    their rows, their packed arrays (same strike width) and their slice-table rows."""
    batch = chunk.batch
    slice_id = slices_mod.slice_index(chunk.rows)
    rows = chunk.rows[np.isin(slice_id, part)].copy()
    arrays = {f: getattr(batch, f)[part] for f in batch._fields if f != "table"}
    table = batch.table.iloc[part].reset_index(drop=True)
    sub = Chunk(index=chunk.index, rows=rows, analysis=chunk.analysis,
                batch=slices_mod.SliceBatch(table=table, **arrays),
                slices=chunk.slices.iloc[part].reset_index(drop=True).copy())
    return sub


def _write_back(name: str, chunk: Chunk, results: list, lost: list) -> None:
    """Copy the passing parts' new slice and row columns into the chunk; the lost slices get
    STAGE_FAILED statuses, NaN values and the reason in ``failed_stages``."""
    slice_id = slices_mod.slice_index(chunk.rows)
    for attr, position in (("slices", lambda part: part),
                           ("rows", lambda part: np.flatnonzero(np.isin(slice_id, part)))):
        table = getattr(chunk, attr)
        pieces: dict = {}
        for part, sub in results:
            new = getattr(sub, attr)
            for column in new.columns.difference(table.columns, sort=False):
                pieces.setdefault(column, []).append(
                    pd.Series(new[column].to_numpy(), index=position(part)))
        for column, parts in pieces.items():
            full = pd.concat(parts).reindex(np.arange(len(table)))
            table[column] = _filled(full, column, parts[0].dtype).to_numpy()
    if lost:
        reason = np.full(len(chunk.slices), "", dtype=object)
        for part, message in lost:
            reason[part] = f"{name}: {message}"
        previous = (chunk.slices["failed_stages"].fillna("").to_numpy(object)
                    if "failed_stages" in chunk.slices else np.full(len(reason), "", object))
        joined = [f"{a}; {b}" if a and b else a or b for a, b in zip(previous, reason)]
        chunk.slices["failed_stages"] = joined
        _mark_lost_statuses(name, chunk, [p for p, _ in lost])


def _filled(column: pd.Series, name: str, kind) -> pd.Series:
    """A column written for the passing slices only, in its own dtype again."""
    if name.endswith("_status"):
        return column.fillna(STAGE_FAILED).astype(kind)
    if pd.api.types.is_bool_dtype(kind):
        return column.fillna(False).astype(bool)
    if pd.api.types.is_integer_dtype(kind):
        return column.fillna(0).astype(kind)
    return column


def _mark_lost_statuses(name: str, chunk: Chunk, parts: list) -> None:
    """``<stage>_status`` of the lost slices is STAGE_FAILED (where some part passed: with
    none, the stage wrote no column, as when a whole underlying fails, and the merge's
    summary looks for a stage's other columns beside its status)."""
    column = f"{name}_status"
    if column in chunk.slices:
        position = chunk.slices.columns.get_loc(column)
        chunk.slices.iloc[np.concatenate(parts), position] = STAGE_FAILED
