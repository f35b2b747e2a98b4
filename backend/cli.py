"""`birads`: the model's commands plus `birads worker`, `birads serve` and `birads promote` for the
backend."""

from __future__ import annotations

import sys

BACKEND_COMMANDS = {
    "serve": "run the backend for Label Studio (gunicorn; settings from the environment, README; "
             "birads serve --help)",
    "worker": "run the RQ training worker (settings from the environment: REDIS_URL, MODEL_DIR, ...)",
    "promote": "serve a project's version by hand (birads promote --help)",
}
HELP = ("-h", "--help")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["worker"] and any(a in HELP for a in argv[1:]):
        print(f"usage: birads {argv[0]}\n\n{BACKEND_COMMANDS[argv[0]]}; it takes no options")
        return 0
    if not argv or argv[0] in HELP:
        print("backend commands:\n" + "".join(f"  {name:9} {text}\n" for name, text in BACKEND_COMMANDS.items()))
    if argv[:1] == ["worker"]:
        from backend.worker import main as worker

        worker()
        return 0
    if argv[:1] == ["serve"]:
        from backend.serve import main as serve

        serve(argv[1:])
        return 0
    if argv[:1] == ["promote"]:
        return promote(argv[1:])
    from model.cli import main as model_main

    return model_main(argv)



def promote(argv: list[str]) -> int:
    """Serve a project's version by hand: the override for one refused as a regression."""
    import argparse

    from backend.services import Services
    from backend.settings import Settings
    from model.io import DataError

    parser = argparse.ArgumentParser(prog="birads promote", description=promote.__doc__)
    parser.add_argument("--project", type=int, required=True)
    parser.add_argument("--version", required=True)
    args = parser.parse_args(argv)
    registry = Services(Settings.from_env()).registry(args.project)
    if args.version not in registry.versions():
        print(f"project {args.project} has no version {args.version!r} (it has: "
              f"{', '.join(registry.versions()) or 'none'})", file=sys.stderr)
        return 2
    info = registry.info(args.version)
    if info.get("refused"):
        info["overridden"] = info.pop("refused")
        registry.describe(**info)
    try:
        registry.promote(args.version)
    except DataError as exc:
        print(f"project {args.project}: {exc}", file=sys.stderr)
        return 2
    print(f"project {args.project}: version {args.version} is now served")
    return 0


if __name__ == "__main__":
    sys.exit(main())
