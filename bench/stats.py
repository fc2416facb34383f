"""Small statistics and the report table shared by the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


@dataclass(frozen=True)
class Result:
    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None

    def row(self) -> str:
        verdict = {None: "", True: "met", False: "MISSED"}[self.met]
        return f"| {self.name} | {self.value:,.1f} {self.unit} | {self.target} | {verdict} |"


def table(results: Sequence[Result]) -> str:
    lines = ["| measure | value | target | |", "|---|---|---|---|"]
    return "\n".join(lines + [r.row() for r in results])
