"""FMoW and iWildCam through the `wilds` package's own loaders, which decide the splits (FMoW's
out-of-distribution split is by year), the labels and FMoW's regions. kbench then reads the
image files those loaders point at, so staging can copy them without re-encoding.

The copy lives under $KBENCH_DATA_ROOT in WILDS' layout: fmow_v1.1/ (rgb_metadata.csv,
country_code_mapping.csv, images/rgb_img_<i>.png) and iwildcam_v2.0/ (metadata.csv,
train/<file>.jpg), each with its RELEASE_v<version>.txt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from kbench.errors import ConfigError
from kbench.registry import dataset_info

# Importing wilds starts a (non-daemon) thread that asks PyPI whether wilds is outdated: a network
# call that pods must not make. wilds skips it when `outdated` cannot be imported.
sys.modules.setdefault("outdated", None)  # type: ignore[arg-type]


class FileList(Dataset):
    """Image files with a label each and, optionally, a group (-1: in no reported group)."""

    def __init__(self, files: list[Path], labels: list[int], groups: list[int] | None) -> None:
        self.files, self.labels, self.groups = files, labels, groups

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        image = Image.open(self.files[index]).convert("RGB")
        if self.groups is None:
            return image, self.labels[index]
        return image, self.labels[index], self.groups[index]


def load(name: str, root: str, download: bool = False) -> dict[str, FileList]:
    """Every split of the WILDS dataset `name` (official split scheme)."""
    from wilds.datasets.fmow_dataset import FMoWDataset
    from wilds.datasets.iwildcam_dataset import IWildCamDataset

    cls = {"fmow": FMoWDataset, "iwildcam": IWildCamDataset}[name]
    try:
        dataset = cls(root_dir=root, download=download)
    except FileNotFoundError:
        folder = f"{name}_v{max(cls._versions_dict)}"
        if download:  # WILDS prints a failed download and carries on without the files
            raise ConfigError(
                f"downloading {name} into {Path(root).resolve() / folder} failed (see WILDS' "
                "messages above): check the network, or copy it there by hand"
            ) from None
        raise ConfigError(
            f"no local copy of {name} under {Path(root).resolve()} (WILDS reads {folder}/ with "
            f"its RELEASE file): set KBENCH_DATA_ROOT to the folder that holds it, or stage it "
            "with --download where its host is reachable"
        ) from None
    files = _files(name, dataset)
    groups = _regions(dataset) if name == "fmow" else None
    labels = dataset.y_array.tolist()
    splits = {}
    for split, code in dataset.split_dict.items():
        indices = np.flatnonzero(dataset.split_array == code).tolist()
        splits[split] = FileList(
            [files[i] for i in indices],
            [labels[i] for i in indices],
            None if groups is None else [groups[i] for i in indices],
        )
    return splits


def _files(name: str, dataset) -> list[Path]:
    """The file each sample's `get_input` opens (pinned to wilds 2.0.0's layout)."""
    if name == "fmow":  # sequestered images are left out: full_idxs maps back to the file
        return [dataset.root / "images" / f"rgb_img_{i}.png" for i in dataset.full_idxs]
    return [dataset.data_dir / "train" / f for f in dataset._input_array]  # iwildcam


def _regions(dataset) -> list[int]:
    """Each sample's region as an index into the registry's groups; -1 for "Other"."""
    known = dataset_info("fmow").groups
    names = dataset.metadata_map["region"]
    # A region kbench does not know would silently drop out of the worst-region metric.
    unknown = [n for n in names if isinstance(n, str) and n not in known and n != "Other"]
    if unknown:
        raise ConfigError(
            f"FMoW's country mapping has regions kbench does not know: {', '.join(unknown)} "
            f"(known: {', '.join(known)}, Other)"
        )
    column = dataset.metadata_array[:, dataset.metadata_fields.index("region")].tolist()
    index = {i: known.index(n) if n in known else -1 for i, n in enumerate(names)}
    return [index[c] for c in column]
