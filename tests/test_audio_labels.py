"""AIGC labels in audio (GB 45438-2025): the Annex E label round-trips through WAV, MP3 and FLAC without
touching a sample, a relabel replaces it, other metadata is kept, the audible cue is where the file
says it is, damaged files are one-line errors, `aigc label` reads audio, and the policy's
`labels.audio_cue` flag parses."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from aigc.errors import InvalidInput
from aigc.provenance import annex, audio
from aigc.provenance.labels import check_file, implicit_label, label_file, read_label

PRODUCER = "001191110108MA01KP2T5U00000"  # a code in the TC260 practice guide's shape, not a real service's
SR = 16000
HAS_MP3 = "MP3" in sf.available_formats()
needs_mp3 = pytest.mark.skipif(not HAS_MP3,
                               reason="this libsndfile has no MP3 (needs libsndfile 1.1+ built with LAME)")


def meta(produce_id="gen-0001", producer=PRODUCER):
    return implicit_label(producer=producer, produce_id=produce_id)


def clip(seconds=1.0, seed=0, channels=1):
    """A seeded tone plus noise, float32 (T,) or (channels, T), peak about 0.3."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    wave = 0.25 * np.sin(2 * np.pi * 220 * t) + 0.03 * rng.standard_normal(len(t))
    return wave.astype(np.float32) if channels == 1 else np.stack([wave, -wave]).astype(np.float32)


def chunks(path):
    """(id, size, offset) of every RIFF chunk, walking the file as a strict reader would."""
    data = path.read_bytes()
    assert data[:4] == b"RIFF" and struct.unpack("<I", data[4:8])[0] == len(data) - 8  # RIFF size updated
    out, pos = [], 12
    while pos < len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        out.append((cid, size, pos))
        pos += 8 + size + (size & 1)
    assert pos == len(data)  # every chunk word-aligned, nothing after the last
    return out


def synchsafe(raw):
    return sum(b << (7 * (3 - i)) for i, b in enumerate(raw))


def id3_frames(data):
    """(version, [(frame id, body)]) of a v2.3 / v2.4 tag, sizes checked."""
    assert data[:3] == b"ID3" and all(b < 0x80 for b in data[6:10])
    version, size = data[3], synchsafe(data[6:10])
    body, frames, pos = data[10:10 + size], [], 0
    while pos + 10 <= len(body) and body[pos] != 0:
        raw = body[pos + 4:pos + 8]
        n = synchsafe(raw) if version == 4 else struct.unpack(">I", raw)[0]
        frames.append((body[pos:pos + 4], body[pos + 10:pos + 10 + n]))
        pos += 10 + n
    assert pos == size
    return version, frames, data[10 + size:]


# -- WAV ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("produce_id", ["gen-0001", "gen-00012"])  # label JSON of odd and even length
def test_wav_label_round_trips_and_a_relabel_replaces_it_without_touching_a_sample(tmp_path, produce_id):
    plain, labelled = tmp_path / "plain.wav", tmp_path / "labelled.wav"
    audio.save_wav(plain, clip(), SR)
    audio.save_wav(labelled, clip(), SR, meta(produce_id))
    assert audio.read_audio_label(labelled) == meta(produce_id) and audio.read_audio_label(plain) is None
    ids = [c for c, _s, _o in chunks(labelled)]
    assert ids.count(audio.WAV_CHUNK) == 1 and ids.index(audio.WAV_CHUNK) < ids.index(b"data")
    samples = sf.read(plain, dtype="int16")[0]
    assert np.array_equal(sf.read(labelled, dtype="int16")[0], samples)
    with sf.SoundFile(labelled) as f:  # libsndfile reads the INFO copy as the file's comment
        assert json.loads(f.copy_metadata()["comment"]) == {"AIGC": meta(produce_id)}

    audio.label_audio_file(labelled, meta("again-1"))
    audio.label_audio_file(labelled, meta("again-22"))
    found, cue = audio.find(labelled.read_bytes())
    assert sorted(w for w, _ in found) == ["wav-chunk", "wav-info"] and cue is None  # replaced, never stacked
    assert all(json.loads(raw) == meta("again-22") for _w, raw in found)
    assert [c for c, _s, _o in chunks(labelled)].count(audio.WAV_CHUNK) == 1
    assert np.array_equal(sf.read(labelled, dtype="int16")[0], samples)
    res = check_file(labelled)
    assert res.ok and res.kind == "wav" and res.implicit == meta("again-22") and res.explicit is False


def test_a_wav_keeps_its_own_title_and_comment_and_label_file_writes_a_copy(tmp_path):
    src = tmp_path / "mine.wav"
    with sf.SoundFile(src, "w", SR, 2, "PCM_24") as f:
        f.title, f.comment = "my take", "recorded at home"
        f.write(clip(channels=2).T)
    before = sf.read(src, dtype="int32")[0]
    out = label_file(src, tmp_path / "out.wav", meta())
    with sf.SoundFile(out) as f:
        kept = f.copy_metadata()
    assert kept["title"] == "my take" and kept["comment"] == "recorded at home"
    assert [w for w, _ in audio.find(out.read_bytes())[0]] == ["wav-chunk"]  # its comment is not overwritten
    assert read_label(out) == meta() and np.array_equal(sf.read(out, dtype="int32")[0], before)
    assert read_label(src) is None  # the source is untouched


# -- MP3 ----------------------------------------------------------------------------------------------

@needs_mp3
def test_mp3_label_round_trips_in_an_id3v24_tag_and_the_audio_decodes_the_same(tmp_path):
    plain, labelled = tmp_path / "plain.mp3", tmp_path / "labelled.mp3"
    audio.save_audio_file(plain, clip(), SR)
    long = meta(producer="某某科技 AI 服务 " + "x" * 120)  # non-ASCII, and a frame over 127 bytes (synchsafe)
    audio.save_audio_file(labelled, clip(), SR, long)
    version, frames, rest = id3_frames(labelled.read_bytes())
    assert version == 4 and rest == plain.read_bytes()  # the unlabelled file's MPEG frames, byte for byte
    txxx = [b for f, b in frames if f == b"TXXX"]
    assert len(txxx) == 1 and txxx[0].startswith(b"\x03AIGC\x00") and len(txxx[0]) > 127
    assert audio.read_audio_label(labelled) == long
    assert np.array_equal(sf.read(labelled, dtype="float32")[0], sf.read(plain, dtype="float32")[0])

    audio.label_audio_file(labelled, meta("again-1"))
    found, _cue = audio.find(labelled.read_bytes())
    assert sorted(w for w, _ in found) == ["id3-comm", "id3-txxx"]  # one of each: replaced, not stacked
    res = check_file(labelled)
    assert res.ok and res.kind == "mp3" and res.implicit == meta("again-1")


@needs_mp3
def test_an_existing_id3v23_tag_keeps_its_frames_and_version(tmp_path):
    audio.save_audio_file(tmp_path / "plain.mp3", clip(), SR)
    mpeg = (tmp_path / "plain.mp3").read_bytes()
    title = b"\x00Demo song"
    frame = b"TIT2" + struct.pack(">I", len(title)) + b"\x00\x00" + title
    tagged = tmp_path / "tagged.mp3"
    tagged.write_bytes(b"ID3\x03\x00\x00" + bytes([0, 0, 0, len(frame)]) + frame + mpeg)
    audio.label_audio_file(tagged, meta())
    version, frames, rest = id3_frames(tagged.read_bytes())
    assert version == 3 and frames[0] == (b"TIT2", title) and rest == mpeg
    assert audio.read_audio_label(tagged) == meta()


# -- the audible cue ------------------------------------------------------------------------------------

def test_the_explicit_cue_is_at_the_start_quieter_than_full_scale_and_recorded(tmp_path):
    n = audio.cue_samples(SR)
    path = audio.save_wav(tmp_path / "cued.wav", clip(), SR, meta(), explicit=True)
    wave = sf.read(path, dtype="float32")[0]
    assert len(wave) == n + SR
    rms = lambda a: float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))  # noqa: E731
    chime, gap = wave[: round(0.4 * SR)], wave[round(0.42 * SR):n]
    assert rms(chime) > 0.03 and rms(gap) < 1e-3 and np.abs(chime).max() <= audio.CUE_PEAK + 1e-3
    assert np.allclose(wave[n:], clip(), atol=1 / 16384)  # the clip itself follows, as it was
    assert audio.read_audio_cue(path) == {"cue": audio.CUE_NAME, "position": "start",
                                          "seconds": audio.CUE_SECONDS, "samples": n, "sample_rate": SR}
    assert audio.find_cue(wave, SR) == 0 and audio.find_cue(clip(), SR) is None
    assert np.array_equal(audio.strip_cue(wave, SR), wave[n:])
    with pytest.raises(InvalidInput, match="no AIGC audio cue"):
        audio.strip_cue(clip(), SR)
    assert audio.read_audio_label(path) == meta()
    res = check_file(path, require_explicit=True)
    assert res.ok and res.explicit is True
    plain = audio.save_wav(tmp_path / "plain.wav", clip(), SR, meta())
    assert not check_file(plain, require_explicit=True).ok

    audio.label_audio_file(path, meta("again"), explicit=True)  # a clip that has the cue gets no second one
    assert len(sf.read(path)[0]) == n + SR and audio.read_audio_label(path) == meta("again")


def test_adding_the_cue_to_an_existing_float_wav_keeps_its_samples_exactly(tmp_path):
    src = tmp_path / "float.wav"
    sf.write(src, clip(channels=2).T, SR, subtype="FLOAT")
    before = sf.read(src, dtype="float32")[0]
    audio.label_audio_file(src, meta(), explicit=True)
    after = sf.read(src, dtype="float32")[0]
    n = audio.cue_samples(SR)
    assert np.array_equal(after[n:], before)  # prepended byte for byte, nothing re-encoded
    assert np.array_equal(after[:n, 0], audio.cue(SR)) and np.array_equal(after[:n, 1], audio.cue(SR))
    assert audio.read_audio_cue(src)["samples"] == n


@needs_mp3
def test_the_cue_survives_mp3_encoding_and_is_found_despite_the_decoder_delay(tmp_path):
    path = audio.save_audio_file(tmp_path / "cued.mp3", clip(), SR, meta(), explicit=True)
    wave = sf.read(path, dtype="float32")[0]
    at = audio.find_cue(wave, SR)
    assert at is not None and at < 0.1 * SR
    assert audio.read_audio_cue(path)["samples"] == audio.cue_samples(SR)
    assert check_file(path, require_explicit=True).ok


# -- bad input ----------------------------------------------------------------------------------------------

def test_damaged_or_unsupported_audio_is_a_one_line_error_and_nothing_is_written(tmp_path):
    good = audio.save_wav(tmp_path / "good.wav", clip(), SR, meta())
    cut = tmp_path / "cut.wav"
    cut.write_bytes(good.read_bytes()[:-5000])
    fake = tmp_path / "fake.wav"
    fake.write_bytes(b"this is not audio at all, just text\n" * 4)
    other = tmp_path / "clip.ogg"
    other.write_bytes(b"OggS" + bytes(64))
    cases = [(audio.read_audio_label, cut, "truncated"), (audio.label_audio_file, cut, "truncated"),
             (audio.read_audio_label, fake, "is not a WAV file"), (audio.label_audio_file, other, "'.ogg'"),
             (check_file, cut, "truncated"), (read_label, fake, "is not a WAV audio file")]
    for fn, path, what in cases:
        with pytest.raises(InvalidInput) as e:
            fn(path, meta()) if fn is audio.label_audio_file else fn(path)
        assert what in str(e.value) and "\n" not in str(e.value), (fn.__name__, str(e.value))
    with pytest.raises(InvalidInput, match="truncated"):
        label_file(cut, tmp_path / "out.wav", meta())
    assert not (tmp_path / "out.wav").exists() and sorted(p.name for p in tmp_path.iterdir()) == \
        ["clip.ogg", "cut.wav", "fake.wav", "good.wav"]  # no temporary file left behind
    with pytest.raises(InvalidInput, match="needs a sample rate of at least 8000"):
        audio.save_wav(tmp_path / "low.wav", clip(), 4000, meta(), explicit=True)
    with pytest.raises(InvalidInput, match="float samples"):
        audio.save_wav(tmp_path / "int.wav", np.zeros(10, dtype=np.int16), SR)


@needs_mp3
def test_a_corrupt_id3_tag_is_refused(tmp_path):
    audio.save_audio_file(tmp_path / "plain.mp3", clip(), SR)
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"ID3\x04\x00\x00\x00\x00\x7f\x7f" + (tmp_path / "plain.mp3").read_bytes())
    with pytest.raises(InvalidInput, match="ends inside its ID3 tag"):
        audio.read_audio_label(bad)


# -- the CLI and the policy -------------------------------------------------------------------------------

def test_cli_label_check_and_add_read_a_wav(tmp_path, monkeypatch):
    import aigc.cli.label as cli_label

    def aigc(*args):  # `aigc label ...`: the command group itself
        return CliRunner().invoke(cli_label.label_app, [str(a) for a in args], catch_exceptions=False)

    cued = audio.save_wav(tmp_path / "cued.wav", clip(), SR, meta("p-9"), explicit=True)
    r = aigc("check", cued)
    assert r.exit_code == 0, r.output
    assert "valid implicit label (AI-generated" in r.stdout and "produce id p-9" in r.stdout
    assert "wav-chunk" in r.stdout and "explicit label: yes" in r.stdout
    plain = audio.save_wav(tmp_path / "plain.wav", clip(), SR)
    r = aigc("check", plain)
    assert r.exit_code == 1 and "NOT LABELLED" in r.stdout and "no AIGC chunk" in r.stdout

    monkeypatch.setattr(cli_label, "_settings", lambda ws: {"producer": PRODUCER})
    r = aigc("add", plain, "-o", tmp_path / "added.wav", "--produce-id", "p-10", "--no-explicit")
    assert r.exit_code == 0, r.output
    assert audio.read_audio_label(tmp_path / "added.wav") == meta("p-10")
    assert np.array_equal(sf.read(tmp_path / "added.wav")[0], sf.read(plain)[0])
    r = aigc("add", plain, "-o", tmp_path / "cue.wav", "--explicit")
    assert r.exit_code == 0 and audio.read_audio_cue(tmp_path / "cue.wav")["samples"] == audio.cue_samples(SR)
    assert len(sf.read(tmp_path / "cue.wav")[0]) == audio.cue_samples(SR) + SR
    r = aigc("check", tmp_path / "junk.wav")
    assert r.exit_code == 2 and r.stderr.startswith("error: ")


def test_the_policy_audio_cue_flag_defaults_on_parses_and_refuses_a_bad_value():
    from aigc.safety.policy import default_policy, parse_policy

    head = "version: 1\ncategories:\n  fraud: {openai: [illicit], tc260: [A.1.h]}\n"
    assert default_policy().labels["audio_cue"] is True and parse_policy(head).labels["audio_cue"] is True
    assert parse_policy(head + "labels: {audio_cue: false}").labels["audio_cue"] is False
    with pytest.raises(InvalidInput, match=r"labels.audio_cue: expected true or false, got 'sometimes'"):
        parse_policy(head + "labels: {audio_cue: sometimes}")


def test_sniff_tells_audio_from_text_and_images():
    buf = io.BytesIO()
    sf.write(buf, clip(0.1), SR, format="WAV")
    assert audio.sniff(buf.getvalue()[:16]) == "WAV"
    assert audio.sniff(b"ID3\x04\x00\x00\x00\x00\x00\x00") == "MP3"
    assert audio.sniff(b"\xff\xfbP\xc4") == "MP3"  # an MPEG-1 layer III frame header
    assert audio.sniff("\ufeffhello".encode("utf-16-le")) is None  # a UTF-16 BOM (FF FE) is not a frame
    assert audio.sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") is None


# -- FLAC -----------------------------------------------------------------------------------------------

STREAMINFO, PADDING, APPLICATION, SEEKTABLE, VORBIS, CUESHEET = 0, 1, 2, 3, 4, 5


def flac_parts(data):
    """(what precedes fLaC, [(type, body)], audio frames), walking the blocks as a strict reader would:
    the last-block flag on the last block only, STREAMINFO first, the frames right after."""
    front = data[:data.index(b"fLaC")]
    blocks, pos, last = [], len(front) + 4, False
    while not last:
        assert pos + 4 <= len(data)
        last, kind = bool(data[pos] & 0x80), data[pos] & 0x7F
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        blocks.append((kind, data[pos + 4:pos + 4 + size]))
        assert len(blocks[-1][1]) == size
        pos += 4 + size
    frames = data[pos:]
    assert blocks[0][0] == STREAMINFO and frames[:2] in (b"\xff\xf8", b"\xff\xf9")
    return front, blocks, frames


def flac_bytes(blocks, frames, front=b""):
    """A FLAC file from its parts, the last-block flag set on the last block."""
    out = [front, b"fLaC"]
    for i, (kind, body) in enumerate(blocks):
        flag = 0x80 if i == len(blocks) - 1 else 0
        out.append(bytes([flag | kind]) + len(body).to_bytes(3, "big") + body)
    return b"".join(out) + frames


def vorbis(vendor, entries):
    return b"".join([struct.pack("<I", len(vendor)), vendor, struct.pack("<I", len(entries))]
                    + [struct.pack("<I", len(e)) + e for e in entries])


def comments(block):
    """(vendor, [entries]) of a VORBIS_COMMENT body, every length checked."""
    n = struct.unpack_from("<I", block)[0]
    vendor, count, pos, entries = block[4:4 + n], struct.unpack_from("<I", block, 4 + n)[0], 8 + n, []
    for _ in range(count):
        size = struct.unpack_from("<I", block, pos)[0]
        entries.append(block[pos + 4:pos + 4 + size])
        pos += 4 + size
    assert pos == len(block)
    return vendor, entries


def plain_flac(seconds=1.0, channels=1, subtype="PCM_16"):
    buf = io.BytesIO()
    sf.write(buf, clip(seconds, channels=channels).T, SR, format="FLAC", subtype=subtype)
    return buf.getvalue()


def test_flac_label_round_trips_in_vorbis_comments_and_a_relabel_replaces_it(tmp_path):
    plain, labelled = tmp_path / "plain.flac", tmp_path / "labelled.flac"
    audio.save_audio_file(plain, clip(), SR)
    audio.save_audio_file(labelled, clip(), SR, meta())
    _front, blocks, frames = flac_parts(labelled.read_bytes())
    assert frames == flac_parts(plain.read_bytes())[2]  # the unlabelled file's frames, byte for byte
    assert [k for k, _ in blocks] == [STREAMINFO, VORBIS]
    assert comments(blocks[1][1])[1] == [b"AIGC=" + annex.dumps(meta()).encode(),
                                         b'COMMENT={"AIGC":' + annex.dumps(meta()).encode() + b"}"]
    assert audio.read_audio_label(labelled) == meta() and audio.read_audio_label(plain) is None
    samples = sf.read(plain, dtype="int16")[0]
    assert np.array_equal(sf.read(labelled, dtype="int16")[0], samples)
    with sf.SoundFile(labelled) as f:  # libsndfile (libFLAC) reads the COMMENT copy as the file's comment
        assert f.format == "FLAC" and json.loads(f.copy_metadata()["comment"]) == {"AIGC": meta()}

    audio.label_audio_file(labelled, meta("again-1"))
    audio.label_audio_file(labelled, meta("again-22"))
    found, cue = audio.find(labelled.read_bytes())
    assert [w for w, _ in found] == ["flac-aigc", "flac-comment"] and cue is None  # replaced, never stacked
    assert all(json.loads(raw) == meta("again-22") for _w, raw in found)
    assert np.array_equal(sf.read(labelled, dtype="int16")[0], samples)
    res = check_file(labelled)
    assert res.ok and res.kind == "flac" and res.implicit == meta("again-22") and res.explicit is False
    assert res.sources == ["flac-aigc", "flac-comment"]
    removed = audio.splice(labelled.read_bytes(), None)
    assert audio.find(removed) == ([], None) and flac_parts(removed)[2] == frames


# an ID3v2.3 tag of one 20-byte frame (a title), as some taggers put in front of fLaC
ID3_TITLE = b"ID3\x03\x00\x00\x00\x00\x00\x14" + b"TIT2\x00\x00\x00\x0a\x00\x00" + b"\x00Demo song"


@pytest.mark.parametrize("front", [b"", ID3_TITLE], ids=["bare", "id3-in-front"])
def test_a_flac_keeps_its_other_blocks_vendor_and_comments_in_order(tmp_path, front):
    _f, blocks, frames = flac_parts(plain_flac())
    info = blocks[0][1]
    app = b"test" + bytes(range(40))  # an APPLICATION block: 4-byte id, then its own data
    seek = struct.pack(">QQH", 0, 0, 4096)  # one seek point: sample 0 at offset 0
    mine = [b"TITLE=My take", b"comment=recorded at home", "ARTIST=张三".encode(), b"aigc=stale", b"NOEQUALS"]
    vendor = b"reference libFLAC 1.3.2 20170101"
    blocks = [(STREAMINFO, info), (APPLICATION, app), (SEEKTABLE, seek), (VORBIS, vorbis(vendor, mine)),
              (PADDING, bytes(1024))]
    src = tmp_path / "mine.flac"
    src.write_bytes(flac_bytes(blocks, frames, front))
    assert audio.sniff(src.read_bytes()) == "FLAC"
    before = sf.read(src, dtype="int16")[0]
    out = label_file(src, tmp_path / "out.flac", meta())
    front2, blocks2, frames2 = flac_parts(out.read_bytes())
    assert front2 == front and frames2 == frames and [k for k, _ in blocks2] == [k for k, _ in blocks]
    assert [b for k, b in blocks2 if k != VORBIS] == [b for k, b in blocks if k != VORBIS]
    vendor2, entries = comments(blocks2[3][1])
    kept = [e for e in mine if e != b"aigc=stale"]  # names are case-insensitive: the old label is replaced
    assert vendor2 == vendor and entries == kept + [b"AIGC=" + annex.dumps(meta()).encode()]
    assert [w for w, _ in audio.find(out.read_bytes())[0]] == ["flac-aigc"]  # its own comment is kept
    assert read_label(out) == meta() and np.array_equal(sf.read(out, dtype="int16")[0], before)
    with sf.SoundFile(out) as f:
        assert f.copy_metadata()["title"] == "My take"
    assert read_label(src) is None  # the source is untouched


def test_a_flac_without_vorbis_comments_gets_a_block_after_streaminfo():
    _f, blocks, frames = flac_parts(plain_flac())
    info = blocks[0][1]
    data = audio.splice(flac_bytes([(STREAMINFO, info), (PADDING, bytes(8))], frames), meta())
    _front, blocks, frames2 = flac_parts(data)
    assert [k for k, _ in blocks] == [STREAMINFO, VORBIS, PADDING] and blocks[2][1] == bytes(8)
    assert comments(blocks[1][1])[0] == audio.VENDOR and frames2 == frames


def test_the_cue_goes_in_front_of_a_flac_losslessly_and_only_once(tmp_path):
    _f, blocks, frames = flac_parts(plain_flac(channels=2, subtype="PCM_24"))
    app = (APPLICATION, b"test" + bytes(8))
    src = tmp_path / "clip.flac"
    src.write_bytes(flac_bytes(blocks[:1] + [(SEEKTABLE, struct.pack(">QQH", 0, 0, 4096)), app] + blocks[1:],
                               frames))
    before = sf.read(src, dtype="int32")[0]
    audio.label_audio_file(src, meta(), explicit=True)
    after, n = sf.read(src, dtype="int32")[0], audio.cue_samples(SR)
    assert after.shape == (n + len(before), 2) and np.array_equal(after[n:], before)  # lossless: the same
    assert np.allclose(after[:n, 0] / 2.0 ** 31, audio.cue(SR), atol=2.0 ** -22)
    assert sf.info(src).subtype == "PCM_24" and audio.find_cue(after.T / 2.0 ** 31, SR) == 0
    kinds = [k for k, _ in flac_parts(src.read_bytes())[1]]
    assert kinds == [STREAMINFO, APPLICATION, VORBIS]  # its seek table pointed into the old frames: gone
    assert audio.read_audio_cue(src) == audio.cue_record(SR) and check_file(src, require_explicit=True).ok
    audio.label_audio_file(src, meta("again"), explicit=True)  # a clip that has the cue gets no second one
    assert len(sf.read(src)[0]) == n + len(before) and audio.read_audio_label(src) == meta("again")
    entries = comments(flac_parts(src.read_bytes())[1][2][1])[1]
    assert sum(e.startswith(b"AIGC_CUE=") for e in entries) == 1

    saved = audio.save_audio_file(tmp_path / "new.flac", clip(), SR, meta(), explicit=True)
    assert audio.find_cue(sf.read(saved, dtype="float32")[0], SR) == 0
    assert audio.read_audio_cue(saved)["samples"] == n


def test_a_damaged_flac_is_a_one_line_error_and_nothing_is_written(tmp_path):
    good = plain_flac()
    _f, blocks, frames = flac_parts(good)
    vb = blocks[1][1]
    lead_out = struct.pack(">QB", SR, 170) + bytes(12 + 1 + 13 + 1)  # offset, number, ISRC, flags, no index
    cuesheet = bytes(128 + 8 + 1 + 258) + b"\x01" + lead_out  # catalog, lead-in, not a CD, one track
    head = 4 + 4 + 34  # fLaC, STREAMINFO's header and body: the VORBIS_COMMENT header starts here
    cases = {
        "cut.flac": (good[:60], "truncated"),
        "long.flac": (good[:head + 1] + b"\xff\xff\xff" + good[head + 4:], "truncated"),
        "short.flac": (good[:head + 1] + (len(vb) - 1).to_bytes(3, "big") + good[head + 4:], "block length"),
        "nosi.flac": (flac_bytes(blocks[1:] + blocks[:1], frames), "STREAMINFO"),
        "badvc.flac": (flac_bytes([blocks[0], (VORBIS, vb[:-4] + b"\xff\xff\xff\x7f")], frames), "Vorbis"),
        "frames.flac": (good[:-3000], "not readable audio"),
        "cues.flac": (flac_bytes([blocks[0], (CUESHEET, cuesheet)], frames), "CUESHEET"),
    }
    for name, (data, what) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        explicit = name == "cues.flac"  # labelled without the cue it is a valid file
        for fn in (audio.read_audio_label, check_file, read_label, audio.label_audio_file):
            if explicit and fn is not audio.label_audio_file:
                continue
            with pytest.raises(InvalidInput) as e:
                fn(path, meta(), explicit=explicit) if fn is audio.label_audio_file else fn(path)
            assert what in str(e.value) and "\n" not in str(e.value), (name, fn.__name__, str(e.value))
            assert path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(cases)  # no temporary file left behind
    misnamed = tmp_path / "wav.flac"
    misnamed.write_bytes(audio.save_wav(tmp_path / "x.wav", clip(), SR).read_bytes())
    with pytest.raises(InvalidInput, match="is not a FLAC file"):
        audio.read_audio_label(misnamed)


def test_cli_label_check_and_add_read_a_flac(tmp_path, monkeypatch):
    import aigc.cli.label as cli_label

    def aigc(*args):
        return CliRunner().invoke(cli_label.label_app, [str(a) for a in args], catch_exceptions=False)

    plain = tmp_path / "plain.flac"
    plain.write_bytes(plain_flac())
    r = aigc("check", plain)
    assert r.exit_code == 1 and "NOT LABELLED" in r.stdout and "Vorbis comments" in r.stdout
    monkeypatch.setattr(cli_label, "_settings", lambda ws: {"producer": PRODUCER})
    r = aigc("add", plain, "-o", tmp_path / "added.flac", "--produce-id", "p-10", "--no-explicit")
    assert r.exit_code == 0, r.output
    assert np.array_equal(sf.read(tmp_path / "added.flac")[0], sf.read(plain)[0])
    r = aigc("check", tmp_path / "added.flac")
    assert r.exit_code == 0 and "produce id p-10" in r.stdout and "in flac-aigc, flac-comment" in r.stdout
    assert "explicit label: no" in r.stdout
    r = aigc("add", plain, "-o", tmp_path / "cue.flac", "--produce-id", "p-11")  # the policy default: cue on
    assert r.exit_code == 0 and "with the audible cue" in r.stdout
    r = aigc("check", tmp_path / "cue.flac", "--require-explicit")
    assert r.exit_code == 0 and "explicit label: yes" in r.stdout
    junk = tmp_path / "junk.flac"
    junk.write_bytes(b"fLaC" + bytes(10))
    r = aigc("check", junk)
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


@pytest.mark.skipif(not shutil.which("ffprobe"), reason="ffprobe (ffmpeg) is not installed")
def test_ffprobe_reads_the_flac_label(tmp_path):
    path = audio.save_audio_file(tmp_path / "l.flac", clip(), SR, meta())
    r = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-of", "json", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    tags = {k.upper(): v for k, v in json.loads(r.stdout)["format"]["tags"].items()}
    assert json.loads(tags["AIGC"]) == meta() and json.loads(tags["COMMENT"]) == {"AIGC": meta()}


@pytest.mark.skipif(not shutil.which("metaflac"), reason="metaflac (the FLAC tools) is not installed")
def test_metaflac_lists_the_flac_label(tmp_path):
    path = audio.save_audio_file(tmp_path / "l.flac", clip(), SR, meta(), explicit=True)
    r = subprocess.run(["metaflac", "--list", "--block-type=VORBIS_COMMENT", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "AIGC=" + annex.dumps(meta()) in r.stdout and "AIGC_CUE=" in r.stdout


def test_sniff_tells_flac_and_an_id3_tag_in_front_of_it():
    flac = plain_flac(0.1)
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x14" + bytes(20)  # a v2.4 tag of 20 bytes of padding
    assert audio.sniff(flac[:16]) == "FLAC" and audio.sniff(tag + flac) == "FLAC"
    assert audio.sniff(tag + b"\xff\xfbP\xc4") == "MP3" and audio.sniff((tag + flac)[:16]) == "MP3"
