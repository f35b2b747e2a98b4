"""Our trainer (fp32 and bf16) vs plain detectron2 DefaultTrainer: seconds per iteration.

Same config (from our TrainSettings), same real images, same batch; each run in its own process.
The plain trainer differs from DefaultTrainer only in dropping the TensorBoard writer
(tensorboard is not installed), which does not touch the iteration.

    .venv/bin/python bench/trainer.py --data busbra:../shared/data/BUS-BRA --images 16 \
        --size 512 --iters 12
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import model  # noqa: E402,F401  (applies the detectron2 fixes before any detectron2 import)


def run_one(mode: str, data: str, n_images: int, size: int, iters: int) -> dict:
    from detectron2.data import DatasetCatalog
    from detectron2.engine import DefaultTrainer, HookBase
    from detectron2.utils.events import CommonMetricPrinter

    from model import datasets, taxonomy
    from model.config import TrainSettings, build_config
    from model.train import BiradsTrainer, to_detectron2

    records = datasets.load(data)[:n_images]
    classes = taxonomy.detector_classes(taxonomy.label_set_for(b.category for r in records for b in r.boxes))
    settings = TrainSettings(image_size=size, max_iter=iters, num_workers=1, bf16=(mode == "ours-bf16"))
    stamps: list[float] = []

    class Stamp(HookBase):
        def after_step(self) -> None:
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as work:
        cfg = build_config(settings, classes, len(records), work)
        dicts = to_detectron2(records, classes)
        if mode == "detectron2":
            DatasetCatalog.register("bench", lambda: dicts)
            cfg = cfg.clone()
            cfg.defrost()
            cfg.DATASETS.TRAIN = ("bench",)
            cfg.INPUT.RANDOM_FLIP = "horizontal"

            class PlainTrainer(DefaultTrainer):
                def build_writers(self):
                    return [CommonMetricPrinter(self.max_iter)]

            trainer = PlainTrainer(cfg)
        else:
            trainer = BiradsTrainer(cfg, dicts, settings)
        trainer.register_hooks([Stamp()])
        trainer.resume_or_load(resume=False)
        trainer.train()
    steps = [b - a for a, b in zip(stamps, stamps[1:])][2:]  # skip warm-up iterations
    return {"mode": mode, "size": size, "s_per_iter": round(statistics.median(steps), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=f"busbra:{REPO / 'tests/data/busbra'}")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iters", type=int, default=12)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.data, args.images, args.size, args.iters)))
        return
    rows = []
    for mode in ("detectron2", "ours-fp32", "ours-bf16"):
        done = subprocess.run([sys.executable, __file__, "--child", mode, "--data", args.data,
                               "--images", str(args.images), "--size", str(args.size),
                               "--iters", str(args.iters)], capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    base = rows[0]["s_per_iter"]
    print(f"\nR101-FPN from scratch, batch 2, {args.size} px, median of {args.iters - 3} iterations\n")
    print("| trainer | s/iter | vs DefaultTrainer |\n|---|---|---|")
    for row in rows:
        print(f"| {row['mode']} | {row['s_per_iter']} | {row['s_per_iter'] / base:.2f}x |")


if __name__ == "__main__":
    main()
