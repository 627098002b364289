"""platform/k8s: every overlay renders, validates against the Kubernetes and KEDA schemas, and keeps
the deployment's invariants (docs/deployment.md).

`kubectl kustomize` renders each overlay once per module; kubernetes-validate checks the built-in
kinds (strict: unknown fields fail) and tests/k8s_schemas the KEDA kinds. kubectl missing is a
failure, not a skip: CI must never pass without having rendered the manifests.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from django.conf import settings
from django.db import connection
from django.utils import timezone
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

from apps.core.task_contract import QUEUES, TASK_QUEUES

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "platform" / "k8s"
OVERLAYS = sorted(path.parent.name for path in (K8S / "overlays").glob("*/kustomization.yaml"))
KUBERNETES_VERSION = "1.32"
KEDA_SCHEMAS = Path(__file__).resolve().parent / "k8s_schemas"
WORKER_COMMAND = "/app/compose/start/worker.sh"


# --- Rendering and lookups --------------------------------------------------------------------


@functools.cache
def rendered(overlay: str) -> tuple[dict, ...]:
    """The objects `kubectl kustomize` builds for an overlay."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: platform/k8s cannot be rendered (install kubectl with kustomize)")
    result = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(objects, kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def by_name(objects, kind: str) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in of_kind(objects, kind)}


def taskplane(objects) -> list[dict]:
    """Taskplane's own objects (not, say, the dev overlay's throw-away PostgreSQL)."""
    return [obj for obj in objects if obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "taskplane"]


def pod_specs(objects) -> list[tuple[str, dict]]:
    """(name, pod spec) of every Taskplane Deployment and Job."""
    return [(obj["metadata"]["name"], obj["spec"]["template"]["spec"])
            for obj in taskplane(objects) if obj["kind"] in ("Deployment", "Job")]


def all_containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def app_container(pod: dict) -> dict:
    (container,) = [c for c in pod["containers"] if c["name"] == "app"]
    return container


def literal_env(objects, container: dict) -> dict[str, str]:
    """The values a container gets from literals and ConfigMaps (secrets are not rendered in production)."""
    config_maps = by_name(objects, "ConfigMap")
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            values.update(config_maps[source["configMapRef"]["name"]]["data"])
    values.update({item["name"]: item["value"] for item in container.get("env", []) if "value" in item})
    return values


def provided_env(objects, container: dict) -> set[str]:
    """Every variable name a container is given, from env, ConfigMaps and (where rendered) Secrets."""
    secrets = by_name(objects, "Secret")
    names = {item["name"] for item in container.get("env", [])} | set(literal_env(objects, container))
    for source in container.get("envFrom", []):
        if "secretRef" in source and source["secretRef"]["name"] in secrets:
            names |= set(secrets[source["secretRef"]["name"]].get("data", {}))
    return names


def worker_deployments(objects) -> dict[str, set[str]]:
    """Deployment name -> the queues its worker consumes (WORKER_QUEUES)."""
    workers = {}
    for name, pod in pod_specs(objects):
        container = app_container(pod)
        if container.get("command") == [WORKER_COMMAND]:
            workers[name] = set(literal_env(objects, container)["WORKER_QUEUES"].split(","))
    return workers


def uses_rabbitmq(objects) -> bool:
    return any(trigger["type"] == "rabbitmq"
               for scaled in of_kind(objects, "ScaledObject") for trigger in scaled["spec"]["triggers"])


# --- Schemas ----------------------------------------------------------------------------------


@functools.cache
def keda_validators() -> dict[str, jsonschema.protocols.Validator]:
    """KEDA kind -> a validator of our schema, resolving Kubernetes definitions from kubernetes-validate."""
    definitions = schema_contents(f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local-strict/_definitions.json",
                                  KUBERNETES_VERSION)
    registry = Resource.from_contents(definitions) @ Registry()
    validators = {}
    for kind in ("ScaledObject", "TriggerAuthentication"):
        schema = json.loads((KEDA_SCHEMAS / f"keda-{kind.lower()}-v1alpha1.json").read_text())
        validators[kind] = jsonschema.Draft202012Validator(schema, registry=registry)
    return validators


def schema_errors(obj: dict) -> list[str]:
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    if obj["apiVersion"].startswith("keda.sh/"):
        validator = keda_validators().get(obj["kind"])
        if validator is None:
            return [f"{name}: no schema for KEDA kind {obj['kind']} in tests/k8s_schemas"]
        return [f"{name}: {'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{name}: {'.'.join(map(str, error.path))}: {error.message}"]
    return []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates(overlay):
    errors = [error for obj in rendered(overlay) for error in schema_errors(obj)]
    assert not errors, "\n".join(errors)


def test_keda_schema_refuses_unknown_and_literal_credentials():
    """The KEDA schemas can fail: a misspelt field and a password in metadata are refused."""
    scaled = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
              "spec": {"scaleTargetRef": {"name": "x"}, "maxReplicas": 3,
                       "triggers": [{"type": "redis", "authenticationRef": {"name": "a"},
                                     "metadata": {"listName": "default", "listLength": "5", "password": "p"}}]}}
    errors = schema_errors(scaled)
    assert any("maxReplicas" in error for error in errors), errors
    assert any("triggers.0.metadata" in error for error in errors), errors


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_lands_in_one_namespace(overlay):
    """A resource an overlay or component adds after the namespace was set would land in "default"."""
    objects = [obj for obj in rendered(overlay) if obj["kind"] != "Namespace"]
    namespaces = {obj["metadata"].get("namespace") for obj in objects}
    assert len(namespaces) == 1 and None not in namespaces, sorted(
        (obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")) for obj in objects)
    assert namespaces == {obj["metadata"]["name"] for obj in of_kind(rendered(overlay), "Namespace")}


def test_every_overlay_is_checked():
    assert {"dev", "production", "production-rabbitmq"} <= set(OVERLAYS)


# --- Invariants -------------------------------------------------------------------------------


def production_required_env() -> set[str]:
    """Variables settings.production cannot start without: env helpers called with no default, plus
    what the Makefile's check-deploy sets (DEPLOY_CHECK_ENV)."""
    required = set()
    for module in ("base", "production"):
        tree = ast.parse((ROOT / "settings" / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "env"
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                    and len(node.args) == 1 and not any(k.arg == "default" for k in node.keywords)):
                required.add(node.args[0].value)
    makefile = (ROOT / "Makefile").read_text()
    block = re.search(r"^DEPLOY_CHECK_ENV := \\\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert block, "DEPLOY_CHECK_ENV not found in the Makefile"
    required |= set(re.findall(r"^\t([A-Z][A-Z0-9_]*)=", block.group(1), re.MULTILINE))
    return required


def test_required_env_is_derived():
    required = production_required_env()
    assert {"SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "FERNET_KEYS", "EMAIL_URL"} <= required
    assert "LOG_LEVEL" not in required  # has a default


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_required_setting_is_provided(overlay):
    objects = rendered(overlay)
    required = production_required_env()
    missing = {name: sorted(required - provided_env(objects, app_container(pod)))
               for name, pod in pod_specs(objects)}
    assert not any(missing.values()), missing
    # Where the overlay renders its Secret, every key a pod or KEDA reads from it is there.
    secrets = {name: set(secret.get("data", {})) for name, secret in by_name(objects, "Secret").items()}
    references = [item["valueFrom"]["secretKeyRef"] for _, pod in pod_specs(objects)
                  for container in all_containers(pod) for item in container.get("env", [])
                  if "secretKeyRef" in item.get("valueFrom", {})]
    references = [ref for ref in references if not ref.get("optional")]
    references += [ref for auth in of_kind(objects, "TriggerAuthentication") for ref in auth["spec"]["secretTargetRef"]]
    absent = [ref for ref in references if ref["name"] in secrets and ref["key"] not in secrets[ref["name"]]]
    assert not absent, absent


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_containers_have_probes_and_resources(overlay):
    objects = rendered(overlay)
    for name, pod in pod_specs(objects):
        for container in all_containers(pod):
            resources = container.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), (name, container["name"])
            assert {"cpu", "memory"} <= set(resources.get("limits", {})), (name, container["name"])
    for deployment in of_kind(taskplane(objects), "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in container, (deployment["metadata"]["name"], container["name"], probe)
    web = app_container(by_name(objects, "Deployment")["taskplane-web"]["spec"]["template"]["spec"])
    assert web["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert web["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    # Django answers 400 to a Host outside ALLOWED_HOSTS: the probes' Host must be allowed.
    allowed = literal_env(objects, web)["ALLOWED_HOSTS"].split(",")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        (host,) = [h["value"] for h in web[probe]["httpGet"]["httpHeaders"] if h["name"] == "Host"]
        assert host in allowed, (probe, host, allowed)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_unprivileged(overlay):
    for name, pod in pod_specs(rendered(overlay)):
        assert pod.get("automountServiceAccountToken") is False, name
        pod_context = pod.get("securityContext", {})
        writable = {mount["mountPath"] for c in all_containers(pod) for mount in c.get("volumeMounts", [])}
        assert "/tmp" in writable, name
        for container in all_containers(pod):
            context = container.get("securityContext", {})
            where = (name, container["name"])
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, where
            assert context.get("runAsUser", pod_context.get("runAsUser", 0)) != 0, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add"), where
            assert not context.get("privileged"), where


def task_hard_time_limits(config: dict[str, str]) -> dict[str, int]:
    """Task name -> hard time limit (s) as the workers register them, with the ConfigMap's default if it sets one."""
    from workers.app import app

    for module in app.conf.imports:  # a worker imports these at start; the test does it here
        importlib.import_module(module)
    override = int(config.get("CELERY_TASK_TIME_LIMIT", 0))
    return {name: max(app.tasks[name].time_limit or settings.CELERY_TASK_TIME_LIMIT, override)
            for name in TASK_QUEUES}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_outlasts_every_task_it_may_run(overlay):
    objects = rendered(overlay)
    deployments = by_name(objects, "Deployment")
    for name, queues in worker_deployments(objects).items():
        pod = deployments[name]["spec"]["template"]["spec"]
        limits = task_hard_time_limits(literal_env(objects, app_container(pod)))
        longest = max(limit for task, limit in limits.items() if TASK_QUEUES[task] in queues)
        assert pod["terminationGracePeriodSeconds"] > longest, (name, pod["terminationGracePeriodSeconds"], longest)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_queue_is_consumed_and_the_relay_runs_alone(overlay):
    workers = worker_deployments(rendered(overlay))
    assert set().union(*workers.values()) == set(QUEUES), workers
    assert [name for name, queues in workers.items() if "outbox" in queues] == ["taskplane-relay"], workers
    assert workers["taskplane-relay"] == {"outbox"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_disable_prefetch_only_with_redis(overlay):
    from celery.bin.worker import worker

    assert any("--disable-prefetch" in option.opts for option in worker.params), "celery worker lost --disable-prefetch"
    objects = rendered(overlay)
    deployments = by_name(objects, "Deployment")
    for name in worker_deployments(objects):
        args = app_container(deployments[name]["spec"]["template"]["spec"]).get("args", [])
        assert ("--disable-prefetch" in args) is not uses_rabbitmq(objects), (name, args)
    assert '"$@"' in (ROOT / "compose" / "start" / "worker.sh").read_text(), "worker.sh must pass its arguments on"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scaling_objects_fit_their_targets(overlay):
    objects = rendered(overlay)
    deployments = by_name(taskplane(objects), "Deployment")
    scaled = {obj["spec"]["scaleTargetRef"]["name"] for obj in of_kind(objects, "ScaledObject")}
    scaled |= {obj["spec"]["scaleTargetRef"]["name"] for obj in of_kind(objects, "HorizontalPodAutoscaler")}
    assert scaled <= set(deployments)
    assert scaled >= {"taskplane-web", *(set(worker_deployments(objects)) - {"taskplane-relay"})}
    for name in scaled:  # an applied replica count would fight the autoscaler on every deploy
        assert "replicas" not in deployments[name]["spec"], name
    auths = set(by_name(objects, "TriggerAuthentication"))
    for obj in of_kind(objects, "ScaledObject"):
        assert {t["type"] for t in obj["spec"]["triggers"]} >= {"postgresql"}, obj["metadata"]["name"]
        assert {t["type"] for t in obj["spec"]["triggers"]} & {"redis", "rabbitmq"}, obj["metadata"]["name"]
        assert {t["authenticationRef"]["name"] for t in obj["spec"]["triggers"]} <= auths
    # Every Deployment has a PodDisruptionBudget selecting its pods.
    budgets = [pdb["spec"]["selector"]["matchLabels"] for pdb in of_kind(objects, "PodDisruptionBudget")]
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(selector.items() <= labels.items() for selector in budgets), name


@pytest.mark.parametrize("overlay", [name for name in OVERLAYS if name.startswith("production")])
def test_production_images_are_pinned(overlay):
    for name, pod in pod_specs(rendered(overlay)):
        for container in all_containers(pod):
            image = container["image"]
            tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
            assert "@sha256:" in image or (tag and tag != "latest"), (name, container["name"], image)


# --- The PostgreSQL triggers' queries run against the real schema ------------------------------


def postgresql_queries() -> dict[str, str]:
    return {obj["metadata"]["name"]: trigger["metadata"]["query"]
            for obj in of_kind(rendered("production"), "ScaledObject")
            for trigger in obj["spec"]["triggers"] if trigger["type"] == "postgresql"}


def query_value(query: str) -> float:
    with connection.cursor() as cursor:
        cursor.execute(query)
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_postgresql_triggers_count_due_work():
    from apps.emails.models import Email
    from apps.outbox.models import OutboxMessage

    queries = postgresql_queries()
    assert set(queries) == {"taskplane-worker", "taskplane-worker-notifications"}
    before = {name: query_value(query) for name, query in queries.items()}
    # The test's transaction started before these rows: give their due times explicitly.
    due, later = timezone.now() - timedelta(seconds=1), timezone.now() + timedelta(hours=1)
    OutboxMessage.objects.create(kind=OutboxMessage.Kind.TASK, name="core.heartbeat", queue="default",
                                 payload="{}", available_at=due)
    OutboxMessage.objects.create(kind=OutboxMessage.Kind.EVENT, name="order.placed", payload="{}", available_at=due)
    OutboxMessage.objects.create(kind=OutboxMessage.Kind.TASK, name="core.heartbeat", queue="default",
                                 payload="{}", available_at=later)  # delayed: not work yet
    OutboxMessage.objects.create(kind=OutboxMessage.Kind.TASK, name="emails.send", queue="notifications",
                                 payload="{}", available_at=due)
    Email.objects.create(key="k8s-trigger", to="ops@example.com", template="orders/placed")
    after = {name: query_value(query) for name, query in queries.items()}
    assert after["taskplane-worker"] == before["taskplane-worker"] + 2
    assert after["taskplane-worker-notifications"] == before["taskplane-worker-notifications"] + 2
