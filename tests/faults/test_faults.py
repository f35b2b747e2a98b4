"""Hostile input, slow clients and floods against the real server (gunicorn + RQ worker + Redis).

Every case asserts the status the client gets, that the server still answers, and that nothing
served or stored was lost (``hardened["intact"]``). A worker killed mid-training is in
tests/e2e/test_worker.py (it needs Label Studio). Measured figures are printed (and collected by
bench/faults.sh for the README); the bounds asserted here are the issue's targets where they are
about correctness (no bypass, bounded memory), generous ones where they are about speed.
"""

from __future__ import annotations

import base64
import http.server
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image
from redis import Redis
from rq import Queue

from tests.bombs import dicom, png_claiming
from tests.faults.conftest import (
    AUTH,
    AUTH_FAILURE_WINDOW,
    CONFIG,
    PROJECT,
    SECRET,
    SERVED,
    gunicorn_rss_mb,
    predict_body,
    record,
)

pytestmark = pytest.mark.slow


def _hook(action: str) -> dict:
    return {"action": action, "project": {"id": PROJECT, "label_config": CONFIG}}


# --- no auth bypass -------------------------------------------------------------------------------

def test_no_request_gets_past_auth_without_its_credentials(hardened):
    url = hardened["url"]
    user_only = {"Authorization": "Basic " + base64.b64encode(b"ls:").decode()}
    garbage = {"Authorization": "Basic !!!"}
    bearer = {"Authorization": "Bearer basic-secret"}
    guarded = [("GET", "/", None), ("GET", "/health", None), ("POST", "/setup", {"project": "2.1", "schema": CONFIG}),
               ("POST", "/predict", predict_body("bus_0090-r.png")), ("GET", "/versions", None),
               ("GET", f"/jobs?project={PROJECT}", None), ("GET", "/jobs/anything", None),
               ("POST", "/webhook", _hook("START_TRAINING"))]
    refused, throttled = 0, 0
    for method, path, body in guarded:
        # a guesser tries a new password each time (the same wrong one again counts once)
        wrong = {"Authorization": "Basic " + base64.b64encode(f"ls:wrong{path}".encode()).decode()}
        for headers in (None, wrong, user_only, garbage, bearer, {"X-Webhook-Secret": SECRET}):
            response = requests.request(method, url + path, json=body, headers=headers, timeout=30)
            assert response.status_code in (401, 429), (method, path, headers, response.status_code)
            refused += 1
            throttled += response.status_code == 429
    for headers in (None, {"X-Webhook-Secret": "wrong"}, {"X-Webhook-Secret": SECRET.upper()}):
        response = requests.post(f"{url}/webhook", json=_hook("ANNOTATION_CREATED"), headers=headers, timeout=30)
        assert response.status_code == 401, headers  # two wrong secrets: under the limit, counted apart
        refused += 1
    # basic auth in place of the secret is checked before the body, as basic auth: locked out above
    response = requests.post(f"{url}/webhook", json=_hook("ANNOTATION_CREATED"), headers=AUTH, timeout=30)
    assert response.status_code == 429
    refused += 1
    # this address presented more wrong passwords than AUTH_MAX_FAILURES: refused whatever it sent,
    # until the window passed
    assert throttled > 0
    time.sleep(AUTH_FAILURE_WINDOW + 1)
    # the right credentials, and a webhook for a project never set up: nothing created
    answer = requests.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": 77}},
                           headers=AUTH, timeout=30)
    assert answer.status_code == 404
    assert not (hardened["registry"].root.parent / "project-77").exists()
    record("auth_refusals", refused)
    hardened["intact"]()


# --- no allow-list bypass -------------------------------------------------------------------------

@pytest.fixture()
def canary():
    """An HTTP server on loopback that counts every request reaching it."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], hits
    server.shutdown()


def test_no_image_url_reaches_a_host_it_may_not(hardened, canary):
    port, hits = canary
    sneaky = [f"http://127.0.0.1:{port}/a.png", f"http://localhost:{port}/a.png", f"http://[::1]:{port}/a.png",
              f"http://2130706433:{port}/a.png", f"http://0x7f.1:{port}/a.png", f"http://127.1:{port}/a.png",
              f"http://images.example.org@127.0.0.1:{port}/a.png",
              f"http://images.example.org:x@127.0.0.1:{port}/a.png", f"http://127.0.0.1:{port}#@images.example.org/",
              f"http://127.0.0.1:{port}\\@images.example.org/a.png", f"HTTP://LOCALHOST:{port}/a.png",
              "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/a.png", "http://10.0.0.1/a.png",
              f"file://127.0.0.1:{port}/etc/passwd", "/etc/passwd", "../../../../etc/passwd",
              f"gopher://127.0.0.1:{port}/", f"ftp://127.0.0.1:{port}/a.png"]
    for reference in sneaky:
        response = requests.post(f"{hardened['url']}/predict", json=predict_body(reference), headers=AUTH, timeout=30)
        assert response.status_code in (400, 403, 422, 502), (reference, response.status_code, response.text)
    assert hits == []  # nothing reached the canary
    record("allow_list_attempts", len(sneaky))
    hardened["intact"]()


# --- bombs and oversized requests: bounded memory -------------------------------------------------

def test_bombs_and_oversized_requests_leave_memory_bounded(hardened):
    files, url = hardened["files"], hardened["url"]
    (files / "bomb.png").write_bytes(png_claiming(15000, 15000))
    (files / "bomb-small.png").write_bytes(png_claiming(8000, 8000))   # under Pillow's own error limit
    (files / "bomb.dcm").write_bytes(dicom(15000, 15000))
    ok = requests.post(url + "/predict", json=predict_body(str(files / "bus_0090-r.png")), headers=AUTH, timeout=120)
    assert ok.status_code == 200  # the model is loaded before the baseline
    before = gunicorn_rss_mb(hardened["pid"])
    statuses = []
    session = requests.Session()
    for number in range(100):
        kind = number % 5
        if kind == 0:
            response = session.post(url + "/predict", json=predict_body(str(files / "bomb.png")), headers=AUTH)
        elif kind == 1:
            response = session.post(url + "/predict", json=predict_body(str(files / "bomb-small.png")), headers=AUTH)
        elif kind == 2:
            response = session.post(url + "/predict", json=predict_body(str(files / "bomb.dcm")), headers=AUTH)
        elif kind == 3:  # a body over MAX_REQUEST_BYTES: refused from its Content-Length
            statuses.append(_declared_too_large(url))
            continue
        else:  # the same, chunked, with no length to refuse it by: cut off at the limit
            statuses.append(_chunked_too_large(url))
            continue
        statuses.append(response.status_code)
    after = gunicorn_rss_mb(hardened["pid"])
    assert set(statuses) == {413}, statuses
    growth = after - before
    record("bombs_rss_growth_mb", round(growth, 1))
    assert growth <= 300, f"server RSS grew {growth:.0f} MB under 100 bombs and oversized requests"
    hardened["intact"]()


def _declared_too_large(url: str) -> int:
    host, port = url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: "
                     + AUTH["Authorization"].encode() + b"\r\nContent-Length: 3000000\r\n\r\n{")
        return int(sock.recv(100).split(b" ")[1])


def _chunked_too_large(url: str) -> int:
    host, port = url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: "
                     + AUTH["Authorization"].encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (100_000, b" " * 100_000)
        try:
            for _ in range(30):  # 3 MB, more than MAX_REQUEST_BYTES
                sock.sendall(chunk)
        except OSError:  # the server stopped reading at the limit and answered
            pass
        return int(sock.recv(100).split(b" ")[1])


# --- slow clients ---------------------------------------------------------------------------------

def _slow_client(port: int, stop: threading.Event, kind: str, outcomes: list) -> None:
    """Holds a connection: trickles its headers (kind "headers") or its body ("body") a byte at a time."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                if kind == "headers":
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                    while not stop.is_set():
                        sock.sendall(b"X")
                        time.sleep(0.5)
                else:
                    auth = AUTH["Authorization"].encode()
                    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 b"Authorization: " + auth + b"\r\nContent-Length: 100000\r\n\r\n")
                    sock.settimeout(0.5)
                    while not stop.is_set():
                        sock.sendall(b" ")
                        try:
                            answer = sock.recv(200)
                        except TimeoutError:
                            continue
                        outcomes.append(answer.split(b"\r\n", 1)[0].decode(errors="replace"))
                        break
        except OSError:
            time.sleep(0.2)


def test_slow_clients_do_not_starve_health_or_predict(hardened):
    url, port = hardened["url"], int(hardened["url"].rsplit(":", 1)[1])
    stop, outcomes = threading.Event(), []
    clients = [threading.Thread(target=_slow_client, args=(port, stop, kind, outcomes), daemon=True)
               for kind in ["headers"] * 4 + ["body"] * 4]
    for client in clients:
        client.start()
    time.sleep(2)  # all eight hold their connections
    try:
        latencies = []
        session = requests.Session()
        for _ in range(200):
            started = time.perf_counter()
            assert session.get(url + "/health", headers=AUTH, timeout=10).status_code == 200
            latencies.append(1000 * (time.perf_counter() - started))
            time.sleep(0.02)
        predict = session.post(url + "/predict", json=predict_body(str(hardened["files"] / "bus_0090-r.png")),
                               headers=AUTH, timeout=60)
        assert predict.status_code == 200 and predict.json()["model_version"] == SERVED
        assert wait_for_outcome(outcomes, 10)
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=5)
    latencies.sort()
    p99 = latencies[int(0.99 * len(latencies)) - 1]
    record("slow_clients_health_p50_ms", round(statistics.median(latencies), 1))
    record("slow_clients_health_p99_ms", round(p99, 1))
    assert max(latencies) < 5000  # it answers at all; the 100 ms target is bench/faults.sh's
    assert all(o.startswith("HTTP/1.1 408") for o in outcomes), outcomes  # trickled bodies are cut off
    hardened["intact"]()


def wait_for_outcome(outcomes: list, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and not outcomes:
        time.sleep(0.2)
    return bool(outcomes)


# --- floods ---------------------------------------------------------------------------------------

def test_a_webhook_flood_is_answered_and_coalesced(hardened):
    url = hardened["url"]
    secret = {"X-Webhook-Secret": SECRET}
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=8)
    session.mount("http://", adapter)

    def send(number: int) -> tuple[int, float]:
        action, headers = ("START_TRAINING", AUTH) if number % 21 == 0 else ("ANNOTATION_CREATED", secret)
        started = time.perf_counter()
        status = session.post(f"{url}/webhook", json=_hook(action), headers=headers, timeout=30).status_code
        return status, 1000 * (time.perf_counter() - started)

    answers = []
    for clients in (1, 8):  # Label Studio sends one at a time per request; 8 at once is the harsh case
        with ThreadPoolExecutor(clients) as pool:
            sent = list(pool.map(send, range(1050)))
        latencies = sorted(ms for _, ms in sent)
        record(f"flood_webhook_{clients}_clients_p50_ms", round(statistics.median(latencies), 1))
        record(f"flood_webhook_{clients}_clients_p99_ms", round(latencies[int(0.99 * len(latencies)) - 1], 1))
        answers += sent
    statuses = [s for s, _ in answers]
    assert set(statuses) <= {200, 201}, set(statuses)
    slowest = max(ms for _, ms in answers)
    record("flood_webhook_max_ms", round(slowest, 1))
    # it answers without waiting on training; Label Studio's 1 s limit is bench/faults.sh's target,
    # measured alone (the flood's failing jobs share these cores here)
    assert slowest < 5000
    jobs = Queue(hardened["queue"], connection=Redis.from_url(hardened["redis"]))
    created = statuses.count(201)
    record("flood_jobs_created", created)
    # 2,100 events coalesce into a handful of jobs: one queued at a time, one more per job that starts
    assert 1 <= created <= 10 and len(jobs) <= 1
    hardened["intact"]()  # the jobs fail (Label Studio is unreachable) and serve nothing new


# --- a served version broken on disk --------------------------------------------------------------

def test_a_version_corrupted_on_disk_is_not_served(hardened, tiny_model):
    import shutil

    registry, url = hardened["registry"], hardened["url"]
    shutil.copytree(tiny_model, registry.path("v-new"))
    registry.describe("v-new", parent=SERVED)
    registry.promote("v-new")
    try:
        body = predict_body(str(hardened["files"] / "bus_0090-r.png"))
        answer = requests.post(url + "/predict", json=body, headers=AUTH, timeout=120)
        assert answer.json()["model_version"] == "v-new"
        weights = registry.path("v-new") / "model_final.pth"
        data = bytearray(weights.read_bytes())
        data[2000] ^= 0xFF
        weights.write_bytes(bytes(data))
        answer = requests.post(url + "/predict", json=body, headers=AUTH, timeout=120)
        assert answer.status_code == 200 and answer.json()["model_version"] == SERVED  # the last good one
        health = requests.get(url + "/health", headers=AUTH, timeout=10).json()
        assert health["status"] == "DEGRADED"
        assert "changed since it was sealed" in health["degraded"][f"project {PROJECT}"]
    finally:
        registry.promote(SERVED)  # put things back for the other tests, whatever failed above
    hardened["intact"]()


def test_noise_images_predict_normally(hardened):
    """The control: a real-size image of noise is predicted, not refused."""
    path = hardened["files"] / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400), dtype=np.uint8)).save(path)
    response = requests.post(hardened["url"] + "/predict", json=predict_body(str(path)), headers=AUTH, timeout=120)
    assert response.status_code == 200 and response.json()["model_version"] == SERVED
