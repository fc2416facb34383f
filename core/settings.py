"""jobgate's one settings object, built from JOBGATE_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigError

ENV_PREFIX = "JOBGATE_"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "jobgate"


@dataclass(frozen=True)
class ProviderConfig:
    """One AI provider's credentials and where it is. Secrets never show in a repr, a log line
    or an error message."""

    api_key: str = field(default="", repr=False)
    # Kling signs its JWTs with a secret beside the access key (api_key).
    secret_key: str = field(default="", repr=False)
    base_url: str = ""  # empty: the provider's public API
    timeout_seconds: float = 0.0  # per HTTP request; 0: the provider module's default

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.api_key, self.secret_key) if s)


# The providers configured by JOBGATE_{NAME}_API_KEY (or _API_KEY_FILE), _BASE_URL and
# _TIMEOUT_SECONDS; those signing with a second secret (Kling) also by _SECRET_KEY (or
# _SECRET_KEY_FILE).
PROVIDER_NAMES = ("openai", "gemini", "kling", "replicate", "stability")
PROVIDERS_WITH_SECRET_KEY = ("kling",)


@dataclass(frozen=True)
class Settings:
    """Every knob, with the embedded defaults: one process, everything under `data_dir`."""

    data_dir: Path
    listen: str = "127.0.0.1:50051"
    job_store_url: str = ""
    account_store_url: str = ""
    broker_url: str = "memory://"
    blob_store_url: str = ""
    blob_http_listen: str = "127.0.0.1:50052"
    worker_concurrency: int = 16
    worker_models: tuple[str, ...] = ()
    keepalive_seconds: float = 15.0
    max_request_bytes: int = 1024 * 1024
    download_url_ttl_seconds: int = 900
    upload_max_bytes: int = 64 * 1024 * 1024
    upload_url_ttl_seconds: int = 900
    # Used by an s3:// blob store; credentials left empty come from AWS_* and boto3's chain.
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = field(default="", repr=False)
    s3_create_bucket: bool = True
    # The endpoint callers reach, when it is not the one the processes use (e.g. MinIO inside
    # docker compose): download and upload URLs are signed for it.
    s3_public_endpoint_url: str = ""
    shutdown_grace_seconds: float = 10.0
    # A running attempt holds its job for this long, renewed by heartbeats: a second message for
    # the job waits instead of starting it twice; a dead worker's job restarts after it.
    job_lease_seconds: float = 30.0
    # A worker holding a delivery this long hands it off (a delayed copy, the original acked),
    # staying under the broker's consumer_timeout (RabbitMQ's default is 1,800 s).
    broker_handoff_seconds: float = 600.0
    # Attempts per job when its provider fails unexpectedly; also the quorum delivery limit.
    max_attempts: int = 5
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    # Used by an amqp:// broker.
    rabbitmq_queue_type: str = "quorum"
    rabbitmq_prefix: str = "jobgate"
    # By provider name (see PROVIDER_NAMES); a provider without an API key serves nothing.
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict, repr=False)

    def provider(self, name: str) -> ProviderConfig:
        return self.providers.get(name, ProviderConfig())

    def __post_init__(self) -> None:
        # Store URLs left empty default to files under data_dir.
        defaults = {
            "job_store_url": f"sqlite:///{self.data_dir / 'jobs.db'}",
            "account_store_url": f"sqlite:///{self.data_dir / 'accounts.db'}",
            "blob_store_url": f"file://{self.data_dir / 'blobs'}",
        }
        for name, value in defaults.items():
            if not getattr(self, name):
                object.__setattr__(self, name, value)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        data_dir = env.get(ENV_PREFIX + "DATA_DIR")
        values["data_dir"] = (
            Path(data_dir).expanduser() if data_dir else _default_data_dir()
        ).resolve()
        for name in (
            "listen",
            "job_store_url",
            "account_store_url",
            "broker_url",
            "blob_store_url",
            "blob_http_listen",
            "s3_endpoint_url",
            "s3_region",
            "s3_access_key_id",
            "s3_secret_access_key",
            "s3_public_endpoint_url",
            "rabbitmq_prefix",
        ):
            if (value := env.get(_var(name))) is not None:
                values[name] = value
        for name, kind in (
            ("worker_concurrency", int),
            ("keepalive_seconds", float),
            ("max_request_bytes", int),
            ("download_url_ttl_seconds", int),
            ("upload_max_bytes", int),
            ("upload_url_ttl_seconds", int),
            ("shutdown_grace_seconds", float),
            ("job_lease_seconds", float),
            ("broker_handoff_seconds", float),
            ("max_attempts", int),
            ("retry_base_seconds", float),
            ("retry_max_seconds", float),
        ):
            if (value := env.get(_var(name))) is not None:
                values[name] = _number(name, value, kind)
        if models := env.get(_var("worker_models")):
            values["worker_models"] = tuple(m.strip() for m in models.split(",") if m.strip())
        if (value := env.get(_var("rabbitmq_queue_type"))) is not None:
            if value not in ("quorum", "classic"):
                raise ConfigError(
                    f"{_var('rabbitmq_queue_type')}={value!r}: expected quorum or classic"
                )
            values["rabbitmq_queue_type"] = value
        if (value := env.get(_var("s3_create_bucket"))) is not None:
            values["s3_create_bucket"] = _flag("s3_create_bucket", value)
        values["providers"] = {name: _provider_config(env, name) for name in PROVIDER_NAMES}
        return cls(**values)  # type: ignore[arg-type]


def _provider_config(env: Mapping[str, str], name: str) -> ProviderConfig:
    timeout = env.get(_var(f"{name}_timeout_seconds"))
    return ProviderConfig(
        api_key=_secret(env, f"{name}_api_key"),
        secret_key=_secret(env, f"{name}_secret_key") if name in PROVIDERS_WITH_SECRET_KEY else "",
        base_url=env.get(_var(f"{name}_base_url"), "").rstrip("/"),
        timeout_seconds=(
            float(_number(f"{name}_timeout_seconds", timeout, float)) if timeout else 0.0
        ),
    )


def _secret(env: Mapping[str, str], name: str) -> str:
    """The secret in JOBGATE_{NAME}, or in the file JOBGATE_{NAME}_FILE names (a mounted
    secret); both set is a mistake worth stopping for. Errors name the variable, never the
    value."""
    value, path = env.get(_var(name), ""), env.get(_var(name + "_file"), "")
    if value and path:
        raise ConfigError(f"set {_var(name)} or {_var(name + '_file')}, not both")
    if not path:
        return value.strip()
    try:
        secret = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{_var(name + '_file')}={path!r}: cannot read it: {type(exc).__name__}"
        ) from None
    if not secret:
        raise ConfigError(f"{_var(name + '_file')}={path!r} is empty")
    return secret


def _var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{_var(name)}={value!r} is not true or false")


def _number(name: str, value: str, kind: type[int] | type[float]) -> int | float:
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{_var(name)}={value!r} is not a {kind.__name__}") from None
    if number <= 0:
        raise ConfigError(f"{_var(name)}={value!r} must be positive")
    return number
