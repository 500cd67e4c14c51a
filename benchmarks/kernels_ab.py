"""The fast kernels against the references they replace, timed in one run (ratios, not absolute
times, are what to compare across machines).

Rows: ``medistill.kernels.grid_sample`` vs one ``torch.nn.functional.grid_sample`` call (3-D,
forward and forward + backward); linear resampling onto a 64^3 grid, axis-aligned (separable) and
oblique (torch), vs ``scipy.ndimage.affine_transform``; ``robust_percentiles`` vs
``np.percentile``; the DC-CNN data-consistency layer with and without shifts (256x256);
``box_mean`` (separable box sums: LNCC's local means) vs 3-D average pooling at 64^3, windows 3
and 9, forward + backward. Each
pair is alternated ``--repeats`` times and the median is reported.

Usage (from the repository root, idle machine):

    OMP_NUM_THREADS=2 python benchmarks/kernels_ab.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medistill.io.geometry import resample_array
from medistill.kernels import box_mean, grid_sample
from medistill.recon.dccnn import (
    _data_consistency_uncentred,
    _measurement_uncentred,
    data_consistency,
)
from medistill.spatial.native import robust_percentiles


def alternate(a, b, repeats: int) -> tuple[float, float]:
    """Median ms of ``a()`` and ``b()``, called in turn ``repeats`` times after a warm-up."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, times in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t))
    return statistics.median(ta), statistics.median(tb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(int(torch.get_num_threads()))
    gen = torch.Generator().manual_seed(0)
    rows = []

    image = torch.randn(1, 3, 73, 74, 95, generator=gen, requires_grad=True)
    grid = (torch.rand(1, 71, 76, 89, 3, generator=gen) * 2 - 1).requires_grad_()

    def plain():
        return F.grid_sample(image, grid, padding_mode="border", align_corners=True)

    def slabs():
        return grid_sample(image, grid)

    with torch.no_grad():
        rows.append(("grid_sample 3-D forward, 3 channels", *alternate(plain, slabs, args.repeats)))

    def backward(fn):
        return lambda: (fn() ** 2).sum().backward()

    rows.append(
        ("grid_sample 3-D forward + backward", *alternate(backward(plain), backward(slabs), 5))
    )

    rng = np.random.default_rng(0)
    data = rng.random((73, 74, 95)).astype(np.float32)
    src = np.eye(4)
    for name, lin in (
        ("resample to 64^3, axis-aligned", np.diag([1.1, 0.9, 1.2])),
        (
            "resample to 64^3, oblique",
            np.array([[1.0, 0.15, 0.0], [-0.15, 1.0, 0.1], [0, -0.1, 1]]),
        ),
    ):
        dst = np.eye(4)
        dst[:3, :3] = lin
        dst[:3, 3] = [2.0, 3.0, -1.0]
        m = np.linalg.inv(src) @ dst

        def scipy_call(m=m):
            return ndimage.affine_transform(
                data, m[:3, :3], offset=m[:3, 3], output_shape=(64, 64, 64), order=1,
                mode="constant", prefilter=False,
            )  # fmt: skip

        def ours(dst=dst):
            return resample_array(data, src, dst, (64, 64, 64))

        rows.append((name, *alternate(scipy_call, ours, args.repeats)))

    q = [0.5, 1.0, 99.0, 99.5]
    rows.append(
        (
            "4 percentiles of 0.5 M voxels",
            *alternate(lambda: np.percentile(data, q), lambda: robust_percentiles(data, q), 20),
        )
    )

    x = torch.rand(1, 1, 256, 256, generator=gen)
    k0 = torch.fft.fft2(torch.rand(1, 1, 256, 256, generator=gen)).to(torch.complex64)
    mask = (torch.rand(1, 1, 1, 256, generator=gen) > 0.7).float()
    m_u, k_u = _measurement_uncentred(k0, mask)
    rows.append(
        (
            "DC layer 256x256 (shifted vs shift-free)",
            *alternate(
                lambda: data_consistency(x, k0, mask),
                lambda: _data_consistency_uncentred(x, k_u, m_u),
                args.repeats,
            ),
        )
    )

    vol = torch.rand(1, 1, 64, 64, 64, generator=gen, requires_grad=True)
    for window in (3, 9):

        def pooled(w=window):
            out = F.avg_pool3d(vol, w, stride=1, padding=w // 2, count_include_pad=False)
            (out * vol).sum().backward()

        def boxed(w=window):
            (box_mean(vol, w) * vol).sum().backward()

        rows.append(
            (f"box mean 64^3, window {window}, forward + backward", *alternate(pooled, boxed, 10))
        )

    print(f"{torch.get_num_threads()} threads, median of {args.repeats} alternations\n")
    print("| operation | reference ms | ours ms | x faster |")
    print("|---|---|---|---|")
    for name, ref, new in rows:
        print(f"| {name} | {ref:.2f} | {new:.2f} | {ref / new:.1f} |")


if __name__ == "__main__":
    main()
