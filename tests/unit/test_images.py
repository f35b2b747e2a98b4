"""Task image fetching: what is allowed, limits, formats (a real local HTTP server)."""

import base64
import http.server
import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pydicom
import pytest
from PIL import Image, PngImagePlugin

from backend.images import ImageError, ImageFetcher, decode, through_label_studio
from tests.bombs import dicom, png_claiming
from tests.conftest import TLS


def _png(size=(40, 30), mode="L", noise=False) -> bytes:
    buffer = io.BytesIO()
    if noise:  # incompressible: its file is really large
        Image.fromarray(np.random.default_rng(0).integers(0, 255, size[::-1], dtype=np.uint8)).save(buffer, "PNG")
    else:
        Image.new(mode, size, 128).save(buffer, "PNG")
    return buffer.getvalue()


class _Quiet(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def _served(handler: type) -> Iterator[str]:
    """"host:port" of a local HTTP server answering with ``handler``, for the block's duration."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


@pytest.fixture(scope="module")
def server():
    """Serves /ok.png, /big.png, /text; records request headers."""
    seen = []
    files = {"/ok.png": _png(), "/big.png": _png((200, 100), noise=True), "/text": b"<html>hello</html>",
             "/M%C3%BCller%20ok.png": _png()}

    class Handler(_Quiet):
        def do_GET(self):  # noqa: N802
            seen.append(dict(self.headers, target=self.path))
            name = "/" + self.path.split("?")[0].rsplit("/", 1)[-1]
            body = files.get(name)
            self.send_response(401 if name == "/denied.png" else 200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"")

    with _served(Handler) as host:
        yield host, seen


def test_label_studio_urls_carry_the_key_other_hosts_do_not(server):
    host, seen = server
    fetcher = ImageFetcher(f"http://{host}", lambda: {"Authorization": "Token secret"},
                           allowed_hosts=["localhost"])
    assert fetcher.fetch("/data/upload/1/ok.png").shape == (30, 40, 3)
    assert seen[-1]["Authorization"] == "Token secret"
    assert fetcher.fetch(f"http://{host}/api/ok.png").shape == (30, 40, 3)  # its API: a task cannot aim the key there
    assert "Authorization" not in seen[-1]
    other = ImageFetcher("http://label-studio.invalid", lambda: {"Authorization": "Token secret"},
                         allowed_hosts=[host.split(":")[0]], allow_private=True)
    assert other.fetch(f"http://{host}/ok.png").shape == (30, 40, 3)
    assert "Authorization" not in seen[-1]


def test_the_key_never_goes_over_plain_http_to_an_https_label_studios_name(server):
    host, seen = server
    fetcher = ImageFetcher(f"https://{host}", lambda: {"Authorization": "Token secret"},
                           allowed_hosts=[host.split(":")[0]], allow_private=True)
    assert fetcher.fetch(f"http://{host}/data/upload/1/ok.png").shape == (30, 40, 3)
    assert "Authorization" not in seen[-1]  # same name and port, another scheme: not Label Studio


def test_local_paths_that_look_like_label_studios_are_read_from_the_disk(tmp_path):
    """Only Label Studio's own routes go to it: /data/images/a.png is a path on this machine."""
    fetcher = ImageFetcher("http://127.0.0.1:9", lambda: {}, local_root=tmp_path)
    with pytest.raises(ImageError, match="outside LOCAL_FILES_ROOT") as caught:
        fetcher.fetch("/data/images/a.png")
    assert caught.value.status == 403


def _damaged_png() -> bytes:
    """A PNG whose pixel data is cut short by a chunk with a type that is not letters: Pillow raises
    SyntaxError, not OSError, when it reads on for the rest of the pixels."""
    content = _png(noise=True)
    start = content.index(b"IDAT") - 4
    pixels = content[start + 8:start + 8 + struct.unpack(">I", content[start:start + 4])[0]]
    half = pixels[:len(pixels) // 2]
    idat = struct.pack(">I", len(half)) + b"IDAT" + half + struct.pack(">I", zlib.crc32(b"IDAT" + half))
    broken = b"\x00\x00\x00\x00" + b"\x00\x01\x02\x03" + b"\x00\x00\x00\x00"
    return content[:start] + idat + broken + content[content.index(b"IEND") - 4:]


def test_a_damaged_image_costs_its_own_task_only(server, monkeypatch):
    with pytest.raises(ImageError, match="not an image .*SyntaxError") as caught:
        decode(_damaged_png(), "damaged.png")
    assert caught.value.status == 422
    host, _ = server
    fetcher = ImageFetcher(f"http://{host}", dict)
    real_fetch = fetcher.fetch

    def failing(reference: str, deadline: float | None = None):  # a fault no one foresaw, in one image
        if "boom" in reference:
            raise RuntimeError("unforeseen")
        return real_fetch(reference, deadline)

    monkeypatch.setattr(fetcher, "fetch", failing)
    results = fetcher.fetch_all(["/data/upload/ok.png", "/data/upload/boom.png?X-Amz-Signature=s"])
    assert isinstance(results[0], np.ndarray)
    assert isinstance(results[1], ImageError) and results[1].status == 500
    assert "internal error (RuntimeError)" in str(results[1]) and "Signature" not in str(results[1])


def test_names_as_typed_with_umlauts_and_spaces_are_percent_encoded(server):
    """A task's URL as a person typed it: the request target carries it percent-encoded (http.client
    refuses raw non-ASCII), and escapes already there are kept."""
    host, seen = server
    fetcher = ImageFetcher(f"http://{host}", dict)
    assert fetcher.fetch("/data/upload/1/Müller ok.png").shape == (30, 40, 3)
    assert seen[-1]["target"] == "/data/upload/1/M%C3%BCller%20ok.png"
    assert fetcher.fetch("/data/upload/1/M%C3%BCller%20ok.png").shape == (30, 40, 3)
    with pytest.raises(ImageError, match="HTTP 404"):  # an answer from the host, not a crash
        fetcher.fetch("/data/local-files/?d=scans/Müller ok.png")
    assert seen[-1]["target"] == "/data/local-files/?d=scans/M%C3%BCller%20ok.png"
    with pytest.raises(ImageError, match="HTTP 404"):
        fetcher.fetch("/data/upload/1/50% off.png")
    assert seen[-1]["target"] == "/data/upload/1/50%25%20off.png"  # a lone % is a character


@pytest.fixture()
def label_studio_with_cloud_storage(server):
    """Label Studio's presign endpoint: redirects to the storage's signed URL (the `server`
    fixture, a host no setting allows), or streams the image itself (its storage proxy)."""
    storage, _ = server
    seen = []

    class Handler(_Quiet):
        def do_GET(self):  # noqa: N802
            seen.append(dict(self.headers, target=self.path))
            uri = base64.urlsafe_b64decode(self.path.split("fileuri=")[1]).decode() if "fileuri=" in self.path else ""
            if uri in ("s3://bucket/ok.png", "s3://bucket/gone.png"):
                self.send_response(302)
                self.send_header("Location", f"http://{storage}/bucket/{uri.rsplit('/', 1)[1]}?X-Amz-Signature=abc")
            elif uri == "s3://bucket/loop.png":
                self.send_response(302)
                self.send_header("Location", self.path)
            elif uri == "s3://bucket/malformed.png":
                self.send_response(302)
                self.send_header("Location", "http://storage:abc/x.png")
            elif self.path.startswith("/data/upload/"):  # not a storage endpoint: never followed
                self.send_response(302)
                self.send_header("Location", f"http://{storage}/ok.png")
            else:
                self.send_response(200 if uri == "gs://bucket/proxied.png" else 404)
            self.end_headers()
            self.wfile.write(_png() if uri == "gs://bucket/proxied.png" else b"")

    with _served(Handler) as host:
        yield host, seen


def test_cloud_storage_images_come_through_label_studios_presign_endpoint(server, label_studio_with_cloud_storage):
    _, storage_seen = server
    host, seen = label_studio_with_cloud_storage
    # the storage is at a private address here, as an on-premises MinIO would be
    fetcher = ImageFetcher(f"http://{host}", lambda: {"Authorization": "Token secret"}, allow_private=True)
    reference = through_label_studio("s3://bucket/ok.png", 7)
    assert reference == f"/tasks/7/presign/?fileuri={base64.urlsafe_b64encode(b's3://bucket/ok.png').decode()}"
    assert fetcher.fetch(reference).shape == (30, 40, 3)
    assert seen[-1]["Authorization"] == "Token secret"          # Label Studio signs it for us
    assert storage_seen[-1]["target"] == "/bucket/ok.png?X-Amz-Signature=abc"
    assert "Authorization" not in storage_seen[-1]                # its key never goes to the storage
    assert fetcher.fetch(through_label_studio("gs://bucket/proxied.png", 7)).shape == (30, 40, 3)
    behind_a_proxy = ImageFetcher(f"http://{host}/studio", dict, allow_private=True)  # Label Studio under /studio
    assert behind_a_proxy.fetch(reference).shape == (30, 40, 3)
    assert seen[-1]["target"].startswith("/studio/tasks/7/presign/")
    with pytest.raises(ImageError, match="too many redirects"):
        fetcher.fetch(through_label_studio("s3://bucket/loop.png", 7))
    with pytest.raises(ImageError, match="malformed address") as caught:  # the image fails, not the request
        fetcher.fetch(through_label_studio("s3://bucket/malformed.png", 7))
    assert caught.value.status == 502
    with pytest.raises(ImageError, match="HTTP 404") as caught:  # the storage's answer, named without the signature
        fetcher.fetch(through_label_studio("s3://bucket/gone.png", 7))
    assert f"-> http://{server[0]}/bucket/gone.png: " in str(caught.value) and "Signature" not in str(caught.value)
    with pytest.raises(ImageError, match="HTTP 302"):                 # an upload's redirect is not followed
        fetcher.fetch("/data/upload/1/moved.png")
    strict = ImageFetcher(f"http://{host}", lambda: {"Authorization": "Token secret"})
    with pytest.raises(ImageError, match="not allowed or not reachable"):  # the address is still checked
        strict.fetch(reference)
    with pytest.raises(ImageError, match="fetched through its task") as caught:
        fetcher.fetch(through_label_studio("azure-blob://c/a.png", None))
    assert caught.value.status == 400


def test_refusals_and_failures(server, tmp_path):
    host, _ = server
    fetcher = ImageFetcher(f"http://{host}", dict, local_root=tmp_path, max_bytes=5000)
    cases = {
        "http://example.org/a.png": (502, "image host is not allowed or not reachable"),
        "/data/upload/1/missing.png": (422, "HTTP 404"),
        "/data/upload/1/denied.png": (422, "set LABEL_STUDIO_API_KEY"),
        "/data/upload/1/text": (422, "not an image"),
        "/data/upload/1/big.png": (413, "MAX_IMAGE_BYTES"),
        "/etc/hostname": (403, "outside LOCAL_FILES_ROOT"),
        "ftp://x/y.png": (400, "unsupported URL scheme"),
    }
    for reference, (status, fragment) in cases.items():
        with pytest.raises(ImageError, match=fragment) as caught:
            fetcher.fetch(reference)
        assert caught.value.status == status


def test_fetch_all_keeps_order_and_reports_failures_in_place(server):
    host, _ = server
    fetcher = ImageFetcher(f"http://{host}", dict)
    results = fetcher.fetch_all(["/data/upload/ok.png", "/data/upload/nope.png", "/data/upload/ok.png"])
    assert isinstance(results[0], np.ndarray) and isinstance(results[1], ImageError)
    assert isinstance(results[2], np.ndarray)


def test_local_files_under_the_root(tmp_path):
    (tmp_path / "scan.png").write_bytes(_png((16, 12), "RGB"))
    fetcher = ImageFetcher("http://ls", dict, local_root=tmp_path)
    assert fetcher.fetch(str(tmp_path / "scan.png")).shape == (12, 16, 3)
    assert fetcher.fetch(f"file://{tmp_path / 'scan.png'}").shape == (12, 16, 3)


def test_decompression_bombs_are_refused_from_their_header(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own check: an error too
    with pytest.raises(ImageError, match="refused, too many pixels") as caught:
        decode(_png((200, 200)), "bomb.png")
    assert caught.value.status == 413
    monkeypatch.undo()
    bomb = png_claiming(15000, 15000)  # 225 Mpx claimed by a 100-byte file
    with pytest.raises(ImageError, match="refused, too many pixels .*225000000 pixels"):
        decode(bomb, "bomb.png")
    with pytest.raises(ImageError, match="refused, 2250000 pixels exceed MAX_IMAGE_PIXELS=1000000"):
        decode(png_claiming(1500, 1500), "bomb.png", max_pixels=1_000_000)
    # between Pillow's limit and twice it, Pillow only warns: our limit is the error
    with pytest.raises(ImageError, match="exceed MAX_IMAGE_PIXELS=1000"):
        decode(_png((40, 30)), "small.png", max_pixels=1000)


def test_dicom_pixels_are_counted_before_decoding(tmp_path):
    with pytest.raises(ImageError, match="225000000 pixels exceed") as caught:
        decode(dicom(15000, 15000), "bomb.dcm")
    assert caught.value.status == 413
    with pytest.raises(ImageError, match="50000000 pixels exceed"):
        decode(dicom(100, 100, frames=5000), "cine.dcm")


def test_exif_orientation_is_applied():
    image = Image.new("L", (20, 10))
    exif = image.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    assert decode(buffer.getvalue(), "x.jpg").shape == (20, 10, 3)


def test_dicom_ultrasound_frame(tmp_path):
    (tmp_path / "us.dcm").write_bytes(dicom(12, 16, pixel_data=(np.arange(12 * 16, dtype=np.uint16) * 10).tobytes()))
    pixels = decode((tmp_path / "us.dcm").read_bytes(), "us.dcm")
    assert pixels.shape == (12, 16, 3) and pixels.dtype == np.uint8
    assert pixels[0, 0, 0] == 0 and pixels[-1, -1, 0] == 255
    assert pydicom.dcmread(tmp_path / "us.dcm").Rows == 12


def test_userinfo_cannot_smuggle_another_host(server):
    host, seen = server
    fetcher = ImageFetcher("http://label-studio.invalid", dict, allowed_hosts=["allowed.example"])
    for reference in (f"http://allowed.example:x@{host}/ok.png", f"http://allowed.example@{host}/ok.png"):
        before = len(seen)
        with pytest.raises(ImageError, match="user information") as caught:
            fetcher.fetch(reference)
        assert caught.value.status == 400 and len(seen) == before  # nothing was requested
    with pytest.raises(ImageError, match="malformed URL"):
        fetcher.fetch("http://allowed.example:notaport/ok.png")
    upper = ImageFetcher("http://label-studio.invalid", dict, allowed_hosts=["127.0.0.1"], allow_private=True)
    assert upper.fetch(f"http://{host.upper()}/ok.png").shape == (30, 40, 3)


def test_private_addresses_are_refused_like_dead_hosts(server):
    """Allowed by name is not enough: loopback, private and link-local addresses need
    ALLOW_PRIVATE_IMAGE_HOSTS, and a refused host reads exactly like an unreachable one."""
    host, seen = server
    port = host.split(":")[1]
    strict = ImageFetcher("http://label-studio.invalid", dict,
                          allowed_hosts=["localhost", "127.0.0.1", "169.254.169.254"])
    refused = []
    for reference in (f"http://localhost:{port}/ok.png", f"http://127.0.0.1:{port}/ok.png",
                      "http://169.254.169.254/latest/meta-data", "http://not-allowed.example/x.png"):
        before = len(seen)
        with pytest.raises(ImageError) as caught:
            strict.fetch(reference)
        assert len(seen) == before  # nothing was requested
        refused.append((caught.value.status, str(caught.value).split(": ", 1)[1]))
    open_ = ImageFetcher("http://label-studio.invalid", dict, allowed_hosts=["127.0.0.1"], allow_private=True)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    with pytest.raises(ImageError) as caught:
        open_.fetch(f"http://127.0.0.1:{dead_port}/x.png")
    refused.append((caught.value.status, str(caught.value).split(": ", 1)[1]))
    assert set(refused) == {(502, "image host is not allowed or not reachable")}


def test_a_trickling_download_is_cut_at_the_deadline():
    """FETCH_TIMEOUT bounds the whole download, not each read."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def trickle():
        connection, _ = listener.accept()
        connection.recv(4096)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        try:
            for _ in range(200):
                connection.sendall(b"x")
                time.sleep(0.1)
        except OSError:
            pass
        connection.close()

    threading.Thread(target=trickle, daemon=True).start()
    port = listener.getsockname()[1]
    fetcher = ImageFetcher(f"http://127.0.0.1:{port}", dict, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ImageError, match="not complete within FETCH_TIMEOUT=1 s") as caught:
        fetcher.fetch("/data/upload/slow.png")
    # the trickle would last 20 s: well before that, the deadline cut the download as a whole
    assert caught.value.status == 504 and time.monotonic() - started < 10
    listener.close()


def test_each_checked_address_is_tried_in_turn(server, monkeypatch):
    """``localhost`` resolves to ::1 first on many systems while Label Studio listens on IPv4: a
    refused first address is no reason to give up on the next."""
    from backend import images

    host, _ = server
    port = int(host.split(":")[1])
    monkeypatch.setattr(images, "_addresses", lambda name, port: ["127.0.0.2", "127.0.0.1"])  # 127.0.0.2 refuses
    assert ImageFetcher(f"http://localhost:{port}", dict).fetch("/data/upload/1/ok.png").shape == (30, 40, 3)


def test_the_host_header_names_no_default_port():
    """A presigned URL is signed over the bare host name: ``Host: name:443`` fails its signature
    on some S3-compatible stores."""
    from backend import images
    from backend.limits import Watchdog

    for kind, port in ((images._PinnedHTTPSConnection, 443), (images._PinnedHTTPConnection, 80)):
        connection = kind("storage.example.org", port, ["192.0.2.1"], time.monotonic() + 1, Watchdog(None, 1))
        connection.putrequest("GET", "/bucket/x.png")  # nothing is sent before the headers end
        assert b"Host: storage.example.org\r\n" in b"\r\n".join(connection._buffer) + b"\r\n"


def test_label_studio_under_a_sub_path_serves_its_own_urls(server):
    """Behind a proxy at /ls, Label Studio writes its upload URLs with the prefix."""
    host, seen = server
    fetcher = ImageFetcher(f"http://{host}/ls", dict)
    assert fetcher.fetch("/ls/data/upload/1/ok.png").shape == (30, 40, 3)
    assert seen[-1]["target"] == "/ls/data/upload/1/ok.png"
    assert fetcher.fetch("/data/upload/1/ok.png").shape == (30, 40, 3)
    assert seen[-1]["target"] == "/ls/data/upload/1/ok.png"


def _trickler(first: bytes, then: bytes) -> tuple[socket.socket, threading.Thread]:
    """A listener whose one connection gets ``first``, then ``then`` a byte every 0.1 s for 20 s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def trickle():
        connection, _ = listener.accept()
        try:
            connection.sendall(first)
            for _ in range(200):
                connection.sendall(then)
                time.sleep(0.1)
        except OSError:
            pass
        connection.close()

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    return listener, thread


def test_a_trickled_tls_handshake_is_cut_at_the_deadline():
    """The deadline covers the TLS handshake too: a peer that sends a record's header, then its
    body a byte at a time, holds no thread for longer than FETCH_TIMEOUT."""
    listener, _ = _trickler(b"\x16\x03\x03\x40\x00", b"\x02")  # a 16 kB handshake record, trickled
    fetcher = ImageFetcher(f"https://127.0.0.1:{listener.getsockname()[1]}", dict, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ImageError) as caught:
        fetcher.fetch("/data/upload/slow.png")
    assert caught.value.status == 504 and time.monotonic() - started < 5  # out of time, not unreachable
    listener.close()


def test_a_download_is_cut_at_the_time_the_request_has_left():
    listener, _ = _trickler(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"x")
    fetcher = ImageFetcher(f"http://127.0.0.1:{listener.getsockname()[1]}", dict, timeout=30.0)
    started = time.monotonic()
    with pytest.raises(ImageError, match="or the less the request had left") as caught:
        fetcher.fetch("/data/upload/slow.png", deadline=time.monotonic() + 0.5)
    assert caught.value.status == 504 and time.monotonic() - started < 5
    listener.close()


@pytest.mark.parametrize("size", [(2000, 1), (4, 40), (400, 30)])
def test_slivers_are_refused_not_resized_to_nothing(size):
    with pytest.raises(ImageError, match="is not an ultrasound image") as caught:
        decode(_png(size), "sliver.png")
    assert caught.value.status == 422


def test_unreadable_local_paths_and_failing_credentials_fail_the_image_not_the_request(tmp_path):
    fetcher = ImageFetcher("http://127.0.0.1:9", lambda: {}, set(), tmp_path)
    with pytest.raises(ImageError, match="not a readable path") as caught:
        fetcher.fetch(str(tmp_path / "a\x00b.png"))
    assert caught.value.status == 400

    def expired() -> dict[str, str]:
        raise RuntimeError("refresh token expired")

    fetcher = ImageFetcher("http://127.0.0.1:9", expired, set(), None)
    with pytest.raises(ImageError, match="could not authenticate to Label Studio") as caught:
        fetcher.fetch("/data/upload/1/x.png")
    assert caught.value.status == 502


@pytest.fixture(scope="module")
def https_label_studio():
    """A Label Studio stand-in behind HTTPS with a certificate of the hospital's own authority
    (tests/data/tls): project 7's label config from its API, an image from any other path."""
    import json
    import ssl

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            api = self.path.startswith("/api/projects/7")
            body = json.dumps({"id": 7, "label_config": "<View/>"}).encode() if api else _png()
            self.send_response(200)
            self.send_header("Content-Type", "application/json" if api else "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(TLS / "server.pem", TLS / "server.key")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}", TLS / "ca.pem"
    httpd.shutdown()


def test_label_studio_over_https_is_trusted_through_ssl_cert_file(https_label_studio, monkeypatch):
    """A Label Studio behind the hospital's TLS proxy: its certificate is verified, by the image
    fetcher and by the SDK that reads the annotations, against the hospital's authority once
    SSL_CERT_FILE names it (README, "Running it where others can reach it")."""
    import httpx

    from backend.labelstudio import LabelStudioAPI

    url, authority = https_label_studio
    fetcher = ImageFetcher(url, lambda: {"Authorization": "Token secret"})
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(ImageError) as untrusted:
        fetcher.fetch("/data/upload/1/ok.png")
    assert untrusted.value.status == 502
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        LabelStudioAPI(url, "secret").label_config(7)
    monkeypatch.setenv("SSL_CERT_FILE", str(authority))
    assert fetcher.fetch("/data/upload/1/ok.png").shape == (30, 40, 3)
    assert LabelStudioAPI(url, "secret").label_config(7) == "<View/>"


def _icon_holding(size: tuple[int, int]) -> bytes:
    """An ICO whose directory claims 1 x 1 px around a PNG of ``size``: Pillow's ICO opener
    decodes the PNG inside Image.open, before any size check could run."""
    png = _png(size)
    directory = struct.pack("<BBBBHHII", 1, 1, 0, 0, 1, 32, len(png), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + directory + png


def test_formats_that_decode_while_opening_are_refused_before_any_pixel(monkeypatch):
    decoded, load = [], PngImagePlugin.PngImageFile.load
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: decoded.append(self.size) or load(self))
    with pytest.raises(ImageError, match="not an image, or a damaged one, in a format read here") as caught:
        decode(_icon_holding((300, 200)), "scan.png", max_pixels=1000)
    assert caught.value.status == 422 and decoded == []  # its PNG was never decoded
    assert decode(_png((40, 30)), "scan.png").shape == (30, 40, 3) and (40, 30) in decoded  # PNG still reads


def test_a_signed_urls_signature_and_a_urls_password_reach_no_error(server, caplog):
    host, _ = server
    fetcher = ImageFetcher("http://label-studio.invalid", dict, allowed_hosts=["127.0.0.1"], allow_private=True)
    for name, status in (("missing.png", 422), ("text", 422)):  # the host's 404; no image in the answer
        with pytest.raises(ImageError) as caught:
            fetcher.fetch(f"http://{host}/bucket/{name}?X-Amz-Credential=key&X-Amz-Signature=s1gn")
        assert caught.value.status == status and f"http://{host}/bucket/{name}" in str(caught.value)
        assert "s1gn" not in str(caught.value) and "X-Amz" not in str(caught.value)
    with pytest.raises(ImageError, match="user information") as caught:
        fetcher.fetch(f"http://user:pa55word@{host}/ok.png")
    assert "pa55word" not in str(caught.value)
    with pytest.raises(ImageError, match="malformed URL") as caught:
        fetcher.fetch(f"http://user:pa55word@{host}:port/ok.png")
    assert "pa55word" not in str(caught.value)
    assert "s1gn" not in caplog.text and "pa55word" not in caplog.text
    # Label Studio's own URLs sign nothing: their query says which image failed
    with pytest.raises(ImageError, match=r"/data/local-files/\?d=scans/missing.png: HTTP 404"):
        ImageFetcher(f"http://{host}", dict).fetch("/data/local-files/?d=scans/missing.png")
