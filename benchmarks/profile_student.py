"""Where a registration student spends its CPU time: operator profile of one forward pass.

Runs ``torch.profiler`` over repeated forward passes of randomly initialised students (the same
builders as ``medistill bench``) on random cubic inputs and prints, per network, the share of
self CPU time of convolutions, of ``grid_sample`` (warping) and of the rest (building and
composing fields, upsampling, pooling, concatenation), then the top operators.

    python benchmarks/profile_student.py --size 128 --threads 2
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from medistill.nets import build_student

CONV = ("convolution", "conv3d", "conv_transpose")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="cubic grid size (multiple of 32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.size < 32 or args.size % 32:
        print(f"--size must be a positive multiple of 32, got {args.size}")
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = (1, 1, *(args.size,) * 3)
    fixed, moving = torch.rand(shape), torch.rand(shape)
    students = {
        "LDR 1 cascade + affine": build_student(1, 3, "ldr"),
        "LDR-fast 1 cascade + affine": build_student(1, 3, "fast"),
        "LDR-fast 1 cascade + affine, half res": build_student(1, 3, "fast", downsample=2),
    }
    for name, net in students.items():
        net.eval()
        with torch.inference_mode():
            net(fixed, moving)  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(args.repeats):
                    net(fixed, moving)
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(e.self_cpu_time_total for e in events)
        conv = sum(e.self_cpu_time_total for e in events if any(c in e.key for c in CONV))
        grid = sum(e.self_cpu_time_total for e in events if "grid_sampler" in e.key)
        per_pass = total / args.repeats / 1e6
        print(
            f"{name} at {args.size}^3, {args.threads} threads: {per_pass:.3f} s CPU per pass; "
            f"convolutions {100 * conv / total:.0f} %, grid_sample {100 * grid / total:.0f} %, "
            f"other {100 * (total - conv - grid) / total:.0f} %"
        )
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]:
            print(f"    {e.key:32s} {100 * e.self_cpu_time_total / total:5.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
