"""Dataset names -> reader classes: ``get_dataset(name, root)`` and ``list_datasets()``."""

from __future__ import annotations

import importlib
from pathlib import Path

from mulde.datasets.base import Dataset
from mulde.errors import InputError

DATASETS: dict[str, str] = {
    "ped1": "mulde.datasets.ucsd:UCSDPed1",
    "ped2": "mulde.datasets.ucsd:UCSDPed2",
    "avenue": "mulde.datasets.avenue:Avenue",
    "shanghaitech": "mulde.datasets.shanghaitech:ShanghaiTech",
    "ubnormal": "mulde.datasets.ubnormal:UBnormal",
    "ucfcrime": "mulde.datasets.ucfcrime:UCFCrime",
    "folder": "mulde.datasets.folder:FolderDataset",
    "synthetic": "mulde.datasets.synthetic:SyntheticDataset",
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`get_dataset`."""
    return list(DATASETS)


def dataset_class(name: str) -> type[Dataset]:
    """The reader class registered under ``name`` (case-insensitive)."""
    key = str(name).strip().lower()
    if key not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    module, attr = DATASETS[key].split(":")
    return getattr(importlib.import_module(module), attr)


def get_dataset(name: str, root: str | Path, **kwargs) -> Dataset:
    """Open the dataset ``name`` stored at ``root`` (``synthetic`` generates it if absent)."""
    return dataset_class(name)(root, **kwargs)
