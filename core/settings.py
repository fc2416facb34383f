"""jobgate's one settings object, built from JOBGATE_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigError

ENV_PREFIX = "JOBGATE_"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "jobgate"


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
    shutdown_grace_seconds: float = 10.0

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
        ):
            if (value := env.get(_var(name))) is not None:
                values[name] = value
        for name, kind in (
            ("worker_concurrency", int),
            ("keepalive_seconds", float),
            ("max_request_bytes", int),
            ("download_url_ttl_seconds", int),
            ("shutdown_grace_seconds", float),
        ):
            if (value := env.get(_var(name))) is not None:
                values[name] = _number(name, value, kind)
        if models := env.get(_var("worker_models")):
            values["worker_models"] = tuple(m.strip() for m in models.split(",") if m.strip())
        return cls(**values)  # type: ignore[arg-type]


def _var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _number(name: str, value: str, kind: type[int] | type[float]) -> int | float:
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{_var(name)}={value!r} is not a {kind.__name__}") from None
    if number <= 0:
        raise ConfigError(f"{_var(name)}={value!r} must be positive")
    return number
