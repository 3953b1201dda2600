"""On-disk feature cache: ``<cache>/features/<dataset>/<key>/<split>/<video>.<type>.npz``.

The key is ``<extractor>-<hash>`` where the hash covers the extractor's config and the package
version, so changing either never reuses stale features. Every file is written atomically
(unique temp file + rename) and a video counts as cached only when all its feature types exist,
so an interrupted extraction resumes at the first incomplete video and a reader never sees a
partial file. Many writers may share a cache (workers, shards, nodes on a network file system):
``<split>/.claims/`` keeps two of them off the same video (see ``mulde.pipeline.executor``),
``<split>/failures.json`` lists the videos that failed, and ``manifest.json`` is merged.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from mulde import __version__
from mulde.config import config_hash
from mulde.extractors.base import FeatureTable
from mulde.extractors.weights import default_cache_dir
from mulde.pipeline.claims import merge_json

log = logging.getLogger(__name__)


def extractor_key(name: str, config: dict[str, Any]) -> str:
    """Cache key of an extractor: its name plus a hash of its config and the package version."""
    return f"{name}-{config_hash({'config': config, 'version': __version__})}"


class FeatureCache:
    """Reads and writes per-video feature tables under one cache root."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_cache_dir()

    def folder(self, dataset: str, key: str, split: str) -> Path:
        return self.root / "features" / dataset / key / split

    def path(self, dataset: str, key: str, split: str, video_id: str, feature_type: str) -> Path:
        return self.folder(dataset, key, split) / f"{video_id}.{feature_type}.npz"

    def has(self, dataset: str, key: str, split: str, video_id: str, types: tuple[str, ...]) -> bool:
        return all(self.path(dataset, key, split, video_id, t).is_file() for t in types)

    def save(self, dataset: str, key: str, split: str, video_id: str,
             tables: dict[str, FeatureTable]) -> None:
        for ftype, table in tables.items():
            table.save(self.path(dataset, key, split, video_id, ftype))

    def load(self, dataset: str, key: str, split: str, video_id: str,
             types: tuple[str, ...]) -> dict[str, FeatureTable]:
        out = {}
        for ftype in types:
            path = self.path(dataset, key, split, video_id, ftype)
            if not path.is_file():
                raise FileNotFoundError(path)
            out[ftype] = FeatureTable.load(path)
        return out

    def write_manifest(self, dataset: str, key: str, info: dict[str, Any]) -> Path:
        """Record what produced a key's features (extractor, config, version).

        Many processes (shards, nodes) may write it at once: it is merged under a lock, never
        clobbered; ``roots`` lists every dataset root that wrote features under this key.
        """
        path = self.root / "features" / dataset / key / "manifest.json"

        def update(old: Any) -> dict[str, Any]:
            old = old if isinstance(old, dict) else {}
            roots = list(old.get("roots") or ([old["root"]] if old.get("root") else []))
            if info.get("root") is not None and str(info["root"]) not in roots:
                roots.append(str(info["root"]))
            new = {**old, "mulde_version": __version__, **json.loads(json.dumps(info, default=str))}
            if roots:
                new["roots"] = roots
            return new

        merge_json(path, update)
        return path
