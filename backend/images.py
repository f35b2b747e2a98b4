"""Fetch task images safely: Label Studio uploads and local files, allowed http(s) hosts, local paths.

Task URLs are written by whoever creates tasks, so nothing is fetched from anywhere else than
Label Studio's host or the hosts in ALLOWED_IMAGE_HOSTS; Label Studio's key is only ever sent to
Label Studio; local paths must lie under LOCAL_FILES_ROOT. Downloads are capped in bytes and
time, and decompression bombs are refused. PNG, JPEG (EXIF orientation applied) and DICOM.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urljoin, urlparse

import numpy as np
import requests
from PIL import Image, UnidentifiedImageError

from model.io import stretch_to_8bit, to_rgb_array  # importing model.io also sets the decompression-bomb limit

log = logging.getLogger(__name__)


class ImageError(ValueError):
    """A task image that cannot be used; the message says which and why."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def decode(content: bytes, source: str) -> np.ndarray:
    """RGB uint8 array from PNG/JPEG/... bytes (EXIF applied) or a DICOM file's first frame."""
    if len(content) > 132 and content[128:132] == b"DICM":
        return _decode_dicom(content, source)
    try:
        with Image.open(io.BytesIO(content)) as image:
            return to_rgb_array(image)
    except Image.DecompressionBombError:
        raise ImageError(f"{source}: refused, image has too many pixels") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"{source}: not an image ({exc})") from None


def _decode_dicom(content: bytes, source: str) -> np.ndarray:
    import pydicom

    try:
        dataset = pydicom.dcmread(io.BytesIO(content))
        pixels = dataset.pixel_array
    except Exception as exc:  # pydicom raises many kinds for broken files
        raise ImageError(f"{source}: unreadable DICOM ({exc})") from None
    if getattr(dataset, "NumberOfFrames", 1) and int(getattr(dataset, "NumberOfFrames", 1)) > 1:
        pixels = pixels[0]  # a cine loop: annotate its first frame
    if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":
        pixels = pixels.max() - pixels
    pixels = stretch_to_8bit(pixels)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return pixels[:, :, :3]


def _host(parsed) -> str:
    """"hostname:port" of a parsed URL, lower case, port only when given, userinfo never."""
    name = (parsed.hostname or "").lower()
    return f"{name}:{parsed.port}" if parsed.port else name


class ImageFetcher:
    def __init__(self, label_studio_url: str, auth_headers: Callable[[], dict[str, str]],
                 allowed_hosts: Sequence[str] = (), local_root: Path | None = None,
                 max_bytes: int = 50_000_000, timeout: float = 15.0) -> None:
        self.label_studio_url = label_studio_url.rstrip("/")
        self.label_studio_host = _host(urlparse(self.label_studio_url))
        self.auth_headers = auth_headers
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.local_root = Path(local_root).resolve() if local_root else None
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.session = requests.Session()

    def fetch(self, reference: str) -> np.ndarray:
        if not isinstance(reference, str) or not reference:
            raise ImageError(f"image reference {reference!r} is empty or not a string", 400)
        try:
            parsed = urlparse(reference)
            parsed.port  # noqa: B018  (raises on a malformed port)
        except ValueError:
            raise ImageError(f"{reference}: malformed URL", 400) from None
        if parsed.username is not None or parsed.password is not None:
            # http://allowed:x@other-host/ would otherwise be read as "allowed" by a careless check
            raise ImageError(f"{reference}: URLs with user information are refused", 400)
        if parsed.scheme in ("http", "https"):
            return decode(self._download(reference, _host(parsed)), reference)
        if reference.startswith("/data/"):  # Label Studio upload or local-files URL
            return decode(self._download(urljoin(self.label_studio_url + "/", reference.lstrip("/")),
                                         self.label_studio_host), reference)
        if parsed.scheme in ("", "file"):
            return decode(self._read_local(parsed.path if parsed.scheme else reference), reference)
        raise ImageError(f"{reference}: unsupported URL scheme {parsed.scheme!r}", 400)

    def fetch_all(self, references: Sequence[str], workers: int = 8) -> list[np.ndarray | ImageError]:
        """Fetch concurrently; a failure is returned in place of its image."""
        def one(reference: str) -> np.ndarray | ImageError:
            try:
                return self.fetch(reference)
            except ImageError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(references)))) as pool:
            return list(pool.map(one, references))

    def _download(self, url: str, host: str) -> bytes:
        own = host == self.label_studio_host
        if not own and host.rsplit(":", 1)[0] not in self.allowed_hosts and host not in self.allowed_hosts:
            raise ImageError(f"{url}: host {host} is neither Label Studio's nor in ALLOWED_IMAGE_HOSTS", 403)
        headers = self.auth_headers() if own else {}  # never send Label Studio's key elsewhere
        try:
            with self.session.get(url, headers=headers, stream=True, timeout=self.timeout,
                                  allow_redirects=False) as response:
                if response.status_code in (401, 403) and own:
                    raise ImageError(f"{url}: Label Studio refused the download (HTTP {response.status_code}): "
                                     "set LABEL_STUDIO_API_KEY to a valid token", 422)
                if response.status_code != 200:
                    raise ImageError(f"{url}: HTTP {response.status_code} from {host}", 422)
                content = bytearray()
                for chunk in response.iter_content(64 * 1024):
                    content += chunk
                    if len(content) > self.max_bytes:
                        raise ImageError(f"{url}: larger than MAX_IMAGE_BYTES={self.max_bytes}", 413)
                return bytes(content)
        except requests.RequestException as exc:
            raise ImageError(f"{url}: download failed ({exc.__class__.__name__}: {exc})", 502) from None

    def _read_local(self, path: str) -> bytes:
        if self.local_root is None:
            raise ImageError(f"{path}: local paths are refused (set LOCAL_FILES_ROOT to allow a folder)", 403)
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.local_root):
            raise ImageError(f"{path}: outside LOCAL_FILES_ROOT", 403)
        if not resolved.is_file():
            raise ImageError(f"{path}: no such file", 422)
        if resolved.stat().st_size > self.max_bytes:
            raise ImageError(f"{path}: larger than MAX_IMAGE_BYTES={self.max_bytes}", 413)
        return resolved.read_bytes()
