"""The job's exceptions, in a module of their own so that every part of the job (pipeline,
merge, stages) imports them without importing each other."""

from __future__ import annotations

__all__ = ["JobError", "SlicesFailed", "StageUnavailable"]


class JobError(RuntimeError):
    """The job cannot run as asked (wrong output folder, missing partitions, ...)."""


class StageUnavailable(RuntimeError):
    """A stage cannot run here: disabled, or an input it needs is missing (recorded as
    skipped, never a crash)."""


class SlicesFailed(RuntimeError):
    """A per-slice stage failed on some slices only: they were isolated and marked (status
    STAGE_FAILED, the reason in ``failed_stages``), the other slices keep their results. The
    stage counts as failed on the chunk, but the chunk needs no rerun."""
