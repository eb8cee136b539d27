"""Property: any mutation of a valid COCO file either loads cleanly or raises DataError naming the file."""

from __future__ import annotations

import copy
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fcos_lab.data.coco import CocoDetection
from fcos_lab.data.coco_annotations import load_coco_annotations
from fcos_lab.errors import DataError

BASE = {
    "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
               {"id": 2, "file_name": "b.png", "width": 50, "height": 50}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [2.0, 3.0, 10.0, 12.0], "area": 120.0, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 7, "bbox": [5.0, 5.0, 20.0, 20.0], "area": 400.0, "iscrowd": 0},
    ],
    "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
}

ODD_VALUES = st.sampled_from(
    [None, "x", -1, 0, 1.5, math.nan, math.inf, -math.inf, [], {}, [1, 2], [1, 2, 3, 4, 5], True, 10**12, "1"]
)
SECTIONS = ["images", "annotations", "categories"]


@st.composite
def mutated(draw):
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop_section", "set_field", "drop_field", "duplicate", "replace_section"]))
        section = draw(st.sampled_from(SECTIONS))
        if kind == "drop_section":
            data.pop(section, None)
            continue
        if kind == "replace_section":
            data[section] = draw(ODD_VALUES)
            continue
        records = data.get(section)
        if not isinstance(records, list) or not records:
            continue
        index = draw(st.integers(0, len(records) - 1))
        record = records[index]
        if not isinstance(record, dict):
            continue
        if kind == "duplicate":
            records.append(copy.deepcopy(record))
        elif kind == "drop_field" and record:
            record.pop(draw(st.sampled_from(sorted(record))))
        elif kind == "set_field":
            key = draw(st.sampled_from(sorted(record) + ["extra"]))
            record[key] = draw(ODD_VALUES)
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated())
def test_mutated_coco_loads_or_raises_data_error(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("coco")
    path = folder / "instances_mutated.json"
    path.write_text(json.dumps(data, allow_nan=True))
    try:
        load_coco_annotations(path)
        dataset = CocoDetection(path, folder, train=False)
        assert len(dataset) >= 0
    except DataError as error:
        assert "instances_mutated.json" in str(error)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=40), st.binary(max_size=40).map(lambda b: b.decode("latin-1"))))
def test_not_json_at_all(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("coco") / "garbage.json"
    path.write_text(text)
    try:
        load_coco_annotations(path)
    except DataError as error:
        assert "garbage.json" in str(error)
