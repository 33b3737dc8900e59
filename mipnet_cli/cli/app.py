"""The Typer application object and the error handling every command shares.

Both consoles print text verbatim (`markup=False`): file names and values that users supply
are never read as Rich markup; the styled labels of messages come from `styled`.
"""

from __future__ import annotations

import sys
import warnings

import typer
from rich.console import Console
from rich.progress import ProgressColumn, Task
from rich.text import Text

from ..core.errors import MipnetError, os_error_message
from ..core.signals import Stopped, signal_of, terminate_as_interrupt

app = typer.Typer(
    name="mipnet",
    help="Multi-person 2D pose annotation that stays correct in crowds (MIPNet, ICCV 2021).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs are reflowed, not broken at their newlines
)
# Help panels of `mipnet --help`, in this order.
ANNOTATE, INSPECT, TRAIN, MODELS = ("Annotate", "Look inside the network",
                                    "Train and evaluate", "Models, weights and speed")
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def styled(label: str, style: str, message: object = "") -> Text:
    """`label` in `style`, then `message` verbatim, e.g. styled("error:", "bold red", msg)."""
    text = Text(label, style=style)
    if message != "":
        text.append(" " + str(message))
    return text


def say(label: str, style: str, message: object, *, stderr: bool = True) -> None:
    """Print one styled line (labels: error:, note:, skipped, wrote, ...)."""
    (err_console if stderr else console).print(styled(label, style, message), highlight=False,
                                               soft_wrap=True)


class RateColumn(ProgressColumn):
    """Items per second of a progress task, e.g. "12.3 img/s"."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        text = f"{speed:.1f} {self.unit}" if speed else f"- {self.unit}"
        return Text(text, style="progress.data.speed")


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    say("error:", "bold red", message)
    return typer.Exit(code)


def _quiet_warnings() -> None:
    """Library warnings that say nothing to a user of the tool: PIL's decompression-bomb
    warning (large photos are read on purpose; the hard limit still applies) and torch's
    notes on pickle protocols."""
    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.serialization")


def run_app(argv: list[str] | None = None) -> int:
    """Run the CLI; user-facing errors become one line on stderr and exit code 2, SIGTERM is
    handled like Ctrl-C (exit 143 instead of 130), a failed write names its file."""
    _quiet_warnings()
    with terminate_as_interrupt():
        try:
            # Without standalone mode, click returns an Exit's code instead of raising it.
            code = app(args=argv, standalone_mode=False)
        except MipnetError as exc:
            say("error:", "bold red", exc)
            return 2
        except OSError as exc:
            say("error:", "bold red", os_error_message(exc))
            return 2
        except KeyboardInterrupt as exc:
            say("interrupted", "yellow", "" if not isinstance(exc, Stopped) else f"({exc})")
            return 128 + signal_of(exc)
        except Exception as exc:
            # Usage errors (typer's, which vendors click in recent versions) become one line
            # too, with where to read more; anything else is a bug and keeps its traceback.
            if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
                ctx = getattr(exc, "ctx", None)
                hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                if exc.format_message():  # empty after no-arguments help
                    say("error:", "bold red", exc.format_message() + hint)
                return exc.exit_code
            if type(exc).__name__ == "Abort":
                say("aborted", "yellow", "")
                return 1
            raise
    return code if isinstance(code, int) else 0


def main() -> None:
    sys.exit(run_app())
