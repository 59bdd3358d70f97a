"""`aigc monitor train|models|classify|topics|suggest|set|list|add|watch|trends|alerts|items`:
opinion monitoring."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from aigc.cli.common import JsonOpt, RateProgress, ThreadsOpt, WorkspaceOpt, err, guard, hms, out, threads
from aigc.errors import InvalidInput

monitor_app = typer.Typer(help="Opinion monitoring: sentiment and topic models, streams of posts, trends, and "
                               "alerts that explain themselves.", no_args_is_help=True)

TextColOpt = Annotated[str | None, typer.Option("--text-column", help="The text column [default: found by name: "
                                                "text, review, content, 评论...].", show_default=False)]
TimeColOpt = Annotated[str | None, typer.Option("--time-column", help="The timestamp column [default: found by "
                                                "name: timestamp, time, date, 时间...].", show_default=False)]


def _train_progress(p: dict) -> None:
    eta = p.get("eta_s")
    err.print(f"training: epoch {p['epoch']} step {p['step']}/{p['steps']} loss {p['loss']:.3f} "
              f"{p['texts_per_s']:,.0f} texts/s {p['tokens_per_s']:,.0f} tok/s ETA {hms(eta) if eta else '--:--'}")


class _Every:
    def __init__(self, fn, seconds: float = 3.0):
        import time

        self.fn, self.seconds, self.clock, self.last = fn, seconds, time.perf_counter, 0.0

    def __call__(self, p: dict) -> None:
        now = self.clock()
        if now - self.last >= self.seconds:
            self.last = now
            self.fn(p)


@monitor_app.command("train")
@guard
def train(
    source: Annotated[str, typer.Argument(help="Labelled texts: a CSV/TSV/JSONL/Excel/Parquet file, or an "
                                               "ingested text dataset's name.")],
    label_column: Annotated[str, typer.Option("--label-column", help="The sentiment label column.")],
    name: Annotated[str | None, typer.Option("--name", help="The model's name [default: the source's stem].",
                                             show_default=False)] = None,
    topic_column: Annotated[str | None, typer.Option("--topic-column", help="A topic column to learn topics "
                                                     "from too.", show_default=False)] = None,
    text_column: TextColOpt = None,
    kind: Annotated[str, typer.Option("--kind", help="transformer (ours: a small transformer fused with n-grams) "
                                                     "or tfidf (the baseline).")] = "transformer",
    negative_label: Annotated[str | None, typer.Option("--negative-label", help="The label that means negative "
                                                       "[default: found by name: 0, negative, 差评...].",
                                                       show_default=False)] = None,
    time_budget: Annotated[str, typer.Option("--time-budget", help="Training time limit, e.g. 10m.")] = "15m",
    epochs: Annotated[int, typer.Option("--epochs", min=1, max=50, help="At most this many epochs.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    workspace: WorkspaceOpt = None,
    n_threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a sentiment (and topic) classifier on labelled texts."""
    from aigc.apps import monitor
    from aigc.training import parse_duration

    threads(n_threads)
    model_name = name or Path(source).stem
    summary = monitor.train(model_name, source, label_column=label_column, text_column=text_column,
                            topic_column=topic_column, kind=kind, negative_label=negative_label,
                            time_budget=parse_duration(time_budget), max_epochs=epochs, seed=seed,
                            workspace=workspace, progress=_Every(_train_progress))
    if as_json:
        out.print_json(json.dumps(summary, ensure_ascii=False, default=str))
        return
    fusion = summary.get("fusion") or {}
    out.print(f"trained {summary['name']} ({summary['kind']}) on {summary['texts']:,} texts in "
              f"{summary.get('seconds', summary.get('ngram_seconds'))} s; labels {summary['labels']}, negative = "
              f"{summary['negative']!r}" + (f"; topics {len(summary['topics'])}" if summary["topics"] else "") +
              (f"; held-out accuracy: encoder {fusion['encoder_val_accuracy']}, n-grams "
               f"{fusion['ngram_val_accuracy']}, fusion weight {fusion['weight']}" if fusion else ""))


@monitor_app.command("models")
@guard
def models_(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """The workspace's monitor models."""
    from aigc.apps import monitor

    rows = monitor.models(workspace)
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("name", "kind", "labels", "negative", "topics")
    for r in rows:
        table.add_row(r["name"], r["kind"], ", ".join(r["labels"]), str(r["negative"]), str(len(r["topics"])))
    out.print(table)


@monitor_app.command("classify")
@guard
def classify(
    model: Annotated[str, typer.Argument(help="A monitor model (`aigc monitor models`).")],
    file: Annotated[Path, typer.Argument(help="A CSV/TSV/JSONL/Excel/Parquet file of texts.")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to write the scored rows (.csv, .tsv, .jsonl).")],
    text_column: TextColOpt = None,
    workspace: WorkspaceOpt = None,
    n_threads: ThreadsOpt = None,
) -> None:
    """Add label, prob, score and topic columns to every row of a file."""
    from aigc.apps import monitor

    threads(n_threads)
    r = monitor.classify_file(model, file, out_path, text_column=text_column, workspace=workspace,
                              progress=RateProgress("classifying", "rows"))
    out.print(f"wrote {r['out']}: {r['rows']:,} rows; labels {r['labels']}")


@monitor_app.command("topics")
@guard
def topics(
    file: Annotated[Path | None, typer.Argument(help="A YAML file of topic -> keywords to set (none: show).",
                                                show_default=False)] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Show or set the workspace's keyword lists (a keyword hit decides a post's topic)."""
    import yaml

    from aigc.apps import monitor

    kw = monitor.set_topics(file, workspace) if file is not None else monitor.keyword_topics(monitor._ws(workspace))
    out.print(yaml.safe_dump(kw, allow_unicode=True, sort_keys=False).rstrip() or "(no keyword lists)",
              markup=False)


@monitor_app.command("suggest")
@guard
def suggest(
    file: Annotated[Path, typer.Argument(help="Texts to cluster: a table file.")],
    k: Annotated[int, typer.Option("--k", min=2, max=50, help="Clusters.")] = 8,
    text_column: TextColOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Suggest topics (keywords and examples) from clusters of the texts."""
    from aigc.apps import monitor
    from aigc.data.table_sources import read_table

    frame = read_table(file)
    col = monitor._column(frame, text_column, monitor.TEXT_NAMES, "text", "--text-column")
    rows = monitor.suggest_topics(frame[col].dropna().astype(str).tolist(), k=k)
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("cluster", "size", "keywords", "example")
    for r in rows:
        table.add_row(str(r["cluster"]), str(r["size"]), ", ".join(r["keywords"]), r["examples"][0][:80])
    out.print(table)


@monitor_app.command("set")
@guard
def set_(
    name: Annotated[str, typer.Argument(help="The stream's name (created if new).")],
    model: Annotated[str | None, typer.Option("--model", help="Its monitor model.", show_default=False)] = None,
    period: Annotated[str | None, typer.Option("--period", help="hour or day.", show_default=False)] = None,
    rules: Annotated[str | None, typer.Option("--rules", help="Comma-separated: ewma, cusum, baseline.",
                                              show_default=False)] = None,
    sensitivity: Annotated[str | None, typer.Option("--sensitivity", help="low, medium or high.",
                                                    show_default=False)] = None,
    webhook: Annotated[str | None, typer.Option("--webhook", help="A URL alerts are POSTed to.",
                                                show_default=False)] = None,
    timezone: Annotated[str | None, typer.Option("--timezone", help="The zone of times without an offset, "
                                                 "e.g. Asia/Shanghai.", show_default=False)] = None,
    history: Annotated[int | None, typer.Option("--history", help="Periods the rules look back over.",
                                                show_default=False)] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Create a stream or change its settings."""
    from aigc.apps import monitor

    cfg = monitor.configure(name, workspace, model=model, period=period, rules=rules, sensitivity=sensitivity,
                            webhook=webhook, timezone=timezone, history=history)
    out.print_json(json.dumps(cfg, ensure_ascii=False))


@monitor_app.command("list")
@guard
def list_(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """The workspace's streams."""
    from aigc.apps import monitor

    rows = monitor.streams(workspace)
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("stream", "model", "period", "rules", "sensitivity", "items", "alerts")
    for r in rows:
        table.add_row(r["name"], r["model"], r["period"], ",".join(r["rules"]), r["sensitivity"], f"{r['items']:,}",
                      str(r["alerts"]))
    out.print(table)


def _print_alerts(events: list[dict]) -> None:
    for a in events:
        why = a.get("explanation") or {}
        line = why.get("summary") or f"{a['rule']}: {a['topic']} {a['kind']} at {a['period']}"
        out.print(f"[{a['kind']}] {a['period'][:16]} {a['rule']} {a['topic']}: {line}", markup=False)


@monitor_app.command("add")
@guard
def add(
    name: Annotated[str, typer.Argument(help="The stream.")],
    file: Annotated[Path, typer.Argument(help="Posts: a table file with a text and a timestamp column.")],
    text_column: TextColOpt = None,
    time_column: TimeColOpt = None,
    id_column: Annotated[str | None, typer.Option("--id-column", help="The posts' own ids.",
                                                  show_default=False)] = None,
    workspace: WorkspaceOpt = None,
    n_threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a file of posts into a stream and run its alert rules."""
    from aigc.apps import monitor

    threads(n_threads)
    r = monitor.add(name, file, text_column=text_column, time_column=time_column, id_column=id_column,
                    workspace=workspace, progress=RateProgress("scoring", "posts"))
    if as_json:
        out.print_json(json.dumps({k: v for k, v in r.items() if k != "items"}, ensure_ascii=False, default=str))
        return
    out.print(f"added {r['added']:,} posts to {name} in {r['seconds']} s" +
              (f" ({r['skipped_empty']} empty skipped)" if r["skipped_empty"] else "") +
              f"; {sum(e['kind'] == 'alert' for e in r['new_alerts'])} new alert(s)")
    _print_alerts(r["new_alerts"])


@monitor_app.command("watch")
@guard
def watch(
    name: Annotated[str, typer.Argument(help="The stream.")],
    folder: Annotated[Path, typer.Argument(help="A folder where new table files appear.")],
    interval: Annotated[float, typer.Option("--interval", min=0.5, help="Seconds between looks.")] = 5.0,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    text_column: TextColOpt = None,
    time_column: TimeColOpt = None,
    workspace: WorkspaceOpt = None,
    n_threads: ThreadsOpt = None,
) -> None:
    """Add each new file that appears in a folder (Ctrl-C stops)."""
    from aigc.apps import monitor

    threads(n_threads)

    def report(file: str, r: dict) -> None:
        if "error" in r:
            err.print(f"{file}: skipped: {r['error']}", markup=False)
        else:
            out.print(f"{file}: added {r['added']:,} posts; {len(r['new_alerts'])} new event(s)", markup=False)
            _print_alerts(r["new_alerts"])

    try:
        n = monitor.watch(name, folder, once=once, interval=interval, workspace=workspace, text_column=text_column,
                          time_column=time_column, on_batch=report)
    except KeyboardInterrupt:
        return
    if once:
        out.print(f"{n} file(s) added")


@monitor_app.command("trends")
@guard
def trends(
    name: Annotated[str, typer.Argument(help="The stream.")],
    period: Annotated[str | None, typer.Option("--period", help="hour or day [default: the stream's].",
                                               show_default=False)] = None,
    topic: Annotated[str | None, typer.Option("--topic", help="One topic ('*' = all posts) [default: all posts].",
                                              show_default=False)] = None,
    start: Annotated[str | None, typer.Option("--start", show_default=False)] = None,
    end: Annotated[str | None, typer.Option("--end", show_default=False)] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Volume and negative share per period."""
    from aigc.apps import monitor

    t = monitor.trends(name, period=period, start=start, end=end, workspace=workspace)
    if as_json:
        out.print_json(json.dumps(t, ensure_ascii=False))
        return
    want = topic or monitor.ALL
    series = [s for s in t["series"] if s["topic"] == want]
    if not series:
        raise InvalidInput(f"no posts on topic {want!r}: the topics are {[s['topic'] for s in t['series']]}")
    table = Table("period", "volume", "negative", "share")
    for p in series[0]["points"]:
        table.add_row(p["t"][:16], str(p["volume"]), str(p["negative"]), "-" if p["share"] is None else
                      f"{p['share']:.1%}")
    out.print(table)


@monitor_app.command("alerts")
@guard
def alerts(
    name: Annotated[str, typer.Argument(help="The stream.")],
    limit: Annotated[int, typer.Option("--limit", min=1, max=10000)] = 50,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The stream's alert and resolved events, newest first, with their explanations."""
    from aigc.apps import monitor

    rows = monitor.list_alerts(name, limit=limit, workspace=workspace)
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False, default=str))
        return
    _print_alerts(rows)


@monitor_app.command("items")
@guard
def items(
    name: Annotated[str, typer.Argument(help="The stream.")],
    topic: Annotated[str | None, typer.Option("--topic", show_default=False)] = None,
    start: Annotated[str | None, typer.Option("--start", show_default=False)] = None,
    end: Annotated[str | None, typer.Option("--end", show_default=False)] = None,
    negative: Annotated[bool | None, typer.Option("--negative/--positive", help="Only negative (or only "
                                                  "the others).", show_default=False)] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The posts behind a point of the chart, newest first."""
    from aigc.apps import monitor

    rows = monitor.items(name, topic=topic, start=start, end=end, negative=negative, limit=limit,
                         workspace=workspace)
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table("time", "topic", "label", "prob", "text")
    for r in rows:
        table.add_row(r["ts"][:16], r["topic"], r["label"], f"{r['prob']:.2f}", r["text"][:80])
    out.print(table)
