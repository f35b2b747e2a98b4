"""The README's pictures: Label Studio's labelling view with our boxes, and the status page.

    python scripts/screenshots.py MODEL_DIR [OUT_DIR]        (default docs/screenshots)

Starts real Label Studio 1.23.2 and the backend as `make run` does, with MODEL_DIR as the starter
model (INITIAL_WEIGHTS), makes a project of the sample images in tests/data, lets Label Studio
fetch predictions, then photographs the labelling view of one task and the status page in
Debian's Chromium. Needs Playwright for Python in the interpreter that runs it (a docs tool, not a
project dependency: `python -m venv /tmp/shots && /tmp/shots/bin/pip install playwright`, then run
this script with PYTHONPATH pointing at the project's .venv site-packages, see below); Playwright
drives the system Chromium, so nothing is downloaded.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.e2e.conftest import PASSWORD, USERNAME, create_project, start_backend, start_label_studio  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def _prediction_ready(client, project: int) -> bool:
    tasks = list(client.tasks.list(project=project, fields="all"))
    return all(t.predictions for t in tasks)


def main() -> None:
    from playwright.sync_api import sync_playwright

    model_dir = Path(sys.argv[1]).resolve()
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "docs" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="birads-shots-"))
    (work / "ls").mkdir()
    (work / "backend").mkdir()
    with start_label_studio(work / "ls") as ls, \
            start_backend(work / "backend", ls, INITIAL_WEIGHTS=str(model_dir), SCORE_THRESHOLD="0.5",
                          SHOW_BOXES="top1", BF16="auto") as backend:
        client, project, tasks = create_project(ls, REPO / "tests" / "data" / "busbra" / "Images", "BI-RADS")
        client.ml.create(project=project, url=backend["url"], title="BI-RADS detector", is_interactive=False)
        client.actions.create(id="retrieve_tasks_predictions", project=project,
                              selected_items={"all": True, "excluded": []})
        deadline = time.time() + 300
        while not _prediction_ready(client, project) and time.time() < deadline:
            time.sleep(2)
        task = next(iter(tasks))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{ls['url']}/user/login/")
            page.fill("input[name=email]", USERNAME)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")
            page.goto(f"{ls['url']}/projects/{project}/data?task={task}")
            page.wait_for_timeout(8000)  # the labelling view renders the image and regions after load
            page.screenshot(path=str(out / "label-studio.png"))
            page.goto(f"{backend['url']}/")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(out / "status-page.png"), full_page=True)
            browser.close()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
