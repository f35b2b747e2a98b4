"""/webhook latency under a flood from wrk (a C load generator, far lighter than Python clients):
8 connections for 15 s of ANNOTATION_CREATED events for one connected project, against the server
as `make run` starts it (gunicorn 1 worker x THREADS, real Redis). Needs `wrk` (apt install wrk).

    .venv/bin/python bench/webhook_flood.py [--connections 8] [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.backend import CONFIG, start_server  # noqa: E402

LUA = """wrk.method = "POST"
wrk.body = '{"action": "ANNOTATION_CREATED", "project": {"id": 1}}'
wrk.headers["Content-Type"] = "application/json"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--redis", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/12"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt install wrk)")
    work = Path(tempfile.mkdtemp())
    env = dict(os.environ, PYTHONPATH=str(REPO), MODEL_DIR=str(work / "models"), REDIS_URL=args.redis,
               RQ_QUEUE=f"bench-{uuid.uuid4().hex[:6]}", RETRAIN_AFTER="1000000000")
    threads = json.loads(subprocess.run([sys.executable, "-c", "from backend.settings import Settings; "
                                         "print(Settings.from_env().threads)"], env=env, cwd=REPO,
                                        capture_output=True, text=True, check=True).stdout)
    server, url = start_server(env, threads)
    try:
        assert requests.post(f"{url}/setup", json={"project": "1.0", "schema": CONFIG}, timeout=60).ok
        (work / "flood.lua").write_text(LUA)
        command = ["wrk", f"-t{min(2, args.connections)}", f"-c{args.connections}", f"-d{args.seconds}s",
                   "--latency", "-s", str(work / "flood.lua"), f"{url}/webhook"]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        percentiles = dict(re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)$", out, re.M))
        requests_done = re.search(r"(\d+) requests in", out).group(1)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        print(f"/webhook, {args.connections} connections, {args.seconds} s, gunicorn 1 x {threads} threads: "
              f"{requests_done} requests, p50 {percentiles.get('50')}, p99 {percentiles.get('99')}, "
              f"non-2xx {errors.group(1) if errors else 0}")
    finally:
        server.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
