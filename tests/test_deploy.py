"""deploy/ holds valid Kubernetes manifests that agree with each other and with the server.

No cluster runs here. kubernetes-validate checks every object against the OpenAPI schema
of the pinned Kubernetes version, offline (the schemas ship in the package), in strict
mode so that a misspelt field fails too; the other tests check what a schema cannot: the
references between the objects and to the server's settings.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.conftest import serve_and_probe
from tests.test_dockerfile import instructions
from toolvault.server.config import Settings

# The oldest release with user namespaces (hostUsers) and procMount on by default.
KUBERNETES_VERSION = "1.33.0"
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KUSTOMIZATION: dict[str, Any] = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
MANIFESTS = sorted(p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")
OBJECTS = {
    (doc["kind"], doc["metadata"]["name"]): doc
    for path in MANIFESTS
    for doc in yaml.safe_load_all(path.read_text())
}
DEPLOYMENT = OBJECTS["Deployment", "toolvault"]
POD = DEPLOYMENT["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]
CONFIG = OBJECTS["ConfigMap", "toolvault"]["data"]
PORTS = {port["name"]: port["containerPort"] for port in CONTAINER["ports"]}
MiB = 1024 * 1024
UNITS = {"Mi": MiB, "Gi": 1024 * MiB}


def quantity(text: str) -> int:
    """A memory quantity in bytes ("2Gi"), or a CPU count ("2")."""
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)?", text).groups()  # type: ignore[union-attr]
    return int(number) * UNITS.get(unit, 1)


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings()


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_is_valid_for_the_pinned_kubernetes(path: Path) -> None:
    documents = list(yaml.safe_load_all(path.read_text()))
    assert documents
    for document in documents:
        assert kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True) == "1.33"


def _misspell_a_probe(deployment: dict[str, Any]) -> None:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")


def _quote_a_port(deployment: dict[str, Any]) -> None:
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "50051"


def _drop_the_probes_port(deployment: dict[str, Any]) -> None:
    del deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["port"]


def _misplace_proc_mount(deployment: dict[str, Any]) -> None:
    deployment["spec"]["template"]["spec"]["securityContext"]["procMount"] = "Unmasked"


@pytest.mark.parametrize(
    "breakage", [_misspell_a_probe, _quote_a_port, _drop_the_probes_port, _misplace_proc_mount]
)
def test_the_validator_rejects_a_broken_deployment(
    breakage: Callable[[dict[str, Any]], None],
) -> None:
    broken = copy.deepcopy(DEPLOYMENT)
    breakage(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_every_manifest_but_the_secret_placeholder() -> None:
    names = {path.name for path in MANIFESTS}
    assert set(KUSTOMIZATION["resources"]) == names - {"secret.yaml"}
    (image,) = KUSTOMIZATION["images"]
    assert CONTAINER["image"].partition(":")[0] == image["name"]


def test_probes_ask_the_health_service_on_the_port_the_server_listens_on() -> None:
    assert CONFIG["TOOLVAULT_LISTEN"] == f"0.0.0.0:{PORTS['grpc']}"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert CONTAINER[probe]["grpc"] == {"port": PORTS["grpc"], "service": ""}, probe
    assert CONFIG["TOOLVAULT_METRICS_PORT"] == str(PORTS["metrics"])


def test_services_select_the_pods_and_target_ports_they_declare() -> None:
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert DEPLOYMENT["spec"]["selector"]["matchLabels"] == labels
    services = {name: obj["spec"] for (kind, name), obj in OBJECTS.items() if kind == "Service"}
    assert set(services) == {"toolvault-headless", "toolvault-metrics"}
    for spec in services.values():
        assert spec["selector"] == labels
        for port in spec["ports"]:
            assert PORTS[port["targetPort"]] == port["port"]
    headless = services["toolvault-headless"]
    assert headless["clusterIP"] == "None"
    assert [port["targetPort"] for port in headless["ports"]] == ["grpc"]


def test_the_autoscaler_and_the_disruption_budget_cover_the_deployment() -> None:
    hpa = OBJECTS["HorizontalPodAutoscaler", "toolvault"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "toolvault",
    }
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    # The autoscaler owns the count: a replicas field would reset it on every apply.
    assert "replicas" not in DEPLOYMENT["spec"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu" and "cpu" in CONTAINER["resources"]["requests"]
    pdb = OBJECTS["PodDisruptionBudget", "toolvault"]["spec"]
    assert pdb["selector"] == DEPLOYMENT["spec"]["selector"]
    assert pdb["maxUnavailable"] < hpa["minReplicas"]


def test_every_variable_the_pod_gets_is_a_setting_and_the_values_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = {f"TOOLVAULT_{name.upper()}" for name in Settings.model_fields}
    (source,) = CONTAINER["envFrom"]
    assert source == {"configMapRef": {"name": "toolvault"}}
    assert set(CONFIG) <= settings
    (db,) = CONTAINER["env"]
    assert db["name"] == "TOOLVAULT_DB" and db["name"] in settings
    reference = db["valueFrom"]["secretKeyRef"]
    secret = OBJECTS["Secret", reference["name"]]
    url = secret["stringData"][reference["key"]]
    parsed = settings_from({**CONFIG, "TOOLVAULT_DB": url}, monkeypatch)
    assert str(parsed.data_dir) in {mount["mountPath"] for mount in CONTAINER["volumeMounts"]}


def test_the_database_secret_is_an_unmistakable_placeholder() -> None:
    url = make_url(OBJECTS["Secret", "toolvault-db"]["stringData"]["url"])
    assert url.drivername == "postgresql+psycopg"
    assert url.password == "CHANGE-ME"
    assert url.host is not None and url.host.endswith(".invalid")


def test_termination_outlasts_the_pre_stop_sleep_and_the_drain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grace = settings_from(CONFIG, monkeypatch).shutdown_grace_s
    sleep = CONTAINER["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert POD["terminationGracePeriodSeconds"] > sleep + grace


def test_limits_fit_the_sandboxes_that_may_run_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from(CONFIG, monkeypatch)
    limits = CONTAINER["resources"]["limits"]
    assert quantity(limits["cpu"]) == settings.max_concurrent_runs
    sandboxes = settings.max_concurrent_runs * settings.max_memory_mb * MiB
    assert quantity(limits["memory"]) >= sandboxes + 1024 * MiB


def test_the_security_context_grants_the_sandbox_what_it_needs_and_no_capability() -> None:
    pod, container = POD["securityContext"], CONTAINER["securityContext"]
    assert instructions("USER") == [str(pod["runAsUser"])]
    assert pod["runAsNonRoot"] is True
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["allowPrivilegeEscalation"] is False
    assert container["privileged"] is False
    assert container["readOnlyRootFilesystem"] is True
    # Kubernetes refuses an unmasked /proc outside a user namespace of the pod's own.
    assert container["procMount"] == "Unmasked" and POD["hostUsers"] is False
    # The runtime's default filter refuses unshare and mount without CAP_SYS_ADMIN.
    assert pod["seccompProfile"] == {"type": "Unconfined"}
    # Writable: the data directory and /tmp, where the sandboxes' working directory is made.
    volumes = {volume["name"]: volume for volume in POD["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in CONTAINER["volumeMounts"]}
    assert set(mounts) == {CONFIG["TOOLVAULT_DATA_DIR"], "/tmp"}
    assert all("emptyDir" in volumes[name] for name in mounts.values())
    assert POD["automountServiceAccountToken"] is False


def test_topology_spread_keeps_replicas_on_different_nodes() -> None:
    by_key = {c["topologyKey"]: c for c in POD["topologySpreadConstraints"]}
    node = by_key["kubernetes.io/hostname"]
    assert (node["maxSkew"], node["whenUnsatisfiable"]) == (1, "DoNotSchedule")
    assert node["labelSelector"] == DEPLOYMENT["spec"]["selector"]


def test_a_server_with_the_pods_settings_serves_and_drains(pg_url: str, tmp_path: Path) -> None:
    """The ConfigMap's environment on a local database, on loopback ports of its own."""
    environment = {
        **CONFIG,
        "TOOLVAULT_DB": pg_url,
        "TOOLVAULT_LISTEN": "127.0.0.1:0",
        "TOOLVAULT_DATA_DIR": str(tmp_path),
        "TOOLVAULT_METRICS_PORT": "0",
        "TOOLVAULT_METRICS_HOST": "127.0.0.1",
    }
    code, out, log = serve_and_probe(environment, tmp_path)
    assert (code, out) == (0, "SERVING\n")
    assert any("2 sandboxes in parallel" in line for line in log)
