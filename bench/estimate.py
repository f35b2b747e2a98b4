"""How close a training job's estimate (probe iterations before training) comes to the real
training time, with the job's own code path (target: within 30 %).

    .venv/bin/python bench/estimate.py --weights runs/reference/model --images 16 --iters 60
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.settings import Settings  # noqa: E402
from backend.training import plan  # noqa: E402
from model import datasets  # noqa: E402
from model.train import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="busbra:../shared/data/BUS-BRA")
    parser.add_argument("--weights", default="", help="a model directory to fine-tune (e.g. the starter model)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--iters", type=int, default=60)
    args = parser.parse_args()
    records = datasets.load(args.data)[: args.images]
    settings = Settings(train_max_iter=args.iters, train_bf16=True, train_time_budget=0)
    chosen, facts = plan(settings, records, args.weights)
    started = time.perf_counter()
    train(records, Path(tempfile.mkdtemp(prefix="birads-estimate-")) / "model", chosen)
    real = time.perf_counter() - started
    print(f"estimate {facts['estimated_seconds']} s, real {real:.0f} s "
          f"({100 * (facts['estimated_seconds'] - real) / real:+.0f} %), {facts['max_iter']} iterations, "
          f"probe {facts['seconds_per_iter_probe']} s/iter")


if __name__ == "__main__":
    main()
