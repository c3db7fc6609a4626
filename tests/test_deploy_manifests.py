"""The Kubernetes manifests as kustomize renders them (deploy/kubernetes/render.sh): what a cluster would get.

`make k8s` installs the pinned kubectl (kustomize inside) and runs this after kubernetes-validate --strict. Without
that kubectl (nor $KUBECTL, nor one on PATH) these tests are skipped, except under CI, where that is a failure.
"""

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from service.core.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
RENDERS = ("base", "production", "production-migrate")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SECRETISH = re.compile(r"SECRET|PASSWORD|TOKEN|DATABASE_URL|REDIS_URL", re.IGNORECASE)

Manifest = dict[str, Any]


def _kubectl() -> str:
    for candidate in (os.environ.get("KUBECTL"), str(ROOT / ".venv" / "deploy-tools" / "bin" / "kubectl")):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("kubectl")
    if found:
        return found
    if IN_CI:
        pytest.fail("no kubectl: run `make k8s` (it installs the pinned one) before the tests")
    pytest.skip("no kubectl: `make k8s` installs the pinned one")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("k8s")
    subprocess.run(  # noqa: S603 - our own script, fixed arguments
        ["bash", str(DEPLOY / "render.sh"), str(out)],  # noqa: S607 - bash from PATH, as make runs it
        env={**os.environ, "KUBECTL": _kubectl()},
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


def _load(rendered: Path, name: str) -> list[Manifest]:
    docs = [doc for doc in yaml.safe_load_all((rendered / f"{name}.yaml").read_text()) if doc]
    assert docs, f"{name} rendered nothing"
    return docs


def _one(docs: list[Manifest], kind: str, prefix: str) -> Manifest:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, f"expected one {kind} {prefix}*, found {len(found)}"
    return found[0]


def _workloads(docs: list[Manifest]) -> list[Manifest]:
    return [d for d in docs if d["kind"] in ("Deployment", "Job")]


def _conduit_pods(docs: list[Manifest]) -> list[Manifest]:
    """The pod specs that run the service's image (the API and the migration Job), PgBouncer excluded."""
    return [w["spec"]["template"]["spec"] for w in _workloads(docs) if w["metadata"]["name"].startswith("conduit")]


def _env(container: Manifest) -> dict[str, Manifest]:
    return {item["name"]: item for item in container.get("env", [])}


def _config(docs: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = _one(docs, "ConfigMap", "conduit-config")["data"]
    return data


def _dockerfile_uid() -> int:
    text = (ROOT / "Dockerfile").read_text()
    uid = re.search(r"useradd .*--uid (\d+)", text)
    user = re.search(r"^USER (\d+):(\d+)$", text, re.MULTILINE)
    assert uid, "the Dockerfile creates no user with --uid"
    assert user, "the Dockerfile's USER is not numeric"
    assert uid.group(1) == user.group(1)
    return int(uid.group(1))


@pytest.mark.parametrize("name", RENDERS)
def test_every_pod_runs_locked_down(rendered: Path, name: str) -> None:
    workloads = _workloads(_load(rendered, name))
    assert workloads
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert isinstance(pod["securityContext"]["runAsUser"], int)
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert container["resources"]["requests"]
            assert container["resources"]["limits"]


@pytest.mark.parametrize("name", RENDERS)
def test_the_service_runs_as_the_images_user_with_tmp_its_only_writable_path(rendered: Path, name: str) -> None:
    pods = _conduit_pods(_load(rendered, name))
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsUser"] == _dockerfile_uid()
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
        assert [m["mountPath"] for m in writable] == ["/tmp"]  # noqa: S108 - the pod's emptyDir, not ours
        assert "emptyDir" in volumes[writable[0]["name"]]


@pytest.mark.parametrize("name", ["base", "production"])
def test_the_api_probes_the_health_endpoints_the_app_serves(rendered: Path, name: str) -> None:
    from service.ops.router import router

    served = {getattr(route, "path", None) for route in router.routes}
    deployment = _one(_load(rendered, name), "Deployment", "conduit")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["service", "serve", "--host", "0.0.0.0", "--port", "8000"]  # noqa: S104
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert {"/health/ready", "/health/live"} <= served
    port = container["ports"][0]
    assert port["containerPort"] == 8000
    assert container["readinessProbe"]["httpGet"]["port"] == port["name"]


@pytest.mark.parametrize("name", ["base", "production"])
def test_the_grace_period_covers_the_drain(rendered: Path, name: str) -> None:
    docs = _load(rendered, name)
    config = _config(docs)
    drain = float(config["SERVICE_SHUTDOWN_DELAY"]) + float(config["SERVICE_SHUTDOWN_TIMEOUT"])
    pod = _one(docs, "Deployment", "conduit")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > drain


@pytest.mark.parametrize("name", RENDERS)
def test_every_setting_named_is_one_the_service_reads(rendered: Path, name: str) -> None:
    """A misspelt SERVICE_ variable would be ignored silently (extra="ignore"): each must be a Settings field."""
    docs = _load(rendered, name)
    named = set(_config(docs))
    for pod in _conduit_pods(docs):
        named |= {n for c in pod["containers"] for n in _env(c)}
    fields = {f"SERVICE_{field.upper()}" for field in Settings.model_fields}
    assert named
    assert named <= fields, named - fields


@pytest.mark.parametrize("name", RENDERS)
def test_the_signing_key_is_a_mounted_file_never_an_environment_value(rendered: Path, name: str) -> None:
    docs = _load(rendered, name)
    key_file = _config(docs)["SERVICE_SECRET_KEY_FILE"]
    for pod in _conduit_pods(docs):
        (container,) = pod["containers"]
        assert "SERVICE_SECRET_KEY" not in _env(container)
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounted = {
            f"{m['mountPath']}/{item['path']}": volumes[m["name"]]["secret"]
            for m in container["volumeMounts"]
            if "secret" in volumes[m["name"]]
            for item in volumes[m["name"]]["secret"]["items"]
        }
        assert key_file in mounted
        assert mounted[key_file]["secretName"].startswith("conduit-secrets")
        assert [i["key"] for i in mounted[key_file]["items"]] == ["secret_key"]


@pytest.mark.parametrize("name", RENDERS)
def test_no_secret_value_is_written_in_a_manifest(rendered: Path, name: str) -> None:
    docs = _load(rendered, name)
    for key, value in _config(docs).items():
        assert not (SECRETISH.search(key) and key != "SERVICE_SECRET_KEY_FILE"), key
        assert "@" not in value, key  # no URL with credentials in a ConfigMap
    for workload in _workloads(docs):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for env_name, item in _env(container).items():
                if SECRETISH.search(env_name):
                    assert "value" not in item, env_name
                    assert "secretKeyRef" in item["valueFrom"], env_name


def test_the_only_secret_is_generated_from_the_uncommitted_files(rendered: Path) -> None:
    """The committed tree has no Secret and no literal secret; the rendered one holds exactly the files that
    render.sh wrote at random for this run."""
    for path in DEPLOY.rglob("*.yaml"):
        text = path.read_text()
        assert not re.search(r"^kind:\s*Secret\s*$", text, re.MULTILINE), path
        for doc in yaml.safe_load_all(text):
            for generator in (doc or {}).get("secretGenerator", []):
                assert "literals" not in generator, path
    assert not (DEPLOY / "overlays" / "production" / "config" / "secrets").exists() or _ignored_by_git()
    written = {
        "secret_key": (rendered / "secret_key").read_text(),
        "pgbouncer_userlist": (rendered / "pgbouncer_userlist").read_text(),
    }
    for line in (rendered / "urls.env").read_text().splitlines():
        key, _, value = line.partition("=")
        written[key] = value
    for name in ("production", "production-migrate"):
        secrets = [d for d in _load(rendered, name) if d["kind"] == "Secret"]
        assert len(secrets) == 1
        data = {k: base64.b64decode(v).decode() for k, v in secrets[0]["data"].items()}
        assert data == written
    assert "secret" not in {d["kind"].lower() for d in _load(rendered, "base")}


def _ignored_by_git() -> bool:
    secrets = DEPLOY / "overlays" / "production" / "config" / "secrets"
    probe = subprocess.run(  # noqa: S603 - fixed arguments
        ["git", "-C", str(ROOT), "check-ignore", "-q", str(secrets / "secret_key")],  # noqa: S607
        check=False,
    )
    return probe.returncode == 0


def test_the_rendered_production_settings_start_the_service(
    rendered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ConfigMap, the Secret's URLs and the mounted key file, as the API pod gets them, pass production's checks."""
    docs = _load(rendered, "production")
    secret = {k: base64.b64decode(v).decode() for k, v in _one(docs, "Secret", "conduit-secrets")["data"].items()}
    pod = _one(docs, "Deployment", "conduit")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    environment = dict(_config(docs))
    for env_name, item in _env(container).items():
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        environment[env_name] = secret[ref["key"]] if ref else item["value"]
    key_file = tmp_path / "secret_key"
    key_file.write_text(secret["secret_key"])
    environment["SERVICE_SECRET_KEY_FILE"] = str(key_file)
    for variable in [v for v in os.environ if v.startswith("SERVICE_")]:
        monkeypatch.delenv(variable)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.chdir(tmp_path)  # no .env of the working tree
    settings = load_settings()
    assert settings.environment == "production"
    assert settings.jwt_secret() == secret["secret_key"].strip()
    assert settings.database_pgbouncer is True
    assert settings.database_url.startswith("postgresql+asyncpg://")
    assert "@pgbouncer:5432/" in settings.database_url
    assert settings.redis_url
    assert settings.redis_url.startswith("rediss://")
    assert settings.trusted_proxies
    assert settings.effective_log_format == "json"


def test_the_migration_job_and_the_api_share_config_and_secret(rendered: Path) -> None:
    """Both production roots render the same ConfigMap and Secret (same hashed names), and the Job goes straight to
    PostgreSQL while the API goes through PgBouncer."""
    app_docs, job_docs = _load(rendered, "production"), _load(rendered, "production-migrate")
    for kind, prefix in (("ConfigMap", "conduit-config"), ("Secret", "conduit-secrets")):
        assert _one(app_docs, kind, prefix)["metadata"]["name"] == _one(job_docs, kind, prefix)["metadata"]["name"]
    job = _one(job_docs, "Job", "conduit-migrate")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["service", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert _env(migrate)["SERVICE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "migrate_database_url"
    assert "SERVICE_DATABASE_PGBOUNCER" not in _env(migrate)
    (api,) = _one(app_docs, "Deployment", "conduit")["spec"]["template"]["spec"]["containers"]
    assert _env(api)["SERVICE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "database_url"
    assert _env(api)["SERVICE_DATABASE_PGBOUNCER"]["value"] == "true"
    assert api["image"] == migrate["image"]
    assert not api["image"].endswith(":latest")
    assert ":" in api["image"].rsplit("/", 1)[-1]
    assert not [d for d in app_docs if d["kind"] == "Job"]  # applied on its own, before the app


def test_production_scales_on_cpu_within_a_disruption_budget(rendered: Path) -> None:
    docs = _load(rendered, "production")
    hpa = _one(docs, "HorizontalPodAutoscaler", "conduit")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "conduit"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 20)
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    deployment = _one(docs, "Deployment", "conduit")
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert _one(docs, "PodDisruptionBudget", "conduit")["spec"]["selector"]["matchLabels"] == labels
    assert _one(docs, "Service", "conduit")["spec"]["selector"] == labels
    (api,) = deployment["spec"]["template"]["spec"]["containers"]
    assert api["resources"]["requests"]["cpu"] == "1"
    assert {d["metadata"]["namespace"] for d in docs} == {"conduit"}


def test_production_ingress_serves_only_the_api_over_tls(rendered: Path) -> None:
    ingress = _one(_load(rendered, "production"), "Ingress", "conduit")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    (rule,) = spec["rules"]
    (tls,) = spec["tls"]
    assert tls["hosts"] == [rule["host"]]
    assert [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] == [("/api", "Prefix")]


def test_pgbouncer_pools_transactions_and_reads_its_users_from_the_secret(rendered: Path) -> None:
    docs = _load(rendered, "production")
    config = _one(docs, "ConfigMap", "pgbouncer-config")["data"]
    settings: dict[str, str] = {}
    for line in config["pgbouncer.ini"].splitlines():
        if "=" in line and not line.lstrip().startswith(";"):
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    assert settings["pool_mode"] == "transaction"
    assert settings["auth_type"] == "scram-sha-256"
    assert "%include /etc/pgbouncer/databases.ini" in config["pgbouncer.ini"]
    assert "[databases]" in config["databases.ini"]
    # The app's own timeouts, which it cannot send through PgBouncer, set on every server connection instead.
    defaults = Settings.model_fields
    for name in ("statement_timeout", "lock_timeout"):
        seconds = int(defaults[f"database_{name}"].default.total_seconds())
        assert f"set_config(''{name}'', ''{seconds}s'', false)" in config["databases.ini"]
    pod = _one(docs, "Deployment", "pgbouncer")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    auth_dir, auth_name = settings["auth_file"].rsplit("/", 1)
    assert mounts[auth_dir]["secret"]["items"] == [{"key": "pgbouncer_userlist", "path": auth_name}]
    config_name = _one(docs, "ConfigMap", "pgbouncer-config")["metadata"]["name"]
    assert mounts["/etc/pgbouncer"]["configMap"]["name"] == config_name
    assert _one(docs, "Service", "pgbouncer")["spec"]["ports"][0]["port"] == int(settings["listen_port"])
