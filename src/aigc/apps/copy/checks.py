"""What a product text says about the product: which attributes it states (:func:`coverage`), which
values it states that the product does not have (:func:`invented`), and how varied a set of texts
is (:func:`distinct_n`). Chinese and English alike; pure functions, no model.

A product is ``{attribute: value}`` with zh or en keys (``{"颜色": "米白"}``, ``{"color":
"off-white"}``); a list value, or one written ``"棉, 涤纶"`` (split at , ， 、 / ; ；), is several
parts, each stated on its own. Text and values are compared through
:func:`aigc.safety.normalize.normalize` (NFKC: full-width -> half-width; case folding; traditional
-> simplified), and every span reported is an offset into the text as given.

A value is **stated** when the text holds, once normalised:

- the value itself, with spaces / hyphens between its words optional (``off-white`` ~ ``off white``),
  an English plural (``shirt`` ~ ``shirts``), and a colour with or without 色 (``米白`` ~ ``米白色``);
- a synonym from the bilingual lexicon of its kind: ``米白`` ~ ``off-white``, ``亚麻`` ~ ``linen``;
- for a number with a unit, the same quantity in any unit of its dimension (``500ml`` ~ ``500 ml``
  ~ ``500毫升`` ~ ``0.5L``); a bare number takes the unit its key names (``容量(ml)``);
- for a yes/no value (是, 有, yes, true), the key itself (``防水: 是`` is stated by ``防水``); a no
  value is not asked for (and stating the key is an invented value, unless negated: 不防水, not).

Keys map to kinds by synonyms (颜色/color/colour, 材质/面料/material/fabric, 尺码/size,
容量/capacity/volume, 重量/weight ...; a key ending in one, 主色 or "upper material", counts).
**Invented** values are the lexicon's words of a kind the product has a key for (colours, materials,
letter sizes), and quantities of a dimension the product has, that the text states but the product
does not: ``黑色`` / ``black`` when the colour is 米白, ``1000ml`` when the capacity is 500ml. A
word of the same family is not invented (``白色`` for 米白, ``blue`` for navy); nor is a word inside
a span that states another attribute's value (a colour in the product's series name).

False positives, by rule rather than by a list of exceptions: English words match only whole
(``red`` is not in ``redo`` or ``bored``); the lexicon holds single Chinese characters only where
they are a material on their own (棉, 陶), and a single character (of the lexicon or a catalogue)
counts only when 色/质/制/料 follows it, or when it stands alone or after a modifier (纯, 全, 真,
深, 浅 ...). So ``白天``, ``明白``, ``黑科技``, ``蓝牙``, ``金属`` state no colour: the colour words are
``白色``, ``纯白``, ``黑色`` .... Known misses: a bare single-character colour before a noun
(``白衬衫``) is not read as a colour; a second quantity of the same dimension used for comparison
(``约两瓶250ml``) reads as invented; ``5G`` after a digit 2-6 is taken for a network generation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aigc.errors import InvalidInput
from aigc.safety.normalize import Normalized, normalize

# -- lexicons: (family, forms) per kind; forms of one entry say the same thing --------------------

COLOURS: tuple[tuple[str, str], ...] = (
    ("black", "黑色|纯黑|black|jet black"),
    ("white", "白色|纯白|本白|white|pure white|snow white"),
    ("white", "米白|奶白|乳白|象牙白|off-white|ivory|cream white|milky white"),
    ("white", "珍珠白|pearl white"),
    ("grey", "灰色|gray|grey"),
    ("grey", "浅灰|light gray|light grey"),
    ("grey", "深灰|炭灰|dark gray|dark grey|charcoal grey|charcoal gray"),
    ("grey", "星空灰|深空灰|space gray|space grey"),
    ("grey", "银灰|silver gray|silver grey"),
    ("red", "红色|red"),
    ("red", "大红|正红|中国红|bright red|scarlet"),
    ("red", "酒红|枣红|burgundy|wine red|maroon"),
    ("red", "砖红|brick red"),
    ("red", "玫红|玫瑰红|rose red|magenta|fuchsia"),
    ("pink", "粉色|粉红|pink"),
    ("pink", "浅粉|樱花粉|light pink|blush pink"),
    ("orange", "橙色|橘色|橙红|orange"),
    ("yellow", "黄色|yellow"),
    ("yellow", "柠檬黄|鹅黄|浅黄|lemon yellow|light yellow"),
    ("yellow", "姜黄|芥末黄|mustard yellow"),
    ("gold", "金色|gold|golden"),
    ("gold", "香槟色|香槟金|champagne gold"),
    ("gold", "玫瑰金|rose gold"),
    ("silver", "银色|silver"),
    ("green", "绿色|green"),
    ("green", "墨绿|深绿|dark green|forest green"),
    ("green", "军绿|橄榄绿|army green|olive green"),
    ("green", "薄荷绿|浅绿|mint green|light green"),
    ("green", "牛油果绿|avocado green"),
    ("green", "翠绿|emerald green"),
    ("cyan", "青色|青绿|湖绿|cyan|teal"),
    ("blue", "蓝色|blue"),
    ("blue", "深蓝|藏青|藏蓝|海军蓝|navy|navy blue|dark blue"),
    ("blue", "天蓝|浅蓝|sky blue|light blue|baby blue"),
    ("blue", "宝蓝|royal blue|cobalt blue"),
    ("blue", "雾霾蓝|灰蓝|dusty blue|haze blue"),
    ("blue", "湖蓝|孔雀蓝|peacock blue|turquoise"),
    ("blue", "牛仔蓝|denim blue"),
    ("blue", "午夜蓝|midnight blue"),
    ("purple", "紫色|purple|violet"),
    ("purple", "浅紫|薰衣草紫|香芋紫|lilac|light purple"),
    ("purple", "深紫|葡萄紫|dark purple"),
    ("brown", "棕色|褐色|咖啡色|brown"),
    ("brown", "深棕|dark brown|chocolate brown"),
    ("brown", "浅棕|light brown|tan"),
    ("brown", "焦糖色|caramel brown"),
    ("brown", "驼色|camel"),
    ("beige", "米色|杏色|燕麦色|beige"),
    ("beige", "卡其|khaki"),
    ("beige", "裸色|nude beige"),
    ("clear", "透明色|transparent"),
    ("multi", "彩色|多色|multicolor|multicolour|multi-colored|multi-coloured"),
)

MATERIALS: tuple[tuple[str, str], ...] = (
    ("cotton", "棉|纯棉|全棉|棉质|精梳棉|有机棉|cotton|organic cotton|combed cotton"),
    ("linen", "亚麻|麻料|linen|flax"),
    ("ramie", "苎麻|ramie"),
    ("hemp", "汉麻|hemp"),
    ("silk", "真丝|桑蚕丝|蚕丝|丝绸|silk|mulberry silk"),
    ("wool", "羊毛|美利奴|wool|merino|merino wool"),
    ("cashmere", "羊绒|山羊绒|cashmere"),
    ("mohair", "马海毛|mohair"),
    ("alpaca", "羊驼毛|alpaca wool"),
    ("polyester", "涤纶|聚酯纤维|聚酯|polyester"),
    ("nylon", "锦纶|尼龙|nylon|polyamide"),
    ("spandex", "氨纶|莱卡|spandex|elastane|lycra"),
    ("acrylic", "腈纶|acrylic"),
    ("viscose", "粘胶|黏胶|人造棉|viscose|rayon"),
    ("modal", "莫代尔|modal"),
    ("lyocell", "天丝|莱赛尔|tencel|lyocell"),
    ("bamboo fibre", "竹纤维|bamboo fiber|bamboo fibre"),
    ("denim", "牛仔布|丹宁|denim"),
    ("corduroy", "灯芯绒|corduroy"),
    ("chiffon", "雪纺|chiffon"),
    ("lace", "蕾丝"),  # not "lace": lace-up shoes
    ("velvet", "丝绒|天鹅绒|velvet"),
    ("fleece", "摇粒绒|抓绒|fleece"),
    ("down", "羽绒|鸭绒|鹅绒|duck down|goose down"),
    ("canvas", "帆布|canvas"),
    ("leather", "皮革|真皮|牛皮|羊皮|头层皮|leather|genuine leather|cowhide|lambskin"),
    ("faux leather", "人造革|合成革|pu皮|faux leather|pu leather|vegan leather"),
    ("suede", "麂皮|绒面革|suede"),
    ("steel", "不锈钢|stainless steel|stainless"),
    ("steel", "钢制|steel"),
    ("carbon steel", "碳钢|carbon steel"),
    ("cast iron", "铸铁|cast iron"),
    ("aluminium", "铝合金|铝制|aluminium|aluminum"),
    ("copper", "纯铜|铜制|copper"),
    ("brass", "黄铜|brass"),
    ("titanium", "钛合金|纯钛|titanium"),
    ("silver", "纯银|925银|sterling silver"),
    ("plastic", "塑料|plastic"),
    ("silicone", "硅胶|silicone"),
    ("rubber", "橡胶|rubber"),
    ("glass", "玻璃|高硼硅玻璃|glass|borosilicate glass"),
    ("ceramic", "陶瓷|陶|瓷器|骨瓷|ceramic|ceramics|porcelain|bone china"),
    ("wood", "实木|木质|木制|原木|木头|wood|wooden|solid wood"),
    ("bamboo", "竹制|竹子|竹质|bamboo"),
    ("paper", "纸质|牛皮纸|paper|kraft paper"),
    ("marble", "大理石|marble"),
    ("crystal", "水晶"),  # not "crystal": crystal clear
    ("resin", "树脂|resin"),
)

# letter sizes; one letter (s, m, l) only with a cue next to it (M码, 尺码 M, size M)
SIZES: tuple[tuple[str, str], ...] = (
    ("xxs", "xxs"), ("xs", "xs|加小码"), ("s", "s"), ("m", "m"), ("l", "l"), ("xl", "xl"),
    ("xxl", "xxl|2xl"), ("xxxl", "xxxl|3xl"), ("4xl", "4xl|xxxxl"), ("5xl", "5xl"),
    ("one size", "均码|one size|free size"), ("small", "小号|小码"), ("medium", "中号|中码"),
    ("large", "大号|大码"), ("extra large", "加大号|特大号|加大码"),
)
_LEXICONS = {"color": COLOURS, "material": MATERIALS, "size": SIZES}

# attribute keys -> kinds; a key equal to one of these, or ending in one, has the kind
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "color": ("颜色", "色彩", "颜色分类", "配色", "主色", "色系", "color", "colour", "colors", "colours"),
    "material": ("材质", "面料", "材料", "质地", "成分", "主材", "material", "materials", "fabric",
                 "composition"),
    "size": ("尺码", "尺寸", "码数", "大小", "size", "sizes", "dimensions", "dimension"),
    "capacity": ("容量", "容积", "capacity", "volume"),
    "weight": ("重量", "净重", "毛重", "weight", "net weight"),
}

# number + unit: unit -> (dimension, factor to the dimension's base unit); matched after normalize
_UNITS: dict[str, tuple[str, float]] = {
    **{u: ("volume", 1.0) for u in ("ml", "毫升", "cc")},
    **{u: ("volume", 1000.0) for u in ("l", "升", "公升", "liter", "liters", "litre", "litres")},
    "fl oz": ("volume", 29.5735),
    **{u: ("mass", 0.001) for u in ("mg", "毫克")},
    **{u: ("mass", 1.0) for u in ("g", "克")},
    **{u: ("mass", 1000.0) for u in ("kg", "千克", "公斤")},
    "斤": ("mass", 500.0),
    **{u: ("mass", 453.592) for u in ("lb", "lbs", "pound", "pounds")},
    **{u: ("mass", 28.3495) for u in ("oz", "ounce", "ounces")},
    **{u: ("length", 1.0) for u in ("mm", "毫米")},
    **{u: ("length", 10.0) for u in ("cm", "厘米", "公分")},
    **{u: ("length", 1000.0) for u in ("m", "米")},
    **{u: ("length", 25.4) for u in ("inch", "inches", "英寸")},
    **{u: ("length", 304.8) for u in ("ft", "feet")},
    **{u: ("power", 1.0) for u in ("w", "瓦")},
    **{u: ("power", 1000.0) for u in ("kw", "千瓦")},
    **{u: ("charge", 1.0) for u in ("mah", "毫安", "毫安时")},
    **{u: ("storage", 1.0) for u in ("gb",)},
    "tb": ("storage", 1024.0),
    "mb": ("storage", 1 / 1024),
    **{u: ("time", 1.0) for u in ("min", "mins", "minute", "minutes", "分钟")},
    **{u: ("time", 60.0) for u in ("h", "hr", "hrs", "hour", "hours", "小时")},
    "°c": ("temperature", 1.0),
    **{u: ("voltage", 1.0) for u in ("v", "伏")},
    "码": ("shoe size", 1.0),
}
_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_JOIN = r"\s*[x×*\-~至到]\s*"  # 30x20cm, 500-600ml: every number takes the unit
_QTY = re.compile(rf"(?<![\d.a-z])({_NUM}(?:{_JOIN}{_NUM})*)\s*"
                  rf"({'|'.join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))})(?![a-z])")
_NETWORK_G = re.compile(r"[2-6]G(?![A-Za-z])")  # 5G is a network generation, not five grams

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SUFFIX = frozenset("色质制料")  # a single character followed by one of these is the attribute word
_MODIFIER = frozenset("纯全真实深浅亮哑米奶")  # ... or preceded by one (纯白 is listed; 纯棉 too)
_PARTS = re.compile(r"\s*[,，、/;；|]\s*")
_YES = frozenset({"是", "有", "支持", "yes", "y", "true", "√", "✓"})
_NO = frozenset({"否", "无", "没有", "不支持", "no", "n", "false", "×", "✗"})
_NEGATION = re.compile(r"(不|非|无|没有|不是|not |non-?|no |without )\s*$")
_KEY_PREFIX = re.compile(r"^(是否有?|是否|支持|带|有无|is |has |with )")


# -- text -> normalised text, lexicon forms -> one regex --------------------------------------------


def _squash(s: str) -> str:
    """A form as a lookup key: spaces, hyphens and underscores dropped (off-white = off white)."""
    return re.sub(r"[\s\-_]+", "", s)


def form_pattern(form: str, *, plural: bool = False) -> str:
    """The regex (over normalised text) of a normalised ``form``: ASCII word edges, the spaces and
    hyphens between its words optional, an English plural on request."""
    parts = [p for p in re.split(r"[\s\-_]+", form) if p]
    body = r"[\s\-_]*".join(re.escape(p) for p in parts)
    if plural and form[-1:].isascii() and form[-1:].isalpha():
        body += "(?:e?s)?"
    left = r"(?<![a-z0-9])" if form[:1].isascii() and form[:1].isalnum() else ""
    right = r"(?![a-z0-9])" if form[-1:].isascii() and form[-1:].isalnum() else ""
    return f"{left}(?:{body}){right}"


def _single_ok(s: str, a: int) -> bool:
    """Whether the single CJK character at ``s[a]`` is the attribute word and not part of another
    word (白色, 纯白, "棉," yes; 白天, 明白, 黑科技 no)."""
    nxt = s[a + 1] if a + 1 < len(s) else ""
    prv = s[a - 1] if a else ""
    if nxt in _SUFFIX:
        return True
    return (not prv or not _CJK.match(prv) or prv in _MODIFIER) and (not nxt or not _CJK.match(nxt))


@dataclass(frozen=True)
class Mention:
    """A lexicon word in a normalised text: ``[start, end)`` there, its entry and family."""

    start: int
    end: int
    entry: int
    family: str


class Finder:
    """One regex over the forms of a kind's entries; finds mentions, leftmost-longest, by rule
    (whole English words, single characters per :func:`_single_ok`, 色 taken in after a colour)."""

    def __init__(self, kind: str, entries: Sequence[tuple[str, Iterable[str]]]):
        self.kind = kind
        self.families: list[str] = []
        self.lookup: dict[str, int] = {}
        forms: set[str] = set()
        for family, words in entries:
            idx = len(self.families)
            self.families.append(family)
            for w in words:
                f = normalize(w).text.strip()
                if f and _squash(f) not in self.lookup:
                    self.lookup[_squash(f)] = idx
                    forms.add(f)
        plural = kind != "size"  # "ms" is no plural of the size m
        alts = [form_pattern(f, plural=plural) for f in sorted(forms, key=len, reverse=True)]
        self.regex = re.compile("|".join(alts)) if alts else None

    def resolve(self, value: str) -> int | None:
        """The entry a product value names (itself, or with / without 色; a single character also with
        the ending that makes it a word: 竹 -> 竹子 / 竹制, 木 -> 木质), else None."""
        v = _squash(normalize(value).text.strip())
        endings = "色质制料子头" if len(v) == 1 and _CJK.match(v) else "色"
        for cand in (v, *(v + e for e in endings), v[:-1] if v.endswith("色") and len(v) > 1 else v):
            if cand in self.lookup:
                return self.lookup[cand]
        return None

    def find(self, s: str) -> list[Mention]:
        out: list[Mention] = []
        if self.regex is None:
            return out
        for m in self.regex.finditer(s):
            a, b = m.span()
            key = _squash(m.group())
            entry = self.lookup.get(key)
            if entry is None:  # a plural: shirts -> shirt
                entry = self.lookup.get(key[:-1]) if key[:-1] in self.lookup else self.lookup.get(key[:-2])
            if entry is None:
                continue
            if len(key) == 1 and _CJK.match(key) and not _single_ok(s, a):
                continue
            if self.kind == "size" and len(key) == 1 and not _size_cue(s, a, b):
                continue
            if self.kind == "color" and _CJK.match(s[b - 1]) and s[b:b + 1] == "色":
                b += 1
            out.append(Mention(a, b, entry, self.families[entry]))
        return out


def _size_cue(s: str, a: int, b: int) -> bool:
    """A one-letter size needs a cue: 码 / 号 right after it, or size / 尺码 / 码数 just before."""
    before = s[max(0, a - 8):a]
    return s[b:b + 1] in ("码", "号") or re.search(r"(size|尺码|码数|尺寸|码)\s*[:：]?\s*$", before) \
        is not None


@lru_cache(maxsize=8)
def _builtin_entries(kind: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((family, tuple(forms.split("|"))) for family, forms in _LEXICONS.get(kind, ()))


@lru_cache(maxsize=64)
def _finder(kind: str, extra: tuple[str, ...] = ()) -> Finder:
    """The kind's finder, with a catalogue's own values added (each its own family unless the
    lexicon knows it already)."""
    entries = list(_builtin_entries(kind))
    base = Finder(kind, entries)
    for value in extra:
        if base.resolve(value) is None:
            entries.append((_squash(normalize(value).text.strip()), (value,)))
    return Finder(kind, entries) if extra else base


def kind_of(key: str) -> str | None:
    """The kind of an attribute key (color, material, size, capacity, weight), or None."""
    k = normalize(str(key)).text.strip().replace("_", " ")
    k = re.sub(r"[（(【\[].*?[)）】\]]", "", k).strip()  # 容量(ml) -> 容量
    for kind, names in KIND_KEYS.items():
        for name in names:
            if k == name:
                return kind
            if name.isascii():
                if re.search(rf"(?<![a-z]){re.escape(name)}$", k):
                    return kind
            elif k.endswith(name):
                return kind
    return None


# -- quantities ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quantity:
    value: float  # in the dimension's base unit (ml, g, mm, W, mAh, GB, min, °C, V)
    dim: str
    start: int  # the whole "30x20cm" in the normalised text
    end: int

    def same(self, other: Quantity) -> bool:
        return self.dim == other.dim and math.isclose(self.value, other.value, rel_tol=1e-6, abs_tol=1e-9)


def quantities(norm: Normalized) -> list[Quantity]:
    """Every number with a unit in a normalised text (each number of ``30x20cm`` on its own)."""
    out = []
    s = norm.text
    if "," in s:  # a full-width ，is a clause mark, never a thousands separator (10,000mAh)
        s = "".join("、" if c == "," and norm.original[norm.index[i]] != "," else c for i, c in enumerate(s))
    for m in _QTY.finditer(s):
        dim, factor = _UNITS[m.group(2)]
        if m.group(2) == "g":
            a, b = norm.span(m.start(), m.end())
            if _NETWORK_G.fullmatch(norm.original[a:b].replace(" ", "")):
                continue
        for n in re.findall(_NUM, m.group(1)):
            out.append(Quantity(float(n.replace(",", "")) * factor, dim, m.start(), m.end()))
    return out


def _value_quantities(part: str, key: str) -> list[Quantity] | None:
    """The quantities a whole value states (``500ml``, ``30x20cm``; ``500`` under ``容量(ml)``), else None."""
    norm = normalize(part)
    found = quantities(norm)
    if found and all(not norm.text[:q.start].strip() for q in found[:1]) and \
            not norm.text[max(q.end for q in found):].strip():
        return found
    if re.fullmatch(rf"\s*{_NUM}\s*", norm.text):  # a bare number: the unit may be in the key
        unit = re.search(r"[（(\[]\s*([^)）\]]+?)\s*[)）\]]\s*$", normalize(str(key)).text)
        if unit and unit.group(1) in _UNITS:
            return quantities(normalize(part.strip() + unit.group(1)))
    return None


# -- the product's values --------------------------------------------------------------------------


def _parts(attributes: Any) -> dict[str, list[str]]:
    """``{key: [part, ...]}`` of a product: lists and "a, b" values split, booleans as yes / no."""
    if not isinstance(attributes, Mapping):
        raise InvalidInput(f"attributes must be an object {{attribute: value}}, got "
                           f"{type(attributes).__name__}")
    out: dict[str, list[str]] = {}
    for key, value in attributes.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        parts: list[str] = []
        for v in values:
            if isinstance(v, bool):
                v = "yes" if v else "no"
            if not isinstance(v, (str, int, float)):
                raise InvalidInput(f"attribute {key!r} has a {type(v).__name__} value {v!r}: give text, a "
                                   "number or a list of them")
            parts.extend(p for p in _PARTS.split(str(v).strip()) if p)
        if parts:
            out[str(key)] = parts
    return out


def _boolean(parts: Sequence[str]) -> bool | None:
    folded = {normalize(p).text.strip() for p in parts}
    if folded <= _YES:
        return True
    if folded <= _NO:
        return False
    return None


def _key_word(key: str) -> str:
    """What stating a yes/no key looks like: 是否防水 -> 防水, is_waterproof -> waterproof."""
    k = normalize(key).text.strip().replace("_", " ")
    return _KEY_PREFIX.sub("", k).strip() or k


def _search(s: str, value: str) -> tuple[int, int] | None:
    """The first place a value (or its form without a trailing 色) is in normalised text ``s``."""
    v = normalize(value).text.strip()
    forms = [v] + ([v[:-1]] if v.endswith("色") and len(v) > 2 else [])
    for f in forms:
        if not f:
            continue
        for m in re.finditer(form_pattern(f, plural=True), s):
            if len(f) == 1 and _CJK.match(f) and not _single_ok(s, m.start()):
                continue
            return m.span()
    return None


def _affirmed(s: str, word: str) -> tuple[int, int] | None:
    """The first place ``word`` (a yes/no key) is in ``s`` without a negation right before it."""
    for m in re.finditer(form_pattern(normalize(word).text, plural=True), s):
        if not _NEGATION.search(s[max(0, m.start() - 8):m.start()]):
            return m.span()
    return None


class _Reading:
    """One text read once: normalised, its quantities, its mentions per kind (computed on demand)."""

    def __init__(self, text: Any, extra: Mapping[str, tuple[str, ...]] | None = None):
        if not isinstance(text, str):
            raise InvalidInput(f"text must be a string, got {type(text).__name__}")
        self.norm = normalize(text)
        self.s = self.norm.text
        self.qty = quantities(self.norm)
        self.extra = dict(extra or {})
        self._mentions: dict[str, list[Mention]] = {}

    def finder(self, kind: str) -> Finder:
        return _finder(kind, self.extra.get(kind, ()))

    def mentions(self, kind: str) -> list[Mention]:
        if kind not in self._mentions:
            self._mentions[kind] = self.finder(kind).find(self.s)
        return self._mentions[kind]

    def span(self, a: int, b: int) -> list[int]:
        return list(self.norm.span(a, b))

    def stated(self, key: str, part: str, kind: str | None) -> tuple[int, int] | None:
        """Where the text states ``part`` of attribute ``key`` (normalised offsets), else None."""
        want = _value_quantities(part, key)
        if want:
            spans = []
            for q in want:
                hit = next((t for t in self.qty if t.same(q)), None)
                if hit is None:
                    return None
                spans.append((hit.start, hit.end))
            return min(spans)
        if kind in _LEXICONS or kind in self.extra:
            entry = self.finder(kind).resolve(part)
            if entry is not None:
                hit = next((m for m in self.mentions(kind) if m.entry == entry), None)
                if hit is not None:
                    return hit.start, hit.end
        return _search(self.s, part)


def coverage(text: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Which attributes ``text`` states. ``covered``: keys whose every part is stated; ``missing``:
    the others (in the product's order); ``score``: the mean over keys of the share of their parts
    stated (1.0 for a product with nothing to state); ``spans``: ``{key: [[start, end], ...]}``, one
    per stated part, offsets into ``text``; ``partial``: ``{key: [parts not stated]}`` for keys
    with some parts stated. A yes/no key with value no is not asked for."""
    parts = _parts(attributes)
    reading = _Reading(text)
    covered, missing, shares = [], [], []
    spans: dict[str, list[list[int]]] = {}
    partial: dict[str, list[str]] = {}
    for key, values in parts.items():
        flag = _boolean(values)
        if flag is False:
            continue
        if flag is True:
            found = [(values[0], _affirmed(reading.s, _key_word(key)))]
        else:
            kind = kind_of(key)
            found = [(p, reading.stated(key, p, kind)) for p in values]
        stated = [hit for _, hit in found if hit is not None]
        shares.append(len(stated) / len(found))
        if stated:
            spans[key] = [reading.span(*hit) for hit in stated]
        if len(stated) == len(found):
            covered.append(key)
        else:
            missing.append(key)
            if stated:
                partial[key] = [p for p, hit in found if hit is None]
    score = sum(shares) / len(shares) if shares else 1.0
    return {"covered": covered, "missing": missing, "score": score, "spans": spans, "partial": partial}


def _consistent(mention: str, family: str, families: set[str], values: Sequence[str]) -> bool:
    """A mention agrees with the product when its family is one of the product's, or when one of
    the two words holds the other (灰 in 深灰; white in off-white; 星空灰 holds 灰)."""
    if family in families:
        return True
    m = _squash(mention).removesuffix("色")
    return any(m and (m in v or (v and v in m)) for v in values)


def invented(text: str, attributes: Mapping[str, Any],
             lexicon: Mapping[str, Iterable[str]] | None = None) -> list[dict[str, Any]]:
    """Values ``text`` states that the product does not have, by start: lexicon words of a kind the
    product has a key for (colour, material, letter size) outside the product's families; numbers
    with a unit of a dimension the product has, at another value; a yes/no key whose value is no,
    stated without a negation; and, for a key the catalogue ``lexicon`` lists values of but that
    has no kind, another product's value when the text does not state this product's own. Each:
    ``{key, kind, stated, expected, start, end}`` (offsets into ``text``).

    ``lexicon``: ``{key: [values seen across the catalogue]}``; for a key with a kind the values
    join that kind's lexicon."""
    parts = _parts(attributes)
    if lexicon is not None and not isinstance(lexicon, Mapping):
        raise InvalidInput(f"lexicon must be {{attribute: [values]}}, got {type(lexicon).__name__}")
    kinds = {key: kind_of(key) for key in parts}
    extra: dict[str, set[str]] = {}
    for key, values in (lexicon or {}).items():
        if isinstance(values, str):
            values = [values]
        # yes / no values and quantities are judged on their own (steps 2 and 3), not as words
        vals = {v for v in (str(x).strip() for x in values)
                if v and _boolean([v]) is None and _value_quantities(v, key) is None}
        kind = kinds.get(key) or kind_of(key)
        if kind in _LEXICONS:
            extra.setdefault(kind, set()).update(vals)
        elif key in parts and _boolean(parts[key]) is None and vals:
            extra.setdefault(f"key:{key}", set()).update(vals)
    reading = _Reading(text, {k: tuple(sorted(v)) for k, v in extra.items()})
    out: list[dict[str, Any]] = []

    # where the product's own values are stated: a mention inside one of another key is not a claim
    stated_at: dict[str, list[tuple[int, int]]] = {}
    for key, values in parts.items():
        if _boolean(values) is None:
            stated_at[key] = [hit for p in values if (hit := reading.stated(key, p, kinds[key])) is not None]

    def report(key: str, kind: str, a: int, b: int, expected: str) -> None:
        if any(a < y and x < b for k, hits in stated_at.items() if k != key for x, y in hits):
            return
        start, end = reading.span(a, b)
        if any(d["start"] < end and start < d["end"] for d in out):
            return  # one place, one report
        out.append({"key": key, "kind": kind, "stated": reading.norm.original[start:end],
                    "expected": expected, "start": start, "end": end})

    # 1. lexicon kinds: colours, materials, letter sizes; and the catalogue's kinds of its own
    by_kind: dict[str, list[str]] = {}
    for key, kind in kinds.items():
        if kind in _LEXICONS and _boolean(parts[key]) is None:
            by_kind.setdefault(kind, []).append(key)
        elif f"key:{key}" in reading.extra:
            by_kind[f"key:{key}"] = [key]
    for kind, keys in by_kind.items():
        finder = reading.finder(kind)
        values = [p for k in keys for p in parts[k]]
        if kind.startswith("key:") and stated_at.get(keys[0]):
            continue  # the product's own value is stated: another one is a comparison, a pairing
        families = {finder.families[e] for v in values if (e := finder.resolve(v)) is not None}
        squashed = [_squash(normalize(v).text.strip()).removesuffix("色") for v in values]
        for m in reading.mentions(kind):
            if not _consistent(reading.s[m.start:m.end], m.family, families, squashed):
                label = "catalogue" if kind.startswith("key:") else kind
                report(keys[0], label, m.start, m.end, ", ".join(values))

    # 2. quantities of a dimension the product has, at another value
    have: dict[str, list[tuple[str, Quantity]]] = {}
    for key, values in parts.items():
        for p in values:
            for q in _value_quantities(p, key) or ():
                have.setdefault(q.dim, []).append((key, q))
    for q in reading.qty:
        if q.dim in have and not any(q.same(h) for _, h in have[q.dim]):
            key = have[q.dim][0][0]
            report(key, "quantity", q.start, q.end, ", ".join(dict.fromkeys(parts[key])))

    # 3. a yes/no attribute the product does not have, stated without a negation
    for key, values in parts.items():
        if _boolean(values) is False:
            hit = _affirmed(reading.s, _key_word(key))
            if hit is not None:
                report(key, "boolean", *hit, values[0])
    out.sort(key=lambda d: (d["start"], d["end"]))
    return out


# -- diversity -------------------------------------------------------------------------------------

_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[a-z0-9]+(?:'[a-z]+)?")


def tokens(text: str) -> list[str]:
    """Diversity tokens: each CJK character one token, each run of Latin letters / digits one word
    (normalised, so case and width do not count); punctuation and spaces are not tokens."""
    return _TOKEN.findall(normalize(text).text)


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams / all n-grams over ``texts``, the n-grams taken
    within each text over :func:`tokens`: character n-grams for Chinese, word n-grams for English,
    both in a mixed text. 0.0 when the texts hold no n-gram."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInput(f"n must be a positive integer (1 for distinct-1, 2 for distinct-2), got {n!r}")
    if isinstance(texts, str):
        raise InvalidInput("distinct_n takes a list of texts, not one string: wrap it in a list")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for t in texts:
        if not isinstance(t, str):
            raise InvalidInput(f"distinct_n takes texts (str), got {type(t).__name__}")
        toks = tokens(t)
        grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0
