"""The studio's Audio page in headless Chromium (Debian's `chromium`, driven by Playwright) over a real
server: pick the tiny audio run, the class ``<b>x</b>`` (shown as those characters, never as markup)
and Griffin-Lim, generate, and get one player per clip whose WAV loads (HTTP 200, audio/wav, the
clip's duration) with its spectrogram; a thumbs up on a clip lands in the log as that sample's."""

from __future__ import annotations

import os

import pytest

from aigc import logbook
from aigc.server import Settings

from helpers import LiveServer
from test_audio_serve import SETTINGS, SR, train_audio_workspace
from test_studio import CHROMIUM, open_page

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="Debian's chromium is not installed (`make test` installs it as root)")
MARKUP = "<b>x</b>"  # a class name that must be shown as these characters


@pytest.fixture(scope="module")
def studio_ws(tmp_path_factory):
    return train_audio_workspace(tmp_path_factory.mktemp("studio-audio"))


@pytest.fixture()
def page(studio_ws):
    with LiveServer(studio_ws, Settings(**SETTINGS)) as server, open_page(server.url) as pg:  # fails on JS errors
        yield pg


def test_audio_page_plays_clips_shows_spectrograms_and_takes_a_thumb(page, studio_ws):
    page.wait_for_selector("#run-select option[value=t]", state="attached")  # the playground: text and images
    assert page.eval_on_selector_all("#run-select option", "os => os.map(o => o.value)") == ["t"]
    page.click("button[data-tab=audio]")
    page.wait_for_selector("#audio-run option[value=mel]", state="attached")
    assert page.eval_on_selector_all("#audio-run option", "os => os.map(o => o.value)") == ["mel"]  # no vocoder, no text
    assert page.eval_on_selector_all("#audio-vocoder option", "os => os.map(o => o.value)") == \
        ["auto", "griffin-lim", "voc"]
    page.select_option("#audio-run", "mel")
    page.select_option("#audio-class", MARKUP)
    page.select_option("#audio-vocoder", "griffin-lim")
    page.fill("#audio-n", "2")
    page.fill("#audio-seed", "7")
    page.click("#audio-generate")
    page.wait_for_selector("#audio-clip-1 audio", timeout=60_000)
    assert "griffin-lim" in page.text_content("#audio-status")

    players = page.locator("#audio-clips audio")
    assert players.count() == 2
    generation = page.get_attribute("#audio-clips", "data-generation")
    seconds = []
    for i in range(2):
        url = page.get_attribute(f"#audio-player-{i}", "data-url")
        res = page.request.get(url)
        assert res.status == 200 and res.headers["content-type"] == "audio/wav"
        # the player decoded its source: metadata loaded, the clip's length
        page.wait_for_function(f"document.querySelector('#audio-player-{i}').readyState >= 1", timeout=30_000)
        seconds.append(page.evaluate(f"document.querySelector('#audio-player-{i}').duration"))
        assert len(res.body()) > SR  # 16-bit samples: at least half a second of audio
    gen = logbook.get(studio_ws, generation)
    assert gen["run"] == "mel" and gen["prompt"] == MARKUP
    from aigc.provenance.audio import read_audio_cue

    wav = studio_ws.root / "generations" / generation / "image-000.wav"
    cue_seconds = (read_audio_cue(wav) or {}).get("seconds", 0.0)
    assert all(abs(s - (0.5 + cue_seconds)) < 0.01 for s in seconds), seconds
    sizes = page.eval_on_selector_all("#audio-clips img.spectrogram",
                                      "imgs => imgs.map(i => i.complete && i.naturalWidth)")
    assert sizes == [16, 16]

    # the class name is text: in the menu and on each clip, never a <b> element
    assert page.text_content("#audio-clip-0 h3") == MARKUP
    assert page.locator("#audio-clips b, #audio-class b").count() == 0

    page.click("#lang")  # the menus speak the other language and keep what was picked
    assert page.text_content("#audio-vocoder option[value=auto]").startswith("自动")
    assert page.eval_on_selector("#audio-class", "s => s.value") == MARKUP
    assert page.eval_on_selector("#audio-vocoder", "s => s.value") == "griffin-lim"
    page.click("#lang")

    page.click("#audio-thumb-up-1")
    page.wait_for_selector("#audio-feedback-1:has-text('saved')")
    thumbs = [(f["rating"], f["sample_index"]) for f in logbook.get(studio_ws, generation)["feedback"]]
    assert thumbs == [(1, 1)]
