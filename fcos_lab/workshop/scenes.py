"""The inputs of the checks: images reduced to their locations and boxes ("scenes"), hand-made, random or real.

A :class:`Scene` holds what the assignment of one image needs (Sections 3.1-3.2, Table 3): the locations of
its levels, the size ranges, the center-sampling radius and the boxes, plus the words a check uses to name
a location ("location (36, 20) on P3") or a box. Hand-made scenes are written in the checks; this module
makes random ones (:func:`random_scenes`) and real ones (:func:`real_scenes`): the images of a COCO-format
dataset in a config's training frame (the workshop's synthetic shapes, or a COCO file an instructor
points to), with the config's levels, ranges and radius.

Boxes of random and real scenes have whole-pixel coordinates: every distance, center and area is then
exact in float32, so a location on a side or a range boundary is decided the same way by any correct code.

Glossary: P locations, M boxes, L levels; boxes xyxy in input-image pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fcos_lab.config import Config
from fcos_lab.data.coco import CocoDetection
from fcos_lab.data.samples import dataset_sample, resize_sample
from fcos_lab.objective import Objective
from fcos_lab.points import Locations, grid_shapes, make_locations

# Random scenes: three levels, ranges doubling as the paper's m_i = 8 x stride, on small images.
RANDOM_STRIDES = (8, 16, 32)
RANDOM_RANGES = ((0.0, 32.0), (32.0, 64.0), (64.0, math.inf))


@dataclass(frozen=True)
class Scene:
    """One image as the assignment sees it.

    Attributes:
        name: the scene in words.
        image_size: ``(h, w)`` of the (padded) input.
        locations: the locations of every level.
        level_names: ``"P3"``... of each level.
        size_ranges: ``(m_{i-1}, m_i)`` of each level.
        radius: center-sampling radius in strides (0: off).
        boxes: ``[M, 4]`` xyxy; ``labels`` ``[M]`` class indices.
    """

    name: str
    image_size: tuple[int, int]
    locations: Locations
    level_names: tuple[str, ...]
    size_ranges: tuple[tuple[float, float], ...]
    radius: float
    boxes: Tensor
    labels: Tensor

    @property
    def ranges_per_location(self) -> Tensor:
        """``[P, 2]`` (m_{i-1}, m_i) of each location's level."""
        return torch.tensor(self.size_ranges, dtype=torch.float32)[self.locations.level_index]

    def where(self, p: int) -> str:
        """``"location (36, 20) on P3"``."""
        x, y = self.locations.points[p].tolist()
        return f"location ({x:g}, {y:g}) on {self.level_names[int(self.locations.level_index[p])]}"

    def level_of(self, p: int) -> str:
        """``"P3 (stride 8, range [0, 64])"``."""
        level = int(self.locations.level_index[p])
        lo, hi = self.size_ranges[level]
        return f"{self.level_names[level]} (stride {int(self.locations.strides[p])}, range [{lo:g}, {hi:g}])"

    def box(self, m: int) -> str:
        """``"box 2 [0, 0, 40, 40] (area 1600)"``."""
        x0, y0, x1, y1 = self.boxes[m].tolist()
        return f"box {m} [{x0:g}, {y0:g}, {x1:g}, {y1:g}] (area {(x1 - x0) * (y1 - y0):g})"


def level_name(stride: int) -> str:
    """``"P3"`` for stride 8: FPN levels are named after ``log2(stride)``."""
    return f"P{round(math.log2(stride))}" if stride & (stride - 1) == 0 else f"stride {stride}"


def make_scene(name: str, image_size: tuple[int, int], strides: Sequence[int],
               size_ranges: Sequence[tuple[float, float]], boxes: Sequence[Sequence[float]] | Tensor,
               labels: Sequence[int] | None = None, radius: float = 0.0) -> Scene:
    """A scene over an input of ``image_size`` with one level per stride (locations at floor(s/2) + x*s)."""
    strides = tuple(int(s) for s in strides)
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.zeros(len(boxes), dtype=torch.int64) if labels is None else torch.as_tensor(labels).long()
    locations = make_locations(grid_shapes(image_size, strides), strides)
    return Scene(name, tuple(image_size), locations, tuple(level_name(s) for s in strides),
                 tuple((float(lo), float(hi)) for lo, hi in size_ranges), float(radius), boxes, labels)


def random_boxes(generator: torch.Generator, count: int, height: int, width: int, min_side: int = 4) -> Tensor:
    """``[count, 4]`` whole-pixel boxes inside an ``height x width`` image, sides log-uniform from ``min_side``."""
    u = torch.rand((count, 4), generator=generator, dtype=torch.float64)
    sides = torch.tensor([width, height], dtype=torch.float64)
    size = torch.exp(math.log(min_side) + u[:, :2] * (torch.log(sides) - math.log(min_side))).floor().clamp(min=min_side)
    corner = (u[:, 2:] * (sides - size + 1)).floor()
    return torch.cat([corner, corner + size], dim=1).float()


def random_scenes(count: int, seed: int = 0) -> list[Scene]:
    """``count`` scenes of 64-192 px images, three levels (P3-P5), 1-6 boxes, radius 0 or 1.5.

    Some boxes are copies of others moved by a few pixels, so that ambiguous locations are common.
    """
    generator = torch.Generator().manual_seed(seed)
    scenes = []
    for index in range(count):
        height, width = (int(v) * 32 for v in torch.randint(2, 7, (2,), generator=generator))
        num_boxes = int(torch.randint(1, 7, (1,), generator=generator))
        boxes = random_boxes(generator, num_boxes, height, width)
        if num_boxes > 1:  # an overlapping neighbour of box 0
            shift = torch.randint(-6, 7, (4,), generator=generator).float()
            boxes[-1] = torch.maximum(boxes[0] + shift, torch.zeros(4))
            boxes[-1, 2:] = torch.maximum(boxes[-1, 2:], boxes[-1, :2] + 2)
        labels = torch.randint(0, 3, (num_boxes,), generator=generator)
        radius = 1.5 if index % 2 else 0.0
        scenes.append(make_scene(f"random image {index + 1}: {height} x {width} px, {num_boxes} boxes",
                                 (height, width), RANDOM_STRIDES, RANDOM_RANGES, boxes, labels, radius))
    return scenes


def real_scenes(config: Config, dataset: CocoDetection, count: int = 8) -> list[Scene]:
    """The first ``count`` images of ``dataset`` with at least one box, in ``config``'s training frame.

    The locations, size ranges and center-sampling radius are the config's (its
    :class:`~fcos_lab.objective.Objective`); the boxes are resized as its data loader resizes them, rounded
    to whole pixels, and crowd or degenerate boxes dropped.
    """
    objective = Objective.from_config(config)
    divisible = config.input.size_divisible
    scenes = []
    for image_id in dataset.image_ids:
        if len(scenes) >= count:
            break
        sample = resize_sample(dataset_sample(dataset, image_id), config)
        boxes = sample.boxes[~sample.crowd].round()
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if not keep.any():
            continue
        height, width = sample.image.shape[-2:]
        padded = (-(-height // divisible) * divisible, -(-width // divisible) * divisible)
        scenes.append(Scene(
            f"{sample.name}, {int(keep.sum())} boxes", padded, objective.image_locations(padded),
            objective.level_names, objective.size_ranges, objective.center_sampling_radius,
            boxes[keep], sample.labels[~sample.crowd][keep],
        ))
    return scenes


def jittered_copies(generator: torch.Generator, boxes: Tensor, copies: int = 3, spread: float = 0.15) -> Tensor:
    """``[M * copies, 4]`` copies of ``boxes`` whose sides move by up to ``spread`` of the box size: the many
    overlapping candidates a detector outputs around each object."""
    size = torch.cat([boxes[:, 2:] - boxes[:, :2]] * 2, dim=1).repeat(copies, 1)
    noise = (torch.rand(size.shape, generator=generator) * 2 - 1) * spread * size
    moved = boxes.repeat(copies, 1) + noise
    moved[:, 2:] = torch.maximum(moved[:, 2:], moved[:, :2] + 1)
    return moved

