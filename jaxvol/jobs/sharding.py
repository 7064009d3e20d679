"""The job's device mesh: the lane axis split across the local devices.

The machinery lives in the batching edge, :mod:`jaxvol.batching` (:class:`DeviceMap`, one
executable run by every device; :func:`run_blocks`); this module names what the job uses.
"""

from __future__ import annotations

from jaxvol.batching import (AXIS, COUNTS, DeviceMap, local_mesh, pad_leading, padded_size,
                             shard_leading)

__all__ = ["AXIS", "COUNTS", "DeviceMap", "local_mesh", "padded_size", "pad_leading",
           "shard_leading"]
