"""`aigc copy write|batch|rules|event|report`: the copywriting desk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aigc.cli.common import JsonOpt, RateProgress, ThreadsOpt, WorkspaceOpt, guard, out, parse_pairs, threads
from aigc.errors import InvalidInput

copy_app = typer.Typer(help="The copywriting desk: product copy checked against the attributes and the brand "
                            "rules, ranked; a catalogue in batch; A/B variants.", no_args_is_help=True)

ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="The instruct model: a base (`aigc base list`) or an adapted run [default: the bundled "
                    "smollm2-135m-instruct].", show_default=False)]
RulesOpt = Annotated[Path | None, typer.Option(
    "--rules", help="Brand rules (YAML/JSON) for this call [default: the workspace's, `aigc copy rules`].",
    show_default=False)]


def _product(attrs: list[str] | None, file: Path | None) -> dict:
    if file is not None:
        try:
            data = json.loads(Path(file).read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise InvalidInput(f"--product-file {file}: {e}") from None
        return data.get("attributes", data) if isinstance(data, dict) else data
    if not attrs:
        raise InvalidInput("give the product: --attr 材质=亚麻 --attr 颜色=米白 ... or --product-file FILE.json")
    return parse_pairs(attrs, "--attr")


@copy_app.command("write")
@guard
def write(
    attr: Annotated[list[str] | None, typer.Option("--attr", help="An attribute KEY=VALUE (repeat).",
                                                   show_default=False)] = None,
    product_file: Annotated[Path | None, typer.Option(help="A JSON object of attributes instead.",
                                                      show_default=False)] = None,
    channel: Annotated[str, typer.Option(help="title | detail | social | ad (the rules' channels).")] = "detail",
    tone: Annotated[str | None, typer.Option(help="e.g. warm, 温和.", show_default=False)] = None,
    audience: Annotated[str | None, typer.Option(help="e.g. young parents, 上班族.", show_default=False)] = None,
    n: Annotated[int, typer.Option("--n", help="Candidates to return.", min=1, max=20)] = 5,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    model: ModelOpt = None,
    rules: RulesOpt = None,
    workspace: WorkspaceOpt = None,
    n_threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Ranked copy candidates for one product, each with its checks."""
    from aigc.apps import copy

    threads(n_threads)
    brief = {k: v for k, v in (("channel", channel), ("tone", tone), ("audience", audience)) if v}
    result = copy.write(_product(attr, product_file), brief, n=n, rules=rules, model=model, workspace=workspace,
                        seed=seed)
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
        return
    table = Table("#", "copy", "passed", "coverage", "missing", "problems")
    for c in result["candidates"]:
        ch = c["checks"]
        problems = [f"{v['rule']}: {v.get('text') or v['detail']}" for v in ch["violations"]]
        problems += [f"invented {i['key']}: {i['stated']} (is {i['expected']})" for i in ch["invented"]]
        table.add_row(str(c["rank"]), c["text"], "yes" if ch["passed"] else "no", f"{ch['coverage']['score']:.2f}",
                      ", ".join(ch["coverage"]["missing"]) or "-", "; ".join(problems) or "-")
    out.print(table)


@copy_app.command("batch")
@guard
def batch(
    file: Annotated[Path, typer.Argument(help="Products: JSONL of {id, attributes, brief}, or a CSV/TSV/Excel "
                                              "table whose columns are attributes (id, channel, tone... too).")],
    out_file: Annotated[Path, typer.Option("--out", help="Where to write: .csv or .jsonl (labelled).")],
    channel: Annotated[str | None, typer.Option(help="The channel of products without a brief.",
                                                show_default=False)] = None,
    n: Annotated[int, typer.Option("--n", help="Candidates per product (the best is written first).",
                                   min=1, max=20)] = 5,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    model: ModelOpt = None,
    rules: RulesOpt = None,
    workspace: WorkspaceOpt = None,
    n_threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy for a whole catalogue, with progress in products/s."""
    from aigc.apps import copy

    threads(n_threads)
    summary = copy.write_batch(file, out_file, brief={"channel": channel} if channel else None, n=n, rules=rules,
                               model=model, workspace=workspace, seed=seed,
                               progress=RateProgress("writing copy", "products"))
    if as_json:
        out.print_json(json.dumps(summary, ensure_ascii=False))
    else:
        out.print(f"wrote {summary['out']}: {summary['products']} products, {summary['passed']} pass every rule")


@copy_app.command("rules")
@guard
def rules_cmd(
    file: Annotated[Path | None, typer.Argument(help="New brand rules (YAML/JSON); leave out to show them.",
                                                show_default=False)] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show or replace the workspace's brand rules."""
    from aigc.apps import copy

    rules = copy.set_rules(file, workspace) if file is not None else copy.workspace_rules(workspace).to_dict()
    out.print_json(json.dumps(rules, ensure_ascii=False)) if as_json else out.print(json.dumps(
        rules, ensure_ascii=False, indent=2))


@copy_app.command("event")
@guard
def event(
    experiment: Annotated[str, typer.Argument(help="The experiment, usually the product id.")],
    variant: Annotated[str, typer.Argument(help="'control' or a candidate id.")],
    kind: Annotated[str, typer.Argument(help="shown | chosen | clicked.")],
    text: Annotated[str | None, typer.Option(help="The variant's text (teaches the reward model on 'chosen').",
                                             show_default=False)] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Record that a variant was shown, chosen or clicked."""
    from aigc.apps import copy

    copy.record_event(experiment, variant, kind, text, workspace=workspace)
    out.print(f"recorded {kind} of {variant} in {experiment}")


@copy_app.command("report")
@guard
def report(
    experiment: Annotated[str, typer.Argument(help="The experiment, usually the product id.")],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Each variant's rate and its lift over the control (with a 95 % confidence interval)."""
    from aigc.apps import copy

    rep = copy.report(experiment, workspace=workspace)
    if as_json:
        out.print_json(json.dumps(rep, ensure_ascii=False))
        return
    table = Table("variant", "shown", "successes", "rate", "lift", "95% CI", "P(beats control)")
    for v in rep["variants"]:
        lift = v.get("lift") or {}
        ci = lift.get("ci")
        table.add_row(v["variant"], str(v["shown"]), str(v["successes"]),
                      "-" if v["rate"] is None else f"{v['rate']:.3f}",
                      f"{lift['absolute_lift']:+.3f}" if "absolute_lift" in lift else "-",
                      f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-",
                      f"{lift['p_variant_better']:.2f}" if "p_variant_better" in lift else "-")
    out.print(table)
