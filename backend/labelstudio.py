"""Label Studio's API through its official SDK (label-studio-sdk), which also turns a personal
access token into short-lived access tokens and refreshes them."""

from __future__ import annotations

import logging
from functools import cached_property

log = logging.getLogger(__name__)


class LabelStudioAPI:
    def __init__(self, url: str, api_key: str) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key

    @cached_property
    def client(self):
        if not self.api_key:
            raise PermissionError("LABEL_STUDIO_API_KEY is not set: cannot read Label Studio's annotations")
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.url, api_key=self.api_key)

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header for Label Studio (legacy Token or refreshed Bearer)."""
        if not self.api_key:
            return {}
        return {"Authorization": self.client._client_wrapper.get_headers()["Authorization"]}

    def annotated_tasks(self, project: int) -> list[dict]:
        """Every task of ``project`` that has at least one annotation, with its annotations."""
        tasks = self.client.tasks.list(project=project, fields="all", only_annotated=True, page_size=100)
        return [task.model_dump() if hasattr(task, "model_dump") else dict(task) for task in tasks]
