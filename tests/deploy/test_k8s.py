"""deploy/k8s/: every manifest valid against the Kubernetes API's JSON schemas, and the pieces fit.

No cluster runs here. kubernetes-validate (PyPI) ships the JSON schemas of each Kubernetes minor in
the package, so it checks offline; strict mode makes unknown fields errors, as
`kubectl apply --validate=strict` does. Each manifest is checked against an older minor that many
clusters still run and against the newest the package knows.
"""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from service.config import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
MANIFESTS = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
VERSIONS = ["1.30", kubernetes_validate.utils.latest_version()]


def manifest_errors(path: Path, version: str) -> list[str]:
    """Every resource in the file checked against the schema of its kind and apiVersion."""
    errors = []
    for resource in yaml.safe_load_all(path.read_text()):
        if not isinstance(resource, dict) or not {"apiVersion", "kind"} <= resource.keys():
            errors.append(f"{path.name}: not a Kubernetes resource (apiVersion and kind)")
            continue
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{path.name}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"{path.name}: {e.message}")
    return errors


def load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


@pytest.fixture(scope="module")
def deployment() -> dict:
    return load("deployment.yaml")


@pytest.fixture(scope="module")
def api(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.fixture(scope="module")
def config() -> dict[str, str]:
    return load("configmap.yaml")["data"]


def test_the_example_has_the_resources_the_issue_names() -> None:
    kinds = {load(name)["kind"] for name in MANIFESTS}
    assert {"Deployment", "Service", "ConfigMap", "Secret"} <= kinds


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_is_valid_against_the_kubernetes_schemas(name: str, version: str) -> None:
    assert manifest_errors(K8S / name, version) == []


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        (["spec", "template", "spec", "containers", 0, "readinessProbe", "httpGet", "paht"], "/health/ready",
         "readinessProbe.httpGet: Additional properties are not allowed ('paht' was unexpected)"),
        (["spec", "replicas"], "three", "spec.replicas: 'three' is not of type 'integer'"),
        (["spec", "template", "spec", "containers", 0, "ports", 0, "containerPort"], "8000",
         "containerPort: '8000' is not of type 'integer'"),
        (["apiVersion"], "apps/v2", "Couldn't find schema for kind Deployment with api version apps/v2"),
    ],
)
def test_schema_check_refuses_a_broken_manifest(
    deployment: dict, tmp_path: Path, path: list, value: object, error: str
) -> None:
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    target = broken
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    (tmp_path / "deployment.yaml").write_text(yaml.safe_dump(broken))
    errors = manifest_errors(tmp_path / "deployment.yaml", VERSIONS[-1])
    assert len(errors) == 1 and error in errors[0], errors


def test_schema_check_refuses_a_missing_required_field(deployment: dict, tmp_path: Path) -> None:
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    del broken["spec"]["selector"]
    (tmp_path / "deployment.yaml").write_text(yaml.safe_dump(broken))
    assert manifest_errors(tmp_path / "deployment.yaml", VERSIONS[-1]) == [
        "deployment.yaml: spec: 'selector' is a required property"
    ]


def test_kustomization_applies_every_manifest_once() -> None:
    resources = load("kustomization.yaml")["resources"]
    assert sorted(resources) == MANIFESTS


def test_api_runs_several_replicas_of_the_service_image_as_its_user(deployment: dict, api: dict, service_image) -> None:
    assert deployment["spec"]["replicas"] >= 2
    assert api["image"] == "cliper-api:cpu"  # the image docker-compose.yml builds
    pod = deployment["spec"]["template"]["spec"]
    uid, gid = service_image.last("USER").value[0].split(":")
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(uid), int(gid))
    port = api["ports"][0]
    assert port == {"name": "http", "containerPort": int(service_image.env["CLIPER_PORT"])}


def test_api_is_ready_on_health_ready_and_alive_on_health_live(api: dict) -> None:
    probes = {kind: api[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"] == {"path": "/health/ready", "port": "http"}
    assert probes["livenessProbe"] == {"path": "/health/live", "port": "http"}
    assert probes["startupProbe"] == {"path": "/health/live", "port": "http"}
    # liveness must not kill a pod that is still loading its bundle: the startup probe waits longer
    startup = api["startupProbe"]["periodSeconds"] * api["startupProbe"]["failureThreshold"]
    assert startup >= 120


def test_api_requests_and_limits_cpu_and_memory_with_a_cpu_per_worker(api: dict, config: dict[str, str]) -> None:
    resources = api["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert int(resources["limits"]["cpu"]) == int(config["CLIPER_WORKERS"])


def test_settings_come_from_the_configmap_and_the_key_and_store_url_from_the_secret(api: dict, config: dict) -> None:
    configmap, secret = load("configmap.yaml"), load("secret.yaml")
    assert api["envFrom"] == [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
    from_secret = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in api["env"]}
    assert set(from_secret) == {"CLIPER_API_KEY", "CLIPER_STORE_URL"}
    for ref in from_secret.values():
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert not set(from_secret) & set(config)
    settings = {f"CLIPER_{name.upper()}" for name in Settings.model_fields}
    assert set(config) | set(from_secret) <= settings


def test_secret_holds_only_marked_placeholders() -> None:
    text = (K8S / "secret.yaml").read_text()
    assert text.startswith("# PLACEHOLDER VALUES, NOT SECRETS")
    assert all("PLACEHOLDER" in value for value in load("secret.yaml")["stringData"].values())


def test_service_and_disruption_budget_select_the_api_pods(deployment: dict, api: dict) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = load("service.yaml")["spec"]
    assert service["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["ports"]] == [api["ports"][0]["name"]]
    assert load("pdb.yaml")["spec"]["selector"] == deployment["spec"]["selector"]


def test_bundle_is_the_shared_volume_read_only_where_the_settings_point(deployment: dict, api: dict, config: dict) -> None:
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in api["volumeMounts"]}
    bundle = mounts[config["CLIPER_BUNDLE"]]
    assert bundle.get("readOnly") is True
    claim = volumes[bundle["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == load("bundle-pvc.yaml")["metadata"]["name"]
    assert "emptyDir" in volumes[mounts[config["CLIPER_DATA_DIR"]]["name"]]
    # the pod starts once the bundle is complete: the offline job writes manifest.json last
    (wait,) = pod["initContainers"]
    assert f"{config['CLIPER_BUNDLE']}/manifest.json" in wait["command"][-1]


def test_offline_job_writes_the_bundle_volume_the_api_reads() -> None:
    job = load("offline-job.yaml")["spec"]["template"]["spec"]
    (offline,) = job["containers"]
    env = {e["name"]: e["value"] for e in offline["env"]}
    mount = next(m for m in offline["volumeMounts"] if m["mountPath"] == env["BUNDLE"])
    assert not mount.get("readOnly")
    volume = next(v for v in job["volumes"] if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"]["claimName"] == load("bundle-pvc.yaml")["metadata"]["name"]
    assert "ReadWriteMany" in load("bundle-pvc.yaml")["spec"]["accessModes"]
