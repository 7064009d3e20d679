"""The nightly recalibration job: config, chunked pipeline, sharding, partitions, merge.

``run_nightly(config, out=..., input_path=None, warm_start=None, num_processes=1,
process_id=0, client=None)`` runs (or resumes) the job, in this process or, given a
``dask.distributed.Client``, as one Dask task per chunk (:mod:`jaxvol.jobs.cluster`);
``merge(out)`` assembles a multi-process run; ``load_config(path)`` reads and validates a TOML
config (``None``: embedded default).
"""

from jaxvol.jobs.config import (ConfigError, default_config, dump_toml, load_config,
                                merge_overrides, validate_config)
from jaxvol.jobs.merge import merge
from jaxvol.jobs.pipeline import JobError, SimulatedCrash, run_nightly

__all__ = ["ConfigError", "JobError", "SimulatedCrash", "default_config", "dump_toml",
           "load_config", "merge", "merge_overrides", "run_nightly", "validate_config"]
