"""The library-wide status numbering (jaxvol.status)."""

import pickle

import numpy as np
import pytest

from jaxvol import status


def test_shared_name_must_keep_shared_code():
    with pytest.raises(ValueError, match="shared code 1"):
        status.domain_status("Bad", "ou", {"BAD_INPUT": 81})


def test_domain_code_must_sit_in_its_block_and_not_collide():
    with pytest.raises(ValueError, match="outside"):
        status.domain_status("Bad", "ou", {"FOO": 10})
    status.domain_status("First", "jobs", {"TEST_ONLY_A": 119})
    with pytest.raises(ValueError, match="collides"):
        status.domain_status("Second", "jobs", {"TEST_ONLY_B": 119})


def test_names_for_tables():
    fit = status.domain_status("FitLike", "calibrate", {"CONVERGED": 0, "AT_BOUND": 6})
    names = status.status_names(np.array([[0, 6], [3, 6]]), fit)
    assert names.tolist() == [["CONVERGED", "AT_BOUND"], ["NON_FINITE", "AT_BOUND"]]
    assert status.status_name(0) == "OK" and status.status_name(12345) == "UNKNOWN_12345"


def test_status_pickles():
    assert pickle.loads(pickle.dumps(status.Status.AT_BOUND)) is status.Status.AT_BOUND
