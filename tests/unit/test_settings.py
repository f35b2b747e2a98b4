"""Settings from environment variables: types, defaults, clear errors."""

from dataclasses import fields
from pathlib import Path

import pytest

from backend.settings import Settings, settings_table
from tests.conftest import TLS


def test_defaults_without_environment(monkeypatch):
    for setting in fields(Settings):  # a developer's exported TRAIN_IMAGE_SIZE must not leak in
        monkeypatch.delenv(setting.metadata["env"], raising=False)
    s = Settings.from_env()
    assert s.port == 9090 and s.redis_url == "" and s.model_dir == Path("models")
    assert s.train_image_size == 0 and s.bf16_choice is None  # 0: the parent model's size


def test_box_voting_is_on_by_default_and_0_turns_it_off(monkeypatch):
    monkeypatch.delenv("BOX_VOTING_IOU", raising=False)
    assert Settings.from_env().box_voting == 0.5
    monkeypatch.setenv("BOX_VOTING_IOU", "0.6")
    assert Settings.from_env().box_voting == 0.6
    monkeypatch.setenv("BOX_VOTING_IOU", "0")
    assert Settings.from_env().box_voting is None


def test_predict_proposals_0_is_the_models_own(monkeypatch):
    monkeypatch.delenv("PREDICT_PROPOSALS", raising=False)
    assert Settings.from_env().proposals is None
    monkeypatch.setenv("PREDICT_PROPOSALS", "100")
    assert Settings.from_env().proposals == 100


def test_typed_values(monkeypatch):
    monkeypatch.setenv("PORT", "9191")
    monkeypatch.setenv("SCORE_THRESHOLD", "0.25")
    monkeypatch.setenv("TRAIN_BF16", "true")
    monkeypatch.setenv("ALLOWED_IMAGE_HOSTS", "pacs.local, images.example.org")
    monkeypatch.setenv("LOCAL_FILES_ROOT", "/data/scans")
    monkeypatch.setenv("BF16", "false")
    s = Settings.from_env()
    assert (s.port, s.score_threshold, s.train_bf16) == (9191, 0.25, True)
    assert s.allowed_hosts == ("pacs.local", "images.example.org")
    assert s.local_files_root == Path("/data/scans") and s.bf16_choice is False


@pytest.mark.parametrize("name, value, message", [
    ("PORT", "ninety", "PORT='ninety' is not a valid int"),
    ("TRAIN_BF16", "maybe", "TRAIN_BF16='maybe' is not a valid bool"),
    ("BF16", "sometimes", "must be auto, true or false"),
    ("HOLDOUT_FRACTION", "1.5", "must be in"),
    ("BOX_VOTING_IOU", "1.5", "must be in"),
    ("PREDICT_PROPOSALS", "-1", r"PREDICT_PROPOSALS=-1 must be >= 0 \(0: the predictor's default\)"),
    ("CATEGORY_READING", "mode", "must be one of argmax, median"),
    ("MALIGNANCY_READING", "both", "must be one of pathology, mean"),
    ("DEVICE", "gpu", "must be auto, cpu, cuda or cuda:N"),
    ("REPLAY_RATIO", "-1", "REPLAY_RATIO=-1.0 must be >= 0"),
    ("PREDICT_TIME_BUDGET", "-5", "PREDICT_TIME_BUDGET=-5.0 must be >= 0"),
    ("REPLAY_DATA", "/data/BUS-BRA", "must be FORMAT:PATH"),
    ("PREDICT_BATCH", "0", "PREDICT_BATCH=0 must be at least 1"),  # each /predict would answer 500
    ("MAX_TASKS", "-1", "MAX_TASKS=-1 must be at least 1"),
    ("JOB_TIMEOUT", "0", "JOB_TIMEOUT=0 must be at least 1"),  # RQ would refuse every job
    ("WORKER_NICE", "-5", "WORKER_NICE=-5 must not be negative"),  # only root may: the worker would not start
    ("FETCH_TIMEOUT", "0", "FETCH_TIMEOUT=0.0 must be a positive number of seconds"),
    ("REQUEST_TIMEOUT", "inf", "REQUEST_TIMEOUT=inf must be a positive number of seconds"),
    ("FINE_TUNE_FREEZE", "category-head,trunk", r"FINE_TUNE_FREEZE=category-head,trunk: cannot freeze \['trunk'\]"),
])
def test_bad_values_name_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        Settings.from_env()


def test_every_setting_is_documented_in_the_readme():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for row in settings_table().splitlines()[2:]:
        assert row.split("|")[1].strip() in readme


def test_https_needs_a_certificate_and_its_key_that_can_be_served(monkeypatch):
    monkeypatch.delenv("TLS_CERT_FILE", raising=False)
    monkeypatch.delenv("TLS_KEY_FILE", raising=False)
    assert Settings.from_env().scheme == "http"
    monkeypatch.setenv("TLS_CERT_FILE", "")  # compose's ${TLS_CERT_FILE:-}: plain HTTP
    assert Settings.from_env().tls_cert_file is None
    monkeypatch.setenv("TLS_CERT_FILE", str(TLS / "server.pem"))
    with pytest.raises(ValueError, match="go together"):
        Settings.from_env()
    for key, message in [("missing.key", "No such file"), ("server-encrypted.key", "the key is encrypted")]:
        monkeypatch.setenv("TLS_KEY_FILE", str(TLS / key))
        with pytest.raises(ValueError, match=f"cannot be served.*{message}"):
            Settings.from_env().check_tls()
    monkeypatch.setenv("TLS_CERT_FILE", str(TLS / "ca.pem"))  # another certificate than the key's
    monkeypatch.setenv("TLS_KEY_FILE", str(TLS / "server.key"))
    with pytest.raises(ValueError, match="cannot be served"):
        Settings.from_env().check_tls()
    monkeypatch.setenv("TLS_CERT_FILE", str(TLS / "server.pem"))
    s = Settings.from_env()
    s.check_tls()
    assert s.scheme == "https" and s.tls_key_file == TLS / "server.key"


def test_a_certificate_and_key_given_the_wrong_way_round_stop_the_server_with_one_line(monkeypatch, capsys):
    from backend.serve import main

    monkeypatch.setenv("TLS_CERT_FILE", str(TLS / "server.key"))
    monkeypatch.setenv("TLS_KEY_FILE", str(TLS / "server.pem"))
    with pytest.raises(SystemExit) as stopped:
        main(["--server-only"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("backend not started: TLS_CERT_FILE=")


@pytest.mark.parametrize("given", [{"BASIC_AUTH_USER": "pm"}, {"BASIC_AUTH_PASS": "secret"}])
def test_basic_auth_needs_its_user_and_its_password(monkeypatch, given):
    """With the password alone every request passed; with the user alone, an empty password did."""
    for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="BASIC_AUTH_USER and BASIC_AUTH_PASS go together"):
        Settings.from_env()


def test_the_server_command_listens_where_asked_and_over_https_with_a_certificate():
    from backend.serve import gunicorn_command

    plain = gunicorn_command(Settings(bind_host="127.0.0.1", port=9191))
    assert plain[plain.index("--bind") + 1] == "127.0.0.1:9191" and "--certfile" not in plain
    assert plain[-1] == "backend.app:create_app()"
    https = gunicorn_command(Settings(bind_host="[::]", tls_cert_file=TLS / "server.pem",
                                      tls_key_file=TLS / "server.key"))
    assert https[https.index("--bind") + 1] == "[::]:9090"
    assert https[https.index("--certfile") + 1:https.index("--certfile") + 4] == [
        str(TLS / "server.pem"), "--keyfile", str(TLS / "server.key")]


def test_a_job_that_fine_tunes_runs_the_gentle_schedule_and_a_first_training_the_full_one(monkeypatch):
    from backend.training import train_settings
    from model.config import TrainSettings, iterations

    monkeypatch.setenv("FINE_TUNE_LR", "0.003")
    settings = Settings.from_env()
    tuned = train_settings(settings, "models/starter", fine_tune=True)
    assert tuned.base_lr == 0.003 and tuned.weights == "models/starter"
    assert iterations(tuned, 16) == 60  # 0.75 augmented epochs: the simulated loops' 60 iterations of 2
    first = train_settings(settings, "", fine_tune=False)
    assert (first.base_lr, first.epochs) == (TrainSettings().base_lr, settings.train_epochs)
    # a job resumes nothing: no checkpoint on the way (0.45 GB each), the final weights only
    assert tuned.checkpoint_period == first.checkpoint_period > 10**6 > TrainSettings().checkpoint_period
    monkeypatch.setenv("TRAIN_MAX_ITER", "7")  # a fixed count wins over either schedule
    assert iterations(train_settings(Settings.from_env(), "models/starter", fine_tune=True), 16) == 7
    assert (tuned.frozen, tuned.classifier_min_lesions) == ((), 0)  # nothing held by default
    monkeypatch.setenv("FINE_TUNE_FREEZE", "category-head")
    monkeypatch.setenv("FINE_TUNE_CLASSIFIER_MIN_LESIONS", "200")
    held = train_settings(Settings.from_env(), "models/starter", fine_tune=True)
    assert held.frozen == ("roi_heads.box_head.", "roi_heads.box_predictor.cls_score.")
    assert held.classifier_min_lesions == 200
    assert train_settings(Settings.from_env(), "", fine_tune=False).frozen == ()  # a first training holds nothing


def test_an_empty_setting_is_its_default_as_compose_passes_an_unset_one(monkeypatch):
    """docker/docker-compose.yml passes every setting as `${X:-}`: empty must mean "not set"."""
    for field in fields(Settings):
        monkeypatch.setenv(field.metadata["env"], "")
    assert Settings.from_env() == Settings()


def test_a_fine_tuning_job_replays_the_starters_data_where_it_is_given(monkeypatch, busbra_dir):
    from backend.training import replay_records
    from model import datasets
    from model.io import DataError

    project = [r for r in datasets.load(f"busbra:{busbra_dir}") if r.split == "fold4"]
    assert replay_records(Settings.from_env(), project) == []  # REPLAY_DATA unset: the project alone
    monkeypatch.setenv("REPLAY_DATA", f"busbra:{busbra_dir}")
    monkeypatch.setenv("REPLAY_SPLITS", "fold1, fold2")
    monkeypatch.setenv("REPLAY_RATIO", "2")
    replayed = replay_records(Settings.from_env(), project)
    folds = {r.patient: r.split for r in datasets.load(f"busbra:{busbra_dir}")}
    assert len(replayed) == min(2 * len(project), 6)  # fold1 and fold2 hold 6 images here
    assert {folds[r.patient] for r in replayed} <= {"fold1", "fold2"}
    monkeypatch.setenv("REPLAY_SPLITS", "fold1,fold9")  # a split it does not have is named, not ignored
    with pytest.raises(DataError, match="REPLAY_SPLITS: REPLAY_DATA=busbra:.* has no images in fold9"):
        replay_records(Settings.from_env(), project)
    monkeypatch.setenv("REPLAY_SPLITS", "")
    with pytest.raises(DataError, match="none of its 8 images can be named by the project's labels"):
        replay_records(Settings.from_env(), project, labels=("1",))  # a label set nothing here fits
    monkeypatch.setenv("REPLAY_DATA", f"busbra:{busbra_dir}/missing")
    with pytest.raises(DataError, match="REPLAY_DATA=busbra:.*/missing: .*not found"):
        replay_records(Settings.from_env(), project)
    monkeypatch.setenv("REPLAY_DATA", f"scans:{busbra_dir}")
    with pytest.raises(DataError, match="REPLAY_DATA=scans:.*expected FORMAT:PATH"):
        replay_records(Settings.from_env(), project)


def test_a_worker_does_not_start_with_replay_data_it_cannot_read(monkeypatch, busbra_dir):
    from backend.worker import main

    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached: the check comes first
    monkeypatch.setenv("REPLAY_DATA", f"busbra:{busbra_dir}/missing")
    with pytest.raises(SystemExit, match="REPLAY_DATA=busbra:.*/missing"):
        main()
