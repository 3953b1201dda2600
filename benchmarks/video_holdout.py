"""Does each feature type's MULDE describe the scene, or its training videos? Label-free.

    python benchmarks/video_holdout.py --cache ~/.cache/mulde                      # Ped2 preset types
    python benchmarks/video_holdout.py --cache ~/.cache/mulde --frame-features flowgrid --steps 125 500 2000
    python benchmarks/video_holdout.py --cache ~/.cache/mulde --types context --widths 128 512

Splits the training videos into ``--folds`` folds (drawn with ``--seed``), and for the first
``--eval-folds`` of them trains MULDE (the preset, with each ``--widths`` x ``--steps`` setting)
on the other videos' rows of each feature type. It then reports MULDE's own training objective
(``dsm_loss``, the denoising score matching loss) on the training rows and on the left-out videos'
rows. A held-out loss near the training loss means the model generalises to unseen footage of
the scene; one that rises with training while the training loss falls means it learns the
training videos themselves. No test labels are read, so a setting chosen from this table is not
tuned to the test set. Features must be in the cache or are extracted.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mulde.cli import key_value  # noqa: E402
from mulde.config import resolve_config  # noqa: E402
from mulde.pipeline.extract import build_extractors, cache_for, load_tables, open_dataset  # noqa: E402
from mulde.pipeline.train import make_configured_detector  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ped2")
    ap.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "ucsd_ped2"))
    ap.add_argument("--cache", default=os.environ.get("MULDE_CACHE", str(REPO / ".bench-cache")))
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--types", nargs="+", default=None, help="feature types (default: all the run makes)")
    ap.add_argument("--frame-features", nargs="+", default=[], metavar="BACKBONE",
                    help="objects: also model these frame features (extractor.frame_features), e.g. flowgrid")
    ap.add_argument("--widths", type=int, nargs="+", default=None, help="hidden width (default: the preset's)")
    ap.add_argument("--steps", type=int, nargs="+", default=None, help="training steps (default: the preset's)")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--eval-folds", type=int, default=2, help="how many folds to leave out in turn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--draws", type=int, default=5, help="noise draws per row for each loss")
    ap.add_argument("--opt", action="append", default=[], type=key_value, metavar="KEY=VALUE", help="extra config options")
    args = ap.parse_args()
    if not Path(args.root).is_dir():
        print(f"error: dataset not found at {args.root}; pass --root", file=sys.stderr)
        return 2
    if not 2 <= args.folds or not 1 <= args.eval_folds <= args.folds:
        print("error: need --folds >= 2 and 1 <= --eval-folds <= --folds", file=sys.stderr)
        return 2
    extra = dict(args.opt)
    base = {"dataset": args.dataset, "root": args.root, "cache": args.cache, "preset": args.preset,
            "detector": "mulde", "seed": args.seed, **extra}
    if args.frame_features:
        base["extractor.frame_features"] = args.frame_features
    cfg = resolve_config(base)
    ds = open_dataset(cfg)
    items = load_tables(ds, "train", build_extractors(cfg, ds), cache_for(cfg))
    types = args.types or list(items[0][1])
    unknown = [t for t in types if t not in items[0][1]]
    if unknown:
        print(f"error: --types {unknown} are not made by this run; available: {', '.join(items[0][1])}",
              file=sys.stderr)
        return 2
    if len(items) < args.folds:
        print(f"error: {len(items)} training videos cannot make {args.folds} folds; lower --folds", file=sys.stderr)
        return 2
    folds = np.array_split(np.random.default_rng(args.seed).permutation(len(items)), args.folds)
    preset = make_configured_detector(cfg).config
    widths = args.widths or [preset.hidden[0]]
    steps = args.steps or [preset.steps]

    t0 = time.perf_counter()
    rows = []
    for t in types:
        losses: dict[tuple[int, int], list[tuple[float, float]]] = {}
        for k in range(args.eval_folds):
            held = set(folds[k].tolist())
            x_fit = np.concatenate([tabs[t].values for i, (_, tabs) in enumerate(items) if i not in held])
            x_held = np.concatenate([tabs[t].values for i, (_, tabs) in enumerate(items) if i in held])
            for w in widths:
                for s in steps:
                    opts = {**base, "hidden": [w] * len(preset.hidden), "steps": s}
                    det = make_configured_detector(resolve_config(opts)).fit(x_fit, progress=False)
                    losses.setdefault((w, s), []).append(
                        (det.dsm_loss(x_fit, draws=args.draws), det.dsm_loss(x_held, draws=args.draws)))
                    print(f"{t} fold {k} width {w} steps {s}: {time.perf_counter() - t0:.0f} s",
                          file=sys.stderr, flush=True)
        for (w, s), pairs in losses.items():
            fit, held_loss = np.mean(pairs, axis=0)
            rows.append((t, w, s, fit, held_loss, " / ".join(f"{h:.4g}" for _, h in pairs)))

    opts_note = "".join(f" {k}={v}" for k, v in args.opt)
    print(f"\n{args.dataset}: MULDE ({args.preset} preset{opts_note}), seed {args.seed}, "
          f"{len(items)} training videos in {args.folds} folds, {args.eval_folds} left out in turn; "
          f"loss = denoising score matching loss, {args.draws} noise draws per row; "
          f"{time.perf_counter() - t0:.0f} s\n")
    print("| type | width | steps | training rows | left-out videos | ratio | left-out, per fold |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for t, w, s, fit, held, per_fold in rows:
        print(f"| {t} | {w} | {s} | {fit:.4g} | {held:.4g} | {held / fit:.2f} | {per_fold} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
