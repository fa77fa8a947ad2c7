"""Training progress for a person at a terminal: a bar per epoch, then the epoch's log line."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from trainer.training import EpochMetrics


class RichReporter:
    """Draws a progress bar while an epoch runs and prints the epoch's line when it ends."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def stage(self, message: str) -> None:
        """Say what the run is doing now."""
        self._console.print(f"[dim]·[/] {message}")

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        """Open this epoch's bar."""
        self._progress = Progress(
            TextColumn(f"Epoch [{epoch}/{epochs}]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=True,
            # Piped into a log, a bar would only add blank lines: the epoch line says it all.
            disable=not self._console.is_terminal,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=batches, loss="-")

    def batch_finished(self, loss: float) -> None:
        """Advance the bar by one batch."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, loss=f"{loss:.4f}")

    def epoch_finished(self, metrics: EpochMetrics) -> None:
        """Close the bar and print the epoch's line."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        # Plain text, exactly the documented line: people and scripts read it.
        self._console.print(metrics.log_line(), markup=False, highlight=False)
