"""Model versions on disk: sealed at promotion, checked before serving, with a fallback; and the
rule that keeps a worse version from replacing the served one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from backend.settings import Settings
from backend.training import refusal
from model.io import DataError
from model.modeldir import BOX_CLASSIFIER_META, BOX_CLASSIFIER_WEIGHTS, CONFIG, META, WEIGHTS
from model.registry import Registry


def _version(registry: Registry, name: str, weights: bytes = b"weights") -> None:
    folder = registry.path(name)
    folder.mkdir(parents=True)
    (folder / WEIGHTS).write_bytes(weights)
    (folder / CONFIG).write_text("MODEL: {}\n")
    (folder / META).write_text(json.dumps({"classes": ["3"], "created_at": "now"}))


def test_promotion_seals_and_the_current_version_is_served(tmp_path):
    registry = Registry(tmp_path)
    _version(registry, "v1")
    assert registry.serving().version is None and registry.serving().problem is None  # untrained
    registry.promote("v1")
    sums = json.loads((registry.path("v1") / "checksums.json").read_text())
    assert set(sums) == {WEIGHTS, CONFIG, META}
    serving = registry.serving()
    assert (serving.version, serving.problem) == ("v1", None) and registry.history() == ["v1"]


def test_the_switch_to_a_promoted_version_is_made_durable(tmp_path, monkeypatch):
    """After the rename of ``current`` the folder is synced, as after the history's: a power cut
    cannot leave the history saying one version and ``current`` pointing at the one before."""
    from model import registry as registry_module

    registry = Registry(tmp_path)
    _version(registry, "v1")
    synced = []
    monkeypatch.setattr(registry_module, "sync_folder", lambda folder: synced.append(
        (folder, os.readlink(folder / "current"))))
    registry.promote("v1")
    assert synced == [(tmp_path, os.path.join("versions", "v1"))]


def test_a_failed_switch_leaves_no_trace_in_the_history(tmp_path, monkeypatch):
    """The history is the fallback's list of versions once served: a switch that fails (a full
    disk, a read-only folder) must not list the version, or a broken current would fall back to it."""
    registry = Registry(tmp_path)
    _version(registry, "v1")
    registry.promote("v1")
    _version(registry, "v2")

    def no_room(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "symlink", no_room)
    with pytest.raises(OSError, match="No space left"):
        registry.promote("v2")
    monkeypatch.undo()
    assert registry.current() == "v1" and registry.history() == ["v1"]


def test_a_job_after_every_version_broke_waits_for_a_person(tmp_path):
    """Every version of a project fails its checks and no starter stands in: a job trains afresh,
    compared with nothing, and is kept, not served over them; an untrained project's first is served."""
    from backend.training import nothing_sound_to_compare

    registry = Registry(tmp_path)
    assert nothing_sound_to_compare(registry.serving()) is None  # untrained: the first version is served
    _version(registry, "v1")
    registry.promote("v1")
    assert nothing_sound_to_compare(registry.serving()) is None
    (registry.path("v1") / WEIGHTS).write_bytes(b"changed")
    reason = nothing_sound_to_compare(registry.serving())
    assert reason.startswith("not compared with the project's versions") and "birads promote" in reason


def test_old_versions_are_removed_but_the_served_one_and_its_fallback(tmp_path):
    registry = Registry(tmp_path)
    for name in ("v1", "v2", "v3", "v4", "v5"):
        _version(registry, name)
    registry.promote("v1")
    registry.promote("v2")
    assert registry.prune(0) == [] and len(registry.versions()) == 5  # 0: every one kept
    (registry.path("v2") / WEIGHTS).write_bytes(b"changed")  # served v2 broken: v1 serves
    assert registry.serving().version == "v1"
    assert registry.prune(2) == ["v3"]  # older than the newest two; v1 (the fallback) and v2 (current) spared
    assert registry.prune(1) == ["v4"]
    assert registry.versions() == ["v1", "v2", "v5"] and registry.serving().version == "v1"
    assert not list(registry.versions_dir.glob(".*"))  # nothing left half-removed
    sound = Registry(tmp_path / "sound")  # current sound: the version it would fall back to is kept too
    for name in ("v1", "v2", "v3", "v4", "v5"):
        _version(sound, name)
    sound.promote("v1")
    sound.promote("v2")
    assert sound.prune(1) == ["v3", "v4"] and sound.versions() == ["v1", "v2", "v5"]
    with pytest.raises(DataError, match="does not exist"):  # a hand promotion of a removed version
        sound.promote("v3")


def test_a_changed_file_falls_back_to_the_last_good_version(tmp_path):
    registry = Registry(tmp_path)
    for name in ("v1", "v2", "v3"):
        _version(registry, name, name.encode())
        registry.promote(name)
    (registry.path("v3") / WEIGHTS).write_bytes(b"flipped")
    (registry.path("v2") / CONFIG).write_text("MODEL: {changed: 1}\n")
    serving = registry.serving()
    assert serving.version == "v1" and serving.fallback_from == "v3"
    assert serving.problem == f"version v3: {WEIGHTS} changed since it was sealed"


def test_a_box_classifier_is_sealed_with_its_version(tmp_path):
    registry = Registry(tmp_path)
    _version(registry, "v1")
    registry.promote("v1")
    _version(registry, "v2")
    (registry.path("v2") / BOX_CLASSIFIER_WEIGHTS).parent.mkdir()
    (registry.path("v2") / BOX_CLASSIFIER_WEIGHTS).write_bytes(b"classifier")
    (registry.path("v2") / BOX_CLASSIFIER_META).write_text("{}")
    registry.promote("v2")
    sums = json.loads((registry.path("v2") / "checksums.json").read_text())
    assert set(sums) == {WEIGHTS, CONFIG, META, BOX_CLASSIFIER_WEIGHTS, BOX_CLASSIFIER_META}
    assert registry.serving().version == "v2"
    (registry.path("v2") / BOX_CLASSIFIER_WEIGHTS).write_bytes(b"flipped")
    assert registry.serving().problem == f"version v2: {BOX_CLASSIFIER_WEIGHTS} changed since it was sealed"
    (registry.path("v2") / BOX_CLASSIFIER_WEIGHTS).unlink()
    serving = registry.serving()
    assert serving.version == "v1" and serving.problem == f"version v2 is incomplete (missing {BOX_CLASSIFIER_WEIGHTS})"
    (registry.path("v1") / "checksums.json").write_text("[]")
    assert registry.problem("v1") == "version v1: checksums.json is unreadable"


def test_incomplete_dangling_and_unloadable_versions(tmp_path):
    registry = Registry(tmp_path)
    _version(registry, "v1")
    registry.promote("v1")
    _version(registry, "v2")
    registry.promote("v2")
    assert registry.serving(unusable=frozenset({"v2"})).version == "v1"
    assert registry.serving(unusable=frozenset({"v2"})).problem == "version v2 cannot be loaded"
    (registry.path("v2") / META).unlink()
    assert "incomplete (missing model.json)" in registry.serving().problem
    os.replace(registry.path("v2"), tmp_path / "elsewhere")
    assert registry.current() == "v2"  # the link names it...
    serving = registry.serving()  # ...and it is an error, not "untrained"
    assert serving.version == "v1" and serving.problem == "version v2 does not exist"
    os.replace(registry.path("v1"), tmp_path / "gone")
    nothing = registry.serving()
    assert nothing.version is None and nothing.problem == "version v2 does not exist"


@pytest.mark.parametrize("new, served, tolerance, always, refused", [
    (0.50, 0.60, 0.02, False, True),     # worse by more than the tolerance
    (0.59, 0.60, 0.02, False, False),    # within it
    (0.70, 0.60, 0.02, False, False),    # better
    (0.10, 0.60, 0.02, True, False),     # PROMOTE_ALWAYS
    (0.10, None, 0.02, False, False),    # nothing served to compare with
])
def test_a_worse_version_is_refused(new, served, tolerance, always, refused):
    settings = Settings(promote_tolerance=tolerance, promote_always=always)
    reason = refusal(settings, {"ap50_lesion": new, "n_images": 7},
                     None if served is None else {"ap50_lesion": served})
    assert bool(reason) == refused
    if refused:
        assert "ap50_lesion 0.500 on 7 held-out tasks" in reason and "PROMOTE_ALWAYS" in reason


def test_where_no_held_out_task_holds_a_lesion_the_acceptance_rate_decides():
    """Box AP is -1 on held-out tasks without a lesion, for both versions: a new one drawing a box
    on every normal scan must not pass as if -1 had been compared with -1."""
    settings = Settings(promote_tolerance=0.02)
    served = {"ap50_lesion": -1, "acceptance_rate": 1.0}
    reason = refusal(settings, {"ap50_lesion": -1, "acceptance_rate": 0.0, "n_images": 3}, served)
    assert reason and "acceptance_rate 0.000 on 3 held-out tasks" in reason and "undefined on them" in reason
    assert refusal(settings, {"ap50_lesion": -1, "acceptance_rate": 1.0, "n_images": 3}, served) is None
    assert refusal(settings, {"ap50_lesion": -1, "n_images": 3}, {"ap50_lesion": -1}) is None  # nothing to compare
    # one side undefined (PROMOTE_METRIC=ap50, classes of two class lists): compared as before
    assert refusal(Settings(promote_metric="ap50"), {"ap50": -1, "acceptance_rate": 1.0}, {"ap50": 0.4})


def test_promote_metric_must_be_known():
    with pytest.raises(ValueError, match="PROMOTE_METRIC"):
        Settings(promote_metric="loss")


def test_birads_promote_serves_a_refused_version_by_hand(tmp_path, monkeypatch, capsys):
    from backend.cli import main

    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    registry = Registry(tmp_path / "project-3")
    _version(registry, "v1")
    registry.promote("v1")
    _version(registry, "v2")
    registry.describe("v2", parent="v1", refused="ap50_lesion 0.1 ...")
    assert main(["promote", "--project", "3", "--version", "v9"]) == 2
    assert "has no version 'v9'" in capsys.readouterr().err
    assert main(["promote", "--project", "3", "--version", "v2"]) == 0
    assert registry.serving().version == "v2"
    info = registry.info("v2")
    assert "refused" not in info and info["overridden"] == "ap50_lesion 0.1 ..." and info["parent"] == "v1"


def test_birads_promote_runs_as_the_command_users_type(tmp_path):
    """`./birads promote` runs the module as a script, which the in-process test above cannot see."""
    env = dict(os.environ, MODEL_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "backend.cli", "promote", "--project", "3", "--version", "v9"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "project 3 has no version 'v9'" in done.stderr, done.stderr


def test_an_unreadable_history_is_reported_and_starts_again(tmp_path, caplog):
    registry = Registry(tmp_path / "project-3")
    _version(registry, "v1")
    registry.promote("v1")
    (registry.root / "history.json").write_text('{"not": "a list"')
    with caplog.at_level("WARNING"):
        assert registry.history() == []
    assert "history.json unreadable" in caplog.text


def test_a_version_whose_files_changed_is_not_promoted_again(tmp_path):
    registry = Registry(tmp_path / "project-3")
    _version(registry, "v1")
    registry.promote("v1")
    _version(registry, "v2")
    registry.promote("v2")
    (registry.path("v1") / WEIGHTS).write_bytes(b"tampered")
    with pytest.raises(DataError, match="changed since it was sealed: not promoted"):
        registry.promote("v1")
    assert registry.serving().version == "v2"
    assert registry.problem("v1") is not None  # the evidence is kept


def test_held_out_images_split_stably_and_never_leave_nothing_to_train_on():
    from model.promotion import held_out, split_holdout
    from model.records import Box, ImageRecord

    def record(i, boxes=1):
        return ImageRecord(image_id=str(i), path=f"{i}.png", width=10, height=10,
                           boxes=[Box(0, 0, 5, 5, "3")] * boxes)

    records = [record(i) for i in range(40)]
    trained_on, held = split_holdout(records, 0.2)
    assert [r.image_id for r in held] == [str(i) for i in range(40) if held_out(i, 0.2)]  # a task id or its string
    assert {r.split for r in held} == {"holdout"} and {r.split for r in trained_on} == {None}
    assert 0 < len(held) < 20 and len(trained_on) + len(held) == 40
    assert split_holdout(records, 0.2) == (trained_on, held)  # the same split every round
    assert split_holdout(records, 0) == (records, [])
    # what would train holds no box: too few to hold any out, all of them train
    boxless = [record(i, boxes=0) if not held_out(i, 0.2) else record(i) for i in range(40)]
    assert split_holdout(boxless, 0.2) == (boxless, [])
    # a patient's images stay on one side: none trained on while another is held out to judge it
    both_breasts = [replace(record(f"{i}-{side}"), patient=f"p{i}") for i in range(40) for side in "lr"]
    trained_on, held = split_holdout(both_breasts, 0.2)
    assert held and {r.patient for r in held}.isdisjoint(r.patient for r in trained_on)


def test_a_version_its_job_never_described_says_why_it_is_not_served(tmp_path):
    registry = Registry(tmp_path / "project-3")
    _version(registry, "v1")  # weights written, the job killed before describing them
    assert registry.info("v1") == {"version": "v1",
                                   "refused": "incomplete: its training job stopped before describing it"}
    registry.describe("v1", parent=None)
    assert "refused" not in registry.info("v1")


def test_birads_help_names_the_backend_commands_and_worker_help_starts_nothing(capsys, monkeypatch):
    from backend.cli import main

    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["worker", "--help"]) == 0  # a worker would refuse to start without REDIS_URL
    assert capsys.readouterr().out.startswith("usage: birads worker")
    with pytest.raises(SystemExit):  # argparse's own help for the model's commands follows
        main(["--help"])
    out = capsys.readouterr().out
    assert "backend commands:" in out and "promote" in out and "simulate" in out
    with pytest.raises(SystemExit) as helped:  # serve's own options reach it (it read "serve" as one)
        main(["serve", "--help"])
    assert helped.value.code == 0 and "--server-only" in capsys.readouterr().out


def test_a_promotion_expecting_another_served_version_changes_nothing(tmp_path):
    from model.registry import ReplacedMeanwhile

    registry = Registry(tmp_path / "project-3")
    for name in ("v1", "v2", "v3"):
        _version(registry, name)
    registry.promote("v1", replacing=None)  # nothing served yet, as expected
    registry.promote("v2")                   # a rollback by hand, say
    with pytest.raises(ReplacedMeanwhile, match="changed from v1 to v2"):
        registry.promote("v3", replacing="v1")
    assert registry.current() == "v2" and registry.history() == ["v1", "v2"]
    assert not (registry.path("v3") / "checksums.json").exists()
    registry.promote("v3", replacing="v2")
    assert registry.current() == "v3"
    elsewhere = Registry(tmp_path / "project-9")  # a project with no versions: nothing is made for it
    with pytest.raises(DataError, match="does not exist"):
        elsewhere.promote("v1", replacing=None)
    assert not elsewhere.root.exists()


def test_a_promotion_waits_for_the_one_in_progress(tmp_path):
    """Promotions of one registry run one at a time across processes (an flock: a second open
    file of this process stands in for another process holding it)."""
    import fcntl
    import threading

    registry = Registry(tmp_path / "project-3")
    _version(registry, "v1")
    registry.promote("v1")
    _version(registry, "v2")
    with open(registry.root / ".promotion.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        waiting = threading.Thread(target=registry.promote, args=("v2",), kwargs={"replacing": "v1"})
        waiting.start()
        waiting.join(timeout=0.5)
        assert waiting.is_alive() and registry.current() == "v1"
        fcntl.flock(held, fcntl.LOCK_UN)
    waiting.join(timeout=10)
    assert not waiting.is_alive() and registry.current() == "v2"


def test_a_rollback_between_the_jobs_check_and_its_promotion_stands(tmp_path):
    from backend.training import _promote_unless_replaced, replaced_meanwhile

    registry = Registry(tmp_path / "project-3")
    for name in ("v1", "v2", "v3"):
        _version(registry, name)
    registry.promote("v1")
    assert replaced_meanwhile(registry, "v1") is None  # the job's check passes ...
    registry.promote("v2")                              # ... then someone rolls back by hand
    registry.describe("v3", parent="v1", refused=None, metrics={"ap50_lesion": 0.7})
    refused = _promote_unless_replaced(registry, "v3", "v1")
    assert refused and "changed from v1 to v2 while this job trained" in refused
    assert registry.current() == "v2"
    info = registry.info("v3")
    assert info["refused"] == refused and info["metrics"] == {"ap50_lesion": 0.7} and info["parent"] == "v1"
    assert _promote_unless_replaced(registry, "v3", "v2") is None and registry.current() == "v3"


def test_a_promotion_that_fails_lists_the_version_with_why(tmp_path, monkeypatch):
    """/versions and the status page show a job's version that could not be switched to as refused,
    with the reason, not as a candidate no one decided on."""
    from backend.training import _promote_unless_replaced

    registry = Registry(tmp_path / "project-3")
    _version(registry, "v1")
    registry.describe("v1", parent=None, refused=None)

    def no_room(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "symlink", no_room)
    with pytest.raises(OSError):
        _promote_unless_replaced(registry, "v1", None)
    monkeypatch.undo()
    assert registry.current() is None
    assert registry.info("v1")["refused"] == "promotion failed: [Errno 28] No space left on device"


def test_a_promotion_switched_but_not_recorded_is_served_not_called_refused(tmp_path, monkeypatch):
    """The switch made, the history's write then failing (a disk filling up): the version is
    served, so the job reports it promoted, not refused."""
    from backend.training import _promote_unless_replaced
    from model import registry as registry_module

    registry = Registry(tmp_path / "project-3")
    _version(registry, "v1")
    registry.describe("v1", parent=None, refused=None)
    registry.seal("v1")  # sealed while there was room

    def no_room(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(registry_module, "write_atomic", no_room)
    assert _promote_unless_replaced(registry, "v1", None) is None
    monkeypatch.undo()
    assert registry.current() == "v1" and registry.info("v1")["refused"] is None
