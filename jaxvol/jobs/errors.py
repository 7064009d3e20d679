"""The job's exceptions, in a module of their own so that every part of the job (pipeline,
merge, stages) imports them without importing each other."""

from __future__ import annotations

__all__ = ["JobError", "StageUnavailable"]


class JobError(RuntimeError):
    """The job cannot run as asked (wrong output folder, missing partitions, ...)."""


class StageUnavailable(RuntimeError):
    """A stage cannot run here: disabled, or an input it needs is missing (recorded as
    skipped, never a crash)."""
