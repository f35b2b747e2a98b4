"""The status page in a real browser (headless Chromium, Debian's package) while a real training
job runs on the real worker of `make run`: the progress moves, then the finished version appears."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import annotate, create_project, start_backend

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(os.environ.get("SCREENSHOT_DIR", "")) if os.environ.get("SCREENSHOT_DIR") else None


def browse(url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The page as the browser rendered it (its DOM after load); optionally a screenshot too.
    ``profile``: this test's own Chromium profile (two runs sharing one collide on its lock)."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}"]
    if screenshot is not None:
        subprocess.run(args + ["--window-size=1100,1400", f"--screenshot={screenshot}", url],
                       capture_output=True, timeout=120, check=True)
    done = subprocess.run(args + ["--dump-dom", url], capture_output=True, text=True, timeout=120, check=True)
    return " ".join(done.stdout.split())


def _iteration(page: str, project: int) -> int | None:
    section = page.split(f'id="project-{project}"', 1)[-1]
    found = re.search(r'<span class="iteration">(\d+)</span>', section)
    return int(found.group(1)) if found else None


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_progress_moves_and_the_new_version_appears(label_studio, busbra_dir, tmp_path_factory):
    with start_backend(tmp_path_factory.mktemp("backend"), label_studio, TRAIN_MAX_ITER="40",
                       TRAIN_BATCH_SIZE="1") as backend:
        profile = tmp_path_factory.mktemp("chromium")
        images = busbra_dir / "Images"
        client, project, tasks = create_project(label_studio, images, "status page e2e")
        ml = client.ml.create(project=project, url=backend["url"], title="BI-RADS", is_interactive=False)
        annotate(client, project, tasks, images)
        client.ml.train(id=ml.id)
        seen, deadline = [], time.time() + 900
        while time.time() < deadline:
            page = browse(f"{backend['url']}/", profile)
            if (value := _iteration(page, project)) is not None:
                seen.append(value)
                if len(set(seen)) >= 2:
                    break
            time.sleep(1)
        assert len(set(seen)) >= 2 and seen == sorted(seen), seen  # the bar moved forward
        if SHOTS:
            browse(f"{backend['url']}/", profile, SHOTS / "status-training.png")
        while time.time() < deadline:
            jobs = requests.get(f"{backend['url']}/jobs", params={"project": project}, timeout=5).json()["jobs"]
            if jobs[0]["status"] in ("finished", "failed"):
                break
            time.sleep(2)
        assert jobs[0]["status"] == "finished", jobs[0]
        version = jobs[0]["result"]["version"]
        page = browse(f"{backend['url']}/", profile)
        section = page.split(f'id="project-{project}"', 1)[-1]
        assert f'<b class="served">{version}</b>' in section and f"{version} (served)" in section
        assert "No job running or queued." in section.split("<h3>Versions</h3>")[0]
        if SHOTS:
            browse(f"{backend['url']}/", profile, SHOTS / "status-done.png")
