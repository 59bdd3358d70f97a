"""The explicit image label: a visible badge (default "AI生成") in a corner of an image.

GB 45438-2025 asks an image's explicit label to say that it is AI-generated ("人工智能" or "AI",
with "生成" and/or "合成") in text whose height is at least 5 % of the image's shortest side. The
badge is white text on a translucent dark box, so it stays readable on light and dark images alike;
the text's ink (not the box) is sized to at least ``min_fraction`` of the shortest side.

Fonts: a CJK font found on the machine (or passed as ``font``) draws the text; Pillow's bundled
default font has no Chinese glyphs, so without one the badge is drawn from the small 16x16 bitmap
glyphs below (the project's own), scaled by whole pixels so strokes stay sharp. Latin-only text
(``lang="en"``: "AI-generated") uses Pillow's default font (``ImageFont.load_default(size=...)``).

This module draws; it knows nothing about metadata (``images``) or files (``labels``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from aigc.errors import InvalidInput

MARK_TEXT = {"zh": "AI生成", "en": "AI-generated"}
CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")
MIN_FRACTION = 0.05  # GB 45438: the text is at least 5 % of the shortest side tall

# Where CJK fonts usually are (Debian/Ubuntu fonts-noto-cjk, fonts-wqy-*, Droid fallback; macOS;
# Windows). $AIGC_CJK_FONT names one explicitly.
_CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/STHeiti Medium.ttc",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
    "C:/Windows/Fonts/msyh.ttc",
    "C:/Windows/Fonts/simhei.ttf",
)

# 16-row bitmap glyphs ('#' ink), drawn for this project; only what the default marks need.
_GLYPHS = {
    "A": (
        "..........",
        "....##....",
        "....##....",
        "...#..#...",
        "...#..#...",
        "..#....#..",
        "..#....#..",
        "..#....#..",
        ".########.",
        ".#......#.",
        ".#......#.",
        "#........#",
        "#........#",
        "#........#",
        "..........",
        "..........",
    ),
    "I": (
        "......",
        "#####.",
        "..#...",
        "..#...",
        "..#...",
        "..#...",
        "..#...",
        "..#...",
        "..#...",
        "..#...",
        "..#...",
        "..#...",
        "..#...",
        "#####.",
        "......",
        "......",
    ),
    "生": (
        "................",
        "....#...#.......",
        "...#....#.......",
        "..############..",
        ".#......#.......",
        "#.......#.......",
        "........#.......",
        "........#.......",
        "..###########...",
        "........#.......",
        "........#.......",
        "........#.......",
        "........#.......",
        "###############.",
        "................",
        "................",
    ),
    "成": (
        ".........#..#...",
        ".........#...#..",
        ".........#......",
        "..##############",
        "..#......#......",
        "..#......#...#..",
        "..#......#..#...",
        "..#####..#.#....",
        "..#...#...#.....",
        "..#...#..#.#....",
        "..#...#.#...#...",
        ".#....##.....#.#",
        ".#..........#.##",
        "#.............##",
        "................",
        "................",
    ),
}


def find_cjk_font() -> str | None:
    """A font file that draws Chinese: ``$AIGC_CJK_FONT`` if set, else the first common one present."""
    env = os.environ.get("AIGC_CJK_FONT")
    if env:
        if not Path(env).is_file():
            raise InvalidInput(f"AIGC_CJK_FONT={env!r} is not a file: point it at a .ttf/.ttc/.otf font "
                               "or unset it")
        return env
    return next((p for p in _CJK_FONTS if Path(p).is_file()), None)


def _bitmap_mask(text: str, scale: int):
    """The text drawn from ``_GLYPHS`` as an "L" mask (255 = ink), each glyph pixel ``scale`` pixels."""
    from PIL import Image

    missing = sorted({c for c in text if c not in _GLYPHS})
    if missing:
        raise InvalidInput(f"no built-in glyph for {''.join(missing)!r} and no CJK font found: install one "
                           "(e.g. fonts-noto-cjk), set AIGC_CJK_FONT, or use the default mark text")
    gap = 1
    width = sum(len(_GLYPHS[c][0]) for c in text) + gap * (len(text) - 1)
    mask = Image.new("L", (width, 16), 0)
    x = 0
    for c in text:
        rows = _GLYPHS[c]
        for y, row in enumerate(rows):
            for dx, cell in enumerate(row):
                if cell == "#":
                    mask.putpixel((x + dx, y), 255)
        x += len(rows[0]) + gap
    return mask.resize((width * scale, 16 * scale), Image.Resampling.NEAREST)


def _font_mask(text: str, font_path: str | None, ink_height: int):
    """The text drawn with a font at the smallest size whose ink is at least ``ink_height`` tall."""
    from PIL import Image, ImageDraw, ImageFont

    def draw(size: int):
        font = ImageFont.truetype(font_path, size) if font_path else ImageFont.load_default(size=size)
        left, top, right, bottom = font.getbbox(text)
        mask = Image.new("L", (right - left + 2, bottom - top + 2), 0)
        ImageDraw.Draw(mask).text((1 - left, 1 - top), text, font=font, fill=255)
        return mask.crop(mask.getbbox() or (0, 0, 1, 1))

    def solid_height(mask) -> int:  # rows of at least half-covered pixels: anti-aliased fringes do not count
        box = mask.point(lambda v: 255 if v >= 128 else 0).getbbox()
        return 0 if box is None else box[3] - box[1]

    size = max(4, ink_height)
    mask = draw(size)
    while (height := solid_height(mask)) < ink_height:  # a font's ink is shorter than its size: grow
        size = max(size + 1, math.ceil(size * ink_height / max(1, height)))
        mask = draw(size)
    return mask


def text_mask(text: str, ink_height: int, *, font: str | None = None):
    """``text`` as an "L" mask cropped to its ink, at least ``ink_height`` pixels tall."""
    if font is not None and not Path(font).is_file():
        raise InvalidInput(f"font {font!r} is not a file: pass a .ttf/.ttc/.otf path, or leave it out")
    if text.isascii():
        return _font_mask(text, font, ink_height)
    font = font or find_cjk_font()
    if font:
        return _font_mask(text, font, ink_height)
    base = _bitmap_mask(text, 1)
    ink = base.getbbox()
    rows = ink[3] - ink[1]
    mask = _bitmap_mask(text, max(1, math.ceil(ink_height / rows)))
    return mask.crop(mask.getbbox())


def mark_image(image, text: str | None = None, *, lang: str = "zh", corner: str = "bottom-right",
               min_fraction: float = MIN_FRACTION, font: str | None = None):
    """A copy of ``image`` with a visible "AI生成" (``lang="en"``: "AI-generated") badge in a corner.

    The text's ink is at least ``min_fraction`` of the shortest side tall (GB 45438: 5 %), white on
    a translucent dark box. ``text`` replaces the default words (it should still say "AI" and
    "生成"/"合成"). An image too small to hold the badge is an :class:`InvalidInput`.
    """
    from PIL import Image

    if corner not in CORNERS:
        raise InvalidInput(f"corner must be one of {', '.join(CORNERS)}, got {corner!r}")
    if lang not in MARK_TEXT and text is None:
        raise InvalidInput(f"lang must be one of {', '.join(MARK_TEXT)}, got {lang!r}")
    if not 0 < min_fraction < 0.5:
        raise InvalidInput(f"min_fraction must be in (0, 0.5), got {min_fraction!r}: GB 45438 asks for 0.05")
    text = text or MARK_TEXT[lang]
    width, height = image.size
    short = min(width, height)
    need = max(1, math.ceil(min_fraction * short))
    mask = text_mask(text, max(need, min(16, short // 4)), font=font)  # 16 px when the image allows: legible
    pad = max(1, round(0.25 * mask.height))
    margin = max(1, round(0.02 * short))
    room = width - 2 * margin - 2 * pad
    if mask.width > room:  # a small image: shrink the badge to fit, never below the required height
        fit_h = math.floor(mask.height * room / mask.width)
        if room < 1 or fit_h < need:
            raise InvalidInput(f"image {width}x{height} is too small for a visible {text!r} mark of "
                               f"{need} px: label a larger image, or pass explicit=False and rely on the "
                               "implicit label")
        mask = mask.resize((room, fit_h), Image.Resampling.LANCZOS)
    box_w, box_h = mask.width + 2 * pad, mask.height + 2 * pad
    if box_h + 2 * margin > height:
        raise InvalidInput(f"image {width}x{height} is too short for a visible {text!r} mark: "
                           "label a larger image")
    x0 = margin if corner.endswith("left") else width - margin - box_w
    y0 = margin if corner.startswith("top") else height - margin - box_h

    mode = image.mode
    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    overlay.paste((0, 0, 0, 150), (x0, y0, x0 + box_w, y0 + box_h))
    out = Image.alpha_composite(base, overlay)
    out.paste((255, 255, 255, 255), (x0 + pad, y0 + pad), mask)
    if mode in ("RGBA", "LA", "PA"):
        return out
    return out.convert("L" if mode in ("L", "1") else "RGB")
