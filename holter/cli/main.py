"""The ``holter`` command: each command calls the library API, never SQL.

Subcommands live in their own modules and are imported only when used (or listed by
``--help``), so ``holter run`` does not pay for the report, alerting and export code.
"""

from __future__ import annotations

import importlib

import click

from holter._version import __version__
from holter.cli._options import holter_errors

#: command name -> (module, attribute, one-line help shown by ``holter --help``)
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("holter.cli.main", "demo"),
    "query": ("holter.cli.metrics", "query_cmd"),
    "series": ("holter.cli.metrics", "series_cmd"),
    "runs": ("holter.cli.metrics", "runs_cmd"),
    "run": ("holter.cli.run", "run_cmd"),
    "traces": ("holter.cli.traces", "traces_cmd"),
    "trace": ("holter.cli.traces", "trace_cmd"),
    "ops": ("holter.cli.traces", "ops_cmd"),
    "serve": ("holter.cli.export", "serve_cmd"),
    "export": ("holter.cli.export", "export_group"),
    "anomalies": ("holter.cli.anomalies", "anomalies_cmd"),
    "baselines": ("holter.cli.anomalies", "baselines_cmd"),
    "top": ("holter.cli.top", "top_cmd"),
    "alerts": ("holter.cli.alerts", "alerts_cmd"),
    "silence": ("holter.cli.alerts", "silence_cmd"),
    "silences": ("holter.cli.alerts", "silences_cmd"),
    "rules": ("holter.cli.alerts", "rules_group"),
    "report": ("holter.cli.report", "report_cmd"),
    "compare": ("holter.cli.report", "compare_cmd"),
}


class _LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in _COMMANDS:
            return command
        module, attr = _COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attr)
        self.add_command(command, cmd_name)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="holter")
def cli() -> None:
    """holter: metrics, traces and system data of any Python program, in one local file."""


@cli.command()
@click.option("--duration", default=20.0, show_default=True, type=click.FloatRange(min=1.0),
              help="Seconds the simulated tool runs.")
@click.option("--db", "db", default=None, metavar="PATH",
              help="Store file to record into (default $HOLTER_DB or ./holter.db).")
@click.option("--quiet", is_flag=True, help="No progress display; only the summary.")
@holter_errors
def demo(duration: float, db: str | None, quiet: bool) -> None:
    """Record a realistic simulated CLI tool, then summarise what was recorded.

    For DURATION seconds it runs tool executions of varied latency, HTTP calls to a
    small server on 127.0.0.1, sqlite queries and a queue whose depth moves, with an
    injected latency spike and a slow memory growth.
    """
    from holter.cli.demo import run_demo

    run_demo(duration=duration, db=db, quiet=quiet)


def main() -> None:
    """Entry point of the ``holter`` console script."""
    cli(prog_name="holter")


if __name__ == "__main__":
    main()
