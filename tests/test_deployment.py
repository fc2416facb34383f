"""The production stack as files: docker-compose.yml and the Dockerfile agree with the code.

No Docker engine runs here, so these read the files: every service is there with its image,
ports, healthcheck and start order; every JOBGATE_* variable the stack sets is one the settings
read, with a URL scheme core/backends.py opens; and every command the image and the stack run is
installed here. `docker compose config` validates the file too where the plugin exists."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from jobgate.cli._parser import PLUGIN_GROUP, build_parser

from core import backends
from core.settings import ENV_PREFIX, PROVIDER_NAMES, Settings
from launcher.embedded import Endpoint

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
RABBITMQ_CONF = REPO / "deploy" / "rabbitmq.conf"
JOBGATE_BIN = Path(sys.executable).parent / "jobgate"

BACKING_SERVICES = ("rabbitmq", "mongo", "postgres", "minio")
JOBGATE_SERVICES = ("server", "worker")
ONE_SHOT_SERVICES = ("minio-init",)
GRPC_PORT = 50051
# Settings the stack has no use for: the local blob store's HTTP server (the stack uses S3), and
# the providers' base URLs and timeouts (the stack uses their public APIs and defaults).
UNUSED_SETTINGS = {
    "JOBGATE_BLOB_HTTP_LISTEN",
    *(
        f"JOBGATE_{name.upper()}_{knob}"
        for name in PROVIDER_NAMES
        for knob in ("BASE_URL", "TIMEOUT_SECONDS")
    ),
}
# Each URL setting and the scheme tables core/backends.py opens it with.
URL_SETTINGS = {
    "JOBGATE_JOB_STORE_URL": (backends.JOB_STORES,),
    "JOBGATE_ACCOUNT_STORE_URL": (backends.ACCOUNT_STORES,),
    "JOBGATE_BROKER_URL": (backends.BROKERS, backends.EVENT_BUSES),
    "JOBGATE_BLOB_STORE_URL": (backends.BLOB_STORES,),
}
# Compose interpolation: $$ is a dollar; ${NAME}, ${NAME:-default} and ${NAME-default}.
INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


def interpolated(value: str) -> str:
    """`value` as compose sees it on a machine with no .env: every variable at its default."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return match["default"] or ""

    return INTERPOLATION.sub(replace, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's container environment, interpolated with defaults."""
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: interpolated(str(value)) for name, value in env.items()}


def command_argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


def healthcheck_argv(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    return [str(arg) for arg in test]


class RecordingEnv(Mapping[str, str]):
    """An empty environment that remembers every variable asked of it."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def variables_the_settings_read() -> set[str]:
    env = RecordingEnv()
    Settings.from_env(env)
    return {name for name in env.asked if name.startswith(ENV_PREFIX)}


# --- the services ------------------------------------------------------------------------------


def test_the_stack_has_every_service_with_an_image_or_a_build(
    services: dict[str, dict[str, Any]],
) -> None:
    assert set(services) >= {*BACKING_SERVICES, *JOBGATE_SERVICES, *ONE_SHOT_SERVICES}
    for name in (*BACKING_SERVICES, *ONE_SHOT_SERVICES):
        image = services[name]["image"]
        # A pinned tag: `latest` or none would change the stack under its users.
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), (name, image)
        assert not image.endswith(":latest"), (name, image)
    for name in JOBGATE_SERVICES:
        assert services[name]["build"] in (".", {"context": "."}), name
    # One image for both: a worker runs exactly the code the server runs.
    assert services["server"]["image"] == services["worker"]["image"]


def test_rabbitmq_has_its_management_ui_and_a_timeout_for_long_jobs(
    services: dict[str, dict[str, Any]],
) -> None:
    rabbitmq = services["rabbitmq"]
    assert re.fullmatch(r"rabbitmq:3[.\d]*-management", rabbitmq["image"])
    assert any(port.endswith(":15672") for port in rabbitmq["ports"])
    mounted = {volume.split(":")[1]: volume.split(":")[0] for volume in rabbitmq["volumes"]}
    conf = next(source for target, source in mounted.items() if target.endswith(".conf"))
    assert (REPO / conf).resolve() == RABBITMQ_CONF
    timeout = re.search(r"^consumer_timeout\s*=\s*(\d+)$", RABBITMQ_CONF.read_text(), re.M)
    assert timeout is not None
    assert int(timeout[1]) >= 3_600_000, "long jobs hold a delivery for more than an hour"


def test_the_server_publishes_the_grpc_port_it_listens_on(
    services: dict[str, dict[str, Any]],
) -> None:
    server = services["server"]
    assert f"{GRPC_PORT}:{GRPC_PORT}" in server["ports"]
    listen = environment(server)["JOBGATE_LISTEN"]
    assert listen == f"0.0.0.0:{GRPC_PORT}", "reachable from other containers"


def test_workers_scale_they_have_no_fixed_name_and_no_host_port(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert command_argv(worker["command"]) == ["jobgate", "worker"]


def test_every_long_running_service_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in (*BACKING_SERVICES, *JOBGATE_SERVICES):
        check = services[name].get("healthcheck")
        assert check and not check.get("disable"), name
        assert healthcheck_argv(services[name])[0] in ("CMD", "CMD-SHELL"), name
    assert healthcheck_argv(services["rabbitmq"])[1:] == ["rabbitmq-diagnostics", "-q", "ping"]
    assert healthcheck_argv(services["postgres"])[1] == "pg_isready"
    assert healthcheck_argv(services["server"])[1:3] == ["jobgate", "health"]
    assert healthcheck_argv(services["worker"])[1:] == ["jobgate", "health", "--broker"]


def test_jobgate_starts_only_after_its_backends_are_ready(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in JOBGATE_SERVICES:
        conditions = {
            dependency: rule["condition"]
            for dependency, rule in services[name]["depends_on"].items()
        }
        assert conditions == {
            "rabbitmq": "service_healthy",
            "mongo": "service_healthy",
            "postgres": "service_healthy",
            "minio-init": "service_completed_successfully",
        }, name
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_the_bind_mounted_files_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).is_file(), (name, source)


# --- the environment the server and workers get ---------------------------------------------


def test_every_jobgate_variable_is_one_the_settings_read(
    services: dict[str, dict[str, Any]],
) -> None:
    known = variables_the_settings_read()
    assert "JOBGATE_BROKER_URL" in known  # the recording saw the settings' reads
    for name in JOBGATE_SERVICES:
        unknown = {var for var in environment(services[name]) if var.startswith(ENV_PREFIX)}
        assert unknown - known == set(), f"{name} sets variables jobgate never reads"


def test_the_stack_sets_every_setting_it_uses(services: dict[str, dict[str, Any]]) -> None:
    wired = {var for name in JOBGATE_SERVICES for var in environment(services[name])}
    missing = variables_the_settings_read() - UNUSED_SETTINGS - wired
    assert missing == set(), "new settings belong in docker-compose.yml (x-jobgate-env)"


def test_server_and_workers_share_one_environment(compose: dict[str, Any]) -> None:
    shared = compose["x-jobgate-env"]
    for name in JOBGATE_SERVICES:
        env = compose["services"][name]["environment"]
        assert {key: env[key] for key in shared} == shared, name


def test_the_environment_makes_valid_settings_with_production_backends(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in JOBGATE_SERVICES:
        env = environment(services[name])
        settings = Settings.from_env(env)
        for var, tables in URL_SETTINGS.items():
            value = getattr(settings, var.removeprefix(ENV_PREFIX).lower())
            assert value == env[var], f"{name}: {var} must be set, not defaulted"
            scheme = urlsplit(value).scheme
            for table in tables:
                assert scheme in table, f"{name}: {var}={value!r}: core/backends.py has no {scheme}"
        # Nothing embedded in a stack whose processes run in separate containers.
        assert urlsplit(settings.broker_url).scheme != "memory"
        assert urlsplit(settings.blob_store_url).scheme != "file"


def test_the_urls_name_the_services_and_credentials_the_stack_creates(
    services: dict[str, dict[str, Any]],
) -> None:
    env = environment(services["server"])
    jobs = urlsplit(env["JOBGATE_JOB_STORE_URL"])
    assert jobs.hostname == "mongo"
    replica_set = parse_qs(jobs.query)["replicaSet"][0]
    assert ["--replSet", replica_set] == command_argv(services["mongo"]["command"])[:2]

    accounts = urlsplit(env["JOBGATE_ACCOUNT_STORE_URL"])
    postgres = environment(services["postgres"])
    assert accounts.hostname == "postgres"
    assert accounts.username == postgres["POSTGRES_USER"]
    assert accounts.password == postgres["POSTGRES_PASSWORD"]
    assert accounts.path == "/" + postgres["POSTGRES_DB"]

    broker = urlsplit(env["JOBGATE_BROKER_URL"])
    rabbitmq = environment(services["rabbitmq"])
    assert broker.hostname == "rabbitmq"
    assert (broker.username, broker.password) == (
        rabbitmq["RABBITMQ_DEFAULT_USER"],
        rabbitmq["RABBITMQ_DEFAULT_PASS"],
    )

    bucket = urlsplit(env["JOBGATE_BLOB_STORE_URL"]).netloc
    init = " ".join(command_argv(services["minio-init"]["command"]))
    assert re.search(rf"mc mb --ignore-existing \w+/{re.escape(bucket)}\b", init)
    assert urlsplit(env["JOBGATE_S3_ENDPOINT_URL"]).hostname == "minio"


# --- the image ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON array of CMD/HEALTHCHECK CMD, after any options."""
        array = self.arguments[self.arguments.index("[") :]
        decoded: list[str] = json.loads(array)
        return decoded


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions by stage (continuation lines joined, comments dropped)."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", DOCKERFILE.read_text())
    stages: list[list[Instruction]] = [[]]
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, arguments = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), " ".join(arguments.split())))
    return stages


def final_stage() -> list[Instruction]:
    return dockerfile_stages()[-1]


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [instruction for instruction in stage if instruction.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {found}"
    return found[0]


def test_the_image_is_multi_stage_on_slim_python() -> None:
    preamble, *stages = dockerfile_stages()
    assert len(stages) >= 2, "a builder stage keeps build tools out of the runtime image"
    arguments = {
        name: default
        for instruction in preamble
        if instruction.keyword == "ARG"
        for name, _, default in [instruction.arguments.partition("=")]
    }
    base = stages[-1][0].arguments.split()[0]
    base = re.sub(r"\$\{(\w+)\}", lambda match: arguments[match[1]], base)
    assert base == "python:3.11-slim"


def test_the_image_runs_as_a_user_that_is_not_root() -> None:
    user = only(final_stage(), "USER").arguments
    assert user.split(":")[0] not in ("root", "0")


def test_the_image_installs_the_packages_without_dev_extras_or_compilers() -> None:
    builder = dockerfile_stages()[1]
    installs = [i.arguments for i in builder if i.keyword == "RUN" and "pip install" in i.arguments]
    assert installs, "the builder installs jobgate with pip"
    for command in installs:
        assert "-e " not in command and "--editable" not in command
        assert "[dev]" not in command
    runtime = " ".join(i.arguments for i in final_stage() if i.keyword == "RUN")
    for tool in ("gcc", "build-essential", "g++", "make"):
        assert not re.search(rf"\b{re.escape(tool)}\b", runtime), tool


def test_the_image_serves_grpc_and_checks_its_health_through_grpc_health() -> None:
    stage = final_stage()
    assert only(stage, "EXPOSE").arguments == str(GRPC_PORT)
    healthcheck = only(stage, "HEALTHCHECK")
    assert healthcheck.exec_form()[:2] == ["jobgate", "health"]
    assert only(stage, "CMD").exec_form() == ["jobgate", "server"]


def commands_the_stack_runs(services: dict[str, dict[str, Any]]) -> list[list[str]]:
    stage = final_stage()
    commands = [only(stage, "CMD").exec_form(), only(stage, "HEALTHCHECK").exec_form()]
    for name in JOBGATE_SERVICES:
        commands.append(command_argv(services[name]["command"]))
        commands.append(healthcheck_argv(services[name])[1:])
    return commands


def test_every_command_the_image_runs_is_installed_here(
    services: dict[str, dict[str, Any]],
) -> None:
    scripts = entry_points(group="console_scripts", name="jobgate")
    assert len(scripts) == 1, "the `jobgate` console script is installed"
    plugins = {entry.name: entry for entry in entry_points(group=PLUGIN_GROUP)}
    parser = build_parser()
    for argv in commands_the_stack_runs(services):
        program, command, *_ = argv
        assert program == "jobgate", argv
        assert command in plugins, f"`jobgate {command}` is no {PLUGIN_GROUP} entry point"
        assert plugins[command].dist is not None
        assert plugins[command].dist.name == "jobgate", "the service package provides it"
        # The options too: argparse exits on any it does not know.
        assert callable(parser.parse_args(argv[1:]).func), argv


# --- the health command the healthchecks run ---------------------------------------------------


@pytest.fixture
def job_store_url() -> str:
    """One embedded service is enough here, not one per job store."""
    return ""


async def run_jobgate(*args: str, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(JOBGATE_BIN), *args, env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_the_health_command_passes_while_the_server_serves(endpoint: Endpoint) -> None:
    assert await run_jobgate("health", endpoint.address) == (0, "")


async def test_the_health_command_fails_in_one_line_when_nothing_answers() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"
    code, stderr = await run_jobgate("health", address, "--timeout", "2")
    assert code == 1
    assert stderr.startswith(f"jobgate health: {address}: UNAVAILABLE")
    assert stderr.count("\n") == 1


async def test_the_worker_health_command_follows_its_broker_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as broker:
        url = f"amqp://jobgate:secret@127.0.0.1:{broker.getsockname()[1]}/"
        env = {"JOBGATE_BROKER_URL": url}
        assert (await run_jobgate("health", "--broker", env=env))[0] == 1
        with socket.create_connection(broker.getsockname()):
            assert await run_jobgate("health", "--broker", env=env) == (0, "")


# --- docker compose itself, where it is installed -----------------------------------------------


def compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, timeout=30, check=False
    )
    return [docker, "compose"] if probe.returncode == 0 else None


def test_docker_compose_accepts_the_file() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("the docker compose plugin is not installed")
    result = subprocess.run(
        [*command, "--file", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
