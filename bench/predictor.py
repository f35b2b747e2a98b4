"""Our predictor (fp32, bf16 + channels_last) vs detectron2's DefaultPredictor, side by side.

Same model directory, same real images, same input sizes; each configuration runs in its own
process so its peak memory (max RSS) is its own; ours predicts as the backend serves (box
classifier where the model has one, box voting). Prints a table and the time ratios, against
DefaultPredictor at the same size and at the paper's 800 px. Size 0 is the model's own (the size it
was trained at, e.g. the reference model's near-native 320/576 px). ``--proposals`` times ours at
each count of RPN proposals its box head reads (0: the predictor's default, 75 in float32 on a CPU
and the model's own in bf16, printed as "default N"; DefaultPredictor always reads the model's own:
docs/results.md items 76 and 82). ``--passes N`` times each configuration N times over the
images after its warm-up and reports the median (of an even N, the mean of the middle two; one pass
moved by up to a third between runs on a 2-core virtual machine in item 76; the median steadies
one process's figure, rounds processes apart still catch a slow spell); each row's printed record
holds the fastest and slowest pass too.

    .venv/bin/python bench/predictor.py --model models/v1 \
        --data busbra:../shared/data/BUS-BRA --images 16 --sizes 0 512 800
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import model  # noqa: E402,F401  (applies the detectron2 fixes before any detectron2 import)


def run_one(mode: str, model_dir: str, size: int, proposals: int, passes: int, paths: list[str]) -> dict:
    """Time one configuration in this process (called in a child process)."""
    import numpy as np

    from model.io import read_image

    images = [read_image(p) for p in paths]
    if mode == "detectron2":
        from detectron2.config import get_cfg
        from detectron2.engine import DefaultPredictor

        cfg = get_cfg()
        cfg.merge_from_file(str(Path(model_dir) / "config.yaml"))
        cfg.MODEL.WEIGHTS = str(Path(model_dir) / "model_final.pth")
        cfg.MODEL.DEVICE = "cpu"
        if size:
            cfg.INPUT.MIN_SIZE_TEST = cfg.INPUT.MAX_SIZE_TEST = size
        predictor = DefaultPredictor(cfg)
        infer = lambda: [predictor(np.ascontiguousarray(im[:, :, ::-1])) for im in images]  # noqa: E731
    else:
        from model.predict import Predictor
        from model.records import BOX_VOTING_IOU

        # as the backend serves: the model's box classifier where it has one, box voting on
        predictor = Predictor(model_dir, device="cpu", bf16=(mode == "ours-bf16"), image_size=size or None,
                              box_voting_iou=BOX_VOTING_IOU, proposals=proposals or None)
        infer = lambda: predictor(images, batch_size=1)  # noqa: E731
    infer_first = time.perf_counter()
    predictor_out = infer()  # warm-up (allocator, oneDNN kernels)
    warm = time.perf_counter() - infer_first
    per_pass = []
    for _ in range(passes):
        start = time.perf_counter()
        infer()
        per_pass.append((time.perf_counter() - start) / len(images))
    del predictor_out
    read = predictor.cfg.MODEL.RPN.POST_NMS_TOPK_TEST
    label = "own" if mode == "detectron2" else (proposals or f"default {read}")
    return {"mode": mode, "size": size, "proposals": label,
            "s_per_image": round(statistics.median(per_pass), 3),
            "pass_range": [round(min(per_pass), 3), round(max(per_pass), 3)], "warmup_s": round(warm, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text}: a count of proposals is 0 (the model's own) or more")
    return value


def main() -> None:
    from model.cli import _positive

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=f"busbra:{REPO / 'tests/data/busbra'}")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 800])
    parser.add_argument("--proposals", type=_count, nargs="+", default=[0],
                        help="RPN proposals our box head reads, one run per count (0: the predictor's default)")
    parser.add_argument("--passes", type=_positive, default=1,
                        help="timed passes over the images per configuration; the median is reported")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "SIZE", "PROPOSALS", "PASSES"), help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, size, proposals, passes = args.child
        print(json.dumps(run_one(mode, args.model, int(size), int(proposals), int(passes), args.paths)))
        return
    from model import datasets
    from model.config import bf16_supported

    paths = [r.path for r in datasets.load(args.data)[: args.images]]
    modes = ["detectron2", "ours-fp32", "ours-bf16"]
    if not bf16_supported("cpu"):  # emulated bf16 is many times slower: nothing to learn from it
        modes.remove("ours-bf16")
        print("this CPU has no native bfloat16: ours-bf16 not run (the predictor serves float32 here)")
    rows = []
    for size in args.sizes:
        for mode, proposals in [(m, n) for m in modes for n in ([0] if m == "detectron2" else args.proposals)]:
            done = subprocess.run([sys.executable, __file__, "--model", args.model, "--child", mode,
                                   str(size), str(proposals), str(args.passes), *paths],
                                  capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print(f"\n{len(paths)} images, {args.model}, s/image the median of {args.passes} pass(es)\n")
    paper = next((r for r in rows if r["size"] == 800 and r["mode"] == "detectron2"), None)
    print("| size | predictor | proposals | s/image | peak RSS MB | vs DefaultPredictor, same size | "
          "vs DefaultPredictor, 800 px |\n|---|---|---|---|---|---|---|")
    for size in args.sizes:
        base = next(r for r in rows if r["size"] == size and r["mode"] == "detectron2")
        for row in (r for r in rows if r["size"] == size):
            at_800 = f"{row['s_per_image'] / paper['s_per_image']:.2f}x" if paper else "n/a"
            print(f"| {size or 'model own'} | {row['mode']} | {row['proposals']} | {row['s_per_image']} | "
                  f"{row['peak_rss_mb']} | "
                  f"{row['s_per_image'] / base['s_per_image']:.2f}x | {at_800} |")


if __name__ == "__main__":
    main()
