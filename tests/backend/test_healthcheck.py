"""The container health check against a real server: healthy with the server's own credentials,
unhealthy when they are wrong or nothing listens."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from dataclasses import fields, replace

from werkzeug.serving import make_server

from backend.app import create_app
from backend.healthcheck import NEEDED, healthy
from backend.settings import Settings


@contextlib.contextmanager
def serving(settings: Settings):
    """The real app on 127.0.0.1 (a free port) while the block runs: its port."""
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_health_check_uses_the_servers_credentials_and_fails_when_nothing_answers(settings):
    with serving(replace(settings, basic_auth_user="pm", basic_auth_pass="s3cret")) as port:
        assert healthy(port, "pm", "s3cret")
        assert not healthy(port, "pm", "wrong")  # 401
        assert not healthy(port)  # no credentials sent: 401
    assert not healthy(port, "pm", "s3cret", timeout=2)  # nothing listens any more


def test_health_check_reads_the_settings_variables_without_importing_torch():
    by_name = {f.name: f for f in fields(Settings)}
    for name, (variable, default) in NEEDED.items():  # the same names and defaults as Settings
        expected = "" if by_name[name].default is None else str(by_name[name].default)
        assert (by_name[name].metadata["env"], expected) == (variable, default)
    imported = subprocess.run([sys.executable, "-c", "import sys, backend.healthcheck; print('torch' in sys.modules)"],
                              capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "False"


def test_health_check_of_a_server_on_every_interface_asks_the_loopback(settings, monkeypatch):
    """BIND_HOST 0.0.0.0 or :: (IPv6, which a container may not have): 127.0.0.1 is asked first."""
    from backend.healthcheck import main

    for variable in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "TLS_CERT_FILE"):
        monkeypatch.delenv(variable, raising=False)
    with serving(settings) as port:
        monkeypatch.setenv("PORT", str(port))
        for host in ("0.0.0.0", "::", "[::]"):
            monkeypatch.setenv("BIND_HOST", host)
            assert main() == 0, host
        monkeypatch.setenv("BIND_HOST", "192.0.2.1")  # an address this machine does not have
        assert main() == 1


def test_an_empty_port_is_the_servers_default_not_a_crash(monkeypatch, capsys):
    """compose passes an unset PORT as empty; the server reads that as 9090, and so must the check."""
    from backend.healthcheck import main

    monkeypatch.setenv("PORT", "")
    monkeypatch.setenv("BIND_HOST", "192.0.2.1")  # nothing answers there: unhealthy, said in one line
    assert main() == 1 and "unhealthy" in capsys.readouterr().err
