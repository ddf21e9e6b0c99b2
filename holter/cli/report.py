"""`holter report` and `holter compare`: thin skins over :mod:`holter.reports`."""

from __future__ import annotations

import click

from holter.cli._options import CliError, db_option, holter_errors, open_store
from holter.reports.base import check_writable, guess_format, renderer_for, write_atomic

_FORMAT = click.Choice(["json", "md", "markdown", "html"])


def _output(text: str, output: str | None) -> None:
    if output is None or output == "-":
        click.echo(text, nl=False)
        return
    write_atomic(output, text)
    click.echo(f"wrote {output}", err=True)


@click.command("report")
@click.option("--period", "-p", default=None, metavar="WINDOW",
              help="The last WINDOW (30m, 1h, 24h, 7d); default 24h, or a run's lifetime.")
@click.option("--since", default=None, metavar="TIME",
              help="Start: ISO 8601 time, epoch seconds, or a duration ago (2h).")
@click.option("--until", default=None, metavar="TIME", help="End (default now), as --since.")
@click.option("--run", "run", type=int, default=None, help="Only this run (its lifetime).")
@click.option("--app", "app", default=None, help="Only runs of this app.")
@click.option("--format", "-f", "fmt", type=_FORMAT, default=None,
              help="Output format; default from -o's extension, else md.")
@click.option("--output", "-o", default=None, metavar="FILE",
              help="Write here (atomically) instead of stdout.")
@click.option("--charts", is_flag=True,
              help="Markdown: add a sparkline of each series and of each chart.")
@click.option("--title", default=None, help="Title of the report.")
@db_option
@holter_errors
def report_cmd(period: str | None, since: str | None, until: str | None, run: int | None,
               app: str | None, fmt: str | None, output: str | None, charts: bool,
               title: str | None, db: str) -> None:
    """A report of a period, a run or an app: JSON, Markdown or a self-contained HTML page.

    Summary, runs, every series with count, rate and percentiles, operations, the
    slowest traces with their critical paths, system resources, anomalies and alerts
    when recorded, and recommendations each backed by a figure.
    """
    chosen = guess_format(output, fmt)
    if output not in (None, "-"):
        check_writable(output)  # fail before the work, not after it
    renderer = renderer_for(chosen)
    from holter.reports.build import build_report

    with open_store(db) as store:
        data = build_report(store, period=period, since=since, until=until, run=run, app=app,
                            title=title, charts=chosen == "html" or charts,
                            sparklines=charts and chosen == "md")
    _output(renderer.render(data), output)


@click.command("compare")
@click.argument("runs", nargs=-1, type=int, metavar="[RUN_A] [RUN_B]")
@click.option("--baseline", "-b", default=None, metavar="SPEC",
              help="Compare with the N runs before: N, 'last N' or 'last N runs of app X'.")
@click.option("--app", "app", default=None, help="The app of the baseline runs.")
@click.option("--fail-on", "fail_on", multiple=True, metavar="EXPR",
              help="Exit 1 on a significant change beyond it: p95>+10%, rate<-20%, "
                   "p99(NAME)>+5% (repeatable).")
@click.option("--format", "-f", "fmt", type=_FORMAT, default=None,
              help="Output format; default from -o's extension, else md.")
@click.option("--output", "-o", default=None, metavar="FILE",
              help="Write here (atomically) instead of stdout.")
@db_option
@holter_errors
def compare_cmd(runs: tuple[int, ...], baseline: str | None, app: str | None,
                fail_on: tuple[str, ...], fmt: str | None, output: str | None, db: str) -> None:
    """Compare two runs, or the runs before a run (--baseline), series by series.

    Changes in p50, p95, p99 and rate, each with a statistical test so that noise is not
    a regression. Exit code 1 when a --fail-on gate is crossed, so it can gate CI.
    """
    if len(runs) > 2:
        raise CliError("give at most two runs: holter compare RUN_A RUN_B")
    chosen = guess_format(output, fmt)
    if output not in (None, "-"):
        check_writable(output)
    renderer = renderer_for(chosen)
    from holter.reports.compare import compare

    run_a = runs[0] if runs else None
    run_b = runs[1] if len(runs) > 1 else None
    with open_store(db) as store:
        data = compare(store, run_a, run_b, baseline=baseline, app=app, fail_on=fail_on)
    _output(renderer.render(data), output)
    if data.failed:
        for line in data.regressions:
            click.echo(f"holter: regression: {line}", err=True)
        raise SystemExit(1)


__all__ = ["compare_cmd", "report_cmd"]
