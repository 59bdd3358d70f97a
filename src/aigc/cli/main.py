"""The `aigc` command: composes the command groups. Each command is a thin call into the API."""

from __future__ import annotations

import typer

from aigc.cli import (assistant, audit, base, copy, data, demo, evaluate, export, generate, label, monitor, recommend,
                      runs, safety, serve, synthesize, train, tune)
from aigc.cli.common import guard

app = typer.Typer(
    name="aigc",
    help="aigc-studio: ingest your data, train generative models, generate, evaluate, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command()(guard(data.ingest))
app.command()(guard(data.datasets))
app.command()(guard(runs.runs))
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
