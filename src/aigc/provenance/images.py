"""The Annex E label inside PNG, JPEG and WebP files: written with Pillow or spliced into existing bytes.

Where the label goes (the forms that labelling platforms write and read today)::

    PNG   an iTXt chunk "AIGC" holding the JSON, and an XMP packet (iTXt "XML:com.adobe.xmp")
    JPEG  an XMP packet (APP1 "http://ns.adobe.com/xap/1.0/") and a COM segment {"AIGC": {...}}
    WebP  an XMP packet ("XMP " chunk; the VP8X header's XMP flag set)

The XMP packet holds the same JSON as the property ``TC260:AIGC`` in the namespace
``http://www.tc260.org.cn/ns/AIGC/1.0/`` (the TC260 practice guide's).

``encode`` makes a labelled file from a Pillow image; ``splice`` puts a label into an existing
file's bytes without decoding or re-encoding its pixels (an XMP packet already there keeps its
other properties); ``find`` reads every copy of the label back, naming where each was.

What survives a re-save with Pillow (``Image.open(labelled).save(other)``, nothing passed):

    JPEG  the XMP segment is dropped (Pillow writes XMP only when given ``xmp=``), the COM segment is
          kept (Pillow carries ``im.info["comment"]`` over), so the label is still read from COM;
          an image rebuilt from its pixels (``Image.fromarray(np.asarray(im))``) has neither, and
          ``save(..., xmp=im.info["xmp"])`` keeps the XMP too.
    PNG   every text chunk is dropped, ``xmp=`` or not (Pillow's PNG writer takes only ``pnginfo=``):
          the label is lost; ``labels.label_file`` or ``label_png`` puts it back.
    WebP  the XMP chunk is dropped (Pillow writes it only when given ``xmp=``): the label is lost.

A re-encoding tool that keeps metadata (exiftool, most image editors' "keep metadata") keeps it.
"""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from aigc.errors import InvalidInput
from aigc.provenance import annex

XMP_NS = "http://www.tc260.org.cn/ns/AIGC/1.0/"
XMP_PREFIX = "TC260"
PNG_XMP_KEY = "XML:com.adobe.xmp"
JPEG_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


def sniff(data: bytes) -> str | None:
    """"PNG", "JPEG" or "WEBP" from a file's first bytes; None for anything else."""
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


# -- XMP -----------------------------------------------------------------------------------------

_DESCRIPTION = '<rdf:Description rdf:about="" xmlns:{p}="{ns}"><{p}:AIGC>{value}</{p}:AIGC></rdf:Description>'


def xmp_packet(label: dict) -> bytes:
    """A complete XMP packet whose only property is ``TC260:AIGC`` = the label's JSON."""
    desc = _DESCRIPTION.format(p=XMP_PREFIX, ns=XMP_NS, value=escape(annex.dumps(label), {'"': "&quot;"}))
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
            '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f"{desc}</rdf:RDF></x:xmpmeta>"
            '<?xpacket end="w"?>').encode("utf-8")


def _parse_xmp(packet: bytes | str):
    text = packet.decode("utf-8", "replace") if isinstance(packet, (bytes, bytearray)) else packet
    if re.search(r"<!DOCTYPE|<!ENTITY", text, re.I):  # no entity expansion from a file we were handed
        return None
    text = re.sub(r"<\?xpacket[^>]*\?>", "", text).strip().lstrip("\ufeff")
    try:
        return ET.fromstring(text)
    except ET.ParseError:
        return None


def xmp_labels(packet: bytes | str) -> list[str]:
    """The values of every ``AIGC`` property (element or attribute, any namespace) in an XMP packet."""
    root = _parse_xmp(packet)
    if root is None:
        return []
    found = []
    for el in root.iter():
        if isinstance(el.tag, str) and (el.tag == "AIGC" or el.tag.endswith("}AIGC")):
            found.append((el.text or "").strip())
        found.extend(v for k, v in el.attrib.items() if k.endswith("}AIGC"))
    return found


def merge_xmp(existing: bytes | None, label: dict) -> bytes:
    """``existing`` with its AIGC property replaced by ``label`` (its other properties kept), or a new
    packet when there is none or it cannot be read."""
    if not existing or _parse_xmp(existing) is None:
        return xmp_packet(label)
    text = existing.decode("utf-8", "replace")
    if "</rdf:RDF>" not in text:
        return xmp_packet(label)
    text = re.sub(r"<(\w+):AIGC\b[^>]*>.*?</\1:AIGC>|<(\w+):AIGC\b[^>]*/>", "", text, flags=re.S)
    text = re.sub(r"\s\w+:AIGC=\"[^\"]*\"", "", text)
    desc = _DESCRIPTION.format(p=XMP_PREFIX, ns=XMP_NS, value=escape(annex.dumps(label), {'"': "&quot;"}))
    text = text.replace("</rdf:RDF>", desc + "</rdf:RDF>", 1)
    return text.encode("utf-8")


def _comment(label: dict) -> bytes:
    return json.dumps({annex.FIELD: json.loads(annex.dumps(label))}, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


# -- writing with Pillow -------------------------------------------------------------------------

def _itxt(key: str, text: str) -> bytes:
    """An iTXt chunk's data: uncompressed UTF-8 text under ``key``."""
    return key.encode("latin-1") + b"\x00\x00\x00" + b"\x00" + b"\x00" + text.encode("utf-8")


def encode(image, fmt: str, label: dict, **save_kw) -> bytes:
    """``image`` encoded as ``fmt`` (PNG, JPEG, WEBP) with ``label`` in its metadata."""
    from PIL import PngImagePlugin

    fmt = fmt.upper().replace("JPG", "JPEG")
    if fmt not in FORMATS:
        raise InvalidInput(f"image format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    packet = xmp_packet(label)
    buf = io.BytesIO()
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt(annex.FIELD, annex.dumps(label))
        info.add_itxt(PNG_XMP_KEY, packet.decode("utf-8"))
        image.save(buf, "PNG", pnginfo=info, **save_kw)
    elif fmt == "JPEG":
        if image.mode not in ("RGB", "L", "CMYK"):
            image = image.convert("RGB")
        image.save(buf, "JPEG", xmp=packet, comment=_comment(label), **{"quality": 95, **save_kw})
    else:
        image.save(buf, "WEBP", xmp=packet, **save_kw)
    return buf.getvalue()


# -- splicing into existing bytes ----------------------------------------------------------------

def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length:
            raise InvalidInput("the PNG ends inside a chunk (truncated): re-export it")
        chunks.append((kind, body))
        pos += 12 + length
        if kind == b"IEND":
            break
    return chunks


def _png_text(kind: bytes, body: bytes) -> tuple[str, bytes] | None:
    """(keyword, text) of a tEXt/iTXt/zTXt chunk."""
    key, _, rest = body.partition(b"\x00")
    if kind == b"tEXt":
        return key.decode("latin-1"), rest
    if kind == b"zTXt":
        try:
            return key.decode("latin-1"), zlib.decompress(rest[1:])
        except zlib.error:
            return None
    if kind == b"iTXt" and len(rest) >= 2:
        compressed, rest = rest[0], rest[2:]
        _lang, _, rest = rest.partition(b"\x00")
        _tkey, _, text = rest.partition(b"\x00")
        if compressed:
            try:
                text = zlib.decompress(text)
            except zlib.error:
                return None
        return key.decode("latin-1"), text
    return None


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _splice_png(data: bytes, label: dict) -> bytes:
    chunks = _png_chunks(data)
    old_xmp, kept = None, []
    for kind, body in chunks:
        text = _png_text(kind, body) if kind in (b"tEXt", b"iTXt", b"zTXt") else None
        if text and text[0] == PNG_XMP_KEY:
            old_xmp = text[1]
        elif not (text and text[0] == annex.FIELD):
            kept.append((kind, body))
    ours = [(b"iTXt", _itxt(annex.FIELD, annex.dumps(label))),
            (b"iTXt", _itxt(PNG_XMP_KEY, merge_xmp(old_xmp, label).decode("utf-8")))]
    out = [PNG_SIGNATURE]
    for i, (kind, body) in enumerate(kept):
        out.append(_png_chunk(kind, body))
        if i == 0:  # right after IHDR: readers meet it before the pixels
            out.extend(_png_chunk(k, b) for k, b in ours)
    return b"".join(out)


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The marker segments before the scan, as (marker, payload), and the rest from SOS on."""
    segments, pos = [], 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise InvalidInput("the JPEG's header is corrupt (a segment does not start with 0xFF): "
                               "re-export it")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the entropy-coded data follows
            return segments, data[pos:]
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if length < 2 or pos + 2 + length > len(data):
            raise InvalidInput("the JPEG ends inside a header segment (truncated): re-export it")
        segments.append((marker, data[pos + 4:pos + 2 + length]))
        pos += 2 + length
    raise InvalidInput("the JPEG has no image data (no start-of-scan segment): re-export it")


def _is_label_comment(payload: bytes) -> bool:
    try:
        obj = json.loads(payload.decode("utf-8"))
    except ValueError:
        return False
    return isinstance(obj, dict) and annex.FIELD in obj


def _splice_jpeg(data: bytes, label: dict) -> bytes:
    segments, scan = _jpeg_segments(data)
    old_xmp, kept = None, []
    for marker, payload in segments:
        if marker == 0xE1 and payload.startswith(JPEG_XMP_HEADER):
            old_xmp = payload[len(JPEG_XMP_HEADER):]
        elif not (marker == 0xFE and _is_label_comment(payload)):
            kept.append((marker, payload))
    xmp = JPEG_XMP_HEADER + merge_xmp(old_xmp, label)
    ours = [(0xE1, xmp), (0xFE, _comment(label))]
    if len(xmp) + 2 > 0xFFFF:
        raise InvalidInput("the JPEG's XMP packet would exceed one 64 KB segment: strip its other XMP first")
    at = 0
    while at < len(kept) and 0xE0 <= kept[at][0] <= 0xEF:  # after JFIF / Exif, before the tables
        at += 1
    kept[at:at] = ours
    body = b"".join(bytes([0xFF, m]) + struct.pack(">H", len(p) + 2) + p for m, p in kept)
    return b"\xff\xd8" + body + scan


def _webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        kind, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if len(body) != size:
            raise InvalidInput("the WebP ends inside a chunk (truncated): re-export it")
        chunks.append((kind, body))
        pos += 8 + size + (size & 1)
    return chunks


def _webp_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")


def _webp_canvas(kind: bytes, body: bytes) -> tuple[int, int, bool]:
    """(width, height, has_alpha) from a simple file's VP8 or VP8L bitstream header."""
    if kind == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool((bits >> 28) & 1)
    if kind == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", body[6:10])
        return width & 0x3FFF, height & 0x3FFF, False
    raise InvalidInput("the WebP's image header is not VP8/VP8L (corrupt): re-export it")


def _splice_webp(data: bytes, label: dict) -> bytes:
    chunks = _webp_chunks(data)
    if not chunks:
        raise InvalidInput("the WebP holds no chunks (corrupt): re-export it")
    old_xmp = next((b for k, b in chunks if k == b"XMP "), None)
    chunks = [(k, b) for k, b in chunks if k != b"XMP "]
    if chunks[0][0] == b"VP8X":
        head = bytearray(chunks[0][1])
        head[0] |= 0x04  # XMP present
        chunks[0] = (b"VP8X", bytes(head))
    else:
        width, height, alpha = _webp_canvas(*chunks[0])
        flags = 0x04 | (0x10 if alpha else 0)
        canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        head = bytes([flags, 0, 0, 0]) + canvas
        chunks.insert(0, (b"VP8X", head))
    chunks.append((b"XMP ", merge_xmp(old_xmp, label)))
    body = b"WEBP" + b"".join(_webp_chunk(k, b) for k, b in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def splice(data: bytes, label: dict) -> bytes:
    """``data`` (a PNG, JPEG or WebP file) with ``label`` written in, pixels untouched; a label
    already there is replaced."""
    fmt = sniff(data)
    if fmt is None:
        raise InvalidInput("not a PNG, JPEG or WebP image: label one of those")
    return {"PNG": _splice_png, "JPEG": _splice_jpeg, "WEBP": _splice_webp}[fmt](data, label)


# -- reading ---------------------------------------------------------------------------------------

def find(data: bytes) -> list[tuple[str, str]]:
    """Every copy of the label in an image's bytes, as (where, raw value): ``xmp``, ``png-text``,
    ``jpeg-comment``. Raises :class:`InvalidInput` when the container is broken."""
    fmt = sniff(data)
    found: list[tuple[str, str]] = []
    if fmt == "PNG":
        for kind, body in _png_chunks(data):
            text = _png_text(kind, body) if kind in (b"tEXt", b"iTXt", b"zTXt") else None
            if text and text[0] == annex.FIELD:
                found.append(("png-text", text[1].decode("utf-8", "replace")))
            elif text and text[0] == PNG_XMP_KEY:
                found.extend(("xmp", v) for v in xmp_labels(text[1]))
    elif fmt == "JPEG":
        segments, _scan = _jpeg_segments(data)
        for marker, payload in segments:
            if marker == 0xE1 and payload.startswith(JPEG_XMP_HEADER):
                found.extend(("xmp", v) for v in xmp_labels(payload[len(JPEG_XMP_HEADER):]))
            elif marker == 0xFE and _is_label_comment(payload):
                found.append(("jpeg-comment", payload.decode("utf-8")))
    elif fmt == "WEBP":
        for kind, body in _webp_chunks(data):
            if kind == b"XMP ":
                found.extend(("xmp", v) for v in xmp_labels(body))
    else:
        raise InvalidInput("not a PNG, JPEG or WebP image")
    return found


def check_pixels(data: bytes, where: str) -> None:
    """Decode the image fully; a corrupt or truncated one is an :class:`InvalidInput`."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for a broken file
        why = f"{type(e).__name__}: {e}".replace("\n", " ")
        raise InvalidInput(f"{where} is not a readable image ({why}): re-export it") from None
