"""The container's health check: ``python -m backend.healthcheck`` exits 0 when this host's
backend answers ``/health`` with 200, 1 otherwise (docker/docker-compose.yml).

``/health`` answers 200 whenever the server serves and names degraded parts in its body, so this
checks that the server is alive, as Label Studio does; it sends the basic-auth credentials the
server itself was given, which ``/health`` requires when they are set.

It runs every 30 s beside the server, so it reads its three settings from the environment itself:
``backend.settings`` imports the model package, and with it torch (2.7 s of CPU a probe on 2
cores). ``tests/backend/test_healthcheck.py`` checks the names and defaults against ``Settings``.
"""

from __future__ import annotations

import base64
import os
import sys
import urllib.error
import urllib.request

# Settings' environment variable and default for each field the check needs
NEEDED = {"port": ("PORT", "9090"), "basic_auth_user": ("BASIC_AUTH_USER", ""),
          "basic_auth_pass": ("BASIC_AUTH_PASS", "")}


def healthy(port: int, user: str = "", password: str = "", host: str = "127.0.0.1", timeout: float = 5.0) -> bool:
    request = urllib.request.Request(f"http://{host}:{port}/health")
    if user:
        pair = f"{user}:{password}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError) as exc:  # refused, timed out, or an HTTP error status
        print(f"unhealthy: {exc}", file=sys.stderr)
        return False


def main() -> int:
    port, user, password = (os.environ.get(name, default) for name, default in NEEDED.values())
    return 0 if healthy(int(port), user, password) else 1


if __name__ == "__main__":
    sys.exit(main())
