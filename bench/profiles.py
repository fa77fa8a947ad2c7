"""Where a service's time goes: a summary of the cProfile stats it wrote when it stopped."""

from __future__ import annotations

import pstats
from pathlib import Path
from typing import Any

# Functions worth naming in a breakdown: the services' own steps and the libraries they lean on.
INTERESTING = (
    "gateway/",
    "inference_worker/",
    "mnistream_common/",
    "mnistream_serving/",
    "aiokafka/producer",
    "aiokafka/consumer",
    "faststream/kafka/publisher",
    "PIL/",
    "onnxruntime/",
    "pydantic/main.py",
    "starlette/formparsers",
    "starlette/requests",
)


def _name(key: tuple[str, int, str]) -> str:
    filename, line, function = key
    for marker in ("site-packages/", "/src/", "lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    return f"{filename}:{line}({function})" if line else function


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by own time and by cumulative time (shares of the total own time)."""
    if not path.exists():
        return {"error": f"no profile written at {path}"}
    stats = pstats.Stats(str(path))
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    # Start-up imports (and compiling modules that have no bytecode) are not serving work:
    # shares are of the time after them.
    imports = max(
        (entry[3] for key, entry in table.items() if key[2] == "_find_and_load"), default=0.0
    )
    total = max(sum(entry[2] for entry in table.values()) - imports, 1e-9)
    rows = [
        {
            "function": _name(key),
            "calls": int(entry[1]),
            "own_s": round(entry[2], 3),
            "cumulative_s": round(entry[3], 3),
            "own_share": round(entry[2] / total, 4),
            "cumulative_share": round(entry[3] / total, 4),
        }
        for key, entry in table.items()
    ]
    by_own = sorted(rows, key=lambda r: -r["own_s"])[: top + 1]
    steps = [
        r
        for r in rows
        if any(m in r["function"] for m in INTERESTING)
        and not r["function"].endswith(("(<module>)", "(main)"))
    ]
    by_own = [r for r in by_own if "compile" not in r["function"]]
    by_cumulative = sorted(steps, key=lambda r: -r["cumulative_s"])[:top]
    return {
        "total_s": round(total, 3),
        "startup_imports_s": round(imports, 3),
        "by_own_time": by_own[:top],
        "by_cumulative_time": by_cumulative,
    }
