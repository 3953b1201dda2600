"""Benchmark MULDE's training step and scoring against the machine's matmul bound.

For d = 2, 512, 1152 with hidden 2 x 4096, batch 2048 and L = 16 it prints seconds per
training step, microseconds per (feature, σ) pair when scoring, peak memory, and each time
as a fraction of the bound implied by the fp32 GFLOP/s of a 2048 x 4096 x 4096 matmul
measured in the same run. Not a test.

    PYTHONPATH=. python benchmarks/bench_detector.py --quick [--device cpu|cuda|all]

FLOP model. Training (β > 0) passes each sample 9 times through the 4096 x 4096 layer
(forward on x̃ and x, one backward for ∇ₓ̃f, four matmuls of the double backward, two for
the β term's backward); the (d+1) x 4096 input layer costs 7 passes of B x d x 4096
(forward on 2B rows, ∇ₓ̃f, its backward, the weight gradients on 3B rows) and the head
is negligible. Scoring a (feature, σ) pair is one pass through the big layer plus the head;
the input product is computed once per feature and shared by the L levels.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mulde.detector import MULDE  # noqa: E402
from mulde.detector.base import tf32_enabled  # noqa: E402
from mulde.detector.network import init_network  # noqa: E402
from mulde.detector.training import TrainSettings, train_dsm  # noqa: E402

HIDDEN = 4096
BATCH = 2048
LEVELS = 16


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, dtype: torch.dtype, reps: int) -> float:
    """Best-of-``reps`` GFLOP/s of a (2048 x 4096) @ (4096 x 4096) product."""
    a = torch.randn(BATCH, HIDDEN, device=device, dtype=dtype)
    w = torch.randn(HIDDEN, HIDDEN, device=device, dtype=dtype)
    out = torch.empty(BATCH, HIDDEN, device=device, dtype=dtype)
    torch.mm(a, w.t(), out=out)
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        for _ in range(10 if device.type == "cuda" else 1):
            torch.mm(a, w.t(), out=out)
        sync(device)
        best = min(best, (time.perf_counter() - t) / (10 if device.type == "cuda" else 1))
    return 2 * BATCH * HIDDEN * HIDDEN / best / 1e9


def train_flops(d: int) -> float:
    big = 9 * 2 * BATCH * HIDDEN * HIDDEN
    first = 7 * 2 * BATCH * HIDDEN * (d + 1)
    return big + first


def score_flops_per_pair(d: int) -> float:
    return 2 * HIDDEN * HIDDEN + 2 * HIDDEN + 2 * HIDDEN * d / LEVELS


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_one(d: int, device: torch.device, variant: str, reps: int, n_score: int) -> dict:
    amp = variant == "bf16"
    tf32 = variant in ("tf32", "bf16", "tf32+compile")
    model = MULDE(hidden=(HIDDEN, HIDDEN), batch_size=BATCH, n_levels=LEVELS, amp=amp,
                  tf32=tf32, device=str(device), log_every=10**9)
    net = init_network(d, model.config.hidden, 1, seed=0).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    X = torch.randn(8 * BATCH, d, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    cfg = model.config
    with tf32_enabled(tf32, device):
        step = model._make_step(net, device)
        if variant.endswith("+compile"):
            step = torch.compile(step)
        params = list(net.parameters())

        def run(steps: int) -> float:
            settings = TrainSettings(steps, BATCH, cfg.lr, cfg.adam_betas, cfg.sigma_low,
                                     cfg.sigma_high, log_every=steps)
            sync(device)
            t = time.perf_counter()
            train_dsm(params, step, X, settings, gen, progress=False)
            sync(device)
            return (time.perf_counter() - t) / steps

        run(3 if variant.endswith("+compile") else 1)  # warm-up: compilation, buffers, kernels
        step_s = run(reps + 1)

        for p in params:
            p.grad = None
            p.requires_grad_(False)
        model.net_, model.device_ = net.eval(), device
        sigmas = np.linspace(cfg.sigma_low, cfg.sigma_high, LEVELS)
        feats = torch.randn(n_score, d)
        model._levels(feats[: cfg.score_batch_size], sigmas)
        best = float("inf")
        for _ in range(reps):
            sync(device)
            t = time.perf_counter()
            model._levels(feats, sigmas)
            sync(device)
            best = min(best, time.perf_counter() - t)
    return {"step_s": step_s, "pair_us": best / (n_score * LEVELS) * 1e6,
            "mem_mb": peak_memory_mb(device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and features")
    ap.add_argument("--device", default="all", choices=["cpu", "cuda", "all"])
    ap.add_argument("--dims", type=int, nargs="+", default=[2, 512, 1152])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reps = 2 if args.quick else 5
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        print("CUDA not available: CPU only")
        devices.remove("cuda")

    header = (f"{'device':6} {'variant':12} {'d':>5} | {'s/step':>8} {'bound':>8} {'%bound':>6} | "
              f"{'us/pair':>8} {'bound':>8} {'%bound':>6} | {'peak MB':>8}")
    rows = []
    for dev_name in devices:
        device = torch.device(dev_name)
        variants = ["fp32"] if dev_name == "cpu" else ["fp32", "tf32", "bf16", "tf32+compile"]
        n_score = (256 if args.quick else 1024) if dev_name == "cpu" else 16384
        for variant in variants:
            dtype = torch.bfloat16 if variant == "bf16" else torch.float32
            with tf32_enabled(variant != "fp32", device):
                gflops = matmul_gflops(device, dtype, reps + 1)
            print(f"[{dev_name} {variant}] matmul 2048x4096x4096: {gflops:.1f} GFLOP/s")
            for d in args.dims:
                r = bench_one(d, device, variant, reps, n_score)
                t_bound = train_flops(d) / gflops / 1e9
                s_bound = score_flops_per_pair(d) / gflops / 1e3
                rows.append(
                    f"{dev_name:6} {variant:12} {d:>5} | {r['step_s']:8.3f} {t_bound:8.3f} "
                    f"{t_bound / r['step_s']:6.0%} | {r['pair_us']:8.1f} {s_bound:8.1f} "
                    f"{s_bound / r['pair_us']:6.0%} | {r['mem_mb']:8.0f}"
                )
                print(rows[-1], flush=True)
    print("\n" + header + "\n" + "-" * len(header) + "\n" + "\n".join(rows))
    print("%bound = bound time / measured time (100% = at the matmul bound). CPU peak MB is "
          "the process RSS high-water mark so far; CUDA is max allocated per run.")


if __name__ == "__main__":
    main()
