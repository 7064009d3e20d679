"""Small dense symmetric positive-definite solves, unrolled for a static size.

Batched LAPACK calls on thousands of 3x3 or 5x5 matrices are slow on CPU; an unrolled Cholesky
written as scalar jnp operations becomes a handful of elementwise kernels across the lanes under
``vmap``. A non-positive pivot yields NaN (the caller treats it as a failed step).
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["cholesky_solve"]


def cholesky_solve(matrix, rhs):
    """Solve matrix @ x = rhs for one SPD matrix [n, n] (n static, small) and rhs [n]."""
    n = matrix.shape[-1]
    lower = [[None] * n for _ in range(n)]
    for j in range(n):
        diagonal = matrix[j, j] - sum(lower[j][p] * lower[j][p] for p in range(j))
        root = jnp.sqrt(jnp.where(diagonal > 0, diagonal, jnp.nan))
        lower[j][j] = root
        for i in range(j + 1, n):
            lower[i][j] = (matrix[i, j] - sum(lower[i][p] * lower[j][p] for p in range(j))) / root
    forward = [None] * n
    for i in range(n):
        forward[i] = (rhs[i] - sum(lower[i][p] * forward[p] for p in range(i))) / lower[i][i]
    solution = [None] * n
    for i in reversed(range(n)):
        solution[i] = (forward[i] - sum(lower[p][i] * solution[p] for p in range(i + 1, n))
                       ) / lower[i][i]
    return jnp.stack(solution)
