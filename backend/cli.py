"""`birads`: the model's commands plus `birads worker` and `birads serve` for the backend."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"]:
        from backend.worker import main as worker

        worker()
        return 0
    if argv[:1] == ["serve"]:
        from backend.serve import main as serve

        serve()
        return 0
    from model.cli import main as model_main

    return model_main(argv)


if __name__ == "__main__":
    sys.exit(main())
