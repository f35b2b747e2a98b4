"""The box head's pooling in a training iteration: detectron2's ROIPooler as it comes (torchvision's
one-core RoIAlign kernels) against ours (model.roi_pooling: the same kernels over the channels in
parts, one per thread), forward and backward, bfloat16 autocast as the recipe trains.

    .venv/bin/python bench/roi_pooling.py [--boxes 512] [--repeats 5]

Shapes are the recipe's (docs/results.md): 4 images at 320 x 576 px, FPN levels P2-P5 of 256
channels, 128 sampled proposals per image, boxes of lesion sizes. The pooled features and the
gradients must be bitwise equal, or the benchmark stops.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import model  # noqa: E402,F401  (applies the detectron2 fixes before any detectron2 import)

IMAGES, HEIGHT, WIDTH, CHANNELS = 4, 320, 576, 256
STRIDES = (4, 8, 16, 32)


def _boxes(n: int) -> list:
    from detectron2.structures import Boxes

    generator = torch.Generator().manual_seed(0)
    per_image = []
    for _ in range(IMAGES):
        size = 16 + torch.rand(n // IMAGES, 2, generator=generator) * 240
        corner = torch.rand(n // IMAGES, 2, generator=generator) * torch.tensor([WIDTH, HEIGHT]) - size / 2
        per_image.append(Boxes(torch.cat([corner, corner + size], 1)))
    return per_image


def _time(pooler, features: list[torch.Tensor], boxes: list, weights: torch.Tensor,
          repeats: int) -> tuple[float, list[torch.Tensor]]:
    """Median seconds of a forward and backward; the pooled features and gradients, to compare.
    The gradient flows in through ``weights`` (one per pooled element), so each channel's differs."""
    seconds = []
    for _ in range(repeats + 1):  # the first warms up
        leaves = [f.detach().requires_grad_(True) for f in features]
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pooled = pooler(leaves, boxes)
        (pooled.float() * weights).sum().backward()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds[1:]), [pooled, *(leaf.grad for leaf in leaves)]


def main() -> None:
    from detectron2.modeling.poolers import ROIPooler

    from model.roi_pooling import pool_boxes

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--boxes", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    features = [torch.randn(IMAGES, CHANNELS, HEIGHT // s, WIDTH // s).bfloat16()
                .contiguous(memory_format=torch.channels_last) for s in STRIDES]
    boxes = _boxes(args.boxes)
    stock, ours = (ROIPooler((7, 7), tuple(1 / s for s in STRIDES), 0, "ROIAlignV2") for _ in range(2))
    pool_boxes(ours)
    weights = torch.randn(args.boxes, CHANNELS, 7, 7, generator=torch.Generator().manual_seed(1))
    stock_s, stock_results = _time(stock, features, boxes, weights, args.repeats)
    ours_s, our_results = _time(ours, features, boxes, weights, args.repeats)
    if not all(torch.equal(a, b) for a, b in zip(stock_results, our_results)):
        sys.exit("the pooled features or gradients differ: ours must equal torchvision's to the bit")
    print(f"box pooling, forward + backward, {args.boxes} boxes on {IMAGES} images at {HEIGHT} x {WIDTH} px, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}\n")
    print("| pooling | s | vs detectron2's |\n|---|---|---|")
    print(f"| detectron2 (torchvision's kernels) | {stock_s:.3f} | 1.00x |")
    print(f"| ours (channels in parts), results bitwise equal | {ours_s:.3f} | {ours_s / stock_s:.2f}x |")


if __name__ == "__main__":
    main()
