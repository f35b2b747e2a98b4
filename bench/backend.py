"""Backend overhead, in one run, on real images and one model directory:

1. /predict over HTTP (gunicorn, local files) vs the predictor in-process: s/image at batch 1
   and batch 16 (target: overhead <= 5 %);
2. /webhook latency p50/p99 while a training run loads the same CPUs (target p99 < 50 ms);
3. server memory (RSS of the gunicorn worker) over 500 predictions (should stay flat).

    .venv/bin/python bench/backend.py --model models/v1 --data busbra:../shared/data/BUS-BRA

Needs the Redis on 127.0.0.1:6379 (or REDIS_URL). Starts its own server and training run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import model  # noqa: E402,F401  (applies the detectron2 fixes before any detectron2 import)

CONFIG = ('<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
          '<Label value="BI-RADS 2"/><Label value="BI-RADS 3"/><Label value="BI-RADS 4"/>'
          '<Label value="BI-RADS 5"/></RectangleLabels></View>')


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict, threads: int) -> tuple[subprocess.Popen, str]:
    """gunicorn serving the app on a free port as `make run` does (1 worker); returns it once it answers."""
    port = _port()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", str(threads),
                               "--bind", f"127.0.0.1:{port}", "backend.app:create_app()"], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            requests.get(f"{url}/health", timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.5)
    return server, url


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default=f"busbra:{REPO / 'tests/data/busbra'}")
    parser.add_argument("--predictions", type=int, default=500)
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/12"))
    args = parser.parse_args()

    from model import datasets
    from model.predict import Predictor
    from model.registry import Registry

    records = datasets.load(args.data)[:16]
    paths = [r.path for r in records]
    root = Path(os.path.commonpath(paths))
    work = Path(tempfile.mkdtemp())
    registry = Registry(work / "models" / "project-1")
    shutil.copytree(args.model, registry.path("bench"))
    registry.promote("bench")
    env = dict(os.environ, PYTHONPATH=str(REPO), MODEL_DIR=str(work / "models"),
               REDIS_URL=args.redis, RQ_QUEUE=f"bench-{uuid.uuid4().hex[:6]}", LOCAL_FILES_ROOT=str(root))
    server, url = start_server(env, threads=16)
    try:
        tasks = [{"id": i, "data": {"image": p}} for i, p in enumerate(paths)]
        body = lambda batch: {"tasks": batch, "project": "1.0", "label_config": CONFIG}  # noqa: E731
        assert requests.post(f"{url}/setup", json={"project": "1.0", "schema": CONFIG}, timeout=60).ok
        requests.post(f"{url}/predict", json=body(tasks[:1]), timeout=300)  # load the model
        predictor = Predictor(args.model, score_threshold=0.05, max_boxes=20)
        predictor(paths[:2])
        print("| batch | in-process s/image | HTTP s/image | overhead |\n|---|---|---|---|")
        for batch in (1, 16):
            start = time.perf_counter()
            for i in range(0, len(paths), batch):
                predictor(paths[i:i + batch], batch_size=4)
            local = (time.perf_counter() - start) / len(paths)
            start = time.perf_counter()
            for i in range(0, len(paths), batch):
                answer = requests.post(f"{url}/predict", json=body(tasks[i:i + batch]), timeout=600)
                assert answer.ok, answer.text
            remote = (time.perf_counter() - start) / len(paths)
            print(f"| {batch} | {local:.3f} | {remote:.3f} | {100 * (remote / local - 1):+.1f} % |", flush=True)

        worker_pid = int(subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True,
                                        text=True).stdout.split()[0])
        memory = [_rss_mb(worker_pid)]
        for i in range(args.predictions):
            requests.post(f"{url}/predict", json=body(tasks[i % len(paths):i % len(paths) + 1]), timeout=300)
            if (i + 1) % 100 == 0:
                memory.append(_rss_mb(worker_pid))
        print(f"\nserver RSS (MB) every 100 predictions: {[round(m) for m in memory]}")

        # A training run on the same machine (what the RQ worker does) competes for the CPU.
        trainer = subprocess.Popen([sys.executable, "-m", "model.cli", "train", "--data", args.data, "--out",
                                    str(work / "trained"), "--max-iter", "40", "--image-size", "512"],
                                   env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(30)  # past model building: training iterations are running
            hook = {"action": "ANNOTATION_CREATED", "project": {"id": 1, "label_config": CONFIG}}
            latencies = []
            for _ in range(300):
                start = time.perf_counter()
                assert requests.post(f"{url}/webhook", json=hook, timeout=5).status_code < 300
                latencies.append(1000 * (time.perf_counter() - start))
            latencies.sort()
            print(f"/webhook latency during training: p50 {statistics.median(latencies):.1f} ms, "
                  f"p99 {latencies[int(0.99 * len(latencies)) - 1]:.1f} ms")
        finally:
            trainer.terminate()
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
