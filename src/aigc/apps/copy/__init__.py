"""The copywriting desk: product copy that states the product's attributes, obeys the brand's rules
and the law's, and learns from what people choose.

    from aigc.apps import copy
    result = copy.write({"类型": "上衣", "材质": "亚麻", "颜色": "米白"}, {"channel": "detail", "tone": "温和"})
    result["candidates"][0]["text"], result["candidates"][0]["checks"]
    copy.write_batch("products.jsonl", "copy.csv")            # a whole catalogue
    copy.record_event("sku-1029", "c-3f2a...", "shown")        # A/B: shown / chosen / clicked
    copy.report("sku-1029")                                    # rates and lift over the control

The workspace's brand rules are ``<workspace>/copy/rules.yaml`` (:func:`set_rules`; the defaults
when it is absent: the advertising-law claims, channel lengths, punctuation and emoji rules).
Modules: :mod:`.rules` (brand rules), :mod:`.checks` (coverage, invented values), :mod:`.desk`
(candidates, ranking, batch), :mod:`.abtest` (Thompson sampling, lift), :mod:`.experiments`
(events, the desk's reward model).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aigc.errors import InvalidInput

RULES_FILE = "rules.yaml"
BATCH_FIELDS = ("id", "brief", "attributes", "lang", "category", "control")


def _ws(workspace: Any):
    from aigc import open_workspace

    return open_workspace(workspace)


def rules_path(ws: Any, fetch: bool = True) -> Path:
    """``copy/rules.yaml``: with an artifact store, fetched first when missing here or older there."""
    return ws.artifact_path("copy", RULES_FILE, fetch)


def workspace_rules(workspace: Any = None):
    """The workspace's brand rules (the defaults when it has none)."""
    from aigc.apps.copy.rules import load_rules

    path = rules_path(_ws(workspace))
    return load_rules(path if path.exists() else {})


def set_rules(rules: Any, workspace: Any = None) -> dict[str, Any]:
    """Replace the workspace's brand rules (a dict, or a YAML/JSON file); contradictions are refused."""
    import yaml

    from aigc.apps.copy.rules import load_rules

    parsed = load_rules(rules)
    parsed.validate()
    ws = _ws(workspace)
    text = yaml.safe_dump(parsed.to_dict(), allow_unicode=True, sort_keys=False)
    ws.publish_text(rules_path(ws, fetch=False), text)  # through tmp/ and the artifact store, when set
    return parsed.to_dict()


def make_desk(workspace: Any = None, rules: Any = None, model: str | None = None):
    from aigc.apps.copy.desk import Desk

    ws = _ws(workspace)
    return Desk(ws, rules if rules is not None else workspace_rules(ws), model=model)


def write(product: Mapping[str, Any], brief: Mapping[str, Any] | None = None, *, n: int = 5,
          rules: Any = None, model: str | None = None, workspace: Any = None, seed: int = 0) -> dict[str, Any]:
    """``n`` ranked candidates for one product, each with its checks and AIGC label."""
    return make_desk(workspace, rules, model).write(product, brief, n=n, seed=seed)


def read_products(path: str | Path) -> list[dict[str, Any]]:
    """A catalogue file: JSONL of ``{"id", "attributes", "brief"}`` objects, or a CSV/TSV/JSONL/Excel
    table whose columns are the attributes (an ``id`` column names each product; ``channel``,
    ``tone``, ``audience`` and ``length`` columns are its brief)."""
    from aigc.data.table_sources import read_table

    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"{path} is not a file: give a CSV, TSV, JSONL or Excel file of products")
    products = []
    if p.suffix.lower() in (".jsonl", ".json"):
        for i, line in enumerate(p.read_text("utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInput(f"{p.name} line {i} is not JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise InvalidInput(f"{p.name} line {i} is not an object")
            if "attributes" in obj:
                products.append({"id": str(obj.get("id", i)), "attributes": obj["attributes"],
                                 "brief": obj.get("brief")})
            else:
                products.append(_flat(obj, i))
    else:
        frame = read_table(p)
        for i, row in enumerate(frame.to_dict("records"), 1):
            products.append(_flat(row, i))
    if not products:
        raise InvalidInput(f"{p.name} has no products")
    return products


def _flat(row: Mapping[str, Any], i: int) -> dict[str, Any]:
    from aigc.apps.copy.desk import BRIEF_KEYS

    brief = {k: row[k] for k in BRIEF_KEYS if row.get(k) not in (None, "")}
    attrs = {k: v for k, v in row.items() if k not in BRIEF_KEYS and k != "id"}
    return {"id": str(row.get("id") or i), "attributes": attrs, "brief": brief or None}


def write_batch(path: str | Path, out: str | Path, *, brief: Mapping[str, Any] | None = None, n: int = 5,
                rules: Any = None, model: str | None = None, workspace: Any = None, seed: int = 0,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Copy for every product of a catalogue file, written to ``out`` (CSV or JSONL, labelled as AI
    generated): one row per product with the top candidate, its checks and the other candidates."""
    from aigc.provenance.labels import write_csv, write_jsonl

    out = Path(out)
    if out.suffix.lower() not in (".csv", ".jsonl"):
        raise InvalidInput(f"--out {out.name}: write .csv or .jsonl")
    products = read_products(path)
    d = make_desk(workspace, rules, model)
    results = d.batch(products, brief, n=n, seed=seed, progress=progress)
    rows = []
    for r in results:
        top = r["candidates"][0] if r["candidates"] else None
        rows.append({"id": r["id"], "text": top["text"] if top else "", "passed": bool(top and top["checks"]["passed"]),
                     "coverage": top["checks"]["coverage"]["score"] if top else 0.0,
                     "missing": ",".join(top["checks"]["coverage"]["missing"]) if top else "",
                     "violations": json.dumps([v["rule"] for v in top["checks"]["violations"]] if top else []),
                     "alternatives": json.dumps([c["text"] for c in r["candidates"][1:]], ensure_ascii=False)})
    label = d.guard.label("copy-batch")
    if out.suffix.lower() == ".csv":
        write_csv(out, rows, label)
    else:
        write_jsonl(out, rows, label)
    passed = sum(r["passed"] for r in rows)
    return {"out": str(out), "products": len(rows), "passed": passed, "model": d.model}


def record_event(experiment: str, variant: str, event: str, text: str | None = None, *,
                 workspace: Any = None) -> dict[str, Any]:
    from aigc.apps.copy.experiments import record_event as _record

    return _record(_ws(workspace), experiment, variant, event, text)


def pick(experiment: str, variants: list[str], *, workspace: Any = None, seed: int | None = None) -> str:
    from aigc.apps.copy.experiments import pick as _pick

    return _pick(_ws(workspace), experiment, variants, seed)


def report(experiment: str, *, workspace: Any = None) -> dict[str, Any]:
    from aigc.apps.copy.experiments import report as _report

    return _report(_ws(workspace), experiment)
