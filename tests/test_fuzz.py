"""Fuzzing the HTTP API on a real uvicorn server (127.0.0.1), every route of the OpenAPI document
plus the static files: no request may get a 5xx, every error is the JSON error envelope, and the
client's keep-alive connection survives every answer (an exception that escapes to uvicorn makes
it drop the connection, which a client sees as a reset, not as an answer).

The bodies are built by Hypothesis from the request schemas themselves (so a new field is fuzzed
without touching this file): each field gets either a plausible value (so that many requests pass
validation and reach the engine) or junk: arbitrary Unicode *including lone surrogates* (legal in
JSON as ``"\\ud800"``; Hypothesis' text leaves them out unless asked), NUL and full-width
characters, integers past 64 bits, NaN and infinities, wrong types and nested lists and objects.
Raw bodies no JSON encoder writes (invalid UTF-8, 5,000-digit numbers, nesting past the parser's
recursion limit) go to every POST route as well. Examples are few per route and derandomized, so
the test runs in well under a minute and fails the same way every time.
"""

from __future__ import annotations

from urllib.parse import quote

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aigc.server import Settings
from aigc.server import schemas

from helpers import LiveServer
from http_probe import OneConnection, assert_error_envelope

SMALL = Settings(max_tokens=16, default_max_tokens=8, max_batch=4, max_images=2, max_queue=64)
POST_EXAMPLES = 60  # per POST route; the GET routes take fewer
GET_EXAMPLES = 15
DEADLINE_MS = 20_000  # one example: a hang shows up as a failure, not as a stuck test run

# -- values ----------------------------------------------------------------------------------------

chars = st.one_of(st.characters(), st.characters(categories=["Cs"]), st.sampled_from("\x00\u3000Ａａ１中文茶\ufeff\n"))
texts = st.text(chars, max_size=24)
big_ints = st.sampled_from([2**31, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30), 2**1000])
numbers = st.one_of(st.integers(-3, 40), big_ints, st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                    max_leaves=8)

runs = st.sampled_from(["g", "l", "d", "nope"])
conds = st.dictionaries(st.sampled_from(["fruit", "tone"]) | texts, st.sampled_from(["apple", "kiwi"]) | texts,
                        max_size=2)
prompts = st.sampled_from(["apple", "猕猴桃", ""]) | texts

# plausible values by field name (any schema); a field not named here gets junk only
PLAUSIBLE = {
    "model": runs,
    "prompt": prompts | st.lists(prompts, min_size=1, max_size=2),
    "cond": conds,
    "stop": texts | st.lists(texts, max_size=5),
    "max_tokens": st.integers(-1, 20), "max_completion_tokens": st.integers(-1, 20), "num_predict": st.integers(-1, 20),
    "n": st.integers(-1, 5), "seed": st.integers(-1, 2**64),
    "temperature": st.floats(-1, 3), "top_p": st.floats(-0.5, 1.5), "top_k": st.integers(-1, 200),
    "repetition_penalty": st.floats(0, 12), "repeat_penalty": st.floats(0, 12),
    "guidance": st.floats(-1, 25), "timeout": st.floats(-1, 5000), "keep_alive": st.floats(-5, 1e6) | texts,
    "stream": st.booleans(), "logprobs": st.booleans() | st.integers(-1, 6), "top_logprobs": st.integers(-1, 21),
    "echo": st.booleans(), "steps": st.integers(-1, 8), "size": st.sampled_from(["8x8", "64x64"]) | texts,
    "label": st.sampled_from(["top", "bottom", "left"]) | texts,
    "response_format": st.sampled_from(["b64_json", "url", {"type": "text"}, {"type": "json_object"}]),
    "role": st.sampled_from(["system", "user", "assistant", "robot"]),
    "content": texts | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts}), max_size=2),
    "generation_id": texts, "rating": st.sampled_from(["up", "down", 1, -1, 0, True]),
    "sample_index": st.integers(-1, 3) | big_ints,
}


def fields_of(model: type[pydantic.BaseModel], depth: int = 0) -> dict[str, st.SearchStrategy]:
    """A strategy per field of a request schema (nested schemas recursively): plausible or junk."""
    fields: dict[str, st.SearchStrategy] = {}
    for name, info in model.model_fields.items():
        nested = _nested_model(info.annotation)
        if nested is not None and depth < 2:
            plausible = body_of(nested, {}, depth + 1)
            if name == "messages":
                plausible = st.lists(plausible, max_size=3)
        else:
            plausible = PLAUSIBLE.get(name, junk)
        fields[name] = st.one_of(plausible, plausible, junk)  # two parts plausible to one part junk
    fields["frobnicate"] = junk  # a field no schema knows
    return fields


def body_of(model: type[pydantic.BaseModel], base: dict, depth: int = 0) -> st.SearchStrategy:
    """Bodies for a request schema: mostly a valid ``base`` with up to three fields changed (so that
    many requests reach the engine), sometimes every field at random, sometimes not an object."""
    fields = fields_of(model, depth)
    names = sorted(fields)
    changed = st.lists(st.sampled_from(names), max_size=3, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({n: fields[n] for n in chosen})).map(lambda change: {**base, **change})
    anything = st.fixed_dictionaries({}, optional=fields)
    if depth:
        return st.one_of(changed, anything)
    return st.one_of(changed, changed, poisoned(base), changed.flatmap(poisoned), anything, junk)


def poisoned(body) -> st.SearchStrategy:
    """``body`` with a lone surrogate put into one of its strings (a key or a value, at any depth):
    the valid requests the issue found, which random text alone reaches too rarely."""
    places = list(_strings(body))
    if not places:
        return st.just(body)
    return st.tuples(st.sampled_from(places), st.characters(categories=["Cs"]), st.integers(0, 8)).map(
        lambda t: _put(body, *t))


def _strings(value, path=()):
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for k, v in value.items():
            yield path + (("key", k),)
            yield from _strings(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, path + (i,))


def _put(value, path, char, at):
    if not path:
        return value[:at] + char + value[at:]
    head, rest = path[0], path[1:]
    if isinstance(head, tuple):  # ("key", k): change the key itself
        key = head[1]
        return {(_put(k, (), char, at) if k == key else k): v for k, v in value.items()}
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[head] = _put(value[head], rest, char, at)
    return copy


def _nested_model(annotation) -> type[pydantic.BaseModel] | None:
    import typing

    for t in (annotation, *typing.get_args(annotation)):
        for u in (t, *typing.get_args(t)):
            if isinstance(u, type) and issubclass(u, pydantic.BaseModel):
                return u
    return None


def segment(text: str) -> str:
    """A path segment or query value as a client may send it: percent-encoded UTF-8, with lone
    surrogates encoded as their three bytes (which no UTF-8 decoder accepts)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


# -- the routes --------------------------------------------------------------------------------------

POST_BODIES = {  # each route's schema and a valid body to change
    "/v1/completions": (schemas.CompletionRequest, {"model": "g", "prompt": "apple", "max_tokens": 4}),
    "/v1/chat/completions": (schemas.ChatRequest, {"model": "g", "messages": [{"role": "user", "content": "apple"}],
                                                   "max_tokens": 4}),
    "/v1/images/generations": (schemas.ImageGenerationRequest, {"model": "d", "steps": 2}),
    "/api/generate": (schemas.GenerateRequest, {"model": "g", "prompt": "apple", "options": {"num_predict": 4}}),
    "/api/feedback": (schemas.FeedbackRequest, {"generation_id": "gen-x", "rating": "up"}),
    "/api/arena/vote": (schemas.ArenaVoteRequest, {"prompt": "apple", "run_a": "g", "run_b": "l",
                                                   "generation_a": "gen-x", "generation_b": "gen-y", "winner": "a"}),
    "/v1/moderations": (schemas.ModerationRequest, {"input": "apple"}),
    "/api/pii/scan": (schemas.PiiRequest, {"text": "call 13812345678"}),
    "/api/pii/redact": (schemas.PiiRequest, {"text": "call 13812345678", "operator": "mask"}),
    # a run that does not exist: a valid body is then a 404, and no fuzzed body starts real work
    "/api/synthesize": (schemas.SynthesizeRequest, {"run": "no-such-run", "n": 10}),
    # the business apps (the desk's language model is replaced by fixed drafts: see `server`)
    "/api/copy": (schemas.CopyRequest, {"product": {"类型": "衬衫", "颜色": "米白色"}, "brief": {"channel": "social"},
                                        "n": 2}),
    "/api/copy/events": (schemas.CopyEventRequest, {"experiment": "sku-1", "variant": "control", "event": "shown"}),
    "/api/copy/pick": (schemas.CopyPickRequest, {"experiment": "sku-1", "variants": ["control", "c-a"]}),
    "/api/kb/{name}/ask": (schemas.AskRequest, {"question": "How long do I have to return an item?"}),
    # opinion monitoring: the workspace has no monitor model, so a valid body is a 404 too
    "/api/monitor/{name}/items": (schemas.MonitorItemsRequest, {"items": [{"text": "物流太慢", "timestamp":
                                                                          "2026-03-04T10:00:00+08:00"}]}),
    "/api/monitor/classify": (schemas.MonitorClassifyRequest, {"model": "reviews", "texts": ["物流太慢"]}),
    "/api/recommend": (schemas.RecommendRequest, {"model": "shop", "user": "u1", "k": 5}),
    # sound from a run on audio clips: none exists here, so a valid body is a 404 (no fuzzed body samples)
    "/api/audio/generate": (schemas.AudioGenerateRequest, {"model": "no-such-audio-run", "n": 1,
                                                           "vocoder": "griffin-lim"}),
}
POST_PATHS = {"/api/kb/{name}/ask": "/api/kb/help/ask", "/api/monitor/{name}/items": "/api/monitor/shop/items"}  # a route with a path parameter: where it is posted
# Other methods and body-less POSTs: (method, route) -> a body strategy (None: no body); path
# parameters are fuzzed like GET's.
OTHER_ROUTES = {
    ("PUT", "/api/copy/rules"): "rules",
    ("PATCH", "/api/kb/{name}"): "kb_settings",
    ("PUT", "/api/kb/{name}/documents/{filename}"): "raw",
    ("DELETE", "/api/kb/{name}"): None,
    ("DELETE", "/api/kb/{name}/documents/{doc}"): None,
    ("POST", "/api/handoffs/{handoff_id}/close"): None,
    ("PUT", "/api/monitor/{name}"): "monitor_settings",
}
# Routes whose body is not JSON: the policy (YAML or JSON text), fuzzed with the raw bodies and
# random text; none may replace the shared workspace's policy (none is a valid policy).
RAW_ROUTES = {("PUT", "/api/policy")}
path_values = st.sampled_from(["g", "d", "fruit", "blocks", "..", "gen-x"]) | texts
GET_QUERIES = {"/api/generations": {"run": runs | texts, "limit": numbers | texts, "offset": numbers | texts}}

RAW_BODIES = [
    b'{"model": "g", "prompt": "\\ud800"}',
    b'{"model": "g", "prompt": "\xff\xfe not UTF-8"}',
    b'{"model": "g", "max_tokens": 1' + b"0" * 5000 + b"}",
    b'{"model": "g", "temperature": NaN}',
    b'{"model": "g", "temperature": Infinity}',
    b"[" * 100_000 + b"]" * 100_000,
    b'"\\udfff"',
    b"",
    b"model=g&prompt=apple",
    b'{"model": "g", "prompt": "apple"',
]


def _check(answer, what) -> None:
    assert answer.status < 500, (what, answer.status, answer.body[:300])
    if answer.status >= 400:
        assert_error_envelope(answer)
    assert answer.headers.get("connection", "").lower() != "close", (what, answer.headers)


@pytest.fixture(scope="module")
def server(served_ws, tmp_path_factory):
    from aigc.apps import assistant
    from aigc.apps.copy.desk import Desk

    faq = tmp_path_factory.mktemp("kb") / "faq.csv"
    faq.write_text("question,answer\nHow long do I have to return an item?,Within 30 days of delivery.\n"
                   "发票怎么开？,在结算页选择开具发票。\n", encoding="utf-8")
    assistant.kb_add("help", [faq], workspace=served_ws)
    patch = pytest.MonkeyPatch()  # the desk writes fixed drafts: fuzzing must not load a language model
    patch.setattr(Desk, "drafts", lambda self, prompt, n, max_new_tokens, seed: ["这款衬衫是米白色的，清爽透气。"] * n)
    patch.setattr(Desk, "model_scores", lambda self, prompt, texts: [0.0] * len(texts))
    patch.setattr("aigc.apps.assistant.answer.instruct_model", _no_model)
    with LiveServer(served_ws, SMALL) as live:
        yield live
    patch.undo()


def _no_model(ws, model):
    from aigc.errors import InvalidInput

    raise InvalidInput(f"no language model in this test ({model})")


def test_every_route_is_fuzzed(server):
    import httpx

    paths = {(m.upper(), p) for p, ops in httpx.get(server.url + "/openapi.json").json()["paths"].items() for m in ops}
    fuzzed = ({("POST", p) for p in POST_BODIES} | {("GET", p) for p, _ in _get_routes(paths)} | RAW_ROUTES
              | set(OTHER_ROUTES))
    assert paths == fuzzed, paths ^ fuzzed


@pytest.mark.parametrize("method,route", sorted(RAW_ROUTES))
def test_raw_bodies_never_get_a_5xx_and_keep_the_connection(server, method, route):
    statuses = []
    with OneConnection(server.url) as conn:

        @given(body=texts)
        @settings(max_examples=POST_EXAMPLES, deadline=DEADLINE_MS, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def put(body):
            answer = conn.request(method, route, body.encode("utf-8", "surrogatepass"), {"Content-Type": "text/yaml"})
            statuses.append(answer.status)
            _check(answer, body)

        put()
        for raw in RAW_BODIES + [b"a: [" * 5000, b"&a [*a]", b"version: 1\nterms: [{term: x}]\n"]:
            answer = conn.request(method, route, raw, {"Content-Type": "text/yaml"})
            statuses.append(answer.status)
            _check(answer, raw[:80])
        assert conn.alive()
    assert statuses and all(s == 400 for s in statuses), sorted(set(statuses))


def test_every_request_schema_refuses_unencodable_text_and_nan():
    models = [v for v in vars(schemas).values()
              if isinstance(v, type) and issubclass(v, pydantic.BaseModel) and v.__module__ == schemas.__name__]
    assert {m for m, _ in POST_BODIES.values()} <= set(models)
    for model in models:
        assert issubclass(model, schemas.Strict), model  # where the check lives
        with pytest.raises(pydantic.ValidationError, match="lone surrogate"):
            model.model_validate({"x\udc80": 1})
    with pytest.raises(pydantic.ValidationError, match="finite number"):
        schemas.CompletionRequest.model_validate({"model": "g", "temperature": float("nan")})


def _get_routes(paths) -> list[tuple[str, list[str]]]:
    import re

    return sorted((p, re.findall(r"{(\w+)(?::\w+)?}", p)) for m, p in paths if m == "GET")


@pytest.mark.parametrize("route", sorted(POST_BODIES))
def test_post_bodies_never_get_a_5xx_and_keep_the_connection(server, route):
    statuses = []
    with OneConnection(server.url) as conn:

        @given(body=body_of(*POST_BODIES[route]))
        @settings(max_examples=POST_EXAMPLES, deadline=DEADLINE_MS, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def post(body):
            answer = conn.post_json(POST_PATHS.get(route, route), body)
            statuses.append(answer.status)
            _check(answer, body)

        post()
        for raw in RAW_BODIES:
            answer = conn.request("POST", POST_PATHS.get(route, route), raw, {"Content-Type": "application/json"})
            statuses.append(answer.status)
            _check(answer, raw[:80])
        assert conn.alive() and conn.requests >= POST_EXAMPLES
    # the fuzzing reached both sides of validation: some requests were refused, and (except for
    # feedback and arena votes, whose generation ids are never guessed, and synthesis, whose run
    # does not exist so that no fuzzed body starts a job, and the monitor's, whose model does not
    # exist, nor the recommender, nor an audio run) some were served
    assert any(400 <= s < 500 for s in statuses)
    if route in ("/api/synthesize", "/api/monitor/classify", "/api/monitor/{name}/items", "/api/recommend",
                 "/api/audio/generate"):
        # past the schema to the run's / monitor model's lookup: 404, never a 5xx
        assert 404 in statuses, sorted(set(statuses))
    else:
        assert route in ("/api/feedback", "/api/arena/vote") or 200 in statuses, sorted(set(statuses))


def test_get_paths_and_queries_never_get_a_5xx_and_keep_the_connection(server):
    import httpx

    paths = {(m.upper(), p) for p, ops in httpx.get(server.url + "/openapi.json").json()["paths"].items() for m in ops}
    statuses = []
    with OneConnection(server.url) as conn:
        for route, params in _get_routes(paths) + [("/static/{relative}", ["relative"])]:
            queries = GET_QUERIES.get(route, {})

            @given(values=st.fixed_dictionaries({p: path_values for p in params}),
                   query=st.fixed_dictionaries({}, optional=queries))
            @settings(max_examples=GET_EXAMPLES if params or queries else 1, deadline=DEADLINE_MS,
                      derandomize=True, database=None, suppress_health_check=list(HealthCheck))
            def get(values, query):
                target = route
                for name, value in values.items():
                    target = target.replace("{" + name + (":path}" if "{" + name + ":path}" in target else "}"),
                                            segment(value))
                if query:
                    target += "?" + "&".join(f"{k}={segment(str(v))}" for k, v in query.items())
                answer = conn.request("GET", target)
                statuses.append(answer.status)
                _check(answer, target)

            get()
        assert conn.alive()
    assert 200 in statuses and 404 in statuses


def test_a_lone_surrogate_anywhere_is_a_400_naming_the_field(server):
    """The case the issue found by hand, for each text field of the three text routes."""
    base = {"/v1/completions": {"model": "g", "prompt": "apple", "max_tokens": 3},
            "/v1/chat/completions": {"model": "g", "messages": [{"role": "user", "content": "apple"}], "max_tokens": 3},
            "/api/generate": {"model": "g", "prompt": "apple", "stream": False, "options": {"num_predict": 3}}}
    cases = [
        ("/v1/completions", {"prompt": "a\ud800"}, "prompt"),
        ("/v1/completions", {"prompt": ["apple", "\udfff"]}, "prompt.1"),
        ("/v1/completions", {"stop": "\ud800"}, "stop"),
        ("/v1/completions", {"stop": ["x", "\ud800"]}, "stop.1"),
        ("/v1/completions", {"cond": {"fruit": "\ud800"}}, "cond.fruit"),
        ("/v1/completions", {"cond": {"\ud800": "apple"}}, "cond.\\ud800"),
        ("/v1/completions", {"model": "\ud800"}, "model"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\ud800"}]}, "messages.0.content"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": "a\udc00"}]}]},
         "messages.0.content.0.text"),
        ("/v1/chat/completions", {"stop": "\ud800"}, "stop"),
        ("/v1/chat/completions", {"cond": {"fruit": "\ud800"}}, "cond.fruit"),
        ("/api/generate", {"prompt": "\ud800"}, "prompt"),
        ("/api/generate", {"cond": {"fruit": "\udbff"}}, "cond.fruit"),
        ("/api/generate", {"options": {"stop": ["\ud800"]}}, "options.stop.0"),
    ]
    with OneConnection(server.url) as conn:
        for route, change, param in cases:
            answer = conn.post_json(route, {**base[route], **change})
            error = assert_error_envelope(answer, 400)
            assert error["param"] == param and "lone surrogate" in error["message"], (route, change, error)
            assert conn.post_json(route, base[route]).status == 200  # the same connection, still serving
        assert conn.alive()


OTHER_BODIES = {
    "rules": body_of(schemas.CopyRulesRequest, {"forbidden_words": ["cheap"]}),
    "kb_settings": body_of(schemas.KbSettingsRequest, {"mode": "extractive"}),
    "monitor_settings": body_of(schemas.MonitorSettingsRequest, {"model": "reviews", "period": "day"}),
    "raw": texts,
}


@pytest.mark.parametrize("method,route", sorted(OTHER_ROUTES))
def test_other_methods_never_get_a_5xx_and_keep_the_connection(server, method, route):
    import json
    import re

    params = re.findall(r"{(\w+)}", route)
    kind = OTHER_ROUTES[(method, route)]
    statuses = []
    with OneConnection(server.url) as conn:

        @given(values=st.fixed_dictionaries({p: path_values for p in params}),
               body=OTHER_BODIES[kind] if kind else st.none())
        @settings(max_examples=GET_EXAMPLES, deadline=DEADLINE_MS, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(values, body):
            target = route
            for name, value in values.items():
                target = target.replace("{" + name + "}", segment(value))
            if kind == "raw":
                data, ctype = body.encode("utf-8", "surrogatepass"), "text/plain"
            elif kind:
                data, ctype = json.dumps(body).encode("utf-8", "surrogatepass"), "application/json"
            else:
                data, ctype = b"", "application/json"
            answer = conn.request(method, target, data, {"Content-Type": ctype})
            statuses.append(answer.status)
            _check(answer, (target, body))

        call()
        assert conn.alive()
    assert any(400 <= s < 500 for s in statuses), sorted(set(statuses))
