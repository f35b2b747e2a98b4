"""Fetch task images safely: Label Studio uploads and local files, allowed http(s) hosts, local paths.

Task URLs are written by whoever creates tasks, so nothing is fetched from anywhere else than
Label Studio's host or the hosts in ALLOWED_IMAGE_HOSTS, and those must resolve to public
addresses unless ALLOW_PRIVATE_IMAGE_HOSTS is set; the connection goes to the address that was
checked (no second lookup to rebind). A refused host and an unreachable one get the same answer,
so the backend cannot be used to map a network. Label Studio's key is only ever sent to Label
Studio; local paths must lie under LOCAL_FILES_ROOT. Each download is capped in bytes and in time
from start to end, and every image's pixel count (all frames of a DICOM) is checked against
MAX_IMAGE_PIXELS from its header, before anything is decoded. PNG, JPEG (EXIF orientation
applied) and DICOM.
"""

from __future__ import annotations

import base64
import http.client
import io
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urljoin, urlparse

import numpy as np
from PIL import Image, UnidentifiedImageError

from backend.limits import Watchdog
from model.io import stretch_to_8bit, to_rgb_array

log = logging.getLogger(__name__)
UNREACHABLE = "image host is not allowed or not reachable"  # one text: refused and down look alike
DEFAULT_MAX_PIXELS = 40_000_000
# no ultrasound frame is this small or this thin; a thinner one would resize to 0 px at the model's size
MIN_IMAGE_SIDE = 8
MAX_ASPECT_RATIO = 10
# raster formats whose Pillow opener reads only the header: ICO and ICNS decode their embedded
# image inside Image.open, before MAX_IMAGE_PIXELS could be checked
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")


class ImageError(ValueError):
    """A task image that cannot be used; the message says which and why."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def _too_many(pixels: int, limit: int, source: str) -> ImageError:
    return ImageError(f"{source}: refused, {pixels} pixels exceed MAX_IMAGE_PIXELS={limit}", 413)


def decode(content: bytes, source: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 array from PNG/JPEG/... bytes (EXIF applied) or a DICOM file's first frame.
    The pixel count is read from the header and checked before any pixel is decoded."""
    if len(content) > 132 and content[128:132] == b"DICM":
        return _usable_shape(_decode_dicom(content, source, max_pixels), source)
    try:
        with Image.open(io.BytesIO(content), formats=IMAGE_FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise _too_many(width * height, max_pixels, source)
            return _usable_shape(to_rgb_array(image), source)
    except Image.DecompressionBombError as exc:  # Pillow's own limit, met first at twice model.io's
        raise ImageError(f"{source}: refused, too many pixels ({exc})", 413) from None
    except (ImageError, MemoryError):
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{source}: not an image, or a damaged one, in a format read here "
                         f"({', '.join(IMAGE_FORMATS)}, DICOM)") from None
    except Exception as exc:  # damaged files raise more than OSError: SyntaxError, ValueError, struct.error
        raise ImageError(f"{source}: not an image ({type(exc).__name__}: {exc})") from None


def _usable_shape(rgb: np.ndarray, source: str) -> np.ndarray:
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_IMAGE_SIDE or max(height, width) > MAX_ASPECT_RATIO * min(height, width):
        raise ImageError(f"{source}: {width}x{height} px is not an ultrasound image (each side at least "
                         f"{MIN_IMAGE_SIDE} px, at most {MAX_ASPECT_RATIO}x the other)", 422)
    return rgb


def _decode_dicom(content: bytes, source: str, max_pixels: int) -> np.ndarray:
    import pydicom

    try:
        header = pydicom.dcmread(io.BytesIO(content), stop_before_pixels=True)
        frames = int(getattr(header, "NumberOfFrames", 1) or 1)
        pixels = int(header.Rows) * int(header.Columns) * max(frames, 1) * int(getattr(header, "SamplesPerPixel", 1))
    except Exception as exc:  # pydicom raises many kinds for broken files
        raise ImageError(f"{source}: unreadable DICOM ({exc})") from None
    if pixels > max_pixels:
        raise _too_many(pixels, max_pixels, source)
    try:
        dataset = pydicom.dcmread(io.BytesIO(content))
        pixels = dataset.pixel_array
    except Exception as exc:
        raise ImageError(f"{source}: unreadable DICOM ({exc})") from None
    if frames > 1:
        pixels = pixels[0]  # a cine loop: annotate its first frame
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = pixels.max() - pixels
    pixels = stretch_to_8bit(pixels)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels[:, :, :3]


def _origin(parsed) -> tuple[str, str, int]:
    """Scheme, host and port (the default where none is given): Label Studio's key goes only to its
    own origin, never over plain HTTP to the same name when Label Studio is on HTTPS."""
    scheme = parsed.scheme.lower()
    return scheme, (parsed.hostname or "").lower(), parsed.port or (443 if scheme == "https" else 80)


def _host(parsed) -> str:
    """"hostname:port" of a parsed URL, lower case, port only when given, userinfo never."""
    name = (parsed.hostname or "").lower()
    return f"{name}:{parsed.port}" if parsed.port else name


def _addresses(host: str, port: int) -> list[str]:
    """Each address ``host`` resolves to, a link-local IPv6 one with its scope (``fe80::1%2``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(f"{info[4][0]}%{info[4][3]}" if info[0] == socket.AF_INET6 and info[4][3]
                              and "%" not in info[4][0] else info[4][0] for info in infos))


CLOUD_SCHEMES = ("s3:", "gs:", "azure-blob:")  # a project's cloud storage, as Label Studio writes tasks
# Label Studio's own addresses, relative to it: uploads, local files, its storage proxy, presign
# (exactly these: a local path such as /data/images/a.png under LOCAL_FILES_ROOT is read from the disk)
LABEL_STUDIO_PATHS = ("/data/upload/", "/data/local-files/", "/tasks/", "/storage-data/")
# its endpoints that may redirect to a project's storage (the signed URL): the only redirects followed
STORAGE_ENDPOINTS = ("/tasks/", "/storage-data/")
REDIRECTS, MAX_REDIRECTS = (301, 302, 303, 307, 308), 3
URL_SAFE = "/?&=%:@!$'()*+,;~[]"  # characters a request target keeps as they are (RFC 3986's reserved, and %)


def _checked_url(url: str, status: int):
    """``url`` parsed, or an ImageError with ``status`` if it cannot be trusted to say its host."""
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise ImageError(f"{re.sub(r'//[^/]*@', '//', url.split('?', 1)[0])}: malformed URL", status) from None
    if parsed.username is not None or parsed.password is not None:
        # http://allowed:x@other-host/ would otherwise be read as "allowed" by a careless check
        raise ImageError(f"{_without_query(parsed)}: URLs with user information are refused", status)
    return parsed


def _without_query(parsed) -> str:
    """A URL as logs may name it: scheme, host and path, not a signed URL's query (its signature)
    nor the user information before its host (a password)."""
    return f"{parsed.scheme}://{parsed.netloc.rpartition('@')[2]}{parsed.path}"


def _request_target(parsed) -> str:
    """Path and query as typed into a task (a patient's name with an umlaut, a space, a lone %)
    percent-encoded, escapes already there kept."""
    raw = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    return quote(re.sub(r"%(?![0-9A-Fa-f]{2})", "%25", raw), safe=URL_SAFE)


def through_label_studio(reference: object, task_id: object) -> object:
    """A task's image reference as the backend fetches it: a cloud storage URI (s3://, gs://,
    azure-blob://) through Label Studio's presign endpoint for that task, which signs it with the
    project's storage credentials; anything else as it is."""
    if not isinstance(reference, str) or not reference.startswith(CLOUD_SCHEMES) or not isinstance(task_id, int):
        return reference
    return f"/tasks/{task_id}/presign/?fileuri={base64.urlsafe_b64encode(reference.encode()).decode()}"


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the addresses that were checked, whatever DNS says by now, each in turn as
    ``socket.create_connection`` tries a name's (``localhost`` is ``::1`` first on many systems, and
    Label Studio listens on IPv4); the watchdog bounds all of it, a TLS handshake included."""

    def __init__(self, host: str, port: int, addresses: Sequence[str], deadline: float, watchdog: Watchdog) -> None:
        super().__init__(host, port, timeout=max(0.1, deadline - time.monotonic()))
        self.addresses, self.deadline, self.watchdog = addresses, deadline, watchdog

    def _watched(self, sock: socket.socket) -> socket.socket:
        self.watchdog.sock = sock
        if self.watchdog.expired:  # it fired before it had this socket to shut
            sock.close()
            raise TimeoutError("cut off")
        return sock

    def _tcp(self) -> socket.socket:
        failure: OSError = TimeoutError("no time left to connect")
        for address in self.addresses:
            if (left := self.deadline - time.monotonic()) <= 0:
                break
            try:
                return self._watched(socket.create_connection((address, self.port), left))
            except OSError as exc:
                failure = exc
        raise failure

    def connect(self) -> None:
        self.sock = self._tcp()


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    default_port = http.client.HTTPS_PORT  # else the Host header says name:443 (a signed URL's signature fails)

    def connect(self) -> None:
        context = ssl.create_default_context()
        sock = self._watched(context.wrap_socket(self._tcp(), server_hostname=self.host,  # the name's certificate
                                                 do_handshake_on_connect=False))
        sock.do_handshake()  # under the watchdog: a peer trickling its handshake is cut off too
        self.sock = sock


class ImageFetcher:
    def __init__(self, label_studio_url: str, auth_headers: Callable[[], dict[str, str]],
                 allowed_hosts: Sequence[str] = (), local_root: Path | None = None,
                 max_bytes: int = 50_000_000, timeout: float = 15.0, max_pixels: int = DEFAULT_MAX_PIXELS,
                 allow_private: bool = False) -> None:
        self.label_studio_url = label_studio_url.rstrip("/")
        self.label_studio_origin = _origin(urlparse(self.label_studio_url))
        self.label_studio_base = urlparse(self.label_studio_url).path.rstrip("/")  # behind a proxy: /ls
        self.auth_headers = auth_headers
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.local_root = Path(local_root).resolve() if local_root else None
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_pixels = max_pixels
        self.allow_private = allow_private

    def fetch(self, reference: str, deadline: float | None = None) -> np.ndarray:
        """``deadline`` (time.monotonic): when the download must be done, where the request has less
        time left than FETCH_TIMEOUT."""
        if not isinstance(reference, str) or not reference:
            raise ImageError(f"image reference {reference!r} is empty or not a string", 400)
        if reference.startswith(CLOUD_SCHEMES):
            raise ImageError(f"{reference}: a cloud storage URI is fetched through its task (no task id given)", 400)
        if self.label_studio_base and reference.startswith(self.label_studio_base + "/") and \
                reference.removeprefix(self.label_studio_base).startswith(LABEL_STUDIO_PATHS):
            reference = urljoin(self.label_studio_url, reference)  # under a sub-path, its URLs carry it
        elif reference.startswith(LABEL_STUDIO_PATHS):  # upload, local-files, storage proxy, presign
            reference = urljoin(self.label_studio_url + "/", reference.lstrip("/"))
        parsed = _checked_url(reference, 400)
        if parsed.scheme in ("http", "https"):
            own = time.monotonic() + self.timeout
            # a signed URL's query: whoever reads a log or a job's result must not fetch with it;
            # Label Studio's own (?d=path, ?fileuri=) signs nothing and says which image failed
            named = reference if _origin(parsed) == self.label_studio_origin else _without_query(parsed)
            return decode(self._download(reference, parsed, own if deadline is None else min(own, deadline),
                                         0, named), named, self.max_pixels)
        if parsed.scheme in ("", "file"):
            return decode(self._read_local(parsed.path if parsed.scheme else reference), reference, self.max_pixels)
        raise ImageError(f"{reference}: unsupported URL scheme {parsed.scheme!r}", 400)

    def fetch_all(self, references: Sequence[str | ImageError], workers: int = 8,
                  deadline: float | None = None) -> list[np.ndarray | ImageError]:
        """Fetch concurrently, all by ``deadline`` where one is given (an image that waits for a
        thread gets no time of its own); a failure (or a reference already failed) is returned in
        place of its image."""
        def one(reference: str | ImageError) -> np.ndarray | ImageError:
            if isinstance(reference, ImageError):
                return reference
            try:
                return self.fetch(reference, deadline)
            except ImageError as exc:
                return exc
            except Exception as exc:  # unforeseen: it costs this image, not the whole request
                named = reference.split("?", 1)[0]  # a signed URL's query never reaches a log
                log.exception("%s: unexpected failure", named)
                return ImageError(f"{named}: internal error ({type(exc).__name__})", 500)

        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(references)))) as pool:
            return list(pool.map(one, references))

    def _out_of_time(self, url: str) -> ImageError:
        return ImageError(f"{url}: download not complete within FETCH_TIMEOUT={self.timeout:g} s "
                          "(or the less the request had left)", 504)

    def _unreachable(self, url: str, why: str) -> ImageError:
        log.warning("%s: %s", url, why)  # the detail stays in our log
        return ImageError(f"{url}: {UNREACHABLE}", 502)

    def _address(self, url: str, parsed, port: int, own: bool, vouched: bool = False) -> list[str]:
        """The checked addresses to connect to; the same error for a refused host and a dead one.
        ``vouched``: Label Studio sent us there (ALLOWED_IMAGE_HOSTS is not asked; the address is)."""
        name = (parsed.hostname or "").lower()
        if not own and not vouched and name not in self.allowed_hosts and _host(parsed) not in self.allowed_hosts:
            raise self._unreachable(url, "host neither Label Studio's nor in ALLOWED_IMAGE_HOSTS")
        try:
            addresses = _addresses(name, port)
        except (OSError, UnicodeError) as exc:
            raise self._unreachable(url, f"does not resolve ({exc})") from None
        if not own and not self.allow_private:
            private = [a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_global]
            if private:
                raise self._unreachable(url, f"resolves to non-public {', '.join(private)} "
                                             "(ALLOW_PRIVATE_IMAGE_HOSTS is off)")
        return addresses

    def _download(self, url: str, parsed, deadline: float, redirects: int, named: str) -> bytes:
        """Within FETCH_TIMEOUT from the first request to the last byte, redirects included.
        ``redirects``: how many led here. Only Label Studio's storage endpoints are followed (its
        presign endpoint sends the browser, and us, to the storage's signed URL): that host skips
        ALLOWED_IMAGE_HOSTS, not the private-address check, and only Label Studio's own host ever
        gets its key. ``named``: how errors and the log name it; a signed URL's query (its signature)
        never: whoever reads a log or a job's result could fetch the patient's image with it."""
        own = _origin(parsed) == self.label_studio_origin
        endpoint = parsed.path.removeprefix(self.label_studio_base)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        addresses = self._address(named, parsed, port, own, vouched=redirects > 0)
        # Label Studio's key goes to its image routes only: never elsewhere, nor to its API (/api/...)
        keyed = own and endpoint.startswith(LABEL_STUDIO_PATHS)
        headers = self._label_studio_headers(named) if keyed else {}
        watchdog = Watchdog(None, max(0.0, deadline - time.monotonic()), socket.SHUT_RDWR)  # given the socket
        kind = _PinnedHTTPSConnection if parsed.scheme == "https" else _PinnedHTTPConnection
        connection = kind(parsed.hostname, port, addresses, deadline, watchdog)
        try:
            connection.connect()
        except (OSError, ssl.SSLError) as exc:
            watchdog.cancel()
            connection.close()
            if watchdog.expired or time.monotonic() >= deadline:  # out of time, not unreachable
                raise self._out_of_time(named) from None
            raise self._unreachable(named, f"connection failed ({exc})") from None
        try:
            connection.request("GET", _request_target(parsed), headers=headers)
            response = connection.getresponse()
            location = response.getheader("Location")
            if response.status in REDIRECTS and own and endpoint.startswith(STORAGE_ENDPOINTS) and location:
                target = urljoin(url, location)
                try:
                    checked = _checked_url(target, 502)
                except ImageError:  # its text would carry the signature
                    raise ImageError(f"{named}: redirected to a malformed address", 502) from None
                if redirects >= MAX_REDIRECTS or checked.scheme not in ("http", "https"):
                    raise ImageError(f"{named}: too many redirects, or one to a non-HTTP address", 502)
                watchdog.cancel()
                connection.close()
                return self._download(target, checked, deadline, redirects + 1,
                                      f"{named} -> {_without_query(checked)}")
            if response.status in (401, 403) and keyed:
                raise ImageError(f"{named}: Label Studio refused the download (HTTP {response.status}): "
                                 "set LABEL_STUDIO_API_KEY to a valid token", 422)
            if response.status != 200:
                raise ImageError(f"{named}: HTTP {response.status} from the image host", 422)
            content = bytearray()
            while chunk := response.read1(64 * 1024):
                content += chunk
                if len(content) > self.max_bytes:
                    raise ImageError(f"{named}: larger than MAX_IMAGE_BYTES={self.max_bytes}", 413)
            if watchdog.expired:
                raise OSError("cut off")
            return bytes(content)
        except (OSError, http.client.HTTPException, UnicodeError) as exc:
            if watchdog.expired:
                raise self._out_of_time(named) from None
            raise ImageError(f"{named}: download failed ({exc.__class__.__name__})", 502) from None
        finally:
            watchdog.cancel()
            connection.close()

    def _label_studio_headers(self, url: str) -> dict[str, str]:
        """Label Studio's credentials; a token that cannot be refreshed fails this image, not the
        request (the SDK raises its own errors and httpx's)."""
        try:
            return self.auth_headers()
        except Exception as exc:  # noqa: BLE001  (any failure of the SDK's token refresh)
            log.warning("%s: no Label Studio credentials: %r", url, exc)
            raise ImageError(f"{url}: could not authenticate to Label Studio ({exc.__class__.__name__}): "
                             "check LABEL_STUDIO_API_KEY", 502) from None

    def _read_local(self, path: str) -> bytes:
        if self.local_root is None:
            raise ImageError(f"{path}: local paths are refused (set LOCAL_FILES_ROOT to allow a folder)", 403)
        try:
            resolved = Path(path).resolve()
        except (ValueError, OSError):  # a NUL byte, a path too long for the OS
            raise ImageError(f"{path!r}: not a readable path", 400) from None
        if not resolved.is_relative_to(self.local_root):
            raise ImageError(f"{path}: outside LOCAL_FILES_ROOT", 403)
        try:
            if not resolved.is_file():
                raise ImageError(f"{path}: no such file", 422)
            if resolved.stat().st_size > self.max_bytes:
                raise ImageError(f"{path}: larger than MAX_IMAGE_BYTES={self.max_bytes}", 413)
            return resolved.read_bytes()
        except OSError as exc:  # unreadable: permissions, a folder vanishing mid-read
            raise ImageError(f"{path}: cannot be read ({exc.__class__.__name__})", 422) from None
