"""Make the bundled sample corpus ``src/aigc/resources/shop_copy.csv``.

The corpus is product copy (short marketing descriptions) for a fictional shop,
"Lumen & Leaf / 青叶良品", in English and Chinese. Each row has four columns::

    text,category,tone,lang

* ``category``: one of kitchen, tea, skincare, stationery, outdoor, home
* ``tone``: one of playful, elegant, practical
* ``lang``: en or zh

Every (category, tone, lang) cell holds the same number of rows (100, so 3,600
rows in all), and no text appears twice. The texts come from a template grammar
written for this project: per category a catalogue of invented products with
names, materials, sizes and care codes in both languages, plus features,
benefits, use-scenes and sensory details; per tone its own openers, sentence
shapes, vocabulary and closers. A small character-level language model trained
on it should therefore produce visibly different text per category and tone.

Everything here is synthetic: the shop, the products and the sentences were
invented for aigc-studio and contain no third-party text or personal data. The
generated CSV is free to redistribute under the project's licence (Apache-2.0).

The output is deterministic (``random.Random(20261123)``, standard library
only). To regenerate it, from the repository root::

    python scripts/make_sample_data.py

``tests/test_sample_data.py`` checks that ``build_rows()`` reproduces the
committed file byte for byte, so edit the grammar here and regenerate rather
than editing the CSV by hand.
"""

# ruff: noqa: E501  (the catalogue below is a bilingual data table)

from __future__ import annotations

import csv
import io
import random
import string
import sys
from pathlib import Path
from typing import NamedTuple

SEED = 20261123
ROWS_PER_CELL = 100
FIELDS = ("text", "category", "tone", "lang")
CATEGORIES = ("kitchen", "tea", "skincare", "stationery", "outdoor", "home")
TONES = ("playful", "elegant", "practical")
LANGS = ("en", "zh")
# Inclusive length bounds in characters, per language.
LENGTH_LIMITS = {"en": (80, 220), "zh": (30, 90)}
MAX_ATTEMPTS = 2000

SHOP = {"en": "Lumen & Leaf", "zh": "青叶良品"}

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT = REPO_ROOT / "src" / "aigc" / "resources" / "shop_copy.csv"


# --------------------------------------------------------------------------
# Specifications: each helper returns an (English, Chinese) pair.
# --------------------------------------------------------------------------


def litres(v: str) -> tuple[str, str]:
    return f"{v} L capacity", f"容量{v}升"


def ml(v: int, what: str = "capacity") -> tuple[str, str]:
    if what == "capacity":
        return f"{v} ml capacity", f"容量{v}毫升"
    return f"{v} ml {what}", f"{v}毫升装"


def cm(v: str) -> tuple[str, str]:
    return f"{v} cm long", f"长{v}厘米"


def dia(v: str) -> tuple[str, str]:
    return f"{v} cm across", f"直径{v}厘米"


def tall(v: str) -> tuple[str, str]:
    return f"{v} cm tall", f"高{v}厘米"


def dims(v: str) -> tuple[str, str]:
    return f"{v.replace('x', ' x ')} cm", f"尺寸{v.replace('x', '×')}厘米"


def grams(v: int) -> tuple[str, str]:
    return f"weighs {v} g", f"重{v}克"


def pcs(v: int) -> tuple[str, str]:
    return f"set of {v}", f"{v}件套"


def raw(en: str, zh: str) -> tuple[str, str]:
    return en, zh


class Product(NamedTuple):
    en: str
    zh: str
    material_en: str
    material_zh: str
    kind: str  # selects kind-specific features/benefits; "any" lists always apply
    care: str  # key into CARE
    specs: tuple[tuple[str, str], ...]


def P(en, zh, mat_en, mat_zh, kind, care, *specs) -> Product:  # noqa: N802 - short table constructor
    assert len(specs) >= 2, en
    return Product(en, zh, mat_en, mat_zh, kind, care, tuple(specs))


# --------------------------------------------------------------------------
# Care instructions, shared across categories. Full sentences.
# --------------------------------------------------------------------------

CARE: dict[str, list[tuple[str, str]]] = {
    "hand": [
        ("Hand wash in warm water and dry straight away.", "温水手洗，洗后立即擦干。"),
        ("Wash by hand and avoid long soaks.", "请手洗，避免长时间浸泡。"),
    ],
    "dishwasher": [
        ("Dishwasher safe; skip the scouring pads.", "可用洗碗机清洗，请勿使用钢丝球。"),
        ("Top-rack dishwasher safe.", "可放入洗碗机上层清洗。"),
    ],
    "wood": [
        ("Hand wash only, and oil it once a month with food-safe oil.", "仅限手洗，每月用食品级木蜡油保养一次。"),
        ("Never soak; let it air dry standing on its edge.", "切勿浸泡，洗后竖放自然晾干。"),
    ],
    "iron": [
        ("After washing, dry it over low heat and wipe on a thin film of oil.", "洗后小火烘干，再薄薄抹一层油。"),
        ("Avoid soap for the first few uses to build the seasoning.", "前几次使用尽量不用洗洁精，让油膜慢慢养成。"),
    ],
    "machine": [
        ("Machine wash at 30°C and line dry.", "30°C机洗，自然晾干。"),
        ("Machine washable; it gets softer with every wash.", "可机洗，越洗越柔软。"),
    ],
    "gentle": [
        ("Hand wash cold and tumble dry low.", "冷水手洗，低温烘干。"),
        ("Wash on a gentle cycle and dry flat.", "轻柔模式洗涤，平铺晾干。"),
    ],
    "wipe": [
        ("Wipe clean with a soft, damp cloth.", "用微湿的软布擦拭即可。"),
        ("Wipe with a dry cloth and avoid harsh cleaners.", "用干布擦拭，避免使用强力清洁剂。"),
    ],
    "glass": [
        ("Dishwasher safe and happy with boiling water.", "可用洗碗机清洗，耐沸水。"),
        ("Handles temperatures from -20°C to 120°C.", "耐温范围-20°C至120°C。"),
    ],
    "leaf": [
        ("Store sealed, away from light and strong odours.", "密封避光保存，远离异味。"),
        ("Best within 18 months; keep it cool and dry.", "保质期18个月，请置于阴凉干燥处。"),
    ],
    "clay": [
        ("Rinse with hot water only and never use detergent.", "只用热水冲洗，切勿使用洗涤剂。"),
        ("Let it dry with the lid off after every session.", "每次用完请打开盖子晾干。"),
    ],
    "skin": [
        ("Store below 25°C and use within 12 months of opening.", "请存放于25°C以下，开封后12个月内用完。"),
        ("Patch test before first use.", "首次使用前请先做局部测试。"),
    ],
    "tool": [
        ("Rinse after use and hang to dry.", "使用后冲洗干净，悬挂晾干。"),
        ("Clean with mild soap and water once a week.", "每周用温和的皂液清洗一次。"),
    ],
    "paper": [
        ("Keep away from damp and direct sunlight.", "请远离潮湿，避免阳光直射。"),
        ("Store flat in a dry drawer.", "请平放于干燥的抽屉中。"),
    ],
    "ink": [
        ("Shake gently before filling and keep the cap tight.", "吸墨前轻轻摇匀，用后拧紧瓶盖。"),
        ("Flush your pen with water when changing colours.", "更换颜色前请用清水冲洗笔身。"),
    ],
    "leather": [
        ("Condition twice a year with a little leather balm.", "每年用少量皮革护理膏保养两次。"),
        ("Keep it dry; it will darken gently with use.", "请保持干燥，使用中颜色会自然加深。"),
    ],
    "rinse": [
        ("Rinse with fresh water after trips and air dry.", "出行后用清水冲洗，自然风干。"),
        ("Dry fully before packing it away.", "收纳前请确保完全干透。"),
    ],
    "charge": [
        ("Charges over USB-C in about 3 hours.", "USB-C充电，约3小时充满。"),
        ("Store at half charge if unused for a month.", "长期不用时请保持约一半电量存放。"),
    ],
    "candle": [
        ("Trim the wick to 5 mm before each burn.", "每次点燃前将烛芯修剪至5毫米。"),
        ("Never leave a burning candle unattended.", "燃烧时请勿离人。"),
    ],
    "spot": [
        ("Spot clean only.", "仅限局部清洁。"),
        ("Shake out weekly and spot clean as needed.", "每周抖落灰尘，必要时局部清洁。"),
    ],
}


# --------------------------------------------------------------------------
# Catalogue, per category.
#   products: Product rows
#   features: {kind: [(en noun phrase with article, zh noun phrase)]}
#   benefits: {kind: [(en verb phrase, 3rd person singular; zh verb phrase)]}
#   scenes:   [(en noun phrase, zh noun phrase)]
#   senses:   [(en noun phrase, zh noun phrase)] or {kind: [...]}  (used mostly by "elegant")
#   buddies:  [(en, zh)]  (used by "playful")
#   puns:     {"en": [...], "zh": [...]}  (used by "playful")
# --------------------------------------------------------------------------

CATALOGUE: dict[str, dict] = {
    "kitchen": {
        "products": [
            P("Cedar Pour-Over Kettle", "雪松手冲壶", "stainless steel with a cedar handle", "不锈钢配雪松木柄",
              "any", "hand", litres("1.0"), cm("28"), grams(540)),
            P("Stoneware Mixing Bowl", "粗陶搅拌碗", "glazed stoneware", "釉面粗陶",
              "any", "dishwasher", dia("24"), litres("2.5")),
            P("Walnut Cutting Board", "胡桃木砧板", "end-grain walnut", "端纹胡桃木",
              "any", "wood", dims("40x28x3"), grams(2600)),
            P("Cast Iron Skillet", "铸铁平底锅", "pre-seasoned cast iron", "预开锅铸铁",
              "any", "iron", dia("26"), grams(2300)),
            P("Linen Apron", "亚麻围裙", "washed linen", "水洗亚麻",
              "any", "machine", cm("85"), raw("adjustable neck strap", "可调节颈带")),
            P("Brass Measuring Spoon Set", "黄铜量勺套装", "solid brass", "实心黄铜",
              "any", "hand", pcs(4), raw("1.25 ml to 15 ml", "1.25毫升至15毫升")),
            P("Olive Wood Spatula", "橄榄木锅铲", "Mediterranean olive wood", "地中海橄榄木",
              "any", "wood", cm("32"), grams(90)),
            P("Glass Storage Jar", "玻璃密封罐", "borosilicate glass with a bamboo lid", "高硼硅玻璃配竹盖",
              "any", "glass", ml(800), tall("16")),
            P("Enamel Milk Pan", "搪瓷牛奶锅", "enamelled steel", "搪瓷钢",
              "any", "hand", dia("14"), ml(900)),
            P("Bamboo Steamer", "竹制蒸笼", "hand-woven bamboo", "手工编织竹",
              "any", "wood", dia("20"), raw("two tiers and a lid", "两层带盖")),
            P("Carbon Steel Chef's Knife", "碳钢主厨刀", "high-carbon steel with an oak handle", "高碳钢配橡木柄",
              "any", "hand", raw("21 cm blade", "刀刃长21厘米"), grams(180)),
            P("Marble Mortar and Pestle", "大理石研钵", "white marble", "白色大理石",
              "any", "hand", dia("13"), grams(2100)),
            P("Porcelain Butter Dish", "白瓷黄油碟", "matte porcelain", "哑光白瓷",
              "any", "dishwasher", dims("17x10x7"), raw("holds a 250 g block", "可放250克黄油")),
            P("Balloon Whisk", "气球打蛋器", "stainless steel", "不锈钢",
              "any", "dishwasher", cm("30"), raw("12 wires", "12根钢丝")),
            P("Waffle Dish Towel Trio", "华夫格擦碗布三件套", "cotton waffle weave", "华夫格纯棉",
              "any", "machine", dims("70x50"), pcs(3)),
            P("Teak Salad Server Pair", "柚木沙拉勺", "reclaimed teak", "回收柚木",
              "any", "wood", cm("30"), raw("sold as a pair", "一对装")),
        ],
        "features": {"any": [
            ("a food-safe finish", "食品级的表面处理"),
            ("edges rounded by hand", "手工打磨的圆润边角"),
            ("a balanced weight in the hand", "握在手里恰到好处的分量"),
            ("a shape that stores neatly", "好收纳的简洁造型"),
            ("a surface that wipes clean in seconds", "一擦就干净的表面"),
            ("a finish that ages gracefully", "越用越有味道的质感"),
            ("a build with no plastic parts", "完全不含塑料的做工"),
            ("a silhouette that looks good left out on the counter", "摆在台面上也好看的轮廓"),
            ("a hanging loop for open shelving", "方便挂起收纳的挂环"),
        ]},
        "benefits": {"any": [
            ("makes weeknight cooking feel less like a chore", "让下班后的做饭不再是负担"),
            ("brings a little ceremony to breakfast", "给早餐添了一点仪式感"),
            ("earns a permanent spot by the stove", "从此常驻灶台边"),
            ("turns prep into the best part of the day", "让备菜变成一天中最惬意的时刻"),
            ("lasts through years of daily use", "经得起多年的日常使用"),
            ("keeps the counter calm and uncluttered", "让台面保持清爽整洁"),
            ("makes every cook in the house look like a pro", "让家里每个人下厨都像大厨"),
        ]},
        "scenes": [
            ("slow Sunday breakfasts", "慢悠悠的周日早餐"),
            ("weeknight stir-fries", "工作日晚上的快手小炒"),
            ("dinner for friends", "招待朋友的晚餐"),
            ("a first kitchen of your own", "第一间属于自己的厨房"),
            ("holiday baking marathons", "节日里的烘焙马拉松"),
            ("late-night noodles", "深夜的一碗面"),
            ("meal prep for the week ahead", "周末的一周备餐"),
        ],
        "senses": [
            ("the soft sheen of well-oiled wood", "油润木头柔和的光泽"),
            ("a reassuring heft in the hand", "握在手中踏实的分量"),
            ("the quiet clink of ceramic", "陶瓷轻碰时清脆的声响"),
            ("a warmth that rises from the stove", "灶台上缓缓升起的暖意"),
            ("the cool smoothness of stone", "石材清凉顺滑的触感"),
        ],
        "buddies": [("kitchen sidekick", "厨房小帮手"), ("sous-chef", "掌勺搭子"), ("counter crush", "灶台心头好")],
        "puns": {
            "en": ["Whisk away your worries!", "Let's get this bread!", "Things are heating up!",
                   "Totally egg-cellent!", "Pan-tastic, right?", "We're bowled over!"],
            "zh": ["锅碗瓢盆，快乐翻倍！", "下厨这件事，从此超有戏！", "今天也要好好吃饭哦！",
                   "香到邻居来敲门！", "开饭啦！"],
        },
    },
    "tea": {
        "products": [
            P("Misty Peak Green Tea", "云雾绿茶", "spring-picked leaves from high slopes", "高山明前嫩芽",
              "leaf", "leaf", raw("100 g tin", "100克罐装"), raw("steep 3 g at 80°C for 2 minutes", "3克茶叶，80°C水冲泡2分钟")),
            P("Osmanthus Oolong", "桂花乌龙", "rolled oolong scented with osmanthus", "桂花窨制的球形乌龙",
              "leaf", "leaf", raw("75 g pouch", "75克袋装"), raw("steep 5 g at 95°C for 1 minute", "5克茶叶，95°C水冲泡1分钟")),
            P("Aged White Peony", "陈年白牡丹", "sun-dried white tea", "日晒白茶",
              "leaf", "leaf", raw("150 g pressed cake", "150克茶饼"), raw("aged for five years", "存放五年")),
            P("Pine Smoked Black Tea", "松烟小种", "pine-smoked black tea", "松烟熏制的红茶",
              "leaf", "leaf", raw("100 g tin", "100克罐装"), raw("steep 4 g at 95°C for 3 minutes", "4克茶叶，95°C水冲泡3分钟")),
            P("Jasmine Pearl Tea", "茉莉龙珠", "hand-rolled jasmine pearls", "手工揉捻的茉莉龙珠",
              "leaf", "leaf", raw("50 g tin", "50克罐装"), raw("about 8 pearls per cup", "每杯约8颗")),
            P("Toasted Barley Brew", "炒大麦茶", "toasted whole barley", "整粒炒大麦",
              "leaf", "leaf", raw("200 g bag", "200克袋装"), raw("caffeine free", "不含咖啡因")),
            P("Celadon Gaiwan", "青瓷盖碗", "celadon porcelain", "青瓷",
              "ware", "dishwasher", ml(120), tall("8")),
            P("Yixing Clay Teapot", "紫砂小壶", "Yixing clay", "宜兴紫砂",
              "ware", "clay", ml(180), grams(210)),
            P("Glass Cold-Brew Bottle", "玻璃冷泡瓶", "borosilicate glass", "高硼硅玻璃",
              "ware", "glass", ml(1000), raw("fine steel filter", "细密不锈钢滤网")),
            P("Bamboo Tea Tray", "竹制茶盘", "pressed bamboo", "压制竹材",
              "ware", "wood", dims("40x25x4"), raw("hidden drip tray", "隐藏式接水槽")),
            P("Ash-Glaze Tasting Cup Set", "草木灰品茗杯", "stoneware with a wood-ash glaze", "草木灰釉粗陶",
              "ware", "hand", ml(60), pcs(4)),
            P("Canvas Travel Tea Set", "便携旅行茶具", "porcelain in a canvas roll", "白瓷配帆布收纳包",
              "ware", "hand", pcs(5), grams(480)),
            P("Ripe Pu-erh Square Tin", "熟普小方砖", "fermented pu-erh leaves", "发酵熟普",
              "leaf", "leaf", raw("20 squares of 5 g", "20块，每块5克"), raw("brews up to 8 times", "可冲泡8次以上")),
            P("Tin Tea Caddy", "锡制茶叶罐", "pure tin", "纯锡",
              "ware", "wipe", tall("12"), dia("8")),
            P("Ginger Honey Brew", "姜汁蜂蜜茶", "aged ginger and wildflower honey", "老姜与百花蜜",
              "leaf", "leaf", raw("240 g jar", "240克瓶装"), raw("one spoon per 200 ml", "每200毫升水加一勺")),
            P("Golden Chrysanthemum Bud Tea", "金丝胎菊", "whole chrysanthemum buds", "整朵胎菊",
              "leaf", "leaf", raw("40 g tin", "40克罐装"), raw("steep 6 buds at 90°C", "6朵，90°C水冲泡")),
        ],
        "features": {
            "leaf": [
                ("a honeyed, lingering finish", "悠长的蜜香回甘"),
                ("leaves picked by hand in early spring", "早春手工采摘的嫩叶"),
                ("a liquor the colour of pale gold", "浅金色的茶汤"),
                ("a gentle roast that never turns bitter", "不苦不涩的温和焙火"),
                ("small-batch processing", "小批量的精细制作"),
                ("a resealable pouch inside the tin", "罐内可重复密封的内袋"),
            ],
            "ware": [
                ("a lid that sits snugly", "严丝合缝的盖子"),
                ("walls thin enough to feel the warmth", "恰好能感到温度的薄壁"),
                ("a clean pour that never dribbles", "利落不滴漏的出水"),
                ("a glaze that deepens with every brew", "越泡越温润的釉色"),
                ("a size made for one or two", "适合一两人的小巧容量"),
            ],
        },
        "benefits": {
            "any": [
                ("turns a ten-minute break into a small retreat", "把十分钟的休息变成一次小小的出逃"),
                ("slows the whole afternoon down", "让整个午后都慢了下来"),
                ("makes a thoughtful gift for the tea lover in your life", "是送给爱茶之人的贴心礼物"),
                ("brings a quiet focus to the desk", "让书桌前多了一份专注"),
            ],
            "leaf": [
                ("rewards a second and third steeping", "越泡越有滋味"),
                ("tastes just as good iced in summer", "夏天冷泡也一样好喝"),
            ],
            "ware": [
                ("makes brewing loose leaf feel effortless", "让泡散茶变得毫不费力"),
                ("keeps the tea table tidy", "让茶桌始终干净利落"),
            ],
        },
        "scenes": [
            ("quiet mornings before email", "打开邮箱之前的安静清晨"),
            ("rainy afternoons", "下雨的午后"),
            ("a desk-side break", "工位旁的片刻小憩"),
            ("tea with grandparents", "陪长辈喝茶的时光"),
            ("late-night reading", "深夜的读书时光"),
            ("a picnic by the river", "河边的野餐"),
        ],
        "senses": {
            "leaf": [
                ("a fragrance like spring rain", "如春雨般的清香"),
                ("a sweetness that lingers on the tongue", "舌尖久久不散的回甘"),
                ("the colour of late sunlight in the cup", "杯中夕阳般的茶色"),
            ],
            "ware": [
                ("the gentle ring of porcelain", "瓷器轻碰时的清响"),
                ("a surface worn smooth by many hands", "被无数次摩挲得温润的表面"),
            ],
            "any": [
                ("the soft steam curling from the cup", "杯口袅袅升起的热气"),
            ],
        },
        "buddies": [("tea-break buddy", "喝茶搭子"), ("cuppa companion", "下午茶伙伴"), ("steeping sidekick", "泡茶小帮手")],
        "puns": {
            "en": ["Tea-riffic!", "Steep happiness, zero drama!", "It's brew-tiful!",
                   "Oolong time coming!", "Have a steep-tacular day!", "Spill the tea!"],
            "zh": ["今天的快乐是茶给的！", "有茶有闲，快乐无边！", "喝茶吗？我请客！",
                   "一口回甘，开心一整天！", "茶里乾坤大，快乐装得下！"],
        },
    },
    "skincare": {
        "products": [
            P("Rice Water Cleansing Oil", "米萃卸妆油", "rice bran oil", "米糠油",
              "formula", "skin", ml(150, "bottle"), raw("pump dispenser", "按压式瓶头")),
            P("Cucumber Mist Toner", "黄瓜保湿喷雾", "cucumber water and aloe", "黄瓜水与芦荟",
              "formula", "skin", ml(100, "spray bottle"), raw("ultra-fine mist nozzle", "细密均匀的喷头")),
            P("Camellia Face Oil", "山茶花精华油", "cold-pressed camellia oil", "冷榨山茶籽油",
              "formula", "skin", ml(30, "dropper bottle"), raw("about 3 drops per use", "每次约3滴")),
            P("Oat Milk Cleanser", "燕麦奶洁面乳", "colloidal oat", "胶态燕麦",
              "formula", "skin", ml(120, "tube"), raw("pH 5.5", "pH值5.5")),
            P("Rose Clay Mask", "玫瑰泥面膜", "pink kaolin clay", "粉色高岭土",
              "formula", "skin", raw("80 g jar", "80克罐装"), raw("leave on for 10 minutes", "敷10分钟")),
            P("Hyaluronic Dew Serum", "玻尿酸水光精华", "three weights of hyaluronic acid", "三重分子玻尿酸",
              "formula", "skin", ml(30, "bottle"), raw("2% hyaluronic complex", "2%玻尿酸复合物")),
            P("Shea Butter Hand Cream", "乳木果护手霜", "unrefined shea butter", "未精制乳木果油",
              "formula", "skin", ml(50, "tube"), raw("15% shea butter", "乳木果油含量15%")),
            P("Lavender Sleep Balm", "薰衣草睡眠膏", "lavender oil and beeswax", "薰衣草精油与蜂蜡",
              "formula", "skin", raw("40 g tin", "40克铁盒装"), raw("apply to wrists and temples", "涂抹于手腕与太阳穴")),
            P("Sea Buckthorn Night Cream", "沙棘修护晚霜", "sea buckthorn oil", "沙棘油",
              "formula", "skin", ml(50, "jar"), raw("for night use", "夜间使用")),
            P("Mineral Sunscreen", "物理防晒霜", "non-nano zinc oxide", "非纳米氧化锌",
              "formula", "skin", ml(60, "tube"), raw("SPF 30, PA+++", "SPF30，PA+++")),
            P("Peppermint Lip Balm", "薄荷润唇膏", "beeswax and peppermint oil", "蜂蜡与薄荷油",
              "formula", "skin", raw("4.5 g stick", "4.5克管装"), raw("pack of 2", "两支装")),
            P("Bamboo Charcoal Soap", "竹炭手工皂", "bamboo charcoal and olive oil", "竹炭粉与橄榄油",
              "formula", "skin", raw("100 g bar", "每块100克"), raw("cured for six weeks", "熟成六周")),
            P("Ginseng Eye Cream", "人参眼霜", "ginseng root extract", "人参根提取物",
              "formula", "skin", ml(15, "tube"), raw("metal applicator tip", "金属按摩头")),
            P("Konjac Facial Sponge", "魔芋洁面海绵", "natural konjac fibre", "天然魔芋纤维",
              "tool", "tool", dia("8"), raw("lasts about 3 months", "可使用约3个月")),
            P("Jade Facial Roller", "玉石按摩滚轮", "polished jade", "抛光玉石",
              "tool", "tool", cm("15"), raw("dual rollers", "大小双滚轮")),
            P("Yuzu Body Wash", "柚子沐浴露", "yuzu peel oil", "柚子皮精油",
              "formula", "skin", ml(300, "bottle"), raw("sulfate free", "不含硫酸盐")),
        ],
        "features": {
            "formula": [
                ("a lightweight texture that sinks in fast", "轻盈易吸收的质地"),
                ("a gentle, pH-balanced formula", "温和的弱酸性配方"),
                ("a barely-there scent", "若有若无的淡香"),
                ("a recyclable glass or aluminium pack", "可回收的玻璃或铝制包装"),
                ("dermatologist-tested ingredients", "经皮肤科测试的成分"),
            ],
            "tool": [
                ("a shape that follows the contours of your face", "贴合面部轮廓的造型"),
                ("a cool, smooth surface", "清凉顺滑的表面"),
                ("a cord for easy drying", "方便晾干的挂绳"),
            ],
            "any": [
                ("a cruelty-free promise", "零动物实验的承诺"),
                ("a size that fits a travel pouch", "能放进旅行收纳包的尺寸"),
            ],
        },
        "benefits": {"any": [
            ("leaves skin soft and comfortable", "让肌肤柔软舒适"),
            ("turns a two-minute routine into a small ritual", "把两分钟的护肤变成一场小仪式"),
            ("suits even sensitive skin", "连敏感肌也能安心使用"),
            ("helps skin look rested by morning", "让肌肤第二天早上看起来神采奕奕"),
            ("keeps dryness at bay all day", "让肌肤一整天都不干燥紧绷"),
            ("makes bedtime feel like a spa visit", "让睡前时光像去了一趟水疗馆"),
        ]},
        "scenes": [
            ("your morning routine", "清晨的护肤步骤"),
            ("long-haul flights", "长途飞行"),
            ("winter evenings", "冬日的夜晚"),
            ("post-gym showers", "健身后的淋浴"),
            ("a slow Sunday spa night", "周日晚上的居家水疗"),
            ("air-conditioned office days", "空调房里的工作日"),
        ],
        "senses": {
            "formula": [
                ("a texture like cool silk", "丝绸般清凉的触感"),
                ("a soft herbal scent", "淡淡的草本气息"),
                ("a dewy, luminous finish", "水润透亮的光泽"),
            ],
            "tool": [
                ("the cool touch of a smooth surface", "光滑表面带来的清凉触感"),
                ("a softness that surprises the skin", "让肌肤惊喜的柔软"),
            ],
            "any": [
                ("a calm that settles over the skin", "缓缓落在肌肤上的宁静"),
            ],
        },
        "buddies": [("shelfie superstar", "梳妆台新宠"), ("glow buddy", "护肤搭子"), ("bathroom bestie", "浴室好闺蜜")],
        "puns": {
            "en": ["Glow for it!", "Hello, dewy days!", "You're glowing, literally!",
                   "Self-care? More like shelf-care!", "Pore decisions? Not today!", "Lather, rinse, grin!"],
            "zh": ["素颜也能闪闪发光！", "水润到发光！", "今天也是被夸皮肤好的一天！",
                   "护肤不费劲，开心最要紧！", "镜子里的你，真好看！"],
        },
    },
    "stationery": {
        "products": [
            P("Linen-Bound Notebook", "亚麻布面笔记本", "a linen cover and 100 gsm paper", "亚麻布封面配100克纸",
              "paper", "paper", raw("A5 format", "A5尺寸"), raw("192 pages", "192页")),
            P("Brass Fountain Pen", "黄铜钢笔", "solid brass", "实心黄铜",
              "tool", "wipe", cm("13.5"), grams(38)),
            P("Walnut Pencil Case", "胡桃木笔盒", "oiled walnut", "油润胡桃木",
              "tool", "wipe", dims("21x6x3"), raw("magnetic lid", "磁吸盒盖")),
            P("Botanical Washi Tape Set", "植物和纸胶带套装", "Japanese rice paper", "日本米纸",
              "paper", "paper", pcs(6), raw("15 mm x 10 m per roll", "每卷15毫米×10米")),
            P("Recycled Kraft Envelope Pack", "再生牛皮纸信封", "recycled kraft paper", "再生牛皮纸",
              "paper", "paper", raw("pack of 25", "25个装"), raw("C6 size", "C6尺寸")),
            P("Ink Wash Fountain Pen Ink", "水墨钢笔墨水", "plant-based pigment", "植物基颜料",
              "ink", "ink", ml(50, "bottle"), raw("dries in about 10 seconds", "约10秒速干")),
            P("Dot Grid Journal", "点阵手账本", "cream 120 gsm paper", "120克米白纸",
              "paper", "paper", raw("A5 format", "A5尺寸"), raw("240 numbered pages", "240页带页码")),
            P("Aluminium Desk Ruler", "铝制桌面直尺", "anodised aluminium", "阳极氧化铝",
              "tool", "wipe", cm("30"), raw("metric and imperial scales", "公制与英制双刻度")),
            P("Wax Seal Kit", "火漆印章套装", "a brass stamp with a beech handle", "黄铜印头配榉木手柄",
              "tool", "wipe", pcs(5), raw("25 mm seal", "印面直径25毫米")),
            P("Letterpress Card Set", "凸版印刷贺卡", "cotton card stock", "棉浆卡纸",
              "paper", "paper", raw("pack of 8", "8张装"), raw("A6 size with envelopes", "A6尺寸附信封")),
            P("Cork Desk Pad", "软木桌垫", "natural cork", "天然软木",
              "tool", "wipe", dims("60x30x0.3"), raw("non-slip underside", "底部防滑")),
            P("Cedar Graphite Pencil Set", "雪松石墨铅笔套装", "cedar wood and graphite", "雪松木与石墨",
              "tool", "paper", pcs(12), raw("grades 4H to 8B", "4H至8B全硬度")),
            P("Leather Bookmark", "皮革书签", "vegetable-tanned leather", "植鞣牛皮",
              "tool", "leather", cm("18"), raw("hand-stitched edge", "手工缝边")),
            P("Bamboo Desk Organiser", "竹制桌面收纳盒", "solid bamboo", "实心竹材",
              "tool", "wipe", dims("25x12x10"), raw("five compartments", "五个分格")),
            P("Watercolour Postcard Set", "水彩明信片", "cold-pressed cotton paper", "冷压棉纸",
              "paper", "paper", raw("pack of 20", "20张装"), raw("300 gsm", "300克厚纸")),
            P("Glass Dip Pen", "玻璃蘸水笔", "hand-blown glass", "手工吹制玻璃",
              "tool", "ink", cm("17"), raw("writes about one postcard per dip", "蘸一次约写一张明信片")),
        ],
        "features": {
            "paper": [
                ("paper that takes fountain-pen ink without bleeding", "钢笔书写不洇墨的纸张"),
                ("acid-free paper that won't yellow", "不易泛黄的无酸纸"),
                ("a soft, toothy paper surface", "细腻带纹理的纸面"),
            ],
            "tool": [
                ("a balanced, weighty feel", "沉稳均衡的手感"),
                ("edges smoothed by hand", "手工打磨的边缘"),
                ("a finish that wears in beautifully", "越用越有味道的表面"),
            ],
            "ink": [
                ("shading that drifts from grey to deep black", "由灰到浓黑的自然晕染"),
                ("a formula that flows smoothly in any pen", "在任何钢笔里都顺畅的墨水配方"),
            ],
            "any": [
                ("a size that slips easily into a bag", "轻松放进包里的尺寸"),
                ("a clean, logo-free design", "没有任何标志的简洁设计"),
                ("colours mixed to sit well together", "彼此相衬的配色"),
            ],
        },
        "benefits": {"any": [
            ("makes writing by hand feel new again", "让手写重新变得有趣"),
            ("keeps your desk tidy and inspiring", "让书桌既整洁又有灵感"),
            ("turns a to-do list into something to look forward to", "让待办清单也变得令人期待"),
            ("makes a lovely gift for a pen pal", "是送给笔友的好礼物"),
            ("survives years at the bottom of a backpack", "在背包里摸爬滚打好几年也不怕"),
            ("helps ideas land on the page faster", "让灵感更快落到纸上"),
        ]},
        "scenes": [
            ("morning pages", "清晨的自由书写"),
            ("lecture notes", "课堂笔记"),
            ("letters to faraway friends", "写给远方朋友的信"),
            ("planning a new year", "新一年的计划"),
            ("sketching on the train", "火车上的随手速写"),
            ("late-night journaling", "深夜的手账时间"),
        ],
        "senses": [
            ("the whisper of a nib on paper", "笔尖划过纸面的沙沙声"),
            ("the faint scent of cedar", "淡淡的雪松香"),
            ("paper with a soft, velvety tooth", "带着细腻纹理的纸感"),
            ("a pleasing weight on the desk", "放在桌上恰到好处的分量"),
            ("ink settling slowly into the grain", "墨色缓缓渗入纸纹"),
        ],
        "buddies": [("desk buddy", "桌面搭子"), ("study sidekick", "学习小帮手"), ("pencil-case pal", "笔袋好伙伴")],
        "puns": {
            "en": ["Write on!", "Totally note-worthy!", "Stay sharp!",
                   "Pen pals forever!", "Let's make our mark!", "You're on the write track!"],
            "zh": ["下笔如有神！", "写写画画，快乐加倍！", "灵感一来，挡都挡不住！",
                   "文具控狂喜！", "今天也要好好写字哦！"],
        },
    },
    "outdoor": {
        "products": [
            P("Packable Down Vest", "轻量羽绒背心", "700-fill responsibly sourced down", "700蓬松度的可追溯羽绒",
              "gear", "gentle", grams(260), raw("packs into its own pocket", "可收进自带口袋")),
            P("Waxed Canvas Daypack", "油蜡帆布双肩包", "waxed cotton canvas", "油蜡棉帆布",
              "gear", "spot", litres("22"), raw("padded laptop sleeve", "带软垫电脑隔层")),
            P("Titanium Camp Mug", "钛制露营杯", "pure titanium", "纯钛",
              "gear", "rinse", ml(450), grams(70)),
            P("Folding Camp Stool", "折叠露营凳", "beech wood and cotton canvas", "榉木与棉帆布",
              "gear", "rinse", raw("holds up to 100 kg", "承重100公斤"), raw("weighs 1.1 kg", "重1.1公斤")),
            P("Merino Trail Sock Pack", "美利奴徒步袜", "a merino wool blend", "美利奴羊毛混纺",
              "gear", "machine", raw("sizes 36 to 46", "尺码36至46"), raw("pack of 3 pairs", "三双装")),
            P("Wool Picnic Blanket", "羊毛野餐毯", "recycled wool with a waterproof backing", "再生羊毛配防水底布",
              "gear", "spot", dims("150x130"), raw("leather carry strap", "皮革提带")),
            P("Rechargeable Camp Lantern", "充电露营灯", "aluminium and frosted glass", "铝合金与磨砂玻璃",
              "gear", "charge", raw("up to 40 hours of light", "续航最长40小时"), raw("300 lumens", "300流明")),
            P("Insulated Water Bottle", "保温水壶", "double-walled stainless steel", "双层不锈钢",
              "gear", "hand", ml(750), raw("keeps drinks hot for 12 hours", "保温12小时")),
            P("Rain Shell Jacket", "防雨冲锋衣", "recycled nylon with a waterproof membrane", "再生尼龙配防水膜",
              "gear", "gentle", grams(310), raw("10,000 mm waterproof rating", "防水指数10000毫米")),
            P("Carbon Trekking Pole Pair", "碳纤维登山杖", "carbon fibre with cork grips", "碳纤维配软木握把",
              "gear", "rinse", raw("adjusts from 100 to 135 cm", "长度可调100至135厘米"), raw("sold as a pair", "一对装")),
            P("Parachute Nylon Hammock", "降落伞布吊床", "ripstop parachute nylon", "防撕裂降落伞布",
              "gear", "rinse", raw("holds up to 150 kg", "承重150公斤"), dims("270x140")),
            P("Enamel Camp Plate Set", "搪瓷露营餐盘", "enamelled steel", "搪瓷钢",
              "gear", "dishwasher", pcs(4), dia("22")),
            P("Foldable Sun Hat", "可折叠遮阳帽", "a cotton-linen blend", "棉麻混纺",
              "gear", "gentle", raw("UPF 50+", "UPF50+"), raw("7 cm brim", "帽檐宽7厘米")),
            P("Brass Pocket Compass", "黄铜袖珍指南针", "solid brass", "实心黄铜",
              "gear", "wipe", dia("5"), raw("liquid-damped needle", "液体阻尼指针")),
            P("Nesting Camp Cook Set", "露营套锅", "hard-anodised aluminium", "硬质阳极氧化铝",
              "gear", "hand", pcs(3), raw("1.2 L main pot", "主锅1.2升")),
            P("Folding Sit Pad", "折叠防潮坐垫", "closed-cell foam", "闭孔泡棉",
              "gear", "rinse", dims("38x30x2"), grams(60)),
        ],
        "features": {"any": [
            ("a packable design", "可收纳的轻巧设计"),
            ("reinforced stitching at every stress point", "受力处加固的缝线"),
            ("a weight you'll barely notice", "几乎感觉不到的重量"),
            ("hardware that works with gloves on", "戴着手套也能操作的配件"),
            ("a finish that shrugs off mud", "不怕泥污的表面"),
            ("a loop for clipping onto your pack", "可挂在背包上的挂环"),
            ("a colour that is easy to spot at dusk", "黄昏时也一眼能找到的颜色"),
        ]},
        "benefits": {"any": [
            ("earns its place in every pack", "每次出行都值得带上"),
            ("keeps you comfortable from trailhead to summit", "从山脚到山顶都让你舒舒服服"),
            ("laughs off a sudden shower", "不怕突如其来的阵雨"),
            ("makes a long day outside feel easy", "让户外的漫长一天变得轻松"),
            ("packs down small enough to forget about", "收起来小到几乎忘了它的存在"),
            ("turns any patch of grass into a campsite", "让任何一片草地都能变成营地"),
        ]},
        "scenes": [
            ("weekend hikes", "周末徒步"),
            ("lakeside camping", "湖边露营"),
            ("early summit pushes", "清晨冲顶"),
            ("city parks on a sunny day", "晴天的城市公园"),
            ("long road trips", "长途自驾"),
            ("stargazing nights", "看星星的夜晚"),
        ],
        "senses": [
            ("the smell of pine after rain", "雨后松林的气息"),
            ("the crunch of gravel underfoot", "脚下碎石的沙沙声"),
            ("a softness that surprises in the cold", "寒风中出人意料的柔软"),
            ("the warm glow of firelight", "篝火温暖的光"),
            ("the hush of a valley at dawn", "黎明时山谷的寂静"),
        ],
        "buddies": [("trail buddy", "户外搭子"), ("adventure sidekick", "冒险小伙伴"), ("campsite MVP", "营地担当")],
        "puns": {
            "en": ["Let's hit the trail!", "Tents-ational!", "Camp-ly irresistible!",
                   "Go wild, responsibly!", "Tread happy!", "Fresh air, fresh vibes!"],
            "zh": ["说走就走，出发啦！", "山野在召唤！", "风景在路上，快乐在包里！",
                   "去野吧！", "周末不宅，山里见！"],
        },
    },
    "home": {
        "products": [
            P("Fig & Cedar Soy Candle", "无花果雪松香薰蜡烛", "soy wax in a stoneware vessel", "大豆蜡配粗陶杯",
              "any", "candle", raw("burns for about 45 hours", "可燃烧约45小时"), raw("220 g", "220克")),
            P("Stonewashed Linen Throw", "石洗亚麻盖毯", "stonewashed linen", "石洗亚麻",
              "any", "machine", dims("130x170"), raw("fringed edges", "流苏边")),
            P("Ceramic Bud Vase", "陶瓷小花瓶", "hand-thrown stoneware", "手拉坯粗陶",
              "any", "hand", tall("14"), raw("watertight glaze inside", "内壁釉面防水")),
            P("Rattan Storage Basket", "藤编收纳篮", "hand-woven rattan", "手工编织藤条",
              "any", "spot", dia("30"), tall("25")),
            P("Felted Wool Floor Cushion", "羊毛毡坐垫", "felted wool", "压制羊毛毡",
              "any", "spot", dia("45"), raw("8 cm thick", "厚8厘米")),
            P("Mulberry Paper Pendant Lamp", "桑皮纸吊灯", "mulberry paper over a bamboo frame", "竹骨架配桑皮纸",
              "any", "wipe", dia("40"), raw("E27 bulb fitting", "E27灯头")),
            P("Oak Wall Shelf", "橡木壁架", "solid oak", "实木橡木",
              "any", "wipe", cm("60"), raw("holds up to 15 kg", "承重15公斤")),
            P("Organic Cotton Bath Towel", "有机棉浴巾", "organic cotton terry", "有机棉毛圈",
              "any", "machine", dims("70x140"), raw("600 gsm", "600克重")),
            P("Hinoki Reed Diffuser", "扁柏香薰藤条", "hinoki oil in amber glass", "扁柏精油配琥珀色玻璃瓶",
              "any", "wipe", ml(100, "bottle"), raw("lasts about 8 weeks", "可持续约8周")),
            P("Jute Doormat", "黄麻门垫", "natural jute", "天然黄麻",
              "any", "spot", dims("75x45"), raw("latex-free backing", "无乳胶底")),
            P("Brass Candle Holder", "黄铜烛台", "solid brass", "实心黄铜",
              "any", "wipe", tall("8"), raw("fits standard dinner candles", "适配标准长蜡烛")),
            P("Washed Linen Duvet Cover", "水洗亚麻被套", "washed French linen", "水洗法国亚麻",
              "any", "machine", raw("double, 200 x 230 cm", "双人尺寸，200×230厘米"), raw("coconut-shell buttons", "椰壳纽扣")),
            P("Stoneware Incense Dish", "粗陶香插", "speckled stoneware", "斑点粗陶",
              "any", "hand", dia("10"), raw("fits sticks and cones", "线香塔香皆可用")),
            P("Silent Beech Wall Clock", "榉木静音挂钟", "beech wood", "榉木",
              "any", "wipe", dia("30"), raw("silent sweep movement", "静音扫秒机芯")),
            P("Indigo Cushion Cover", "蓝染抱枕套", "hand-dyed indigo cotton", "手工蓝染棉布",
              "any", "gentle", dims("45x45"), raw("hidden zip", "隐形拉链")),
            P("Round Oak Mirror", "橡木圆镜", "an oak frame and silvered glass", "橡木框配银镜",
              "any", "wipe", dia("50"), raw("leather hanging strap", "皮质挂带")),
        ],
        "features": {"any": [
            ("a soft palette that goes with everything", "百搭的柔和配色"),
            ("natural materials with no synthetic coating", "没有化学涂层的天然材质"),
            ("a silhouette that softens any corner", "让角落变柔和的轮廓"),
            ("finishing done entirely by hand", "全程手工完成的细节"),
            ("a timeless shape", "经典耐看的造型"),
            ("a texture you'll want to touch", "让人忍不住想摸的质感"),
        ]},
        "benefits": {"any": [
            ("makes a rented flat feel like home", "让出租屋也有家的感觉"),
            ("brings a calm mood to the whole room", "让整个房间安静下来"),
            ("suits Scandinavian and Japanese interiors alike", "与北欧风、日式风都很搭"),
            ("makes coming home the best part of the day", "让回家成为一天中最期待的事"),
            ("adds warmth without adding clutter", "添了温度却不显杂乱"),
            ("makes guests ask where you found it", "让来访的朋友忍不住打听出处"),
        ]},
        "scenes": [
            ("reading corners", "阅读角"),
            ("a first apartment", "第一间公寓"),
            ("lazy weekend lie-ins", "周末赖床的早晨"),
            ("guest rooms", "客房"),
            ("winter nights on the sofa", "冬夜窝在沙发上的时光"),
            ("a new home's first evening", "乔迁新居的第一个夜晚"),
        ],
        "senses": [
            ("light filtering through linen", "透过亚麻的柔光"),
            ("a faint scent of cedar and fig", "淡淡的雪松与无花果香"),
            ("the nubbly texture of hand-woven fibre", "手工编织纤维的粗粝质感"),
            ("a warmth that gathers in the evening", "傍晚渐渐聚拢的暖意"),
            ("the quiet of a tidy room", "整洁房间里的安静"),
        ],
        "buddies": [("favourite roommate", "居家好伙伴"), ("sofa sidekick", "沙发搭子"), ("cosy companion", "宅家好帮手")],
        "puns": {
            "en": ["Home sweet home, only sweeter!", "Cosy levels: maxed out!", "Sofa, so good!",
                   "There's no place like it!", "Nest mode: on!", "Snug as a bug!"],
            "zh": ["宅家快乐指数爆表！", "家，就该这么舒服！", "窝在家里也很幸福！",
                   "舒服到不想出门！", "今天也想早点回家！"],
        },
    },
}


# --------------------------------------------------------------------------
# Tone grammars. Slots:
#   {p} product name   {m} material ({mlabel}: "material" or "ingredients")
#   {f} {f2} features ({F}, {Sense}, {Spec}, {Mlabel}: capitalised variants)
#   {b} benefit        {s} {s2} scenes        {sense} sensory detail
#   {spec} {spec2} specifications   {care} care sentence   {buddy}
#   {pun} category pun   {shop} shop name   {w} warranty years
#   {d} dispatch days   {r} return days
# Each text is an opener, a body, and optionally a closer or second body.
# --------------------------------------------------------------------------

TONE_GRAMMAR: dict[str, dict[str, dict[str, list[str]]]] = {
    "playful": {
        "en": {
            "openers": [
                "Meet the {p}, your new {buddy}!",
                "Say hello to the {p}!",
                "Psst, the {p} has entered the chat!",
                "Plot twist: the {p} is here, and it's a total delight!",
                "Warning: the {p} may cause spontaneous happy dancing!",
                "Who knew {m} could be this much fun?",
                "Oh hello, {p}! Where have you been all our lives?",
                "Guess who just got an upgrade? You did, thanks to the {p}!",
                "{pun} The {p} has landed!",
                "Big news: the {p} is officially your new {buddy}!",
                "Ta-da! The {p} is ready for its close-up!",
            ],
            "bodies": [
                "It has {f} and {f2}. Yes, both!",
                "Made from {m}, it {b}. Not bad at all!",
                "Bring it along to {s} and watch it steal the show!",
                "It {b}, which is basically a superpower.",
                "Built with {f}, it {b}. Cue the applause!",
                "Perfect for {s}, and even better for {s2}!",
                "One look at {f} and you'll be hooked!",
                "Honestly, it {b}. We checked. Twice!",
                "From {s} to {s2}, it's ready for anything!",
                "Crafted from {m}, and it has {f}. So good!",
            ],
            "closers": [
                "Go on, treat yourself!",
                "Add to basket, thank us later!",
                "Your {s} will never be the same!",
                "{pun}",
                "Honestly? Obsessed.",
                "Fair warning: you'll want two!",
                "Happy dance optional but highly encouraged!",
                "Only at {shop}, obviously!",
                "Grab it before your friends do!",
            ],
        },
        "zh": {
            "openers": [
                "哇！{p}来啦！",
                "嘿，认识一下你的新{buddy}：{p}！",
                "好消息！{p}终于上架啦！",
                "谁懂啊，{p}也太可爱了吧！",
                "叮咚！{p}申请加入你的生活！",
                "{pun}",
                "注意注意，{p}驾到！",
                "偷偷告诉你，这款{p}超好用！",
                "救命，{p}真的会让人上头！",
                "新{buddy}报到：{p}来啦！",
            ],
            "bodies": [
                "{f}加上{f2}，简直是双倍快乐！",
                "用{m}做成，{b}，谁用谁知道！",
                "它{b}，简直是超能力！",
                "有了{f}，它{b}，必须鼓掌！",
                "无论是{s}还是{s2}，它都能轻松搞定！",
                "光是{f}这一点，就足够让人心动啦！",
                "{s}有它在，快乐直接翻倍！",
                "{m}做的{p}，{b}，绝了！",
                "从{s}到{s2}，它都能陪你嗨！",
            ],
            "closers": [
                "快把它带回家吧！",
                "冲鸭！",
                "买一个？不，买两个！",
                "闭眼入，不踩雷！",
                "谁用谁说好！",
                "开心到转圈圈！",
                "{pun}",
                "{shop}出品，放心冲！",
                "手慢无哦！",
            ],
        },
    },
    "elegant": {
        "en": {
            "openers": [
                "Quietly made from {m}, the {p} rewards a slower pace.",
                "There is a particular calm in the {p}.",
                "The {p} is shaped for the unhurried hours.",
                "Some objects simply belong; the {p} is one of them.",
                "Rendered in {m}, the {p} carries a soft, considered presence.",
                "A study in restraint, the {p} lets {m} take centre stage.",
                "Consider the {p}, composed of {m} and little else.",
                "Understated and enduring, the {p} only grows more beautiful with use.",
                "The {p} begins with {m}, chosen for its quiet character.",
            ],
            "bodies": [
                "Note {f} and {f2}, details that reveal themselves over time.",
                "It {b}, with a grace that never asks for attention.",
                "Reserved for {s}, it lends the moment a quiet luminosity.",
                "There is a gentle, tactile ease in {f}.",
                "Notice {sense}; it turns the everyday into something to savour.",
                "For {s}, it offers a quiet sense of occasion.",
                "With {f}, it {b}.",
                "{Sense} makes {s} feel complete.",
                "{F} and {f2} reveal themselves slowly, as good things do.",
            ],
            "closers": [
                "An heirloom in the making.",
                "Made to be lived with, and loved for years.",
                "Beauty, held lightly.",
                "A small luxury, quietly kept.",
                "Timeless, unhurried, entirely yours.",
                "Simple, and all the more beautiful for it.",
                "Crafted to be noticed slowly.",
                "From the {shop} atelier.",
            ],
        },
        "zh": {
            "openers": [
                "{p}以{m}细细制成，静候懂它的人。",
                "一器一物，皆有温度；{p}便是如此。",
                "{p}，是写给慢时光的一封信。",
                "素雅而克制，{p}让{m}自己说话。",
                "取{m}之质，成{p}之形。",
                "有些物件，天生就属于生活，{p}正是其中之一。",
                "光阴流转，{p}温润如初。",
                "{p}选用{m}，只为那一份安静的质感。",
            ],
            "bodies": [
                "{f}与{f2}，都是需要时间才能读懂的细节。",
                "它{b}，优雅却从不张扬。",
                "留给{s}，让片刻多一分静谧的光。",
                "{sense}，让寻常日子也值得细细品味。",
                "它为{s}带来恰到好处的仪式感。",
                "凭借{f}，它{b}。",
                "{sense}，为{s}留下悠长的余韵。",
                "细看{f}，方知用心之处。",
            ],
            "closers": [
                "一件值得传承的器物。",
                "岁月静好，器物有心。",
                "简单，所以美好。",
                "不疾不徐，刚刚好。",
                "静静相伴，久久生情。",
                "美，本就不必喧哗。",
                "与时光一同老去，愈见其美。",
                "{shop}，只做长久之物。",
            ],
        },
    },
    "practical": {
        "en": {
            "openers": [
                "The {p} is made from {m}.",
                "{p}: {spec}, {spec2}.",
                "{p} ({m}). {Spec}.",
                "Specs for the {p}: {spec}; {spec2}.",
                "{Mlabel}: {m}. Details: {spec}.",
                "What you get: the {p} ({spec}).",
                "Product: the {p}. {Mlabel}: {m}.",
            ],
            "bodies": [
                "Key features: {f} and {f2}.",
                "It has {f}, so it {b}.",
                "Designed for {s}; {spec2}.",
                "Specs: {spec}, {spec2}.",
                "{care}",
                "Made from {m}; it has {f}.",
                "Good for {s} and {s2}. {care}",
                "Practical detail: {f}.",
            ],
            "closers": [
                "{care}",
                "Comes with a {w}-year warranty.",
                "Ships within {d} working days.",
                "Free returns within {r} days.",
                "Packed without plastic.",
                "Checked by hand before it ships.",
                "Sold and shipped by {shop}.",
            ],
        },
        "zh": {
            "openers": [
                "{p}，采用{m}，{spec}，{spec2}。",
                "{p}｜{spec}｜{spec2}。",
                "产品名称：{p}。{mlabel}：{m}。",
                "{p}规格：{spec}，{spec2}。",
                "{mlabel}：{m}；参数：{spec}。",
                "{p}由{m}制成，{spec}。",
            ],
            "bodies": [
                "主要特点：{f}、{f2}。",
                "亮点是{f}，{b}。",
                "适用场景：{s}、{s2}。",
                "{care}",
                "规格：{spec}，{spec2}。",
                "特色：{f}。",
                "适合{s}。{care}",
            ],
            "closers": [
                "{care}",
                "质保{w}年。",
                "下单后{d}个工作日内发货。",
                "支持{r}天无理由退换。",
                "采用无塑料包装。",
                "每件出厂前均经人工质检。",
                "{shop}官方发货。",
            ],
        },
    },
}

# Which parts make up a text: (opener, body), (opener, body, closer), (opener, body, body).
SHAPES = (("openers", "bodies"), ("openers", "bodies", "closers"), ("openers", "bodies", "bodies"))
SHAPE_WEIGHTS = (3, 5, 2)


# Products that are used up rather than kept: "ingredients" rather than "material", no warranty line.
CONSUMABLE_KINDS = frozenset({"leaf", "formula", "ink"})
MATERIAL_LABEL = {False: ("material", "材质"), True: ("ingredients", "原料")}


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _pool(table: dict[str, list] | list, kind: str) -> list:
    """Entries for a product kind plus those marked "any"; a plain list applies to every kind."""
    if isinstance(table, list):
        return table
    return table.get(kind, []) + (table.get("any", []) if kind != "any" else [])


def _slots(rng: random.Random, lang: str, category: str, product: Product) -> dict[str, str]:
    cat = CATALOGUE[category]
    i = 0 if lang == "en" else 1
    f, f2 = rng.sample(_pool(cat["features"], product.kind), 2)
    s, s2 = rng.sample(cat["scenes"], 2)
    spec, spec2 = rng.sample(product.specs, 2)
    slots = {
        "p": product.en if lang == "en" else product.zh,
        "m": product.material_en if lang == "en" else product.material_zh,
        "f": f[i],
        "f2": f2[i],
        "b": rng.choice(_pool(cat["benefits"], product.kind))[i],
        "s": s[i],
        "s2": s2[i],
        "sense": rng.choice(_pool(cat["senses"], product.kind))[i],
        "mlabel": MATERIAL_LABEL[product.kind in CONSUMABLE_KINDS][i],
        "spec": spec[i],
        "spec2": spec2[i],
        "care": rng.choice(CARE[product.care])[i],
        "buddy": rng.choice(cat["buddies"])[i],
        "pun": rng.choice(cat["puns"][lang]),
        "shop": SHOP[lang],
        "w": str(rng.choice((1, 2, 3, 5))),
        "d": str(rng.choice((2, 3, 5))),
        "r": str(rng.choice((14, 30))),
    }
    slots["F"] = _cap(slots["f"])
    slots["Sense"] = _cap(slots["sense"])
    slots["Spec"] = _cap(slots["spec"])
    slots["Mlabel"] = _cap(slots["mlabel"])
    return slots


# Slots that may appear in more than one sentence of the same text.
REPEATABLE_SLOTS = frozenset({"p"})


def _slot_names(template: str) -> set[str]:
    return {name.lower() for _, name, _, _ in string.Formatter().parse(template) if name}


def _compose(rng: random.Random, lang: str, category: str, tone: str, product: Product) -> str:
    grammar = TONE_GRAMMAR[tone][lang]
    slots = _slots(rng, lang, category, product)
    shape = rng.choices(SHAPES, weights=SHAPE_WEIGHTS)[0]
    parts: list[str] = []
    used: set[str] = set()
    for key in shape:
        options = [
            t for t in grammar[key]
            if t not in parts
            and not (_slot_names(t) - REPEATABLE_SLOTS) & used
            and not ("{w}" in t and product.kind in CONSUMABLE_KINDS)
        ]
        if not options:
            return ""
        choice = rng.choice(options)
        parts.append(choice)
        used |= _slot_names(choice) - REPEATABLE_SLOTS
    return (" " if lang == "en" else "").join(t.format(**slots) for t in parts)


def _cell_rows(rng: random.Random, lang: str, category: str, tone: str, seen: set[str]) -> list[str]:
    products = list(CATALOGUE[category]["products"])
    lo, hi = LENGTH_LIMITS[lang]
    texts: list[str] = []
    order: list[Product] = []
    while len(texts) < ROWS_PER_CELL:
        if not order:  # every product gets its turn before any repeats
            order = products[:]
            rng.shuffle(order)
        product = order.pop()
        for _ in range(MAX_ATTEMPTS):
            text = _compose(rng, lang, category, tone, product)
            if text and lo <= len(text) <= hi and text not in seen:
                break
        else:
            raise RuntimeError(f"cannot fill cell {(lang, category, tone)} with {product.en!r}")
        seen.add(text)
        texts.append(text)
    return texts


def build_rows() -> list[dict[str, str]]:
    """Generate the corpus: a list of dicts keyed by FIELDS, sorted by lang, category, tone."""
    rng = random.Random(SEED)
    seen: set[str] = set()
    rows: list[dict[str, str]] = []
    for lang in LANGS:
        for category in CATEGORIES:
            for tone in TONES:
                for text in _cell_rows(rng, lang, category, tone, seen):
                    rows.append({"text": text, "category": category, "tone": tone, "lang": lang})
    # Stable sort: within a cell rows keep their generation order.
    rows.sort(key=lambda r: (r["lang"], r["category"], r["tone"]))
    return rows


def render_csv(rows: list[dict[str, str]]) -> str:
    """Serialise rows exactly as they are written to disk (header, minimal quoting, '\\n' endings)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else OUTPUT
    rows = build_rows()
    data = render_csv(rows).encode("utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    print(f"wrote {len(rows)} rows, {len(data):,} bytes to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
