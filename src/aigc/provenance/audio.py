"""The Annex E label inside WAV, MP3 and FLAC files, and the audible cue that is audio's explicit label.

Where the implicit label goes (``annex.dumps``, the same JSON as in images)::

    WAV   a RIFF chunk "AIGC" holding the JSON (before the "data" chunk), and a copy in the
          LIST/INFO comment (ICMT) as {"AIGC": {...}}, which players and ffmpeg show as the
          file's comment; INFO ISFT (software) names aigc-studio when the file names no software.
    MP3   an ID3v2 tag at the front: a TXXX frame with description "AIGC" holding the JSON, and a
          COMM frame (description "AIGC") with the same text for players that show comments only.
    FLAC  the VORBIS_COMMENT metadata block: an entry AIGC=<the JSON>, and COMMENT={"AIGC": {...}}
          for players that show the comment only (libsndfile reads it as the file's comment).

Splicing touches no audio byte: the WAV "data" chunk and the MP3 and FLAC frames are copied as they
are, so soundfile (libsndfile) decodes the same samples before and after. A label already there is
replaced, never stacked: the old AIGC chunk / ICMT label / AIGC frames / AIGC entries go, everything
else is kept (other INFO items; other ID3 frames, in the tag's own version: v2.2, v2.3 or v2.4, sizes
synchsafe in v2.4; every other FLAC metadata block, the Vorbis vendor string and the other comments,
in their order, the last-block flag moved to whichever block ends up last; a SEEKTABLE stays right,
its offsets count from the first frame). A comment of the file's
own (WAV ICMT, FLAC COMMENT) that is not a label is kept, and the label then lives in AIGC alone.
A FLAC without a VORBIS_COMMENT block gets one right after STREAMINFO; an ID3v2 tag that some taggers
put in front of "fLaC" is kept as it is (the label is not written there).
An ID3 tag is rewritten without its extended header (its CRC would no longer hold), footer or
unsynchronisation (v2.4 frames that were unsynchronised keep their frame flag); an ID3v1 tag at the
end is left alone. libsndfile skips the unknown "AIGC" chunk silently; scipy's WAV reader skips it
with a WavFileWarning. RF64, RIFX (big-endian) and other containers are refused.

The explicit label (GB 45438 §4.3, a "rhythm prompt" at the start of the audio): ``explicit=True``
puts :func:`cue` in front of the clip, a deterministic two-tone chime (E6 then A5, a decaying bell at
-12 dBFS, then silence; :data:`CUE_SECONDS` long at the clip's own sample rate). The file then
carries a cue record beside the label (WAV: chunk "AICU"; MP3: TXXX "AIGC_CUE"; FLAC: AIGC_CUE=):
``{"cue": "aigc-chime-1", "position": "start", "seconds": 0.5, "samples": N, "sample_rate": sr}``,
so :func:`read_audio_cue` tells a reader it is there and how long; :func:`find_cue` finds the chime
in the samples themselves (an MP3 decoder's delay shifts it by a few hundred samples) and
:func:`strip_cue` removes it. The Annex E object itself stays exactly the standard's seven keys.
Adding the cue to an existing WAV in a PCM, float, A-law or mu-law encoding prepends it byte for
byte (the clip's own samples untouched); a FLAC is decoded and encoded again in its own sample
format (lossless: the clip's samples come back the same; its SEEKTABLE goes, since the frames moved,
and one with a CUESHEET is refused, since its track offsets would no longer hold); an MP3 is decoded
and encoded again (one more lossy pass).

Safety layer: imports ``errors``, ``provenance.annex``, numpy and soundfile (never ``aigc.data``).
"""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from aigc.errors import InvalidInput
from aigc.provenance import annex

WAV_CHUNK = b"AIGC"  # the RIFF chunk holding the Annex E JSON
CUE_CHUNK = b"AICU"  # the RIFF chunk holding the cue record
SOFTWARE = "aigc-studio (AI-generated audio; GB 45438 label in the AIGC chunk)"  # INFO ISFT when none
CUE_FIELD = "AIGC_CUE"  # the ID3 TXXX description, and the FLAC Vorbis comment name, of the cue record
CUE_NAME = "aigc-chime-1"  # which cue: change the name whenever the sound changes
CUE_SECONDS = 0.5  # the cue's whole length, its trailing silence included
CUE_PEAK = 0.25  # -12 dBFS: clearly heard, well under full scale
CUE_NOTES = ((1318.51, 0.0), (880.0, 0.2))  # (Hz, start in s): E6 then A5, a falling "ding-dong"
CUE_MIN_RATE = 8000  # Hz: the high note needs room under Nyquist
SUFFIXES = {".wav": "WAV", ".wave": "WAV", ".mp3": "MP3", ".flac": "FLAC"}
ARTICLES = {"WAV": "a WAV", "MP3": "an MP3", "FLAC": "a FLAC"}
VENDOR = b"aigc-studio"  # the vendor string of a Vorbis comment block this module adds to a FLAC
FLAC_STREAMINFO, FLAC_SEEKTABLE, FLAC_VORBIS_COMMENT, FLAC_CUESHEET = 0, 3, 4, 5  # metadata block types
_COMM_LANG = b"XXX"  # ID3: language unknown
_SEARCH_SECONDS = 0.25  # how far past the start find_cue looks (an MP3 encoder's delay is < 0.1 s)
_CUE_MATCH = 0.8  # normalised correlation above which the chime is there
_BYTE_SUBTYPES = ("PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW")


def sniff(data: bytes) -> str | None:
    """"WAV", "MP3" or "FLAC" from a file's first bytes (16 are enough); None for anything else. An
    ID3 tag followed by "fLaC" is a FLAC only when ``data`` reaches past the tag (pass the whole file):
    from its first 16 bytes alone it reads as an MP3."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "WAV"
    if data[:4] == b"fLaC":
        return "FLAC"
    if data[:3] == b"ID3" and len(data) >= 10 and data[3] in (2, 3, 4) and data[4] != 0xFF:
        end = _id3_end(data)
        return "FLAC" if data[end:end + 4] == b"fLaC" else "MP3"
    if len(data) >= 3 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0 and (data[1] >> 1) & 3 in (1, 2) \
            and data[2] >> 4 != 0xF and (data[2] >> 2) & 3 != 3:
        return "MP3"  # an MPEG layer II/III frame header (not ADTS's layer 00, nor a UTF-16 BOM's FF FE)
    return None


# -- the audible cue ----------------------------------------------------------------------------

def _rate(sample_rate: Any) -> int:
    ok = isinstance(sample_rate, (int, np.integer)) and not isinstance(sample_rate, bool)
    if not ok or sample_rate < CUE_MIN_RATE:
        raise InvalidInput(f"the audible AIGC cue needs a sample rate of at least {CUE_MIN_RATE} Hz as an "
                           f"integer, got {sample_rate!r}: resample the clip first")
    return int(sample_rate)


def cue_samples(sample_rate: int) -> int:
    """How many samples the cue takes at ``sample_rate``: ``round(CUE_SECONDS * sample_rate)``."""
    return round(CUE_SECONDS * _rate(sample_rate))


def cue(sample_rate: int) -> np.ndarray:
    """The cue, float32 (N,), the same numbers for the same rate: two bell notes (fundamental plus
    a quieter octave, 5 ms raised-cosine attack, 60 ms exponential decay) and silence to the end."""
    sr = _rate(sample_rate)
    n = cue_samples(sr)
    t = np.arange(n) / sr
    out = np.zeros(n)
    attack = round(0.005 * sr)
    for freq, start in CUE_NOTES:
        s = t - start
        on = (s >= 0) & (s < 0.18)
        rise = np.minimum(1.0, 0.5 - 0.5 * np.cos(np.pi * np.arange(on.sum()) / attack))
        env = np.exp(-s[on] / 0.06) * rise
        out[on] += env * (np.sin(2 * np.pi * freq * s[on]) + 0.3 * np.sin(4 * np.pi * freq * s[on]))
    return (out * (CUE_PEAK / np.abs(out).max())).astype(np.float32)


def cue_record(sample_rate: int) -> dict[str, Any]:
    """What the file says about its cue: name, position, length in seconds and samples, rate."""
    sr = _rate(sample_rate)
    return {"cue": CUE_NAME, "position": "start", "seconds": CUE_SECONDS, "samples": cue_samples(sr),
            "sample_rate": sr}


def _mono(wave: np.ndarray) -> np.ndarray:
    a = np.asarray(wave, dtype=np.float64)
    return a if a.ndim == 1 else a.mean(axis=0)


def find_cue(wave: np.ndarray, sample_rate: int) -> int | None:
    """Where the cue starts in ``wave`` ((T,) or (channels, T)), searched in its first
    ``CUE_SECONDS + 0.25`` s by normalised correlation; None when it is not there."""
    template = cue(sample_rate).astype(np.float64)[: round(0.4 * sample_rate)]  # the notes, not the silence
    head = _mono(wave)[: len(template) + round(_SEARCH_SECONDS * sample_rate)]
    if len(head) < len(template):
        return None
    dots = np.correlate(head, template, "valid")  # (lags,)
    energy = np.sqrt(np.convolve(head ** 2, np.ones(len(template)), "valid"))
    score = dots / (np.maximum(energy, 1e-12) * np.linalg.norm(template))
    best = int(score.argmax())
    return best if score[best] >= _CUE_MATCH else None


def strip_cue(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """``wave`` without the cue at its start (found by :func:`find_cue`, so an MP3 decoder's delay
    is taken off too); :class:`InvalidInput` when the clip does not start with it."""
    at = find_cue(wave, sample_rate)
    if at is None:
        raise InvalidInput(f"no AIGC audio cue ({CUE_NAME}) in the first {CUE_SECONDS + _SEARCH_SECONDS:g} s "
                           "of this clip: it has none to strip (read_audio_cue tells whether a file has one)")
    return np.asarray(wave)[..., at + cue_samples(sample_rate):]


def _with_cue(a: np.ndarray, sr: int) -> np.ndarray:
    """(T,) or (channels, T) float with the cue in front of every channel."""
    c = cue(sr)
    return np.concatenate([c, a]) if a.ndim == 1 else np.concatenate([np.tile(c, (a.shape[0], 1)), a], axis=1)


# -- WAV: RIFF chunks -------------------------------------------------------------------------------

def _riff_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The chunks of a RIFF/WAVE file as (id, body); a chunk cut short is an :class:`InvalidInput`."""
    if data[:4] in (b"RF64", b"BW64", b"RIFX"):
        raise InvalidInput(f"{data[:4].decode()} WAV files are not supported (over 4 GB or big-endian): "
                           "convert to a plain RIFF WAV")
    if sniff(data[:16]) != "WAV":
        raise InvalidInput("not a RIFF/WAVE file: label a WAV, MP3 or FLAC")
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if len(body) != size:
            raise InvalidInput(f"the WAV ends inside its {cid.decode('latin-1')!r} chunk (truncated: "
                               f"{len(body)} of {size} bytes): copy the file again or re-export it")
        chunks.append((cid, body))
        pos += 8 + size + (size & 1)
    ids = [c for c, _ in chunks]
    if b"fmt " not in ids or b"data" not in ids:
        missing = "fmt" if b"fmt " not in ids else "data"
        raise InvalidInput(f"the WAV has no {missing} chunk (corrupt): re-export it")
    return chunks


def _chunk(cid: bytes, body: bytes) -> bytes:
    return cid + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def _riff(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"WAVE" + b"".join(_chunk(c, b) for c, b in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _info_items(body: bytes) -> list[tuple[bytes, bytes]]:
    """A LIST/INFO chunk's items as (id, raw value); the caller has checked ``body`` starts with INFO."""
    items, pos = [], 4
    while pos + 8 <= len(body):
        cid, size = body[pos:pos + 4], struct.unpack("<I", body[pos + 4:pos + 8])[0]
        items.append((cid, body[pos + 8:pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return items


def _info_text(value: bytes) -> str:
    return value.split(b"\x00", 1)[0].decode("utf-8", "replace")


def _label_comment(label: dict) -> str:
    return annex.dumps({annex.FIELD: json.loads(annex.dumps(label))})


def _comment_label(text: str) -> str | None:
    """The label's JSON when an ICMT / COMM text is ``{"AIGC": {...}}``, else None."""
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if isinstance(obj, dict) and set(obj) == {annex.FIELD}:
        value = obj[annex.FIELD]
        return annex.dumps(value) if isinstance(value, dict) else str(value)
    return None


def _is_info(cid: bytes, body: bytes) -> bool:
    return cid == b"LIST" and body[:4] == b"INFO"


def _splice_wav(data: bytes, label: dict | None, record: dict | None) -> bytes:
    """The WAV with its label chunks rewritten: ``label`` (None: none) and the cue ``record`` (None:
    the one the file already has, since its audio is unchanged)."""
    chunks = _riff_chunks(data)
    if record is None:
        record = next((json.loads(b) for c, b in chunks if c == CUE_CHUNK and _json_object(b)), None)
    kept = [(c, b) for c, b in chunks if c not in (WAV_CHUNK, CUE_CHUNK)]
    info_at = next((i for i, (c, b) in enumerate(kept) if _is_info(c, b)), None)
    items = [] if info_at is None else _info_items(kept[info_at][1])
    items = [(c, v) for c, v in items if not (c == b"ICMT" and _comment_label(_info_text(v)))
             and not (c == b"ISFT" and _info_text(v) == SOFTWARE)]
    ours = []
    if label is not None:
        ours.append((WAV_CHUNK, annex.dumps(label).encode("utf-8")))
        if not any(c == b"ICMT" for c, _ in items):  # a comment of the file's own is kept
            items.append((b"ICMT", _label_comment(label).encode("utf-8") + b"\x00"))
        if not any(c == b"ISFT" for c, _ in items):
            items.append((b"ISFT", SOFTWARE.encode("utf-8") + b"\x00"))
    info = (b"LIST", b"INFO" + b"".join(_chunk(c, v) for c, v in items))
    if info_at is not None and items:
        kept[info_at] = info
    elif info_at is not None:  # it held only our label: it goes with it
        del kept[info_at]
    elif items:
        ours.insert(0, info)
    if record is not None:
        ours.append((CUE_CHUNK, json.dumps(record).encode("utf-8")))
    at = next(i for i, (c, _) in enumerate(kept) if c == b"data")
    kept[at:at] = ours  # before the samples: a reader meets the label first
    return _riff(kept)


def _wav_cue(data: bytes) -> bytes:
    """The WAV with the cue's samples in front of its own, encoded as they are (bytes untouched)."""
    import soundfile as sf

    info = _sf_info(data)
    if info.subtype not in _BYTE_SUBTYPES:
        raise InvalidInput(f"the audible cue cannot be put in front of a WAV encoded as {info.subtype}: "
                           "convert it to PCM first, or label it without --explicit")
    c = np.tile(cue(info.samplerate)[:, None], (1, info.channels))  # (N, channels)
    buf = io.BytesIO()
    sf.write(buf, c, info.samplerate, format="RAW", subtype=info.subtype, endian="LITTLE")
    extra, frames = buf.getvalue(), len(c)
    out = []
    for cid, body in _riff_chunks(data):
        if cid == b"data":
            body = extra + body
        elif cid == b"fact" and len(body) >= 4:  # samples per channel, for non-PCM encodings
            body = struct.pack("<I", struct.unpack("<I", body[:4])[0] + frames) + body[4:]
        out.append((cid, body))
    return _riff(out)


def _json_object(raw: bytes | str) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def _find_wav(data: bytes) -> tuple[list[tuple[str, str]], dict | None]:
    found, record = [], None
    for cid, body in _riff_chunks(data):
        if cid == WAV_CHUNK:
            found.append(("wav-chunk", body.decode("utf-8", "replace")))
        elif cid == CUE_CHUNK and _json_object(body):
            record = json.loads(body)
        elif _is_info(cid, body):
            found.extend(("wav-info", lab) for c, v in _info_items(body)
                         if c == b"ICMT" and (lab := _comment_label(_info_text(v))))
    return found, record


# -- MP3: the ID3v2 tag ---------------------------------------------------------------------------------

def _synchsafe(raw: bytes) -> int:
    if any(b & 0x80 for b in raw):
        raise InvalidInput("the MP3's ID3 tag has a size that is not synchsafe (corrupt): re-export it")
    return sum(b << (7 * (len(raw) - 1 - i)) for i, b in enumerate(raw))


def _id3_end(data: bytes) -> int:
    """Where a leading ID3v2 tag ends by its header (a v2.4 footer included), 0 when there is none;
    unchecked: the end may lie past the data."""
    if data[:3] != b"ID3" or len(data) < 10:
        return 0
    size = sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(data[6:10]))
    return 10 + size + (10 if data[3] == 4 and data[5] & 0x10 else 0)


def _to_synchsafe(n: int) -> bytes:
    if n >= 1 << 28:
        raise InvalidInput(f"the ID3 tag would be {n} bytes, over ID3v2's 256 MB: strip its pictures first")
    return bytes((n >> s) & 0x7F for s in (21, 14, 7, 0))


class _Tag:
    """An MP3's leading ID3v2 tag, its frames as (id, flags, raw body), and the audio after it."""

    def __init__(self, data: bytes):
        self.version, self.frames, self.audio = 4, [], data
        if data[:3] != b"ID3":
            return
        if len(data) < 10 or data[3] not in (2, 3, 4):
            raise InvalidInput(f"the MP3 starts with an ID3 tag of unknown version {data[3:5].hex()} "
                               "(corrupt): re-export it")
        self.version, flags = data[3], data[5]
        size = _synchsafe(data[6:10])
        end = 10 + size + (10 if self.version == 4 and flags & 0x10 else 0)
        if end > len(data):
            raise InvalidInput(f"the MP3 ends inside its ID3 tag (truncated: {len(data)} of {end} bytes): "
                               "copy the file again or re-export it")
        body, self.audio = data[10:10 + size], data[end:]
        if flags & 0x80 and self.version < 4:  # whole-tag unsynchronisation (v2.4 marks it per frame)
            body = body.replace(b"\xff\x00", b"\xff")
        if flags & 0x40 and self.version == 3:  # extended header: dropped (its CRC would not hold)
            body = body[4 + struct.unpack(">I", body[:4])[0]:]
        elif flags & 0x40 and self.version == 4:
            body = body[_synchsafe(body[:4]):]
        self.frames = self._parse(body, all_unsync=self.version == 4 and bool(flags & 0x80))

    def _parse(self, body: bytes, all_unsync: bool) -> list[tuple[bytes, int, bytes]]:
        head = 6 if self.version == 2 else 10
        frames, pos = [], 0
        while pos + head <= len(body) and body[pos:pos + 1] not in (b"\x00", b""):
            fid = body[pos:pos + (3 if self.version == 2 else 4)]
            if self.version == 2:
                size, flags = int.from_bytes(body[pos + 3:pos + 6], "big"), 0
            else:
                raw = body[pos + 4:pos + 8]
                plain = self.version == 3 or any(b & 0x80 for b in raw)  # iTunes wrote v2.4 sizes plain
                size = struct.unpack(">I", raw)[0] if plain else _synchsafe(raw)
                flags = struct.unpack(">H", body[pos + 8:pos + 10])[0]
            if not fid.isalnum() or pos + head + size > len(body):
                raise InvalidInput(f"the MP3's ID3 tag is corrupt (frame {fid!r} at byte {pos} runs past the "
                                   "tag): re-export it")
            if all_unsync:
                flags |= 0x0002  # v2.4: the header flag said every frame is unsynchronised
            frames.append((fid, flags, body[pos + head:pos + head + size]))
            pos += head + size
        return frames

    def payload(self, flags: int, body: bytes) -> bytes | None:
        """A frame's plain bytes, or None when it is compressed or encrypted (never ours)."""
        if self.version == 3 and flags & 0x00C0 or self.version == 4 and flags & 0x000C:
            return None
        if self.version == 4 and flags & 0x0001:  # data length indicator
            body = body[4:]
        if self.version == 4 and flags & 0x0002:
            body = body.replace(b"\xff\x00", b"\xff")
        return body

    def text_frame(self, fid: bytes, flags: int, body: bytes) -> tuple[str, str] | None:
        """(description, value) of a TXXX / COMM frame (TXX / COM in v2.2), else None."""
        kinds = {b"TXXX": 0, b"TXX": 0, b"COMM": 3, b"COM": 3}
        if fid not in kinds or (body := self.payload(flags, body)) is None or not body:
            return None
        enc, rest = body[0], body[1 + kinds[fid]:]
        if enc not in (0, 1, 2, 3):
            return None
        term = b"\x00\x00" if enc in (1, 2) else b"\x00"
        cut = next((i for i in range(0, len(rest), len(term)) if rest[i:i + len(term)] == term), len(rest))
        codec = {0: "latin-1", 1: "utf-16", 2: "utf-16-be", 3: "utf-8"}[enc]
        desc, value = rest[:cut], rest[cut + len(term):]
        return desc.decode(codec, "replace"), value.decode(codec, "replace").rstrip("\x00")

    def frame(self, kind: str, desc: str, value: str) -> tuple[bytes, int, bytes]:
        """A new TXXX or COMM frame in this tag's version (UTF-8 in v2.4, UTF-16 before it)."""
        enc, codec, term = (3, "utf-8", b"\x00") if self.version == 4 else (1, "utf-16", b"\x00\x00")
        fid = {("TXXX", 2): b"TXX", ("COMM", 2): b"COM"}.get((kind, self.version), kind.encode())
        lang = _COMM_LANG if kind == "COMM" else b""
        return fid, 0, bytes([enc]) + lang + desc.encode(codec) + term + value.encode(codec)

    def to_bytes(self) -> bytes:
        out = []
        for fid, flags, body in self.frames:
            if self.version == 2:
                out.append(fid + len(body).to_bytes(3, "big") + body)
            else:
                size = _to_synchsafe(len(body)) if self.version == 4 else struct.pack(">I", len(body))
                out.append(fid + size + struct.pack(">H", flags) + body)
        frames = b"".join(out)
        return b"ID3" + bytes([self.version, 0, 0]) + _to_synchsafe(len(frames)) + frames


def _ours(tag: _Tag, fid: bytes, flags: int, body: bytes) -> tuple[str, str] | None:
    text = tag.text_frame(fid, flags, body)
    return text if text and text[0] in (annex.FIELD, CUE_FIELD) else None


def _splice_mp3(data: bytes, label: dict | None, record: dict | None) -> bytes:
    """The MP3 with its ID3 tag's AIGC frames rewritten (as :func:`_splice_wav`)."""
    tag = _Tag(data)
    if record is None:
        record = _find_mp3(data)[1]
    tag.frames = [f for f in tag.frames if not _ours(tag, *f)]
    if label is not None:
        tag.frames += [tag.frame("TXXX", annex.FIELD, annex.dumps(label)),
                       tag.frame("COMM", annex.FIELD, _label_comment(label))]
    if record is not None:
        tag.frames.append(tag.frame("TXXX", CUE_FIELD, json.dumps(record)))
    return tag.to_bytes() + tag.audio


def _mp3_cue(data: bytes) -> bytes:
    """The MP3 decoded, the cue put in front, encoded again (its ID3 frames kept)."""
    import soundfile as sf

    tag = _Tag(data)
    wave, sr = _decode(data, "the MP3")
    buf = io.BytesIO()
    sf.write(buf, _with_cue(wave.T, sr).T, sr, format="MP3", subtype="MPEG_LAYER_III")
    return (tag.to_bytes() if tag.frames else b"") + buf.getvalue()


def _find_mp3(data: bytes) -> tuple[list[tuple[str, str]], dict | None]:
    tag = _Tag(data)
    found, record = [], None
    for fid, flags, body in tag.frames:
        text = _ours(tag, fid, flags, body)
        if text is None:
            continue
        desc, value = text
        if desc == CUE_FIELD and _json_object(value):
            record = json.loads(value)
        elif desc == annex.FIELD and fid in (b"TXXX", b"TXX"):
            found.append(("id3-txxx", value))
        elif desc == annex.FIELD and (lab := _comment_label(value)):
            found.append(("id3-comm", lab))
    return found, record


# -- FLAC: metadata blocks ------------------------------------------------------------------------------

class _Flac:
    """A FLAC file: what comes before "fLaC" (an ID3v2 tag some taggers add, kept as it is), its
    metadata blocks as (type, body), and its audio frames (copied as they are)."""

    def __init__(self, data: bytes):
        start = _id3_end(data)
        if data[start:start + 4] != b"fLaC":
            raise InvalidInput("not a FLAC file (no fLaC marker): label a WAV, MP3 or FLAC")
        self.front, self.blocks, pos, last = data[:start], [], start + 4, False
        while not last:
            if pos + 4 > len(data):
                raise InvalidInput(f"the FLAC ends inside its metadata (truncated at byte {len(data)}, after "
                                   f"{len(self.blocks)} blocks): copy the file again or re-export it")
            last, kind = bool(data[pos] & 0x80), data[pos] & 0x7F  # 1-bit last flag, 7-bit type
            size = int.from_bytes(data[pos + 1:pos + 4], "big")
            body = data[pos + 4:pos + 4 + size]
            if kind == 127:
                raise InvalidInput(f"the FLAC's metadata block {len(self.blocks)} has the invalid type 127 "
                                   "(corrupt): re-export it")
            if len(body) != size:
                raise InvalidInput(f"the FLAC ends inside its metadata block {len(self.blocks)} (type "
                                   f"{kind}; truncated: {len(body)} of {size} bytes): copy the file again or "
                                   "re-export it")
            self.blocks.append((kind, body))
            pos += 4 + size
        if self.blocks[0][0] != FLAC_STREAMINFO or len(self.blocks[0][1]) != 34:
            raise InvalidInput("the FLAC does not start with a STREAMINFO block (corrupt): re-export it")
        self.frames = data[pos:]
        if self.frames and self.frames[:2] not in (b"\xff\xf8", b"\xff\xf9"):  # the frame sync code
            raise InvalidInput(f"the FLAC's audio does not start where its metadata ends (byte {pos}; "
                               "a block length is wrong, corrupt): re-export it")

    def vorbis_at(self) -> int | None:
        """The index of the VORBIS_COMMENT block (a stream has at most one), None when there is none."""
        return next((i for i, (kind, _) in enumerate(self.blocks) if kind == FLAC_VORBIS_COMMENT), None)

    def to_bytes(self) -> bytes:
        out = [self.front, b"fLaC"]
        for i, (kind, body) in enumerate(self.blocks):
            if len(body) >= 1 << 24:
                raise InvalidInput(f"a FLAC metadata block would be {len(body)} bytes, over the format's "
                                   "16 MB: strip its pictures or tags first")
            flag = 0x80 if i == len(self.blocks) - 1 else 0  # the last block says so, and only it
            out.append(bytes([flag | kind]) + len(body).to_bytes(3, "big") + body)
        return b"".join(out) + self.frames


def _vorbis(body: bytes) -> tuple[bytes, list[bytes]]:
    """(vendor string, the raw "NAME=value" entries in order) of a VORBIS_COMMENT block."""
    try:
        n = struct.unpack_from("<I", body, 0)[0]
        vendor, pos = body[4:4 + n], 8 + n
        count, entries = struct.unpack_from("<I", body, 4 + n)[0], []
        for _ in range(count):
            size = struct.unpack_from("<I", body, pos)[0]
            entries.append(body[pos + 4:pos + 4 + size])
            pos += 4 + size
        if pos > len(body):
            raise struct.error
    except struct.error:
        raise InvalidInput("the FLAC's Vorbis comment block is corrupt (a length runs past its end): "
                           "re-export it") from None
    return vendor, entries


def _vorbis_body(vendor: bytes, entries: list[bytes]) -> bytes:
    out = [struct.pack("<I", len(vendor)), vendor, struct.pack("<I", len(entries))]
    out += [struct.pack("<I", len(e)) + e for e in entries]
    return b"".join(out)


def _entry(raw: bytes) -> tuple[str, str]:
    """(NAME in upper case, as Vorbis names are case-insensitive; value) of a comment entry."""
    name, _, value = raw.partition(b"=")
    return name.decode("ascii", "replace").upper(), value.decode("utf-8", "replace")


def _our_entry(raw: bytes) -> bool:
    name, value = _entry(raw)
    return name in (annex.FIELD, CUE_FIELD) or name == "COMMENT" and _comment_label(value) is not None


def _splice_flac(data: bytes, label: dict | None, record: dict | None) -> bytes:
    """The FLAC with its AIGC comments rewritten (as :func:`_splice_wav`), every other block kept."""
    flac = _Flac(data)
    if record is None:
        record = _find_flac(data)[1]
    at = flac.vorbis_at()
    vendor, entries = (VENDOR, []) if at is None else _vorbis(flac.blocks[at][1])
    entries = [e for e in entries if not _our_entry(e)]
    if label is not None:
        entries.append(f"{annex.FIELD}={annex.dumps(label)}".encode("utf-8"))
        if not any(_entry(e)[0] == "COMMENT" for e in entries):  # a comment of the file's own is kept
            entries.append(f"COMMENT={_label_comment(label)}".encode("utf-8"))
    if record is not None:
        entries.append(f"{CUE_FIELD}={json.dumps(record)}".encode("utf-8"))
    if at is None and not entries:
        return data
    block = (FLAC_VORBIS_COMMENT, _vorbis_body(vendor, entries))
    if at is None:
        flac.blocks.insert(1, block)  # right after STREAMINFO, where readers look first
    else:
        flac.blocks[at] = block
    return flac.to_bytes()


def _flac_cue(data: bytes) -> bytes:
    """The FLAC decoded, the cue put in front, encoded again losslessly in its own sample format;
    its metadata blocks kept but STREAMINFO (the new stream's) and SEEKTABLE (offsets now wrong)."""
    import soundfile as sf

    flac = _Flac(data)
    if any(kind == FLAC_CUESHEET for kind, _ in flac.blocks):
        raise InvalidInput("the audible cue would shift this FLAC's CUESHEET track offsets: remove the cue "
                           "sheet (metaflac --remove --block-type=CUESHEET) or label it without --explicit")
    subtype = _sf_info(data).subtype
    wave, sr = _decode(data, "the FLAC", dtype="int32")  # (T, channels): integers, so nothing is rounded
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", sr, wave.shape[1], subtype, format="FLAC") as f:
        f.write(np.tile(cue(sr)[:, None], (1, wave.shape[1])))
        f.write(wave)
    fresh = _Flac(buf.getvalue())
    flac.blocks = fresh.blocks[:1] + [(k, b) for k, b in flac.blocks[1:] if k != FLAC_SEEKTABLE]
    flac.frames = fresh.frames
    return flac.to_bytes()


def _find_flac(data: bytes) -> tuple[list[tuple[str, str]], dict | None]:
    flac = _Flac(data)
    at = flac.vorbis_at()
    found, record = [], None
    for raw in [] if at is None else _vorbis(flac.blocks[at][1])[1]:
        name, value = _entry(raw)
        if name == annex.FIELD:
            found.append(("flac-aigc", value))
        elif name == CUE_FIELD and _json_object(value):
            record = json.loads(value)
        elif name == "COMMENT" and (lab := _comment_label(value)):
            found.append(("flac-comment", lab))
    return found, record


_FIND = {"WAV": _find_wav, "MP3": _find_mp3, "FLAC": _find_flac}
_SPLICE = {"WAV": _splice_wav, "MP3": _splice_mp3, "FLAC": _splice_flac}
_ADD_CUE = {"WAV": _wav_cue, "MP3": _mp3_cue, "FLAC": _flac_cue}


# -- the API: bytes ---------------------------------------------------------------------------------

def find(data: bytes) -> tuple[list[tuple[str, str]], dict | None]:
    """Every copy of the label in a WAV's, MP3's or FLAC's bytes as (where, raw JSON) — ``wav-chunk``,
    ``wav-info``, ``id3-txxx``, ``id3-comm``, ``flac-aigc``, ``flac-comment`` — and the cue record
    (None when the file has no cue). A broken container is an :class:`InvalidInput`."""
    fmt = sniff(data)
    if fmt is None:
        raise InvalidInput("not a WAV, MP3 or FLAC file: audio labels are read from those")
    return _FIND[fmt](data)


def splice(data: bytes, label: dict | None, *, explicit: bool = False) -> bytes:
    """``data`` (a WAV, MP3 or FLAC file) with ``label`` written in, a label already there replaced
    (None: removed); the audio bytes untouched unless ``explicit`` puts the cue in front. Never two
    cues: a file that has one (recorded, or found in its first samples) only gets the record."""
    fmt = sniff(data)
    if fmt is None:
        raise InvalidInput("not a WAV, MP3 or FLAC file: audio labels are written to those")
    record = None
    if explicit and find(data)[1] is None:
        wave, sr = _decode(data, f"the {fmt}")
        if find_cue(wave.T, _rate(sr)) is None:
            data = _ADD_CUE[fmt](data)
        record = cue_record(sr)
    return _SPLICE[fmt](data, None if label is None else dict(label), record)


def _sf_info(data: bytes):
    import soundfile as sf

    try:
        return sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise InvalidInput(f"the audio cannot be read ({why}): re-export it") from None


def _decode(data: bytes, where: str, dtype: str = "float32") -> tuple[np.ndarray, int]:
    """(samples (T, channels) as ``dtype``, sample rate); a file that does not decode is an InvalidInput."""
    import soundfile as sf

    try:
        wave, sr = sf.read(io.BytesIO(data), dtype=dtype, always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise InvalidInput(f"{where} is not readable audio ({why}): re-export it") from None
    if len(wave) == 0:
        raise InvalidInput(f"{where} holds no samples (a zero-length clip): re-export it")
    return wave, int(sr)


def check_audio(data: bytes, where: str) -> None:
    """Parse the container and decode every sample; a corrupt or truncated file is an
    :class:`InvalidInput` naming ``where``."""
    try:
        find(data)
    except InvalidInput as e:
        raise InvalidInput(f"{where}: {e}") from None
    _decode(data, where)


# -- the API: files ---------------------------------------------------------------------------------

def _float_wave(wave: Any) -> np.ndarray:
    a = wave.detach().cpu().numpy() if hasattr(wave, "detach") else np.asarray(wave)  # a torch tensor too
    if a.ndim not in (1, 2) or a.size == 0 or not np.issubdtype(a.dtype, np.floating):
        raise InvalidInput(f"audio must be float samples (T,) or (channels, T), got {a.dtype} {a.shape}: "
                           "pass a float array")
    return np.clip(np.nan_to_num(a.astype(np.float32)), -1.0, 1.0)


def _encode(wave: np.ndarray, sr: int, fmt: str) -> bytes:
    import soundfile as sf

    subtype = {"WAV": "PCM_16", "MP3": "MPEG_LAYER_III", "FLAC": "PCM_16"}[fmt]
    buf = io.BytesIO()
    sf.write(buf, wave.T if wave.ndim == 2 else wave, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    from aigc.provenance.labels import _write_atomic  # labels imports this module

    return _write_atomic(path, data)


def save_audio_file(path: str | os.PathLike, wave: Any, sample_rate: int, label: dict | None = None,
                    explicit: bool = False) -> Path:
    """Write a clip (float (T,) or (channels, T), clipped to [-1, 1]) to ``path`` atomically, the
    format from its suffix: .wav or .flac (16-bit PCM) or .mp3 (MPEG layer III); with ``label`` the implicit
    label inside, with ``explicit`` the cue in front of the clip (and its record in the file)."""
    path = Path(path)
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(f"cannot tell the audio format of {path.name!r}: name it .wav, .mp3 or .flac")
    return _save(path, wave, sample_rate, label, explicit, fmt)


def save_wav(path, wave, sample_rate: int, label: dict | None = None, explicit: bool = False) -> Path:
    """Write a clip as a 16-bit PCM WAV at ``path`` (whatever its suffix), atomically: temporary file,
    then rename. ``label``: the Annex E object to carry (None: no implicit label); ``explicit``: the
    audible cue in front of the clip, recorded in the file."""
    return _save(Path(path), wave, sample_rate, label, explicit, "WAV")


def _save(path: Path, wave: Any, sample_rate: int, label: dict | None, explicit: bool, fmt: str) -> Path:
    a = _float_wave(wave)
    ok = isinstance(sample_rate, (int, np.integer)) and not isinstance(sample_rate, bool) and sample_rate > 0
    if not ok:
        raise InvalidInput(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    sr = int(sample_rate)
    data = _encode(_with_cue(a, sr) if explicit else a, sr, fmt)
    if label is not None or explicit:
        record = cue_record(sr) if explicit else None
        data = _SPLICE[fmt](data, None if label is None else dict(label), record)
    return _write(path, data)


def _read_audio_bytes(path: str | os.PathLike, what: str) -> tuple[Path, bytes]:
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        suffix = repr(path.suffix) if path.suffix else "a file without a suffix"
        raise InvalidInput(f"{path.name}: {what} WAV, MP3 and FLAC files only, not {suffix}: "
                           "convert it to .wav, .mp3 or .flac")
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file: pass the path of a WAV, MP3 or FLAC")
    data = path.read_bytes()
    if not data:
        raise InvalidInput(f"{path} is empty (0 bytes): re-export it")
    fmt, expected = sniff(data), SUFFIXES[path.suffix.lower()]
    if fmt != expected:
        raise InvalidInput(f"{path} is not {ARTICLES[expected]} file (its bytes are "
                           f"{fmt or 'not audio'}; corrupt or misnamed): re-export or rename it")
    return path, data


def label_audio_file(path: str | os.PathLike, label: dict, explicit: bool = False) -> Path:
    """Label an existing WAV, MP3 or FLAC in place, atomically (a label already there is replaced). The
    file is decoded first, so a corrupt one is refused before anything is written."""
    path, data = _read_audio_bytes(path, "labels go in")
    check_audio(data, str(path))
    return _write(path, splice(data, label, explicit=explicit))


def read_audio_label(path: str | os.PathLike) -> dict | None:
    """The Annex E object in a WAV, MP3 or FLAC (its first readable copy), or None when it has none.
    Any other file, or a damaged one, is an :class:`InvalidInput`."""
    path, data = _read_audio_bytes(path, "labels are read from")
    check_audio(data, str(path))
    for where, raw in find(data)[0]:
        try:
            return annex.loads(raw, f"{path} ({where})")
        except InvalidInput:
            continue
    return None


def read_audio_cue(path: str | os.PathLike) -> dict | None:
    """The cue record of a WAV, MP3 or FLAC (``{"cue", "position", "seconds", "samples", "sample_rate"}``),
    or None when the file says it has no cue."""
    path, data = _read_audio_bytes(path, "cues are read from")
    try:
        return find(data)[1]
    except InvalidInput as e:
        raise InvalidInput(f"{path}: {e}") from None
