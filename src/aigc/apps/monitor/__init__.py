"""Opinion monitoring: what people write, scored as it arrives, and a warning when negative opinion
on a topic spikes, with the reason.

    from aigc.apps import monitor
    monitor.train("reviews", "labelled.csv", label_column="label", topic_column="cat")   # a model
    monitor.classify_file("reviews", "new.csv", "scored.csv", text_column="review")       # a file
    monitor.configure("brand", model="reviews", period="day", sensitivity="medium")       # a stream
    monitor.add("brand", "posts.csv", time_column="time")                                 # posts in
    monitor.trends("brand"), monitor.list_alerts("brand"), monitor.items("brand", topic="电池")

A stream's settings are ``<workspace>/monitor/streams/<name>.json``; its posts (text redacted with
the policy's log operators, label, probability, score, topic) and alert events are the catalog's
``monitor_items`` and ``monitor_alerts`` tables. Topics come from the model (a topic column at
training), else from the workspace's keyword lists (``<workspace>/monitor/topics.yaml``: topic ->
keywords; a keyword hit wins over the model), else ``other``; :func:`suggest_topics` proposes
lists from clusters. Modules: :mod:`.classifier` (the models), :mod:`.times` (timestamps),
:mod:`.alerts` (the rules and explanations), :mod:`.replay` (a generator with known answers).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aigc.errors import InvalidInput, NotFound

log = logging.getLogger("aigc.monitor")

PERIODS = ("hour", "day")
SENSITIVITIES = ("low", "medium", "high")
RULES = ("ewma", "cusum", "baseline")
DEFAULTS = {"model": None, "period": "day", "rules": list(RULES), "sensitivity": "medium", "webhook": None,
            "timezone": "UTC", "history": 90}
ALL = "*"  # the topic of an alert on all posts
_locks: dict[str, threading.Lock] = {}


def _ws(workspace: Any):
    from aigc import open_workspace

    return open_workspace(workspace)


def _lock(ws: Any, name: str) -> threading.Lock:
    key = f"{Path(ws.root).resolve()}::{name}"
    return _locks.setdefault(key, threading.Lock())


# -- models ----------------------------------------------------------------------------------


def _frame(source: str | Path, ws: Any):
    """A labelled source as a frame: a table file, or an ingested text dataset (text + conditions)."""
    import pandas as pd

    from aigc.data.table_sources import read_table

    p = Path(source)
    if p.exists():
        return read_table(p)
    if ws.has_dataset(str(source)):
        from aigc.data.dataset import read_text_split

        rows = []
        for split in ("train", "val", "test"):
            rows += [{"text": r.text, **r.cond} for r in read_text_split(ws.dataset_path(str(source)), split)]
        return pd.DataFrame(rows)
    raise NotFound(f"{source!r} is neither a file nor a dataset of this workspace (`aigc datasets` lists them)")


def _column(frame: Any, given: str | None, names: Sequence[str], what: str, flag: str) -> str:
    if given is not None:
        if given not in frame.columns:
            raise InvalidInput(f"no column {given!r} for {what}: the columns are {list(frame.columns)}")
        return given
    lower = {str(c).strip().lower(): c for c in frame.columns}
    for n in names:
        if n in lower:
            return lower[n]
    raise InvalidInput(f"no {what} column found among {list(frame.columns)}: name it with {flag}")


TEXT_NAMES = ("text", "review", "content", "comment", "post", "body", "message", "评论", "内容", "文本", "正文")
TIME_NAMES = ("timestamp", "time", "ts", "date", "datetime", "created_at", "created", "时间", "日期", "发布时间")


def train(name: str, source: str | Path, *, label_column: str, text_column: str | None = None,
          topic_column: str | None = None, kind: str = "transformer", negative_label: str | None = None,
          time_budget: float = 900.0, max_epochs: int = 4, seed: int = 0, workspace: Any = None,
          progress: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train a sentiment (and topic) model on a labelled table file or text dataset; returns its summary."""
    from aigc.apps.monitor import classifier
    from aigc.workspace import check_name

    check_name(name, "model name")
    ws = _ws(workspace)
    frame = _frame(source, ws)
    text_col = _column(frame, text_column, TEXT_NAMES, "text", "--text-column")
    label_col = _column(frame, label_column, (), "label", "--label-column")
    topic_col = _column(frame, topic_column, (), "topic", "--topic-column") if topic_column else None
    keep = frame[text_col].notna() & frame[label_col].notna()
    if topic_col:
        keep &= frame[topic_col].notna()
    dropped = int((~keep).sum())
    frame = frame[keep]
    texts = frame[text_col].astype(str).str.replace("\ufeff", "", regex=False).str.strip().tolist()
    model = classifier.fit(texts, frame[label_col].astype(str).str.strip().tolist(),
                           frame[topic_col].astype(str).tolist() if topic_col else None, kind=kind,
                           negative=negative_label, time_budget=time_budget, max_epochs=max_epochs, seed=seed,
                           progress=progress)
    model.info.update(source=str(source), text_column=text_col, label_column=label_col, topic_column=topic_col,
                      dropped_rows=dropped)
    dest = classifier.model_dir(ws, name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with ws.staging("monitor-model") as staged:
        model.save_to(staged)
        ws.publish(staged, dest, replace=True)
    return {"name": name, "kind": model.kind, "labels": model.labels, "negative": model.negative,
            "topics": model.topics, **model.info}


def models(workspace: Any = None) -> list[dict[str, Any]]:
    ws = _ws(workspace)
    out = []
    for name in ws.artifact_names("monitor/models"):  # their config.json only: no model is downloaded
        raw = ws.read_artifact_file("monitor/models", name, "config.json")
        if raw is not None:
            c = json.loads(raw)
            out.append({"name": name, "kind": c["kind"], "labels": c["labels"], "negative": c["negative"],
                        "topics": c["topics"]})
    return out


def _model(ws: Any, name: str):
    from aigc.apps.monitor import classifier

    ws.artifact_path("monitor/models", name)  # with an artifact store: fetched when missing or older here
    return classifier.load(ws, name)


def score_texts(ws: Any, model_name: str, texts: Sequence[str]) -> list[dict[str, Any]]:
    """Label, probability, negative, score and topic of each text (keyword topics first)."""
    model = _model(ws, model_name)
    out = model.predict(texts)
    kw = keyword_topics(ws)
    for text, row in zip(texts, out):
        row["topic"] = _keyword_topic(text, kw) or row["topic"] or "other"
    return out


def classify_file(model_name: str, path: str | Path, out: str | Path, *, text_column: str | None = None,
                  workspace: Any = None, batch: int = 2048,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Add ``label``, ``prob``, ``score`` and ``topic`` columns to every row of a CSV/TSV/JSONL file,
    written to ``out`` (same kinds; by its suffix) through a temporary file."""
    from aigc.data.table_sources import read_table

    ws = _ws(workspace)
    _model(ws, model_name)  # a missing model fails before any reading
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".tsv", ".jsonl"):
        raise InvalidInput(f"--out {out.name}: write .csv, .tsv or .jsonl")
    frame = read_table(path)
    col = _column(frame, text_column, TEXT_NAMES, "text", "--text-column")
    texts = frame[col].fillna("").astype(str).tolist()
    rows: list[dict[str, Any]] = []
    for i in range(0, len(texts), batch):
        rows += score_texts(ws, model_name, texts[i : i + batch])
        if progress:
            progress(min(i + batch, len(texts)), len(texts))
    for key in ("label", "prob", "score", "topic"):
        frame[key] = [r[key] for r in rows]
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix.lower() == ".jsonl":
        frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_csv(tmp, index=False, sep="\t" if out.suffix.lower() == ".tsv" else ",")
    tmp.replace(out)
    return {"rows": len(frame), "out": str(out), "text_column": col,
            "labels": {k: sum(r["label"] == k for r in rows) for k in sorted({r["label"] for r in rows})}}


# -- topics ----------------------------------------------------------------------------------


def _topics_path(ws: Any, fetch: bool = True) -> Path:
    return ws.artifact_path("monitor", "topics.yaml", fetch)


def keyword_topics(ws: Any) -> dict[str, list[str]]:
    import yaml

    p = _topics_path(ws)
    if not p.exists():
        return {}
    return {str(k): [str(w).lower() for w in v] for k, v in (yaml.safe_load(p.read_text("utf-8")) or {}).items()}


def set_topics(topics: Mapping[str, Sequence[str]] | str | Path, workspace: Any = None) -> dict[str, list[str]]:
    """Replace the workspace's keyword lists: topic -> keywords (a dict, or a YAML/JSON file)."""
    import yaml

    ws = _ws(workspace)
    if isinstance(topics, (str, Path)):
        p = Path(topics)
        if not p.is_file():
            raise InvalidInput(f"no topics file {p}: give a YAML mapping of topic -> list of keywords")
        try:
            topics = yaml.safe_load(p.read_text("utf-8"))
        except yaml.YAMLError as e:
            raise InvalidInput(f"{p} is not YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(topics, Mapping) or not all(
            isinstance(v, (list, tuple)) and v and all(isinstance(w, (str, int)) and str(w).strip() for w in v)
            for v in topics.values()):
        raise InvalidInput("topics must map each topic to a non-empty list of keywords, e.g. "
                           "{\"battery\": [\"battery\", \"电池\", \"续航\"]}")
    clean = {str(k).strip(): [str(w).strip() for w in v] for k, v in topics.items()}
    ws.publish_text(_topics_path(ws, fetch=False), yaml.safe_dump(clean, allow_unicode=True, sort_keys=False))
    return clean


def _keyword_topic(text: str, kw: Mapping[str, Sequence[str]]) -> str | None:
    if not kw:
        return None
    low = text.lower()
    hits = {t: sum(low.count(w) for w in words) for t, words in kw.items()}
    best = max(hits, key=lambda t: hits[t])
    return best if hits[best] > 0 else None


def suggest_topics(texts: Sequence[str], k: int = 8, n_keywords: int = 6, seed: int = 0) -> list[dict[str, Any]]:
    """Topic suggestions from clusters: k-means over LSA embeddings (word TF-IDF, jieba for Chinese,
    reduced by truncated SVD) of the texts; each cluster with its size, its most distinctive words
    and two example texts. The user turns the ones they want into keyword lists."""
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    from aigc.apps.monitor.alerts import tokens as _tokens

    texts = [str(t) for t in texts if str(t).strip()]
    if len(texts) < max(10, 2 * k):
        raise InvalidInput(f"{len(texts)} texts are too few to suggest {k} topics: give at least {max(10, 2 * k)}")
    vec = TfidfVectorizer(tokenizer=_tokens, lowercase=False, token_pattern=None, min_df=2, max_df=0.5,
                          sublinear_tf=True)
    X = vec.fit_transform(texts)
    if X.shape[1] < 2:
        raise InvalidInput("the texts share too few words to cluster: give more, or longer, texts")
    emb = TruncatedSVD(min(100, X.shape[1] - 1), random_state=seed).fit_transform(X)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-9)
    labels = KMeans(k, n_init=4, random_state=seed).fit_predict(emb)
    words = np.array(vec.get_feature_names_out())
    overall = np.asarray(X.mean(0)).ravel()
    out = []
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        if not len(idx):
            continue
        lift = np.asarray(X[idx].mean(0)).ravel() - overall
        top = words[np.argsort(-lift)[:n_keywords]].tolist()
        out.append({"cluster": c, "size": int(len(idx)), "keywords": top,
                    "examples": [texts[i][:200] for i in idx[:2]]})
    return sorted(out, key=lambda d: -d["size"])


# -- streams ---------------------------------------------------------------------------------


def _stream_path(ws: Any, name: str, fetch: bool = True) -> Path:
    """The stream's settings, an artifact (its posts and alerts are catalog rows)."""
    from aigc.workspace import check_name

    return ws.artifact_path("monitor/streams", f"{check_name(name, 'stream name')}.json", fetch)


def settings(name: str, workspace: Any = None) -> dict[str, Any]:
    ws = _ws(workspace)
    p = _stream_path(ws, name)
    if not p.exists():
        raise NotFound(f"no monitor stream {name!r}: create it with `aigc monitor set {name} --model MODEL`")
    return {**DEFAULTS, **json.loads(p.read_text()), "name": name}


def configure(name: str, workspace: Any = None, **changes: Any) -> dict[str, Any]:
    """Create a stream or change its settings: ``model``, ``period`` (hour/day), ``rules``,
    ``sensitivity`` (low/medium/high), ``webhook``, ``timezone`` (of naive timestamps), ``history``
    (periods the rules look back over)."""
    ws = _ws(workspace)
    p = _stream_path(ws, name)
    current = {**DEFAULTS, **(json.loads(p.read_text()) if p.exists() else {})}
    changes = {k: v for k, v in changes.items() if v is not None}
    unknown = set(changes) - set(DEFAULTS)
    if unknown:
        raise InvalidInput(f"unknown stream setting(s) {sorted(unknown)}: use {sorted(DEFAULTS)}")
    new = {**current, **changes}
    if new["period"] not in PERIODS:
        raise InvalidInput(f"period {new['period']!r}: use one of {', '.join(PERIODS)}")
    if new["sensitivity"] not in SENSITIVITIES:
        raise InvalidInput(f"sensitivity {new['sensitivity']!r}: use one of {', '.join(SENSITIVITIES)}")
    rules = new["rules"].split(",") if isinstance(new["rules"], str) else list(new["rules"])
    bad = [r for r in rules if r not in RULES] or ([] if rules else ["(none)"])
    if bad:
        raise InvalidInput(f"alert rule(s) {bad}: use one or more of {', '.join(RULES)}")
    new["rules"] = rules
    if not isinstance(new["history"], int) or not 8 <= new["history"] <= 10000:
        raise InvalidInput(f"history {new['history']!r}: give a number of periods from 8 to 10000")
    if new["webhook"] and not str(new["webhook"]).startswith(("http://", "https://")):
        raise InvalidInput(f"webhook {new['webhook']!r}: give an http:// or https:// URL")
    from aigc.apps.monitor.times import check_timezone

    check_timezone(new["timezone"])
    if new["model"] is None:
        raise InvalidInput(f"stream {name!r} needs a model: pass --model (`aigc monitor models` lists them)")
    _model(ws, new["model"])
    ws.publish_text(_stream_path(ws, name, fetch=False), json.dumps(new, ensure_ascii=False, indent=2))
    return {**new, "name": name}


def streams(workspace: Any = None) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from aigc.workspace import monitor_alerts_table as A
    from aigc.workspace import monitor_items_table as T

    ws = _ws(workspace)
    out = []
    with ws.engine.connect() as conn:
        for file in ws.artifact_names("monitor/streams"):  # made here or in the artifact store
            if not file.endswith(".json"):
                continue
            name = file.removesuffix(".json")
            n = conn.execute(sa.select(sa.func.count()).where(T.c.stream == name)).scalar()
            a = conn.execute(sa.select(sa.func.count()).where(A.c.stream == name, A.c.kind == "alert")).scalar()
            out.append({**settings(name, ws), "items": n, "alerts": a})
    return out


def add(name: str, source: str | Path | Sequence[Mapping[str, Any]], *, text_column: str | None = None,
        time_column: str | None = None, id_column: str | None = None, workspace: Any = None,
        batch: int = 2048, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Score posts and store them in stream ``name``, then run its alert rules. ``source``: a table
    file, or a list of ``{"text", "timestamp"?, "id"?}`` (no timestamp = now). Every timestamp is
    parsed before anything is stored: one bad row refuses the whole batch, naming the row."""
    import pandas as pd

    from aigc.apps.monitor.times import parse_times

    ws = _ws(workspace)
    cfg = settings(name, ws)
    if isinstance(source, (str, Path)):
        from aigc.data.table_sources import read_table

        frame = read_table(source)
        tcol = _column(frame, text_column, TEXT_NAMES, "text", "--text-column")
        try:
            time_col = _column(frame, time_column, TIME_NAMES, "timestamp", "--time-column")
        except InvalidInput:
            raise InvalidInput(f"{Path(source).name} has no timestamp column among {list(frame.columns)}: name "
                               "it with --time-column (posts without times cannot be put on a timeline)") from None
        icol = _column(frame, id_column, (), "id", "--id-column") if id_column else None
        texts = frame[tcol].fillna("").astype(str).tolist()
        stamps = parse_times(frame[time_col].tolist(), cfg["timezone"], where=Path(source).name)
        refs = frame[icol].astype(str).tolist() if icol else [None] * len(frame)
    else:
        rows = list(source)
        if not rows:
            raise InvalidInput("no items given: send at least one {\"text\": ...}")
        texts, raw, refs = [], [], []
        for i, r in enumerate(rows):
            if not isinstance(r, Mapping) or not isinstance(r.get("text"), str):
                raise InvalidInput(f"item {i}: give an object with a \"text\" string")
            texts.append(r["text"])
            raw.append(r.get("timestamp") or pd.Timestamp.now(tz="UTC").isoformat())
            refs.append(None if r.get("id") is None else str(r["id"]))
        stamps = parse_times(raw, cfg["timezone"], where="items")
    from aigc.safety.guard import guard_for
    from aigc.workspace import monitor_items_table

    most = monitor_items_table.c.ref.type.length  # PostgreSQL refuses longer ids (SQLite would keep them)
    long = next((i for i, r in enumerate(refs) if r is not None and len(r) > most), None)
    if long is not None:
        raise InvalidInput(f"row {long + 1}: its id is {len(refs[long])} characters long; ids of at most "
                           f"{most} are kept: shorten them, or leave out the id column")
    keep = [i for i, t in enumerate(texts) if t.strip()]
    skipped = len(texts) - len(keep)

    guard = guard_for(ws)
    ops = guard.policy.pii_operators("log")
    stored = []
    started = time.perf_counter()
    with _lock(ws, name):
        for s in range(0, len(keep), batch):
            part = keep[s : s + batch]
            scored = score_texts(ws, cfg["model"], [texts[i] for i in part])
            values = [{"stream": name, "ts": stamps[i].isoformat(), "ref": refs[i],
                       "text": guard.scanner.redact(texts[i], ops).text, "label": r["label"], "prob": r["prob"],
                       "negative": bool(r["negative"]), "score": r["score"], "topic": r["topic"]}
                      for i, r in zip(part, scored)]
            with ws.engine.begin() as conn:
                conn.execute(monitor_items_table.insert(), values)
            stored += values
            if progress:
                progress(min(s + batch, len(keep)), len(keep))
        events = check_alerts(ws, name)
    return {"stream": name, "added": len(stored), "skipped_empty": skipped,
            "seconds": round(time.perf_counter() - started, 2),
            "items": [{k: v[k] for k in ("ts", "ref", "label", "prob", "score", "topic")} for v in stored[:1000]],
            "new_alerts": events}


def _frame_of(ws: Any, name: str, start: str | None = None, end: str | None = None,
              topic: str | None = None, negative: bool | None = None, limit: int | None = None,
              newest_first: bool = False):
    import pandas as pd
    import sqlalchemy as sa

    from aigc.workspace import monitor_items_table as T

    q = sa.select(T.c.id, T.c.ts, T.c.text, T.c.topic, T.c.negative, T.c.label, T.c.prob, T.c.score, T.c.ref) \
        .where(T.c.stream == name)
    if start:
        q = q.where(T.c.ts >= start)
    if end:
        q = q.where(T.c.ts < end)
    if topic and topic != ALL:
        q = q.where(T.c.topic == topic)
    if negative is not None:
        q = q.where(T.c.negative == negative)
    q = q.order_by(T.c.ts.desc() if newest_first else T.c.ts)
    if limit:
        q = q.limit(limit)
    with ws.engine.connect() as conn:
        frame = pd.DataFrame([dict(r) for r in conn.execute(q).mappings()],
                             columns=["id", "ts", "text", "topic", "negative", "label", "prob", "score", "ref"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    frame["negative"] = frame["negative"].astype(bool)
    return frame


def _window_start(ws: Any, name: str, cfg: Mapping[str, Any]) -> str | None:
    import pandas as pd
    import sqlalchemy as sa

    from aigc.workspace import monitor_items_table as T

    with ws.engine.connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(T.c.ts)).where(T.c.stream == name)).scalar()
    if newest is None:
        return None
    step = pd.Timedelta(hours=1) if cfg["period"] == "hour" else pd.Timedelta(days=1)
    return (pd.Timestamp(newest) - step * cfg["history"]).floor("h" if cfg["period"] == "hour" else "D").isoformat()


def check_alerts(ws: Any, name: str) -> list[dict[str, Any]]:
    """Run the stream's rules over its last ``history`` periods; store, log and send (webhook) the
    events not seen before. Returns the new events."""
    import sqlalchemy as sa

    from aigc.apps.monitor import alerts as rules
    from aigc.workspace import monitor_alerts_table as A
    from aigc.workspace import now

    cfg = settings(name, ws)
    start = _window_start(ws, name, cfg)
    if start is None:
        return []
    frame = _frame_of(ws, name, start=start)
    events = rules.scan(frame, period=cfg["period"], rules=tuple(cfg["rules"]), sensitivity=cfg["sensitivity"])
    new = []
    with ws.engine.begin() as conn:
        seen = {(r.kind, r.rule, r.topic, r.period) for r in conn.execute(
            sa.select(A.c.kind, A.c.rule, A.c.topic, A.c.period).where(A.c.stream == name, A.c.period >= start))}
        for ev in events:
            d = ev.to_dict()
            key = (d["kind"], d["rule"], d["topic"] or ALL, d["period"])
            if key in seen:
                continue
            seen.add(key)
            why = rules.explain(frame, ev, period=cfg["period"]) if ev.kind == "alert" else {}
            row = {"stream": name, "created_at": now(), "kind": d["kind"], "rule": d["rule"], "topic": key[2],
                   "period": d["period"], "share": d.get("share"), "expected": d.get("expected"),
                   "volume": d.get("volume"), "explanation": json.dumps(why, ensure_ascii=False, default=str)}
            row["id"] = conn.execute(A.insert().values(**row)).inserted_primary_key[0]
            new.append(_alert_out(row))
    for a in new:
        if a["kind"] == "alert":
            log.warning("monitor %s: %s", name, a["explanation"].get("summary") or a)
        else:
            log.info("monitor %s: %s on %s resolved (%s)", name, a["rule"], a["topic"], a["period"])
    if new and cfg["webhook"]:
        threading.Thread(target=_deliver, args=(ws, name, new, cfg["webhook"]), daemon=True,
                         name="monitor-webhook").start()
    return new


def _alert_out(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["explanation"] = json.loads(row.get("explanation") or "{}")
    return out


def _deliver(ws: Any, name: str, events: list[dict[str, Any]], url: str) -> None:
    from aigc.apps import post_json
    from aigc.workspace import monitor_alerts_table as A

    status = post_json(url, {"stream": name, "event": "monitor_alerts", "alerts": events})
    with ws.engine.begin() as conn:
        conn.execute(A.update().where(A.c.id.in_([e["id"] for e in events])).values(delivered=status))


def list_alerts(name: str, *, kind: str | None = None, limit: int = 200, workspace: Any = None) -> list[dict[str, Any]]:
    """The stream's alert events, newest first."""
    import sqlalchemy as sa

    from aigc.workspace import monitor_alerts_table as A

    ws = _ws(workspace)
    settings(name, ws)
    q = sa.select(A).where(A.c.stream == name).order_by(A.c.period.desc(), A.c.id.desc()).limit(limit)
    if kind:
        q = q.where(A.c.kind == kind)
    with ws.engine.connect() as conn:
        return [_alert_out(dict(r)) for r in conn.execute(q).mappings()]


def trends(name: str, *, period: str | None = None, start: str | None = None, end: str | None = None,
           workspace: Any = None) -> dict[str, Any]:
    """Volume, negatives and negative share per period, overall and per topic."""
    from aigc.apps.monitor import alerts as rules
    from aigc.apps.monitor.times import parse_bound

    ws = _ws(workspace)
    cfg = settings(name, ws)
    period = period or cfg["period"]
    if period not in PERIODS:
        raise InvalidInput(f"period {period!r}: use one of {', '.join(PERIODS)}")
    lo, hi = parse_bound(start, "start"), parse_bound(end, "end")
    frame = _frame_of(ws, name, start=lo, end=hi)
    out: dict[str, Any] = {"stream": name, "period": period, "items": len(frame), "series": []}
    if frame.empty:
        return out
    span = {"start": frame["ts"].min(), "end": frame["ts"].max()}
    for topic in [None] + sorted(frame["topic"].unique().tolist()):
        s = rules.series(frame, period=period, topic=topic, **span)
        out["series"].append({"topic": topic or ALL, "points": [
            {"t": t.isoformat(), "volume": int(r.volume), "negative": int(r.negative),
             "share": None if r.volume == 0 else round(float(r.share), 4)} for t, r in s.iterrows()]})
    return out


def items(name: str, *, topic: str | None = None, start: str | None = None, end: str | None = None,
          negative: bool | None = None, limit: int = 50, workspace: Any = None) -> list[dict[str, Any]]:
    """The posts behind a point of the chart, newest first (texts as stored: redacted)."""
    from aigc.apps.monitor.times import parse_bound

    ws = _ws(workspace)
    settings(name, ws)
    if not 1 <= limit <= 1000:
        raise InvalidInput(f"limit {limit}: give 1 to 1000")
    frame = _frame_of(ws, name, start=parse_bound(start, "start"), end=parse_bound(end, "end"), topic=topic,
                      negative=negative, limit=limit, newest_first=True)
    return [{"id": int(r.id), "ts": r.ts.isoformat(), "text": r.text, "topic": r.topic, "label": r.label,
             "prob": float(r.prob), "score": float(r.score), "negative": bool(r.negative), "ref": r.ref}
            for r in frame.itertuples()]


def watch(name: str, folder: str | Path, *, once: bool = False, interval: float = 5.0, workspace: Any = None,
          text_column: str | None = None, time_column: str | None = None,
          on_batch: Callable[[str, dict], None] | None = None, stop: threading.Event | None = None) -> int:
    """Add every new table file that appears in ``folder`` (by name and content hash, remembered in
    ``<folder>/.aigc-monitor-<stream>.json``); polls every ``interval`` seconds until ``stop`` or,
    with ``once``, after one pass. Returns the number of files added. A bad file is reported
    through ``on_batch`` with an ``error`` and skipped (it is retried when it changes)."""
    import hashlib

    from aigc.workspace import write_json_atomic

    ws = _ws(workspace)
    settings(name, ws)
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(f"{folder} is not a folder to watch")
    state_path = folder / f".aigc-monitor-{name}.json"
    seen: dict[str, str] = json.loads(state_path.read_text()) if state_path.exists() else {}
    added = 0
    while True:
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") or p.suffix.lower() not in (".csv", ".tsv", ".jsonl", ".parquet", ".xlsx"):
                continue
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            if seen.get(p.name) == digest:
                continue
            try:
                result = add(name, p, text_column=text_column, time_column=time_column, workspace=ws)
                added += 1
            except InvalidInput as e:
                result = {"error": str(e)}
            seen[p.name] = digest
            write_json_atomic(state_path, seen)
            if on_batch:
                on_batch(p.name, result)
        if once or (stop is not None and stop.wait(interval)) or (stop is None and time.sleep(interval)):
            return added
