"""The provider registry and the catalog of built-in models."""

from __future__ import annotations

import pytest

from core.catalog import OutputKind
from core.providers.local import LocalProvider
from core.providers.registry import ProviderRegistry, builtin_registry
from tests.workers.helpers import FunctionProvider


async def nothing(ctx: object) -> None:
    return None


def test_the_builtin_registry_serves_the_local_models() -> None:
    registry = builtin_registry()

    ids = [spec.id for spec in registry.catalog]
    assert ids == ["local/echo", "local/fail", "local/image", "local/sleep"]
    for spec in registry.catalog:
        assert isinstance(registry.provider_for(spec.id), LocalProvider)
        assert spec.provider == "local" and spec.description and spec.display_name
        assert spec.price.per_job_micros > 0 or spec.price.per_unit_micros > 0
    assert registry.catalog.get("local/image").outputs == (OutputKind.IMAGE,)


def test_required_inputs_are_declared_honestly() -> None:
    catalog = builtin_registry().catalog

    required = {spec.id: sorted(i.field for i in spec.inputs if i.required) for spec in catalog}
    assert required == {
        "local/echo": ["prompt"],
        "local/fail": [],
        "local/image": ["prompt"],
        "local/sleep": ["duration"],
    }


def test_an_unknown_model_has_no_provider() -> None:
    with pytest.raises(KeyError, match="nowhere/model"):
        builtin_registry().provider_for("nowhere/model")


def test_two_providers_of_one_model_are_refused() -> None:
    with pytest.raises(ValueError, match="test/twice"):
        ProviderRegistry(
            [FunctionProvider("test/twice", nothing), FunctionProvider("test/twice", nothing)]
        )


def test_another_provider_adds_its_models_to_the_catalog() -> None:
    extra = FunctionProvider("test/extra", nothing)

    registry = ProviderRegistry([LocalProvider(), extra])

    assert registry.provider_for("test/extra") is extra
    assert "test/extra" in registry.catalog and len(registry.catalog) == 5
