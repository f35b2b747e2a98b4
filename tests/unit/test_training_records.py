"""A training job's records: real images read from disk in chunks; Label Studio's API is the
neighbour here (its real counterpart is tested end to end in tests/e2e)."""

from __future__ import annotations

import pytest

from backend import training
from backend.services import Services
from backend.settings import Settings
from tests.backend.conftest import recorded

NAMES = ["bus_0084-r.png", "bus_0090-r.png", "bus_0165-r.png", "missing.png", "bus_0084-r.png"]


class AnnotatedProject:
    """Label Studio's answers for one project: five tasks, each with one expert box."""

    def __init__(self, folder) -> None:
        self.folder = folder

    def auth_headers(self) -> dict[str, str]:
        return {}

    def label_config(self, project: int) -> str:
        return recorded("setup")["body"]["schema"]

    def annotated_tasks(self, project: int) -> list[dict]:
        box = {"type": "rectanglelabels", "from_name": "label", "to_name": "image",
               "value": {"x": 20, "y": 20, "width": 30, "height": 30, "rectanglelabels": ["BI-RADS 3"]}}
        return [{"id": i + 1, "data": {"image": str(self.folder / name)},
                 "annotations": [{"id": 100 + i, "was_cancelled": False, "ground_truth": False, "result": [box]}]}
                for i, name in enumerate(NAMES)]


def test_images_are_fetched_a_chunk_at_a_time_and_failures_recorded(tmp_path, busbra_dir, monkeypatch):
    services = Services(Settings(model_dir=tmp_path, local_files_root=busbra_dir))
    services.__dict__["api"] = AnnotatedProject(busbra_dir / "Images")
    chunks = []
    fetch_all = services.fetcher.fetch_all
    monkeypatch.setattr(services.fetcher, "fetch_all", lambda refs: chunks.append(len(refs)) or fetch_all(refs))
    monkeypatch.setattr(training, "FETCH_CHUNK", 2)
    records, facts, annotations_of = training.build_records(services, 7)
    assert chunks == [2, 2, 1]
    assert [r.image_id for r in records] == ["1", "2", "3", "5"]
    assert list(facts["image_errors"]) == [4] and "no such file" in facts["image_errors"][4]
    images = tmp_path / "project-7" / "images"
    for record in records:
        assert record.width > 100 and record.boxes and (images / f"task-{record.image_id}.png").is_file()
    assert records[0].boxes[0].x0 == pytest.approx(0.2 * records[0].width)
    assert facts["shown_categories"] == ["2", "3", "4A", "5"]  # the config's labels: no plain 4
    assert annotations_of == {"1": [100], "2": [101], "3": [102], "5": [104]}  # task 4: no image
    assert "annotations_of" not in facts  # the version's record, never the job's result


def test_a_tasks_patient_keeps_its_images_on_one_side_of_the_held_out_split(tmp_path, busbra_dir):
    """Tasks imported with `birads export` name their patient: two views of one lesion must not
    be split between the version's training and the tasks that judge it."""
    from model.promotion import split_holdout

    class TwoViewsEach(AnnotatedProject):
        def annotated_tasks(self, project: int) -> list[dict]:
            tasks = super().annotated_tasks(project)
            for task, patient in zip(tasks, ["p1", "p1", 7, None, ""]):
                task["data"]["patient"] = patient
            return tasks

    services = Services(Settings(model_dir=tmp_path, local_files_root=busbra_dir))
    services.__dict__["api"] = TwoViewsEach(busbra_dir / "Images")
    records, *_ = training.build_records(services, 7)
    assert [r.patient for r in records] == ["p1", "p1", "7", None]
    for fraction in (0.1, 0.3, 0.5, 0.7, 0.9):
        held = {r.image_id for r in split_holdout(records, fraction)[1]}
        assert ("1" in held) == ("2" in held)  # tasks 1 and 2: one patient, one side


def test_a_job_without_enough_tasks_says_where_they_went(tmp_path, busbra_dir):
    """Every download refused (Label Studio's key, say): the error names the download, not the
    annotations the experts did make."""
    services = Services(Settings(model_dir=tmp_path, local_files_root=tmp_path / "elsewhere"))
    services.__dict__["api"] = AnnotatedProject(busbra_dir / "Images")
    records, facts, _ = training.build_records(services, 7)
    refusal = training.not_enough(len(records), facts, services.settings)
    assert records == [] and isinstance(refusal, training.NotEnoughAnnotations)
    assert str(refusal).startswith("0 usable annotated tasks of 5, MIN_ANNOTATIONS is ")
    assert "5 task images could not be downloaded, e.g. " in str(refusal) and "outside" in str(refusal)
    assert training.not_enough(0, facts, Settings(min_annotations=0)) is not None  # one at least


def test_too_few_annotated_tasks_are_refused_before_any_image_is_downloaded(tmp_path, busbra_dir, monkeypatch):
    services = Services(Settings(model_dir=tmp_path, local_files_root=busbra_dir, min_annotations=6))
    services.__dict__["api"] = AnnotatedProject(busbra_dir / "Images")
    fetched = []
    monkeypatch.setattr(services.fetcher, "fetch_all", lambda refs: fetched.extend(refs) or [])
    with pytest.raises(training.NotEnoughAnnotations, match="^5 usable annotated tasks of 5, MIN_ANNOTATIONS is 6"):
        training.build_records(services, 7)
    assert fetched == [] and not (tmp_path / "project-7" / "images").exists()


def test_a_served_version_that_cannot_be_evaluated_is_named_where_the_comparison_would_be(
        tmp_path, tiny_model, busbra_dir):
    """The new version is served (the old one is no yardstick), and its description says why it
    was served without a comparison."""
    import shutil

    from PIL import Image

    from model.records import Box, ImageRecord
    from model.registry import Serving

    new, old = tmp_path / "new", tmp_path / "old"
    shutil.copytree(tiny_model, new)
    shutil.copytree(tiny_model, old)
    (old / "model_final.pth").write_bytes(b"not a checkpoint")
    path = busbra_dir / "Images" / "bus_0090-r.png"
    width, height = Image.open(path).size
    held = [ImageRecord("1", str(path), width, height, [Box(20, 20, 80, 80, "3")], split="holdout")]
    settings = Settings(model_dir=tmp_path, bf16="false")
    metrics, served = training.held_out_metrics(new, Serving("v-old", old), held, settings)
    assert metrics["n_images"] == 1 and served["not_evaluated"].startswith("DataError: ")
    assert training.refusal(settings, metrics, served) is None


def test_a_project_that_refines_every_4_keeps_its_subcategories(tmp_path, busbra_dir):
    """The recommended config offers plain 4 beside 4A/4B/4C: a project whose experts refined
    every 4 learns 4A/4B/4C (its replay then holds no plain-4 image), one with a plain 4 left
    learns plain 4."""
    import copy
    from pathlib import Path

    from model import taxonomy

    config = (Path(__file__).resolve().parents[2] / "docs" / "label_config.xml").read_text()

    class Refined(AnnotatedProject):
        labels = ["BI-RADS 4A", "BI-RADS 3", "BI-RADS 4C"]

        def label_config(self, project: int) -> str:
            return config

        def annotated_tasks(self, project: int) -> list[dict]:
            tasks = [copy.deepcopy(t) for t in super().annotated_tasks(project)[:3]]  # each box its own
            for task, label in zip(tasks, self.labels):
                task["annotations"][0]["result"][0]["value"]["rectanglelabels"] = [label]
            return tasks

    services = Services(Settings(model_dir=tmp_path, local_files_root=busbra_dir))
    services.__dict__["api"] = Refined(busbra_dir / "Images")
    records, facts, _ = training.build_records(services, 7)
    assert sorted(b.category for r in records for b in r.boxes) == ["3", "4A", "4C"]
    assert tuple(facts["label_set"]) == taxonomy.FULL
    Refined.labels = ["BI-RADS 4A", "BI-RADS 4", "BI-RADS 3"]
    assert tuple(training.build_records(services, 8).facts["label_set"]) == taxonomy.COARSE


def test_a_task_no_longer_annotated_leaves_no_copy_of_its_image(tmp_path, busbra_dir):
    """A task deleted in Label Studio (or its annotation withdrawn): the next job removes the
    copy of its patient's image that an earlier job made."""
    services = Services(Settings(model_dir=tmp_path, local_files_root=busbra_dir))
    project = AnnotatedProject(busbra_dir / "Images")
    services.__dict__["api"] = project
    training.build_records(services, 7)
    images = tmp_path / "project-7" / "images"
    assert sorted(p.name for p in images.iterdir()) == ["task-1.png", "task-2.png", "task-3.png", "task-5.png"]
    all_tasks = project.annotated_tasks
    project.annotated_tasks = lambda p: [t for t in all_tasks(p) if t["id"] != 2]
    records, *_ = training.build_records(services, 7)
    assert [r.image_id for r in records] == ["1", "3", "5"]
    assert sorted(p.name for p in images.iterdir()) == ["task-1.png", "task-3.png", "task-5.png"]


def test_progress_a_queue_outage_cannot_save_is_logged_not_raised(monkeypatch, caplog):
    """An hour of training is not failed by Redis going away for a moment: only its progress is lost."""
    from redis import Redis
    from rq.job import Job

    job = Job.create("backend.training.train_project", args=(7,), connection=Redis.from_url("redis://127.0.0.1:1/0"))
    monkeypatch.setattr(training, "get_current_job", lambda: job)
    training._report("training", iteration=3)
    assert job.meta["iteration"] == 3 and "progress not saved" in caplog.text


def test_the_gate_scores_only_the_boxes_the_projects_labels_can_show(tmp_path, classified_tiny_model, busbra_dir):
    """A plain-4 starter on a config with only 4A/4B/4C shows none of its "4" boxes: the held-out
    comparison must not count them for it (nor against it)."""
    from PIL import Image

    from model.records import ImageRecord

    path = busbra_dir / "Images" / "bus_0090-r.png"
    width, height = Image.open(path).size
    normal_scan = [ImageRecord("1", str(path), width, height, [], split="holdout")]
    settings = Settings(model_dir=tmp_path, bf16="false")
    every = training.holdout_metrics(classified_tiny_model, normal_scan, settings)
    assert every["acceptance_rate"] == 0.0  # its top box, shown on a normal scan
    assert training.holdout_metrics(classified_tiny_model, normal_scan, settings, [])["acceptance_rate"] == 1.0
