"""Static checks of the deployment files: docker-compose.yml, its overrides, the Dockerfile, Prometheus,
Grafana provisioning and dashboards/*.json. Nothing here builds an image or starts a container.

The compose files are read the way Compose reads them: YAML (anchors and merge keys), then variable
interpolation with a test ``.env`` (podman-compose's implementation of the Compose interpolation rules,
``${VAR:?message}`` included), then parsed by ``compose-spec``, a Compose Specification parser that rejects
unknown keys and ill-typed values. The dashboards' PromQL is parsed by ``promql-parser`` and every metric it
queries is checked against the ``/metrics`` of the real app (built in-process) or Ray's own metric names.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import podman_compose
import promql_parser
import pytest
import yaml
from compose_spec import PyCompose
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from autoft_service.api.app import create_app
from autoft_service.settings import Settings
from autoft_service.store import JobStore

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
EXTERNAL_RAY_OVERRIDE = ROOT / "deploy" / "compose.external-ray.yml"
LOCAL_OVERRIDE = ROOT / "deploy" / "compose.local.yml"
STACK_IMAGES = ROOT / "scripts" / "stack_images.sh"
STACK_SMOKE = ROOT / "scripts" / "stack_smoke.sh"
ENV_EXAMPLE = ROOT / ".env.example"
POSTGRES_INIT_DIR = ROOT / "deploy" / "postgres"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
DASHBOARDS_DIR = ROOT / "dashboards"

#: The secrets the stack refuses to start without (``${VAR:?set VAR in .env}``).
REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "RAY_AUTH_TOKEN")
TEST_DOTENV = "POSTGRES_PASSWORD=pg-secret\nGRAFANA_ADMIN_PASSWORD=gf-secret\nRAY_AUTH_TOKEN=ray-token\n"

#: Services that publish a port (all on 127.0.0.1), with the container port; no other service publishes any.
PUBLISHED = {"api": 8000, "mlflow": 5000, "grafana": 3000}
SERVICES = {
    "postgres", "mlflow", "ray-head", "ray-worker", "ray-worker-cpu", "api", "runner", "prometheus", "grafana",
}  # fmt: skip
APP_IMAGE_SERVICES = ("mlflow", "ray-head", "ray-worker", "ray-worker-cpu", "api", "runner")
#: Services of each Ray profile ("" = none: an external cluster).
PROFILE_SERVICES = {
    "cpu": SERVICES - {"ray-worker"},
    "gpu": SERVICES - {"ray-worker-cpu"},
    "": SERVICES - {"ray-head", "ray-worker", "ray-worker-cpu"},
}
NAMED_VOLUMES = {"postgres-data", "mlflow-artifacts", "autoft-data", "prometheus-data", "grafana-data"}
DATABASES = {"autoft", "optuna", "mlflow"}

#: Metrics the dashboards query that the API does not export: external, exported by Ray (each node's agent
#: on its `ray start --metrics-export-port`). Each name appears in the installed ray package's own Grafana
#: panels (test_ray_metrics_are_known_to_the_installed_ray).
RAY_METRICS = frozenset({"ray_node_cpu_utilization", "ray_node_gpus_utilization", "ray_tasks", "ray_actors"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
#: Grafana's interval variables, replaced by a duration so that the PromQL parses.
GRAFANA_VARIABLES = re.compile(r"\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}")


# Compose helpers ----------------------------------------------------------------------------------------------
def load_compose(env: Mapping[str, str | None], *files: Path) -> dict[str, Any]:
    """The compose model of ``files`` (later ones override earlier ones), interpolated with ``env`` only."""
    merged: dict[str, Any] = {}
    for f in files:
        content = podman_compose.normalize(yaml.safe_load(f.read_text()))
        podman_compose.rec_merge(merged, podman_compose.rec_subs(content, dict(env)))
    return merged


def dotenv(tmp_path: Path, text: str) -> dict[str, str | None]:
    """Variables of a ``.env`` file with ``text``, read like Compose reads ``.env``."""
    path = tmp_path / ".env"
    path.write_text(text)
    return podman_compose.dotenv_to_dict(str(path))


def active(compose: Mapping[str, Any], profile: str) -> dict[str, Any]:
    """The services Compose starts with ``COMPOSE_PROFILES=profile``."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if not svc.get("profiles") or profile in svc["profiles"]
    }


def published_ports(svc: Mapping[str, Any]) -> list[tuple[str | None, str, int]]:
    """(host ip or None for every interface, published port, container port) of each ``ports`` entry."""
    out: list[tuple[str | None, str, int]] = []
    for p in svc.get("ports", []):
        if isinstance(p, dict):
            out.append((p.get("host_ip"), str(p.get("published", "")), int(p["target"])))
            continue
        parts = str(p).split("/")[0].split(":")
        ip = parts[0] if len(parts) == 3 else None
        published = parts[-2] if len(parts) >= 2 else ""
        out.append((ip, published, int(parts[-1])))
    return out


def mounts(svc: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of each volume of a service (short or long syntax)."""
    for v in svc.get("volumes", []):
        if isinstance(v, dict):
            yield str(v.get("source", "")), str(v["target"])
        else:
            source, target, *_ = str(v).split(":")
            yield source, target


def mount_target(svc: Mapping[str, Any], repo_path: Path) -> str:
    """The container path at which ``svc`` bind-mounts ``repo_path`` of this repository."""
    for source, target in mounts(svc):
        if source.startswith(".") and (ROOT / source).resolve() == repo_path.resolve():
            return target
    raise AssertionError(f"{repo_path.relative_to(ROOT)} is not mounted into this service")


def command_flag(command: list[str], flag: str) -> str:
    """The value of ``--flag=value`` or ``--flag value`` in a command."""
    for i, arg in enumerate(command):
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
        if arg == flag:
            return command[i + 1]
    raise AssertionError(f"{flag} not in {command}")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    return dotenv(tmp_path_factory.mktemp("dotenv"), TEST_DOTENV)


@pytest.fixture(scope="module")
def compose(env: dict[str, str | None]) -> dict[str, Any]:
    return load_compose(env, COMPOSE_FILE)


# docker-compose.yml -------------------------------------------------------------------------------------------
def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    parsed = PyCompose.from_json(json.dumps(compose))  # raises on unknown keys and ill-typed values
    parsed.validate()  # references to networks, volumes, configs and secrets
    spec = parsed.to_spec()
    assert set(spec.services or {}) == SERVICES


@pytest.mark.parametrize("secret", REQUIRED_SECRETS)
def test_a_missing_secret_fails_fast_with_its_message(tmp_path: Path, secret: str) -> None:
    text = "".join(line + "\n" for line in TEST_DOTENV.splitlines() if not line.startswith(f"{secret}="))
    with pytest.raises(
        ValueError, match=rf"required variable {secret} is missing a value: set {secret} in \.env"
    ):
        load_compose(dotenv(tmp_path, text), COMPOSE_FILE)


def test_env_example_fails_fast_until_its_secrets_are_filled_in(tmp_path: Path) -> None:
    example = podman_compose.dotenv_to_dict(str(ENV_EXAMPLE))
    assert {s: example.get(s) for s in REQUIRED_SECRETS} == dict.fromkeys(REQUIRED_SECRETS, "")
    with pytest.raises(ValueError, match=r"set \w+ in \.env"):
        load_compose(example, COMPOSE_FILE)
    filled = {**example, **dotenv(tmp_path, TEST_DOTENV)}
    started = active(load_compose(filled, COMPOSE_FILE), example["COMPOSE_PROFILES"] or "")
    assert set(started) == PROFILE_SERVICES["cpu"]


def test_env_example_documents_every_variable_the_compose_files_read() -> None:
    used: set[str] = set()
    for f in (COMPOSE_FILE, EXTERNAL_RAY_OVERRIDE):
        text = f.read_text().replace("$$", "")  # $$ is a literal $ (a variable of the container's shell)
        used |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    documented = set(re.findall(r"^#?\s*([A-Za-z_][A-Za-z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
    assert used - documented == set()
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    assert required == set(REQUIRED_SECRETS)


@pytest.mark.parametrize("profile", sorted(PROFILE_SERVICES))
def test_every_dependency_exists_in_each_profile(compose: dict[str, Any], profile: str) -> None:
    services = active(compose, profile)
    assert set(services) == PROFILE_SERVICES[profile]
    for name, svc in services.items():
        for dep, how in svc.get("depends_on", {}).items():
            assert dep in compose["services"], f"{name} depends on unknown service {dep}"
            if dep not in services:
                assert how.get("required") is False, f"{name} needs {dep}, which profile {profile!r} lacks"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in compose["services"][dep], f"{name} waits for {dep} to be healthy"


def test_only_api_mlflow_and_grafana_publish_ports_and_only_on_loopback(compose: dict[str, Any]) -> None:
    publishing = {name for name, svc in compose["services"].items() if svc.get("ports")}
    assert publishing == set(PUBLISHED)
    for name, container_port in PUBLISHED.items():
        ports = published_ports(compose["services"][name])
        assert [(ip, target) for ip, _, target in ports] == [("127.0.0.1", container_port)], name
    for name in ("postgres", "ray-head", "ray-worker", "ray-worker-cpu", "prometheus"):
        assert "ports" not in compose["services"][name]
        assert "expose" not in compose["services"][name]
    assert not any("network_mode" in svc for svc in compose["services"].values())


def test_ray_workers_gpu_reservation_and_cpu_fallback(compose: dict[str, Any]) -> None:
    gpu, cpu = compose["services"]["ray-worker"], compose["services"]["ray-worker-cpu"]
    assert gpu["profiles"] == ["gpu"] and cpu["profiles"] == ["cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]} in devices
    assert "deploy" not in cpu
    for svc in (gpu, cpu):
        assert command_flag(svc["command"], "--address") == "ray-head:6379"
        assert "--block" in svc["command"]


def test_every_volume_is_declared_and_every_bind_mount_exists(compose: dict[str, Any]) -> None:
    assert set(compose["volumes"]) == NAMED_VOLUMES
    used: set[str] = set()
    for name, svc in compose["services"].items():
        for source, _ in mounts(svc):
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in NAMED_VOLUMES, f"{name} uses undeclared volume {source}"
                used.add(source)
    assert used == NAMED_VOLUMES
    # The trials' files (task cache, Tune storage_path) are shared by the runner and every Ray node.
    for name in ("runner", "ray-head", "ray-worker", "ray-worker-cpu"):
        assert ("autoft-data", "/data") in set(mounts(compose["services"][name]))
    assert compose["services"]["runner"]["environment"]["AUTOFT_DATA_DIR"] == "/data"


def test_healthchecks_on_postgres_api_and_mlflow(compose: dict[str, Any]) -> None:
    s = compose["services"]
    assert "pg_isready" in " ".join(s["postgres"]["healthcheck"]["test"])
    api_check = " ".join(s["api"]["healthcheck"]["test"])
    assert f"127.0.0.1:{command_flag(s['api']['command'], '--port')}/healthz" in api_check
    assert "127.0.0.1:5000/health" in " ".join(s["mlflow"]["healthcheck"]["test"])


def test_app_roles_share_one_image_and_the_documented_commands(compose: dict[str, Any]) -> None:
    s = compose["services"]
    assert {s[n]["image"] for n in APP_IMAGE_SERVICES} == {"autoft-service:local"}
    for n in APP_IMAGE_SERVICES:
        assert s[n]["build"]["context"] == "."
        assert podman_compose.norm_as_dict(s[n]["build"]["args"])["TORCH_SPEC"] == "torch==2.14.1 torchvision==0.29.1"
    assert s["api"]["command"] == ["autoft", "serve", "--no-runner", "--host", "0.0.0.0", "--port", "8000"]
    assert s["runner"]["command"][-1].endswith("exec autoft runner")
    assert s["ray-head"]["command"][:3] == ["ray", "start", "--head"]
    assert s["mlflow"]["command"][:2] == ["mlflow", "server"]
    assert s["mlflow"]["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert ("mlflow-artifacts", command_flag(s["mlflow"]["command"], "--artifacts-destination")) in set(
        mounts(s["mlflow"])
    )
    for n in ("ray-head", "ray-worker", "ray-worker-cpu", "runner"):
        assert s[n]["environment"]["RAY_AUTH_MODE"] == "token"
        assert s[n]["environment"]["RAY_AUTH_TOKEN"] == "ray-token"


def test_database_urls_name_databases_the_init_sql_creates(compose: dict[str, Any]) -> None:
    sql = "\n".join(p.read_text() for p in POSTGRES_INIT_DIR.glob("*.sql"))
    created = set(re.findall(r"'(\w+)'", sql.split("ARRAY[", 1)[1].split("]", 1)[0]))
    assert created == DATABASES
    assert mount_target(compose["services"]["postgres"], POSTGRES_INIT_DIR) == "/docker-entrypoint-initdb.d"
    urls = {
        (name, key): value
        for name, svc in compose["services"].items()
        for key, value in svc.get("environment", {}).items()
        if str(value).startswith("postgresql")
    }
    assert {key for _, key in urls} == {
        "AUTOFT_DATABASE_URL", "AUTOFT_OPTUNA_STORAGE_URL", "MLFLOW_BACKEND_STORE_URI",
    }  # fmt: skip
    for (name, key), url in urls.items():
        parts = urlsplit(url)
        assert parts.scheme == "postgresql+psycopg", (name, key)
        assert (parts.hostname, parts.port, parts.password) == ("postgres", 5432, "pg-secret"), (name, key)
        assert parts.path.lstrip("/") in DATABASES, (name, key)


def test_external_ray_override(tmp_path: Path) -> None:
    extra = "AUTOFT_RAY_ADDRESS=10.0.0.5:6379\nAUTOFT_SHARED_DATA_DIR=/mnt/shared/autoft\n"
    merged = load_compose(dotenv(tmp_path, TEST_DOTENV + extra), COMPOSE_FILE, EXTERNAL_RAY_OVERRIDE)
    PyCompose.from_json(json.dumps(merged)).validate()
    runner = merged["services"]["runner"]
    assert runner["network_mode"] == "host"
    assert runner["environment"]["AUTOFT_RAY_ADDRESS"] == "10.0.0.5:6379"
    assert runner["environment"]["AUTOFT_DATA_DIR"] == "/mnt/shared/autoft"
    assert ("/mnt/shared/autoft", "/mnt/shared/autoft") in set(mounts(runner))
    for name, svc in merged["services"].items():
        assert all(ip == "127.0.0.1" for ip, _, _ in published_ports(svc)), name
    with pytest.raises(ValueError, match=r"set AUTOFT_SHARED_DATA_DIR in \.env"):
        load_compose(dotenv(tmp_path, TEST_DOTENV), COMPOSE_FILE, EXTERNAL_RAY_OVERRIDE)


# Dockerfile ---------------------------------------------------------------------------------------------------
def test_dockerfile_installs_torch_first_and_runs_as_a_user() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    code = [ln for ln in lines if ln and not ln.startswith("#")]
    # The base is a build arg (scripts/stack_images.sh builds one without a registry); registry users get
    # python:3.11-slim as before.
    assert code[:2] == ["ARG BASE_IMAGE=python:3.11-slim", "FROM ${BASE_IMAGE}"]
    assert 'ARG TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"' in code and "ARG PIP_EXTRA_INDEX_URL=" in code
    # No default for the local index, find-links or CA: unset, pip uses PyPI and its own CA store.
    assert {"ARG PIP_INDEX_URL", "ARG PIP_FIND_LINKS", "ARG PIP_CERT"} <= set(code)
    torch_at = code.index("RUN pip install $TORCH_SPEC")
    project_at = next(i for i, ln in enumerate(code) if "pip install --no-deps ." in ln)
    deps_at = next(i for i, ln in enumerate(code) if "pip install -r /tmp/requirements.txt" in ln)
    assert torch_at < deps_at < project_at
    assert not re.search(r"https?://", "\n".join(code)), "no index host is hard-coded"
    user = [ln.split()[1] for ln in code if ln.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")
    # The build context is a whitelist: .env (secrets), .venv and .git never reach the builder.
    ignored = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    assert "*" in ignored and not any(p.startswith(("!.env", "!.venv", "!.git")) for p in ignored)
    # The build-time CA folder reaches the builder, but git holds no certificate in it.
    assert "!deploy/build-ca" in ignored and "COPY deploy/build-ca/ /tmp/build-ca/" in code
    tracked = subprocess.run(
        ["git", "ls-files", "deploy/build-ca"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked and all(Path(f).suffix not in (".crt", ".pem") for f in tracked)


# Local images (no registry): deploy/compose.local.yml and scripts/stack_images.sh ------------------------------
def test_local_override_swaps_in_the_debian_built_images_and_leaves_grafana_out(env: dict[str, str | None]) -> None:
    merged = load_compose(env, COMPOSE_FILE, LOCAL_OVERRIDE)
    PyCompose.from_json(json.dumps(merged)).validate()
    s = merged["services"]
    built = re.search(r"for spec in ([^;]+);", STACK_IMAGES.read_text())
    assert built, "scripts/stack_images.sh no longer lists the images it builds"
    tags = {f"autoft-local/{spec}" for spec in built.group(1).split()}
    assert {s["postgres"]["image"], s["prometheus"]["image"]} <= tags
    assert "autoft-local/python:3.11" in tags
    assert set(active(merged, "cpu")) == PROFILE_SERVICES["cpu"] - {"grafana"}
    assert s["grafana"]["profiles"] == ["grafana"]
    for name in set(s) - {"postgres", "prometheus", "grafana"}:  # nothing else changes
        assert s[name] == load_compose(env, COMPOSE_FILE)["services"][name], name
    for name in ("postgres", "prometheus"):
        assert (ROOT / "deploy" / "local" / f"{name}.Dockerfile").is_file()


def test_compose_1_29_copy_drops_only_the_keys_it_rejects(env: dict[str, str | None], tmp_path: Path) -> None:
    """scripts/stack_smoke.sh runs Debian's Compose 1.29 from a copy without `name` and `depends_on.required`."""
    sed = re.search(r"sed (-e '[^']+' -e '[^']+')", STACK_SMOKE.read_text())
    assert sed, "scripts/stack_smoke.sh no longer makes the Compose 1.29 copy"
    copy = tmp_path / "docker-compose.yml"
    copy.write_text(subprocess.run(
        f"sed {sed.group(1)} {COMPOSE_FILE}", shell=True, capture_output=True, text=True, check=True
    ).stdout)  # fmt: skip
    original, copied = load_compose(env, COMPOSE_FILE), load_compose(env, copy)
    assert "name" in original and "name" not in copied
    del original["name"]
    del original["services"]["runner"]["depends_on"]["ray-head"]["required"]
    assert copied == original


# Prometheus and Grafana ---------------------------------------------------------------------------------------
def test_prometheus_scrapes_compose_services_on_their_metrics_ports(compose: dict[str, Any]) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    s = compose["services"]
    assert mount_target(s["prometheus"], PROMETHEUS_CONFIG) == "/etc/prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in s["prometheus"]["command"]
    ports = {
        "api": int(command_flag(s["api"]["command"], "--port")),
        **{
            n: int(command_flag(s[n]["command"], "--metrics-export-port"))
            for n in ("ray-head", "ray-worker", "ray-worker-cpu")
        },
    }
    scraped: set[str] = set()
    for job in config["scrape_configs"]:
        targets = [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        targets += [f"{n}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for n in sd["names"]]
        for target in targets:
            host, port = target.rsplit(":", 1)
            assert host in s, f"{job['job_name']} scrapes {host}, not a compose service"
            assert ports.get(host) == int(port), f"{target}: not that service's metrics port"
            scraped.add(host)
    assert scraped == set(ports)
    api_job = next(job for job in config["scrape_configs"] if job["job_name"] == "autoft-api")
    assert api_job["metrics_path"] == "/metrics"


def test_grafana_provisions_the_datasource_and_the_dashboards_folder(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    assert mount_target(grafana, GRAFANA_PROVISIONING) == "/etc/grafana/provisioning"
    dashboards_path = mount_target(grafana, DASHBOARDS_DIR)
    providers = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "autoft.yml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == [dashboards_path]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_path + "/") and (DASHBOARDS_DIR / Path(home).name).is_file()

    datasources = yaml.safe_load((GRAFANA_PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (ds,) = datasources["datasources"]
    url = urlsplit(ds["url"])
    assert (ds["type"], url.hostname, url.port) == ("prometheus", "prometheus", 9090)
    assert url.hostname in compose["services"]
    for dashboard in dashboard_files():
        for panel in panels(json.loads(dashboard.read_text())):
            for obj in (panel, *panel.get("targets", [])):
                if "datasource" in obj:
                    assert obj["datasource"] == {"type": "prometheus", "uid": ds["uid"]}, panel["title"]


# Dashboards ---------------------------------------------------------------------------------------------------
def dashboard_files() -> list[Path]:
    files = sorted(DASHBOARDS_DIR.glob("*.json"))
    assert files, "no dashboard in dashboards/"
    return files


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of every dashboard."""
    return [
        (panel["title"], target["expr"])
        for f in dashboard_files()
        for panel in panels(json.loads(f.read_text()))
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def parse_promql(expr: str) -> promql_parser.Expr:
    return promql_parser.parse(GRAFANA_VARIABLES.sub("5m", expr))


def nodes(expr: promql_parser.Expr, kind: type) -> list[Any]:
    found: list[Any] = []
    promql_parser.walk(expr, pre_visit=lambda n: found.append(n) if isinstance(n, kind) else None)
    return found


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, set[str]]]:
    """What the API's /metrics exports: series name → label name → label values seen."""
    tmp = tmp_path_factory.mktemp("metrics")
    store = JobStore(f"sqlite:///{tmp / 'autoft.db'}")
    store.init_db()
    try:
        app = create_app(settings=Settings(data_dir=tmp, environment="test"), store=store)
        with TestClient(app) as client:
            assert client.get("/healthz").status_code == 200  # so that the HTTP series exist
            response = client.get("/metrics")
        assert response.status_code == 200
    finally:
        store.close()
    series: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(response.text):
        for name in {family.name, *(s.name for s in family.samples)}:
            labels = series.setdefault(name, {})
            for sample in family.samples:
                for key, value in sample.labels.items():
                    labels.setdefault(key, set()).add(value)
    return series


def test_every_dashboard_query_parses_and_uses_known_metrics(
    exported: dict[str, dict[str, set[str]]],
) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 12
    used: set[str] = set()
    for title, expr in queries:
        for selector in nodes(parse_promql(expr), promql_parser.VectorSelector):
            name = selector.name
            base = next((name[: -len(x)] for x in HISTOGRAM_SUFFIXES if name.endswith(x)), name)
            base = base if base in exported else name
            used.add(base)
            assert base in exported or name in RAY_METRICS, f"{title}: {name} is neither exported nor Ray's"
            if name in RAY_METRICS:
                continue
            for m in selector.matchers.matchers:  # label names and values the API really exports
                assert m.name in exported[name], f"{title}: {name} has no label {m.name}"
                if m.op in (promql_parser.MatchOp.Equal, promql_parser.MatchOp.Re) and m.name == "state":
                    assert set(m.value.split("|")) <= exported[name][m.name], f"{title}: {m.value}"
    assert not RAY_METRICS - used, f"unused entries of RAY_METRICS: {sorted(RAY_METRICS - used)}"
    for metric in (
        "autoft_jobs_by_state", "autoft_trials_by_state", "autoft_trial_duration_seconds",
        "autoft_queue_wait_seconds", "autoft_http_requests_total", "autoft_http_request_duration_seconds",
    ):  # fmt: skip
        assert metric in used, f"no panel shows {metric}"


def test_dashboard_aggregations_group_by_exported_labels(exported: dict[str, dict[str, set[str]]]) -> None:
    for title, expr in dashboard_queries():
        for agg in nodes(parse_promql(expr), promql_parser.AggregateExpr):
            names = [s.name for s in nodes(agg.expr, promql_parser.VectorSelector)]
            if agg.modifier is None or any(n in RAY_METRICS for n in names):
                continue
            labels = set().union(*(exported[n] for n in names))
            assert set(agg.modifier.labels) <= labels, f"{title}: by {agg.modifier.labels} of {names}"


def test_ray_metrics_are_known_to_the_installed_ray() -> None:
    import ray

    # Ray's own Grafana panels: the reference of the names its metrics agent exports.
    panels_dir = Path(ray.__file__).parent / "dashboard" / "modules" / "metrics" / "dashboards"
    source = "\n".join(p.read_text() for p in panels_dir.glob("*_panels.py"))
    for name in RAY_METRICS:
        assert re.search(rf"\b{name}\b", source), f"{name} is not a metric of ray {ray.__version__}"
