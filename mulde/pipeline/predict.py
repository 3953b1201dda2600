"""Score any video file with a trained run (``vad score``), extracting features on the fly."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mulde.atomic import atomic_path
from mulde.config import write_config
from mulde.errors import InputError
from mulde.pipeline.extract import build_extractors
from mulde.pipeline.run import Run, check_features, load_run, requested_device, run_config
from mulde.pipeline.score import score_video

log = logging.getLogger(__name__)


# A frame score this many times the highest training frame's (in training std) is not an anomaly of
# the trained scene but a sign of other footage (the 30 fps video scored by a 10 fps run reached 1e10).
FAR_OUTSIDE = 1000.0


def warn_if_unlike_training(run: Run, video: Any, fps: float, size: tuple[int, int],
                            per_type: dict[str, np.ndarray]) -> list[str]:
    """One warning line when the input differs from the training footage (frame rate, frame
    size) or its scores lie far outside the training range; returns the reasons."""
    seen = run.info.get("training_data") or {}
    reasons = []
    if seen.get("fps") and fps and abs(fps / seen["fps"] - 1) > 0.2:
        reasons.append(f"{fps:g} fps where the training videos have {seen['fps']:g}")
    if seen.get("frame_size") and tuple(seen["frame_size"]) != tuple(size):
        reasons.append(f"{size[0]}x{size[1]} frames where training had {seen['frame_size'][0]}x{seen['frame_size'][1]}")
    for t, s in per_type.items():
        rng = (seen.get("score_range") or {}).get(t) or {}
        st = run.stats.get(t)
        if not rng or st is None or not len(s):
            continue
        z = float(np.max((s - st.mean) / st.std))
        if z > FAR_OUTSIDE * max(rng["z_max"], 1.0):  # anomalies score high; this is orders of magnitude beyond
            reasons.append(f"{t} scores reach {z:.3g} training std where training frames stay below {rng['z_max']:.3g}")
    if reasons:
        log.warning("warning: %s differs from the footage %s was trained on: %s; scores may not be comparable "
                    "(train on footage like it)", video, run.folder, "; ".join(reasons))
    return reasons


def score_file(video: str | Path, run_dir: str | Path, out: str | Path | None = None,
               plot: str | Path | None = None, overlay: str | Path | None = None,
               overrides: dict[str, Any] | None = None, progress: bool = True,
               run: Run | None = None, fps: float | None = None, causal: bool = False,
               events: str | Path | None = None, snapshots: str | Path | None = None) -> pd.DataFrame:
    """Per-frame anomaly scores of one video; optionally a CSV, a plot and an overlay video.

    causal: score frame by frame with only past frames and one-sided smoothing, exactly as
    ``vad watch FILE --no-realtime`` does (mulde.pipeline.online); events: write the events of
    the score series as JSON lines (mulde.pipeline.events), with peak snapshots in ``snapshots``
    (default: ``<events stem>_snapshots`` beside the events file).
    """
    from mulde.datasets.video import open_video
    from mulde.pipeline.report import write_overlay

    with open_video(video, fps=fps):  # a missing or unreadable video fails before any model is loaded
        pass
    run = run or load_run(run_dir, device=requested_device(overrides))
    cfg = run_config(run, overrides)
    fps = fps or cfg.data.fps  # a frame folder of the run's own dataset plays at its rate
    tracker, records = None, []
    if events:
        from mulde.pipeline.events import tracker_for_run

        with open_video(video, fps=fps) as probe:
            rate = float(probe.fps or 25.0)
        shots = snapshots or Path(events).expanduser().with_name(f"{Path(events).stem}_snapshots")
        tracker = tracker_for_run(run, cfg.alerts, rate, str(video), shots, emit=records.append)
    if causal:
        from mulde.pipeline.online import score_video_causally

        if overlay:
            raise InputError("--overlay draws the offline scores; drop --overlay or --causal")
        frame, _ = score_video_causally(video, run, overrides, fps=fps, tracker=tracker, progress=progress)
        final = frame["score"].to_numpy()
        return _write_outputs(frame, final, video, run, cfg, out, plot, events, records)
    extractors = build_extractors(cfg)
    check_features(run, extractors)
    tables = {}
    for extra in extractors[1:]:  # frame-level features of extractor.frame_features: their own pass
        with open_video(video, fps=fps) as reader:
            tables.update(extra.extract(reader, progress=progress))
    with open_video(video, fps=fps) as reader:
        tables.update(extractors[0].extract(reader, progress=progress))
        n = reader.n_frames
        fps = float(reader.fps or 25.0)
        final, per_type, rows = score_video(tables, run.detectors, run.stats, n,
                                            float(cfg.scoring.smoothing_sigma or 0),
                                            int(cfg.scoring.track_window or 0), cfg.scoring.derived,
                                            cfg.scoring.derived_window, cfg.scoring.combine,
                                            cfg.scoring.combine_levels)
        warn_if_unlike_training(run, video, fps, (reader.width, reader.height), per_type)
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
        if tracker is not None:
            from mulde.pipeline.online import results_from_offline

            for r in results_from_offline(final, per_type, rows, tables, run, fps):
                tracker.update(r, lambda i=r.index: reader[i])
            tracker.close("end")
    return _write_outputs(frame, final, video, run, cfg, out, plot, events, records)


def _write_outputs(frame: pd.DataFrame, final: np.ndarray, video: Any, run: Run, cfg: Any, out: Any, plot: Any,
                   events: Any, records: list) -> pd.DataFrame:
    """The CSV (+ its config record), the plot and the events file of ``score_file``."""
    from mulde.pipeline.report import plot_scores

    if events:
        from mulde.pipeline.events import write_events

        write_events(events, [r for r in records if r.get("event") == "close"])
        log.info("wrote %d events to %s", sum(r.get("event") == "close" for r in records), events)
    if out:
        out = Path(out).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            frame.to_csv(tmp, index=False)
        write_config({**cfg.to_dict(), "input": {"video": str(video), "model": str(run.folder)}}, out.parent,
                     f"{out.stem}.config.yaml")
    if plot:
        plot_scores(final, plot, title=f"{Path(str(video)).name}: anomaly score (0 = training mean, 1 = one std)")
    return frame
