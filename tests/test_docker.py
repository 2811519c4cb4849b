"""What can be checked of the container deliverables without a Docker engine."""

from pathlib import Path

import yaml

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
    for name, service in compose["services"].items():
        timeout = float(service["environment"].get("SPEECHFLOW_REQUEST_TIMEOUT_S", Settings().request_timeout_s))
        grace = service["stop_grace_period"]
        assert grace.endswith("s") and int(grace[:-1]) > drain_timeout_s(Settings(request_timeout_s=timeout)), name


def test_dockerfile_runs_the_install_script_as_non_root_with_a_healthcheck():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert "RUN bash docker/install.sh" in text
    assert "\nUSER speechflow" in text and "HEALTHCHECK" in text and "/livez" in text
    assert "COPY --chown=speechflow checkpoints/demo" in text
    for path in ("model", "service", "training", "speechflow"):
        assert f"COPY {path} ./{path}" in text
    assert "bench" not in text  # the load generators and the fake engine stay out of the serving image
