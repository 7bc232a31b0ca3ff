"""Static checks of the docker-compose stack (no Docker engine needed).

tests/data/compose-spec.json is the Compose Specification JSON schema ("compose_spec.json",
draft 2019-09) as shipped in the PyPI wheel docker-compose==1.29.2
(docker_compose-1.29.2-py2.py3-none-any.whl, path compose/config/compose_spec.json), copied
unchanged (sha256 0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac).
Copyright The Compose Specification Authors / Docker, Inc., Apache License 2.0.
It predates a few newer keys (top-level `name`, healthcheck `start_interval`): the stack
avoids them, so it validates against this and newer schemas.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"
SERVICES = ("postgres", "mlflow", "ray-head", "ray-worker")

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}; $$ is a literal $.
VAR_RE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
SECRET_KEY_RE = re.compile(r"(PASSWORD|TOKEN|SECRET|ACCESS_KEY|API_KEY)$", re.IGNORECASE)
ONLY_VAR_RE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[?][^}]*)?\}$")


@pytest.fixture(scope="module")
def text() -> str:
    return COMPOSE.read_text()


@pytest.fixture(scope="module")
def compose(text) -> dict:
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def env_of(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def command_of(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def published_ports(service: dict) -> list[str | dict]:
    """Ports with ${VAR:-default} replaced by the default (what compose does with no .env)."""
    return [interpolate(p) if isinstance(p, str) else p for p in service.get("ports") or []]


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    env = env or {}

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        if name in env and (env[name] or op not in (":-", ":?")):
            return env[name]
        if op in (":-", "-"):
            return arg
        return f"<{name}>"

    return VAR_RE.sub(sub, value).replace("$$", "$")


# --- the Compose Specification --------------------------------------------------------------


def test_schema_is_the_vendored_compose_spec():
    schema = json.loads(SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    assert "service" in schema["definitions"] and "deployment" in schema["definitions"]


def test_compose_file_validates_against_compose_spec(compose):
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    errors = sorted(cls(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_interpolated_compose_file_validates(text):
    """After substituting defaults (and placeholders for secrets) the file is still valid."""
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    resolved = yaml.safe_load(interpolate(text, {"RAY_WORKER_GPUS": "1"}))
    assert not list(validator.iter_errors(resolved))
    assert (
        resolved["services"]["ray-worker"]["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1
    )


def test_schema_rejects_a_broken_file(compose):
    """The validation above can fail: an unknown key and a boolean env value are errors."""
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    broken = json.loads(json.dumps(compose))
    broken["services"]["mlflow"]["helthcheck"] = {}
    broken["services"]["mlflow"]["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = False
    assert len(list(validator.iter_errors(broken))) >= 2


# --- the project's expectations -------------------------------------------------------------


def test_the_four_services_exist(services):
    assert set(SERVICES) <= set(services)


def test_images(services):
    assert services["postgres"]["image"] == "postgres:16"
    assert services["mlflow"]["image"] == "ghcr.io/mlflow/mlflow:v3.17.2-full"
    for name in ("ray-head", "ray-worker"):
        assert services[name]["build"]["context"] == "."
        assert services[name]["image"].startswith("scalelab:")
        assert services[name]["init"] is True
        assert services[name].get("shm_size"), name


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_has_a_healthcheck(services, name):
    hc = services[name].get("healthcheck")
    assert hc and not hc.get("disable"), name
    test = hc["test"]
    assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL"), name


def test_healthchecks_probe_the_right_endpoints(services):
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert ":5000/health" in " ".join(services["mlflow"]["healthcheck"]["test"])
    assert ":8265/api/gcs_healthz" in " ".join(services["ray-head"]["healthcheck"]["test"])


def test_dependencies_wait_for_health(services):
    expected = {"mlflow": {"postgres"}, "ray-head": {"postgres", "mlflow"}, "ray-worker": {"ray-head"}}
    for name, needs in expected.items():
        deps = services[name].get("depends_on")
        assert isinstance(deps, dict), f"{name}: depends_on must use the long form with conditions"
        assert needs <= set(deps), name
        for dep, spec in deps.items():
            assert spec.get("condition") == "service_healthy", f"{name} -> {dep}"


def test_worker_reserves_nvidia_gpus(services):
    worker = services["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    gpu = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]
    assert gpu, devices
    count = str(gpu[0].get("count", ""))
    m = VAR_RE.fullmatch(count)
    assert m and m.group(2) == ":-" and m.group(3) in ("all", "1"), (
        f"GPU count must be configurable via env with a default of all or 1, got {count!r}"
    )


def test_worker_is_scalable(services):
    worker = services["ray-worker"]
    assert "container_name" not in worker and "hostname" not in worker
    assert not published_ports(worker), "fixed host ports clash under --scale"


def _host_ip(port) -> str | None:
    if isinstance(port, dict):
        return port.get("host_ip")
    parts = str(port).split(":")
    if len(parts) < 3:  # "5000" or "5000:5000": all interfaces
        return None
    return ":".join(parts[:-2]).strip("[]")


@pytest.mark.parametrize("name", SERVICES)
def test_published_ports_bind_loopback_only(services, name):
    for port in published_ports(services[name]):
        host_ip = _host_ip(port)
        assert host_ip in ("127.0.0.1", "::1"), f"{name}: {port!r} must bind 127.0.0.1"


def test_expected_ports_are_published(services):
    ports = {str(p) for s in services.values() for p in published_ports(s)}
    for wanted in ("127.0.0.1:5000:5000", "127.0.0.1:8265:8265", "127.0.0.1:10001:10001"):
        assert wanted in ports


def test_port_check_catches_open_bindings():
    assert _host_ip(interpolate("${IP:-0.0.0.0}:5000:5000")) == "0.0.0.0"
    assert _host_ip("5000:5000") is None
    assert _host_ip("0.0.0.0:5000:5000") == "0.0.0.0"
    assert _host_ip("127.0.0.1:5000:5000") == "127.0.0.1"


def _secret_leaks(compose: dict) -> list[str]:
    leaks = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                p = f"{path}/{k}"
                if SECRET_KEY_RE.search(str(k)) and v is not None and not ONLY_VAR_RE.match(str(v)):
                    leaks.append(f"{p}={v!r}")
                walk(v, p)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif isinstance(node, str):
            # user:password@host in URIs: the password must be a ${VAR} reference
            for m in re.finditer(r"://[^/:@\s]+:([^@\s]+)@", node):
                if not ONLY_VAR_RE.match(m.group(1)):
                    leaks.append(f"{path}: {m.group(0)}")

    walk(compose, "")
    return leaks


def test_no_secret_literals(compose, text):
    assert not _secret_leaks(compose)
    assert "change-me" not in text


def test_secret_check_catches_literals(compose):
    bad = json.loads(json.dumps(compose))
    bad["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] = "hunter2"
    bad["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"] = "postgresql://u:hunter2@postgres/x"
    assert len(_secret_leaks(bad)) == 2


def test_ray_token_auth_on_every_ray_node(services):
    for name in ("ray-head", "ray-worker"):
        env = env_of(services[name])
        assert env.get("RAY_AUTH_MODE") == "token", name
        assert ONLY_VAR_RE.match(str(env.get("RAY_AUTH_TOKEN"))), name


def _flag(cmd: list[str], flag: str) -> str | None:
    for i, arg in enumerate(cmd):
        if arg == flag and i + 1 < len(cmd):
            return cmd[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def test_head_port_is_not_6379(services):
    head_port = _flag(command_of(services["ray-head"]), "--port")
    assert head_port and head_port != "6379"
    address = _flag(command_of(services["ray-worker"]), "--address")
    assert address == f"ray-head:{head_port}"
    assert _flag(command_of(services["ray-head"]), "--ray-client-server-port") == "10001"
    assert _flag(command_of(services["ray-head"]), "--dashboard-host") == "0.0.0.0"


def test_mlflow_is_lean_and_serves_artifacts(services):
    mlflow = services["mlflow"]
    cmd = command_of(mlflow)
    assert cmd[:2] == ["mlflow", "server"]
    assert _flag(cmd, "--workers") == "1"
    assert env_of(mlflow).get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION") == "false"
    assert "--serve-artifacts" in cmd
    dest = _flag(cmd, "--artifacts-destination")
    assert dest and any(v.split(":")[1] == dest for v in mlflow["volumes"] if ":" in v)
    backend = env_of(mlflow).get("MLFLOW_BACKEND_STORE_URI") or _flag(cmd, "--backend-store-uri")
    assert backend.startswith("postgresql") and "@postgres:5432/" in backend
    allowed = _flag(cmd, "--allowed-hosts")
    assert allowed and "mlflow:5000" in allowed.split(",")


def test_cluster_env_on_head_and_workers(services, compose):
    for name in ("ray-head", "ray-worker"):
        env = env_of(services[name])
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert env["SCALELAB_LEDGER_URI"].startswith("postgresql://")
        assert env["SCALELAB_LEDGER_URI"].endswith("@postgres:5432/scalelab")
        ckpt = env["SCALELAB_CHECKPOINT_DIR"]
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert mounts.get(ckpt) == "checkpoints", f"{name}: {ckpt} must be the shared volume"
    assert "checkpoints" in compose["volumes"]


def test_ledger_database_is_created_by_an_init_script(services):
    pg = services["postgres"]
    mounts = [v for v in pg["volumes"] if v.split(":")[1] == "/docker-entrypoint-initdb.d"]
    assert mounts, "init scripts must be mounted into /docker-entrypoint-initdb.d"
    init_dir = ROOT / mounts[0].split(":")[0]
    sql = " ".join(p.read_text() for p in sorted(init_dir.glob("*.sql")))
    assert re.search(r"CREATE DATABASE\s+scalelab\b", sql, re.IGNORECASE)
    assert any(v.split(":")[1] == "/var/lib/postgresql/data" for v in pg["volumes"])


def test_dockerfile_from_ray_2_60():
    dockerfile = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE | re.IGNORECASE)
    assert froms and froms[0].startswith("rayproject/ray:2.60.0"), froms
    assert "-py311" in froms[0]


def test_dockerignore_keeps_the_context_lean_and_secret_free():
    lines = {l.strip().rstrip("/") for l in (ROOT / ".dockerignore").read_text().splitlines()}
    for entry in (".venv", "scalelab-store", "reports", ".git", ".env"):
        assert entry in lines, entry


def _required_vars(text: str) -> set[str]:
    """Variables used without a default (${VAR}, ${VAR:?err}, ${VAR?err})."""
    return {m.group(1) for m in VAR_RE.finditer(text) if m.group(2) in (None, ":?", "?")}


def test_env_example_lists_every_required_variable(text):
    example = ROOT / ".env.example"
    assert example.exists()
    defined = set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", example.read_text(), re.MULTILINE))
    required = _required_vars(text)
    assert {"POSTGRES_PASSWORD", "RAY_AUTH_TOKEN"} <= required
    assert required <= defined, f"missing from .env.example: {sorted(required - defined)}"


def test_required_var_detection():
    assert _required_vars("a ${A} ${B:-x} ${C:?e} ${D-y} $${E} ${F?z}") == {"A", "C", "F"}


def test_cpu_override_only_drops_the_gpu_reservation():
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!reset", lambda loader, node: "!reset")
    override = yaml.load((ROOT / "docker" / "compose.cpu.yml").read_text(), Loader=Loader)
    assert override == {"services": {"ray-worker": {"deploy": "!reset"}}}


def test_node_entrypoint_script():
    script = (ROOT / "docker" / "ray-node.sh").read_text()
    assert script.startswith("#!/usr/bin/env bash")
    assert "exec ray start --head" in script and "--block" in script
    assert "RAY_AUTH_TOKEN" in script
