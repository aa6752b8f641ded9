"""ZoomWorld: a procedurally generated benchmark where the right focus provably matters.

Each image is a large non-square canvas with a few coloured shapes. Every shape carries a "tile": a small
checker of two complementary colours (red/cyan, green/magenta, blue/yellow, black/white) at its centre, in
8-px cells aligned to a 16-px grid. Every pair averages to the same grey, and models see the whole canvas
downscaled exactly 16x with a box filter (the tiny models' processors use BOX resampling), so in the global
view every tile is the same flat grey: the tile is unreadable without a crop, by construction, not by luck.
In a crop (an object-sized region upscaled to the model's input) each cell spans about one 4-px patch, and
in the global view an object (64-80 px) spans about one: the geometry in which a tiny model can both read
and localise (docs/zoomworld.md has the constraints and the screening that chose it).

A question names its target by colour and shape ("What is the tile pattern on the orange circle?"); the
answer is the target's tile. The answer to a CROP is the target's tile only if the crop holds at least 70% of
that tile, "none" if it holds at most 30%: a crop of the background or of another object says "none", so no
box but the right one earns the answer.

The splits are written by `visrl_bench.datagen.zoomworld_splits.generate`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar

from visrl_bench.core.boxes import Box
from visrl_bench.core.errors import Bounded, Bounds, VisrlError
from visrl_bench.core.seeding import seeded_random

# 1.1: the ground split; 1.2: the ground_test split; 2.0: geometry D (16x view, 64-80 px objects)
VERSION = "2.0"
PATTERNS = {  # answer word -> the checker's two colours; every pair averages to (127.5, 127.5, 127.5)
    "red-cyan": ((255, 0, 0), (0, 255, 255)),
    "green-magenta": ((0, 255, 0), (255, 0, 255)),
    "blue-yellow": ((0, 0, 255), (255, 255, 0)),
    "black-white": ((0, 0, 0), (255, 255, 255)),
}
NONE = "none"
ANSWERS = (*PATTERNS, NONE)
OBJECT_COLOURS = {
    "orange": (240, 140, 20),
    "purple": (120, 40, 160),
    "brown": (120, 70, 30),
    "pink": (245, 150, 190),
    "teal": (20, 140, 140),
    "olive": (110, 120, 20),
    "navy": (20, 30, 110),
    "gray": (150, 150, 150),
}
SHAPES = ("circle", "square", "triangle", "diamond")
BACKGROUND = (222, 214, 196)
GRID = (
    16  # the global view's default downscale factor; tiles align to it: a view pixel averages whole periods
)
CELL = 8  # the default checker cell size in canvas pixels (period 2 * CELL divides GRID)
VISIBLE, HIDDEN = 0.7, 0.3  # tile fraction inside a crop for "readable" / "not there"
QUESTION = "What is the tile pattern on the {colour} {shape}?"
PAIR_QUESTION = "Do the {colour} {shape} and the {other_colour} {other_shape} carry the same tile pattern?"
PAIR_ANSWERS = ("yes", "no")


@dataclass
class ZoomWorldConfig(Bounded):
    canvas: tuple[int, int] = (512, 384)  # width, height; the models see it 16x smaller (32 x 24)
    objects: tuple[int, int] = (3, 5)  # min, max objects per image
    object_size: tuple[int, int] = (64, 80)  # min, max side in pixels: 4-5 pixels in the global view
    tile_cells: int = 4  # the tile is tile_cells x tile_cells cells of `cell` pixels
    # the models' processors shrink the canvas exactly view_scale x with a box filter (their spec must say
    # so: image size / pixel budget); a tile's cells are `cell` px and the tile sits on the view_scale grid,
    # so every view pixel averages whole checker periods: the same grey for every pattern
    view_scale: int = GRID
    cell: int = CELL
    # a background whose red rises left to right and blue top to bottom by this much (0: flat): where an
    # object is, as colour around it. Qwen2-VL's vision tower has only relative positions, so without a
    # cue in the image its tokens' values never say where they are (docs/zoomworld.md)
    background_ramp: int = 0
    questions_per_image: int = 3
    crop_min_side: int = 32  # the crop rule the models are trained and evaluated with
    readable_side: int = (
        80  # a crop longer than this shows cells under 0.8 of a 4-px patch: too small to read
    )
    pretrain_images: int = 3000  # fewer and the tiny models memorise the images instead of learning to read
    pretrain_examples_per_image: int = 12
    direct_fraction: float = 0.2  # of pretrain examples: one image + question -> the true tile
    # a third each with 1, 2 and 3-5 objects (the grounding curriculum); with 3,000, 1,500 steps memorised
    # the 1,000 one-object images (docs/zoomworld.md)
    ground_images: int = 9000
    ground_test_images: int = 300  # held-out grounding scenes, a third each with 1, 2 and 3-5 objects
    sft_questions: int = 200
    rl_questions: int = 1200
    test_questions: int = 420
    pair_questions: int = 200  # the two-region split (one question per image)

    BOUNDS: ClassVar[Bounds] = {
        "tile_cells": (1, None),
        "view_scale": (1, None),
        "cell": (1, None),
        "background_ramp": (0, 100),
        "questions_per_image": (1, None),
        "crop_min_side": (1, None),
        "readable_side": (1, None),
        "pretrain_images": (0, None),
        "pretrain_examples_per_image": (1, None),
        "direct_fraction": (0, 1),
        "ground_images": (0, None),
        "ground_test_images": (0, None),
        "sft_questions": (1, None),
        "rl_questions": (1, None),
        "test_questions": (1, None),
        "pair_questions": (0, None),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.view_scale % (2 * self.cell) or any(side % self.view_scale for side in self.canvas):
            raise VisrlError(
                f"options view_scale={self.view_scale}, cell={self.cell}, canvas={tuple(self.canvas)}: a "
                "checker period (2 x cell) must divide view_scale, and view_scale each canvas side, or a "
                "tile is not the same grey in the global view"
            )
        for name in ("canvas", "objects", "object_size"):
            low, high = getattr(self, name)
            if not (0 < low <= high if name != "canvas" else low > 0 and high > 0):
                raise VisrlError(
                    f"option {name} must be two positive numbers (min <= max), got {(low, high)}"
                )
        room = min(self.canvas) - 2 * GRID  # an object keeps a GRID margin from every edge
        if self.object_size[1] > room:
            raise VisrlError(
                f"option object_size={tuple(self.object_size)}: the largest object must fit the canvas "
                f"{tuple(self.canvas)} with a {GRID}-px margin on each side (at most {room} px)"
            )
        tile = self.tile_cells * self.cell
        if tile > self.object_size[0]:
            raise VisrlError(
                f"options tile_cells={self.tile_cells}, cell={self.cell}: the tile ({tile} px) must fit "
                f"inside the smallest object ({self.object_size[0]} px)"
            )


@dataclass
class WorldObject:
    colour: str
    shape: str
    box: Box  # the object's extent, pixels
    tile: Box  # the checker's extent, pixels
    pattern: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "colour": self.colour,
            "shape": self.shape,
            "box": self.box.as_list(),
            "tile": self.tile.as_list(),
            "pattern": self.pattern,
        }


@dataclass
class Scene:
    image_id: str
    size: tuple[int, int]
    objects: list[WorldObject] = field(default_factory=list)
    cell: int = CELL  # the tiles' cell size (the world's `cell`)
    ramp: int = 0  # the world's background_ramp


def _rng(seed: int, *keys: object) -> random.Random:
    return seeded_random(seed, *keys)


def make_scene(
    cfg: ZoomWorldConfig, seed: int, image_id: str, objects: tuple[int, int] | None = None
) -> Scene:
    """Place non-overlapping objects with distinct colours; each tile sits on the view_scale grid."""
    rng = _rng(seed, "scene", image_id)
    w, h = cfg.canvas
    scene = Scene(image_id, (w, h), cell=cfg.cell, ramp=cfg.background_ramp)
    colours = rng.sample(sorted(OBJECT_COLOURS), k=rng.randint(*(objects or cfg.objects)))
    tile_side = cfg.tile_cells * cfg.cell
    grid = cfg.view_scale
    for colour in colours:
        for _ in range(200):
            side = rng.randint(*cfg.object_size)
            x1, y1 = rng.randint(GRID, w - side - GRID), rng.randint(GRID, h - side - GRID)
            box = Box(x1, y1, x1 + side, y1 + side)
            margin = 8
            if all(
                box.x2 + margin <= o.box.x1
                or o.box.x2 + margin <= box.x1
                or box.y2 + margin <= o.box.y1
                or o.box.y2 + margin <= box.y1
                for o in scene.objects
            ):
                break
        else:
            continue  # crowded canvas: fewer objects
        cx, cy = box.center
        tx = round((cx - tile_side / 2) / grid) * grid
        ty = round((cy - tile_side / 2) / grid) * grid
        tile = Box(tx, ty, tx + tile_side, ty + tile_side)
        scene.objects.append(WorldObject(colour, rng.choice(SHAPES), box, tile, rng.choice(sorted(PATTERNS))))
    return scene


def render(scene: Scene):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", scene.size, BACKGROUND)
    if scene.ramp:
        import numpy as np

        w, h = scene.size
        pixels = np.empty((h, w, 3), dtype=np.float64)
        pixels[...] = BACKGROUND
        pixels[..., 0] += scene.ramp * (np.arange(w) / (w - 1) - 0.5)[None, :]
        pixels[..., 2] += scene.ramp * (np.arange(h) / (h - 1) - 0.5)[:, None]
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for o in scene.objects:
        fill = OBJECT_COLOURS[o.colour]
        x1, y1, x2, y2 = o.box.as_list()
        if o.shape == "circle":
            draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=fill)
        elif o.shape == "square":
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=fill)
        elif o.shape == "triangle":
            draw.polygon([((x1 + x2) / 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)], fill=fill)
        else:
            draw.polygon(
                [((x1 + x2) / 2, y1), (x2 - 1, (y1 + y2) / 2), ((x1 + x2) / 2, y2 - 1), (x1, (y1 + y2) / 2)],
                fill=fill,
            )
        first, second = PATTERNS[o.pattern]
        tx1, ty1, tx2, ty2 = (int(v) for v in o.tile.as_list())
        cell = scene.cell
        for y in range(ty1, ty2, cell):
            for x in range(tx1, tx2, cell):
                colour = first if ((x - tx1) // cell + (y - ty1) // cell) % 2 == 0 else second
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)
    return image


def _overlap_fraction(tile: Box, region: Box) -> float:
    iw = min(tile.x2, region.x2) - max(tile.x1, region.x1)
    ih = min(tile.y2, region.y2) - max(tile.y1, region.y1)
    return max(0.0, iw) * max(0.0, ih) / tile.area


def crop_answer(
    target: WorldObject, region: Box, readable_side: int = ZoomWorldConfig.readable_side
) -> str | None:
    """What a crop shows about the target: its pattern when at least 70% of its tile is inside and the crop
    is small enough for the cells to be resolved; "none" when at most 30% is inside or the crop is far too
    large; None in between (ambiguous: never used as a training label)."""
    fraction = _overlap_fraction(target.tile, region)
    side = max(region.width, region.height)
    if fraction <= HIDDEN or side > 1.5 * readable_side:
        return NONE
    if fraction >= VISIBLE and side <= readable_side:
        return target.pattern
    return None
