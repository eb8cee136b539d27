"""The number predicates behind the validation of COCO-format files (fcos_lab.data.coco_annotations).

They also validate detection files (fcos_lab.detections_file), whose rows may hold numpy scalars.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fcos_lab.data.coco_annotations import is_finite_number, is_json_int


@pytest.mark.parametrize("value, expected", [
    (3, True), (0, True), (-2, True), (np.int64(7), True), (np.int32(7), True),
    (True, False), (False, False), (np.bool_(True), False), (3.0, False), (np.float32(3), False),
    ("3", False), (None, False), ([3], False),
])
def test_is_json_int(value, expected):
    assert is_json_int(value) is expected


@pytest.mark.parametrize("value, expected", [
    (3, True), (2.5, True), (-1e30, True), (np.float32(0.5), True), (np.int64(4), True),
    (math.nan, False), (math.inf, False), (-math.inf, False), (np.float64("nan"), False),
    (True, False), (np.bool_(False), False), ("1.0", False), (None, False),
])
def test_is_finite_number(value, expected):
    assert is_finite_number(value) is expected
