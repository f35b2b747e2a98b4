"""docker/: no Docker engine runs here, so the compose file is validated with `compose config`,
and the image must install exactly as `make` does."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _compose() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("neither `docker compose` nor `docker-compose` is installed, so the compose file cannot be "
                "validated here (.ci/run installs docker-compose where it runs as root)")


SECRETS = {"LABEL_STUDIO_API_KEY": "token", "LABEL_STUDIO_PASSWORD": "password",
           "BASIC_AUTH_USER": "pm", "BASIC_AUTH_PASS": "secret"}


def _config(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(_compose() + ["-f", str(REPO / "docker" / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, timeout=60, env=clean | env)


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(missing):
    """No secret has a default in the file: a deployment cannot run with a published password."""
    done = _config({k: v for k, v in SECRETS.items() if k != missing})
    assert done.returncode != 0 and missing in done.stderr


def test_compose_file_is_valid_and_has_every_service():
    done = _config(SECRETS)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    assert set(config["services"]) == {"redis", "label-studio", "backend", "worker"}
    backend, worker = config["services"]["backend"], config["services"]["worker"]
    assert backend["environment"]["REDIS_URL"] == worker["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert worker["command"] == ["python", "-m", "backend.worker"]
    studio = config["services"]["label-studio"]["environment"]
    assert studio["ML_BLOCK_LOCAL_IP"] == "false" and studio["SSRF_PROTECTION_ENABLED"] == "false"
    assert studio["LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK"] == "true"  # no account without an invitation
    targets = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in backend["volumes"]}
    assert targets == {"/data", "/starter-model", "/tls"}
    worker_targets = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in worker["volumes"]}
    assert worker_targets == {"/data", "/starter-model", "/replay-data"}  # no TLS key where images are decoded
    assert "REPLAY_DATA" in worker["environment"]  # the starter's own images, replayed by fine-tuning jobs
    for name in ("backend", "worker"):
        environment = config["services"][name]["environment"]
        assert (environment["BASIC_AUTH_USER"], environment["LABEL_STUDIO_API_KEY"]) == ("pm", "token")
        assert "INITIAL_WEIGHTS" in environment  # a starter model reaches both
    assert "TLS_KEY_FILE" in backend["environment"] and "TLS_KEY_FILE" not in worker["environment"]
    # the backend's port is published on the host's loopback only; Label Studio uses the network
    [port] = backend["ports"]
    assert (port.get("host_ip") if isinstance(port, dict) else port.split(":")[0]) == "127.0.0.1"
    assert backend["healthcheck"]["test"] == ["CMD", "python", "-m", "backend.healthcheck"]
    assert all(service["restart"] == "unless-stopped" for service in config["services"].values())


CONTAINERS_OWN = {"BIND_HOST", "PORT", "LOCAL_FILES_ROOT"}  # fixed by the image and its port mapping
SERVER_ONLY = {"TLS_CERT_FILE", "TLS_KEY_FILE", "WORKERS", "THREADS"}  # never where images are decoded for training


def test_every_setting_reaches_the_containers_and_empty_ones_are_their_defaults():
    """A setting the README documents (ALLOW_PRIVATE_IMAGE_HOSTS for an on-premises MinIO, say)
    must reach the backend set in the shell or docker/.env; unset, it arrives empty: its default."""
    from dataclasses import fields

    from backend.settings import Settings

    done = _config(SECRETS | {"ALLOW_PRIVATE_IMAGE_HOSTS": "true", "WORKERS": "3"})
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    names = {f.metadata["env"] for f in fields(Settings)} - CONTAINERS_OWN
    backend, worker = services["backend"]["environment"], services["worker"]["environment"]
    assert names <= set(backend) and names - SERVER_ONLY <= set(worker)
    assert not SERVER_ONLY & set(worker)
    assert backend["ALLOW_PRIVATE_IMAGE_HOSTS"] == worker["ALLOW_PRIVATE_IMAGE_HOSTS"] == "true"
    assert backend["WORKERS"] == "3" and backend["SHOW_BOXES"] in ("", None)


def test_compose_serves_https_and_label_studio_trusts_its_authority_when_given():
    tls = {"TLS_CERT_FILE": "/tls/server.pem", "TLS_KEY_FILE": "/tls/server.key",
           "LABEL_STUDIO_CA_BUNDLE": "/ca/bundle.pem"}
    done = _config(SECRETS | tls)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert services["backend"]["stop_grace_period"] in ("20s", 20, 20.0)  # past gunicorn's own grace (serve.py)
    backend = services["backend"]["environment"]
    assert (backend["TLS_CERT_FILE"], backend["TLS_KEY_FILE"]) == ("/tls/server.pem", "/tls/server.key")
    studio = services["label-studio"]
    assert studio["environment"]["REQUESTS_CA_BUNDLE"] == "/ca/bundle.pem"
    mounts = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in studio["volumes"]}
    assert "/ca" in mounts and "/tls" not in mounts  # Label Studio sees the authorities, not the key


def test_image_installs_with_the_same_script_as_make():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert "scripts/ensure_env.sh" in dockerfile and "scripts/ensure_env.sh" in makefile
    assert "pip install" not in dockerfile  # no second, drifting list of packages


def test_image_holds_every_script_the_install_runs():
    copied = " ".join(line for line in (REPO / "docker" / "Dockerfile").read_text().splitlines()
                      if line.startswith("COPY scripts/"))
    install = (REPO / "scripts" / "ensure_env.sh").read_text()
    called = set(re.findall(r'"\$repo/(scripts/[\w.]+)"', install))
    assert "scripts/prune_envs.sh" in called
    assert all(script in copied for script in called), (called, copied)


def test_image_serves_as_an_unprivileged_user_with_a_health_check():
    text = (REPO / "docker" / "Dockerfile").read_text()
    instructions = [(line.split(None, 1) + [""])[:2] for line in text.splitlines() if line.strip()]
    users = [args.strip() for word, args in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert any(word == "HEALTHCHECK" and "backend.healthcheck" in args for word, args in instructions)
    # the server's command line comes from the settings (BIND_HOST, PORT, TLS_*), as `make run`'s does
    assert [args for word, args in instructions if word == "CMD"][-1] == \
        '["python", "-m", "backend.serve", "--server-only"]'
