"""The container health check against a real server: healthy with the server's own credentials,
unhealthy when they are wrong or nothing listens."""

from __future__ import annotations

import threading
from dataclasses import replace

from werkzeug.serving import make_server

from backend.app import create_app
from backend.healthcheck import healthy


def test_health_check_uses_the_servers_credentials_and_fails_when_nothing_answers(settings):
    guarded = replace(settings, basic_auth_user="pm", basic_auth_pass="s3cret")
    server = make_server("127.0.0.1", 0, create_app(guarded), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        on_port = replace(guarded, port=server.server_port)
        assert healthy(on_port)
        assert not healthy(replace(on_port, basic_auth_pass="wrong"))  # 401
        assert not healthy(replace(on_port, basic_auth_user=""))  # no credentials sent: 401
    finally:
        server.shutdown()
        thread.join(timeout=10)
    assert not healthy(on_port, timeout=2)  # nothing listens any more
