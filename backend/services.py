"""What the server and the worker share, built once from Settings: API client, image fetcher,
per-project model registries and folders."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from backend.images import ImageFetcher
from backend.labelstudio import LabelStudioAPI
from backend.settings import Settings
from model.registry import Registry


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
                            s.max_image_bytes, s.fetch_timeout)

    def project_dir(self, project: int) -> Path:
        return Path(self.settings.model_dir) / f"project-{int(project)}"

    def registry(self, project: int) -> Registry:
        return Registry(self.project_dir(project))

    def projects(self) -> list[int]:
        root = Path(self.settings.model_dir)
        if not root.is_dir():
            return []
        return sorted(int(p.name.split("-", 1)[1]) for p in root.glob("project-*") if p.name[8:].isdigit())
