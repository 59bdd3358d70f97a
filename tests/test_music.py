"""Symbolic music (aigc.data.music): MIDI and music21's corpus -> a text dataset of REMI tokens,
one private-use character per token; decoding, MIDI files, rendering, statistics."""

from __future__ import annotations

import json
import math
import shutil
import socket
import wave
from pathlib import Path

import numpy as np
import pytest
from symusic import Note, Score, TimeSignature, Track

from aigc.data import music
from aigc.data.dataset import read_card, read_text_split
from aigc.data.tokenizers import TextTokenizer
from aigc.errors import AlreadyExists, InvalidInput
from aigc.workspace import Workspace

TPQ = 480
Q = TPQ  # one quarter note in ticks
C_MAJOR_SCALE = [60, 62, 64, 65, 67, 69, 71, 72]


def _midi(path: Path, notes, program: int = 0, drums=(), tpq: int = TPQ) -> Path:
    """Write a one-track MIDI (plus a drum track when ``drums``): notes are (pitch, start, duration) ticks."""
    score = Score(tpq)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    track = Track(program=program)
    for pitch, start, dur in notes:
        track.notes.append(Note(start, dur, pitch, 90))
    if notes:
        score.tracks.append(track)
    if drums:
        kit = Track(program=0, is_drum=True)
        for pitch, start, dur in drums:
            kit.notes.append(Note(start, dur, pitch, 90))
        score.tracks.append(kit)
    path.parent.mkdir(parents=True, exist_ok=True)
    score.dump_midi(str(path))
    return path


def _scale(pitches, bars: int = 2):
    """Quarter notes cycling through ``pitches`` for ``bars`` bars of 4/4."""
    return [(pitches[i % len(pitches)], i * Q, Q) for i in range(4 * bars)]


def _tokens_of(path: Path) -> list[int]:
    """What ingestion makes of a file: its tracks merged (drums left out), REMI ids."""
    merged, _, _ = music._one_track(Score(str(path)))
    return list(music.new_tokenizer()(merged)[0].ids)


def _all_rows(ds: Path) -> dict[str, list]:
    return {s: read_text_split(ds, s) for s in ("train", "val", "test")}


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws")


@pytest.fixture
def composers(tmp_path) -> Path:
    """Two composers, two pieces each; each piece distinct (its own pitches and length)."""
    root = tmp_path / "midi"
    _midi(root / "bach" / "a.mid", _scale(C_MAJOR_SCALE, bars=3))
    _midi(root / "bach" / "b.mid", _scale([57, 60, 64, 69, 71, 72], bars=4))  # A minor arpeggios
    _midi(root / "handel" / "c.mid", _scale([62, 66, 69, 74], bars=2), program=40)  # violin: strings
    _midi(root / "handel" / "d.mid",
          [(48 + (i % 5) * 2, i * Q, 2 * Q) for i in range(12)] + [(67, 0, 4 * Q)],  # chords
          drums=[(36, i * Q, Q // 2) for i in range(8)])
    (root / "notes.txt").write_text("not music")
    return root


def test_folder_ingests_one_char_per_remi_token_with_conditions(ws, composers):
    card = music.ingest_music(ws, composers, "mini", max_tokens=4096, split=(0.5, 0.25, 0.25))
    ds = ws.dataset_path("mini")
    rows = _all_rows(ds)
    records = [r for s in rows.values() for r in s]
    assert card["modality"] == "music" and ws.get_dataset("mini")["modality"] == "text"
    assert card["pieces"]["kept"] == 4 and len(records) == 4  # one chunk per piece at this max_tokens
    assert card["ignored_files"] == 1 and card["drum_notes_dropped"] == 8
    # Each record is exactly its file's REMI ids, one private-use character per token.
    expected = {rel: music.ids_to_text(_tokens_of(composers / rel))
                for rel in ("bach/a.mid", "bach/b.mid", "handel/c.mid", "handel/d.mid")}
    by_text = {r.text: r.cond for r in records}
    assert set(by_text) == set(expected.values())
    for rel, text in expected.items():
        assert all(music.PUA_BASE <= ord(c) < music.PUA_BASE + card["tokenizer"]["vocab_size"] for c in text)
        assert by_text[text]["composer"] == rel.split("/")[0]
    assert card["cond_columns"] == ["composer", "key", "instrument"]
    assert by_text[expected["bach/a.mid"]]["key"] == "C major"
    assert by_text[expected["handel/c.mid"]]["instrument"] == "strings"
    assert by_text[expected["bach/a.mid"]]["instrument"] == "piano"
    # The text families' char tokenizer sees one token per REMI token.
    tok = TextTokenizer.train([r.text for r in rows["train"]], kind="char")
    for r in rows["train"]:
        assert len(tok.encode(r.text)) == len(r.text)
    # Every split but train got a piece (4 pieces, fractions 0.5/0.25/0.25), and the card agrees.
    splits = ("train", "val", "test")
    assert [card["pieces"][s] for s in splits] == [len(rows[s]) for s in splits]
    assert all(card["pieces"][s] >= 1 for s in ("val", "test"))
    assert read_card(ds)["tokenizer"]["file"] == music.TOKENIZER_FILE
    assert (ds / music.TOKENIZER_FILE).is_file()


def test_chunks_start_at_bars_and_never_cross_splits(ws, composers):
    max_tokens = 24
    card = music.ingest_music(ws, composers, "chunked", max_tokens=max_tokens, split=(0.5, 0.25, 0.25))
    rows = _all_rows(ws.dataset_path("chunked"))
    bar = chr(music.PUA_BASE + music.new_tokenizer().vocab["Bar_None"])
    pieces = {rel: music.ids_to_text(_tokens_of(composers / rel))
              for rel in ("bach/a.mid", "bach/b.mid", "handel/c.mid", "handel/d.mid")}
    split_of: dict[str, set[str]] = {rel: set() for rel in pieces}
    joined: dict[str, str] = {rel: "" for rel in pieces}
    for s, records in rows.items():
        for r in records:
            assert len(r.text) <= max_tokens and r.text[0] == bar
            owner = [rel for rel, text in pieces.items() if r.text in text]
            assert len(owner) == 1
            split_of[owner[0]].add(s)
            joined[owner[0]] += r.text
    assert all(len(splits) == 1 for splits in split_of.values())  # a piece's chunks stay in one split
    assert joined == pieces  # the chunks, in order, are the whole piece
    assert card["chunks"]["train"] + card["chunks"]["val"] + card["chunks"]["test"] > 4


def test_chunk_at_bars_cuts_a_long_bar_before_a_position():
    bar, pos = 1, 5
    ids = [bar, pos, 9, 9, pos, 9, 9, pos, 9, 9, bar, pos, 9]  # a bar of 10 tokens, then one of 3
    chunks = music.chunk_at_bars(ids, bar, [pos], max_tokens=6)
    assert chunks == [[bar, pos, 9, 9], [pos, 9, 9, pos, 9, 9], [bar, pos, 9]]
    assert music.chunk_at_bars(ids, bar, [pos], max_tokens=13) == [ids]
    assert music.chunk_at_bars([9, 9, bar, 9], bar, [], max_tokens=2) == [[9, 9], [bar, 9]]


def test_decode_of_encode_keeps_the_notes(ws, tmp_path):
    # Notes on the REMI grid (8 steps per beat), a chord, and one note off the grid by 1/40 beat.
    notes = [(60, 0, Q), (64, 0, Q), (67, 0, Q), (72, Q, Q // 2), (71, Q + Q // 2, Q // 2),
             (69, 2 * Q, 2 * Q), (65, 4 * Q + Q // 4, Q + Q // 4), (62, 6 * Q + 12, Q)]
    src = tmp_path / "m"
    _midi(src / "p1.mid", notes)
    _midi(src / "p2.mid", _scale(C_MAJOR_SCALE))
    _midi(src / "p3.mid", _scale([59, 62, 67]))
    music.ingest_music(ws, src, "rt", max_tokens=4096, split=(0.34, 0.33, 0.33))
    ds = ws.dataset_path("rt")
    text = music.ids_to_text(_tokens_of(src / "p1.mid"))
    decoded = music.decode_text(ds, text + "x\n", program=19)
    assert decoded.unknown == 2 and decoded.tokens == len(text)
    (track,) = decoded.score.tracks
    assert track.program == 19
    tpq = decoded.score.ticks_per_quarter
    got = [(n.pitch, n.time / tpq, n.duration / tpq) for n in track.notes]
    want = sorted((p, s / Q, d / Q) for p, s, d in notes)
    want.sort(key=lambda n: n[1])  # REMI orders by time, then pitch
    assert [g[0] for g in got] == [w[0] for w in want]  # pitches, in order
    step = 1 / 8  # the grid: 8 positions per beat
    for g, w in zip(got, want):
        assert abs(g[1] - w[1]) <= step / 2 and abs(g[2] - w[2]) <= step / 2
    assert sum(abs(g[1] - w[1]) for g, w in zip(got, want)) > 0  # the off-grid note did move
    # write_midi: a file that parses back to the same notes; no temporary file left beside it.
    out = music.write_midi(tmp_path / "out" / "p1.mid", decoded)
    back = Score(str(out))
    assert [n.pitch for n in back.tracks[0].notes] == [g[0] for g in got]
    assert sorted(p.name for p in out.parent.iterdir()) == ["p1.mid"]


def test_no_notes_and_corrupt_files_are_listed_and_strict_names_them(ws, tmp_path):
    src = tmp_path / "m"
    _midi(src / "good1.mid", _scale(C_MAJOR_SCALE))
    _midi(src / "good2.mid", _scale([57, 60, 64]))
    _midi(src / "silent.mid", [])
    _midi(src / "drums.mid", [], drums=[(36, 0, Q)])
    (src / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    card = music.ingest_music(ws, src, "lenient", max_tokens=4096, split=(0.5, 0.5, 0.0))
    dropped = {d["preview"]: d["reason"] for d in card["dropped"]}
    assert set(dropped) == {"silent.mid", "drums.mid", "broken.mid"}
    assert "no notes" in dropped["silent.mid"] and "only drum notes" in dropped["drums.mid"]
    assert "not a readable MIDI file" in dropped["broken.mid"]
    assert card["dropped_by_reason"] == {"no_notes": 2, "corrupt": 1}
    assert card["counts"]["read"] == 5 and card["counts"]["kept"] == 2

    for bad in ("silent.mid", "broken.mid"):
        only = tmp_path / f"strict-{bad}"
        only.mkdir()
        for f in ("good1.mid", "good2.mid", bad):
            shutil.copy(src / f, only / f)
        with pytest.raises(InvalidInput, match=bad.replace(".", r"\.")) as e:
            music.ingest_music(ws, only, "strict", strict=True)
        assert "--strict" in str(e.value) and "\n" not in str(e.value)
        assert not ws.has_dataset("strict") and not ws.dataset_path("strict").exists()  # nothing written


def test_bad_options_and_too_few_pieces_fail_with_one_line(ws, tmp_path, composers):
    with pytest.raises(InvalidInput, match=r"--max-tokens 3"):
        music.ingest_music(ws, composers, "x", max_tokens=3)
    with pytest.raises(InvalidInput, match=r"--limit 0"):
        music.ingest_music(ws, composers, "x", limit=0)
    one = _midi(tmp_path / "one.mid", _scale(C_MAJOR_SCALE))
    with pytest.raises(InvalidInput, match=r"1 usable piece\(s\) of 1 read.*at least 2"):
        music.ingest_music(ws, one, "x")
    music.ingest_music(ws, composers, "taken", max_tokens=4096, split=(0.5, 0.25, 0.25))
    with pytest.raises(AlreadyExists, match="--replace"):
        music.ingest_music(ws, composers, "taken")
    assert not ws.dataset_path("x").exists()


def test_is_music_source(tmp_path, composers):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "t.txt").write_text("hello")
    assert music.is_music_source("music21:bach", {})
    assert music.is_music_source(None, {"music21": "bach"})
    assert music.is_music_source(composers / "bach" / "a.mid", {})
    assert music.is_music_source(composers, {})
    assert not music.is_music_source(tmp_path / "pics", {})
    assert not music.is_music_source(tmp_path / "t.txt", {})


def test_ngram_baselines_match_hand_counts():
    got = music.ngram_baselines([[1, 2, 1, 2]], [[1, 2, 7]])
    # vocab: {1, 2} + unknown = 3; unigram counts 1:2, 2:2, unknown:0 of 4.
    uni = -(math.log(3 / 7) * 2 + math.log(1 / 7)) / 3
    # bigram contexts: start->1 once; 1->2 twice (1 seen twice); 2->1 once (2 seen once as context).
    bi = -(math.log(2 / 4) + math.log(3 / 5) + math.log(1 / 4)) / 3
    assert got == {"unigram_nll": round(uni, 4), "bigram_nll": round(bi, 4), "val_tokens": 3, "vocab": 3}
    assert music.ngram_baselines([[1]], [])["unigram_nll"] is None


def test_split_pieces_gives_val_and_test_a_piece_when_the_hashes_do_not():
    pieces = [music._Piece(str(i), [i], {}, music.ids_to_text([i, i + 1])) for i in range(3)]
    by_split = music.split_pieces(pieces, (0.98, 0.01, 0.01))  # hashes alone would put all in train
    assert [len(by_split[s]) for s in ("train", "val", "test")] == [1, 1, 1]
    assert music.split_pieces(pieces, (1.0, 0.0, 0.0))["train"] == pieces  # a zero fraction stays empty


def test_music21_bach_subset_offline_cached_and_bigram_below_unigram(ws, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("music ingestion tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    card = music.ingest_music(ws, "music21:bach", "chorales", limit=5, split=(0.6, 0.2, 0.2))
    m21 = card["music21"]
    assert (m21["listed"], m21["distinct"], m21["taken"]) == (371, 350, 5)
    assert m21["exported_now"] == 5 and m21["failed"] == []
    cache = Path(m21["cache"])
    assert cache == ws.root / "cache" / "music21" / "bach" and len(list(cache.glob("*.mid"))) == 5
    assert set(card["conditions"]["composer"]) == {"bach"}
    base = card["baselines"]
    assert base["val_tokens"] > 0 and base["bigram_nll"] < base["unigram_nll"]

    # The second ingest reads the cache: music21 never parses again.
    import music21.corpus

    monkeypatch.setattr(music21.corpus, "parse", lambda *a, **k: pytest.fail("re-exported a cached piece"))
    again = music.ingest_music(ws, "music21:bach", "chorales", limit=5, split=(0.6, 0.2, 0.2), replace=True)
    assert again["music21"]["from_cache"] == 5 and again["music21"]["exported_now"] == 0
    assert again["baselines"] == card["baselines"]
    assert json.loads((cache / music.CACHE_INDEX).read_text())["corpus"] == "bach"


def test_cli_ingests_a_music21_corpus_with_its_options(ws):
    """`aigc ingest --music21 bach --limit 3 --max-tokens 256` (the cache of the test above, or a fresh
    export of three pieces); no PATH and no --music21 is one line, exit 2."""
    from typer.testing import CliRunner

    from aigc.cli.main import app

    r = CliRunner().invoke(app, ["ingest", "--music21", "bach", "--limit", "3", "--max-tokens", "256",
                                 "--name", "ch3", "--split", "0.4,0.3,0.3", "--workspace", str(ws.root)])
    assert r.exit_code == 0, r.output
    card = read_card(ws.dataset_path("ch3"))
    assert card["music21"]["taken"] == 3 and card["chunks"]["max_tokens"] == 256
    assert max(len(rec.text) for s in ("train", "val", "test") for rec in read_text_split(ws.dataset_path("ch3"), s)) <= 256
    r = CliRunner().invoke(app, ["ingest", "--name", "nothing", "--workspace", str(ws.root)])
    assert r.exit_code == 2 and "missing PATH" in r.output and len(r.output.strip().splitlines()) == 1


def test_render_wav_is_not_silent(ws, tmp_path):
    if shutil.which("fluidsynth") is None:
        pytest.skip("fluidsynth is not installed (Debian package fluidsynth)")
    if not music.DEFAULT_SOUNDFONT.is_file():
        pytest.skip(f"no soundfont at {music.DEFAULT_SOUNDFONT} (Debian package fluid-soundfont-gm)")
    midi = _midi(tmp_path / "tune.mid", [(60 + i, i * Q // 2, Q // 2) for i in range(8)])  # 2 s at 120 bpm
    out = music.render_wav(midi, tmp_path / "wav" / "tune.wav", sample_rate=22050)
    with wave.open(str(out)) as w:
        assert w.getframerate() == 22050 and w.getsampwidth() == 2
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    assert len(frames) / 22050 / 2 >= 1.5  # stereo frames: at least the notes' 2 s, less a little
    assert np.sqrt(np.mean(frames.astype(np.float64) ** 2)) > 100  # well above silence
    assert sorted(p.name for p in out.parent.iterdir()) == ["tune.wav"]


def test_render_wav_names_the_missing_debian_package(tmp_path, monkeypatch):
    midi = _midi(tmp_path / "tune.mid", _scale(C_MAJOR_SCALE))
    monkeypatch.setattr(music.shutil, "which", lambda name: None)
    with pytest.raises(InvalidInput, match=r"Debian package fluidsynth"):
        music.render_wav(midi, tmp_path / "a.wav")
    monkeypatch.setattr(music.shutil, "which", lambda name: "/usr/bin/fluidsynth")
    with pytest.raises(InvalidInput, match=r"nowhere\.sf2 not found: install the Debian package "
                                           r"fluid-soundfont-gm"):
        music.render_wav(midi, tmp_path / "a.wav", soundfont=tmp_path / "nowhere.sf2")
    assert not (tmp_path / "a.wav").exists()


def test_music_stats_histograms():
    score = Score(TPQ)
    track = Track()
    for pitch, start, dur in [(60, 0, 4 * Q), (64, 0, 4 * Q), (67, 0, 2 * Q), (72, 2 * Q, Q), (74, 3 * Q, Q)]:
        track.notes.append(Note(start, dur, pitch, 90))
    score.tracks.append(track)
    stats = music.music_stats([score])
    assert stats["notes"] == 5
    # pitch classes: C (60, 72), E (64), G (67), D (74)
    assert stats["pitch_class_hist"] == pytest.approx([0.4, 0, 0.2, 0, 0.2, 0, 0, 0.2, 0, 0, 0, 0])
    # onsets: t=0 three sound; t=2Q C, E, 72 (G ended) = 3; t=3Q C, E, 74 = 3 (72 ended)
    assert stats["polyphony_hist"] == pytest.approx([0, 0, 1.0, 0, 0, 0, 0, 0])
    assert music.music_stats([])["pitch_class_hist"] == [0.0] * 12


def test_a_text_family_trains_on_the_music_dataset_unchanged(ws, composers):
    import aigc

    music.ingest_music(ws, composers, "tunes", max_tokens=4096, split=(0.5, 0.25, 0.25))
    row = aigc.train("tunes", family="gpt", preset="tiny", workspace=ws, max_steps=3, eval_every=3)
    spec = json.loads((ws.run_path(row["name"]) / "run.json").read_text())
    assert row["status"] == "finished"
    assert spec["cond_columns"] == ["composer", "key", "instrument"]
    assert set(spec["conditions"]["composer"]) == {"bach", "handel"}
