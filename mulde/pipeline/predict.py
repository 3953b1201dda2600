"""Score any video file with a trained run (``vad score``), extracting features on the fly."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mulde.config import write_config
from mulde.errors import InputError
from mulde.pipeline.cache import extractor_key
from mulde.pipeline.extract import build_extractor
from mulde.pipeline.run import Run, load_run
from mulde.pipeline.score import score_video

log = logging.getLogger(__name__)


def score_file(video: str | Path, run_dir: str | Path, out: str | Path | None = None,
               plot: str | Path | None = None, overlay: str | Path | None = None,
               overrides: dict[str, Any] | None = None, progress: bool = True,
               run: Run | None = None, fps: float | None = None) -> pd.DataFrame:
    """Per-frame anomaly scores of one video; optionally a CSV, a plot and an overlay video."""
    from mulde.datasets.video import open_video
    from mulde.pipeline.report import plot_scores, write_overlay

    with open_video(video, fps=fps):  # a missing or unreadable video fails before any model is loaded
        pass
    run = run or load_run(run_dir, device=(overrides or {}).get("device"))
    cfg = {**run.config, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    extractor = build_extractor(cfg)
    key = extractor_key(extractor.name, extractor.config())
    if key != run.extractor_key:
        raise InputError(f"{run.folder}: the model was trained on features {run.extractor_key} but the "
                         f"given options extract {key}; drop the overriding feature options")
    with open_video(video, fps=fps) as reader:
        tables = extractor.extract(reader, progress=progress)
        n = reader.n_frames
        fps = float(reader.fps or 25.0)
        final, per_type, rows = score_video(tables, run.detectors, run.stats, n,
                                            float(cfg.get("smoothing_sigma") or 0),
                                            int(run.config.get("track_window") or 0))
        frame = pd.DataFrame({"frame": np.arange(n), "time_s": np.arange(n) / fps, "score": final})
        for t, s in per_type.items():
            frame[f"score_{t}"] = s
        if overlay:
            boxes: dict[int, list] = {}
            ftype = next((t for t in run.feature_types if tables[t].boxes is not None), None)
            if ftype is not None:
                st, tab = run.stats[ftype], tables[ftype]
                z = (rows[ftype] - st.mean) / st.std
                for i in range(len(tab)):
                    boxes.setdefault(int(tab.frame_idx[i]), []).append((*tab.boxes[i].tolist(), float(z[i])))
            write_overlay(reader, final, overlay, boxes, progress=progress)
            log.info("wrote overlay video %s", overlay)
    if out:
        out = Path(out).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, out)
        write_config({**cfg, "video": str(video), "model": str(run.folder)}, out.parent, f"{out.stem}.config.yaml")
    if plot:
        plot_scores(final, plot, title=f"{Path(str(video)).name}: anomaly score (0 = training mean, 1 = one std)")
    return frame
