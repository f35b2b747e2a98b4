"""Label Studio's API through its official SDK (label-studio-sdk), which also turns a personal
access token into short-lived access tokens and refreshes them."""

from __future__ import annotations

import logging
from functools import cached_property

log = logging.getLogger(__name__)


class UnknownProject(LookupError):
    """Label Studio's API does not know the project (or the key may not read it)."""


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

    def label_config(self, project: int) -> str:
        """The project's label config as Label Studio holds it now (never one sent to us)."""
        from label_studio_sdk.core.api_error import ApiError

        try:
            return self.client.projects.get(id=project).label_config
        except ApiError as error:
            if error.status_code in (403, 404):
                raise UnknownProject(f"Label Studio has no project {project} this key can read "
                                     f"(HTTP {error.status_code})") from None
            raise
