"""The Kustomize base and overlays in deploy/kubernetes, as ``kubectl apply -k`` would apply
them: every object valid against the Kubernetes schemas of a pinned version (kubernetes-validate
ships them, so this runs offline, in CI, with no cluster), and the cross-references a schema
cannot see (selectors, probe ports and paths, ConfigMap and Secret names, setting names) right.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.kustomize import Manifest, UnsupportedKustomization, build, load_file, split_image
from tests.deploy.settings_names import (
    DEPLOY,
    GATEWAY_PORT,
    PROBE_PATHS,
    SECRET_SETTINGS,
    unknown_settings,
)

# The oldest and newest minors kubernetes-validate 1.37.0 ships that upstream still supported
# when pinned; a manifest must hold on both.
KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")
KUSTOMIZATIONS = [DEPLOY / "kubernetes" / "base", DEPLOY / "kubernetes" / "overlays" / "production"]
SECRET_EXAMPLE = DEPLOY / "kubernetes" / "base" / "secret.example.yaml"


def validate(manifest: Manifest) -> None:
    """Raises ``kubernetes_validate.ValidationError`` when ``manifest`` does not match its
    kind's schema (``SchemaNotFoundError`` for an API the version does not serve); strict:
    unknown fields are errors too (a typo is not silently dropped)."""
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = [manifest for manifest in manifests if manifest["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(manifests: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = one(manifests, "Deployment")["spec"]["template"]["spec"]
    return spec


def gateway(manifests: list[Manifest]) -> dict[str, Any]:
    containers = pod_spec(manifests)["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


@pytest.fixture(params=KUSTOMIZATIONS, ids=lambda path: path.name)
def rendered(request: pytest.FixtureRequest) -> list[Manifest]:
    folder: Path = request.param
    return build(folder)


def test_every_object_matches_the_kubernetes_schema(rendered: list[Manifest]) -> None:
    kinds = {manifest["kind"] for manifest in rendered}
    assert kinds == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    for manifest in rendered:
        validate(manifest)


def test_the_secret_example_matches_the_schema_and_names_settings_only() -> None:
    (secret,) = load_file(SECRET_EXAMPLE)
    validate(secret)
    assert unknown_settings(set(secret["stringData"])) == set()
    assert all(value.startswith("REPLACE") for value in secret["stringData"].values())


INVALID = kubernetes_validate.ValidationError
NO_SCHEMA = kubernetes_validate.SchemaNotFoundError


@pytest.mark.parametrize(
    ("break_it", "error"),
    [
        (lambda d: d["spec"].update(replicas="two"), INVALID),  # wrong type
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].update(livenesProbe={}), INVALID),
        (lambda d: d["spec"].pop("selector"), INVALID),  # a required field
        (lambda d: d.update(apiVersion="apps/v1beta1"), NO_SCHEMA),  # removed in 1.16
    ],
    ids=["wrong-type", "misspelt-field", "missing-required", "removed-api"],
)
def test_the_validator_rejects_a_broken_deployment(
    break_it: Callable[[Manifest], object], error: type[Exception]
) -> None:
    deployment = copy.deepcopy(one(build(KUSTOMIZATIONS[0]), "Deployment"))
    validate(deployment)
    break_it(deployment)
    with pytest.raises(error):
        validate(deployment)


def test_service_pdb_and_hpa_reach_the_deployment(rendered: list[Manifest]) -> None:
    deployment = one(rendered, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    service = one(rendered, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    pdb = one(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    target = one(rendered, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    assert target["name"] == deployment["metadata"]["name"]
    port_names = {port["name"]: port["containerPort"] for port in gateway(rendered)["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in port_names


def test_probes_ask_the_gateway_port_for_health_and_readiness(rendered: list[Manifest]) -> None:
    container = gateway(rendered)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": GATEWAY_PORT}
    config = one(rendered, "ConfigMap")["data"]
    assert int(config["PROVENANCE_ROUTER_PORT"]) == GATEWAY_PORT
    assert config["PROVENANCE_ROUTER_HOST"] == "0.0.0.0"  # reachable by the kubelet
    expected = {
        "startupProbe": PROBE_PATHS["liveness"],
        "livenessProbe": PROBE_PATHS["liveness"],
        "readinessProbe": PROBE_PATHS["readiness"],
    }
    for probe, path in expected.items():
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}, probe


def test_configuration_comes_from_the_configmap_and_the_secret(rendered: list[Manifest]) -> None:
    container = gateway(rendered)
    config = one(rendered, "ConfigMap")
    (secret,) = load_file(SECRET_EXAMPLE)
    assert container["envFrom"] == [
        {"configMapRef": {"name": config["metadata"]["name"]}},
        {"secretRef": {"name": secret["metadata"]["name"]}},
    ]
    assert unknown_settings(set(config["data"])) == set()
    assert not SECRET_SETTINGS & set(config["data"]), "a secret belongs in the Secret"
    assert "env" not in container, "settings go in the ConfigMap, secrets in the Secret"
    assert all(manifest["kind"] != "Secret" for manifest in rendered), "never apply a Secret"


def test_pods_run_as_non_root_on_a_read_only_root(rendered: list[Manifest]) -> None:
    spec = pod_spec(rendered)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    assert spec["automountServiceAccountToken"] is False
    for container in [*spec["initContainers"], *spec["containers"]]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
        assert "memory" in resources["limits"], container["name"]


def test_images_are_pinned_and_the_one_the_dockerfile_builds(rendered: list[Manifest]) -> None:
    spec = pod_spec(rendered)
    images = {container["image"] for container in [*spec["initContainers"], *spec["containers"]]}
    assert len(images) == 1
    name, tag = split_image(images.pop())
    assert name.rpartition("/")[2] == "provenance-router"
    assert tag not in (None, "latest")


def test_the_gateway_writes_only_to_mounted_volumes(rendered: list[Manifest]) -> None:
    """readOnlyRootFilesystem holds only if every directory the gateway writes is a volume."""
    container = gateway(rendered)
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    config = one(rendered, "ConfigMap")["data"]
    written = [
        config["PROVENANCE_ROUTER_SIGNING_KEY_DIR"],
        config["PROVENANCE_ROUTER_AUDIT_JOURNAL_DIR"],
        "/tmp",
    ]
    for path in written:
        assert any(Path(path).is_relative_to(mount) for mount in mounts), path
    assert config["PROVENANCE_ROUTER_LOCAL_MODEL"] == "false"


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [], "configMapGenerator": [{"name": "x"}]})
    )
    with pytest.raises(UnsupportedKustomization, match="configMapGenerator"):
        build(tmp_path)


def test_the_production_overlay_changes_what_it_says() -> None:
    base, production = (build(folder) for folder in KUSTOMIZATIONS)
    assert all(m["metadata"]["namespace"] == "provenance-router" for m in production)
    assert gateway(production)["image"].startswith("registry.example.com/provenance-router:")
    assert one(production, "Deployment")["spec"]["replicas"] == 3
    assert gateway(production)["readinessProbe"] == gateway(base)["readinessProbe"]
