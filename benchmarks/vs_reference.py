"""mulde's MULDE side by side with the authors' released code, in one run (not a test).

    python benchmarks/vs_reference.py --reference /tmp/mulde-ref [--seeds 0 1] [--quick]

``--reference`` is a local checkout of the authors' repository (github.com/jakubmicorek/
MULDE-Multiscale-Log-Density-Estimation-via-Denoising-Score-Matching-for-Video-Anomaly-Detection),
fetched by the user; nothing of it is copied here. Its ``main.train_and_evaluate`` runs
unchanged on our data: this script only swaps its data source (``get_dataset``), replaces its
TensorBoard writer by one that records the logged values with timestamps, and wraps its tqdm
bars in timers. After it returns, the trained network is read out at the same L levels its
own evaluation uses and a 1-component GMM is fitted exactly as its ``--gmm`` path does.

What is compared, on the same data with the same budget (epochs of the same batch size, same
network, lr, β, σ range, L):
1. training step time at the paper's size (2 x 4096 GELU, batch 2048): the reference's step is
   the interval between two consecutive per-step log calls (data loading, forward, backward,
   its per-step host syncs, Adam), the first step left out; ours is the interval between two
   consecutive step calls of ``train_dsm`` (sampling, the step, Adam), the first left out;
2. scoring time per (feature, σ) pair at that size: the reference's timed evaluation pass over
   the test set, ours ``score_samples`` (all L levels plus the GMM);
3. AUC-ROC (GMM, 1 component) on the authors' 2-D toy (their ``dataset.get_dataset``) and on a
   curved 3-D manifold in R^64 (``benchmarks/manifolds.py``; per anomaly kind too), at a
   smaller network so that training to convergence fits a CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
import types
from argparse import Namespace
from datetime import date
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn import mixture  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from manifolds import make_manifold  # noqa: E402

from mulde.detector import MULDE  # noqa: E402

PROBLEMS = ("toy", "manifold")


class RecordingWriter:
    """Stands in for TensorBoard's SummaryWriter: keeps (tag, value, step, time) of scalars."""

    def __init__(self, *args, **kwargs) -> None:
        self.scalars: list[tuple[str, float, int, float]] = []

    def add_scalar(self, tag, value, step=None, *args, **kwargs) -> None:
        self.scalars.append((tag, float(value), step, time.perf_counter()))

    def add_text(self, *args, **kwargs) -> None:
        pass

    def add_figure(self, *args, **kwargs) -> None:
        pass

    def flush(self) -> None:
        pass

    def last(self, tag: str) -> float | None:
        vals = [v for t, v, _, _ in self.scalars if t == tag]
        return vals[-1] if vals else None


class TimedBar:
    """Stands in for tqdm: iterates unchanged and records (description, seconds, items)."""

    log: list[tuple[str, float, int]] = []

    def __init__(self, iterable, *args, **kwargs) -> None:
        self.iterable, self.desc = iterable, ""

    def set_description(self, desc) -> None:
        self.desc = str(desc)

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def __len__(self) -> int:
        return len(self.iterable)

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        n = len(self.iterable.dataset) if hasattr(self.iterable, "dataset") else len(self.iterable)
        TimedBar.log.append((self.desc, time.perf_counter() - self.t0, n))

    def __iter__(self):
        return iter(self.iterable)


def load_reference(folder: Path):
    """Import the authors' ``main``, ``dataset`` and ``models`` from their checkout."""
    if not (folder / "main.py").is_file() or not (folder / "models.py").is_file():
        raise SystemExit(f"error: {folder} does not look like a checkout of the authors' MULDE repository "
                         "(main.py and models.py missing); pass --reference DIR")
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:  # TensorBoard is not needed: its writer is replaced below
        stub = types.ModuleType("torch.utils.tensorboard")
        stub.SummaryWriter = RecordingWriter
        sys.modules["torch.utils.tensorboard"] = stub
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("mulde_reference_main", folder / "main.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    import dataset as ref_dataset
    import models as ref_models
    import utils as ref_utils

    return ref, ref_dataset, ref_models, ref_utils


def run_reference(ref, ref_models, ref_utils, train, test, y, args: Namespace, seed: int) -> dict:
    """Run the authors' train_and_evaluate on (train, test, y); return timings and AUCs."""
    writer = RecordingWriter()
    ref_utils.get_log_path_and_summary_writer = lambda *a, **k: ("", writer)
    ref_utils.save_current_experiment_source_code = lambda *a, **k: None
    ref.get_dataset = lambda *a, **k: (train, np.zeros(len(train), np.uint8), test, y.astype(np.uint8),
                                       {0: "normal", 1: "anomaly"})
    ref.tqdm = TimedBar
    models: list = []

    class Captured(ref_models.ScoreOrLogDensityNetwork):
        def __init__(self, *a, **k) -> None:
            super().__init__(*a, **k)
            models.append(self)

    ref.ScoreOrLogDensityNetwork = Captured
    TimedBar.log = []
    torch.manual_seed(seed)
    np.random.seed(seed)
    t0 = time.perf_counter()
    ref.train_and_evaluate(args)
    total = time.perf_counter() - t0
    stamps = [t for tag, _, _, t in writer.scalars if tag == "gradients/max_gradient"]
    per_epoch = math.ceil(len(train) / args.batch_size)
    steps = [b - a for i, (a, b) in enumerate(zip(stamps[:-1], stamps[1:])) if (i + 1) % per_epoch != 0]
    evals = [(d, s, n) for d, s, n in TimedBar.log if d.startswith("Calculate")]
    test_evals = [s / n for (d, s, n) in evals if n == len(test)]
    model = models[-1]
    auc = reference_gmm_auc(model, train, test, y, args)
    return {"step_s": float(np.median(steps)) if steps else float("nan"),
            "pair_us": 1e6 * float(np.median(test_evals)) / args.L if test_evals else float("nan"),
            "auc": auc, "auc_max": writer.last("roc_auc_log_density_aggregate/max"),
            "seconds": total, "n_steps": len(stamps)}


def reference_gmm_auc(model, train, test, y, args: Namespace) -> dict:
    """The reference network read out as its own evaluation does, then GMM(1) as its --gmm path."""
    tr = torch.as_tensor(np.asarray(train), dtype=torch.float32)
    mean, std = tr.mean(0), tr.std(0)
    sigmas = [float(f"{s:.5f}") for s in np.linspace(args.sigma_low, args.sigma_high, args.L)]
    model.eval()
    device = next(model.parameters()).device

    def levels(x: np.ndarray) -> np.ndarray:
        x = (torch.as_tensor(np.asarray(x), dtype=torch.float32) - mean) / (std + 1e-8)
        out = []
        with torch.no_grad():
            for s in sigmas:
                cols = []
                for chunk in torch.split(x, 4096):
                    chunk = chunk.to(device)
                    sig = s * torch.ones(len(chunk), 1, device=device)
                    cols.append(model(torch.hstack([chunk, sig])).ravel().cpu())
                out.append(torch.cat(cols).numpy())
        return np.stack(out, 1).astype(np.float64)

    gmm = mixture.GaussianMixture(n_components=1, covariance_type="full").fit(levels(train))
    return -gmm.score_samples(levels(test))


class TimedMULDE(MULDE):
    """MULDE that timestamps every training step call (interval = one step plus Adam)."""

    def _make_step(self, net, device):
        inner = super()._make_step(net, device)
        self.stamps = stamps = []

        sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

        def step(x, eps, sigma):
            sync()  # on a GPU the interval must hold the previous step's kernels, not their launch
            stamps.append(time.perf_counter())
            return inner(x, eps, sigma)

        return step


def run_ours(train, test, y, units, epochs, batch, lr, beta, seed, timing_reps: int = 0,
             device: str = "cpu", conditioning: str = "log_sigma") -> dict:
    steps = (epochs + 1) * math.ceil(len(train) / batch)  # the reference trains epochs + 1 epochs
    m = TimedMULDE(hidden=tuple(units), batch_size=batch, lr=lr, beta=beta, steps=steps,
                   device=device, seed=seed, log_every=10**9, gmm_components=1, conditioning=conditioning)
    t0 = time.perf_counter()
    m.fit(np.asarray(train, np.float32), progress=False)
    total = time.perf_counter() - t0
    intervals = np.diff(m.stamps)[1:]
    m.score_samples(test[:64])  # warm-up
    best = float("inf")
    for _ in range(max(1, timing_reps)):
        t = time.perf_counter()
        score = m.score_samples(test)
        best = min(best, time.perf_counter() - t)
    return {"step_s": float(np.median(intervals)) if len(intervals) else float("nan"),
            "pair_us": 1e6 * best / (len(test) * m.config.n_levels), "auc": score, "seconds": total,
            "n_steps": steps}


def ref_args(units, epochs, batch, lr, beta, L=16, device: str = "cpu") -> Namespace:
    return Namespace(experiment_name="MULDE", device=device, epochs=epochs, lr=lr, batch_size=batch,
                     units=list(units), sigma_low=1e-3, sigma_high=1.0, plot_dataset=False,
                     unstandardized=False, dropout=None, use_scheduler=False, layernorm=False, gmm=False,
                     gradient_clipping=None, meshgrid_offset=10.0, L=L, beta=beta)


def auc_cells(y, kind, names, score) -> str:
    overall = f"{100 * roc_auc_score(y, score):.1f}"
    kinds = []
    for k, name in names.items():
        keep = (kind == 0) | (kind == k)
        kinds.append(f"{name} {100 * roc_auc_score(kind[keep] == k, score[keep]):.1f}")
    return f"{overall} ({', '.join(kinds)})" if kinds else overall


def cpu_name() -> str:
    from ped2 import _cpu_name  # benchmarks/ is on sys.path when a benchmark runs as a script

    return _cpu_name()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="local checkout of the authors' repository")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=200, help="accuracy runs: epochs (multiple of 5)")
    ap.add_argument("--units", type=int, nargs="+", default=[256, 256], help="accuracy runs: hidden units")
    ap.add_argument("--lr", type=float, default=5e-4, help="the reference's default")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda: both sides train and score there")
    ap.add_argument("--paper-units", type=int, default=4096, help="width of the speed runs (the paper's 4096)")
    ap.add_argument("--quick", action="store_true", help="speed only at paper size; accuracy with 20 epochs")
    ap.add_argument("--problems", nargs="+", choices=PROBLEMS, default=list(PROBLEMS),
                    help="accuracy problems to run (default: both)")
    ap.add_argument("--no-speed", action="store_true", help="skip the paper-size speed rows (accuracy only)")
    ap.add_argument("--conditioning", choices=["log_sigma", "sigma"],
                    help="mulde's noise input (default: what preset auto gives on --device: σ on a GPU, "
                         "whose preset is paper, log σ on a CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.conditioning is None:
        from mulde.config import resolve_preset
        from mulde.detector.mulde import mulde_preset

        args.conditioning = mulde_preset(resolve_preset("auto", args.device)).conditioning
    ref, ref_dataset, ref_models, ref_utils = load_reference(Path(args.reference).expanduser())
    rows, t_start = [], time.perf_counter()

    # 1-2: speed at the paper's size; 3 steps of the reference (epoch 0 over 3 batches).
    batch, wide = 2048, args.paper_units
    for d, label in () if args.no_speed else ((2, "toy, d = 2"), (64, "manifold, d = 64")):
        rng = np.random.default_rng(0)
        train = rng.standard_normal((3 * batch, d)).astype(np.float32)
        test = rng.standard_normal((256 if args.quick else 512, d)).astype(np.float32)
        y = (np.arange(len(test)) % 2).astype(int)
        r = run_reference(ref, ref_models, ref_utils, train, test, y, ref_args([wide, wide], 0, batch,
                                                                              args.lr, args.beta, device=args.device), 0)
        o = run_ours(train, test, y, [wide, wide], 0, batch, args.lr, args.beta, 0, timing_reps=2,
                     device=args.device, conditioning=args.conditioning)
        rows.append(f"| training step, 2 x {wide}, batch 2048, {label} (ms) | {1e3 * r['step_s']:.3g} | "
                    f"{1e3 * o['step_s']:.3g} | {r['step_s'] / o['step_s']:.1f}x |")
        rows.append(f"| scoring, 2 x {wide}, {label} (µs per feature and σ) | {r['pair_us']:.3g} | "
                    f"{o['pair_us']:.3g} | {r['pair_us'] / o['pair_us']:.1f}x |")
        print(rows[-2], rows[-1], sep="\n", flush=True)

    # 3: accuracy, same data and budget.
    epochs = 20 if args.quick else args.epochs
    acc: dict[str, dict[str, list]] = {}
    for seed in args.seeds:
        tr, _, te, yy, _ = ref_dataset.get_dataset(seed)
        tr, te = np.asarray(tr, np.float32), np.asarray(te, np.float32)
        problems = {}
        if "toy" in args.problems:
            problems["authors' 2-D toy"] = (tr, te, yy.astype(int), yy.astype(int), {})
        if "manifold" in args.problems:
            problems["manifold 3-in-64"] = (*make_manifold(n_train=10_000, seed=seed), {1: "off", 2: "hole"})
        for pname, (train, test, y, kind, names) in problems.items():
            r = run_reference(ref, ref_models, ref_utils, train, test, y,
                              ref_args(args.units, epochs, batch, args.lr, args.beta, device=args.device), seed)
            o = run_ours(train, test, y, args.units, epochs, batch, args.lr, args.beta, seed, device=args.device,
                         conditioning=args.conditioning)
            for who, res in (("reference", r), ("mulde", o)):
                acc.setdefault(pname, {}).setdefault(who, []).append(
                    (roc_auc_score(y, res["auc"]), auc_cells(y, kind, names, res["auc"]), res["seconds"]))
            print(f"seed {seed} {pname}: reference {auc_cells(y, kind, names, r['auc'])} "
                  f"({r['seconds']:.0f} s, {r['n_steps']} steps; its own max-aggregate AUC "
                  f"{r['auc_max']}) | mulde {auc_cells(y, kind, names, o['auc'])} ({o['seconds']:.0f} s, "
                  f"{o['n_steps']} steps)", flush=True)
    for pname, who in acc.items():
        ref_auc = np.array([a for a, _, _ in who["reference"]]) * 100
        our_auc = np.array([a for a, _, _ in who["mulde"]]) * 100
        detail = "; ".join(f"seed {s}: {a[1]} vs {b[1]}" for s, a, b in zip(args.seeds, who["reference"], who["mulde"]))
        rows.append(f"| AUC-ROC, {pname}, GMM(1), {args.units} units, {epochs + 1} epochs | "
                    f"{ref_auc.mean():.1f} ± {ref_auc.std():.1f} | {our_auc.mean():.1f} ± {our_auc.std():.1f} | "
                    f"{detail} |")
        ref_s = np.mean([s for _, _, s in who["reference"]])
        our_s = np.mean([s for _, _, s in who["mulde"]])
        rows.append(f"| wall time, {pname}, incl. the reference's evaluation every 5 epochs (s) | "
                    f"{ref_s:.0f} | {our_s:.0f} | |")
    gpu = f", {torch.cuda.get_device_name()}" if torch.device(args.device).type == "cuda" else ""
    print(f"\nMachine: {cpu_name()}{gpu}, {os.cpu_count()} cores, {args.threads} torch threads, device "
          f"{args.device}; mulde's noise input {args.conditioning}; date {date.today()}; "
          f"command: `python benchmarks/vs_reference.py {' '.join(sys.argv[1:])}`; reference commit "
          f"{_commit(Path(args.reference))}; lr {args.lr}, β {args.beta}, σ in [1e-3, 1], L = 16, batch "
          f"{batch}; total {time.perf_counter() - t_start:.0f} s.\n")
    print("| measure | authors' code | mulde | ratio / per seed |")
    print("| --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


def _commit(folder: Path) -> str:
    head = folder.expanduser() / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (folder.expanduser() / ".git" / ref[5:]).read_text().strip()[:10]
        return ref[:10]
    except OSError:
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
