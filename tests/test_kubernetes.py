"""The Kubernetes manifests (deploy/kubernetes), checked offline against the Kubernetes API schemas
(kubernetes-validate, whose schemas ship inside the package: no network) and against what the service does:
probes, drain time, the metric the autoscaler reads, the voices' database from a Secret."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.metrics import Metrics
from service.settings import Settings
from service.voice_db import database_url

ROOT = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in ROOT.rglob("*.yaml") if p.name not in ("kustomization.yaml", "deployment-patch.yaml"))
K8S_VERSION = "1.30.0"  # the oldest version with the preStop sleep action


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_manifest_is_valid_against_the_kubernetes_schema(path):
    kubernetes_validate.validate(load(path), K8S_VERSION, strict=True)  # raises on any invalid or unknown field


def test_the_deployment_probes_and_drains_as_the_service_does():
    pod = load(ROOT / "deployment.yaml")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e.get("value") for e in container["env"]}
    timeout = float(env["SPEECHFLOW_REQUEST_TIMEOUT_S"])
    assert timeout == Settings().request_timeout_s
    drain = timeout + 5  # service/server.py: drain_timeout_s
    assert pod["terminationGracePeriodSeconds"] >= container["lifecycle"]["preStop"]["sleep"]["seconds"] + drain


def test_the_autoscaler_reads_a_metric_the_service_exports():
    hpa = load(ROOT / "hpa.yaml")
    [metric] = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert f"# TYPE {name} gauge" in Metrics().render()[0].decode()
    rules = yaml.safe_load(load(ROOT / "prometheus-adapter-rules.yaml")["data"]["config.yaml"])["rules"]
    assert any(name in rule["seriesQuery"] and rule["name"]["as"] == name for rule in rules)


def test_the_cpu_profile_drops_the_gpu():
    patch = load(ROOT / "cpu" / "deployment-patch.yaml")["spec"]["template"]["spec"]["containers"][0]
    assert patch["resources"]["requests"]["nvidia.com/gpu"] is None  # strategic merge: null deletes the key
    assert {e["name"]: e["value"] for e in patch["env"]}["SPEECHFLOW_DEVICE"] == "cpu"
    kustomization = load(ROOT / "cpu" / "kustomization.yaml")
    assert all((ROOT / "cpu" / r).resolve().is_file() for r in kustomization["resources"])


def test_every_replica_takes_the_voices_database_from_the_documented_secret():
    [container] = load(ROOT / "deployment.yaml")["spec"]["template"]["spec"]["containers"]
    [url] = [e for e in container["env"] if e["name"] == "SPEECHFLOW_DATABASE_URL"]
    ref = url["valueFrom"]["secretKeyRef"]
    assert not ref.get("optional", False)  # no Secret, no pod: never a pod with voices of its own
    secret = load(ROOT / "database-secret.example.yaml")
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == ref["name"]
    assert database_url(secret["stringData"][ref["key"]], "unused").drivername == "postgresql+psycopg"
    assert "SPEECHFLOW_DATA_DIR" not in {e["name"] for e in container["env"]}
    # the example is applied by hand, never by a kustomization that would overwrite the real Secret
    for kustomization in ROOT.rglob("kustomization.yaml"):
        assert all("secret" not in r for r in load(kustomization)["resources"]), kustomization
