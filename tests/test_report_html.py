"""The HTML report page: self-contained, every user value escaped, well-formed."""

from __future__ import annotations

import base64
import warnings
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from aigc.metrics import table as tm
from aigc.synthesis.report_html import render

EVIL = "<script>alert(1)</script>"
VOID = {"meta", "br", "img", "hr", "input", "link", "area", "base", "col", "source", "wbr"}
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


class Strict(HTMLParser):
    """Records tags and fails on anything a lenient parser would paper over."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.tags, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Strict:
    parser = Strict()
    parser.feed(page)
    parser.close()
    assert parser.errors == [] and parser.stack == [], (parser.errors, parser.stack)
    return parser


@pytest.fixture()
def tables():
    rng = np.random.default_rng(0)
    n = 80
    x = rng.normal(30, 5, n)
    real = pd.DataFrame({EVIL: x, "城市": rng.choice(["北京", "上海", "<b>广州</b>"], n),
                         "when": pd.date_range("2021-01-01", periods=n, freq="D").strftime("%Y-%m-%d")})
    synth = real.sample(frac=1, random_state=1).reset_index(drop=True)
    synth[EVIL] = synth[EVIL] + 1
    types = {EVIL: "numerical", "城市": "categorical", "when": "datetime"}
    return real, synth, types


def report_for(real, synth, types) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "quality": tm.quality(real, synth, types),
            "diagnostic": tm.diagnostic(real, synth, types),
            "detection": 0.8125,
            "tstr": {"target": "城市", "task": "classification", "positive": "上海",
                     "trtr": {"auc": 0.9123, "f1_macro": 0.8, "accuracy": 0.85},
                     "tstr": {"auc": 0.8771, "f1_macro": 0.7, "accuracy": 0.8}},
            "privacy": tm.privacy(real, synth, real.iloc[:40], types, seed=0),
            "sections": [{"title": "Images <i>", "text": "nearest neighbours & more",
                          "table": [["name", "score"], ["<img src=x onerror=alert(1)>", 0.5]],
                          "images": [{"src": PNG, "caption": "sample <1>"},
                                     {"src": "javascript:alert(1)", "caption": "bad"}],
                          "histograms": [{"title": "lengths", "bins": [0, 1, 2, 3],
                                          "series": {"real": [1, 2, 1], "synthetic": [2, 2, 0]}}]}],
            "run": {"name": "demo<run>", "epsilon": None, "seconds": 12.5},
        }


def test_page_shows_the_figures_and_plots(tables):
    real, synth, types = tables
    report = report_for(real, synth, types)
    page = render(report, real, synth, types, title="Report <for> 客户")
    parser = parse(page)
    text = "".join(parser.text)
    assert '<meta charset="utf-8">' in page
    assert f"{report['quality']['score']:.3f}" in text and "0.812" in text  # fidelity, detection
    assert "0.912" in text and "0.877" in text  # TRTR and TSTR AUC
    closer = report["privacy"]["closer_to_train"]
    assert f"{closer['value']:.3f}" in text and f"{closer['reference']:.3f}" in text
    # one svg per plotted column, two heat maps, the DCR histogram and the section's histogram
    svgs = [t for t, _ in parser.tags if t == "svg"]
    assert len(svgs) == len(types) + 2 + 1 + 1
    assert "北京" in text and "Report <for> 客户" in text  # Chinese labels, title as text
    assert "2021-01-01" in text  # datetime ticks as dates
    imgs = [a for t, a in parser.tags if t == "img"]
    assert [a["src"] for a in imgs] == [PNG]  # the javascript: one is left out, with a note
    assert "image left out" in text
    assert "demo<run>" in text and "12.500" in text  # other keys, as text


def test_user_values_are_never_markup(tables):
    real, synth, types = tables
    page = render(report_for(real, synth, types), real, synth, types, title=EVIL)
    parser = parse(page)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not [t for t, _ in parser.tags if t in ("script", "b", "i", "iframe")]
    assert [t for t, a in parser.tags if t == "img"] == ["img"]  # only the real data-URI image
    assert EVIL in "".join(parser.text)  # shown to the reader as text


def test_page_without_tables_renders_sections_only():
    report = {"sections": [{"title": "文本长度", "histograms": [
        {"title": "length", "bins": [0, 10, 20], "series": {"real": [3, 1], "synthetic": [2, 2]}}]}],
        "dcr": {"synthetic → train": [0.1, 0.2, 0.2], "holdout → train": [0.3, 0.1]}}
    page = render(report, None, None, None, title="text run")
    parser = parse(page)
    assert [t for t, _ in parser.tags].count("svg") == 2
    assert "文本长度" in "".join(parser.text)
    assert "<polygon" in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")
