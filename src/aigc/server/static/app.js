// aigc-studio web page: plain JavaScript, no framework, no CDN (works offline).
"use strict";

const I18N = {
  en: {
    "tab.play": "Playground", "tab.runs": "Runs", "tab.datasets": "Datasets", "tab.log": "Log",
    "key.set": "API key", "key.prompt": "API key for this server (kept in this browser only):",
    "key.needed": "This server needs an API key: click “API key”.",
    "play.run": "Run", "play.compare": "Compare with", "play.none": "(none)", "play.temperature": "Temperature", "play.rerank": "Best of",
    "play.max_tokens": "Max tokens", "play.class": "Class", "play.count": "Images", "play.steps": "Steps",
    "play.seed": "Seed", "play.prompt": "Prompt (the run continues it)", "play.generate": "Generate",
    "play.stop": "Stop", "play.any": "(any)", "play.saved": "Thanks, saved.", "play.stopped": "stopped",
    "play.no_runs": "No trained runs yet: train one with `aigc train`.",
    "play.stats": "{tokens} tokens · {tps} tok/s · first token {ttft} ms",
    "col.name": "Name", "col.family": "Family", "col.dataset": "Dataset", "col.status": "Status", "col.step": "Step",
    "col.val": "Best val loss", "col.modality": "Modality", "col.created": "Created", "col.updated": "Updated", "col.time": "Time",
    "col.run": "Run", "col.prompt": "Prompt", "col.output": "Output", "log.refresh": "Refresh",
    "run.curve": "Loss curve", "run.eval": "Evaluation", "run.samples": "Samples during training", "run.train": "train",
    "run.val": "validation", "ds.card": "Dataset card", "ds.preview": "Preview",
    "run.step": "step", "run.loss": "loss", "run.loss_log": "loss (log scale)", "run.no_curve": "No losses logged yet.",
    "run.no_eval": "Not evaluated yet: run `aigc eval {name}`.", "run.eval_samples": "samples drawn by the evaluation",
    // metric names of eval.json; a key not listed here is shown as it is written
    "m.overview": "Overview", "m.metrics": "Metrics", "m.run": "run", "m.modality": "modality", "m.split": "split", "m.created_at": "evaluated at",
    "m.sampling": "Sampling", "m.temperature": "temperature", "m.top_p": "top_p", "m.seed": "seed",
    "m.likelihood": "Likelihood", "m.nll_per_token": "NLL per token", "m.perplexity": "perplexity (per token)",
    "m.bits_per_char": "bits per character", "m.tokens": "tokens", "m.chars": "characters",
    "m.continuation": "Prompted continuations", "m.n": "n", "m.bleu": "BLEU", "m.chrf": "chrF", "m.example": "Example",
    "m.prompt": "prompt", "m.reference": "reference", "m.generated": "generated",
    "m.diversity": "Diversity", "m.n_samples": "samples", "m.distinct_1": "distinct-1", "m.distinct_2": "distinct-2",
    "m.distinct_3": "distinct-3", "m.self_bleu": "self-BLEU",
    "m.memorization": "Memorization", "m.spans": "50-char spans", "m.memorized": "memorized", "m.rate": "rate",
    "m.by_condition": "Per condition", "m.n_test": "test records", "m.sample": "sample",
    "m.conditional_accuracy": "conditional accuracy", "m.accuracy": "accuracy", "m.ceiling": "ceiling",
    "m.classifier": "Classifier", "m.features": "features", "m.test_accuracy": "test accuracy", "m.trained_now": "trained now",
    "m.fid": "FID", "m.kid_mean": "KID", "m.kid_std": "KID std", "m.kid_subset_size": "KID subset size",
    "m.precision": "precision", "m.recall": "recall", "m.k": "k (nearest neighbours)", "m.n_real": "real images",
    "m.n_fake": "generated images", "m.real_accuracy": "classifier accuracy on real images",
    "m.fid_floor_train_vs_test": "FID floor (train vs test)", "m.seconds_per_1000_samples": "seconds per 1,000 samples",
    "m.psnr": "reconstruction PSNR (dB)", "m.ssim": "reconstruction SSIM", "m.test_loss": "test loss",
    "m.codebook_usage": "codebook usage", "m.per_class": "Per class",
    "tab.arena": "Arena", "arena.run1": "Run 1", "arena.run2": "Run 2", "arena.random": "(random)",
    "arena.hint": "The two answers are shown as A and B in a random order: which run wrote which is shown after you vote.",
    "arena.prompt": "Prompt (both runs continue it)", "arena.ask": "Ask both", "arena.a_better": "A is better",
    "arena.b_better": "B is better", "arena.tie": "Tie", "arena.board": "Leaderboard", "arena.voted": "Vote saved.",
    "arena.need_two": "The arena needs two different text runs: pick them, or train another run.",
    "arena.no_votes": "No votes yet.", "col.rating": "Rating", "col.wins": "Wins", "col.losses": "Losses",
    "col.ties": "Ties", "col.games": "Games",
    "tab.policy": "Policy", "tab.synth": "Synthesize", "synth.n": "Rows", "synth.format": "Format",
    "synth.target": "Target column (utility)", "synth.start": "Synthesize", "synth.jobs": "Jobs", "synth.files": "Files",
    "synth.none": "(none)", "synth.any": "(any)", "synth.no_runs": "No finished run to synthesize from yet.",
    "synth.progress": "{status}: {done} / {total}", "synth.data": "data", "synth.report": "report",
    "synth.quality": "Quality {q} (a real holdout: {ref})", "synth.utility": "TSTR AUC {auc} / macro-F1 {f1} (real: {rauc} / {rf1})",
    "synth.privacy": "Exact copies {copies} · closer to train {closer} (0.5 = none)", "safety.label": "AI-generated", "safety.blocked": "Stopped by the safety policy",
    "safety.redacted": "Personal information redacted: {what}", "safety.flagged": "Flagged: {what}",
    "safety.copy": "Longest span copied from the training text: {n} characters",
    "safety.copy_over": "Longest span copied from the training text: {n} characters (over the threshold of {t})",
    "policy.version": "Policy {version} ({source})", "policy.save": "Save policy", "policy.saved": "Saved: policy {version}.",
    "policy.test": "Check a text", "policy.test_hint": "Text to check against the policy",
    "policy.ok": "Allowed.", "policy.flagged": "Flagged: {what}", "m.safety": "Safety",
    "m.blocked_share": "blocked share", "m.samples_with_pii": "samples with PII", "m.over_threshold": "copied over threshold",

    "tab.copy": "Copy", "copy.product": "Product", "copy.add_attr": "Add attribute", "copy.key": "attribute",
    "copy.value": "value", "copy.remove": "Remove", "copy.load_file": "Load products (JSON, JSONL or CSV)",
    "copy.loaded": "{n} products loaded: pick one.", "copy.bad_file": "{name}: {why}", "copy.channel": "Channel",
    "copy.ch.title": "Title", "copy.ch.detail": "Detail page", "copy.ch.social": "Social post", "copy.ch.ad": "Ad line",
    "copy.tone": "Tone", "copy.audience": "Audience", "copy.n": "Candidates", "copy.rules": "Brand rules",
    "copy.rules_save": "Save rules", "copy.rules_saved": "Rules saved.", "copy.rules_json": "The rules are not JSON: {why}",
    "copy.generate": "Write copy", "copy.working": "Writing… (the first call loads the model)",
    "copy.no_attrs": "Give the product at least one attribute with a value.",
    "copy.rank": "#{rank}", "copy.passed": "passed", "copy.failed": "needs work",
    "copy.coverage": "Coverage {score}", "copy.missing": "missing: {keys}", "copy.invented": "Invented values: {what}",
    "copy.violations": "Rule violations", "copy.length": "{n} characters (allowed {lo}–{hi})",
    "copy.safety": "Safety: {what}", "copy.repaired": "Spec sentence added for: {keys}",
    "copy.copy": "Copy", "copy.copied": "Copied, with the AI label.", "copy.export": "Export",
    "copy.choose": "Choose", "copy.chosen": "Chosen: thanks, saved.", "copy.none": "No candidate came back.",
    "copy.label": "[AI-generated]",
    "tab.assist": "Assistant", "assist.kb": "Knowledge base", "assist.kb_new": "New knowledge base (for an upload)",
    "assist.upload": "Add a document", "assist.uploading": "Adding {name}…",
    "assist.uploaded": "{name} added: {docs} documents, {chunks} chunks.", "assist.no_kb": "No knowledge base yet: add a document.",
    "assist.need_kb": "Pick a knowledge base or type a new name first.", "assist.ask_hint": "Ask a question",
    "assist.send": "Send", "assist.new": "New conversation", "assist.you": "You", "assist.bot": "Assistant",
    "assist.thinking": "…", "assist.sources": "Sources", "assist.did_you_mean": "Did you mean:",
    "assist.handoff": "This conversation was passed to a person: it is in the hand-off queue.",
    "assist.confidence": "confidence {c}", "assist.queue": "Hand-off queue", "assist.reason": "Reason",
    "assist.question": "Question", "assist.close": "Close", "assist.no_handoffs": "No open hand-offs.",
    "assist.chunk": "Chunk {id} · {doc}", "assist.hide": "Hide",
    "tab.monitor": "Monitor", "mon.stream": "Stream", "mon.topic": "Topic", "mon.period": "Period",
    "mon.period_stream": "as the stream", "mon.hour": "hour", "mon.day": "day", "mon.all": "All posts", "mon.alerts": "Alerts",
    "mon.no_streams": "No monitor streams yet: create one with `aigc monitor set NAME --model MODEL`.",
    "mon.no_posts": "No posts in this stream yet.", "mon.no_alerts": "No alerts.", "mon.loading": "Loading…",
    "mon.status": "{items} posts · {alerts} alerts", "mon.posts_axis": "posts", "mon.share_axis": "negative share",
    "mon.alert": "alert", "mon.point": "{when}: {n} posts, {share} negative", "mon.vs": "{share} negative, expected {expected}",
    "mon.volume": "{n} posts", "mon.keywords": "Keywords", "mon.change": "Change point: {when}", "mon.samples": "Sample posts",
    "mon.resolved": "{rule} on {topic} resolved on {when} ({share} negative)", "mon.show_posts": "Show posts",
    "mon.posts": "Posts · {topic} · {when} ({n})", "mon.no_posts_period": "No posts in this period.",
    "mon.heat": "Negative share by topic", "mon.time": "Time (UTC)", "mon.label": "Label", "mon.prob": "Probability",
    "mon.text": "Text",
    "tab.audio": "Audio", "audio.count": "Clips", "audio.vocoder": "Vocoder", "audio.auto": "auto (newest vocoder, else Griffin-Lim)",
    "audio.no_runs": "No audio runs yet: train an image family on an audio dataset (`aigc train DATASET --family gan`).",
    "audio.working": "Generating…", "audio.done": "{n} clips · {sr} Hz · inverter {inverter} · {s} s",
    "audio.spectrogram": "mel spectrogram",
  },
  zh: {
    "tab.play": "试玩", "tab.runs": "训练任务", "tab.datasets": "数据集", "tab.log": "生成记录",
    "key.set": "API 密钥", "key.prompt": "本服务器的 API 密钥（只保存在此浏览器中）：",
    "key.needed": "此服务器需要 API 密钥：请点击“API 密钥”。",
    "play.run": "模型", "play.compare": "对比模型", "play.none": "（无）", "play.temperature": "温度", "play.rerank": "候选择优",
    "play.max_tokens": "最多生成词元", "play.class": "类别", "play.count": "图片数", "play.steps": "步数",
    "play.seed": "随机种子", "play.prompt": "提示词（模型将续写）", "play.generate": "生成",
    "play.stop": "停止", "play.any": "（任意）", "play.saved": "已保存，谢谢。", "play.stopped": "已停止",
    "play.no_runs": "还没有训练好的模型：请先运行 `aigc train`。",
    "play.stats": "{tokens} 个词元 · 每秒 {tps} 个 · 首词元 {ttft} 毫秒",
    "col.name": "名称", "col.family": "模型族", "col.dataset": "数据集", "col.status": "状态", "col.step": "步数",
    "col.val": "最佳验证损失", "col.modality": "模态", "col.created": "创建时间", "col.updated": "更新时间", "col.time": "时间",
    "col.run": "模型", "col.prompt": "提示词", "col.output": "输出", "log.refresh": "刷新",
    "run.curve": "损失曲线", "run.eval": "评估", "run.samples": "训练过程中的样例", "run.train": "训练",
    "run.val": "验证", "ds.card": "数据集卡片", "ds.preview": "预览",
    "run.step": "步数", "run.loss": "损失", "run.loss_log": "损失（对数坐标）", "run.no_curve": "还没有记录损失。",
    "run.no_eval": "尚未评估：请运行 `aigc eval {name}`。", "run.eval_samples": "评估时生成的样例",
    "m.overview": "概览", "m.metrics": "指标", "m.run": "模型", "m.modality": "模态", "m.split": "数据划分", "m.created_at": "评估时间",
    "m.sampling": "采样参数", "m.temperature": "温度", "m.top_p": "top_p", "m.seed": "随机种子",
    "m.likelihood": "似然", "m.nll_per_token": "每词元负对数似然", "m.perplexity": "困惑度（每词元）",
    "m.bits_per_char": "每字符比特数", "m.tokens": "词元数", "m.chars": "字符数",
    "m.continuation": "按提示续写", "m.n": "数量", "m.bleu": "BLEU", "m.chrf": "chrF", "m.example": "示例",
    "m.prompt": "提示词", "m.reference": "参考文本", "m.generated": "生成文本",
    "m.diversity": "多样性", "m.n_samples": "样本数", "m.distinct_1": "distinct-1", "m.distinct_2": "distinct-2",
    "m.distinct_3": "distinct-3", "m.self_bleu": "self-BLEU",
    "m.memorization": "记忆（复制训练文本）", "m.spans": "50 字符片段数", "m.memorized": "出现在训练集中的片段", "m.rate": "比例",
    "m.by_condition": "按条件", "m.n_test": "测试记录数", "m.sample": "样例",
    "m.conditional_accuracy": "条件准确率", "m.accuracy": "准确率", "m.ceiling": "上限",
    "m.classifier": "分类器", "m.features": "特征", "m.test_accuracy": "测试准确率", "m.trained_now": "本次训练",
    "m.fid": "FID", "m.kid_mean": "KID", "m.kid_std": "KID 标准差", "m.kid_subset_size": "KID 子集大小",
    "m.precision": "精确率（precision）", "m.recall": "召回率（recall）", "m.k": "k（近邻数）", "m.n_real": "真实图片数",
    "m.n_fake": "生成图片数", "m.real_accuracy": "分类器在真实图片上的准确率",
    "m.fid_floor_train_vs_test": "FID 下限（训练集对测试集）", "m.seconds_per_1000_samples": "每千张耗时（秒）",
    "m.psnr": "重建 PSNR（dB）", "m.ssim": "重建 SSIM", "m.test_loss": "测试损失",
    "m.codebook_usage": "码本使用率", "m.per_class": "按类别",
    "tab.arena": "竞技场", "arena.run1": "模型 1", "arena.run2": "模型 2", "arena.random": "（随机）",
    "arena.hint": "两个回答以 A、B 随机排列：投票之后才显示各由哪个模型生成。",
    "arena.prompt": "提示词（两个模型都将续写）", "arena.ask": "同时提问", "arena.a_better": "A 更好",
    "arena.b_better": "B 更好", "arena.tie": "平局", "arena.board": "排行榜", "arena.voted": "投票已保存。",
    "arena.need_two": "竞技场需要两个不同的文本模型：请选择，或再训练一个。",
    "arena.no_votes": "还没有投票。", "col.rating": "评分", "col.wins": "胜", "col.losses": "负",
    "col.ties": "平", "col.games": "场次",
    "tab.policy": "安全策略", "tab.synth": "数据合成", "synth.n": "行数", "synth.format": "格式",
    "synth.target": "目标列（效用评估）", "synth.start": "开始合成", "synth.jobs": "任务", "synth.files": "文件",
    "synth.none": "（无）", "synth.any": "（任意）", "synth.no_runs": "还没有可用于合成的已完成运行。",
    "synth.progress": "{status}：{done} / {total}", "synth.data": "数据", "synth.report": "报告",
    "synth.quality": "质量 {q}（真实留出集：{ref}）", "synth.utility": "TSTR AUC {auc} / 宏 F1 {f1}（真实：{rauc} / {rf1}）",
    "synth.privacy": "完全复制 {copies} · 更接近训练集 {closer}（0.5 = 无）", "safety.label": "人工智能生成", "safety.blocked": "已被安全策略拦截",
    "safety.redacted": "已脱敏个人信息：{what}", "safety.flagged": "已标记：{what}",
    "safety.copy": "与训练文本相同的最长片段：{n} 个字符",
    "safety.copy_over": "与训练文本相同的最长片段：{n} 个字符（超过阈值 {t}）",
    "policy.version": "策略 {version}（{source}）", "policy.save": "保存策略", "policy.saved": "已保存：策略 {version}。",
    "policy.test": "检测文本", "policy.test_hint": "要按策略检测的文本",
    "policy.ok": "通过。", "policy.flagged": "已标记：{what}", "m.safety": "安全",
    "m.blocked_share": "拦截比例", "m.samples_with_pii": "含个人信息的样本比例", "m.over_threshold": "超过阈值的复制比例",

    "tab.copy": "文案", "copy.product": "商品", "copy.add_attr": "添加属性", "copy.key": "属性",
    "copy.value": "值", "copy.remove": "删除", "copy.load_file": "载入商品文件（JSON、JSONL 或 CSV）",
    "copy.loaded": "已载入 {n} 个商品：请选择一个。", "copy.bad_file": "{name}：{why}", "copy.channel": "渠道",
    "copy.ch.title": "标题", "copy.ch.detail": "详情页", "copy.ch.social": "社交媒体", "copy.ch.ad": "广告语",
    "copy.tone": "语气", "copy.audience": "目标人群", "copy.n": "候选数", "copy.rules": "品牌规则",
    "copy.rules_save": "保存规则", "copy.rules_saved": "规则已保存。", "copy.rules_json": "规则不是合法的 JSON：{why}",
    "copy.generate": "生成文案", "copy.working": "生成中……（首次调用需要加载模型）",
    "copy.no_attrs": "请至少为商品填写一项有值的属性。",
    "copy.rank": "第 {rank} 名", "copy.passed": "通过", "copy.failed": "需修改",
    "copy.coverage": "属性覆盖 {score}", "copy.missing": "缺少：{keys}", "copy.invented": "编造的属性值：{what}",
    "copy.violations": "违反规则", "copy.length": "{n} 个字符（允许 {lo}–{hi}）",
    "copy.safety": "安全：{what}", "copy.repaired": "已补充规格句：{keys}",
    "copy.copy": "复制", "copy.copied": "已复制（含 AI 标识）。", "copy.export": "导出",
    "copy.choose": "选用", "copy.chosen": "已选用，谢谢。", "copy.none": "没有返回候选文案。",
    "copy.label": "【AI生成】",
    "tab.assist": "客服助手", "assist.kb": "知识库", "assist.kb_new": "新建知识库（上传时使用）",
    "assist.upload": "添加文档", "assist.uploading": "正在添加 {name}……",
    "assist.uploaded": "已添加 {name}：共 {docs} 个文档、{chunks} 个片段。", "assist.no_kb": "还没有知识库：请先添加文档。",
    "assist.need_kb": "请先选择知识库或填写新知识库名称。", "assist.ask_hint": "请输入问题",
    "assist.send": "发送", "assist.new": "新对话", "assist.you": "您", "assist.bot": "助手",
    "assist.thinking": "……", "assist.sources": "来源", "assist.did_you_mean": "您是不是想问：",
    "assist.handoff": "已转接人工客服：此对话已进入人工队列。",
    "assist.confidence": "置信度 {c}", "assist.queue": "人工队列", "assist.reason": "原因",
    "assist.question": "问题", "assist.close": "关闭", "assist.no_handoffs": "没有待处理的人工转接。",
    "assist.chunk": "片段 {id} · {doc}", "assist.hide": "收起",
    "tab.monitor": "舆情监测", "mon.stream": "数据流", "mon.topic": "话题", "mon.period": "时段",
    "mon.period_stream": "按数据流设置", "mon.hour": "小时", "mon.day": "天", "mon.all": "全部帖子", "mon.alerts": "预警",
    "mon.no_streams": "还没有监测数据流：请用 `aigc monitor set 名称 --model 模型` 创建。",
    "mon.no_posts": "此数据流还没有帖子。", "mon.no_alerts": "没有预警。", "mon.loading": "加载中……",
    "mon.status": "{items} 条帖子 · {alerts} 条预警", "mon.posts_axis": "帖子数", "mon.share_axis": "负面占比",
    "mon.alert": "预警", "mon.point": "{when}：{n} 条，负面 {share}", "mon.vs": "负面 {share}，预期 {expected}",
    "mon.volume": "{n} 条", "mon.keywords": "关键词", "mon.change": "变化点：{when}", "mon.samples": "示例帖子",
    "mon.resolved": "{topic} 的 {rule} 预警已于 {when} 恢复（负面 {share}）", "mon.show_posts": "查看帖子",
    "mon.posts": "帖子 · {topic} · {when}（{n} 条）", "mon.no_posts_period": "此时段没有帖子。",
    "mon.heat": "各话题负面占比", "mon.time": "时间（UTC）", "mon.label": "标签", "mon.prob": "概率",
    "mon.text": "内容",
    "tab.audio": "音频", "audio.count": "片段数", "audio.vocoder": "声码器", "audio.auto": "自动（最新的声码器，否则 Griffin-Lim）",
    "audio.no_runs": "还没有音频模型：请在音频数据集上训练图像模型族（`aigc train 数据集 --family gan`）。",
    "audio.working": "生成中……", "audio.done": "{n} 个片段 · {sr} Hz · 逆变换 {inverter} · {s} 秒",
    "audio.spectrogram": "梅尔频谱图",
  },
};

let lang = localStorage.getItem("aigc.lang") || ((navigator.language || "en").startsWith("zh") ? "zh" : "en");
const $ = (sel) => document.querySelector(sel);
const t = (key, vars = {}) => (I18N[lang][key] || I18N.en[key] || key).replace(/\{(\w+)\}/g, (_, k) => vars[k]);
let runs = [];
let controllers = [];

function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
  $("#lang").textContent = lang === "zh" ? "English" : "中文";
}

function banner(text) {
  const el = $("#banner");
  el.textContent = text || "";
  el.hidden = !text;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const key = localStorage.getItem("aigc.key");
  if (key) headers.Authorization = "Bearer " + key;
  if (options.body && typeof options.body !== "string" && !(options.body instanceof Blob)) {  // a Blob: file bytes
    headers["Content-Type"] = "application/json";
    options = Object.assign({}, options, { body: JSON.stringify(options.body) });
  }
  const res = await fetch(path, Object.assign({}, options, { headers }));
  if (res.status === 401) banner(t("key.needed"));
  if (!res.ok) {
    let message = res.status + " " + res.statusText;
    try { message = (await res.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return res;
}

async function imageUrl(path) {  // through fetch, so the API key goes along
  const res = await api(path);
  return URL.createObjectURL(await res.blob());
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// -- playground ---------------------------------------------------------------------------------

async function loadRuns() {
  runs = (await (await api("/api/runs")).json()).runs.filter((r) => r.servable && r.modality !== "audio");
  const select = $("#run-select"), compare = $("#compare-select");
  select.replaceChildren(...runs.map((r) => el("option", { value: r.name }, `${r.name} (${r.family})`)));
  compare.replaceChildren(el("option", { value: "" }, t("play.none")),
    ...runs.filter((r) => r.modality === "text").map((r) => el("option", { value: r.name }, r.name)));
  if (!runs.length) banner(t("play.no_runs"));
  onRunChange();
}

function currentRun() { return runs.find((r) => r.name === $("#run-select").value); }

function onRunChange() {
  const run = currentRun();
  const image = run && run.modality === "image";
  $("#text-opts").hidden = image;
  $("#image-opts").hidden = !image;
  $("#prompt").hidden = image;
  $("#compare-select").parentElement.hidden = image;
  const box = $("#cond-box");
  box.replaceChildren();
  if (!run) return;
  if (image) {
    $("#class-select").replaceChildren(el("option", { value: "" }, t("play.any")),
      ...run.classes.map((c) => el("option", { value: c }, c)));
    $("#steps-label").hidden = run.family !== "diffusion";
    return;
  }
  conditionFields(box, run.conditions || {});
}

// A field per condition column in `box`: a menu, or for a long-tailed column a search field.
function conditionFields(box, columns) {
  box.replaceChildren();
  Object.entries(columns).forEach(([col, values], i) => {
    let field;
    if (values.length > MAX_MENU_VALUES) {
      // A long-tailed column (authors, SKUs) as a menu of thousands is unusable: type to search.
      const list = el("datalist", { id: `${box.id}-values-${i}` }, ...values.map((v) => el("option", { value: v })));
      field = el("input", { "data-cond": col, list: list.id, placeholder: t("play.any"), autocomplete: "off" });
      box.append(list);
    } else {
      field = el("select", { "data-cond": col }, el("option", { value: "" }, t("play.any")),
        ...values.map((v) => el("option", { value: v }, v)));
    }
    box.append(el("label", {}, col, field));
  });
}

const MAX_MENU_VALUES = 50;

function conditions(box = "#cond-box") {
  const cond = {};
  document.querySelectorAll(`${box} [data-cond]`).forEach((s) => { if (s.value) cond[s.dataset.cond] = s.value; });
  return cond;
}

function seedValue() { const v = $("#seed").value; return v === "" ? undefined : Number(v); }

function rateBox(index, getId) {
  const status = el("span", { class: "muted", id: `feedback-status-${index}` });
  const vote = async (rating, button) => {
    try {
      await api("/api/feedback", { method: "POST", body: { generation_id: getId(), rating } });
      button.classList.add("voted");
      status.textContent = t("play.saved");
    } catch (e) { status.textContent = e.message; }
  };
  const up = el("button", { id: `thumb-up-${index}`, disabled: "", title: "👍" }, "👍");
  const down = el("button", { id: `thumb-down-${index}`, disabled: "", title: "👎" }, "👎");
  up.addEventListener("click", () => vote("up", up));
  down.addEventListener("click", () => vote("down", down));
  return { node: el("div", { class: "rate" }, up, down, status), enable() { up.disabled = false; down.disabled = false; } };
}

function statsLine(msg) {  // a generation's final message, as one line
  const seconds = Math.max(1e-9, msg.eval_duration / 1e9);
  return t("play.stats", { tokens: msg.eval_count, tps: (msg.eval_count / seconds).toFixed(0),
                           ttft: msg.ttft_ms === null ? "-" : msg.ttft_ms.toFixed(0) });
}

function safetyView(msg, index) {  // what the safety layer decided on sample 0 of a final message
  const box = el("div", { class: "safety", id: `safety-${index}` });
  if (msg.aigc_label) box.append(el("span", { class: "badge", title: JSON.stringify(msg.aigc_label) }, t("safety.label")));
  const v = (msg.safety || [])[0];
  if (!v) return box;
  if (v.blocked) box.append(el("div", { class: "flag blocked" }, t("safety.blocked") +
    (v.categories.length ? ` (${v.categories.join(", ")})` : "")));
  const ents = Object.entries(v.entities || {});
  if (ents.length) box.append(el("div", { class: "flag" }, t("safety.redacted", { what: ents.map(([k, n]) => `${k} ×${n}`).join(", ") })));
  if (!v.blocked && v.categories && v.categories.length) box.append(el("div", { class: "flag" }, t("safety.flagged", { what: v.categories.join(", ") })));
  if (v.copy) box.append(el("div", { class: v.copy_flagged ? "flag" : "muted" },
    t(v.copy_flagged ? "safety.copy_over" : "safety.copy", { n: v.copy.length, t: v.copy.threshold })));
  return box;
}

async function streamText(model, index, card) {
  const prompt = $("#prompt").value;
  const out = el("div", { class: "output", id: `output-${index}` }, el("span", { class: "prompt" }, prompt));
  let generationId = null;
  const rate = rateBox(index, () => generationId);
  const stats = el("div", { class: "muted", id: `stats-${index}` });
  card.append(el("h3", {}, model), out, stats, rate.node);
  const controller = new AbortController();
  controllers.push(controller);
  const rerank = Math.max(1, Math.round(Number($("#rerank").value) || 1));
  const body = {
    model, prompt, cond: conditions(), stream: rerank === 1,
    options: { temperature: Number($("#temperature").value), top_p: Number($("#top-p").value),
               num_predict: Number($("#max-tokens").value), seed: seedValue() },
  };
  if (rerank > 1) body.rerank = rerank;  // the judge picks among whole candidates: no streaming
  const showStats = (msg) => { stats.textContent = statsLine(msg); };
  try {
    const res = await api("/api/generate", { method: "POST", body, signal: controller.signal });
    if (rerank > 1) {
      const msg = await res.json();
      out.append(msg.response);  // text, never markup
      generationId = msg.id;
      showStats(msg);
      card.append(safetyView(msg, index));
      rate.enable();
      return;
    }
    generationId = res.headers.get("X-Generation-Id");
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (!line.trim()) continue;
        const msg = JSON.parse(line);
        if (msg.error) throw new Error(msg.error);
        if (!msg.done) out.append(msg.response);
        else {
          generationId = msg.id;
          showStats(msg);
          card.append(safetyView(msg, index));
        }
      }
    }
    rate.enable();
  } catch (e) {
    stats.textContent = e.name === "AbortError" ? t("play.stopped") : e.message;
    if (e.name === "AbortError" && generationId) rate.enable();
  }
}

async function generateImages(run, card) {
  const body = { model: run.name, n: Number($("#image-n").value), response_format: "b64_json", seed: seedValue() };
  if ($("#class-select").value) body.label = $("#class-select").value;
  if (run.family === "diffusion") body.steps = Number($("#steps").value);
  let generationId = null;
  const rate = rateBox(0, () => generationId);
  const grid = el("div", { class: "grid", id: "image-grid" });
  const stats = el("div", { class: "muted", id: "stats-0" });
  card.append(el("h3", {}, run.name), grid, stats, rate.node);
  const started = performance.now();
  try {
    const data = await (await api("/v1/images/generations", { method: "POST", body })).json();
    generationId = data.id;
    grid.replaceChildren(...data.data.map((d) => el("img", { src: "data:image/png;base64," + d.b64_json, alt: data.label || "" })));
    stats.textContent = `${data.data.length} × ${run.image_size}px · ${((performance.now() - started) / 1000).toFixed(1)} s`;
    rate.enable();
  } catch (e) { stats.textContent = e.message; }
}

async function generate() {
  const run = currentRun();
  if (!run) return;
  banner("");
  const outputs = $("#outputs");
  outputs.replaceChildren();
  $("#generate").disabled = true;
  $("#stop").disabled = false;
  controllers = [];
  const jobs = [];
  if (run.modality === "image") {
    const card = el("div", { class: "card" });
    outputs.append(card);
    jobs.push(generateImages(run, card));
  } else {
    const models = [run.name];
    if ($("#compare-select").value) models.push($("#compare-select").value);
    models.forEach((m, i) => { const card = el("div", { class: "card" }); outputs.append(card); jobs.push(streamText(m, i, card)); });
  }
  await Promise.allSettled(jobs);
  $("#generate").disabled = false;
  $("#stop").disabled = true;
}

// -- runs, datasets, log ----------------------------------------------------------------------------

// -- run page: loss curve, evaluation tables, sample grids ------------------------------------------

const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {  // like el(), in the SVG namespace; text only as text nodes
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// Numbers as a person reads them: integers whole (12,345), other values to 4 significant digits.
function fmtNum(v) {
  if (!Number.isFinite(v)) return "–";
  if (Number.isInteger(v) || Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en-US");
  return String(Number(v.toPrecision(4)));
}

function fmtValue(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return fmtNum(v);
  if (typeof v === "boolean") return v ? "✓" : "✗";
  return String(v);
}

const isScalar = (v) => v === null || typeof v !== "object";
const isRecord = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// A metric's name in the page's language. Other keys are shown exactly as written: they may be data
// (a condition value, a class name) that must reach the reader unchanged.
function label(key) {
  const k = "m." + key;
  return I18N[lang][k] || I18N.en[k] || key;
}

function valueCell(tag, v, depth) {
  const cell = el(tag, { class: typeof v === "number" ? "num" : (typeof v === "string" && v.length > 16 ? "text" : "") });
  cell.append(isScalar(v) ? fmtValue(v) : renderValue(v, depth + 1));
  return cell;
}

function kvTable(entries, depth, name = label) {  // metric | value
  return el("div", { class: "table-wrap" }, el("table", { class: "metrics" }, el("tbody", {},
    ...entries.map(([k, v]) => el("tr", { "data-key": k }, el("th", { title: k }, name(k)), valueCell("td", v, depth))))));
}

function recordTable(rows, keyHeader, depth) {  // one row per record, one column per field
  const cols = [];
  for (const [, r] of rows) for (const c of Object.keys(r)) if (!cols.includes(c)) cols.push(c);
  const head = el("tr", {}, el("th", {}, keyHeader), ...cols.map((c) => el("th", { title: c, "data-col": c }, label(c))));
  const body = rows.map(([key, r]) => el("tr", { "data-key": key }, el("th", {}, key),
    ...cols.map((c) => { const td = valueCell("td", r[c], depth); td.setAttribute("data-col", c); return td; })));
  return el("div", { class: "table-wrap" }, el("table", { class: "metrics records" }, el("thead", {}, head), el("tbody", {}, ...body)));
}

// Records that share their fields (per condition, per class) read best as one table.
function isRecordSet(entries) {
  if (!entries.length || !entries.every(([, v]) => isRecord(v))) return false;
  const keys = new Set(entries.flatMap(([, v]) => Object.keys(v)));
  return entries.every(([, v]) => Object.keys(v).length * 2 >= keys.size);
}

// Any JSON as tables, so a section added to eval.json shows with no change here.
function renderValue(v, depth) {
  if (isScalar(v)) return el("span", {}, fmtValue(v));
  if (Array.isArray(v)) {
    if (v.length && v.every(isRecord)) return recordTable(v.map((r, i) => [String(i + 1), r]), "#", depth);
    if (v.every(isScalar)) return el("span", {}, v.map(fmtValue).join(", "));
    return el("div", {}, ...v.map((x) => renderValue(x, depth + 1)));
  }
  const entries = Object.entries(v);
  if (isRecordSet(entries)) return recordTable(entries, "", depth);
  const box = el("div", {});
  const flat = entries.filter(([, x]) => isScalar(x) || (Array.isArray(x) && x.every(isScalar)));
  if (flat.length) box.append(kvTable(flat, depth));
  for (const [k, x] of entries) if (!flat.some(([f]) => f === k)) box.append(evalSection(k, x, depth + 1));
  return box;
}

function evalSection(key, value, depth) {
  const wide = !isScalar(value) && !(isRecord(value) && Object.values(value).every(isScalar));
  return el("section", { class: "eval-section" + (wide ? " wide" : ""), "data-section": key },
    el(`h${Math.min(6, 4 + depth)}`, { title: key }, label(key)), renderValue(value, depth));
}

const EVAL_ABOUT = ["run", "modality", "split", "created_at", "seed", "n"];  // what was evaluated, not how well

// What was evaluated, then the top-level figures (an image run keeps its metrics there), then each section.
function evalView(ev) {
  const entries = Object.entries(ev);
  const about = entries.filter(([k, v]) => isScalar(v) && EVAL_ABOUT.includes(k));
  const figures = entries.filter(([k, v]) => isScalar(v) && !EVAL_ABOUT.includes(k));
  const view = el("div", { id: "eval" });
  if (about.length) view.append(evalSection("overview", Object.fromEntries(about), 1));
  if (figures.length) view.append(evalSection("metrics", Object.fromEntries(figures), 1));
  for (const [k, v] of entries) if (!isScalar(v)) view.append(evalSection(k, v, 1));
  return view;
}

// A dataset card the way an evaluation shows: its plain facts, then each nested part as tables.
function cardView(card) {
  const entries = Object.entries(card);
  const facts = entries.filter(([, v]) => isScalar(v) || (Array.isArray(v) && v.every(isScalar)));
  const view = el("div", { id: "card" });
  if (facts.length) view.append(evalSection("overview", Object.fromEntries(facts), 1));
  for (const [k, v] of entries) if (!facts.some(([f]) => f === k)) view.append(evalSection(k, v, 1));
  return view;
}

function niceStep(span, n) {
  const raw = span / Math.max(1, n), p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) || 10 * p;
}

function linearTicks(lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const step = niceStep(hi - lo, n), ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

// Ticks of a log axis, where they fit (at least `gap` px apart): powers of ten first, then 5 and 2
// times them, then 1..9, then finer steps; a run whose loss falls from 4 to 1.3 gets labels in the
// crowded low part as well as at the top.
function logTicks(lo, hi, py, gap) {
  const chosen = [];
  for (const f of [10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01]) {
    for (let k = Math.floor(Math.log10(lo)); k <= Math.ceil(Math.log10(hi)); k++) {
      const step = f * 10 ** k;
      for (let m = Math.ceil(Math.max(lo, 10 ** k) / step); m * step <= Math.min(hi, 10 ** (k + 1)) * (1 + 1e-12); m++) {
        const v = Number((m * step).toPrecision(12));
        if (v >= lo && v <= hi && chosen.every((c) => Math.abs(py(c) - py(v)) >= gap)) chosen.push(v);
      }
    }
  }
  return chosen.sort((a, b) => a - b);
}

// A long noisy run also gets a centred moving average (in log space on a log axis); the window
// narrows towards the ends, so the steep first steps are not smeared or delayed as an EMA would.
function smooth(points, log) {
  const k = Math.floor(points.length / 50);
  if (k < 1) return points;
  const f = log ? Math.log : (y) => y, g = log ? Math.exp : (y) => y;
  const ys = points.map(([, y]) => f(y));
  return points.map(([x], i) => {
    const h = Math.min(k, i, points.length - 1 - i);
    let sum = 0;
    for (let j = i - h; j <= i + h; j++) sum += ys[j];
    return [x, g(sum / (2 * h + 1))];
  });
}

// The loss curve: log-scale y when every loss is positive (the first steps would flatten the rest on
// a linear axis), train as a line, each validation as a marker, ticks and labels on both axes.
function lossChart(train, val) {
  const tr = train.filter((r) => Number.isFinite(r.train_loss)).map((r) => [r.step, r.train_loss]);
  const va = val.filter((r) => Number.isFinite(r.val_loss)).map((r) => [r.step, r.val_loss]);
  const all = tr.concat(va);
  if (!all.length) return el("p", { class: "muted", id: "loss-curve-empty" }, t("run.no_curve"));
  const W = 720, H = 300, L = 62, R = 16, T = 14, B = 46;
  const log = all.every(([, y]) => y > 0);
  const f = log ? Math.log10 : (y) => y;
  let y0 = Math.min(...all.map((p) => f(p[1]))), y1 = Math.max(...all.map((p) => f(p[1])));
  const padY = Math.max((y1 - y0) * 0.04, log ? 0.02 : Math.abs(y1) * 0.02 || 0.01);
  y0 -= padY; y1 += padY;
  const x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(x0 + 1, ...all.map((p) => p[0]));
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = (y) => T + (y1 - f(y)) / (y1 - y0) * (H - T - B);
  const lo = log ? 10 ** y0 : y0, hi = log ? 10 ** y1 : y1;
  const chart = svg("svg", { id: "loss-curve", class: "chart", viewBox: `0 0 ${W} ${H}`, "data-scale": log ? "log" : "linear",
                             role: "img", "aria-label": t("run.curve") });
  const grid = svg("g", { class: "grid" }), ticks = svg("g", { class: "ticks" });
  const yTicks = log ? logTicks(lo, hi, sy, 22) : linearTicks(lo, hi, 5);
  for (const v of yTicks) {
    grid.append(svg("line", { x1: L, x2: W - R, y1: sy(v), y2: sy(v) }));
    ticks.append(svg("text", { class: "tick-y", "data-value": v, x: L - 6, y: sy(v) + 4, "text-anchor": "end" }, fmtNum(v)));
  }
  for (const v of linearTicks(x0, x1, 6).filter(Number.isInteger)) {
    grid.append(svg("line", { x1: sx(v), x2: sx(v), y1: T, y2: H - B }));
    ticks.append(svg("text", { class: "tick-x", "data-value": v, x: sx(v), y: H - B + 16, "text-anchor": "middle" }, fmtNum(v)));
  }
  chart.append(grid, svg("rect", { class: "frame", x: L, y: T, width: W - L - R, height: H - T - B }), ticks,
    svg("text", { class: "axis-label", x: L + (W - L - R) / 2, y: H - 8, "text-anchor": "middle" }, t("run.step")),
    svg("text", { class: "axis-label", x: 14, y: T + (H - T - B) / 2, "text-anchor": "middle",
                  transform: `rotate(-90 14 ${T + (H - T - B) / 2})` }, t(log ? "run.loss_log" : "run.loss")));
  const line = (pts) => pts.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
  if (tr.length) {
    const smoothed = smooth(tr, log);
    if (smoothed !== tr) chart.append(svg("path", { class: "train raw", d: line(tr) }));
    chart.append(svg("path", { class: "train", d: line(smoothed) }));
  }
  if (va.length) {
    chart.append(svg("path", { class: "val", d: line(va) }));
    for (const [x, y] of va) {
      chart.append(svg("circle", { class: "val-point", cx: sx(x), cy: sy(y), r: 4, "data-step": x, "data-value": y },
        svg("title", {}, `${t("run.step")} ${fmtNum(x)}: ${t("run.val")} ${fmtNum(y)}`)));
    }
  }
  const legend = svg("g", { class: "legend", transform: `translate(${W - R - 150},${T + 8})` },
    svg("rect", { x: 0, y: 0, width: 142, height: 40 }),
    svg("line", { class: "train", x1: 8, x2: 28, y1: 13, y2: 13 }), svg("text", { x: 34, y: 17 }, t("run.train")),
    svg("circle", { class: "val-key", cx: 18, cy: 29, r: 4 }), svg("text", { x: 34, y: 33 }, t("run.val")));
  chart.append(legend);
  return chart;
}

const SHEET_PX = 360;  // a sample grid is zoomed to about this size on screen

function sheet(runName, path, caption) {
  const img = el("img", { class: "sheet", alt: caption, "data-path": path });
  img.addEventListener("load", () => {  // whole-number zoom keeps small images' pixels sharp
    const zoom = Math.max(1, Math.floor(SHEET_PX / Math.max(img.naturalWidth, img.naturalHeight)));
    img.style.width = `${img.naturalWidth * zoom}px`;
  });
  imageUrl(`/api/runs/${encodeURIComponent(runName)}/files/${path.split("/").map(encodeURIComponent).join("/")}`)
    .then((u) => { img.src = u; }).catch((e) => { img.replaceWith(el("span", { class: "muted" }, e.message)); });
  return el("figure", { class: "sheet-box" }, img, el("figcaption", { class: "muted" }, caption));
}

let shownRun = null;  // the run page on screen, drawn again when the language changes

async function showRun(name) {
  shownRun = await (await api(`/api/runs/${encodeURIComponent(name)}`)).json();
  renderRun(shownRun);
}

function renderRun(run) {
  const about = { family: "col.family", dataset: "col.dataset", status: "col.status", step: "col.step",
                  best_val_loss: "col.val", created_at: "col.created", updated_at: "col.updated" };
  const detail = el("div", { class: "detail", id: "run-view" }, el("h3", {}, run.name),
    kvTable(Object.keys(about).filter((k) => k in run).map((k) => [k, run[k]]), 1, (k) => t(about[k])),
    el("h4", {}, t("run.curve")), lossChart(run.curve.train, run.curve.val));
  const images = run.images || [];
  detail.append(el("h4", {}, t("run.eval")));
  if (run.eval) detail.append(evalView(run.eval));
  else detail.append(el("p", { class: "muted", id: "eval-none" }, t("run.no_eval", { name: run.name })));
  const evalGrids = images.filter((p) => !p.startsWith("samples/"));
  if (evalGrids.length) detail.append(el("div", { class: "sheets" }, ...evalGrids.map((p) => sheet(run.name, p,
    p === "eval_samples.png" ? t("run.eval_samples") : p))));
  const during = images.filter((p) => p.startsWith("samples/")).reverse().slice(0, 4);  // newest first
  if (during.length) {
    detail.append(el("h4", {}, t("run.samples")), el("div", { class: "sheets", id: "sample-grids" }, ...during.map((p) => {
      const step = /step-0*(\d+)\.png$/.exec(p);
      return sheet(run.name, p, step ? `${t("run.step")} ${fmtNum(Number(step[1]))}` : p);
    })));
  }
  $("#run-detail").replaceChildren(detail);
}

async function loadRunsPage() {
  const all = (await (await api("/api/runs")).json()).runs;
  $("#runs-table tbody").replaceChildren(...all.map((r) => el("tr", { onclick: () => showRun(r.name) },
    el("td", {}, r.name), el("td", {}, r.family), el("td", {}, r.dataset), el("td", {}, r.status),
    el("td", {}, r.step), el("td", {}, r.best_val_loss === null ? "-" : r.best_val_loss.toFixed(4)))));
}

async function showDataset(name) {
  const ds = await (await api(`/api/datasets/${encodeURIComponent(name)}`)).json();
  const detail = el("div", { class: "detail" }, el("h3", {}, `${t("ds.card")}: ${name}`), cardView(ds.card || {}));
  if (ds.has_preview) {
    const img = el("img", { class: "sheet", alt: "preview" });
    detail.append(el("h4", {}, t("ds.preview")), img);
    imageUrl(`/api/datasets/${encodeURIComponent(name)}/preview.png`).then((u) => { img.src = u; });
  }
  $("#dataset-detail").replaceChildren(detail);
}

async function loadDatasetsPage() {
  const all = (await (await api("/api/datasets")).json()).datasets;
  $("#datasets-table tbody").replaceChildren(...all.map((d) => el("tr", { onclick: () => showDataset(d.name) },
    el("td", {}, d.name), el("td", {}, d.modality), el("td", {}, d.n_train), el("td", {}, d.n_val),
    el("td", {}, d.n_test), el("td", {}, d.created_at))));
}

async function loadLog() {
  const rows = (await (await api("/api/generations?limit=100")).json()).generations;
  $("#log-table tbody").replaceChildren(...rows.map((g) => {
    const out = g.output.texts ? g.output.texts.join(" ‖ ") : `${(g.output.images || []).length} images`;
    return el("tr", { "data-id": g.id }, el("td", {}, g.created_at.replace("T", " ").slice(0, 19)), el("td", {}, g.run),
      el("td", { class: "clip" }, g.prompt), el("td", { class: "clip" }, out), el("td", { class: "up" }, g.up),
      el("td", { class: "down" }, g.down), el("td", {}, g.status), el("td", {}, Math.round(g.latency_ms)));
  }));
}

// -- arena: two runs answer one prompt side by side; the user's vote feeds an Elo leaderboard -----------

let arenaRuns = [];  // the servable text runs
let arenaMatch = null;  // the answers on screen: { prompt, cond, sides: [{ run, id }, { run, id }] } (A, B)

async function loadArena() {
  arenaRuns = (await (await api("/api/runs")).json()).runs.filter((r) => r.servable && r.modality === "text");
  for (const select of [$("#arena-run-1"), $("#arena-run-2")]) {
    const keep = select.value;
    select.replaceChildren(el("option", { value: "", "data-i18n": "arena.random" }, t("arena.random")),
      ...arenaRuns.map((r) => el("option", { value: r.name }, r.name)));
    if (arenaRuns.some((r) => r.name === keep)) select.value = keep;
  }
  onArenaRunsChange();
  await loadBoard();
}

// The conditions that every run the arena may pick knows (a random side may pick any), with the
// values they all know: both runs are asked the same thing.
function onArenaRunsChange() {
  const picked = [$("#arena-run-1").value, $("#arena-run-2").value];
  const pool = picked.includes("") ? arenaRuns : arenaRuns.filter((r) => picked.includes(r.name));
  const shared = {};
  const [first, ...rest] = pool;
  for (const [col, values] of Object.entries((first && first.conditions) || {})) {
    const others = rest.map((r) => (r.conditions || {})[col]);
    if (others.every(Boolean)) shared[col] = values.filter((v) => others.every((o) => o.includes(v)));
  }
  conditionFields($("#arena-cond-box"), shared);
}

// Two different runs, the chosen ones or random ones, in a random order: the first is shown as A.
function pickPair() {
  const chosen = [$("#arena-run-1").value, $("#arena-run-2").value];
  const pair = [];
  for (const name of chosen) {
    const pool = name ? [name] : arenaRuns.map((r) => r.name).filter((n) => !chosen.includes(n) && !pair.includes(n));
    if (pool.length) pair.push(pool[Math.floor(Math.random() * pool.length)]);
  }
  if (pair.length < 2 || pair[0] === pair[1]) throw new Error(t("arena.need_two"));
  return Math.random() < 0.5 ? pair : pair.reverse();
}

function setVoting(on) {
  for (const w of ["a", "b", "tie"]) $(`#arena-vote-${w}`).disabled = !on;
}

async function askArena() {
  let pair;
  try { pair = pickPair(); } catch (e) { $("#arena-status").textContent = e.message; return; }
  const prompt = $("#arena-prompt").value, cond = conditions("#arena-cond-box");
  const options = { temperature: Number($("#arena-temperature").value), num_predict: Number($("#arena-max-tokens").value) };
  if ($("#arena-seed").value !== "") options.seed = Number($("#arena-seed").value);  // one seed for both: a fair draw
  const match = { prompt, cond, sides: pair.map((run) => ({ run, id: null })) };
  arenaMatch = match;
  setVoting(false);
  $("#arena-ask").disabled = true;
  $("#arena-status").textContent = "";
  await Promise.allSettled(match.sides.map(async (side, i) => {
    const name = $(`#arena-name-${"ab"[i]}`), out = $(`#arena-answer-${"ab"[i]}`), stats = $(`#arena-stats-${"ab"[i]}`);
    name.hidden = true;  // which run wrote which answer stays unknown until the vote
    name.textContent = "";
    out.replaceChildren(el("span", { class: "prompt" }, prompt));
    stats.textContent = "";
    try {
      const body = { model: side.run, prompt, cond, stream: false, options };
      const msg = await (await api("/api/generate", { method: "POST", body })).json();
      out.append(msg.response);  // text, never markup
      stats.textContent = statsLine(msg);
      side.id = msg.id;
    } catch (e) { stats.textContent = e.message; }
  }));
  $("#arena-ask").disabled = false;
  setVoting(match.sides.every((side) => side.id));
}

async function arenaVote(winner) {
  const match = arenaMatch, [a, b] = match.sides;
  setVoting(false);
  try {
    await api("/api/arena/vote", { method: "POST", body: { prompt: match.prompt, cond: match.cond, run_a: a.run,
      run_b: b.run, generation_a: a.id, generation_b: b.id, winner } });
  } catch (e) {
    $("#arena-status").textContent = e.message;
    setVoting(true);
    return;
  }
  match.sides.forEach((side, i) => {  // the vote is in: now say who was who
    const name = $(`#arena-name-${"ab"[i]}`);
    name.textContent = side.run;
    name.hidden = false;
  });
  $("#arena-status").textContent = t("arena.voted");
  await loadBoard().catch((e) => banner(e.message));
}

async function loadBoard() {
  const rows = (await (await api("/api/arena/leaderboard")).json()).leaderboard;
  $("#arena-board tbody").replaceChildren(...rows.map((r, i) => el("tr", { "data-run": r.run },
    el("td", {}, i + 1), el("td", { class: "run" }, r.run), el("td", { class: "rating" }, r.rating.toFixed(1)),
    el("td", {}, r.wins), el("td", {}, r.losses), el("td", {}, r.ties), el("td", {}, r.games))));
  if (!rows.length) {
    $("#arena-board tbody").append(el("tr", {}, el("td", { colspan: 7, class: "muted", "data-i18n": "arena.no_votes" },
      t("arena.no_votes"))));
  }
}

// -- policy: the workspace's safety policy, editable; a text checked against it -------------------------

async function loadPolicy() {
  const data = await (await api("/api/policy")).json();
  $("#policy-version").textContent = t("policy.version", { version: data.version, source: data.source });
  $("#policy-yaml").value = data.yaml;
}

async function savePolicy() {
  const status = $("#policy-status");
  try {
    const res = await api("/api/policy", { method: "PUT", body: $("#policy-yaml").value });
    const data = await res.json();
    status.textContent = t("policy.saved", { version: data.version });
    await loadPolicy();
  } catch (e) { status.textContent = e.message; }
}

async function testPolicy() {
  const out = $("#policy-result");
  try {
    const data = await (await api("/v1/moderations", { method: "POST", body: { input: $("#policy-text").value } })).json();
    const r = data.results[0];
    const cats = Object.entries(r.categories).filter(([, on]) => on).map(([c]) => c);
    const terms = (r.matches || []).map((m) => m.term);
    const pii = (r.entities || []).map((e) => e.type);
    out.textContent = r.flagged ? t("policy.flagged", { what: [...cats, ...terms, ...pii].join(", ") })
      : (pii.length ? t("safety.redacted", { what: pii.join(", ") }) : t("policy.ok"));
  } catch (e) { out.textContent = e.message; }
}

// -- synthesize: a run -> a synthetic data set and its report, as a background job ------------------------

let synthRuns = [];
const fix = (v) => (typeof v === "number" ? v.toFixed(3) : "-");
const figure = (v) => (v && typeof v === "object" ? v.value : v);

async function loadSynth() {
  synthRuns = (await (await api("/api/runs")).json()).runs.filter((r) => r.synthesizable);
  $("#synth-run").replaceChildren(...synthRuns.map((r) => el("option", { value: r.name }, `${r.name} (${r.family})`)));
  if (!synthRuns.length) $("#synth-status").textContent = t("synth.no_runs");
  onSynthRunChange();
  await loadSynthJobs();
}

function onSynthRunChange() {
  const run = synthRuns.find((r) => r.name === $("#synth-run").value);
  const table = run && run.modality === "table";
  $("#synth-format").disabled = !table;
  const cols = table ? (run.columns || []).map((c) => c.name) : [];
  $("#synth-target").replaceChildren(el("option", { value: "" }, t("synth.none")),
    ...cols.map((c) => el("option", { value: c }, c)));
  const box = $("#synth-cond-box");
  box.replaceChildren();
  for (const [col, values] of Object.entries((run && run.conditions) || {})) {
    const select = el("select", { "data-col": col }, el("option", { value: "" }, t("synth.any")),
      ...values.map((v) => el("option", { value: v }, v)));
    box.append(el("label", {}, col + " ", select));
  }
}

async function startSynth() {
  const status = $("#synth-status");
  const conditions = {};
  document.querySelectorAll("#synth-cond-box select").forEach((s) => { if (s.value) conditions[s.dataset.col] = s.value; });
  const body = { run: $("#synth-run").value, n: Number($("#synth-n").value), seed: Number($("#synth-seed").value) || 0,
    format: $("#synth-format").value, report: true };
  if (Object.keys(conditions).length) body.conditions = conditions;
  if ($("#synth-target").value) body.target = $("#synth-target").value;
  try {
    let job = await (await api("/api/synthesize", { method: "POST", body })).json();
    while (!["finished", "failed"].includes(job.status)) {
      status.textContent = t("synth.progress", { status: job.status, done: job.progress.done, total: job.progress.total });
      await new Promise((r) => setTimeout(r, 1000));
      job = await (await api(job.links.self)).json();
    }
    status.textContent = job.status === "failed" ? job.error : "";
    showSynthJob(job);
    await loadSynthJobs();
  } catch (e) { status.textContent = e.message; }
}

function showSynthJob(job) {
  const box = $("#synth-result");
  box.replaceChildren();
  if (job.status !== "finished") return;
  const h = job.headline || {};
  const fid = h.fidelity || {}, uti = h.utility || {}, pri = h.privacy || {};
  if (fid.quality) box.append(el("p", {}, t("synth.quality", { q: fix(fid.quality.score), ref: fix((fid.reference || {}).quality) })));
  if (uti.tstr) box.append(el("p", {}, t("synth.utility", { auc: fix(uti.tstr.auc), f1: fix(uti.tstr.f1_macro),
    rauc: fix((uti.trtr || {}).auc), rf1: fix((uti.trtr || {}).f1_macro) })));
  if (pri.exact_copy_rate !== undefined) box.append(el("p", {}, t("synth.privacy", {
    copies: fix(figure(pri.exact_copy_rate)), closer: fix(figure(pri.closer_to_train)) })));
  const links = el("p");
  links.append(el("a", { href: "#", onclick: (e) => { e.preventDefault(); download(job.links.file, job.id); } }, t("synth.data")), " · ");
  links.append(el("a", { href: "#", onclick: (e) => { e.preventDefault(); openReport(job.links.report_html); } }, t("synth.report")));
  box.append(links);
  box.append(el("iframe", { id: "synth-report", sandbox: "", class: "report-frame" }));
  openReport(job.links.report_html).catch(() => {});
}

async function openReport(path) {  // through fetch (the API key goes along), shown in a sandboxed frame
  const frame = $("#synth-report");
  const html = await (await api(path)).text();
  if (frame) frame.srcdoc = html;
}

async function download(path, name) {
  const url = URL.createObjectURL(await (await api(path)).blob());
  const a = el("a", { href: url, download: name });
  document.body.append(a); a.click(); a.remove();
}

async function loadSynthJobs() {
  const jobs = (await (await api("/api/synthesize")).json()).data;
  $("#synth-jobs tbody").replaceChildren(...jobs.map((j) => el("tr", {},
    el("td", {}, new Date(j.created * 1000).toLocaleString()), el("td", {}, j.run), el("td", {}, j.n),
    el("td", {}, j.status === "failed" ? `${j.status}: ${j.error}` : j.status),
    el("td", {}, j.status === "finished" ? el("a", { href: "#", onclick: (e) => { e.preventDefault(); showSynthJob(j); } },
      t("synth.report")) : ""))));
}

// -- copy: the copywriting desk; a product, a brief and the brand rules -> ranked, checked candidates ----

const AI_LABEL = { zh: "【AI生成】", en: "[AI-generated]" };  // the explicit label that goes with copied copy
const BRIEF_FIELDS = ["channel", "tone", "audience", "length"];
let copyProducts = [];

function attrRow(key = "", value = "") {
  const row = el("div", { class: "attr-row" },
    el("input", { class: "attr-key", type: "text", placeholder: t("copy.key") }),
    el("input", { class: "attr-value", type: "text", placeholder: t("copy.value") }),
    el("button", { class: "attr-remove", title: t("copy.remove"), onclick: () => row.remove() }, "×"));
  row.querySelector(".attr-key").value = key;  // .value: whatever the file held stays text
  row.querySelector(".attr-value").value = value;
  $("#copy-attrs").append(row);
}

function setProduct(p) {
  $("#copy-attrs").replaceChildren();
  for (const [k, v] of Object.entries(p.attributes)) {
    if (v !== null && v !== undefined) attrRow(k, Array.isArray(v) ? v.join(", ") : String(v));
  }
  if (!$("#copy-attrs").children.length) attrRow();
  const brief = p.brief || {};
  if ([...$("#copy-channel").options].some((o) => o.value === brief.channel)) $("#copy-channel").value = brief.channel;
  if (brief.tone) $("#copy-tone").value = brief.tone;
  if (brief.audience) $("#copy-audience").value = brief.audience;
}

function productAttrs() {
  const product = {};
  document.querySelectorAll("#copy-attrs .attr-row").forEach((row) => {
    const k = row.querySelector(".attr-key").value.trim(), v = row.querySelector(".attr-value").value.trim();
    if (k && v) product[k] = v;
  });
  return product;
}

// A CSV/TSV text as records keyed by its header (quoted fields, doubled quotes and newlines in quotes).
function parseTable(text, sep) {
  const rows = [];
  let row = [], field = "", quoted = false;
  text = text.replace(/^\uFEFF/, "");
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; } else if (c === '"') quoted = false; else field += c;
    } else if (c === '"' && field === "") quoted = true;
    else if (c === sep) { row.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field); rows.push(row); row = []; field = "";
    } else field += c;
  }
  if (field !== "" || row.length) { row.push(field); rows.push(row); }
  const [head, ...body] = rows.filter((r) => r.some((v) => v.trim()));
  if (!head) return [];
  return body.map((r) => Object.fromEntries(head.map((h, j) => [h.trim(), (r[j] || "").trim()]).filter(([, v]) => v)));
}

// The products of a file: one JSON object of attributes, a JSON array, JSONL, or a CSV/TSV table;
// records may be {"id", "attributes", "brief"} as `aigc copy batch` reads them.
function parseProducts(name, text) {
  const lower = name.toLowerCase();
  let records;
  if (lower.endsWith(".csv") || lower.endsWith(".tsv")) records = parseTable(text, lower.endsWith(".tsv") ? "\t" : ",");
  else {
    try {
      const v = JSON.parse(text);
      records = Array.isArray(v) ? v : [v];
    } catch (e) {
      records = text.split(/\r?\n/).map((line, i) => {
        if (!line.trim()) return null;
        try { return JSON.parse(line); } catch (err) { throw new Error(`line ${i + 1} is not JSON (${err.message}): give JSON, JSONL or CSV`); }
      }).filter((r) => r !== null);
    }
  }
  if (!records.length) throw new Error("no products in the file: give one JSON object of attributes, or rows of a CSV");
  return records.map((r, i) => {
    if (!r || typeof r !== "object" || Array.isArray(r)) throw new Error(`record ${i + 1} is not an object of attributes`);
    const nested = r.attributes && typeof r.attributes === "object";
    const attributes = nested ? r.attributes
      : Object.fromEntries(Object.entries(r).filter(([k]) => k !== "id" && !BRIEF_FIELDS.includes(k)));
    const brief = nested ? r.brief : Object.fromEntries(BRIEF_FIELDS.filter((k) => r[k]).map((k) => [k, r[k]]));
    return { id: String(r.id ?? i + 1), attributes, brief };
  });
}

async function loadProductFile() {
  const input = $("#copy-file"), file = input.files[0], status = $("#copy-file-status"), pick = $("#copy-product-pick");
  if (!file) return;
  try {
    copyProducts = parseProducts(file.name, await file.text());
  } catch (e) {
    status.textContent = t("copy.bad_file", { name: file.name, why: e.message });
    return;
  } finally { input.value = ""; }
  pick.replaceChildren(...copyProducts.map((p, i) => el("option", { value: i }, p.id)));
  pick.hidden = copyProducts.length < 2;
  status.textContent = copyProducts.length > 1 ? t("copy.loaded", { n: copyProducts.length }) : "";
  setProduct(copyProducts[0]);
}

async function loadCopy() {
  if (!$("#copy-attrs").children.length) attrRow();
  const rules = await (await api("/api/copy/rules")).json();
  $("#copy-rules").value = JSON.stringify(rules, null, 2);
}

async function saveCopyRules() {
  const status = $("#copy-rules-status");
  let rules;
  try { rules = JSON.parse($("#copy-rules").value); } catch (e) { status.textContent = t("copy.rules_json", { why: e.message }); return; }
  try {
    const saved = await (await api("/api/copy/rules", { method: "PUT", body: rules })).json();
    $("#copy-rules").value = JSON.stringify(saved, null, 2);
    status.textContent = t("copy.rules_saved");
  } catch (e) { status.textContent = e.message; }
}

// The experiment a product's candidates belong to: a stable hash of its attributes (FNV-1a, two ways).
function productHash(product) {
  const text = JSON.stringify(Object.keys(product).sort().map((k) => [k, product[k]]));
  let a = 0x811c9dc5, b = 0x9747b28c;
  for (const ch of text) {
    const c = ch.codePointAt(0);
    a = Math.imul(a ^ c, 0x01000193) >>> 0;
    b = Math.imul(b ^ c, 0x5bd1e995) >>> 0;
  }
  return "p-" + a.toString(16).padStart(8, "0") + b.toString(16).padStart(8, "0");
}

function copyEvent(experiment, cand, event) {
  return api("/api/copy/events", { method: "POST", body: { experiment, variant: cand.id, event, text: cand.text } });
}

async function writeCopy() {
  const status = $("#copy-status"), box = $("#copy-cands"), button = $("#copy-generate");
  const product = productAttrs();
  if (!Object.keys(product).length) { status.textContent = t("copy.no_attrs"); return; }
  const brief = { channel: $("#copy-channel").value };
  if ($("#copy-tone").value.trim()) brief.tone = $("#copy-tone").value.trim();
  if ($("#copy-audience").value.trim()) brief.audience = $("#copy-audience").value.trim();
  button.disabled = true;
  status.textContent = t("copy.working");
  try {
    const body = { product, brief, n: Number($("#copy-n").value) || 3 };
    const data = await (await api("/api/copy", { method: "POST", body })).json();
    const experiment = productHash(product);
    box.dataset.experiment = experiment;
    box.replaceChildren(...data.candidates.map((c) => copyCard(c, data.lang, experiment)));
    status.textContent = data.candidates.length ? "" : t("copy.none");
    await Promise.all(data.candidates.map((c) => copyEvent(experiment, c, "shown")));
    box.dataset.shown = String(data.candidates.length);
  } catch (e) { status.textContent = e.message; } finally { button.disabled = false; }
}

// The text with each rule violation's span (code-point offsets, as the server counts) in a <mark>;
// the length rule's span is the whole text, so it is left to the checks list.
function markedText(text, violations) {
  const chars = Array.from(text);
  const spans = violations.filter((v) => v.rule !== "length" && Number.isInteger(v.start) && Number.isInteger(v.end) && v.start < v.end
    && v.end <= chars.length).sort((x, y) => x.start - y.start || y.end - x.end);  // the longest span first
  const box = el("div", { class: "output copy-text" });
  let pos = 0;
  for (const v of spans) {
    if (v.start < pos) continue;  // overlaps the span before: that one is marked already
    box.append(chars.slice(pos, v.start).join(""),
      el("mark", { class: "violation", "data-rule": v.rule, title: `${v.rule}: ${v.detail}` }, chars.slice(v.start, v.end).join("")));
    pos = v.end;
  }
  box.append(chars.slice(pos).join(""));
  return box;
}

function checksList(c) {
  const ch = c.checks, cov = ch.coverage;
  const list = el("ul", { class: "checks" });
  list.append(el("li", { class: "coverage" }, t("copy.coverage", { score: (cov.score * 100).toFixed(0) + "%" }),
    cov.missing.length ? " · " + t("copy.missing", { keys: cov.missing.join(", ") }) : ""));
  if (ch.invented.length) {
    list.append(el("li", { class: "invented" }, t("copy.invented", {
      what: ch.invented.map((x) => (typeof x === "object" ? `${x.key}: ${x.stated}` : String(x))).join(", ") })));
  }
  if (ch.violations.length) {
    list.append(el("li", { class: "violations" }, t("copy.violations"),
      el("ul", {}, ...ch.violations.map((v) => el("li", { "data-rule": v.rule }, `${v.rule}: ${v.detail}`)))));
  }
  list.append(el("li", { class: "length" }, t("copy.length", { n: ch.length, lo: ch.length_bounds[0], hi: ch.length_bounds[1] })));
  if (ch.safety && ch.safety.decision !== "allow") {
    list.append(el("li", { class: "flag blocked" }, t("copy.safety", { what: (ch.safety.categories || []).join(", ") || ch.safety.reason })));
  }
  if (c.repaired && c.repaired.length) list.append(el("li", { class: "muted" }, t("copy.repaired", { keys: c.repaired.join(", ") })));
  return list;
}

async function toClipboard(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {  // no clipboard API (plain http to another host): the old way
    const area = el("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
}

function saveText(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain;charset=utf-8" }));
  const a = el("a", { href: url, download: name });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function copyCard(c, lang, experiment) {
  const passed = c.checks.passed;
  const labelled = `${c.text}\n${AI_LABEL[lang] || AI_LABEL.en}`;  // the label of the copy's own language
  const status = el("span", { class: "muted copy-status" });
  const choose = el("button", { class: "copy-choose", onclick: async () => {
    try {
      await copyEvent(experiment, c, "chosen");
      choose.disabled = true;
      card.classList.add("chosen");
      status.textContent = t("copy.chosen");
    } catch (e) { status.textContent = e.message; }
  } }, t("copy.choose"));
  const card = el("div", { class: "card copy-card", "data-id": c.id, "data-rank": c.rank },
    el("h3", {}, t("copy.rank", { rank: c.rank }), " ",
      el("span", { class: "badge " + (passed ? "passed" : "failed") }, t(passed ? "copy.passed" : "copy.failed"))),
    markedText(c.text, c.checks.violations),
    checksList(c),
    el("div", { class: "safety" }, el("span", { class: "badge ai-label" }, AI_LABEL[lang] || AI_LABEL.en)),
    el("div", { class: "actions" },
      el("button", { class: "copy-copy", onclick: async () => { await toClipboard(labelled); status.textContent = t("copy.copied"); } },
        t("copy.copy")),
      el("button", { class: "copy-export", onclick: () => saveText(`copy-${c.id}.txt`, labelled + "\n") }, t("copy.export")),
      choose, status));
  return card;
}

// -- assistant: a knowledge base's answers with their sources, "did you mean", hand-offs ---------------

let chatHistory = [];  // the conversation so far, sent with each question

async function loadAssist() {
  const kbs = (await (await api("/api/kb")).json()).data;
  const select = $("#kb-select"), keep = select.value;
  select.replaceChildren(...kbs.map((k) => el("option", { value: k.name }, `${k.name} (${k.documents} · ${k.chunks})`)));
  if (kbs.some((k) => k.name === keep)) select.value = keep;
  $("#kb-status").textContent = kbs.length ? "" : t("assist.no_kb");
  await loadHandoffs();
}

function newConversation() {
  chatHistory = [];
  $("#chat").replaceChildren();
  $("#chunk-panel").hidden = true;
}

async function sendChat(asked) {
  const kb = $("#kb-select").value, input = $("#chat-input");
  const question = (asked === undefined ? input.value : asked).trim();
  if (!question) return;
  if (!kb) { $("#kb-status").textContent = t("assist.no_kb"); return; }
  input.value = "";
  const log = $("#chat"), send = $("#chat-send");
  log.append(el("div", { class: "msg user" }, el("div", { class: "who" }, t("assist.you")), el("div", { class: "text" }, question)));
  const pending = el("div", { class: "msg bot pending" }, t("assist.thinking"));
  log.append(pending);
  send.disabled = true;
  try {
    const body = { question, history: chatHistory.slice(-48) };
    const reply = await (await api(`/api/kb/${encodeURIComponent(kb)}/ask`, { method: "POST", body })).json();
    chatHistory.push({ role: "user", content: question });
    chatHistory.push(reply.clarify ? { role: "assistant", content: reply.answer, clarify: true }
      : { role: "assistant", content: reply.answer });
    pending.replaceWith(botMessage(kb, reply));
    if (reply.handoff) await loadHandoffs();
  } catch (e) {
    pending.textContent = e.message;
    pending.classList.add("error");
  } finally {
    send.disabled = false;
    log.scrollTop = log.scrollHeight;
  }
}

function citeLink(kb, cite) {
  return el("a", { href: "#", class: "cite", "data-n": cite.n,
    onclick: (e) => { e.preventDefault(); showChunk(kb, cite).catch((err) => banner(err.message)); } }, `[${cite.n}]`);
}

// One answer: its [n] markers as links to the cited chunks, the sources, suggestions, a hand-off notice.
function botMessage(kb, reply) {
  const cites = new Map((reply.citations || []).map((c) => [String(c.n), c]));
  const text = el("div", { class: "text" });
  for (const part of reply.answer.split(/(\[\d+\])/)) {
    const cite = cites.get((/^\[(\d+)\]$/.exec(part) || [])[1]);
    text.append(cite ? citeLink(kb, cite) : part);
  }
  const msg = el("div", { class: "msg bot", "data-mode": reply.mode || "" }, el("div", { class: "who" }, t("assist.bot")), text);
  if (cites.size) {
    msg.append(el("div", { class: "sources muted" }, t("assist.sources") + ": ",
      ...[...cites.values()].map((c) => el("span", { class: "source" }, citeLink(kb, c), " ", c.title || c.doc, " "))));
  }
  if (reply.suggestions && reply.suggestions.length) {
    msg.append(el("div", { class: "suggestions" }, el("span", { class: "muted" }, t("assist.did_you_mean")),
      ...reply.suggestions.map((s) => el("button", { class: "suggestion", onclick: () => sendChat(s) }, s))));
  }
  if (reply.handoff) msg.append(el("div", { class: "handoff-notice" }, t("assist.handoff")));
  if (typeof reply.confidence === "number") {
    msg.append(el("div", { class: "muted" }, t("assist.confidence", { c: reply.confidence.toFixed(2) })));
  }
  return msg;
}

function quoted(text, quote) {
  const box = el("div", { class: "chunk-text" });
  const at = quote ? text.indexOf(quote) : -1;
  if (at < 0) box.append(text);
  else box.append(text.slice(0, at), el("mark", { class: "quote" }, quote), text.slice(at + quote.length));
  return box;
}

async function showChunk(kb, cite) {
  const panel = $("#chunk-panel");
  let text = cite.text || "";
  try {  // the stored chunk, whole; the citation's own copy of it when the store cannot say
    const path = `/api/kb/${encodeURIComponent(kb)}/chunks?doc=${encodeURIComponent(cite.doc)}&limit=500`;
    const chunk = (await (await api(path)).json()).data.find((r) => r.chunk_id === cite.chunk_id);
    if (chunk && chunk.text) text = chunk.text;
  } catch (e) { /* keep the citation's text */ }
  panel.replaceChildren(
    el("div", { class: "panel-head" }, el("h3", { class: "chunk-title" }, cite.title || cite.doc),
      el("button", { onclick: () => { panel.hidden = true; } }, t("assist.hide"))),
    el("div", { class: "muted chunk-meta" }, t("assist.chunk", { id: cite.chunk_id, doc: cite.doc })),
    quoted(text, cite.quote));
  panel.dataset.chunk = cite.chunk_id;
  panel.hidden = false;
}

async function loadHandoffs() {
  const rows = (await (await api("/api/handoffs?status=open")).json()).data;
  const conversation = (h) => (h.conversation || []).map((m) => `${m.role}: ${m.content}`).join("\n");
  $("#handoff-table tbody").replaceChildren(...rows.map((h) => el("tr", { "data-id": h.id },
    el("td", {}, h.id), el("td", {}, new Date(h.created_at).toLocaleString()), el("td", {}, h.kb),
    el("td", {}, h.reason), el("td", { class: "clip question", title: conversation(h) }, h.question),
    el("td", {}, h.status),
    el("td", {}, el("button", { class: "handoff-close", onclick: () => closeHandoff(h.id) }, t("assist.close"))))));
  if (!rows.length) {
    $("#handoff-table tbody").append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, t("assist.no_handoffs"))));
  }
}

async function closeHandoff(id) {
  try {
    await api(`/api/handoffs/${id}/close`, { method: "POST" });
    await loadHandoffs();
  } catch (e) { banner(e.message); }
}

async function uploadDocument() {
  const input = $("#kb-file"), file = input.files[0], status = $("#kb-status");
  if (!file) return;
  const kb = $("#kb-new").value.trim() || $("#kb-select").value;
  if (!kb) { status.textContent = t("assist.need_kb"); input.value = ""; return; }
  status.textContent = t("assist.uploading", { name: file.name });
  try {
    const path = `/api/kb/${encodeURIComponent(kb)}/documents/${encodeURIComponent(file.name)}`;
    const info = await (await api(path, { method: "PUT", body: file })).json();
    $("#kb-new").value = "";
    await loadAssist();
    if ($("#kb-select").value !== kb) { $("#kb-select").value = kb; newConversation(); }
    status.textContent = t("assist.uploaded", { name: file.name, docs: info.documents, chunks: info.chunks });
  } catch (e) { status.textContent = e.message; } finally { input.value = ""; }
}

// -- monitor: a stream's volume and negative share per period, its alerts explained, the posts behind a point --

const ALL_TOPICS = "*";  // the all-posts topic, as the server names it
let monitorView = null;  // {stream, trends, alerts} on screen, drawn again when the topic or language changes
let monitorPosts = null;  // the drill-down on screen: {topic, start, items}
let monitorToken = 0;  // the latest stream load; an older answer arriving late is dropped

const pct = (v) => (v === null || v === undefined || !Number.isFinite(v) ? "–" : `${Math.round(v * 100)}%`);
const topicName = (topic) => (topic === ALL_TOPICS || topic === null ? t("mon.all") : topic);
const periodMs = (period) => (period === "hour" ? 3600e3 : 86400e3);

// A period start (UTC, as the server cuts periods) as a person reads it: 2026-01-31, or 2026-01-31 14:00.
function periodLabel(iso, period) {
  const s = new Date(iso).toISOString();
  return period === "hour" ? `${s.slice(0, 10)} ${s.slice(11, 13)}:00` : s.slice(0, 10);
}

async function loadMonitor() {
  const streams = (await (await api("/api/monitor")).json()).streams;
  const select = $("#monitor-stream"), keep = select.value;
  select.replaceChildren(...streams.map((s) => el("option", { value: s.name }, `${s.name} (${s.items} · ${s.alerts})`)));
  if (!streams.length) {
    monitorView = null;
    $("#monitor-status").textContent = t("mon.no_streams");
    for (const id of ["#monitor-chart-box", "#monitor-heat-box", "#monitor-alerts", "#monitor-posts"]) $(id).replaceChildren();
    return;
  }
  if (streams.some((s) => s.name === keep)) select.value = keep;
  await loadMonitorStream();
}

async function loadMonitorStream() {
  const name = $("#monitor-stream").value;
  if (!name) return;
  const token = ++monitorToken;
  $("#monitor-status").textContent = t("mon.loading");
  const base = `/api/monitor/${encodeURIComponent(name)}`;
  const period = $("#monitor-period").value;  // "" = the stream's own period
  const [trends, alerts] = await Promise.all([(await api(`${base}/trends${period ? `?period=${period}` : ""}`)).json(),
    (await api(`${base}/alerts?limit=500`)).json()]);
  if (token !== monitorToken) return;
  if (!monitorView || monitorView.stream !== name) monitorPosts = null;
  monitorView = { stream: name, trends, alerts: alerts.alerts };
  renderMonitor();
}

function renderMonitor() {
  const view = monitorView, topics = view.trends.series.map((s) => s.topic);
  const select = $("#monitor-topic"), keep = select.value;
  select.replaceChildren(...topics.map((tp) => el("option", { value: tp }, topicName(tp))));
  select.value = topics.includes(keep) ? keep : ALL_TOPICS;
  const topic = select.value, period = view.trends.period;
  const mine = view.alerts.filter((a) => topic === ALL_TOPICS || a.topic === topic);  // newest first, as served
  const shown = mine.filter((a) => a.kind === "alert").concat(mine.filter((a) => a.kind !== "alert"));  // resolves last
  $("#monitor-status").textContent = view.trends.items ? t("mon.status", { items: fmtNum(view.trends.items),
    alerts: view.alerts.filter((a) => a.kind === "alert").length }) : t("mon.no_posts");
  const series = view.trends.series.find((s) => s.topic === topic);
  $("#monitor-chart-box").replaceChildren(...(series ? [monitorChart(view.stream, series, shown, period)] : []));
  $("#monitor-heat-box").replaceChildren(...(view.trends.series.length > 1 ? [heatStrip(view.trends.series, period)] : []));
  $("#monitor-alerts").replaceChildren(...shown.map((a) => alertCard(a, period)));
  if (!shown.some((a) => a.kind === "alert")) $("#monitor-alerts").prepend(el("p", { class: "muted" }, t("mon.no_alerts")));
  renderPosts(period);
}

// Volume as bars (left axis), negative share as a line (right axis, 0-100%), a marker at each alert's
// period; a click on a period (or a marker) lists its posts.
function monitorChart(stream, series, alerts, period) {
  const pts = series.points, n = pts.length;
  const W = 720, H = 300, L = 52, R = 52, T = 40, B = 40;  // the top margin holds the legend and the alert flags
  const bw = (W - L - R) / Math.max(1, n);
  const x = (i) => L + (i + 0.5) * bw;  // the middle of period i
  const vmax = Math.max(1, ...pts.map((p) => p.volume));
  const vTicks = linearTicks(0, vmax, 4).filter(Number.isInteger);
  const vtop = Math.max(vmax, ...vTicks);
  const sv = (v) => T + (1 - v / vtop) * (H - T - B);
  const ss = (s) => T + (1 - s) * (H - T - B);
  const chart = svg("svg", { id: "monitor-chart", class: "chart monitor", viewBox: `0 0 ${W} ${H}`, role: "img",
    "data-stream": stream, "data-topic": series.topic, "data-period": period, "aria-label": `${t("mon.posts_axis")} / ${t("mon.share_axis")}` });
  const grid = svg("g", { class: "grid" }), ticks = svg("g", { class: "ticks" });
  for (const v of vTicks) {
    grid.append(svg("line", { x1: L, x2: W - R, y1: sv(v), y2: sv(v) }));
    ticks.append(svg("text", { class: "tick-y", x: L - 6, y: sv(v) + 4, "text-anchor": "end" }, fmtNum(v)));
  }
  for (const s of [0, 0.25, 0.5, 0.75, 1]) {
    ticks.append(svg("text", { class: "tick-share", x: W - R + 6, y: ss(s) + 4, "text-anchor": "start" }, pct(s)));
  }
  const every = Math.ceil(n / 8);
  pts.forEach((p, i) => {
    if (i % every === 0) ticks.append(svg("text", { class: "tick-x", x: x(i), y: H - B + 16, "text-anchor": "middle" },
      periodLabel(p.t, period).slice(5)));
  });
  chart.append(grid, svg("rect", { class: "frame", x: L, y: T, width: W - L - R, height: H - T - B }), ticks,
    svg("text", { class: "axis-label", x: 14, y: T + (H - T - B) / 2, "text-anchor": "middle",
                  transform: `rotate(-90 14 ${T + (H - T - B) / 2})` }, t("mon.posts_axis")),
    svg("text", { class: "axis-label", x: W - 10, y: T + (H - T - B) / 2, "text-anchor": "middle",
                  transform: `rotate(90 ${W - 10} ${T + (H - T - B) / 2})` }, t("mon.share_axis")));
  const bars = svg("g", { class: "bars" });
  pts.forEach((p, i) => bars.append(svg("rect", { class: "bar", x: x(i) - Math.max(1, bw * 0.7) / 2, y: sv(p.volume),
    width: Math.max(1, bw * 0.7), height: H - B - sv(p.volume), "data-t": p.t, "data-volume": p.volume })));
  let d = "", pen = false;  // the share line breaks over periods without posts
  pts.forEach((p, i) => {
    if (p.share === null) { pen = false; return; }
    d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${ss(p.share).toFixed(1)}`;
    pen = true;
  });
  chart.append(bars, svg("path", { class: "share", d }));
  pts.forEach((p, i) => {
    if (p.share !== null && bw >= 6) chart.append(svg("circle", { class: "share-point", cx: x(i), cy: ss(p.share), r: 2.5 }));
  });
  // a transparent column per period takes the clicks, so a thin bar or a point need not be hit exactly
  const hits = svg("g", { class: "hits" });
  pts.forEach((p, i) => {
    const hit = svg("rect", { class: "hit", x: L + i * bw, y: T, width: bw, height: H - T - B, "data-t": p.t },
      svg("title", {}, t("mon.point", { when: periodLabel(p.t, period), n: p.volume, share: pct(p.share) })));
    if (monitorPosts && Date.parse(monitorPosts.start) === Date.parse(p.t)) hit.classList.add("picked");
    hit.addEventListener("click", () => pickPeriod(series.topic, p.t));
    hits.append(hit);
  });
  chart.append(hits);
  const index = new Map(pts.map((p, i) => [Date.parse(p.t), i]));
  const byPeriod = new Map();
  for (const a of alerts) {  // an alert sits on the shown period that holds its own (alerts keep the stream's)
    const i = index.get(Math.floor(Date.parse(a.period) / periodMs(period)) * periodMs(period));
    if (a.kind !== "alert" || i === undefined) continue;
    if (!byPeriod.has(i)) byPeriod.set(i, []);
    byPeriod.get(i).push(a);
  }
  for (const [i, list] of byPeriod) {
    const what = list.map((a) => `${a.rule} · ${topicName(a.topic)} · ${pct(a.share)}`).join("\n");
    const marker = svg("g", { class: "alert-marker", "data-period": pts[i].t, "data-count": list.length, tabindex: 0 },
      svg("title", {}, `${t("mon.alert")} ${periodLabel(pts[i].t, period)}\n${what}`),
      svg("line", { class: "alert-line", x1: x(i), x2: x(i), y1: T, y2: H - B }),
      svg("path", { class: "alert-flag", d: `M${x(i) - 6},${T - 14}h12l-6,11z` }));
    marker.addEventListener("click", () => pickPeriod(series.topic, pts[i].t));
    marker.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") pickPeriod(series.topic, pts[i].t); });
    chart.append(marker);
  }
  const legend = svg("g", { class: "legend", transform: `translate(${L},2)` },
    svg("rect", { class: "bar", x: 8, y: 5, width: 10, height: 10 }), svg("text", { x: 22, y: 14 }, t("mon.posts_axis")),
    svg("line", { class: "share", x1: 90, x2: 110, y1: 10, y2: 10 }), svg("text", { x: 114, y: 14 }, t("mon.share_axis")),
    svg("path", { class: "alert-flag", d: "M220,5h10l-5,9z" }), svg("text", { x: 234, y: 14 }, t("mon.alert")));
  chart.append(legend);
  return chart;
}

// Every topic's negative share per period as one row of cells, darker red for a higher share.
function heatStrip(allSeries, period) {
  const W = 720, L = 110, R = 52, rowH = 14, top = 18;
  const n = Math.max(1, allSeries[0].points.length), cw = (W - L - R) / n;
  const H = top + rowH * allSeries.length + 4;
  const strip = svg("svg", { id: "monitor-heat", class: "chart heat", viewBox: `0 0 ${W} ${H}` },
    svg("text", { class: "axis-label", x: 4, y: 12 }, t("mon.heat")));
  allSeries.forEach((s, r) => {
    const y = top + r * rowH;
    strip.append(svg("text", { class: "heat-topic", x: L - 6, y: y + rowH - 3, "text-anchor": "end" }, topicName(s.topic)));
    s.points.forEach((p, i) => {
      const cell = svg("rect", { class: p.share === null ? "cell empty" : "cell", x: L + i * cw, y, width: Math.max(0.5, cw - 0.5),
        height: rowH - 2, "data-topic": s.topic, "data-t": p.t },
        svg("title", {}, `${topicName(s.topic)} · ${t("mon.point", { when: periodLabel(p.t, period), n: p.volume, share: pct(p.share) })}`));
      if (p.share !== null) cell.style.fill = `hsl(0, 75%, ${Math.round(97 - 55 * p.share)}%)`;
      cell.addEventListener("click", () => {  // that topic's chart, and the posts of that cell
        $("#monitor-topic").value = s.topic;
        monitorPosts = null;
        renderMonitor();
        pickPeriod(s.topic, p.t);
      });
      strip.append(cell);
    });
  });
  return strip;
}

function alertCard(a, period) {
  const why = a.explanation || {};
  if (a.kind !== "alert") {
    return el("div", { class: "resolved muted", "data-id": a.id, "data-period": a.period, "data-topic": a.topic },
      t("mon.resolved", { rule: a.rule, topic: topicName(a.topic), when: periodLabel(a.period, period), share: pct(a.share) }));
  }
  const summary = lang === "zh" ? why.summary_zh || why.summary : why.summary || why.summary_zh;
  const card = el("div", { class: "card alert", "data-id": a.id, "data-period": a.period, "data-topic": a.topic,
                           "data-rule": a.rule },
    el("div", { class: "alert-head" }, el("span", { class: "badge rule" }, a.rule), " ",
      el("strong", { class: "topic" }, topicName(a.topic)), " · ", el("span", { class: "period" }, periodLabel(a.period, period)),
      " · ", el("span", { class: "share" }, t("mon.vs", { share: pct(a.share), expected: pct(a.expected) })),
      a.volume === null || a.volume === undefined ? "" : el("span", { class: "muted" }, " · " + t("mon.volume", { n: a.volume }))),
    el("p", { class: "summary" }, summary || ""));
  if ((why.keywords || []).length) {
    card.append(el("div", { class: "keywords" }, el("span", { class: "muted" }, t("mon.keywords") + ": "),
      ...why.keywords.map((k) => el("span", { class: "chip", title: `${fmtNum(k.score)} · ×${k.count}` }, k.word))));
  }
  if (why.change_point) {
    card.append(el("div", { class: "muted change" }, t("mon.change", { when: periodLabel(why.change_point, period) })));
  }
  if ((why.samples || []).length) {
    card.append(el("div", { class: "muted" }, t("mon.samples")),
      el("ul", { class: "samples" }, ...why.samples.map((s) => el("li", { class: "sample", title: s.ts }, s.text))));
  }
  card.append(el("button", { class: "alert-posts", onclick: () => pickPeriod(a.topic, a.period) }, t("mon.show_posts")));
  return card;
}

// The posts of one topic in one period [start, start + period), newest first, as the server stored them.
async function pickPeriod(topic, start) {
  const view = monitorView, period = view.trends.period;
  const end = new Date(Date.parse(start) + periodMs(period)).toISOString();
  const q = new URLSearchParams({ topic, start, end, limit: "200" });
  try {
    const data = await (await api(`/api/monitor/${encodeURIComponent(view.stream)}/items?${q}`)).json();
    if (view !== monitorView) return;
    monitorPosts = { topic, start, items: data.items };
  } catch (e) { $("#monitor-status").textContent = e.message; return; }
  document.querySelectorAll("#monitor-chart .hit").forEach((h) => h.classList.toggle("picked", Date.parse(h.dataset.t) === Date.parse(start)));
  document.querySelectorAll("#monitor-alerts .alert").forEach((c) => c.classList.toggle("picked", Date.parse(c.dataset.period) === Date.parse(start)));
  renderPosts(period);
}

function renderPosts(period) {
  const box = $("#monitor-posts"), shown = monitorPosts;
  box.replaceChildren();
  for (const k of ["topic", "start", "count"]) delete box.dataset[k];
  if (!shown) return;
  box.append(el("h3", {}, t("mon.posts", { topic: topicName(shown.topic), when: periodLabel(shown.start, period), n: shown.items.length })));
  if (!shown.items.length) box.append(el("p", { class: "muted" }, t("mon.no_posts_period")));
  else {
    box.append(el("table", { class: "list posts" }, el("thead", {}, el("tr", {}, el("th", {}, t("mon.time")),
      el("th", {}, t("mon.topic")), el("th", {}, t("mon.label")), el("th", {}, t("mon.prob")), el("th", {}, t("mon.text")))),
      el("tbody", {}, ...shown.items.map((p) => el("tr", { class: p.negative ? "post negative" : "post", "data-id": p.id },
        el("td", { class: "time" }, new Date(p.ts).toISOString().slice(0, 16).replace("T", " ")),
        el("td", {}, p.topic), el("td", {}, el("span", { class: "badge label" }, p.label)),
        el("td", { class: "num" }, p.prob.toFixed(2)), el("td", { class: "text" }, p.text))))));
  }
  Object.assign(box.dataset, { topic: shown.topic, start: shown.start, count: String(shown.items.length) });
}

// -- audio: clips of a run trained on sound, each a player, its spectrogram and thumbs ---------------------

let audioRuns = [];  // servable runs on audio datasets (vocoders are not servable)
let vocoderRuns = [];  // finished vocoder runs, offered for the runs of their dataset

async function loadAudio() {
  const all = (await (await api("/api/runs")).json()).runs;
  audioRuns = all.filter((r) => r.modality === "audio" && r.servable);
  vocoderRuns = all.filter((r) => r.family === "vocoder" && r.status === "finished");
  const select = $("#audio-run"), keep = select.value;
  select.replaceChildren(...audioRuns.map((r) => el("option", { value: r.name }, `${r.name} (${r.family})`)));
  if (audioRuns.some((r) => r.name === keep)) select.value = keep;
  $("#audio-status").textContent = audioRuns.length ? "" : t("audio.no_runs");
  onAudioRunChange();
}

function onAudioRunChange() {  // the run's classes and the vocoders of its dataset, keeping what was picked
  const run = audioRuns.find((r) => r.name === $("#audio-run").value);
  const cls = $("#audio-class"), voc = $("#audio-vocoder"), keep = [cls.value, voc.value];
  cls.replaceChildren(el("option", { value: "" }, t("play.any")),
    ...(run ? run.classes : []).map((c) => el("option", { value: c }, c)));
  voc.replaceChildren(el("option", { value: "auto" }, t("audio.auto")), el("option", { value: "griffin-lim" }, "Griffin-Lim"),
    ...vocoderRuns.filter((v) => run && v.dataset === run.dataset).map((v) => el("option", { value: v.name }, v.name)));
  const offered = (select, value) => [...select.options].some((o) => o.value === value);
  cls.value = offered(cls, keep[0]) ? keep[0] : "";
  voc.value = offered(voc, keep[1]) ? keep[1] : "auto";
  $("#audio-steps-label").hidden = !run || run.family !== "diffusion";
}

function audioThumbs(generationId, index) {  // a thumb on sample `index` of the generation
  const status = el("span", { class: "muted", id: `audio-feedback-${index}` });
  const thumb = (rating, symbol) => {
    const button = el("button", { id: `audio-thumb-${rating}-${index}`, title: symbol }, symbol);
    button.addEventListener("click", async () => {
      try {
        await api("/api/feedback", { method: "POST", body: { generation_id: generationId, rating, sample_index: index } });
        button.classList.add("voted");
        status.textContent = t("play.saved");
      } catch (e) { status.textContent = e.message; }
    });
    return button;
  };
  return el("div", { class: "rate" }, thumb("up", "👍"), thumb("down", "👎"), status);
}

async function audioClip(data, clip, index) {  // URLs go through fetch (the API key goes along)
  const wav = clip.url ? await imageUrl(clip.url) : "data:audio/wav;base64," + clip.b64_wav;
  const png = clip.spectrogram_url ? await imageUrl(clip.spectrogram_url) : "data:image/png;base64," + clip.b64_png;
  const player = el("audio", { controls: "", preload: "auto", src: wav, id: `audio-player-${index}` });
  if (clip.url) player.dataset.url = clip.url;
  return el("div", { class: "card clip", id: `audio-clip-${index}` }, el("h3", {}, clip.label ?? ""), player,
    el("img", { class: "spectrogram", src: png, alt: t("audio.spectrogram") }), audioThumbs(data.id, index));
}

async function generateAudio() {
  const run = audioRuns.find((r) => r.name === $("#audio-run").value);
  if (!run) return;
  const status = $("#audio-status"), button = $("#audio-generate");
  const body = { model: run.name, n: Number($("#audio-n").value), vocoder: $("#audio-vocoder").value };
  if ($("#audio-seed").value !== "") body.seed = Number($("#audio-seed").value);
  if ($("#audio-class").value) body.label = $("#audio-class").value;
  if (run.family === "diffusion") body.steps = Number($("#audio-steps").value);
  button.disabled = true;
  status.textContent = t("audio.working");
  $("#audio-clips").replaceChildren();
  const started = performance.now();
  try {
    const data = await (await api("/api/audio/generate", { method: "POST", body })).json();
    $("#audio-clips").replaceChildren(...await Promise.all(data.data.map((clip, i) => audioClip(data, clip, i))));
    $("#audio-clips").dataset.generation = data.id;
    status.textContent = t("audio.done", { n: data.data.length, sr: data.sample_rate, inverter: data.inverter.inverter,
                                           s: ((performance.now() - started) / 1000).toFixed(1) });
  } catch (e) { status.textContent = e.message; }
  button.disabled = false;
}

// -- wiring ---------------------------------------------------------------------------------------------

function showTab(name) {
  document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".page").forEach((p) => { p.hidden = p.id !== name; });
  const load = { runs: loadRunsPage, datasets: loadDatasetsPage, log: loadLog, arena: loadArena, policy: loadPolicy,
    synth: loadSynth, copy: loadCopy, assist: loadAssist, monitor: loadMonitor, audio: loadAudio }[name];
  if (load) load().catch((e) => banner(e.message));
}

document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
$("#lang").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("aigc.lang", lang);
  applyLang();
  onRunChange();
  onArenaRunsChange();
  onAudioRunChange();
  if (shownRun && $("#run-view")) renderRun(shownRun);
  if (monitorView) renderMonitor();
});
$("#key").addEventListener("click", () => {
  const key = prompt(t("key.prompt"), localStorage.getItem("aigc.key") || "");
  if (key !== null) { localStorage.setItem("aigc.key", key.trim()); banner(""); loadRuns().catch((e) => banner(e.message)); }
});
$("#run-select").addEventListener("change", onRunChange);
$("#generate").addEventListener("click", generate);
$("#stop").addEventListener("click", () => controllers.forEach((c) => c.abort()));
$("#log-refresh").addEventListener("click", () => loadLog().catch((e) => banner(e.message)));
$("#arena-run-1").addEventListener("change", onArenaRunsChange);
$("#arena-run-2").addEventListener("change", onArenaRunsChange);
$("#arena-ask").addEventListener("click", askArena);
$("#policy-save").addEventListener("click", savePolicy);
$("#policy-check").addEventListener("click", testPolicy);
$("#synth-run").addEventListener("change", onSynthRunChange);
$("#synth-start").addEventListener("click", startSynth);
$("#audio-run").addEventListener("change", onAudioRunChange);
$("#audio-generate").addEventListener("click", generateAudio);
for (const w of ["a", "b", "tie"]) $(`#arena-vote-${w}`).addEventListener("click", () => arenaVote(w));
$("#copy-add-attr").addEventListener("click", () => attrRow());
$("#copy-file").addEventListener("change", loadProductFile);
$("#copy-product-pick").addEventListener("change", () => setProduct(copyProducts[Number($("#copy-product-pick").value)]));
$("#copy-rules-save").addEventListener("click", saveCopyRules);
$("#copy-generate").addEventListener("click", writeCopy);
$("#kb-select").addEventListener("change", newConversation);
$("#kb-file").addEventListener("change", uploadDocument);
$("#chat-send").addEventListener("click", () => sendChat());
$("#chat-input").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.isComposing) sendChat(); });
$("#chat-new").addEventListener("click", newConversation);
$("#handoff-refresh").addEventListener("click", () => loadHandoffs().catch((e) => banner(e.message)));
$("#monitor-stream").addEventListener("change", () => loadMonitorStream().catch((e) => { $("#monitor-status").textContent = e.message; }));
$("#monitor-topic").addEventListener("change", () => { monitorPosts = null; renderMonitor(); });
$("#monitor-period").addEventListener("change", () => {
  monitorPosts = null;
  loadMonitorStream().catch((e) => { $("#monitor-status").textContent = e.message; });
});
$("#monitor-refresh").addEventListener("click", () => loadMonitor().catch((e) => { $("#monitor-status").textContent = e.message; }));
applyLang();
loadRuns().catch((e) => banner(e.message));
