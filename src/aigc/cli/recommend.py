"""`aigc recommend train|for|similar|list`: recommendations from item text and behaviour."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aigc.cli.common import JsonOpt, RateProgress, ThreadsOpt, WorkspaceOpt, err, guard, out, threads

recommend_app = typer.Typer(help="Recommendations: train on a catalogue and interactions (popularity, ALS, BPR "
                                 "or the hybrid that reads item text), then ask for a user's items or an "
                                 "item's look-alikes.", no_args_is_help=True)

_UNITS = {"reading interactions": "rows", "embedding item texts": "items"}
NameArg = Annotated[str, typer.Argument(help="The recommender (`aigc recommend list`).")]
KOpt = Annotated[int, typer.Option("--k", help="How many items.", min=1, max=1000)]


def _column(role: str, default: str) -> object:
    return typer.Option(f"--{role}-column", help=f"The {role} column [default: found by name: {default}].",
                        show_default=False)


class _Progress:
    """Rows/s and items/s of the long stages on stderr (one RateProgress a stage)."""

    def __init__(self) -> None:
        # reading is timed from the start: the API reports it once, when the rows are read
        self.bars: dict[str, RateProgress] = {"reading interactions": RateProgress("reading interactions", "rows")}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage.startswith("fitting"):
            if done == 0:
                err.print(f"{stage}...")
            return
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = RateProgress(stage, _UNITS.get(stage, "steps"))
        bar(done, total)


@recommend_app.command("train")
@guard
def train(
    name: Annotated[str, typer.Argument(help="The recommender's name (a retrain replaces it).")],
    items: Annotated[Path, typer.Option("--items", help="The catalogue: CSV, TSV, JSONL, Parquet or Excel with an "
                                                        "id and text columns (title, description, tags, category).")],
    interactions: Annotated[Path, typer.Option("--interactions", help="Interactions: user, item, event (view, "
                                                                      "click, cart, buy...), timestamp.")],
    model: Annotated[str, typer.Option(help="popularity | als | bpr | hybrid (ours: text + behaviour).")] = "hybrid",
    item_column: Annotated[str | None, _column("item", "item, item_id, id, sku, 商品id")] = None,
    title_column: Annotated[str | None, _column("title", "title, name, 标题, 名称")] = None,
    description_column: Annotated[str | None, _column("description", "description, text, 描述, 详情")] = None,
    category_column: Annotated[str | None, _column("category", "category, 类目, 分类")] = None,
    tags_column: Annotated[str | None, _column("tags", "tags, keywords, 标签")] = None,
    available_column: Annotated[str | None, _column("available", "available, in_stock, 有货")] = None,
    user_column: Annotated[str | None, _column("user", "user, user_id, customer, 用户")] = None,
    event_column: Annotated[str | None, _column("event", "event, action, behavior, 行为")] = None,
    time_column: Annotated[str | None, _column("time", "timestamp, time, date, 时间")] = None,
    drop_unknown: Annotated[bool, typer.Option("--drop-unknown", help="Skip interactions with items not in the "
                                                                      "catalogue (else: an error naming them).")] = False,
    factors: Annotated[int | None, typer.Option(help="Latent factors of als, bpr, hybrid [default: 64].", min=1,
                                                show_default=False)] = None,
    iterations: Annotated[int | None, typer.Option(help="Training iterations of als, bpr, hybrid [default: 15 for "
                                                        "ALS, 100 for BPR].", min=1, show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    workspace: WorkspaceOpt = None,
    n_threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train (or retrain) a recommender; prints counts, the time taken and any warnings."""
    from aigc.apps import recommend

    threads(n_threads)
    opts = {k: v for k, v in dict(item_column=item_column, title_column=title_column,
                                  description_column=description_column, category_column=category_column,
                                  tags_column=tags_column, available_column=available_column, user_column=user_column,
                                  event_column=event_column, time_column=time_column, factors=factors,
                                  iterations=iterations).items() if v is not None}
    summary = recommend.train(name, str(items), str(interactions), model=model, workspace=workspace, seed=seed,
                              progress=_Progress(), drop_unknown=drop_unknown, **opts)
    if as_json:
        out.print_json(json.dumps(summary, ensure_ascii=False))
        return
    for warning in summary["warnings"]:
        err.print(f"warning: {warning}")
    blend = summary.get("blend")
    out.print(f"{name}: {summary['model']} on {summary['interactions']:,} interactions of {summary['users']:,} users "
              f"with {summary['items']:,} items ({summary['items_without_interactions']:,} without interactions, "
              f"{summary['items'] - summary['available']:,} unavailable) in {summary['seconds']:.1f} s"
              + (f"; weights behaviour/text/taste {_weights(blend['warm'])} for items with interactions, "
                 f"{_weights(blend['cold'])} for new ones" if blend else ""))


def _weights(w: dict) -> str:
    return "/".join(f"{v:g}" for v in w.values())


def _items_table(items: list[dict], reasons: bool) -> Table:
    table = Table("#", "item", "title", "score", *(["why"] if reasons else []))
    for rank, it in enumerate(items, 1):
        table.add_row(str(rank), it["item"], it["title"], f"{it['score']:.3f}", *([it["reason"] or "-"] if reasons else []))
    return table


@recommend_app.command("for")
@guard
def for_user(
    name: NameArg,
    user: Annotated[str, typer.Argument(help="The user id (one without history gets the most popular items).")],
    k: KOpt = 10,
    explain: Annotated[bool, typer.Option("--explain", help="Say why each item (in the item's language).")] = False,
    include_seen: Annotated[bool, typer.Option("--include-seen", help="Keep items the user already "
                                                                      "touched.")] = False,
    copy: Annotated[bool, typer.Option("--copy", help="Personalised copy for each item through the copy desk "
                                                      "(an instruct model: slower).")] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The best items for a user."""
    from aigc.apps import recommend

    result = recommend.recommend(name, user, k, workspace=workspace, exclude_seen=not include_seen, explain=explain,
                                 copy=copy)
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
        return
    if result["note"]:
        err.print(result["note"])
    out.print(_items_table(result["items"], explain))
    for item in result["items"] if copy else ():
        out.print(f"{item['item']}: {item.get('copy') or '-'}")


@recommend_app.command("similar")
@guard
def similar(
    name: NameArg,
    item: Annotated[str, typer.Argument(help="The item id.")],
    k: KOpt = 10,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The items most like one item (by text, and by who bought them when it has interactions)."""
    from aigc.apps import recommend

    result = recommend.similar(name, item, k, workspace=workspace)
    if as_json:
        out.print_json(json.dumps(result, ensure_ascii=False))
        return
    out.print(f"like {result['item']} ({result['title']}):")
    out.print(_items_table(result["items"], False))


@recommend_app.command("list")
@guard
def list_(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """The recommenders of the workspace."""
    from aigc.apps import recommend

    rows = recommend.models(workspace)
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    if not rows:
        out.print("no recommenders yet: aigc recommend train NAME --items ITEMS --interactions EVENTS")
        return
    table = Table("name", "model", "items", "users", "interactions", "trained")
    for r in rows:
        table.add_row(r["name"], r["model"], f"{r['items']:,}", f"{r['users']:,}", f"{r['interactions']:,}",
                      r["created"])
    out.print(table)
