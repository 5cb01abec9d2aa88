"""Photo-like test images for the benchmarks: the input pipeline's cost depends on what a JPEG
holds (flat colour decodes and compresses far faster than a photo), so these carry what photos
carry: smooth gradients, hard edges of objects, and sensor-like grain, saved at a camera's JPEG
quality. Sizes follow the study's datasets (DESIGN section 6)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# (name, width, height, format): the kinds of image the nine datasets hold.
KINDS = {
    "cifar": (32, 32, "PNG"),  # CIFAR10/100
    "stl10": (96, 96, "PNG"),
    "fmow": (224, 224, "PNG"),  # WILDS' FMoW crops
    "photo": (500, 375, "JPEG"),  # Food101, Flowers102, DTD: JPEGs up to ~512 px
    "large": (1280, 960, "JPEG"),  # FGVCAircraft, iWildCam camera traps
}


def photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """One RGB image: a lit gradient, a few shapes with edges, blurred texture and grain."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * x / width + np.sin(angle) * y / height)[..., None]
    base = rng.uniform(40, 200, 3) + 60 * ramp * rng.uniform(-1, 1, 3)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(3, 9)):
        x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        w, h = rng.uniform(0.1, 0.6) * width, rng.uniform(0.1, 0.6) * height
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=colour)
    pixels = np.asarray(image, dtype=np.float32)
    # Texture at a few scales (foliage, fabric, food) and per-pixel grain.
    for scale in (32, 8):
        small = rng.normal(128, 18, (max(1, height // scale), max(1, width // scale), 3))
        blurred = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8))
        pixels += np.asarray(blurred.resize((width, height), Image.BICUBIC), np.float32) - 128
    pixels += rng.normal(0, 6, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_images(
    folder: Path,
    count: int,
    kind: str = "photo",
    classes: int = 10,
    seed: int = 0,
    processes: int = 1,
    size: tuple[int, int] | None = None,
) -> None:
    """`count` images of one kind (`size`: another width and height) in `classes` ImageFolder
    class folders, made by `processes` processes (a large JPEG takes about half a CPU-second
    to draw)."""
    width, height, fmt = KINDS[kind]
    shape = (size or (width, height), fmt)
    chunks = [range(start, count, processes) for start in range(processes)]
    if processes == 1:
        _write(folder, chunks[0], shape, classes, seed)
        return
    with ProcessPoolExecutor(processes) as pool:
        futures = [pool.submit(_write, folder, chunk, shape, classes, seed) for chunk in chunks]
        for future in futures:
            future.result()


def stage_folder(store, folder: Path, max_short_side: int | None = None) -> dict:
    """An ImageFolder tree staged as kbench stages it, as the split `train`; its manifest.
    `max_short_side`: as `kbench data stage --max-short-side`."""
    from torchvision.datasets import ImageFolder

    from kbench.staging.datasets import stage

    return stage(
        store,
        folder.name,
        {"train": ImageFolder(str(folder))},
        classes=sorted(p.name for p in folder.iterdir()),
        templates=["{}"],
        train_split="train",
        groups=(),
        source="bench",
        max_short_side=max_short_side,
    )["manifest"]


def _write(folder: Path, indices: range, shape: tuple, classes: int, seed: int) -> None:
    (width, height), fmt = shape
    suffix = ".jpg" if fmt == "JPEG" else ".png"
    options = {"quality": 90} if fmt == "JPEG" else {}
    for i in indices:
        rng = np.random.default_rng((seed, i))  # the same image whatever the processes
        target = folder / f"class{i % classes}" / f"{i:06d}{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        photo(rng, width, height).save(target, fmt, **options)
