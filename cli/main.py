"""The `kbench` command line: the command group, and the one place where expected failures
become one line on stderr and an exit code: 0 done, 1 failed (a store, a cluster, or an
unexpected error), 2 bad input (a grid, a flag, a store URI, a profile), 3 a pair did not
succeed, 130 interrupted. A traceback only with --debug or KBENCH_DEBUG=1.

Each room holds a group of commands: `submit` (submit, resume, render), `runs` (runs, status,
logs, cancel), `collect`, `data` and `models` (list, stage each) and `cluster` (setup, doctor);
`options` and `output` hold what they share. Commands parse options, call the library and
print; the work is in it.
"""

from __future__ import annotations

import os
from typing import Any

import click

from kbench import __version__
from kbench.errors import KbenchError

from .cluster import doctor, setup
from .collect import collect, compare, export
from .data import data
from .models import models
from .runs import cancel, logs, runs, status
from .submit import render, resume, submit
from .sweep import sweep


class KbenchCliError(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        # Click types the code as a class variable; each of these errors carries its own.
        self.exit_code = exit_code  # type: ignore[misc]


DEBUG_ENV = "KBENCH_DEBUG"
INTERRUPTED = 130  # as a shell reports a command stopped by Ctrl-C


class KbenchGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KbenchError as e:
            raise KbenchCliError(str(e), e.exit_code) from None
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            raise KbenchCliError("interrupted", INTERRUPTED) from None
        except Exception as e:
            # Anything else is a bug or a failure nobody named yet: one line (the traceback
            # with --debug or KBENCH_DEBUG=1), never a wall of frames.
            if ctx.params.get("debug") or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                raise
            where = f" ({e.filename})" if isinstance(e, OSError) and e.filename else ""
            raise KbenchCliError(
                f"{type(e).__name__}{where}: {e or 'no message'} "
                f"(--debug or {DEBUG_ENV}=1 shows the traceback)",
                1,
            ) from None


@click.group(
    cls=KbenchGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
@click.version_option(__version__, prog_name="kbench")
@click.option(
    "--debug", is_flag=True, help=f"Show the traceback of an unexpected error [env: {DEBUG_ENV}]."
)
def cli(debug: bool) -> None:
    """Fine-tune CLIP ViT-B/32 and ResNet50 on the same datasets and compare them.

    \b
      kbench submit --grid smoke    # train every dataset x model pair of a grid
      kbench status                 # where every pair stands
      kbench collect                # the comparison report
    """


for command in (
    submit,
    resume,
    sweep,
    render,
    status,
    data,
    models,
    doctor,
    setup,
    collect,
    compare,
    export,
    runs,
    logs,
    cancel,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="kbench")


if __name__ == "__main__":
    main()
