"""The built-in offline models: everything jobgate does works with no network and no keys.

`local/echo` returns its input, `local/sleep` runs for a while reporting progress, `local/image`
renders a PNG of its prompt, and `local/fail` fails on request. They exist for tests, demos and
benchmarks, and to show what a provider looks like.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import re
import textwrap
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from core.catalog import InputSpec, ModelSpec, OutputKind, Price, PriceUnit
from core.errors import Reason
from core.jobs import LogLevel
from core.providers.base import JobFailed, RunContext

MAX_SLEEP_SECONDS = 3600.0
SLEEP_PROGRESS_STEPS = 10
MIN_SIDE, MAX_SIDE = 16, 2048
DEFAULT_SIZE = (512, 512)
DEFAULT_FAILURE_MESSAGE = "local/fail failed, as requested"

_SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")


def invalid_input(message: str) -> JobFailed:
    return JobFailed(message, reason=Reason.INVALID_INPUT)


# local/echo


ECHO = ModelSpec(
    id="local/echo",
    display_name="Echo",
    description="Returns its input at once: the prompt as the text output `echo`; when "
    "options are given, the options as the JSON output `options`; when files are given, each "
    "file's key, content type, size and sha256 as the JSON output `files`. Costs nothing to "
    "run; for trying the API and for benchmarks.",
    inputs=(
        InputSpec("prompt", required=True, description="Returned as the `echo` output."),
        InputSpec("options", description="Any JSON object, returned as the `options` output."),
        InputSpec("files", description="Uploaded blobs, described in the `files` output."),
    ),
    outputs=(OutputKind.TEXT, OutputKind.JSON),
    price=Price(per_job_micros=100),
)


async def run_echo(ctx: RunContext) -> None:
    await ctx.output_text("echo", ctx.job.input.prompt)
    if ctx.job.input.options:
        await ctx.output_json("options", ctx.job.input.options)
    if ctx.job.input.files:
        files = [
            {
                "key": f.key,
                "content_type": f.content_type,
                "size_bytes": f.size_bytes,
                "sha256": f.sha256,
            }
            for f in ctx.job.input.files
        ]
        await ctx.output_json("files", {"files": files})


# local/sleep


SLEEP = ModelSpec(
    id="local/sleep",
    display_name="Sleep",
    description=f"Runs for `duration` (more than 0, at most {MAX_SLEEP_SECONDS:g} s), reporting "
    f"progress {SLEEP_PROGRESS_STEPS} times and a few log lines, then returns the text output "
    "`result`. Stands in for a long generation: use it to watch progress and to try cancel.",
    inputs=(
        InputSpec("duration", required=True, description="How long to run."),
        InputSpec("prompt", description="Repeated in the result."),
    ),
    outputs=(OutputKind.TEXT,),
    price=Price(per_job_micros=1000),
)


async def run_sleep(ctx: RunContext) -> None:
    duration = sleep_duration(ctx.job.input.duration_seconds)
    await ctx.log(f"sleeping for {duration:g} s")
    loop = asyncio.get_running_loop()
    start = loop.time()
    for step in range(1, SLEEP_PROGRESS_STEPS + 1):
        # Sleep until each step's deadline rather than a fixed interval, so steps do not drift.
        await asyncio.sleep(max(0.0, start + duration * step / SLEEP_PROGRESS_STEPS - loop.time()))
        fraction = step / SLEEP_PROGRESS_STEPS
        await ctx.progress(fraction, f"slept {duration * fraction:.1f} of {duration:g} s")
        if step == SLEEP_PROGRESS_STEPS // 2:
            await ctx.log("halfway there")
    await ctx.log("awake")
    prompt = ctx.job.input.prompt
    await ctx.output_text("result", f"slept {duration:g} s" + (f": {prompt}" if prompt else ""))


def sleep_duration(duration: float | None) -> float:
    if duration is None:
        raise invalid_input("local/sleep needs input.duration: how long to run")
    if not 0 < duration <= MAX_SLEEP_SECONDS:
        raise invalid_input(
            f"input.duration must be more than 0 and at most {MAX_SLEEP_SECONDS:g} s, "
            f"not {duration:g} s"
        )
    return duration


# local/image


IMAGE = ModelSpec(
    id="local/image",
    display_name="Image",
    description=f"Renders the prompt as text on a coloured background into a PNG, stored as the "
    f"blob output `image`. `size` is `WIDTHxHEIGHT`, each side {MIN_SIDE} to {MAX_SIDE} pixels "
    f"(default {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}); the same seed and prompt give the same "
    "colours. Not a generative model: the picture only shows the words.",
    inputs=(
        InputSpec("prompt", required=True, description="The text drawn on the image."),
        InputSpec("size", description="`WIDTHxHEIGHT` in pixels."),
        InputSpec("seed", description="Picks the colours; derived from the prompt when unset."),
    ),
    outputs=(OutputKind.IMAGE,),
    price=Price(per_unit_micros=2000, unit=PriceUnit.IMAGE),
)


async def run_image(ctx: RunContext) -> None:
    job_input = ctx.job.input
    width, height = image_size(job_input.size)
    seed = job_input.seed if job_input.seed is not None else prompt_seed(job_input.prompt)
    await ctx.progress(0.1, f"rendering {width}x{height}")
    # Rendering and PNG encoding are CPU-bound: off the event loop, so other jobs keep going.
    png = await asyncio.to_thread(render_png, job_input.prompt, width, height, seed)
    await ctx.progress(0.9, "storing the image")
    await ctx.output_blob("image", png, "image/png")
    await ctx.log(f"rendered {width}x{height} with seed {seed}", LogLevel.DEBUG)


def image_size(size: str) -> tuple[int, int]:
    if not size:
        return DEFAULT_SIZE
    match = _SIZE.fullmatch(size)
    if match is None:
        raise invalid_input(f"input.size must be WIDTHxHEIGHT, e.g. 512x512, not {size!r}")
    width, height = int(match[1]), int(match[2])
    for name, side in (("width", width), ("height", height)):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise invalid_input(
                f"input.size {name} must be {MIN_SIDE} to {MAX_SIDE} pixels, not {side}"
            )
    return width, height


def prompt_seed(prompt: str) -> int:
    return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")


def render_png(prompt: str, width: int, height: int, seed: int) -> bytes:
    rng = random.Random(seed)
    red, green, blue = (rng.randrange(256) for _ in range(3))
    # Black on light backgrounds, white on dark ones: the words stay readable.
    ink = (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 128 else (255, 255, 255)
    background = (red, green, blue)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    font_size = max(8, min(width, height) // 12)
    font = ImageFont.load_default(size=font_size)
    margin = max(2, width // 20)
    # Wrap by an estimated glyph width; lines that do not fit the height are left out.
    columns = max(1, (width - 2 * margin) * 2 // font_size)
    rows = max(1, (height - 2 * margin) // int(font_size * 1.2))
    lines = textwrap.wrap(prompt, columns)[:rows] or [""]
    draw.multiline_text(
        (width / 2, height / 2), "\n".join(lines), fill=ink, font=font, anchor="mm", align="center"
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# local/fail


FAIL = ModelSpec(
    id="local/fail",
    display_name="Fail",
    description="Fails on request, for tests and demos: ends FAILED with reason "
    "REQUESTED_FAILURE and `options.message` (or a default message). `options.after_seconds` "
    f"(at most {MAX_SLEEP_SECONDS:g}) runs that long first, reporting progress; "
    "`options.crash: true` raises an unexpected error instead, as a broken provider would "
    "(reason PROVIDER_ERROR).",
    inputs=(
        InputSpec("prompt", description="Ignored."),
        InputSpec("options", description="`message`, `after_seconds`, `crash`."),
    ),
    outputs=(),
    price=Price(per_job_micros=100),
)


async def run_fail(ctx: RunContext) -> None:
    options = ctx.job.input.options
    message = option(options, "message", str, "a string", DEFAULT_FAILURE_MESSAGE)
    after = float(option(options, "after_seconds", (int, float), "a number", 0))
    crash = option(options, "crash", bool, "true or false", False)
    if not 0 <= after <= MAX_SLEEP_SECONDS:
        raise invalid_input(
            f"options.after_seconds must be 0 to {MAX_SLEEP_SECONDS:g}, not {after:g}"
        )
    if after:
        for step in range(1, SLEEP_PROGRESS_STEPS + 1):
            await asyncio.sleep(after / SLEEP_PROGRESS_STEPS)
            await ctx.progress(step / SLEEP_PROGRESS_STEPS, "about to fail")
    if crash:
        raise RuntimeError(message)
    raise JobFailed(message, reason=Reason.REQUESTED_FAILURE)


def option(
    options: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str, default: Any
) -> Any:
    """`options[name]` checked against `kind`; booleans are not numbers here."""
    value = options.get(name, default)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise invalid_input(f"options.{name} must be {what}, not {value!r}")
    return value


# The provider


@dataclass(frozen=True)
class LocalModel:
    spec: ModelSpec
    run: Callable[[RunContext], Awaitable[None]]


LOCAL_MODELS = (
    LocalModel(ECHO, run_echo),
    LocalModel(SLEEP, run_sleep),
    LocalModel(IMAGE, run_image),
    LocalModel(FAIL, run_fail),
)


class LocalProvider:
    """Serves the `local/*` models in the worker's own process."""

    def __init__(self, models: Iterable[LocalModel] = LOCAL_MODELS) -> None:
        self._models = {model.spec.id: model for model in models}

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        return tuple(model.spec for model in self._models.values())

    async def run(self, ctx: RunContext) -> None:
        await self._models[ctx.job.model].run(ctx)
