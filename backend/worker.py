"""An RQ worker for training jobs (`birads worker`). Run as many as you have machines or GPUs:
each needs REDIS_URL, MODEL_DIR on shared storage, and Label Studio's URL and key."""

from __future__ import annotations

import logging
import os

from redis import Redis
from rq import Queue, Worker

from backend.settings import Settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    if not settings.redis_url:
        raise SystemExit("REDIS_URL is not set: a worker needs the server's Redis")
    _check_replay_data(settings)
    if settings.worker_nice:  # training yields the CPU to the server: annotators' requests come first
        os.nice(settings.worker_nice)
    connection = Redis.from_url(settings.redis_url)
    queue = Queue(settings.queue_name, connection=connection)
    Worker([queue], connection=connection).work(with_scheduler=False)


def _check_replay_data(settings: Settings) -> None:
    """A REPLAY_DATA the jobs could not read stops the worker now, not a project's second job."""
    from backend.training import replay_pool
    from model.io import DataError

    try:
        pool = replay_pool(settings)
    except DataError as exc:
        raise SystemExit(str(exc)) from None
    if pool:
        logging.getLogger(__name__).info("fine-tuning jobs replay %g of %d images of %s per project image",
                                         settings.replay_ratio, len(pool), settings.replay_data)


if __name__ == "__main__":
    main()
