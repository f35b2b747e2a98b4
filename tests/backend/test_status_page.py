"""The status page at / on the real app: health of each part, versions with holdout metrics,
a job's progress, failures; behind basic auth when it is set."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace

from rq import Queue

from backend.app import create_app
from backend.jobs import TrainingQueue
from model.registry import Registry
from tests.backend.conftest import install_model


def _versions(settings, project: int, tiny_model, count: int) -> list[str]:
    registry = Registry(settings.model_dir / f"project-{project}")
    names = []
    for n in range(count):
        name = install_model(settings, project, tiny_model, f"v2026112{n // 10}-{n:06d}")
        registry.describe(name, parent=names[-1] if names else None, train_images=10 + n, holdout_images=3,
                          metrics={"ap50": n / count, "ap50_lesion": 0.5, "category_accuracy": 0.4,
                                   "confusion_matrix": {"labels": ["1", "2"], "matrix": [[1, 0], [2, 3]]}},
                          # the parent on this version's held-out tasks
                          served_metrics={"ap50": (n - 1) / count, "ap50_lesion": -1} if names else None)
        names.append(name)
    return names


def test_page_shows_versions_job_progress_failures_and_health(settings, redis_conn, tiny_model):
    names = _versions(settings, 7, tiny_model, 20)
    training = TrainingQueue(redis_conn, settings)
    queued = training.request(7, "START_TRAINING", force=True)
    job = Queue(settings.queue_name, connection=redis_conn).fetch_job(queued["job_id"])
    job.meta.update({"stage": "training", "iteration": 40, "max_iter": 100, "loss": 0.8123,
                     "eta_seconds": 90, "estimated_seconds": 240})
    job.save_meta()
    client = create_app(settings).test_client()
    response = client.get("/")  # its speed is bench/backend.py's (200 ms), not a test's
    page = " ".join(response.get_data(as_text=True).split())
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert f'<b class="served">{names[-1]}</b>' in page and "on 29 tasks (3 held out)" in page
    assert page.count('<tr class="version">') == 20 and "0.950" in page
    assert '0.950 <span class="muted">(+0.050 vs parent)</span>' in page  # holdout AP50 against the parent
    assert "vs parent" not in page.split('<tr class="version">')[-1]  # the first: no parent measured beside it
    assert page.count("vs parent") == 19  # AP50 only: lesion AP50 is undefined (-1) on the parents' side
    assert '<progress value="40" max="100">' in page and '<td class="stage">training</td>' in page
    assert "0.8123" in page and "4.0 min" in page and "1.5 min" in page
    assert re.search(r"<td>queue</td><td class=\"ok\">OK</td>", page)
    assert re.search(r"<td>workers</td><td class=\"bad\">DOWN</td> <td>none listening", page)
    assert "<polyline" in page and "Confusion matrix" in page
    assert "http://" not in page.replace('http-equiv', '') and "https://" not in page  # nothing external


def test_page_shows_refused_versions_and_an_unservable_current_one(settings, tiny_model):
    names = _versions(settings, 4, tiny_model, 2)
    registry = Registry(settings.model_dir / "project-4")
    shutil.copytree(tiny_model, registry.path("v-refused"))
    registry.describe("v-refused", parent=names[1], refused="ap50_lesion 0.200 on 5 held-out tasks is below ...")
    (registry.path(names[1]) / "config.yaml").write_text("changed")
    page = " ".join(create_app(settings).test_client().get("/").get_data(as_text=True).split())
    assert "(refused: ap50_lesion 0.200 on 5 held-out tasks is below ...)" in page
    assert re.search(rf"<td>project 4</td><td class=\"bad\">DOWN</td> <td>version {names[1]}: config.yaml "
                     rf"changed since it was sealed; serving {names[0]}", page)
    assert f'<b class="served">{names[0]}</b>' in page
    (registry.path(names[0]) / "config.yaml").write_text("changed too")  # nothing sound left: not "untrained"
    page = " ".join(create_app(settings).test_client().get("/").get_data(as_text=True).split())
    assert '<b class="served">nothing: predictions answer 503</b>' in page and "untrained" not in page


def test_a_job_whose_worker_died_is_shown_lost_not_running(settings, redis_conn, tiny_model):
    """RQ calls a job "started" until a maintenance run, minutes after its worker died (or never,
    with no worker left): the page and /jobs say it was lost instead of showing it running."""
    from rq.job import JobStatus

    from backend.jobs import job_status

    _versions(settings, 7, tiny_model, 1)
    queued = TrainingQueue(redis_conn, settings).request(7, "START_TRAINING", force=True)
    job = Queue(settings.queue_name, connection=redis_conn).fetch_job(queued["job_id"])
    job.meta.update({"stage": "training", "iteration": 40, "max_iter": 100})
    job.save_meta()
    job.set_status(JobStatus.STARTED)
    redis_conn.hset(job.key, "worker_name", "gone-worker")  # a worker whose key expired: killed
    holder = TrainingQueue(redis_conn, settings)._key(7, "training")
    redis_conn.set(holder, job.id)  # its training process outlived the worker and still holds the project
    assert job_status(redis_conn, job.id)["status"] == "started"
    redis_conn.delete(holder)  # and then died too: its lock expired
    assert job_status(redis_conn, job.id)["status"] == "lost"
    client = create_app(settings).test_client()
    page = " ".join(client.get("/").get_data(as_text=True).split())
    assert '<progress value="40"' not in page and "No job running or queued." in page
    assert "Recent failures" in page and "its worker stopped" in page
    answer = client.get("/jobs?project=7").get_json()
    assert answer["jobs"][0]["status"] == "lost"
    down = create_app(replace(settings, redis_url="redis://127.0.0.1:1/0")).test_client()
    install_model(replace(settings, redis_url="redis://127.0.0.1:1/0"), 8, tiny_model, "v1")
    assert "Jobs unknown: the training queue does not answer." in down.get("/").get_data(as_text=True)


def test_page_reports_a_queue_down_and_needs_basic_auth(settings):
    down = create_app(replace(settings, redis_url="redis://127.0.0.1:1/0")).test_client()
    page = " ".join(down.get("/").get_data(as_text=True).split())
    assert re.search(r"<td>queue</td><td class=\"bad\">DOWN</td> <td>unreachable", page)
    assert "No project has connected yet" in page
    guarded = create_app(replace(settings, basic_auth_user="u", basic_auth_pass="p")).test_client()
    assert guarded.get("/").status_code == 401
    assert guarded.get("/", headers={"Authorization": "Basic dTpw"}).status_code == 200


def test_every_answer_carries_security_headers_and_the_page_a_strict_policy(settings):
    from backend.app import PAGE_POLICY

    client = create_app(settings).test_client()
    page, health = client.get("/"), client.get("/health")
    for response in (page, health):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Content-Security-Policy"] == PAGE_POLICY and page.headers["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" not in health.headers  # JSON is no page
    assert "<script" not in page.get_data(as_text=True)  # the policy runs no script: the page has none
    # no HSTS even over HTTPS: it would bind the whole host name, Label Studio's plain port too (README)
    secure = create_app(settings).test_client().get("/health", base_url="https://backend.hospital.example")
    assert "Strict-Transport-Security" not in secure.headers


def test_the_certificate_is_reported_and_fails_health_from_two_weeks_before_it_expires(settings, tmp_path,
                                                                                     monkeypatch):
    from backend import status
    from tests.conftest import TLS

    https = replace(settings, tls_cert_file=TLS / "server.pem", tls_key_file=TLS / "server.key")
    client = create_app(https).test_client()
    assert "valid until 2126-11-09" in client.get("/").get_data(as_text=True)  # the test certificate's last day
    assert "certificate" not in client.get("/health").get_json()["degraded"]
    monkeypatch.setattr(status, "CERTIFICATE_WARNING_DAYS", 200 * 365)  # as if it expired within the window
    health = client.get("/health").get_json()
    assert health["status"] == "DEGRADED" and "expires on 2126-11-09" in health["degraded"]["certificate"]
    monkeypatch.undo()

    expires = 4_949_897_112.0  # its notAfter, Nov  9 11:25:12 2126 GMT, in seconds since the epoch
    day = 86_400
    [soon] = status.certificate_parts(TLS / "server.pem", now=expires - 5.5 * day)
    assert not soon.ok and "in 5 days" in soon.detail and "renew" in soon.detail
    [last_hours] = status.certificate_parts(TLS / "server.pem", now=expires - 0.4 * day)
    assert not last_hours.ok and "within a day" in last_hours.detail
    [late] = status.certificate_parts(TLS / "server.pem", now=expires + day)
    assert not late.ok and "expired on 2126-11-09" in late.detail
    [fine] = status.certificate_parts(TLS / "server.pem", now=expires - status.CERTIFICATE_WARNING_DAYS * day)
    assert fine.ok and "(14 days)" in fine.detail
    (tmp_path / "broken.pem").write_text("not a certificate")
    [broken] = status.certificate_parts(tmp_path / "broken.pem")
    assert not broken.ok and "unreadable" in broken.detail
    assert status.certificate_parts(None) == []  # plain HTTP: nothing to report
