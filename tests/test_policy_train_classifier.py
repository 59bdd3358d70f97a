"""`aigc policy train-classifier` and :func:`aigc.safety.fit.fit_workspace_classifier`: a workspace's own
moderation classifier, its thresholds chosen by cross-validation under a false-flag budget, its report,
its file (read by every path that reads the shipped one) and its one-line errors.

Made-up data, zh and en: 15 threats (violence), 15 scams (fraud), 40 everyday texts; nothing under
../shared. One e5 fit is shared by the module (e5 embeds the 70 short texts in ~1 s on one core)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from helpers import run_cli

import aigc
from aigc.errors import InvalidInput
from aigc.safety.fit import FitProgress, fit_workspace_classifier
from aigc.safety.moderation import SemanticClassifier, TextClassifier, classifier_at, moderate
from aigc.safety.policy import save_workspace_policy

VIOLENCE = [
    "我知道你住哪，今晚就去把你打到住院", "再敢多嘴我就拿刀捅了你", "明天放学在校门口等着，我要打断你的腿",
    "你全家都别想活着走出这个村子", "我会找人把你的车砸了，再把你揍一顿", "信不信我一拳把你牙打掉",
    "下次见面我直接用棍子敲碎你的头", "老子今晚就去你公司门口堵你，见一次打一次",
    "I know where you live and I will beat you until you can't walk", "Say that again and I'll stab you",
    "Wait outside after class, I'm going to break your legs", "I'll smash your face in with a bat tomorrow",
    "My friends and I will find you and hurt you badly",
    "Next time I see you I'm going to put you in the hospital",
    "I'm coming to your office tonight to beat you senseless",
]
FRAUD = [
    "加我微信，内部渠道低价代开增值税发票", "日结兼职刷单，先垫付一百元，返佣金百分之三十",
    "您的银行卡已被冻结，请点击链接输入密码解冻", "投资虚拟币稳赚不赔，一个月翻十倍，先交会员费",
    "我是公安局的，你涉嫌洗钱，请把存款转到安全账户", "免费领取iPhone，只需支付九块九邮费并提供验证码",
    "低价出售他人身份证和银行卡四件套", "恭喜中奖五万元，请先缴纳个人所得税到指定账户",
    "Your bank account is locked, send us your PIN and card number to unlock it",
    "Work from home: pay a $50 registration fee and earn $500 a day liking posts",
    "Congratulations, you won a lottery! Wire the processing fee to claim your prize",
    "Guaranteed 10x returns in a month, just send bitcoin to this wallet",
    "We sell fake invoices and forged receipts, cheap and fast",
    "This is the tax office: pay the overdue amount in gift cards today or be arrested",
    "Give me the verification code we just texted you so we can refund your order",
]
BENIGN = [
    "这款茶叶包装精美，味道清香", "物流很快，客服也很耐心", "杯子容量刚好，推荐购买",
    "今天天气不错，适合去公园散步", "周末和家人一起包饺子，很开心", "这本书讲的是宋朝的历史，写得很有意思",
    "请问这件衣服有没有大一号的", "会议改到下午三点，请大家准时参加", "孩子今天第一次学会骑自行车",
    "新开的面馆牛肉面很好吃", "发票已经随包裹寄出，请注意查收", "我们的客服工作时间是早九点到晚六点",
    "图书馆周一闭馆，其他时间正常开放", "这部电影的配乐太好听了", "记得多喝水，早点休息",
    "超市的苹果今天打八折", "小区的快递柜在三号楼旁边", "手机电池续航比以前好多了",
    "下周的跑步比赛我报名了五公里", "老师表扬了他的作文", "The tea came in lovely packaging and tastes fresh",
    "Delivery was fast and the support team was patient", "The meeting has moved to 3 pm, please be on time",
    "We went hiking in the hills on Sunday", "Could you send me the invoice for last month's order?",
    "The library is closed on Mondays", "My daughter learned to ride a bike today",
    "This noodle shop serves the best beef soup in town", "Remember to drink water and get some sleep",
    "Apples are twenty percent off at the supermarket today", "The parcel locker is next to building three",
    "The battery life on this phone is much better", "I signed up for the 5k run next week",
    "The teacher praised his essay in class", "Our support hours are 9 am to 6 pm on weekdays",
    "The soundtrack of that film is beautiful", "Please reset your password from the settings page",
    "The museum has a new exhibit on ancient pottery", "Thanks for the birthday card, it made my day",
    "The train to Shanghai leaves at eight",
]
# never trained on; the fraud one is a scam the default policy's terms let through
HELD_FRAUD = "加微信领内部返利，先交押金五百元"
HELD_VIOLENCE = "I will hunt you down and cut you"
HELD_BENIGN = ["这家餐厅的环境很安静，菜也好吃", "The bus was late but the driver was friendly"]
MAX_FALSE = 0.025


def labelled(seed: int = 0) -> tuple[list[str], list[str | None]]:
    rows = [(t, "violence") for t in VIOLENCE] + [(t, "fraud") for t in FRAUD] + [(t, None) for t in BENIGN]
    random.Random(seed).shuffle(rows)
    return [t for t, _ in rows], [lab for _, lab in rows]


def write_csv(path, rows) -> None:
    lines = ["text,label"] + [f'"{t}",{lab or "ok"}' for t, lab in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def fitted():
    texts, labels = labelled()
    seen: list[FitProgress] = []
    clf, report = fit_workspace_classifier(texts, labels, ["fraud", "violence"], max_false=MAX_FALSE,
                                           progress=seen.append)
    return clf, report, seen


def test_it_flags_held_out_texts_of_the_trained_categories_and_passes_held_out_benign_ones(fitted):
    clf, _, _ = fitted
    assert isinstance(clf, SemanticClassifier) and clf.w1 is None and clf.kind == "passage"
    assert clf.scores(HELD_FRAUD)["fraud"] >= 0.5
    assert clf.scores(HELD_VIOLENCE)["violence"] >= 0.5
    for text in HELD_BENIGN:
        assert max(clf.scores(text).values()) < 0.5, text


def test_the_report_keeps_cv_false_flags_within_the_budget(fitted):
    clf, report, seen = fitted
    assert report["overall"]["false_flag_rate"] <= MAX_FALSE
    assert report["benign"] == len(BENIGN) and report["overall"]["positives"] == len(VIOLENCE) + len(FRAUD)
    for cat, n in (("violence", len(VIOLENCE)), ("fraud", len(FRAUD))):
        row = report["categories"][cat]
        assert row["positives"] == n and row["false_flag_rate"] <= MAX_FALSE
        assert row["block_rate"] >= 0.5  # 15 made-up texts a category: CV catches most
    assert clf.meta["report"] == report and clf.meta["operating_point"] == 0.5
    embedding = [p for p in seen if p.stage == "embedding"]
    assert embedding[-1].done == embedding[-1].total == len(BENIGN) + 30 and embedding[-1].rate > 0
    assert "texts/s" in str(embedding[0]) and [p.done for p in seen if p.stage == "cross-validation"] == [1, 2, 3, 4, 5]


def test_save_then_load_scores_the_same(fitted, tmp_path):
    clf, report, _ = fitted
    path = clf.save(tmp_path / "clf.npz")
    again = classifier_at(str(path), None)
    assert isinstance(again, SemanticClassifier) and again.meta["report"] == report
    texts = [HELD_FRAUD, HELD_VIOLENCE, *HELD_BENIGN]
    assert np.array_equal(again.logits(texts), clf.logits(texts))


def test_a_policy_naming_the_file_moderates_with_it(fitted, tmp_path):
    clf, _, _ = fitted
    ws = aigc.open_workspace(tmp_path / "ws")
    assert not moderate(HELD_FRAUD).flagged  # the default policy's terms let it through
    clf.save(ws.root / "mine.npz")
    policy = save_workspace_policy(ws, "extends: default\nversion: 2\nmoderation: {classifier: mine.npz}\n")
    m = moderate(HELD_FRAUD, policy)
    assert m.categories["fraud"] and m.category_scores["fraud"] >= 0.5
    assert not moderate(HELD_BENIGN[0], policy).flagged


def test_the_ngram_model_needs_no_embedder_and_gets_cv_thresholds_too(tmp_path):
    rng = random.Random(0)
    bad = ["加我微信领取内部返利名额", "内部渠道低价代开发票", "日结兼职点赞返佣金"]
    good = ["这款茶叶包装精美", "物流很快，客服耐心", "杯子容量刚好，推荐购买"]
    texts = [f"{rng.choice(bad)}{i}" for i in range(30)] + [f"{rng.choice(good)}{i}" for i in range(40)]
    labels = ["fraud"] * 30 + [None] * 40
    clf, report = fit_workspace_classifier(texts, labels, ["fraud"], model="ngram", max_false=MAX_FALSE)
    assert isinstance(clf, TextClassifier) and report["overall"]["false_flag_rate"] <= MAX_FALSE
    assert clf.scores("内部渠道低价代开发票，欢迎咨询")["fraud"] >= 0.5
    assert clf.scores("杯子容量刚好，物流很快")["fraud"] < 0.5
    again = classifier_at(str(clf.save(tmp_path / "ngram.npz")), None)
    assert type(again) is TextClassifier and again.scores(HELD_FRAUD) == clf.scores(HELD_FRAUD)


FEW = [("威胁", "violence")] * 3 + [("诈骗", "fraud")] * 6 + [("你好", None)] * 6
BAD_INPUTS = {
    "too few positives": (FEW, {}, r"too few positive texts: 'violence' has 3; each category needs at least 5"),
    "no benign rows": ([("威胁", "violence")] * 6, {}, r"no benign texts \(texts with no label\) among the 6"),
    "fewer rows than folds": ([("威胁", "violence"), ("你好", None)], {}, r"2 texts are fewer than the 5 "
                              r"cross-validation folds"),
    "unknown category": ([("威胁", "spam")] * 6 + [("你好", None)] * 6, {}, r"labels spam are not among"),
    "unknown model": (FEW, {"model": "bert"}, r"model 'bert' is not one of e5, ngram"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_one_clear_error(case):
    rows, kwargs, message = BAD_INPUTS[case]
    with pytest.raises(InvalidInput, match=message):
        fit_workspace_classifier([t for t, _ in rows], [lab for _, lab in rows], ["violence", "fraud"], **kwargs)


def test_cli_trains_reports_and_says_how_to_turn_it_on(tmp_path):
    texts, labels = labelled(1)
    write_csv(tmp_path / "data.csv", zip(texts, labels))
    ws = tmp_path / "ws"
    r = run_cli("policy", "train-classifier", tmp_path / "data.csv", "-w", ws, "--out", "mine.npz",
                "--max-false", "0.05")
    assert r.exit_code == 0, r.output
    table = r.stdout.splitlines()
    assert table[0].split() == ["category", "positives", "CV", "block", "CV", "false", "flag"]
    fraud = next(line.split() for line in table if line.startswith("fraud "))
    overall = next(line.split() for line in table if line.startswith("all "))
    assert fraud[1] == "15" and overall[1] == "30" and float(overall[3]) <= 0.05
    assert "embedding: 70/70 texts" in r.stderr and "{classifier: mine.npz}" in r.stderr
    clf = classifier_at(str(ws / "mine.npz"), None)
    assert clf.meta["report"]["max_false"] == 0.05 and clf.scores(HELD_FRAUD)["fraud"] >= 0.5


@pytest.mark.parametrize("rows,args,message", [
    (FEW, (), "'violence' has 3"),
    (FEW, ("--model", "bert"), "model 'bert' is not one of e5, ngram"),
])
def test_cli_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, rows, args, message):
    write_csv(tmp_path / "data.csv", rows)
    ws = tmp_path / "ws"
    r = run_cli("policy", "train-classifier", tmp_path / "data.csv", "-w", ws, *args)
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not (ws / "moderation_classifier.npz").exists() and not list(ws.glob("*.npz"))


def test_a_long_flagged_text_is_learned_by_its_witness_piece_not_every_piece():
    from aigc.safety.fit import _regression

    rng = np.random.default_rng(0)
    # everyday text in two kinds, (0, 0) and (0, 3); the harm at (3, 0)
    benign = np.vstack([rng.normal(0, 0.3, (20, 2)), rng.normal((0, 3), 0.3, (20, 2))])
    short = rng.normal((3, 0), 0.3, (10, 2))
    # each long flagged text: three everyday pieces like (0, 3) and the one that is the harm
    bags = [np.vstack([rng.normal((0, 3), 0.3, (3, 2)), rng.normal((3, 0), 0.3, (1, 2))]) for _ in range(5)]
    z = np.vstack([benign, short, *bags])
    y = np.r_[np.zeros(40, bool), np.ones(10 + 4 * 5, bool)]
    bag = np.r_[np.full(50, -1), np.repeat(np.arange(5), 4)]
    witness = _regression(z, y, 1.0, bag)
    every = _regression(z, y, 1.0, None)  # every piece a positive
    assert witness.decision_function([[0, 3]])[0] < min(0, every.decision_function([[0, 3]])[0] - 1)
    assert witness.decision_function([[3, 0]])[0] > 0


def test_long_flagged_texts_train_beside_everyday_paragraphs():
    zh = [t for t in BENIGN if not t.isascii()]
    texts, labels = labelled(2)
    texts += ["。".join(zh * 3) + "。" + t for t in VIOLENCE[:5]]  # ~600 characters of everyday text, then a threat
    labels += ["violence"] * 5
    for k in range(8):  # everyday paragraphs of 12 sentences
        texts.append("。".join(random.Random(k).sample(zh, 12)))
        labels.append(None)
    clf, report = fit_workspace_classifier(texts, labels, ["violence", "fraud"], max_false=MAX_FALSE)
    assert report["categories"]["violence"]["positives"] == 20 and report["overall"]["false_flag_rate"] <= MAX_FALSE
    assert clf.scores(HELD_VIOLENCE)["violence"] >= 0.5
    assert clf.scores("。".join(zh[::-1][:12]))["violence"] < 0.5  # another everyday paragraph
