"""Request bodies of the HTTP API (pydantic). Responses are plain dicts in OpenAI's or our shape.

Unknown fields are refused (as OpenAI's API does: "Unrecognized request argument"), so a typo
in an option is an error instead of being silently ignored. OpenAI parameters we do not
implement are accepted only at their neutral value (``presence_penalty=0``, ``echo=False``...).
Our extras (``cond``, ``top_k``, ``repetition_penalty``, ``guidance``, ``rerank``, ``label``...) go in
the same body; the official client sends them with ``extra_body=``.

Every body is a :class:`Strict` model, which refuses two kinds of JSON that parse but are not
values a model can use: text UTF-8 cannot encode (``"\ud800"``, a lone surrogate, is legal JSON;
the tokenizer, the log and the response would each fail on it later), and NaN or infinite numbers
(Python's JSON reader takes ``NaN`` and ``Infinity``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

Stop = str | Annotated[list[str], Field(min_length=1, max_length=4)] | None
GUIDANCE_MAX = 20.0  # classifier-free guidance scale; 1 = none, well-behaved values are a few units
RERANK_MAX = 16  # candidates per sample (aigc.rerank); each costs a sample's tokens
# Who judges rerank's candidates: a classifier of cond (aigc.rerank), or the run's reward model,
# learned from the feedback on its outputs (aigc.feedback.store; any text run, cond or not).
RerankBy = Literal["condition", "feedback"]


def unencodable(value: Any, path: tuple = ()) -> tuple[tuple, str, int] | None:
    """Where a JSON value holds text UTF-8 cannot encode (a lone surrogate), keys included:
    ``(path, text, index of the bad character)``, or None if it holds none."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return path, value, e.start
    elif isinstance(value, dict):
        for key, item in value.items():
            found = unencodable(key, path + (key,)) or unencodable(item, path + (key,))
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = unencodable(item, path + (i,))
            if found:
                return found
    return None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _well_formed_text(cls, data: Any) -> Any:
        found = unencodable(data)
        if found:
            path, text, at = found
            param = ".".join(str(p).encode("utf-8", "backslashreplace").decode() for p in path)
            raise PydanticCustomError(
                "unicode_invalid", "{where}text is not valid Unicode: a lone surrogate {char} at character {at}; "
                "send well-formed UTF-8 (a JSON \\uXXXX escape must be a whole surrogate pair)",
                {"where": f"{param}: " if param else "", "char": f"\\u{ord(text[at]):04x}", "at": at,
                 "param": param})
        return data


class StreamOptions(Strict):
    include_usage: bool = False


class _Sampling(Strict):
    model: str = Field(min_length=1, max_length=200)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(None, max_length=256)
    # extras of ours
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float = Field(1.0, gt=0, le=10)
    min_tokens: int = Field(0, ge=0)  # vLLM's: no end-of-text before this many tokens (at most max_tokens)
    cond: dict[str, str] | None = None
    guidance: float | None = Field(None, gt=0, le=GUIDANCE_MAX)  # classifier-free guidance on cond; 1 = none
    rerank: int | None = Field(None, ge=1, le=RERANK_MAX)  # candidates per sample judged on cond; 1 = none
    rerank_by: RerankBy = "condition"
    timeout: float | None = Field(None, gt=0, le=3600)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if any(not s for s in stops):
            raise ValueError("stop strings must be non-empty")
        return v

    @model_validator(mode="after")
    def _neutral(self):
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise ValueError(f"{name} is not supported: leave it at 0 (use repetition_penalty)")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self


class CompletionRequest(_Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1)] = ""
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=1)

    @model_validator(mode="after")
    def _unsupported(self):
        if self.echo:
            raise ValueError("echo is not supported")
        if self.suffix:
            raise ValueError("suffix (insertion) is not supported")
        return self


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _checks(self):
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.response_format and self.response_format.get("type") != "text":
            raise ValueError("only response_format {\"type\": \"text\"} is supported")
        return self


class ImageGenerationRequest(Strict):
    model: str = Field(min_length=1, max_length=200)
    prompt: str = Field("", max_length=1000)  # a class name, or empty; `label` wins when both are given
    n: int = Field(1, ge=1)
    size: str | None = Field(None, pattern=r"^\d{1,5}x\d{1,5}$")
    response_format: Literal["b64_json", "url"] = "b64_json"
    user: str | None = Field(None, max_length=256)
    # extras of ours
    label: str | None = Field(None, max_length=200)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    steps: int | None = Field(None, ge=1, le=1000)
    guidance: float | None = Field(None, ge=0, le=50)
    timeout: float | None = Field(None, gt=0, le=3600)


class GenerateOptions(Strict):
    """Ollama's option names where they exist (num_predict, repeat_penalty), ours otherwise."""

    temperature: float = Field(0.8, ge=0, le=2)
    top_k: int | None = Field(None, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    repeat_penalty: float = Field(1.0, gt=0, le=10)
    num_predict: int | None = Field(None, ge=1)  # None: the server's default
    min_tokens: int = Field(0, ge=0)  # ours (Ollama has none; vLLM's name): no end-of-text before this many tokens
    stop: Stop = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)


class GenerateRequest(Strict):
    model: str = Field(min_length=1, max_length=200)
    prompt: str = ""
    cond: dict[str, str] | None = None
    guidance: float | None = Field(None, gt=0, le=GUIDANCE_MAX)  # classifier-free guidance on cond; 1 = none
    rerank: int | None = Field(None, ge=1, le=RERANK_MAX)  # candidates per sample judged on cond; 1 = none
    rerank_by: RerankBy = "condition"
    stream: bool = True
    options: GenerateOptions = Field(default_factory=GenerateOptions)
    keep_alive: float | str | None = None  # seconds, or "5m"; 0 unloads after the request, < 0 keeps forever
    timeout: float | None = Field(None, gt=0, le=3600)


class FeedbackRequest(Strict):
    """One rating of a logged generation, of one of three kinds: a thumb (``rating`` on sample
    ``sample_index``), a choice (``choice``: the index of the sample preferred to the generation's
    others) or an edit (``edited``: the user's corrected text of sample ``index``, default 0)."""

    generation_id: str = Field(min_length=1, max_length=100)
    rating: Literal["up", "down", 1, -1] | None = None
    choice: int | None = Field(None, ge=0)
    edited: str | None = Field(None, min_length=1, max_length=20_000)
    index: int | None = Field(None, ge=0)
    comment: str | None = Field(None, max_length=4000)
    sample_index: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _one_kind(self):
        given = [k for k in ("rating", "choice", "edited") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("send one of rating (a thumb: \"up\" or \"down\"), choice (the index of the "
                             "preferred sample) or edited (the corrected text), "
                             f"got {' and '.join(given) or 'none'}")
        if self.index is not None and self.edited is None:
            raise ValueError("index names the sample an edit corrects: send it with edited (a thumb's sample "
                             "is sample_index, a choice's is choice)")
        if "sample_index" in self.model_fields_set and (self.choice is not None or self.index is not None):
            raise ValueError("send the sample once: choice for a choice, index (or sample_index) for an "
                             "edit, sample_index for a thumb")
        return self

    @property
    def kind(self) -> str:
        return "thumb" if self.rating is not None else "choice" if self.choice is not None else "edit"

    @property
    def sample(self) -> int:
        """The sample the rating is about: the thumbed, chosen or edited one."""
        if self.choice is not None:
            return self.choice
        return self.index if self.index is not None else self.sample_index


class ArenaVoteRequest(Strict):
    """A vote between two logged text answers to one prompt; ``winner`` is the better side."""

    prompt: str
    cond: dict[str, str] | None = None
    run_a: str = Field(min_length=1, max_length=200)
    run_b: str = Field(min_length=1, max_length=200)
    generation_a: str = Field(min_length=1, max_length=200)
    generation_b: str = Field(min_length=1, max_length=200)
    winner: Literal["a", "b", "tie"]


class ModerationRequest(Strict):
    """OpenAI's ``/v1/moderations`` body: text inputs only (image parts are refused)."""

    input: str | list[str] = Field(...)
    model: str | None = Field(None, max_length=200)  # accepted and echoed; the workspace policy decides

    @field_validator("input")
    @classmethod
    def _inputs(cls, v):
        items = [v] if isinstance(v, str) else v
        if not items:
            raise ValueError("input is empty: send a string or a non-empty list of strings")
        if len(items) > 64:
            raise ValueError(f"input holds {len(items)} texts; send at most 64 per request")
        for i, text in enumerate(items):
            if not text.strip():
                raise ValueError(f"input[{i}] is empty: send text to moderate" if not isinstance(v, str)
                                 else "input is empty: send text to moderate")
        return v


class PiiRequest(Strict):
    """``/api/pii/scan`` and ``/api/pii/redact``."""

    text: str | list[str]
    operator: str = "replace"
    entities: list[str] | None = None


class SynthesizeRequest(Strict):
    """``POST /api/synthesize``: a background job that writes a synthetic data set (and its report)."""

    run: str = Field(..., min_length=1, max_length=200)
    n: int = Field(1000, ge=1, le=1_000_000)
    format: str = Field("csv", pattern="^(csv|tsv|parquet|jsonl)$")  # tables; text writes JSONL, images PNGs
    conditions: dict[str, str | int | float | bool] | None = None
    constraints: list[dict[str, Any]] | None = Field(None, max_length=50)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    report: bool = True
    target: str | None = Field(None, max_length=200)


# -- business apps (issue 15) ---------------------------------------------------------------------------


class Turn(Strict):
    role: str = Field(..., pattern="^(user|assistant|system)$")
    content: str = Field(..., max_length=20_000)
    clarify: bool | None = None  # an assistant turn that asked "did you mean ..." (the reply's own flag)


class AskRequest(Strict):
    """``POST /api/kb/{name}/ask``: one turn of a conversation with the assistant."""

    question: str = Field(..., min_length=1, max_length=2000)
    history: list[Turn] = Field(default_factory=list, max_length=50)
    mode: str | None = Field(None, pattern="^(auto|faq|extractive|generate)$")
    model: str | None = Field(None, max_length=200)


class KbSettingsRequest(Strict):
    mode: str | None = Field(None, pattern="^(auto|faq|extractive|generate)$")
    model: str | None = Field(None, max_length=200)
    webhook: str | None = Field(None, max_length=2000)


AttrValue = str | int | float | bool | list[str]


class CopyRequest(Strict):
    """``POST /api/copy``: ranked copy candidates for one product."""

    product: dict[str, AttrValue] = Field(..., max_length=40)
    brief: dict[str, str | int] | None = None
    n: int = Field(5, ge=1, le=20)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    model: str | None = Field(None, max_length=200)
    rules: dict[str, Any] | None = None  # this call's rules instead of the workspace's


class CopyEventRequest(Strict):
    """``POST /api/copy/events``: a variant was shown, chosen or clicked."""

    experiment: str = Field(..., min_length=1, max_length=200)
    variant: str = Field(..., min_length=1, max_length=200)
    event: str = Field(..., pattern="^(shown|chosen|clicked)$")
    text: str | None = Field(None, max_length=20_000)


class CopyPickRequest(Strict):
    """``POST /api/copy/pick``: which variant to show next (Thompson sampling)."""

    experiment: str = Field(..., min_length=1, max_length=200)
    variants: list[str] = Field(..., min_length=1, max_length=50)


class CopyRulesRequest(Strict):
    """``PUT /api/copy/rules``: the workspace's brand rules (see :mod:`aigc.apps.copy.rules`)."""

    required_words: list[str] | None = Field(None, max_length=1000)
    forbidden_words: list[str] | None = Field(None, max_length=10_000)
    banned_claims: str | list[str] | None = None
    extra_banned_claims: list[str] | None = Field(None, max_length=10_000)
    allowed_phrases: list[str] | None = Field(None, max_length=10_000)
    use_policy_terms: bool | None = None
    length: dict[str, list[int]] | None = None
    punctuation: dict[str, Any] | None = None
    emoji: bool | int | dict[str, Any] | None = None


class MonitorItem(Strict):
    """One post for a monitor stream."""

    text: str = Field(..., max_length=20_000)
    timestamp: str | float | None = Field(None, description="ISO 8601, a date and time, or Unix seconds; "
                                          "absent = now. A time without an offset is in the stream's zone.")
    id: str | None = Field(None, max_length=200)


class MonitorItemsRequest(Strict):
    """``POST /api/monitor/{name}/items``: one post (``text``...) or many (``items``)."""

    items: list[MonitorItem] | None = Field(None, min_length=1, max_length=10_000)
    text: str | None = Field(None, max_length=20_000)
    timestamp: str | float | None = None
    id: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def _one_or_many(self) -> MonitorItemsRequest:
        if (self.items is None) == (self.text is None):
            raise PydanticCustomError("one_or_many", "give either \"text\" (one post) or \"items\" (a list)")
        return self


class MonitorSettingsRequest(Strict):
    """``PUT /api/monitor/{name}``: create a stream or change its settings."""

    model: str | None = Field(None, max_length=80)
    period: Literal["hour", "day"] | None = None
    rules: list[Literal["ewma", "cusum", "baseline"]] | None = Field(None, min_length=1)
    sensitivity: Literal["low", "medium", "high"] | None = None
    webhook: str | None = Field(None, max_length=2000)
    timezone: str | None = Field(None, max_length=64)
    history: int | None = Field(None, ge=8, le=10_000)


class MonitorClassifyRequest(Strict):
    """``POST /api/monitor/classify``: score texts with a monitor model."""

    model: str = Field(..., min_length=1, max_length=80)
    texts: list[Annotated[str, Field(max_length=20_000)]] = Field(..., min_length=1, max_length=10_000)


MAX_RECOMMEND_K = 100


class RecommendRequest(Strict):
    """``POST /api/recommend``: a user's top items."""

    model: str = Field(min_length=1, max_length=80, description="The recommender's name (`GET /api/recommend`).")
    user: str = Field(min_length=1, max_length=200, description="The user id; one without history gets the "
                                                                "most popular items (cold_start: true).")
    k: int = Field(10, ge=1, le=MAX_RECOMMEND_K)
    exclude_seen: bool = True
    explain: bool = False
    write_copy: bool = Field(False, description="Personalised copy for each item through the copy desk "
                                                "(slower).")


class AudioGenerateRequest(Strict):
    """``POST /api/audio/generate``: clips from a run trained on an audio dataset's mel images."""

    model: str = Field(min_length=1, max_length=200)
    n: int = Field(1, ge=1)  # at most the server's max_images (checked with the message that says so)
    label: str | None = Field(None, max_length=200)  # a class of the run, any case; none: every class in turn
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    steps: int | None = Field(None, ge=1, le=1000)
    guidance: float | None = Field(None, ge=0, le=50)
    # how mels become sound: "auto" (the newest vocoder run on the run's dataset, else Griffin-Lim),
    # "griffin-lim", or a vocoder run's name (aigc.audio_generation.choose_inverter)
    vocoder: str = Field("auto", min_length=1, max_length=200)
    response_format: Literal["url", "b64_json"] | None = None  # none: url when the log is on, else b64_json
    timeout: float | None = Field(None, gt=0, le=3600)
