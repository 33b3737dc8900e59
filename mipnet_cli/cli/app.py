"""The Typer application object and the error handling every command shares."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.progress import ProgressColumn, Task
from rich.text import Text

from ..errors import MipnetError

app = typer.Typer(
    name="mipnet",
    help="Multi-person 2D pose annotation that stays correct in crowds (MIPNet, ICCV 2021).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Help panels of `mipnet --help`, in this order.
ANNOTATE, INSPECT, TRAIN, MODELS = ("Annotate", "Look inside the network",
                                    "Train and evaluate", "Models, weights and speed")
console = Console()
err_console = Console(stderr=True)


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
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def run_app(argv: list[str] | None = None) -> int:
    """Run the CLI; user-facing errors become one line on stderr and exit code 2."""
    try:
        # Without standalone mode, click returns an Exit's code instead of raising it.
        code = app(args=argv, standalone_mode=False)
    except MipnetError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as exc:
        # Usage errors (typer's own, or click's in older typer versions) know how to show
        # themselves; anything else is a bug and keeps its traceback.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return exc.exit_code
        if type(exc).__name__ == "Abort":
            err_console.print("aborted")
            return 1
        raise
    return code if isinstance(code, int) else 0


def main() -> None:
    sys.exit(run_app())
