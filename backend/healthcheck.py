"""The container's health check: ``python -m backend.healthcheck`` exits 0 when this host's
backend answers ``/health`` with 200, 1 otherwise (docker/docker-compose.yml).

``/health`` answers 200 whenever the server serves and names degraded parts in its body, so this
checks that the server is alive, as Label Studio does; it sends the basic-auth credentials the
server itself was given, which ``/health`` requires when they are set.

Over HTTPS where the server has a certificate: the check asks this machine's own server, so it
does not verify a certificate issued for the hospital's name rather than for the loopback address.

It runs every 30 s beside the server, so it reads its settings from the environment itself:
``backend.settings`` imports the model package, and with it torch (2.7 s of CPU a probe on 2
cores). ``tests/backend/test_healthcheck.py`` checks the names and defaults against ``Settings``.
"""

from __future__ import annotations

import base64
import os
import ssl
import sys
import urllib.error
import urllib.request

# Settings' environment variable and default for each field the check needs ("": None)
NEEDED = {"bind_host": ("BIND_HOST", "0.0.0.0"), "port": ("PORT", "9090"),
          "basic_auth_user": ("BASIC_AUTH_USER", ""), "basic_auth_pass": ("BASIC_AUTH_PASS", ""),
          "tls_cert_file": ("TLS_CERT_FILE", "")}
# listening on every interface: ask over the loopback (IPv4 first: a container may have no IPv6)
LOOPBACKS = {"0.0.0.0": ("127.0.0.1",), "": ("127.0.0.1",), "::": ("127.0.0.1", "::1")}


def with_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets (given with or without them)."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def healthy(port: int, user: str = "", password: str = "", host: str = "127.0.0.1", timeout: float = 5.0,
            tls: bool = False) -> bool:
    request = urllib.request.Request(f"{'https' if tls else 'http'}://{with_port(host, port)}/health")
    if user:
        pair = f"{user}:{password}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    context = None
    if tls:  # our own server, whatever name its certificate was issued for (module docstring)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError) as exc:  # refused, timed out, or an HTTP error status
        print(f"unhealthy: {exc}", file=sys.stderr)
        return False


def main() -> int:
    host, port, user, password, cert = (os.environ.get(name, default) for name, default in NEEDED.values())
    hosts = LOOPBACKS.get(host.strip("[]"), (host,))
    port = int(port or 9090)  # empty, as compose passes an unset one: the server's default too
    return 0 if any(healthy(port, user, password, host=h, tls=bool(cert)) for h in hosts) else 1


if __name__ == "__main__":
    sys.exit(main())
