"""The `kbench` command line: the command group, and the one place where expected failures
(`KbenchError`) become one line on stderr and an exit code (2 for bad input, 1 otherwise);
anything unexpected keeps its traceback.

Each room holds a group of commands: `submit` (submit, render), `runs` (runs, status, logs,
cancel), `collect`, `data` (list, stage) and `cluster` (setup, doctor); `options` and `output`
hold what they share. Commands parse options, call the library and print; the work is in it.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from kbench import __version__
from kbench.errors import KbenchError

from .cluster import doctor, setup
from .collect import collect
from .data import data
from .runs import cancel, logs, runs, status
from .submit import render, submit


class KbenchCliError(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class KbenchGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KbenchError as e:
            raise KbenchCliError(str(e), e.exit_code) from None


@click.group(
    cls=KbenchGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
@click.version_option(__version__, prog_name="kbench")
def cli() -> None:
    """Fine-tune CLIP ViT-B/32 and ResNet50 on the same datasets and compare them.

    \b
      kbench submit --grid smoke    # train every dataset x model pair of a grid
      kbench status                 # where every pair stands
      kbench collect                # the comparison report
    """


for command in (submit, render, status, data, doctor, setup, collect, runs, logs, cancel):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="kbench")


if __name__ == "__main__":
    sys.exit(main())
