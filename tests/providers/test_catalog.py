"""The catalog of every provider's models, which of them a deployment serves, and the provider
settings: keys from the environment or secret files, never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.catalog import PriceUnit
from core.errors import ConfigError, FailedPrecondition, InvalidArgument, Reason
from core.jobs import JobInput
from core.providers.kling import KlingProvider
from core.providers.local import LocalProvider
from core.providers.openai import OpenAIProvider
from core.providers.openai_video import OpenAIVideoProvider
from core.providers.registry import (
    REMOTE_PROVIDERS,
    ProviderRegistry,
    all_models,
    builtin_registry,
    check_fallback,
)
from core.settings import ProviderConfig, Settings

REMOTE = [spec for spec in all_models() if spec.provider != "local"]


def test_the_catalog_has_twenty_remote_models_each_priced_and_bounded() -> None:
    assert len(REMOTE) >= 20
    assert {spec.provider for spec in REMOTE} == {
        "openai",
        "gemini",
        "kling",
        "replicate",
        "stability",
    }
    for spec in REMOTE:
        assert spec.display_name and spec.description, spec.id
        assert spec.price.unit is not PriceUnit.NONE and spec.price.per_unit_micros > 0, spec.id
        assert spec.max_units > 0, spec.id
        assert spec.input("prompt") is not None and spec.input("prompt").required, spec.id  # type: ignore[union-attr]


def test_every_named_fallback_exists_and_can_take_the_jobs_of_its_model() -> None:
    by_id = {spec.id: spec for spec in all_models()}
    fallbacks = [spec for spec in REMOTE if spec.fallback]
    assert fallbacks
    for spec in fallbacks:
        assert spec.fallback in by_id and by_id[spec.fallback].provider != spec.provider
        check_fallback(spec, by_id[spec.fallback])


def test_without_keys_only_the_local_models_are_served_and_the_rest_say_what_to_set() -> None:
    registry = builtin_registry(Settings.from_env({"JOBGATE_DATA_DIR": "/tmp/unused"}))

    assert [spec.id for spec in registry.catalog] == [
        "local/echo",
        "local/fail",
        "local/image",
        "local/sleep",
    ]
    with pytest.raises(FailedPrecondition) as kling:
        registry.catalog.get("kling/kling-v2-master")
    assert kling.value.reason is Reason.MODEL_NOT_CONFIGURED
    assert "JOBGATE_KLING_API_KEY" in kling.value.message
    assert "JOBGATE_KLING_SECRET_KEY" in kling.value.message


def test_a_key_serves_its_providers_models_and_kling_needs_both_of_its_keys() -> None:
    settings = Settings.from_env(
        {
            "JOBGATE_DATA_DIR": "/tmp/unused",
            "JOBGATE_OPENAI_API_KEY": "sk-1",
            "JOBGATE_KLING_API_KEY": "access-only",
        }
    )

    registry = builtin_registry(settings)

    openai = {spec.id for spec in registry.catalog if spec.provider == "openai"}
    assert "openai/gpt-image-1" in openai and "openai/sora-2" in openai
    assert isinstance(registry.provider_for("openai/gpt-4o"), OpenAIProvider)
    assert isinstance(registry.provider_for("openai/sora-2"), OpenAIVideoProvider)
    assert "kling/kling-v2-master" not in registry.catalog
    # Its fallback (Gemini) has no key here: a job of gpt-4o-mini has nowhere else to go.
    assert registry.fallback_of("openai/gpt-4o-mini") is None


def test_a_fallback_is_used_only_where_it_is_served() -> None:
    settings = Settings(
        data_dir=Path("/tmp/unused"),
        providers={"openai": ProviderConfig(api_key="a"), "gemini": ProviderConfig(api_key="b")},
    )

    registry = builtin_registry(settings)

    assert registry.fallback_of("openai/gpt-4o-mini") == "gemini/gemini-2.5-flash"
    assert registry.fallback_of("openai/gpt-4o") is None
    assert registry.fallback_of("local/echo") is None


def test_each_provider_module_is_one_line_in_the_registry() -> None:
    ids = [spec.id for remote in REMOTE_PROVIDERS for spec in remote.models]
    assert len(ids) == len(set(ids)) == len(REMOTE)
    registry = ProviderRegistry(
        [LocalProvider(), KlingProvider(ProviderConfig(api_key="a", secret_key="b"))]
    )
    assert len(registry.catalog) == 4 + len(KlingProvider.models)


def test_keys_come_from_secret_files_and_never_show(tmp_path: Path) -> None:
    key_file = tmp_path / "openai.key"
    key_file.write_text("sk-from-a-file\n")

    settings = Settings.from_env(
        {
            "JOBGATE_DATA_DIR": str(tmp_path),
            "JOBGATE_OPENAI_API_KEY_FILE": str(key_file),
            "JOBGATE_OPENAI_BASE_URL": "http://127.0.0.1:9/",
            "JOBGATE_OPENAI_TIMEOUT_SECONDS": "12.5",
            "JOBGATE_STABILITY_API_KEY": " sk-stability ",
        }
    )

    openai = settings.provider("openai")
    assert openai == ProviderConfig(
        api_key="sk-from-a-file", base_url="http://127.0.0.1:9", timeout_seconds=12.5
    )
    assert settings.provider("stability").api_key == "sk-stability"
    for shown in (repr(settings), repr(openai), str(openai)):
        assert "sk-from-a-file" not in shown and "sk-stability" not in shown


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"JOBGATE_OPENAI_API_KEY": "a", "JOBGATE_OPENAI_API_KEY_FILE": "/x"}, "not both"),
        ({"JOBGATE_GEMINI_API_KEY_FILE": "/nonexistent/key"}, "JOBGATE_GEMINI_API_KEY_FILE"),
        ({"JOBGATE_KLING_TIMEOUT_SECONDS": "soon"}, "JOBGATE_KLING_TIMEOUT_SECONDS"),
    ],
)
def test_bad_provider_settings_stop_with_the_variable_named(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_env({"JOBGATE_DATA_DIR": "/tmp/unused", **env})


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "key"
    empty.write_text("\n")

    with pytest.raises(ConfigError, match="is empty"):
        Settings.from_env(
            {"JOBGATE_DATA_DIR": str(tmp_path), "JOBGATE_REPLICATE_API_KEY_FILE": str(empty)}
        )


@pytest.mark.parametrize(
    ("model", "job_input", "field"),
    [
        ("kling/kling-v2-master", JobInput(prompt="x", duration_seconds=6), "job.input.duration"),
        ("kling/kling-v2-master", JobInput(prompt="x", seed=1), "job.input.seed"),
        (
            "stability/stable-image-core",
            JobInput(prompt="x", aspect_ratio="4:3"),
            "job.input.aspect_ratio",
        ),
        ("openai/sora-2", JobInput(prompt="x", size="1920x1080"), "job.input.size"),
        ("gemini/gemini-2.5-flash-image", JobInput(), "job.input.prompt"),
    ],
)
def test_a_model_validates_normalized_input_against_its_capabilities(
    model: str, job_input: JobInput, field: str
) -> None:
    spec = {s.id: s for s in all_models()}[model]

    with pytest.raises(InvalidArgument) as raised:
        spec.validate(job_input)

    assert raised.value.field == field


def test_the_readmes_catalog_table_is_generated_from_the_code() -> None:
    from tools.catalog_table import README, readme_with_table

    readme = README.read_text(encoding="utf-8")

    # Out of date? Run: python tools/catalog_table.py --write
    assert readme_with_table(readme) == readme
    for spec in all_models():
        assert f"| `{spec.id}` |" in readme
