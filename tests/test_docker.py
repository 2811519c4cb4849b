"""What can be checked of the container deliverables without a Docker engine."""

import re
from pathlib import Path

import yaml

from service.voice_db import database_url

ROOT = Path(__file__).resolve().parents[1]


def test_compose_parses_and_reserves_a_gpu():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    gpu = compose["services"]["speechflow"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert any(v.endswith(":ro") for v in gpu["volumes"])  # checkpoints mounted read-only
    assert gpu["environment"]["SPEECHFLOW_DEVICE"] == "cuda"
    cpu = compose["services"]["speechflow-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu


def test_compose_gives_the_drain_the_time_it_needs():
    from service.server import drain_timeout_s
    from service.settings import Settings

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for name, service in speechflow_services(compose).items():
        timeout = float(service["environment"].get("SPEECHFLOW_REQUEST_TIMEOUT_S", Settings().request_timeout_s))
        grace = service["stop_grace_period"]
        assert grace.endswith("s") and int(grace[:-1]) > drain_timeout_s(Settings(request_timeout_s=timeout)), name


def test_the_replicas_share_their_voices_through_the_compose_postgres():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    replicas = {n: s for n, s in speechflow_services(compose).items() if "replicas" in s.get("profiles", [])}
    postgres = compose["services"]["postgres"]
    assert len(replicas) == 2 and postgres["profiles"] == ["replicas"]
    assert "ports" not in postgres and "pg_isready" in postgres["healthcheck"]["test"]  # reachable by the replicas only
    urls = {s["environment"]["SPEECHFLOW_DATABASE_URL"] for s in replicas.values()}
    [url] = urls  # one database for both
    parsed = database_url(re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", url), "unused")  # compose's ${VAR:-default}
    assert parsed.drivername == "postgresql+psycopg" and parsed.host == "postgres"
    assert parsed.username == postgres["environment"]["POSTGRES_USER"]
    assert parsed.database == postgres["environment"]["POSTGRES_DB"]
    for service in replicas.values():
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "SPEECHFLOW_DATA_DIR" not in service["environment"]  # no per-replica store to fall back on
    gpus = [s["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] for s in replicas.values()]
    ports = [s["ports"][0].split(":")[0] for s in replicas.values()]
    assert len({tuple(g) for g in gpus}) == len(set(ports)) == 2  # a GPU and a host port each


def speechflow_services(compose: dict) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items() if s.get("image", "").startswith("speechflow")}


def test_dockerfile_runs_the_install_script_as_non_root_with_a_healthcheck():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert "RUN bash docker/install.sh" in text
    assert "\nUSER speechflow" in text and "HEALTHCHECK" in text and "/livez" in text
    assert "COPY --chown=speechflow checkpoints/demo" in text
    for path in ("model", "service", "training", "speechflow"):
        assert f"COPY {path} ./{path}" in text
    assert "bench" not in text  # the load generators and the fake engine stay out of the serving image
