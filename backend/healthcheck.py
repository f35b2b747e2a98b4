"""The container's health check: ``python -m backend.healthcheck`` exits 0 when this host's
backend answers ``/health`` with 200, 1 otherwise (docker/docker-compose.yml).

``/health`` answers 200 whenever the server serves and names degraded parts in its body, so this
checks that the server is alive, as Label Studio does; it sends the basic-auth credentials the
server itself was given, which ``/health`` requires when they are set.
"""

from __future__ import annotations

import base64
import sys
import urllib.error
import urllib.request

from backend.settings import Settings


def healthy(settings: Settings, host: str = "127.0.0.1", timeout: float = 5.0) -> bool:
    request = urllib.request.Request(f"http://{host}:{settings.port}/health")
    if settings.basic_auth_user:
        pair = f"{settings.basic_auth_user}:{settings.basic_auth_pass}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError) as exc:  # refused, timed out, or an HTTP error status
        print(f"unhealthy: {exc}", file=sys.stderr)
        return False


def main() -> int:
    return 0 if healthy(Settings.from_env()) else 1


if __name__ == "__main__":
    sys.exit(main())
