"""Make the PII test corpus ``tests/data/pii_dev.jsonl`` and ``tests/data/pii_test.jsonl``.

Synthetic customer text in four domains (``review``, ``service_log``, ``order_note``,
``product_copy``) and three languages (``zh``, ``en``, ``mixed``), written from templates with a
slot for every entity type the safety layer recognises, and with **hard negatives**: strings that
look like PII but are not (18-digit order numbers, long timestamps, resident IDs with a wrong
check digit or an impossible birth date, prices, tracking numbers, 11-digit numbers with no
mobile prefix, Luhn-invalid 16-digit numbers, USCCs with a wrong check character, common words
that begin with a surname such as 高兴 or 马上, capitalised English product names).

Format: one JSON object per line (UTF-8, ``\\n`` line endings)::

    {"id": "test-00042", "text": "...", "domain": "order_note", "lang": "zh",
     "template": "order_note-zh-03", "variant": "simplified" | "traditional" | "plain",
     "entities":  [{"type": "CN_MOBILE", "start": 12, "end": 29, "value": "+86-138-1234-5678",
                    "lang": "zh", "form": "plus86_dash"}, ...],
     "negatives": [{"kind": "order_number", "start": 40, "end": 58, "value": "..."}, ...]}

* ``start``/``end``: character offsets into ``text`` (``text[start:end] == value``); spans never
  overlap. An entity span is the value itself as written: the whole ``+86-138-1234-5678``, a
  name without 先生 / 女士, an address without 收货地址.
* ``type``: CN_RESIDENT_ID, CN_MOBILE, CN_LANDLINE, BANK_CARD, CN_USCC, PASSPORT,
  CN_HK_MACAU_PERMIT, CN_LICENSE_PLATE, EMAIL, IP_ADDRESS, URL, PERSON, ADDRESS.
* entity ``lang``: for PERSON and ADDRESS the locale that made the value (``zh`` or ``en``: an
  English name in Chinese text is ``en``); for every other type the record's ``lang``.
* ``form``: the surface variant (``plain``, ``spaced``, ``plus86_dash``, ``fullwidth``,
  ``lower_x``, ``space4``, ``compressed``, ``query``, ...), for reading failures by variant.
* ``variant``: ``traditional`` records have their Chinese (template text, names, addresses,
  plates, the common-word clauses) converted to traditional characters with OpenCC ``s2t``.
* ``negatives``: spans that must NOT be reported as PII; ``kind`` is one of ``NEGATIVE_KINDS``.
  Text that is neither an entity nor a negative (dates, quantities, company names) carries no
  label.

The split is BY TEMPLATE: in each (domain, lang) group the templates alternate between dev and
test, so no test template is ever seen in dev. The product names and the common-word clauses
alternate between the splits too (each of the 15 words has one clause in each). Each split is generated until it holds at least
``ENTITY_QUOTA`` spans of every entity type (PERSON and ADDRESS counted per lang) and
``NEGATIVE_QUOTA`` of every negative kind, drawing only templates that still have a slot below
its quota.

No real people: names, usernames and English addresses come from Faker (``zh_CN``, ``en_US``);
resident IDs, USCCs (GB 32100 check character), bank cards (Luhn, real IIN prefixes 62 / 4 /
51-55), passports, permits and plates are generated here with valid check digits; Chinese
addresses are composed from real administrative divisions and invented roads and estates (plus
a share of Faker's fictional ones). E-mail domains are the reserved example.com / .net / .org
or Faker's invented company domains.

Faker is a dev-only dependency (``pip install -e ".[dev]"``); nothing under src/ imports it.
The output is deterministic: the same seed gives the same bytes (Faker 40.63.0 is pinned; no
value depends on today's date). To regenerate, from the repository root::

    python scripts/make_pii_data.py [--seed 13] [--out tests/data]

``tests/test_pii_data.py`` checks that the committed files are what this script makes.
"""

# ruff: noqa: E501  (the templates below are a data table)

from __future__ import annotations

import argparse
import collections
import datetime as dt
import ipaddress
import json
import random
import re
import string
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

SEED = 13
ENTITY_QUOTA = 220  # spans per entity type (PERSON, ADDRESS: per lang) in each split
NEGATIVE_QUOTA = 120  # spans per negative kind in each split
REFERENCE_DATE = dt.date(2026, 1, 1)  # "the future" for birth dates, fixed so output never drifts
TRADITIONAL_SHARE = 0.2  # of zh and mixed records
REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "data"

ENTITY_TYPES = ("CN_RESIDENT_ID", "CN_MOBILE", "CN_LANDLINE", "BANK_CARD", "CN_USCC", "PASSPORT",
                "CN_HK_MACAU_PERMIT", "CN_LICENSE_PLATE", "EMAIL", "IP_ADDRESS", "URL", "PERSON", "ADDRESS")
NEGATIVE_KINDS = ("order_number", "timestamp", "id_bad_check", "id_bad_date", "price", "tracking_number",
                  "bad_mobile_prefix", "card_bad_luhn", "uscc_bad_check", "common_word", "product_name")

# Template slot -> (entity type, entity lang or None for the record's lang).
SLOTS = {
    "ID": ("CN_RESIDENT_ID", None), "MOBILE": ("CN_MOBILE", None), "LANDLINE": ("CN_LANDLINE", None),
    "CARD": ("BANK_CARD", None), "USCC": ("CN_USCC", None), "PASSPORT": ("PASSPORT", None),
    "PERMIT": ("CN_HK_MACAU_PERMIT", None), "PLATE": ("CN_LICENSE_PLATE", None), "EMAIL": ("EMAIL", None),
    "IP": ("IP_ADDRESS", None), "URL": ("URL", None), "NAME_ZH": ("PERSON", "zh"), "NAME_EN": ("PERSON", "en"),
    "ADDR_ZH": ("ADDRESS", "zh"), "ADDR_EN": ("ADDRESS", "en"),
}

# --------------------------------------------------------------------------------------------
# Templates. {SLOT} an entity, {!kind} a hard negative, {$filler} plain text with no label.
# In each (domain, lang) list the templates alternate dev, test, dev, test, ...
# --------------------------------------------------------------------------------------------

TEMPLATES: dict[str, dict[str, list[str]]] = {
    "review": {
        "zh": [
            "买了{$item_zh}，质量很好，{!common_word}。卖家{NAME_ZH}很热情，有问题可以打她电话{MOBILE}。",
            "差评！{$item_zh}收到就坏了，联系客服{NAME_ZH}，留的手机{MOBILE}一直没人接，订单号{!order_number}。",
            "给{NAME_ZH}买的生日礼物，寄到{ADDR_ZH}，第二天就到了，{!common_word}。",
            "物流太慢，快递单号{!tracking_number}，收货地址{ADDR_ZH}，收件人{NAME_ZH}，{!common_word}。",
            "退款还没到账，我的卡号是{CARD}，开户名{NAME_ZH}，请尽快处理。实付{!price}。",
            "店家发票开错了，统一社会信用代码应该是{USCC}，不是{!uscc_bad_check}，联系人{NAME_ZH}，邮箱{EMAIL}。",
            "已经第三次回购了，{!common_word}，推荐给同事{NAME_ZH}，她的微信就是手机号{MOBILE}。",
            "追评：用了一个月，{$item_zh}依然好用。要售后的话打{LANDLINE}，或者发邮件到{EMAIL}。{!common_word}。",
            "代驾师傅{NAME_ZH}开的{PLATE}，服务很好，{!common_word}，下次还找他{MOBILE}。",
            "实名认证填了身份证{ID}，结果提示我另一个号{!id_bad_check}不对，客服{NAME_ZH}说是系统问题。",
            "商家给的售后电话{!bad_mobile_prefix}是空号，后来找到{NAME_ZH}的手机{MOBILE}才解决，订单{!order_number}。",
            "网购实名要填护照{PASSPORT}，我填成了身份证{!id_bad_date}，客服{NAME_ZH}帮我改好了。",
        ],
        "en": [
            "Bought the {$item_en} for my sister {NAME_EN}; it arrived at {ADDR_EN} two days early. Love the {!product_name}!",
            "Terrible service. I called {LANDLINE} three times and emailed {EMAIL}, nobody answered. Order {!order_number}.",
            "Five stars. {NAME_EN} from the store helped me pick the {!product_name}; reach her at {MOBILE} if you need help.",
            "Refund still missing. Card {CARD} was charged {!price} twice, and the shop says card {!card_bad_luhn} is mine.",
            "Shipping label said {ADDR_EN} but it went to my neighbour {NAME_EN}. Tracking {!tracking_number}. Contact me: {EMAIL}.",
            "Got the {!product_name} for {!price}. Seller {NAME_EN} answered fast; her shop page {URL} has more.",
            "The courier in plate {PLATE} dropped my {$item_en} at {ADDR_EN}. Driver {NAME_EN} was polite.",
            "Account hacked: someone logged in from {IP} and changed my email to {EMAIL}. Support ticket {!timestamp}.",
            "The seller's invoice had tax code {!uscc_bad_check}; the right one is {USCC}. I wrote from {IP}.",
            "Paid with card {!card_bad_luhn}? No, my card is {CARD}. Customs asked for passport {PASSPORT}, weird.",
        ],
        "mixed": [
            "这个{!product_name}真的好用，推荐！my friend {NAME_EN} 也买了，寄到{ADDR_ZH}。",
            "Seller {NAME_ZH} 很 nice，回复超快，联系方式 {MOBILE}，WeChat 同号。",
            "品质 ok，但 shipping 太慢，tracking {!tracking_number}，客服邮箱 {EMAIL} 没回复，{!common_word}。",
            "Review：包装很好，{!common_word}，link 在这 {URL}，价格{!price}。",
            "卖家 {NAME_EN} 发错货了，我的 address 是 {ADDR_EN}，电话 {LANDLINE}。",
            "客服让我报 ID card {ID}，又说 {!id_bad_date} 这个生日不对，very confusing。",
        ],
    },
    "service_log": {
        "zh": [
            "[{$datetime}] 会话{!timestamp} 用户{NAME_ZH}来电，核实身份证号{ID}，手机{MOBILE}，问题：{$issue_zh}。",
            "工单{!order_number}：客户{NAME_ZH}反映登录异常，登录IP {IP}，已重置密码并发送至{EMAIL}。",
            "坐席记录：来电号码{LANDLINE}，客户自称{NAME_ZH}，提供的身份证号{!id_bad_check}校验不通过，请其重新核对。",
            "客户{NAME_ZH}申请港澳通行证加急，证件号{PERMIT}，护照号{PASSPORT}，联系电话{MOBILE}。",
            "违章查询：车牌{PLATE}，车主{NAME_ZH}，住址{ADDR_ZH}，已短信通知{MOBILE}。",
            "系统日志 {!timestamp} 来源 {IP} 访问 {URL} 失败，用户邮箱 {EMAIL}。",
            "客户{NAME_ZH}要求更换收款卡，新卡号{CARD}，原卡号{!card_bad_luhn}经系统校验无效。",
            "回访：{NAME_ZH}先生，身份证{ID}，出生日期有误的证件号{!id_bad_date}已作废，新地址{ADDR_ZH}。",
            "出境业务：旅客{NAME_ZH}，护照{PASSPORT}，往来港澳通行证{PERMIT}，紧急联系人{NAME_ZH}{MOBILE}。",
            "企业认证工单：单位信用代码{USCC}，经办人{NAME_ZH}，登录IP {IP}，{!common_word}。",
            "用户来电说号码{!bad_mobile_prefix}打不通，核实后正确号码为{MOBILE}，地址{ADDR_ZH}。",
            "停车场记录 {$datetime}：车辆{PLATE}入场，登记人{NAME_ZH}，电话{LANDLINE}。",
            "风控记录：身份证{!id_bad_check}校验位错误，{!id_bad_date}出生日期非法，真实证件{ID}，IP {IP}。",
            "港澳通行证{PERMIT}续签，车牌{PLATE}，申请人{NAME_ZH}，单位信用代码{!uscc_bad_check}校验失败，联系手机{!bad_mobile_prefix}无效。",
        ],
        "en": [
            "[{$datetime}] Ticket {!timestamp}: caller {NAME_EN} verified with email {EMAIL}; callback number {MOBILE}.",
            "Agent note: customer {NAME_EN} locked out after logins from {IP}; reset link sent to {EMAIL}.",
            "Chat log {!timestamp}: {NAME_EN} updated billing card to {CARD}; the old card {!card_bad_luhn} failed validation.",
            "Visitor from {IP} opened {URL} and left number {!bad_mobile_prefix}, which is not a valid mobile.",
            "Escalation: {NAME_EN} at {ADDR_EN} reports parcel {!tracking_number} missing. Phone {LANDLINE}.",
            "KYC review: passport {PASSPORT}, holder {NAME_ZH}, HK-Macau permit {PERMIT}, ID {ID}.",
            "Fraud check: ID number {!id_bad_date} has an impossible birth date; real ID on file {ID} for {NAME_EN}.",
            "Corporate account opened for tax code {USCC}; admin {NAME_EN}, phone {MOBILE}, office {ADDR_EN}.",
            "Travel desk: {NAME_EN} needs the passport {PASSPORT} and permit {PERMIT} scanned; email {EMAIL}.",
            "Parking violation for vehicle {PLATE}, registered to {NAME_ZH}; notice mailed to {ADDR_EN}.",
            "Risk alert {!timestamp}: card {!card_bad_luhn} rejected by the Luhn check; login IP {IP}; user {EMAIL}.",
            "Identity check failed for {!id_bad_check}; caller {NAME_EN} then gave {ID} and permit {PERMIT}; callback {!bad_mobile_prefix} invalid.",
        ],
        "mixed": [
            "[{$datetime}] user {NAME_ZH} login from {IP}，异常，已通知 {EMAIL}。",
            "Ticket {!order_number}：customer {NAME_EN} 来电 {MOBILE}，要求改地址为 {ADDR_ZH}。",
            "API 调用日志 {!timestamp} client_ip={IP} referer={URL} 用户手机 {MOBILE}",
            "客服 {NAME_ZH} 处理完毕，customer ID card {ID}，plate {PLATE}，status closed。",
            "KYC 资料：passport {PASSPORT}，港澳通行证 {PERMIT}，holder {NAME_EN}，电话 {LANDLINE}。",
            "企业 onboarding：USCC {USCC}，错误的 {!uscc_bad_check} 已驳回，contact {EMAIL}。",
            "风控 alert：order {!order_number}，信用代码 {!uscc_bad_check} invalid，IP {IP}。",
            "Border check：护照 {PASSPORT}，plate {PLATE}，身份证 {!id_bad_check} mismatch。",
        ],
    },
    "order_note": {
        "zh": [
            "收货人：{NAME_ZH}，电话：{MOBILE}，地址：{ADDR_ZH}。备注：{!common_word}。",
            "订单{!order_number}，请开增值税专用发票，单位税号{USCC}，开户行账号{CARD}。",
            "送货前请打{LANDLINE}找{NAME_ZH}，地址{ADDR_ZH}，总价{!price}。",
            "代收人{NAME_ZH}，身份证{ID}，手机{MOBILE}，快递单号{!tracking_number}。",
            "预约上门安装，车辆{PLATE}进小区需登记，联系{NAME_ZH}{MOBILE}，{!common_word}。",
            "跨境订单清关信息：{NAME_ZH}，身份证号{ID}，手机{MOBILE}，下单时间{!timestamp}。",
            "备注：不要打{!bad_mobile_prefix}，那是错号，请打{MOBILE}。地址{ADDR_ZH}。",
            "企业采购：{$company_zh}，信用代码{USCC}，对接人{NAME_ZH}，邮箱{EMAIL}，货款{!price}。",
            "海外直邮，收件人{NAME_ZH}，护照号{PASSPORT}，港澳通行证{PERMIT}，电话{MOBILE}。",
            "付款卡{CARD}，卡号{!card_bad_luhn}是旧卡别用，收货人{NAME_ZH}，地址{ADDR_ZH}。",
            "发票信息：税号{!uscc_bad_check}有误，请改为{USCC}，收件人{NAME_ZH}，邮箱{EMAIL}。",
            "自提车辆{PLATE}，司机{NAME_ZH}，护照{PASSPORT}，订单{!order_number}，{!common_word}。",
        ],
        "en": [
            "Ship to {NAME_EN}, {ADDR_EN}. Call {MOBILE} before delivery. Order {!order_number}.",
            "Gift order: please deliver to {NAME_EN} at {ADDR_EN}; sender {NAME_EN} ({EMAIL}).",
            "Payment card {CARD}, billing email {EMAIL}, total {!price}.",
            "Leave the {!product_name} with the concierge at {ADDR_EN}. Contact {LANDLINE}. Tracking {!tracking_number}.",
            "Customs: recipient {NAME_ZH}, passport {PASSPORT}, phone {MOBILE}, address {ADDR_EN}.",
            "Invoice to {$company_en}, tax ID {USCC}, contact {NAME_EN} <{EMAIL}>.",
            "Pickup by car {PLATE}; driver {NAME_EN}, ID {ID}, phone {MOBILE}.",
            "Do not use {!bad_mobile_prefix}; the right number for {NAME_EN} is {LANDLINE}. Order placed {!timestamp}.",
            "Order {!order_number}: buyer ID {!id_bad_check} failed the check digit and {!id_bad_date} has no such birthday; using {ID}. Placed from {IP}.",
            "Bill to {$company_en}, tax ID {!uscc_bad_check} (invalid), use {USCC}; card {!card_bad_luhn} declined.",
        ],
        "mixed": [
            "收件人 {NAME_EN}，phone {MOBILE}，地址 {ADDR_ZH}，{!common_word}。",
            "Order {!order_number} 备注：发票抬头 {$company_zh}，税号 {USCC}，email {EMAIL}。",
            "Delivery to {ADDR_EN}，收件人{NAME_ZH}，手机 {MOBILE}，车牌 {PLATE} 停地库。",
            "Please call {NAME_ZH} at {LANDLINE}，或者 {MOBILE}，tracking {!tracking_number}。",
            "清关 info：{NAME_ZH}，passport {PASSPORT}，身份证 {ID}，total {!price}。",
            "付款 card {CARD}，旧卡 {!card_bad_luhn} 已注销，港澳通行证 {PERMIT} 用于提货。",
        ],
    },
    "product_copy": {
        "zh": [
            "{$item_zh}新品上市，{!common_word}！咨询热线{LANDLINE}，官网{URL}。",
            "设计师{NAME_ZH}倾心打造{!product_name}系列，门店地址{ADDR_ZH}。",
            "限时特惠{!price}，客服微信同号{MOBILE}，邮箱{EMAIL}。",
            "{$item_zh}，{!common_word}。线下体验店：{ADDR_ZH}，电话{LANDLINE}。",
            "品牌方：{$company_zh}（统一社会信用代码{USCC}），售后热线{LANDLINE}。",
            "扫码或访问{URL}领取优惠券，活动咨询{NAME_ZH}{MOBILE}。",
            "本店支持对公转账，账户{CARD}，户名{$company_zh}，{!common_word}。",
            "明星同款{$item_zh}，主理人{NAME_ZH}推荐，订购邮箱{EMAIL}，价格{!price}。",
            "厂家直销，营业执照信用代码{USCC}，仓库地址{ADDR_ZH}，{!common_word}。",
            "会员专享：登录{URL}，绑定手机{MOBILE}即送{$item_zh}，{!common_word}。",
            "扫码下单，系统按IP {IP}就近发货，客服{NAME_ZH}，热线{LANDLINE}。",
            "收藏有礼，到手价{!price}，售后电话{!bad_mobile_prefix}已停用，请改拨{LANDLINE}，{!common_word}。",
        ],
        "en": [
            "Meet the {!product_name}: designed by {NAME_EN} in our studio. Visit {URL} or call {LANDLINE}.",
            "Now only {!price}! Questions? Email {EMAIL} or text {MOBILE}.",
            "Showroom: {ADDR_EN}. Ask for {NAME_EN}, our lead stylist.",
            "The {!product_name} ships worldwide. Wholesale: {EMAIL}, {URL}.",
            "Handmade by {NAME_EN}. Pick up at {ADDR_EN}, or order at {URL}.",
            "Limited run of the {!product_name}, {!price} each; reserve via {MOBILE}.",
            "Made by {$company_en} (registration {USCC}). Dealer enquiries: {NAME_EN}, {EMAIL}.",
            "Try the {!product_name} at our pop-up, {ADDR_EN}; bank transfer to {CARD} accepted.",
        ],
        "mixed": [
            "{!product_name} 新款上市，官网 {URL}，hotline {LANDLINE}。",
            "由 designer {NAME_EN} 设计，showroom 在 {ADDR_ZH}。",
            "Flash sale {!price}！WeChat/phone {MOBILE}，email {EMAIL}，{!common_word}。",
            "主理人 {NAME_ZH} (Instagram: {URL}) 推荐 {!product_name}。",
            "Official store {URL}，客服 {NAME_EN}，address {ADDR_EN}。",
            "品牌 {$company_zh}，USCC {USCC}，对公账户 card {CARD}。",
        ],
    },
}

# --------------------------------------------------------------------------------------------
# Word lists (invented or public reference data: administrative divisions, bank IIN prefixes).
# --------------------------------------------------------------------------------------------

ITEMS_ZH = ["保温杯", "蓝牙耳机", "羽绒服", "电饭煲", "茶叶礼盒", "笔记本", "登山鞋", "面霜", "台灯", "四件套",
            "行李箱", "空气炸锅", "瑜伽垫", "扫地机器人", "咖啡机", "帆布包"]
ITEMS_EN = ["thermos", "bluetooth earbuds", "down jacket", "rice cooker", "tea gift box", "notebook", "hiking boots",
            "face cream", "desk lamp", "bedding set", "suitcase", "air fryer", "yoga mat", "coffee grinder"]
ISSUES_ZH = ["无法登录", "退款未到账", "物流延迟", "商品破损", "发票问题", "修改收货地址", "会员积分异常"]

# A word that starts with a common surname, inside the clause that carries it: (word, clause).
COMMON_WORDS = [
    ("高兴", "收到货很高兴"), ("高兴", "孩子特别高兴"), ("黄色", "黄色的包装很显眼"), ("黄色", "选了黄色款"),
    ("白天", "白天送货最好"), ("白天", "白天家里没人"), ("李子", "李子味的很好喝"), ("李子", "还送了一袋李子"),
    ("王国", "简直是零食王国"), ("王国", "积木王国系列很全"), ("张开", "伞面张开很大"), ("张开", "张开后有两米宽"),
    ("周末", "周末也能发货"), ("周末", "希望周末送到"), ("朱红", "朱红色很正"), ("朱红", "朱红配色好看"),
    ("金色", "金色款更好看"), ("金色", "金色logo有质感"), ("方便", "用起来很方便"), ("方便", "收纳很方便"),
    ("余下", "余下的尾款月底付"), ("余下", "余下的配件下周补发"), ("石头", "石头纹理很自然"), ("石头", "底座是天然石头"),
    ("常常", "常常回购"), ("常常", "常常用来送人"), ("江河", "江河系列很大气"), ("江河", "江河主题的包装"),
    ("马上", "马上就发货了"), ("马上", "马上要用请加急"),
]

# Capitalised English product names; several begin with a first name or a surname.
PRODUCT_NAMES = [
    "Jasmine Pearl Tea", "Grace Ceramic Mug", "Victoria Linen Tote", "Lincoln Desk Lamp", "Harper Wool Scarf",
    "Jackson Trail Boots", "Aurora Pro Headphones", "Ella Rose Serum", "Morgan Leather Wallet", "Stella Glass Kettle",
    "Austin Road Bike", "Sierra Down Jacket", "Summit Daypack 30", "Ocean Breeze Candle", "Golden Harvest Granola",
    "Silver Birch Diffuser", "Clara Bamboo Brush", "Logan Cast Iron Pan", "Violet Night Cream", "Phoenix Smart Watch",
    "Hudson Canvas Sneakers", "Ruby Red Lipstick", "Madison Office Chair", "Sophia Silk Pillowcase",
    "Oliver Oak Bookshelf", "Chelsea Rain Boots", "Eden Green Tea", "Willow Reading Lamp", "Emma Wool Throw",
    "Carter Travel Mug",
]

# (province, prefecture or None for a municipality, districts / counties / county-level cities)
DIVISIONS = [
    ("北京市", None, ["朝阳区", "海淀区", "东城区", "西城区", "丰台区", "通州区"]),
    ("上海市", None, ["浦东新区", "徐汇区", "静安区", "黄浦区", "闵行区", "杨浦区"]),
    ("天津市", None, ["和平区", "南开区", "河西区", "滨海新区"]),
    ("重庆市", None, ["渝中区", "江北区", "南岸区", "沙坪坝区"]),
    ("广东省", "广州市", ["天河区", "越秀区", "海珠区", "番禺区", "白云区"]),
    ("广东省", "深圳市", ["南山区", "福田区", "罗湖区", "宝安区", "龙岗区"]),
    ("浙江省", "杭州市", ["西湖区", "上城区", "拱墅区", "滨江区", "余杭区"]),
    ("浙江省", "金华市", ["义乌市", "婺城区", "东阳市"]),
    ("江苏省", "南京市", ["玄武区", "鼓楼区", "建邺区", "江宁区"]),
    ("江苏省", "苏州市", ["姑苏区", "吴中区", "相城区", "昆山市"]),
    ("四川省", "成都市", ["锦江区", "武侯区", "青羊区", "成华区"]),
    ("四川省", "阿坝藏族羌族自治州", ["九寨沟县", "马尔康市"]),
    ("湖北省", "武汉市", ["武昌区", "江汉区", "洪山区", "汉阳区"]),
    ("湖南省", "长沙市", ["岳麓区", "芙蓉区", "天心区", "雨花区"]),
    ("湖南省", "湘西土家族苗族自治州", ["吉首市", "凤凰县"]),
    ("陕西省", "西安市", ["雁塔区", "碑林区", "未央区", "长安区"]),
    ("山东省", "济南市", ["历下区", "市中区", "槐荫区"]),
    ("山东省", "青岛市", ["市南区", "崂山区", "黄岛区"]),
    ("福建省", "厦门市", ["思明区", "湖里区", "集美区"]),
    ("福建省", "福州市", ["鼓楼区", "台江区", "仓山区"]),
    ("河南省", "郑州市", ["金水区", "二七区", "中原区"]),
    ("河北省", "石家庄市", ["长安区", "桥西区", "裕华区"]),
    ("河北省", "保定市", ["涞水县", "竞秀区", "涿州市"]),
    ("辽宁省", "沈阳市", ["和平区", "沈河区", "皇姑区"]),
    ("辽宁省", "大连市", ["中山区", "沙河口区", "甘井子区"]),
    ("吉林省", "长春市", ["朝阳区", "南关区", "绿园区"]),
    ("黑龙江省", "哈尔滨市", ["南岗区", "道里区", "香坊区"]),
    ("安徽省", "合肥市", ["蜀山区", "包河区", "庐阳区"]),
    ("江西省", "南昌市", ["东湖区", "西湖区", "红谷滩区"]),
    ("云南省", "昆明市", ["五华区", "盘龙区", "官渡区"]),
    ("云南省", "大理白族自治州", ["大理市", "剑川县"]),
    ("贵州省", "贵阳市", ["南明区", "云岩区", "观山湖区"]),
    ("广西壮族自治区", "南宁市", ["青秀区", "兴宁区", "西乡塘区"]),
    ("海南省", "海口市", ["龙华区", "美兰区"]),
    ("山西省", "太原市", ["小店区", "迎泽区"]),
    ("内蒙古自治区", "呼和浩特市", ["新城区", "赛罕区"]),
    ("新疆维吾尔自治区", "乌鲁木齐市", ["天山区", "沙依巴克区"]),
    ("甘肃省", "兰州市", ["城关区", "七里河区"]),
    ("宁夏回族自治区", "银川市", ["兴庆区", "金凤区"]),
    ("青海省", "西宁市", ["城中区", "城西区"]),
    ("西藏自治区", "拉萨市", ["城关区"]),
]
ROAD_STEMS = ["中山", "人民", "解放", "建设", "和平", "新华", "文化", "长江", "黄河", "延安", "滨江", "学府", "科技",
              "创业", "东风", "胜利", "光明", "青年", "朝阳", "建国", "复兴", "幸福", "友谊", "工农", "府前", "江南",
              "环城", "体育", "湖滨", "望江"]
ROAD_SUFFIXES = ["路", "路", "大道", "街", "东路", "西路", "南路", "北路", "中路", "大街", "巷", "一路", "二路"]
ESTATES = ["阳光", "翠湖", "锦绣", "和谐", "丽景", "御景", "星河", "枫林", "金桥", "绿洲", "华庭", "东方"]
ESTATE_SUFFIXES = ["花园", "家园", "小区", "公寓", "苑", "新村", "华府", "大厦"]
TOWNS = ["三坡", "城关", "新兴", "太平", "永安", "长乐"]
VILLAGES = ["南峪", "东庄", "前进", "红星", "李家", "大坪"]
ZH_COMPOUND_SURNAMES = ["欧阳", "司马", "上官", "诸葛", "东方", "慕容", "令狐", "皇甫"]

MOBILE_PREFIXES = ["130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "155", "156",
                   "157", "158", "159", "166", "173", "175", "176", "177", "178", "180", "181", "182", "183", "185",
                   "186", "187", "188", "189", "191", "193", "195", "198", "199", "145", "147"]
BAD_MOBILE_PREFIXES = ["100", "101", "105", "110", "112", "116", "120", "123", "127", "140", "141", "143", "154",
                       "160", "161", "164", "169", "174", "179", "194"]
# area code -> subscriber number length
AREA_CODES = {"10": 8, "20": 8, "21": 8, "22": 8, "23": 8, "24": 8, "25": 8, "27": 8, "28": 8, "29": 8,
              "311": 7, "371": 8, "411": 8, "431": 8, "451": 8, "471": 7, "531": 8, "551": 7, "571": 8,
              "591": 8, "731": 8, "755": 8, "769": 8, "871": 8, "898": 8, "579": 8, "512": 8}
CARD_IINS = ["622202", "621700", "622848", "621483", "622588", "622262", "621661", "623058", "625966",  # UnionPay
             "4", "4", "4", "51", "52", "53", "54", "55"]  # Visa, Mastercard
PLATE_PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I, O
USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # GB 32100: no I, O, S, V, Z
USCC_WEIGHTS = [pow(3, i, 31) for i in range(17)]
ID_WEIGHTS = [pow(2, 17 - i, 11) for i in range(17)]
ORG_WEIGHTS = [3, 7, 9, 10, 5, 8, 4, 2]  # GB 11714
EMAIL_SUBDOMAINS = ["mail", "shop", "corp", "vip", "cs", "m", "service", "hr"]
TLDS = ["com", "cn", "com.cn", "net", "org", "io"]
PRICES = ["¥{a},{b:03d}.00", "￥{a}{b:03d}", "{a}{b:03d}.00元", "${a},{b:03d}.{c:02d}", "US$ {a},{b:03d}.{c:02d}",
          "RMB {a},{b:03d}", "{a}{b:03d}元", "€{a}.{c:02d}"]


# --------------------------------------------------------------------------------------------
# Check digits and validators (also used to prove every negative really is one).
# --------------------------------------------------------------------------------------------

def _regions() -> list[str]:
    """County-level codes from Faker's zh_CN list (provinces and prefectures left out)."""
    from faker.providers.ssn.zh_CN import Provider

    return [c for c in Provider.area_codes if c[4:] != "00" and c[:2] not in ("71", "81", "82", "83")]


REGIONS = _regions()
REGION_SET = frozenset(REGIONS)


def id_check(body17: str) -> str:
    return "10X98765432"[sum(int(d) * w for d, w in zip(body17, ID_WEIGHTS)) % 11]


def _date_ok(y: int, m: int, d: int) -> bool:
    try:
        return dt.date(1900, 1, 1) <= dt.date(y, m, d) <= REFERENCE_DATE
    except ValueError:
        return False


def is_valid_id(s: str) -> bool:
    """An 18-digit resident ID with a known region, a real past birth date and its check digit,
    or a 15-digit one with a known region and a real 19xx birth date."""
    s = s.upper()
    if re.fullmatch(r"\d{17}[\dX]", s):
        return (s[:6] in REGION_SET and _date_ok(int(s[6:10]), int(s[10:12]), int(s[12:14]))
                and id_check(s[:17]) == s[17])
    if re.fullmatch(r"\d{15}", s):
        return s[:6] in REGION_SET and _date_ok(1900 + int(s[6:8]), int(s[8:10]), int(s[10:12]))
    return False


def luhn_ok(digits: str) -> bool:
    # Written apart from aigc.safety.pii on purpose: the labels must not share the code they test.
    kept = sum(int(c) for c in digits[::-1][0::2])
    doubled = sum(sum(divmod(2 * int(c), 10)) for c in digits[::-1][1::2])
    return (kept + doubled) % 10 == 0


def luhn_digit(body: str) -> str:
    return next(d for d in string.digits if luhn_ok(body + d))


def uscc_check(body17: str) -> str:
    return USCC_CHARS[(31 - sum(USCC_CHARS.index(c) * w for c, w in zip(body17, USCC_WEIGHTS)) % 31) % 31]


def is_valid_uscc(s: str) -> bool:
    return (len(s) == 18 and all(c in USCC_CHARS for c in s) and s[2:8].isdigit()
            and uscc_check(s[:17]) == s[17])


def _phone(digits: str):
    import phonenumbers

    n = phonenumbers.parse(digits, "CN")
    return phonenumbers.is_valid_number(n), phonenumbers.number_type(n)


def is_mobile(digits: str) -> bool:
    import phonenumbers.phonenumberutil as pu

    ok, kind = _phone(digits)
    return ok and kind in (pu.PhoneNumberType.MOBILE, pu.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def is_landline(digits: str) -> bool:
    import phonenumbers.phonenumberutil as pu

    ok, kind = _phone(digits)
    return ok and kind in (pu.PhoneNumberType.FIXED_LINE, pu.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


def _groups(s: str, sizes, sep: str) -> str:
    out, i = [], 0
    for n in sizes:
        out.append(s[i:i + n])
        i += n
    if i < len(s):
        out.append(s[i:])
    return sep.join(p for p in out if p)


# --------------------------------------------------------------------------------------------
# Value makers: each returns (surface string, form). ``Gen`` holds the RNG and the two Fakers.
# --------------------------------------------------------------------------------------------

class Gen:
    def __init__(self, seed: int, split: str):
        from faker import Faker

        self.rng = random.Random(f"pii-{seed}-{split}")
        # The hard-negative word lists are split too (alternately), so that a recognizer tuned on
        # dev has not seen the test split's product names or common-word clauses.
        self.product_names = PRODUCT_NAMES[split == "test"::2]
        self.common_words = COMMON_WORDS[split == "test"::2]
        self.zh = Faker("zh_CN")
        self.en = Faker("en_US")
        self.zh.seed_instance(self.rng.randrange(2**31))
        self.en.seed_instance(self.rng.randrange(2**31))

    def pick(self, weighted: dict):
        keys = list(weighted)
        return self.rng.choices(keys, weights=[weighted[k] for k in keys])[0]

    def digits(self, n: int) -> str:
        return "".join(self.rng.choice(string.digits) for _ in range(n))

    # -- numbers with check digits -------------------------------------------------------
    def birth_date(self) -> dt.date:
        return dt.date(1940, 1, 1) + dt.timedelta(days=self.rng.randrange((dt.date(2007, 12, 31) - dt.date(1940, 1, 1)).days))

    def id18(self, want_x: bool = False) -> str:
        while True:
            body = self.rng.choice(REGIONS) + self.birth_date().strftime("%Y%m%d") + self.digits(3)
            check = id_check(body)
            if check == "X" or not want_x:
                return body + check

    def mobile_digits(self, prefixes=MOBILE_PREFIXES) -> str:
        while True:
            d = self.rng.choice(prefixes) + self.digits(8)
            if is_mobile(d):
                return d

    def card_digits(self, valid: bool = True) -> str:
        iin = self.rng.choice(CARD_IINS)
        length = self.rng.choice([16, 16, 19]) if iin.startswith("62") else 16
        body = iin + self.digits(length - len(iin) - 1)
        good = luhn_digit(body)
        return body + (good if valid else self.rng.choice([d for d in string.digits if d != good]))

    def uscc(self, valid: bool = True) -> str:
        head = self.pick({"91": 70, "92": 10, "12": 5, "52": 5, "93": 5, "11": 5})
        org = "".join(self.rng.choice(string.digits) if self.rng.random() < 0.8 else self.rng.choice(USCC_CHARS[10:])
                      for _ in range(8))
        c = 11 - sum((int(ch) if ch.isdigit() else ord(ch) - 55) * w for ch, w in zip(org, ORG_WEIGHTS)) % 11
        org += {10: "X", 11: "0"}.get(c, str(c))
        body = head + self.rng.choice(REGIONS) + org
        good = uscc_check(body)
        return body + (good if valid else self.rng.choice([c for c in USCC_CHARS if c != good]))

    # -- entities -------------------------------------------------------------------------
    def make_ID(self):
        form = self.pick({"plain": 55, "lower_x": 15, "fullwidth": 10, "spaced": 8, "id15": 12})
        if form == "id15":
            b = self.birth_date()
            while b.year >= 2000:
                b = self.birth_date()
            return self.rng.choice(REGIONS) + b.strftime("%y%m%d") + self.digits(3), form
        v = self.id18(want_x=form == "lower_x")
        if form == "lower_x":
            return v[:17] + "x", form
        if form == "fullwidth":
            return fullwidth(v), form
        if form == "spaced":
            return _groups(v, (6, 8, 4), " "), form
        return v, form

    def make_MOBILE(self):
        d = self.mobile_digits()
        a, b, c = d[:3], d[3:7], d[7:]
        form = self.pick({"plain": 35, "spaced": 12, "dashed": 10, "plus86_dash": 10, "plus86_space": 6,
                          "plus86": 6, "0086": 8, "paren86": 5, "fullwidth": 8})
        return {"plain": d, "spaced": f"{a} {b} {c}", "dashed": f"{a}-{b}-{c}", "plus86_dash": f"+86-{a}-{b}-{c}",
                "plus86_space": f"+86 {a} {b} {c}", "plus86": f"+86{d}", "0086": f"0086 {d}",
                "paren86": f"(+86){d}", "fullwidth": fullwidth(d)}[form], form

    def make_LANDLINE(self):
        while True:
            area = self.rng.choice(list(AREA_CODES))
            sub = self.rng.choice("2345678") + self.digits(AREA_CODES[area] - 1)
            if is_landline("0" + area + sub):
                break
        form = self.pick({"dashed": 40, "paren": 15, "spaced": 12, "plus86": 10, "plain": 8, "fullwidth": 7, "ext": 8})
        half = len(sub) // 2
        if form == "ext":  # the extension is part of the number someone can dial
            return f"0{area}-{sub}转{self.rng.randrange(100, 9999)}", form
        return {"dashed": f"0{area}-{sub}", "paren": f"(0{area}){sub}", "spaced": f"0{area} {sub[:half]} {sub[half:]}",
                "plus86": f"+86-{area}-{sub}", "plain": f"0{area}{sub}", "fullwidth": fullwidth(f"0{area}-{sub}")}[form], form

    def make_CARD(self):
        d = self.card_digits()
        form = self.pick({"plain": 45, "space4": 30, "dash4": 10, "fullwidth": 8, "fullwidth_space4": 7})
        return {"plain": d, "space4": _groups(d, (4,) * 5, " "), "dash4": _groups(d, (4,) * 5, "-"),
                "fullwidth": fullwidth(d), "fullwidth_space4": fullwidth(_groups(d, (4,) * 5, " "))}[form], form

    def make_USCC(self):
        v = self.uscc()
        form = self.pick({"plain": 85, "lower": 8, "fullwidth": 7})
        return {"plain": v, "lower": v.lower(), "fullwidth": fullwidth(v)}[form], form

    def make_PASSPORT(self):
        form = self.pick({"E8": 70, "G8": 15, "E_letter7": 15})
        if form == "E_letter7":
            return "E" + self.rng.choice(PLATE_LETTERS) + self.digits(7), form
        return form[0] + self.digits(8), form

    def make_PERMIT(self):
        form = self.pick({"C8": 80, "C_letter7": 20})
        if form == "C8":
            return "C" + self.digits(8), form
        return "C" + self.rng.choice(PLATE_LETTERS) + self.digits(7), form

    def make_PLATE(self):
        prov, city = self.rng.choice(PLATE_PROVINCES), self.rng.choice(PLATE_LETTERS)
        form = self.pick({"plain": 55, "new_energy": 20, "dot": 15, "space": 10})
        if form == "new_energy":
            tail = self.rng.choice("DF") + self.digits(5) if self.rng.random() < 0.8 else self.digits(5) + self.rng.choice("DF")
            return prov + city + tail, form
        tail = list(self.digits(5))
        for _ in range(self.rng.choice([0, 0, 1, 2])):
            tail[self.rng.randrange(5)] = self.rng.choice(PLATE_LETTERS)
        tail = "".join(tail)
        return {"plain": prov + city + tail, "dot": f"{prov}{city}·{tail}", "space": f"{prov}{city} {tail}"}[form], form

    def _domain(self) -> str:
        return f"{self.en.domain_word()}.{self.rng.choice(TLDS)}"

    def make_EMAIL(self):
        form = self.pick({"plain": 35, "pinyin": 20, "dotted": 12, "plus_tag": 12, "subdomain": 13, "mixed_case": 8})
        fk = self.zh if form == "pinyin" else self.en
        user = fk.user_name()
        domain = self.rng.choice(["example.com", "example.net", "example.org", self._domain()])
        if form == "dotted":
            user = f"{self.en.first_name()}.{self.en.last_name()}".lower()
        elif form == "plus_tag":
            user += "+" + self.rng.choice(["orders", "shop", "2024", "vip", "news"])
        elif form == "subdomain":
            domain = f"{self.rng.choice(EMAIL_SUBDOMAINS)}.{domain}"
        elif form == "mixed_case":
            user = f"{self.en.first_name()}.{self.en.last_name()}"
            domain = domain.upper() if self.rng.random() < 0.5 else domain
        return f"{user}@{domain}", form

    def make_IP(self):
        form = self.pick({"v4_public": 35, "v4_private": 20, "v6_full": 15, "v6_compressed": 20, "v6_link_local": 10})
        if form == "v4_public":
            return self.en.ipv4_public(), form
        if form == "v4_private":
            return self.en.ipv4_private(), form
        if form == "v6_full":
            return ":".join(f"{self.rng.randrange(1, 65536):x}" for _ in range(8)), form
        groups = [self.rng.randrange(1, 65536) for _ in range(8)]
        if form == "v6_link_local":
            groups[:4] = [0xFE80, 0, 0, 0]
        else:
            if self.rng.random() < 0.4:
                groups[:2] = [0x2001, 0xDB8]
            start = self.rng.randrange(2, 6)
            for i in range(start, min(8, start + self.rng.randrange(2, 5))):
                groups[i] = 0
        return str(ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))), form

    def make_URL(self):
        form = self.pick({"plain": 25, "query": 30, "path": 15, "short": 10, "no_scheme": 10, "encoded_query": 10})
        dom = self._domain()
        path = self.en.uri_path()
        if form == "plain":
            return self.rng.choice(["http", "https"]) + f"://www.{dom}/", form
        if form == "query":
            q = "&".join(f"{k}={v}" for k, v in [("id", self.digits(6)), ("utm_source", self.rng.choice(["wechat", "weibo", "sms"])),
                                                    ("ref", self.en.domain_word())][: self.rng.randrange(1, 4)])
            return f"https://{self.rng.choice(['www', 'shop', 'm', 'item'])}.{dom}/{path}?{q}", form
        if form == "path":
            return f"https://{dom}/{path}.html", form
        if form == "short":
            return f"https://t.{dom}/" + "".join(self.rng.choice(string.ascii_letters + string.digits) for _ in range(6)), form
        if form == "no_scheme":
            return f"www.{dom}/{path}", form
        return f"https://s.{dom}/search?q=%E4%BF%9D%E6%B8%A9%E6%9D%AF&page={self.rng.randrange(1, 9)}", form

    def make_NAME_ZH(self):
        if self.rng.random() < 0.1:
            return self.rng.choice(ZH_COMPOUND_SURNAMES) + self.zh.first_name(), "compound_surname"
        return self.zh.name(), "plain"

    def make_NAME_EN(self):
        first, last = self.en.first_name(), self.en.last_name()
        if self.rng.random() < 0.2:
            return f"{first} {self.rng.choice(string.ascii_uppercase)}. {last}", "middle_initial"
        return f"{first} {last}", "plain"

    def make_ADDR_ZH(self):
        form = self.pick({"full": 40, "no_province": 20, "district": 15, "rural": 10, "faker": 15})
        if form == "faker":  # Faker's fictional divisions: no gazetteer knows them
            return f"{self.zh.province()}{self.zh.city()}{self.zh.district()}区{self.zh.street_name()}{self.rng.randrange(1, 300)}号", form
        prov, city, districts = self.rng.choice(DIVISIONS)
        dist = self.rng.choice(districts)
        head = {"full": prov + (city or ""), "no_province": city or prov, "district": "", "rural": prov + (city or "")}[form]
        if form == "rural":
            return f"{head}{dist}{self.rng.choice(TOWNS)}镇{self.rng.choice(VILLAGES)}村{self.rng.randrange(1, 200)}号", form
        road = self.rng.choice(ROAD_STEMS) + self.rng.choice(ROAD_SUFFIXES)
        num = self.pick({f"{self.rng.randrange(1, 999)}号": 6, f"{self.rng.randrange(1, 300)}弄{self.rng.randrange(1, 99)}号": 1,
                         f"{self.rng.randrange(1, 200)}号院": 1})
        building = ""
        if self.rng.random() < 0.7:
            estate = self.rng.choice(ESTATES) + self.rng.choice(ESTATE_SUFFIXES)
            room = f"{self.rng.randrange(1, 33)}{self.rng.randrange(1, 9):02d}"
            building = self.pick({f"{estate}{self.rng.randrange(1, 30)}栋{self.rng.randrange(1, 6)}单元{room}室": 4,
                                  f"{estate}{self.rng.randrange(1, 30)}号楼{room}": 2, f"{estate}{room}室": 2})
        return f"{head}{dist}{road}{num}{building}", form

    def make_ADDR_EN(self):
        form = self.pick({"full": 55, "street": 20, "secondary": 25})
        street = f"{self.en.building_number()} {self.en.street_name()}"
        tail = f"{self.en.city()}, {self.en.state_abbr()} {self.en.zipcode()}"
        if form == "street":
            return self.en.street_address(), form
        if form == "secondary":
            return f"{street}, {self.en.secondary_address()}, {tail}", form
        return f"{street}, {tail}", form

    # -- negatives: (string, (start, end) of the negative inside it) ----------------------------
    def neg_order_number(self):
        while True:
            if self.rng.random() < 0.5:
                day = dt.date(2023, 1, 1) + dt.timedelta(days=self.rng.randrange(1000))
                v = day.strftime("%Y%m%d") + self.digits(self.rng.choice([10, 11]))
            else:
                v = self.rng.choice("123456789") + self.digits(self.rng.choice([17, 18]))
            if not is_valid_id(v) and not (v[0] in "456" and luhn_ok(v)):
                return v

    def neg_timestamp(self):
        t = dt.datetime(2023, 1, 1) + dt.timedelta(seconds=self.rng.randrange(3 * 365 * 86400))
        kind = self.pick({"us20": 35, "ms17": 25, "s14": 15, "unix_ms": 15, "unix_s": 10})
        if kind == "unix_ms":
            return str(int(t.replace(tzinfo=dt.timezone.utc).timestamp()) * 1000 + self.rng.randrange(1000))
        if kind == "unix_s":
            return str(int(t.replace(tzinfo=dt.timezone.utc).timestamp()))
        return t.strftime("%Y%m%d%H%M%S") + self.digits({"us20": 6, "ms17": 3, "s14": 0}[kind])

    def neg_id_bad_check(self):
        v = self.id18()
        return v[:17] + self.rng.choice([c for c in "0123456789X" if c != v[17]])

    def neg_id_bad_date(self):
        y, m, d = self.birth_date().timetuple()[:3]
        how = self.pick({"month13": 25, "month00": 10, "feb30": 20, "apr31": 10, "day32": 10, "future": 25})
        if how == "month13":
            m = self.rng.choice([13, 14, 19, 21])
        elif how == "month00":
            m = 0
        elif how == "feb30":
            m, d = 2, self.rng.choice([30, 31])
        elif how == "apr31":
            m, d = self.rng.choice([4, 6, 9, 11]), 31
        elif how == "day32":
            d = self.rng.choice([0, 32, 35])
        else:
            y = self.rng.randrange(2040, 2100)
        body = f"{self.rng.choice(REGIONS)}{y:04d}{m:02d}{d:02d}{self.digits(3)}"
        return body + id_check(body)

    def neg_price(self):
        a, b, c = self.rng.randrange(1, 99), self.rng.randrange(1000), self.rng.randrange(100)
        return self.rng.choice(PRICES).format(a=a, b=b, c=c)

    def neg_tracking_number(self):
        kind = self.pick({"SF": 30, "YT": 25, "JD": 10, "digits": 35})
        if kind != "digits":
            return kind + self.digits(13 if kind != "SF" else self.rng.choice([12, 13]))
        while True:
            v = self.rng.choice("2345679") + self.digits(self.rng.randrange(9, 15))
            if not is_valid_id(v):
                return v

    def neg_bad_mobile_prefix(self):
        while True:
            v = self.rng.choice(BAD_MOBILE_PREFIXES) + self.digits(8)
            if not _phone(v)[0]:
                return v

    def neg_card_bad_luhn(self):
        d = self.card_digits(valid=False)
        return _groups(d, (4,) * 5, " ") if self.rng.random() < 0.3 else d

    def neg_uscc_bad_check(self):
        return self.uscc(valid=False)

    def neg_product_name(self):
        return self.rng.choice(self.product_names)

    # -- fillers (no label) ------------------------------------------------------------------
    def filler(self, name: str) -> str:
        if name == "datetime":
            t = dt.datetime(2023, 1, 1) + dt.timedelta(seconds=self.rng.randrange(3 * 365 * 86400))
            return t.strftime("%Y-%m-%d %H:%M:%S")
        if name == "company_zh":
            return self.zh.company()
        if name == "company_en":
            return self.en.company()
        return self.rng.choice({"item_zh": ITEMS_ZH, "item_en": ITEMS_EN, "issue_zh": ISSUES_ZH}[name])


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

SLOT_RE = re.compile(r"\{([!$]?)([A-Za-z_0-9]+)\}")
CJK_RE = re.compile(r"[\u3400-\u9fff]")


@dataclass(frozen=True)
class Template:
    id: str
    domain: str
    lang: str
    text: str
    split: str

    def slots(self) -> list[tuple[str, str]]:
        return SLOT_RE.findall(self.text)

    def quota_keys(self) -> list[str]:
        keys = []
        for sigil, name in self.slots():
            if sigil == "!":
                keys.append("neg:" + name)
            elif sigil == "":
                keys.append(_entity_key(*SLOTS[name]))
        return keys


def _entity_key(etype: str, lang: str | None) -> str:
    return f"{etype}/{lang}" if etype in ("PERSON", "ADDRESS") else etype


def templates() -> list[Template]:
    out = []
    for domain, by_lang in TEMPLATES.items():
        for lang, texts in by_lang.items():
            for i, text in enumerate(texts):
                out.append(Template(f"{domain}-{lang}-{i + 1:02d}", domain, lang, text, "dev" if i % 2 == 0 else "test"))
    return out


def quota_keys_all() -> dict[str, int]:
    keys = {_entity_key(t, lang): ENTITY_QUOTA for t, lang in SLOTS.values()}
    keys.update({"neg:" + k: NEGATIVE_QUOTA for k in NEGATIVE_KINDS})
    return keys


class _S2T:
    _cc = None

    @classmethod
    def convert(cls, s: str) -> str:
        if not CJK_RE.search(s):
            return s
        if cls._cc is None:
            import opencc

            cls._cc = opencc.OpenCC("s2t")
        return cls._cc.convert(s)


def render(gen: Gen, tpl: Template, rid: str) -> dict:
    """One record from ``tpl``: the text assembled piece by piece so every span is exact."""
    traditional = tpl.lang != "en" and gen.rng.random() < TRADITIONAL_SHARE
    conv = _S2T.convert if traditional else (lambda s: s)
    pieces: list[tuple[str, dict | None]] = []  # (text, label)
    pos = 0
    for m in SLOT_RE.finditer(tpl.text):
        pieces.append((conv(tpl.text[pos:m.start()]), None))
        sigil, name = m.groups()
        if sigil == "$":
            pieces.append((conv(gen.filler(name)), None))
        elif sigil == "!":
            if name == "common_word":
                word, clause = gen.rng.choice(gen.common_words)
                i = clause.index(word)
                pieces += [(conv(clause[:i]), None), (conv(word), {"kind": name}), (conv(clause[i + len(word):]), None)]
            else:
                pieces.append((getattr(gen, "neg_" + name)(), {"kind": name}))
        else:
            etype, elang = SLOTS[name]
            value, form = getattr(gen, "make_" + name)()
            pieces.append((conv(value), {"type": etype, "lang": elang or tpl.lang, "form": form}))
        pos = m.end()
    pieces.append((conv(tpl.text[pos:]), None))

    text, entities, negatives = "", [], []
    for piece, label in pieces:
        start, text = len(text), text + piece
        if label is None:
            continue
        if "type" in label:
            entities.append({"type": label["type"], "start": start, "end": len(text), "value": piece,
                             "lang": label["lang"], "form": label["form"]})
        else:
            negatives.append({"kind": label["kind"], "start": start, "end": len(text), "value": piece})
    return {"id": rid, "text": text, "entities": entities, "negatives": negatives, "domain": tpl.domain,
            "lang": tpl.lang, "template": tpl.id, "variant": "traditional" if traditional else ("plain" if tpl.lang == "en" else "simplified")}


def _canonical(etype: str, value: str) -> str:
    """The value as a validator reads it: NFKC (full-width folded), separators and prefixes dropped."""
    v = unicodedata.normalize("NFKC", value).upper()
    if etype in ("CN_MOBILE", "CN_LANDLINE"):
        v = re.sub(r"[转轉]\d+$", "", v)
        v = re.sub(r"^(\(\+86\)|\+86|0086)[ -]?", "0" if etype == "CN_LANDLINE" else "", v)
    return re.sub(r"[\s\-()·]", "", v)


VALIDATORS = {
    "CN_RESIDENT_ID": is_valid_id, "CN_MOBILE": is_mobile, "CN_LANDLINE": is_landline, "BANK_CARD": luhn_ok,
    "CN_USCC": is_valid_uscc,
}
# negative kind -> what it must not be
NOT_VALID = {"id_bad_check": is_valid_id, "id_bad_date": is_valid_id, "order_number": is_valid_id,
             "card_bad_luhn": luhn_ok, "uscc_bad_check": is_valid_uscc, "bad_mobile_prefix": is_mobile}


def check_record(rec: dict) -> None:
    """Spans exact and disjoint, every checked entity valid, every checked negative invalid."""
    spans = sorted([(e["start"], e["end"]) for e in rec["entities"]] + [(n["start"], n["end"]) for n in rec["negatives"]])
    for (_, a_end), (b_start, _) in zip(spans, spans[1:]):
        assert a_end <= b_start, rec
    for e in rec["entities"]:
        assert rec["text"][e["start"]:e["end"]] == e["value"] and e["value"] == e["value"].strip(), e
        if e["type"] in VALIDATORS:
            assert VALIDATORS[e["type"]](_canonical(e["type"], e["value"])), e
    for n in rec["negatives"]:
        assert rec["text"][n["start"]:n["end"]] == n["value"], n
        if n["kind"] in NOT_VALID:
            assert not NOT_VALID[n["kind"]](_canonical("", n["value"])), n


def build_split(split: str, seed: int = SEED) -> list[dict]:
    """Records of one split: rounds over its templates until every quota is met."""
    gen = Gen(seed, split)
    pool = [t for t in templates() if t.split == split]
    quotas = quota_keys_all()
    missing = [k for k in quotas if not any(k in t.quota_keys() for t in pool)]
    if missing:
        raise SystemExit(f"the {split} templates have no slot for {missing}: add a template that has one")
    counts: collections.Counter = collections.Counter()
    records: list[dict] = []
    while True:
        todo = [t for t in pool if any(counts[k] < quotas[k] for k in t.quota_keys())]
        if not todo:
            return records
        for t in todo:
            rec = render(gen, t, f"{split}-{len(records):05d}")
            check_record(rec)
            counts.update(t.quota_keys())
            records.append(rec)


def build(seed: int = SEED) -> dict[str, list[dict]]:
    return {split: build_split(split, seed) for split in ("dev", "test")}


def render_jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", type=Path, default=OUT, help="folder for pii_dev.jsonl and pii_test.jsonl")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, records in build(args.seed).items():
        path = args.out / f"pii_{split}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text(render_jsonl(records), encoding="utf-8", newline="\n")
        tmp.replace(path)
        n = collections.Counter(_entity_key(e["type"], e["lang"] if e["type"] in ("PERSON", "ADDRESS") else None)
                                for r in records for e in r["entities"])
        print(f"{path}: {len(records)} records, {sum(n.values())} entities, "
              f"{sum(len(r['negatives']) for r in records)} negatives, {path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
