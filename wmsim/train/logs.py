"""Run metrics, twice: a JSONL file for scripts and TensorBoard scalars for people.

On resume both are cut back to the checkpoint's step, so a run that was
killed between checkpoints never shows the lost steps twice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from wmsim.files import atomic_write_bytes

METRICS = "metrics.jsonl"


class RunLog:
    """Appends ``{"step", "kind", ...metrics}`` lines to RUN/metrics.jsonl and RUN/tb."""

    def __init__(self, run: Path, start_step: int):
        from tensorboardX import SummaryWriter  # imported here: it is slow to import

        self.path = Path(run) / METRICS
        if self.path.exists():
            kept = [line for line in _records(self.path) if line["step"] <= start_step]
            atomic_write_bytes(self.path, "".join(f"{json.dumps(r)}\n" for r in kept).encode())
        self.file = open(self.path, "a")  # noqa: SIM115 (closed in close())
        self.board = SummaryWriter(str(Path(run) / "tb"), purge_step=start_step or None)

    def log(self, step: int, kind: str, metrics: dict[str, Any]) -> None:
        """Record ``metrics`` of ``kind`` (train, eval) at ``step``."""
        values = {k: float(v) for k, v in metrics.items()}
        clean = {k: (v if math.isfinite(v) else None) for k, v in values.items()}
        self.file.write(json.dumps({"step": step, "kind": kind, **clean}) + "\n")
        self.file.flush()
        for name, value in values.items():
            if math.isfinite(value):
                self.board.add_scalar(f"{kind}/{name}", value, step)

    def close(self) -> None:
        """Flush and close both."""
        self.file.close()
        self.board.close()


def read_metrics(run: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The run's metric lines, optionally only those of one kind.

    A last line still being written (or cut off by a crash) is left out.
    """
    path = Path(run) / METRICS
    if not path.exists():
        return []
    return [line for line in _records(path) if kind is None or line["kind"] == kind]


def _records(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a metrics file: a kill can leave the last one cut off."""
    complete = path.read_text().rpartition("\n")[0]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]
