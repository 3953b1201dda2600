"""Video decoding and dataset readers: everything downstream reads frames and labels here."""

from mulde.datasets.base import Dataset, VideoItem
from mulde.datasets.registry import get_dataset, list_datasets
from mulde.datasets.video import ArrayVideo, VideoReader, open_video

__all__ = ["ArrayVideo", "Dataset", "VideoItem", "VideoReader", "get_dataset", "list_datasets",
           "open_video"]
