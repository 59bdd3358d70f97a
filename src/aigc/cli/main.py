"""The `aigc` command: composes the command groups. Each command is a thin call into the API."""

from __future__ import annotations

import os
from functools import partial
from typing import Annotated

import typer

from aigc.cli import (assistant, audit, base, copy, data, db, demo, evaluate, export, generate, label,
                      monitor, recommend, runs, safety, serve, synthesize, train, tune)
from aigc.cli.common import guard
from aigc.workspace import ENV_DB_URL

app = typer.Typer(
    name="aigc",
    help="aigc-studio: ingest your data, train generative models, generate, evaluate, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _options(
    ctx: typer.Context,
    db_url: Annotated[str | None, typer.Option(
        "--db-url", help="The catalog's database URL for this command, e.g. "
                         "postgresql://USER:PASSWORD@HOST:5432/DB (default: $AIGC_DB_URL, else the SQLite "
                         "file catalog.db in the workspace).",
        show_default=False)] = None,
) -> None:
    """aigc-studio: ingest your data, train generative models, generate, evaluate, serve."""
    if db_url:
        # through the environment, so that every workspace this command opens, and the processes it
        # starts, use it; put back when the command ends (for callers that run several in one process)
        ctx.call_on_close(partial(_set_db_url, os.environ.get(ENV_DB_URL)))
        _set_db_url(db_url)


def _set_db_url(url: str | None) -> None:
    if url is None:
        os.environ.pop(ENV_DB_URL, None)
    else:
        os.environ[ENV_DB_URL] = url


app.command()(guard(data.ingest))
app.command()(guard(data.datasets))
app.command()(guard(runs.runs))
app.command()(guard(runs.push))
app.command()(guard(data.show))
app.command()(guard(train.train))
app.command()(guard(generate.generate))
app.command(name="eval")(guard(evaluate.eval_))
app.command()(guard(synthesize.synthesize))
app.command()(guard(synthesize.report))
app.command()(guard(export.export))
app.command()(guard(tune.tune))
app.command()(guard(demo.demo))
app.command()(guard(serve.serve))
app.command()(guard(serve.logs))
app.add_typer(serve.keys_app, name="keys")
app.add_typer(base.base_app, name="base")
app.add_typer(safety.pii_app, name="pii")
app.add_typer(safety.policy_app, name="policy")
app.add_typer(label.label_app, name="label")
app.add_typer(audit.audit_app, name="audit")
app.add_typer(copy.copy_app, name="copy")
app.add_typer(assistant.kb_app, name="kb")
app.add_typer(assistant.assistant_app, name="assistant")
app.add_typer(monitor.monitor_app, name="monitor")
app.add_typer(recommend.recommend_app, name="recommend")
app.add_typer(db.db_app, name="db")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
