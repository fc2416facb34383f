"""Which provider runs which model, and the catalog they make up together.

A new provider is one module implementing `base.Provider` (its `MODELS` and a class built from
its `ProviderConfig`) plus one line in `REMOTE_PROVIDERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from core.catalog import Catalog, ModelSpec
from core.providers import gemini, kling, openai, openai_video, replicate, stability
from core.providers.base import Provider
from core.providers.local import LocalProvider
from core.settings import ENV_PREFIX, ProviderConfig, Settings


@dataclass(frozen=True)
class RemoteProvider:
    """A provider reached over the network: configured by `JOBGATE_{NAME}_*`, serving its
    models only where every credential in `needs` is set."""

    name: str
    models: tuple[ModelSpec, ...]
    create: Callable[[ProviderConfig], Provider]
    needs: tuple[str, ...] = ("api_key",)

    def missing(self, config: ProviderConfig) -> list[str]:
        """The variables to set before this provider can run: none when it is configured."""
        return [
            f"{ENV_PREFIX}{self.name.upper()}_{need.upper()} (or ..._FILE)"
            for need in self.needs
            if not getattr(config, need)
        ]


REMOTE_PROVIDERS = (
    RemoteProvider("openai", openai.MODELS, openai.OpenAIProvider),
    RemoteProvider("openai", openai_video.MODELS, openai_video.OpenAIVideoProvider),
    RemoteProvider("gemini", gemini.MODELS, gemini.GeminiProvider),
    RemoteProvider("kling", kling.MODELS, kling.KlingProvider, ("api_key", "secret_key")),
    RemoteProvider("replicate", replicate.MODELS, replicate.ReplicateProvider),
    RemoteProvider("stability", stability.MODELS, stability.StabilityProvider),
)


class ProviderRegistry:
    """The providers a process can run, by model id; each model has exactly one provider.
    `unconfigured` names the models known here but not runnable, each with why."""

    def __init__(
        self, providers: Iterable[Provider], unconfigured: Mapping[str, str] | None = None
    ) -> None:
        self._providers: dict[str, Provider] = {}
        specs: list[ModelSpec] = []
        for provider in providers:
            for spec in provider.models:
                if spec.id in self._providers:
                    raise ValueError(f"model {spec.id!r} is served by two providers")
                self._providers[spec.id] = provider
                specs.append(spec)
        self._catalog = Catalog(specs, unconfigured)
        for spec in specs:
            if spec.fallback in self._catalog:
                check_fallback(spec, self._catalog.get(spec.fallback))

    def provider_for(self, model_id: str) -> Provider:
        """Raises KeyError when no provider here serves `model_id`."""
        try:
            return self._providers[model_id]
        except KeyError:
            raise KeyError(f"no provider serves model {model_id!r}") from None

    def fallback_of(self, model_id: str) -> str | None:
        """The model to run a job of `model_id` on while its provider is unavailable, if the
        catalog names one and it is served here."""
        if model_id not in self._catalog:
            return None
        fallback = self._catalog.get(model_id).fallback
        return fallback if fallback in self._providers else None

    @property
    def catalog(self) -> Catalog:
        return self._catalog


def check_fallback(spec: ModelSpec, fallback: ModelSpec) -> None:
    """A fallback must take every input a job of `spec` may carry, and count the same units."""
    problem = ""
    if fallback.price.unit is not spec.price.unit:
        problem = f"prices by {fallback.price.unit}, not {spec.price.unit}"
    for field in spec.inputs:
        theirs = fallback.input(field.field)
        if theirs is None:
            problem = f"does not take {field.field!r}"
        elif theirs.choices and not (field.choices and set(field.choices) <= set(theirs.choices)):
            problem = f"does not take every {field.field} {spec.id} takes"
    if problem:
        raise ValueError(f"{spec.id}'s fallback {fallback.id} {problem}")


def builtin_registry(settings: Settings | None = None) -> ProviderRegistry:
    """The local models, and every remote provider `settings` configure; the models of the
    others are known but refused with what to set. No settings: the local models only."""
    providers: list[Provider] = [LocalProvider()]
    unconfigured: dict[str, str] = {}
    for remote in REMOTE_PROVIDERS:
        config = settings.provider(remote.name) if settings is not None else ProviderConfig()
        if missing := remote.missing(config):
            for spec in remote.models:
                unconfigured[spec.id] = f"its provider needs {' and '.join(missing)}"
        else:
            providers.append(remote.create(config))
    return ProviderRegistry(providers, unconfigured)


def all_models() -> list[ModelSpec]:
    """Every model jobgate knows, configured here or not: what the README's table lists."""
    models = [*LocalProvider().models]
    for remote in REMOTE_PROVIDERS:
        models.extend(remote.models)
    return sorted(models, key=lambda m: m.id)
