"""Status page load time with 20 versions and a job running (target < 200 ms), on the real app
and a real Redis (REDIS_URL, default redis://127.0.0.1:6379/12).

    .venv/bin/python bench/status_page.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from redis import Redis  # noqa: E402

from backend.app import create_app  # noqa: E402
from backend.jobs import TrainingQueue  # noqa: E402
from backend.settings import Settings  # noqa: E402
from model.registry import Registry  # noqa: E402


def main() -> None:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/12")
    root = Path(tempfile.mkdtemp(prefix="birads-status-"))
    settings = Settings(model_dir=root, redis_url=url, queue_name=f"bench-{uuid.uuid4().hex[:8]}")
    registry = Registry(root / "project-1")
    for n in range(20):
        name = f"v20261126-{n:06d}"
        registry.path(name).mkdir(parents=True)
        registry.describe(name, parent=f"v20261126-{n - 1:06d}" if n else None, train_images=100 + n,
                          holdout_images=20, metrics={"ap50": n / 20, "ap50_lesion": 0.6, "category_accuracy": 0.5,
                                                      "confusion_matrix": {"labels": ["1", "2", "3", "4", "5"],
                                                                           "matrix": [[1] * 5] * 5}})
        registry.promote(name)
    queued = TrainingQueue(Redis.from_url(url), settings).request(1, "START_TRAINING", force=True)
    print(f"job {queued['job_id']} queued")
    client = create_app(settings).test_client()
    times = []
    for _ in range(30):
        started = time.perf_counter()
        assert client.get("/").status_code == 200
        times.append(1000 * (time.perf_counter() - started))
    print(f"GET / with 20 versions and a queued job: median {statistics.median(times):.1f} ms, "
          f"max {max(times):.1f} ms over {len(times)} loads (first {times[0]:.1f} ms)")


if __name__ == "__main__":
    main()
