"""Which provider runs which model, and the catalog they make up together.

A new provider is one module implementing `base.Provider` plus one line in `builtin_providers`.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.catalog import Catalog, ModelSpec
from core.providers.base import Provider
from core.providers.local import LocalProvider


class ProviderRegistry:
    """The providers a process can run, by model id; each model has exactly one provider."""

    def __init__(self, providers: Iterable[Provider]) -> None:
        self._providers: dict[str, Provider] = {}
        specs: list[ModelSpec] = []
        for provider in providers:
            for spec in provider.models:
                if spec.id in self._providers:
                    raise ValueError(f"model {spec.id!r} is served by two providers")
                self._providers[spec.id] = provider
                specs.append(spec)
        self._catalog = Catalog(specs)

    def provider_for(self, model_id: str) -> Provider:
        """Raises KeyError when no provider here serves `model_id`."""
        try:
            return self._providers[model_id]
        except KeyError:
            raise KeyError(f"no provider serves model {model_id!r}") from None

    @property
    def catalog(self) -> Catalog:
        return self._catalog


def builtin_providers() -> list[Provider]:
    return [LocalProvider()]


def builtin_registry() -> ProviderRegistry:
    return ProviderRegistry(builtin_providers())
