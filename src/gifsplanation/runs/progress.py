"""The progress bar of every long command: rich on stderr, or a no-op."""

from __future__ import annotations

from typing import Any


class NoProgress:
    """Stands in for a rich ``Progress`` when progress is off."""

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def advance(self, *args: Any, **kwargs: Any) -> None:
        return None

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


def progress_bar(
    enabled: bool, remaining: bool = False, info: bool = False, transient: bool = False
) -> Any:
    """A rich progress bar on stderr, or a :class:`NoProgress` when ``enabled`` is false.

    Args:
        enabled: show it.
        remaining: add an estimated-time-remaining column.
        info: add a column showing each task's ``info`` field (e.g. the running loss).
        transient: remove the bar from the terminal when it is done.

    Example:
        >>> with progress_bar(False) as p:
        ...     p.advance(p.add_task("images", total=3))
    """
    if not enabled:
        return NoProgress()
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
    ]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    columns.append(TimeElapsedColumn())
    if remaining:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True), transient=transient)
