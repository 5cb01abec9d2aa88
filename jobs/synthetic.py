"""A small dataset that can actually be learned, drawn on the fly and deterministic from a seed.

Each image is a coloured shape (circle or square, random position, size and shade) on a noisy
grey background; the class is colour + shape, e.g. "red circle", so class names also read well in
CLIP prompts. Sample i of a split depends only on (seed, split, i): every process and every
restart sees the same data.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from kbench.registry import SYNTHETIC_COLOURS, SYNTHETIC_SHAPES, prompts

RGB = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 50, 190),
}
SPLITS = {"train": 5000, "test": 1000}


class SyntheticShapes(Dataset):
    def __init__(self, split: str, image_size: int = 32, seed: int = 0) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, not {split!r}")
        self.split, self.image_size, self.seed = split, image_size, seed
        self.classes = prompts("synthetic")[0]
        self.size = SPLITS[split]
        self.targets = [index % len(self.classes) for index in range(self.size)]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        label = self.targets[index]  # balanced classes
        return self.draw(index, label), label

    def draw(self, index: int, label: int) -> Image.Image:
        rng = np.random.default_rng([self.seed, list(SPLITS).index(self.split), index])
        s = self.image_size
        background = rng.integers(90, 166, size=(s, s, 3), dtype=np.uint8)
        image = Image.fromarray(background, "RGB")
        colour = SYNTHETIC_COLOURS[label // len(SYNTHETIC_SHAPES)]
        shape = SYNTHETIC_SHAPES[label % len(SYNTHETIC_SHAPES)]
        fill = tuple(int(np.clip(c + rng.integers(-30, 31), 0, 255)) for c in RGB[colour])
        r = rng.uniform(0.28, 0.42) * s
        cx, cy = rng.uniform(r, s - r, size=2)
        box = (cx - r, cy - r, cx + r, cy + r)
        draw = ImageDraw.Draw(image)
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        else:
            draw.rectangle(box, fill=fill)
        return image
