"""What the server and the worker share, built once from Settings: API client, image fetcher,
per-project model registries and folders."""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path

from backend.images import ImageFetcher
from backend.labelstudio import LabelStudioAPI
from backend.settings import Settings
from model.modeldir import META, is_model_dir
from model.registry import Registry, Serving

STARTER_PREFIX = "starter-"  # version name of INITIAL_WEIGHTS while a project has none of its own


def starter_version(folder: Path) -> str:
    """The starter's version name: its folder's name and a fingerprint of what it holds (its record,
    and each file's size and time: the weights, a box classifier or cuts added later), so that a
    starter changed in place is a new version: Label Studio asks again for the tasks the old one
    pre-annotated, and no process goes on serving the old weights."""
    digest = hashlib.sha256((folder / META).read_bytes())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{STARTER_PREFIX}{folder.name}-{digest.hexdigest()[:8]}"


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def api(self) -> LabelStudioAPI:
        return LabelStudioAPI(self.settings.label_studio_url, self.settings.label_studio_api_key)

    @cached_property
    def fetcher(self) -> ImageFetcher:
        s = self.settings
        return ImageFetcher(s.label_studio_url, self.api.auth_headers, s.allowed_hosts, s.local_files_root,
                            s.max_image_bytes, s.fetch_timeout, s.max_image_pixels, s.allow_private_image_hosts)

    def project_dir(self, project: int) -> Path:
        return Path(self.settings.model_dir) / f"project-{int(project)}"

    def registry(self, project: int) -> Registry:
        return Registry(self.project_dir(project))

    @property
    def starter(self) -> Path | None:
        """INITIAL_WEIGHTS when it is a model directory: served until a project trains its own.
        Looked at each time: a volume mounted empty and filled later serves without a restart."""
        weights = self.settings.initial_weights
        return Path(weights) if weights and is_model_dir(weights) else None

    def serving(self, project: int, unusable: frozenset[str] = frozenset()) -> Serving:
        """The version a project's predictions come from: its registry's (checked, with fallback),
        else the starter model; version None: untrained, or (with ``problem``) nothing servable."""
        serving = self.registry(project).serving(unusable)
        starter = self.starter
        if serving.version is not None or starter is None:
            return serving
        try:
            name = starter_version(starter)
        except OSError as exc:  # replaced while we looked
            return Serving(None, None, serving.problem or f"starter model {starter} cannot be read ({exc})",
                           serving.fallback_from)
        if name not in unusable:
            return Serving(name, starter, serving.problem, serving.fallback_from)
        # a starter that fails to load is no untrained project: its predictions would be empty
        return Serving(None, None, serving.problem or f"starter model {name} cannot be loaded",
                       serving.fallback_from or name)

    def is_connected(self, project: int) -> bool:
        """Label Studio has called /setup for this project (or it has trained here)."""
        return self.project_dir(project).is_dir()

    def projects(self) -> list[int]:
        root = Path(self.settings.model_dir)
        if not root.is_dir():
            return []
        return sorted(int(p.name.split("-", 1)[1]) for p in root.glob("project-*") if p.name[8:].isdigit())
