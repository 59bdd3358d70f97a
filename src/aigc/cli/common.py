"""Pieces every command group shares: the --workspace option, consoles, error mapping, progress.

The CLI is a thin layer over the Python API: it parses, calls, prints. Domain errors become
one line on stderr and exit code 2.

User data (names, cards, conditions, prompts, generated text, log rows, error messages) is
never Rich markup: both consoles print strings as they are (no markup, no ``:emoji:`` codes),
so a prompt holding ``[/note]`` prints as typed instead of crashing a table. Styling is opt-in
through :func:`markup`, which escapes the values it fills in.
"""

from __future__ import annotations

import functools
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from aigc.errors import AigcError, InvalidInput

# In a log (not a terminal) Rich would wrap tables at 80 columns; give them room.
out = Console(markup=False, emoji=False, highlight=False, soft_wrap=True,
              width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, markup=False, emoji=False, highlight=False, soft_wrap=True)  # an error stays one line


def markup(template: str, **values: Any) -> Text:
    """``template`` is Rich markup written here; ``values`` are user data, escaped before they are
    filled in, so they print verbatim: ``markup("run [bold]{name}[/bold]", name=row["name"])``.
    Numbers stay numbers, so the template may format them (``{elapsed:.0f}``)."""
    safe = {k: v if isinstance(v, (int, float)) else escape(str(v)) for k, v in values.items()}
    return Text.from_markup(template.format(**safe), emoji=False)

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="Workspace folder [default: $AIGC_HOME or ~/.aigc].", show_default=False),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", help="CPU threads for torch [default: $AIGC_THREADS or the physical cores].",
                 show_default=False, min=1),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

F = TypeVar("F", bound=Callable[..., Any])


def _one_line_warning(fallback: Callable[..., Any]) -> Callable[..., Any]:
    """A ``warnings.showwarning`` that prints our own warnings (a category defined in ``aigc``,
    e.g. the GAN's CollapseWarning) as one ``warning: ...`` line on stderr, not file, line and
    source; any other package's warnings go to ``fallback``."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if category.__module__.split(".")[0] == "aigc":
            err.print(Text.assemble(("warning:", "yellow"), f" {message}"))
        else:
            fallback(message, category, filename, lineno, file, line)

    return show


def guard(fn: F) -> F:
    """Turn domain and file errors into ``error: ...`` on stderr and exit code 2; Ctrl-C into 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warning(warnings.showwarning)
                return fn(*args, **kwargs)
        except AigcError as e:
            err.print(Text.assemble(("error:", "red"), f" {e}"))
            raise typer.Exit(2) from None
        except OSError as e:  # disk full, permission denied...: still one line, not a traceback
            detail = f"{e.strerror or e}: {getattr(e, 'filename', '') or ''}".rstrip(": ")
            err.print(Text.assemble(("error:", "red"), f" {detail}"))
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_pairs(pairs: list[str] | None, what: str) -> dict[str, str]:
    """['a=1', 'b=x'] -> {'a': '1', 'b': 'x'}; a malformed pair is an InvalidInput naming the flag."""
    result: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"{what} expects KEY=VALUE, got {pair!r}")
        result[key.strip()] = value.strip()
    return result


def threads(n: int | None) -> None:
    from aigc.runtime import configure_threads

    configure_threads(n)


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def hms(seconds: float) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class RateProgress:
    """``done/total`` of long work in its own unit (rows/s, products/s) with an ETA, on stderr, every
    few seconds (and once at the end)."""

    def __init__(self, verb: str, unit: str, every_s: float = 2.0):
        import time

        self._clock = time.perf_counter
        self.start = self.last = self._clock()
        self.verb, self.unit, self.every_s = verb, unit, every_s

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if now - self.last < self.every_s and done < total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (total - done) / rate if rate else float("inf")
        speed = f"{rate:,.2f}" if rate < 10 else f"{rate:,.0f}"
        err.print(f"{self.verb}: {done:,}/{total:,} {self.unit}, {speed} {self.unit}/s, ETA {hms(eta)}")


class TrainProgress:
    """A Rich progress bar fed by the training loop's hooks: loss, val loss, throughput in the
    task's own unit (``tok/s``, ``img/s``), ETA."""

    def __init__(self, name: str):
        from rich.progress import BarColumn, Progress, TextColumn

        self.name = name
        self.progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(),
            TextColumn("{task.fields[info]}", markup=False),
            console=err,
            transient=False,
            disable=not sys.stderr.isatty() and not _force_progress(),
        )
        self.task = None
        self.lines = not sys.stderr.isatty()  # in a log, print a line per validation instead

    def _fraction(self, s) -> float:
        frac = s.step / s.max_steps if s.max_steps else 0.0
        if s.time_budget:
            frac = max(frac, s.elapsed / s.time_budget)
        return min(1.0, frac)

    def _info(self, s) -> str:
        extra = "".join(f"  {k} {fmt(v)}" for k, v in s.extra.items() if k != "loss")  # e.g. a GAN's d_loss
        steps = f"{s.step}/{s.max_steps}" if s.max_steps else str(s.step)  # no cap: the budget governs
        return (f"step {steps}  loss {fmt(s.train_loss)}{extra}  val {fmt(s.val_loss)}  "
                f"{s.tokens_per_s:,.0f} {s.unit}/s  elapsed {hms(s.elapsed)}  ETA {hms(s.eta_s)}")

    def on_start(self, s) -> None:
        self.progress.start()
        self.task = self.progress.add_task(self.name, total=1000, info=self._info(s))

    def on_step(self, s) -> None:
        self.progress.update(self.task, completed=1000 * self._fraction(s), info=self._info(s))

    def on_eval(self, s) -> None:
        self.on_step(s)
        if self.lines:
            err.print(f"{self.name}: {self._info(s)}")

    def on_end(self, s) -> None:
        self.on_step(s)
        self.progress.stop()


def _force_progress() -> bool:
    import os

    return bool(os.environ.get("AIGC_PROGRESS"))


def on_command_line(ctx: typer.Context, param: str) -> bool:
    """Whether ``param`` was given on the command line (not left at its default)."""
    # By name: typer ships its own copy of click, so its ParameterSource is not click's.
    source = ctx.get_parameter_source(param)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
