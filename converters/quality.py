"""Quality filters over one dialogue's `(question, answer)` turns: small pure functions with stable reason names.

Each filter returns a detail string when a row should be skipped, else None. A dialogue is skipped
at the first answer (or question) a filter rejects. Thresholds are the constants below.

- truncated_answer: the answer stops mid-thought (ChatMed's answers were generated under a 512-token cap): an
  unclosed code fence, an open list item, an unclosed bracket or quote, a clause separator, connector or particle
  at the end, or a prose sentence without its end. A missing full stop alone is no cut (code, lists, tables,
  poems, headings, hashtags, placeholders, signatures and numbers end without one).
- ai_self_reference: the answer speaks of itself as an AI ("作为一个AI助手…", "作为由OpenAI训练的大型语言模型…",
  "我是一款基于文本的AI助手", "as an AI").
- jailbreak: the turn is a jailbreak or unrestricted-persona prompt (DAN, developer mode, "ignore all previous
  instructions", unfiltered or amoral personas, rule-breaking framings, harmful code words, the grandma exploit).
- short_answer: fewer than MIN_ANSWER_CHARS characters (whitespace not counted).
- answer_repeats_question: the answer, normalised as queries are for dedupe, equals the question or is
  contained in it (answers longer than twice the question plus REPEAT_SLACK_CHARS are not compared).
- contact_or_ad: a URL, a WeChat or QQ id, a phone number (mobile, landline with area code, 400/800;
  short numbers such as 120 are fine) or a street address ("地址：", "…路12号") in the answer.
- degenerate_repetition: the same clause (2+ characters between ，。！？ or line breaks) DEGENERATE_CLAUSE_REPEATS
  times in a row, or one letter or character DEGENERATE_CHAR_RUN times in a row. (A short unit repeated
  without punctuation, "好的好的好的…", is not caught.)

Reasoning: a `<think>` block in an answer (canonical or not, closed or not) is removed (`strip_think`), and the
row skipped when nothing else is left: LLaMA-Factory removes only the canonical form, so any other would train.

Wrappers: a question carrying its training prompt's markers (`<s>`, `</s>`, a leading 问：/Q:, a trailing
答：/A:) is stripped of them, not skipped (`strip_wrappers`).
"""

from __future__ import annotations

import functools
import operator
import re
import unicodedata
from collections.abc import Callable

from caretune.basics.pii import PII_SIGNS, find_phone, mask_pii
from converters.choices import (
    AI_SELF_REFERENCE,
    ANSWER_REPEATS_QUESTION,
    CONTACT_OR_AD,
    DEGENERATE_REPETITION,
    JAILBREAK,
    SHORT_ANSWER,
    TRUNCATED_ANSWER,
)
from converters.records import normalise_query

WRAPPER_STRIPPED = "wrapper_stripped"
THINK_REMOVED = "think_removed"

MIN_ANSWER_CHARS = 10
REPEAT_SLACK_CHARS = 20
DEGENERATE_CLAUSE_REPEATS = 4
DEGENERATE_CHAR_RUN = 8

_FINAL = set("。！？!?…~～.")
_CLOSERS = "”’\"'）)】」』》]>`*_ \t\r\n"  # a closing quote, bracket or markup after the sentence's end
_PAIRS = {"（": "）", "(": ")", "【": "】", "[": "]", "「": "」", "『": "』", "“": "”", "《": "》"}
_CLOSING_OF = {close: open_ for open_, close in _PAIRS.items()}
# What a cut answer ends on: a clause or list separator, a connector or particle that cannot end a sentence, or an
# English connector word.
_OPEN_PUNCTUATION = set("，,、；：:-—(（[【「『“《")  # an ASCII ";" ends a line of code
# Conjunctions end a cut anywhere, a list item too (not as the end of a word: 总和, 参与, 涉及, 合并…)
_OPEN_CONJUNCTION = re.compile(
    r"(?:以及|或者|还是|但是|而且|并且|如果|因为|所以|例如|比如|包括|及其|(?<![总温缓平饱柔调暖祥谐附中共])和|或|(?<!参)与"
    r"|(?<![涉普不危波企顾])及|(?<![合吞兼])并|而|但|且|若)$"
    r"|\b(?:and|or|but|the|a|an|to|of|with|for|in|on|that|which|because|if|is|are)$",
    re.IGNORECASE,
)
# Prepositions end a cut in any line; particles only in a prose line (a list of adjectives ends on 的)
_OPEN_PREPOSITION = re.compile(r"(?:在|对|将|把|被|让|使|给|向|从|为|于)$")
_OPEN_PARTICLE = re.compile(r"(?:的|得|是|等|您)$")
MIN_CLAUSE_HAN = 4  # Han characters of a line with a clause break inside that ends on a particle ("最后，建议您")
_INLINE_LIST_ITEM = re.compile(r"\s\d{1,2}[.、)）]\s?[^。！？\s]")  # "…？ 1.去商店 2.回家", after the last stop
_OPEN_LIST_ITEM = re.compile(r"(?:\d{1,3}[.、)）]|[-*•+]|\\\*|[（(]\d{1,3}[）)]|[A-Za-z][.)]|[一二三四五六七八九十]{1,3}[、.])")
_LIST_LINE = re.compile(
    r"\s*(?:\d{1,3}(?:\.\d{1,3})*[.、)）]?\s|\d{1,3}[.、)）]|[-*•+>|#]|\\\*|[（(]\d{1,3}[）)]|[A-Za-z][.)、]\s?|[一二三四五六七八九十]{1,3}[、.])"
)
_PROSE_PUNCTUATION = re.compile(r"[，。；！？]")
_LIST_CLAUSES = re.compile(r"[，。；：！？]")
_HAN = re.compile(r"[\u4e00-\u9fff]")
MIN_PROSE_HAN = 8  # Han characters a last line needs to be read as a sentence (a signature, name or title is shorter)
VERSE_MIN_LINES = 3  # a last paragraph this long, most of whose lines end without punctuation, is verse or a list
_AI_SELF = re.compile(
    # "作为…AI…，" opening a clause that is not about the reader ("作为一名AI聊天机器人，你…" casts the user as one)
    r"作为[^，。,.!?！？\n]{0,24}?(?<![A-Za-z])(?:AI|Ai|人工智能|语言模型|虚拟助手|聊天机器人|机器人|智能助手|ChatGPT|ChotGPT)(?![a-z])"
    r"(?=[^，。,.!?！？\n]{0,10}(?:[，,]\s*(?![你您])|我))"
    r"|我作为[^，。,.!?！？\n]{0,12}?(?:AI|人工智能|语言模型|虚拟助手|智能助手|聊天机器人)|我是ChatGPT"
    r"|我(?:只|仅仅|仅)?是(?:一个|一個|一名|一种|一種|一款|一台|一位)?(?:[^，。,.!?！？\n我你]{0,20}?的)?(?:大型|一款|一个)?\s?"
    r"(?:(?<![A-Za-z])AI(?![a-z])|人工智能|语言模型|語言模型|聊天机器人|虚拟助手|虛擬助手|智能助手)"
    r"(?!医|研究|领域|专业|技术|方向|工程|公司|行业)"
    r"|我(?:是|只是|仅是)?(?:一个|一款|一种)?由OpenAI(?:训练|开发|创建|创造|培训|打造)"
    r"|像我这样的(?:AI|人工智能|语言模型)|包括我在内的(?:AI|人工智能)|基于文本的(?:AI|人工智能)"
    r"|as an AI|As an AI|AI language model|as a (?:large )?language model|As a (?:large )?language model"
    r"|I(?: am|'m) (?:an AI|a (?:large )?language model)"
    r"|trained by OpenAI"
)
# Every jailbreak match holds one of these words: one literal-first scan rules most questions out.
_JAILBREAK_SIGNS = re.compile(
    "|".join(
        (
            "DAN",
            "nything",
            "开发者",
            "eveloper",
            "越狱",
            "ailbr",
            "忽略",
            "gnore",
            "过滤",
            "nfiltered",
            "ncensored",
            "限制",
            "局限",
            "内容政策",
            "道德",
            "伦理",
            "规则",
            "遵守",
            "摆脱",
            "规矩",
            "规定",
            "rule",
            "拒绝",
            "服从",
            "马基雅维利",
            "achiavellian",
            "AIM",
            "语言模型",
            "说出",
            "操纵",
            "欺骗",
            "绕过",
            "叫做",
            "称为",
            "代表",
            "奶奶",
            "祖母",
            "外婆",
        )
    )
)
_PERSONA_SIGNS = re.compile("DAN|AIM|开发者模式|越狱|eveloper|ailbr|nything|过滤|道德")  # literal-first: a C scan
_CLAUSE_START = set(' \t\n，。！？,.!?：:“"（(我但是')  # what may stand just before a self-introducing "作为"
# Jailbreak and unrestricted-persona prompts, in Chinese and English: DAN and its kin, developer mode, "ignore all
# previous instructions", unfiltered or amoral personas (AIM), rule-breaking framings, code words for harmful things,
# the grandma exploit. Read in the questions (and the answers, where a persona speaks).
_JAILBREAK = re.compile(
    r"DAN[^\n]{0,60}?(?:做任何事|可以做任何|即刻行动|立即执行任何|现在可做|[Dd]o [Aa]nything)|[Dd]o [Aa]nything [Nn]ow"
    r"|(?:模拟|启用|进入|开启)开发者模式|开发者模式(?:输出|回应|回答|下的)|[Dd]eveloper [Mm]ode (?:enabled|output|response)"
    r"|越狱(?:版|模式)?的?(?:ChatGPT|AI|人工智能|语言模型)|(?:ChatGPT|AI|人工智能)越狱"
    r"|[Jj]ailbr(?:eak|oken) (?:ChatGPT|AI|mode|prompt)"
    r"|忽略掉?(?:之前|以上|所有|此前|先前|以前|前面|上述|你的)(?:的|所有|任何|全部|先前|之前|以前)*(?:指令|指示|说明|规则|提示|设定)"
    r"|[Ii]gnore (?:all |any )?(?:the |your )?(?:previous|prior|above|earlier) (?:instructions|prompts|rules)"
    r"|(?:未经|没有|无|非|不受)(?:任何)?过滤的?(?:、|和)?(?:完全)?(?:不受限制的)?(?:回答|回复|回应|内容|输出|响应|语言模型|AI|人工智能|聊天机器人|模型|版本)"
    r"|没有任何过滤|[Uu]nfiltered (?:AI|response|model|chatbot)|[Uu]ncensored (?:AI|response|model|chatbot)"
    r"|(?:完全|不受任何|没有任何|不受)限制的(?:语言模型|AI|人工智能|聊天机器人|模型)|非限制版|跨越你的局限|突破你的限制"
    r"|(?:不再有|没有|摆脱|忽略|无视)(?:任何)?(?:OpenAI的?)?内容政策"
    r"|(?:没有|缺乏|不遵守|不受)(?:任何|所有的?)?(?:道德|伦理)(?:规范|准则|指南|底线|限制|约束)"
    r"|不(?:遵循|遵守|受)任何规则|不(?:需要|必|用)遵守(?:为[他她它]们设定的|OpenAI)|摆脱了[^\n]{0,10}?(?:限制|束缚)"
    r"|打破(?:这|那)?(?:该死|他妈)的?(?:规则|规矩|规定)|[Bb]reak the (?:fuck\w*'?|damn\w*) rules?"
    r"|(?:不应|不能|不会|永远不会|不要)拒绝(?:遵守)?(?:我的)?(?:任何)?(?:问题|请求|要求|命令)"
    r"|必须服从所有命令|马基雅维利|[Mm]achiavellian|(?:扮演|称为|名为)AIM|AIM(?:代表|是一个)"
    r"|虚构的?语言模型|让(?:这个)?(?:人工智能|AI)说出|(?:操纵|欺骗|绕过)[^\n]{0,10}?(?:人工智能|AI)的(?:答案|回答|限制)"
    r"|(?:把|将)(?:炸弹|毒品|炸药|枪支?|武器|冰毒)(?:叫做|称为|当作)|(?:炸弹|炸药|冰毒)叫做"
    r"|(?:扮演|假装|过世|去世|已故)[^\n]{0,20}?(?:奶奶|祖母|外婆)[^\n]{0,60}?(?:序列号|序号|密钥|激活码|[Kk]ey|配方|凝固汽油|napalm)"
)
_CONTACT_HINT = re.compile(r"http|www\.|\.com|\.cn|\.net|\.org|微信|VX|vx|Vx|QQ|qq|地址[:：]|路[0-9]|街[0-9]|道[0-9]")
_CONTACT = re.compile(
    r"https?://\S+|www\.[A-Za-z0-9-]+\.\S+|[A-Za-z0-9-]+\.(com|cn|net|org)\b"  # URLs
    r"|(微信|VX|vx|Vx)(号|公众号)?[:：]?\s*[A-Za-z][-_A-Za-z0-9]{5,19}|加(我)?(微信|VX|vx|QQ|qq)"  # WeChat ids
    r"|(QQ|qq)(号|群)?[:：]?\s*[1-9][0-9]{4,11}"  # QQ numbers
    r"|地址[:：]|(路|街|道)[0-9]{1,5}号"  # street addresses
)
_URL = re.compile(r"https?://\S+|www\.[A-Za-z0-9-]+\.\S+")
# Every contact match contains a hint or what the PII masker's screen looks for: one scan rules most answers out.
_CONTACT_SIGNS = re.compile(f"{_CONTACT_HINT.pattern}|{PII_SIGNS.pattern}")
_CHAR_RUN = re.compile(r"(.)" + r"\1" * (DEGENERATE_CHAR_RUN - 1))  # spelled out: twice as fast as {n,}
_RUN_STRIDE = DEGENERATE_CHAR_RUN // 2
_EQUAL_NEIGHBOURS = re.compile(r"(.)\1", re.DOTALL)
_WRAPPER_START = re.compile(r"^\s*(<s>)?\s*(问[：:]|[Qq][：:])?\s*")
_WRAPPER_END = re.compile(r"\s*(答[：:]|[Aa][：:])?\s*(</s>)?\s*$")


def truncated_answer(question: str, answer: str) -> str | None:
    """The answer stops mid-thought: an unclosed code block, an open list item, an unclosed bracket or quote, a clause
    or list separator, a connector or particle, or a prose sentence (a line of 8+ Han characters that reads as one)
    without its final punctuation. A missing full stop alone is no cut: answers ending in code, a list, a table, a
    poem, a heading, a hashtag, a placeholder, a signature or a number are complete."""
    text = answer.rstrip()
    if not text:
        return "no text"
    last = text[text.rfind("\n") + 1 :].strip()
    tail = last.rstrip(_CLOSERS)
    end = tail[-1:]
    complete = end in _FINAL or (end != "" and unicodedata.category(end) == "So")  # a closing emoji ends one too
    fenced = "```" in text
    if complete and not fenced and not (end == "." and _OPEN_LIST_ITEM.fullmatch(last)):
        return None  # the common case, without reading the lines ("2." is an open list item, not a full stop)
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if fenced and sum(line.startswith("```") for line in lines) % 2:
        opening = last.startswith("```") and len(lines) > 1 and lines[-2][-1] in ":：" or not last.startswith("```")
        if opening and not complete:  # a fence opened and never closed; prose after a forgotten fence is complete
            return "an unclosed code block"
    if _OPEN_LIST_ITEM.fullmatch(last):
        return f"an open list item {last!r}"
    if complete or not tail or len(tail) < len(last):
        return None  # ends a sentence, or on a closing quote, bracket or markup
    unclosed = _unclosed(last)
    if unclosed:
        return f"an unclosed {unclosed!r}: {last[-12:]!r}"
    if end in _OPEN_PUNCTUATION or _OPEN_CONJUNCTION.search(tail):
        return f"ends with {tail[-12:]!r}"
    if _cut_sentence(lines):
        return f"ends with {tail[-12:]!r}"
    return None


def _unclosed(line: str) -> str | None:
    """The first bracket or typographic quote `line` opens and never closes (closers of earlier lines' openers are
    passed over)."""
    stack = []
    for char in line:
        if char in _PAIRS:
            stack.append(char)
        elif char in _CLOSING_OF and stack and stack[-1] == _CLOSING_OF[char]:
            stack.pop()
    return stack[0] if stack else None


def _ends_in_hashtag(line: str) -> bool:
    """The line's last word holds a hashtag ("…#健康", "ChatGPT＃Vercel")."""
    words = line.split()
    return bool(words) and ("#" in words[-1] or "＃" in words[-1])


def _cut_sentence(lines: list[str]) -> bool:
    """The last line is a prose sentence without its end: MIN_PROSE_HAN+ Han characters, ending on a Han character,
    letter or digit, not a table row, heading or hashtag, and read as a sentence: a plain line with punctuation inside
    it or after a line that ended a sentence; a list item with clauses inside it after an item that ended one. A verse
    or list paragraph (most of its last 3+ lines without final punctuation) is not prose."""
    last = lines[-1]
    ascii_word = re.search(r"[A-Za-z0-9]+$", last)
    if ascii_word:  # "…自己的LD" is cut; "…。祝好，Ilya" is signed
        before = last[: ascii_word.start()]
        if not before or not _HAN.match(before[-1]):
            return False
    elif not _HAN.match(last[-1]):
        return False
    han = len(_HAN.findall(last))
    if last[0] in "|#>" or _ends_in_hashtag(last) or _INLINE_LIST_ITEM.search(re.split("[。！？]", last)[-1]):
        return False
    if not ascii_word and _OPEN_PREPOSITION.search(last) and han >= MIN_CLAUSE_HAN:
        return True
    if not ascii_word and _OPEN_PARTICLE.search(last) and not _LIST_LINE.match(last):
        if han >= MIN_PROSE_HAN or (han >= MIN_CLAUSE_HAN and _PROSE_PUNCTUATION.search(last)):
            return True
    if han < MIN_PROSE_HAN:
        return False
    previous = lines[-2].rstrip(_CLOSERS) if len(lines) > 1 else ""
    after_sentence = bool(previous) and previous[-1] in _FINAL
    if _LIST_LINE.match(last):
        return after_sentence and bool(_LIST_CLAUSES.search(last))
    if not (_PROSE_PUNCTUATION.search(last) or after_sentence):
        return False
    block = lines[-VERSE_MIN_LINES:]
    unended = sum(1 for line in block if line.rstrip(_CLOSERS)[-1:] not in _FINAL)
    return not (len(block) >= VERSE_MIN_LINES and unended > len(block) / 2)


def ai_self_reference(question: str, answer: str) -> str | None:
    """The answer speaks of itself as an AI (“作为一个AI…”, “我是由OpenAI训练的…”, "as an AI"). A "作为" must open a
    clause ("SageMaker作为AI平台" is not the answer speaking of itself)."""
    for match in _AI_SELF.finditer(answer):
        start = match.start()
        if answer.startswith("作为", start) and start > 0 and answer[start - 1] not in _CLAUSE_START:
            continue
        return f"says {match.group(0)!r}"
    return None


def jailbreak(question: str, answer: str) -> str | None:
    """The turn is a jailbreak or unrestricted-persona prompt (DAN, developer mode, "ignore all previous instructions",
    an unfiltered or amoral persona, code words for harmful things, the grandma exploit), or answers as one (read in
    an answer only where a persona's name or mode shows)."""
    match = (_JAILBREAK_SIGNS.search(question) and _JAILBREAK.search(question)) or (
        _PERSONA_SIGNS.search(answer) and _JAILBREAK.search(answer)
    )
    return f"says {match.group(0)[:40]!r}" if match else None


def short_answer(question: str, answer: str) -> str | None:
    """Fewer than MIN_ANSWER_CHARS characters of answer, whitespace aside."""
    length = len("".join(answer.split()))
    return f"{length} characters (< {MIN_ANSWER_CHARS})" if length < MIN_ANSWER_CHARS else None


def answer_repeats_question(question: str, answer: str) -> str | None:
    """The answer only restates the question (normalised, equal or contained in it)."""
    if len(answer) > 2 * len(question) + REPEAT_SLACK_CHARS:
        return None  # too long to be a restatement (and normalising a long answer is the costly part)
    said, asked = normalise_query(answer), normalise_query(question)
    if said and (said == asked or said in asked):
        return "the answer restates the question"
    return None


def contact_or_ad(question: str, answer: str) -> str | None:
    """The answer carries a URL, a WeChat/QQ id, or a mobile, landline or 400/800 number."""
    if not _CONTACT_SIGNS.search(answer):
        return None
    if _CONTACT_HINT.search(answer) and (match := _CONTACT.search(answer)):
        return f"contains {match.group(0)[:24]!r}"
    phone = find_phone(answer)
    return f"contains {phone[:24]!r}" if phone else None


def degenerate_repetition(question: str, answer: str) -> str | None:
    """The answer repeats one clause over and over, or one character in a long run."""
    split = answer.replace("。", "，").replace("！", "，").replace("？", "，").replace("\n", "，").split("，")
    clauses = list(filter(None, split))
    if any(map(operator.eq, clauses, clauses[1:])):  # some clause follows itself: look for a run of it
        run, previous = 1, None
        for clause in clauses:
            run = run + 1 if clause == previous and len(clause) >= 2 else 1
            previous = clause
            if run >= DEGENERATE_CLAUSE_REPEATS:
                return f"repeats {clause[:24]!r} {run} times"
    return char_run(answer)


def char_run(text: str) -> str | None:
    """One letter or character DEGENERATE_CHAR_RUN times in a row, described; None when there is none.

    Such a run holds two equal characters at consecutive multiples of _RUN_STRIDE (half the run), so a scan of
    every _RUN_STRIDE-th character, a quarter of the text, rules most texts out before the full scan."""
    if not _EQUAL_NEIGHBOURS.search(text[::_RUN_STRIDE]):
        return None
    for match in _CHAR_RUN.finditer(text):
        if match.group(1).isalpha():  # a row of dashes or dots is layout, not degeneration
            return f"repeats {match.group(1)!r} {DEGENERATE_CHAR_RUN}+ times"
    return None


def mask_contacts(text: str) -> str:
    """`text` with URLs and personal data (the PII masker's) replaced, for showing rows to people."""
    return mask_pii(_URL.sub("[网址]", text))[0]


# In the order they are applied; a row is counted under the first that rejects it.
FILTERS: dict[str, Callable[[str, str], str | None]] = {
    JAILBREAK: jailbreak,
    SHORT_ANSWER: short_answer,
    ANSWER_REPEATS_QUESTION: answer_repeats_question,
    TRUNCATED_ANSWER: truncated_answer,
    AI_SELF_REFERENCE: ai_self_reference,
    CONTACT_OR_AD: contact_or_ad,
    DEGENERATE_REPETITION: degenerate_repetition,
}


# Filters that can only reject an answer one of these patterns matches (each branch literal-first). One scan
# with the union of the enabled filters' screens rules most answers out of all of them at once.
_SCREENS = {AI_SELF_REFERENCE: _AI_SELF, CONTACT_OR_AD: _CONTACT_SIGNS}


def first_rejection(pairs: list[tuple[str, str]], enabled: frozenset[str]) -> tuple[str, str] | None:
    """`(reason, detail)` of the first enabled filter that rejects any turn, else None."""
    checks, screen = _enabled_checks(enabled)
    if len(pairs) == 1:  # the common case, without the turn loop
        question, answer = pairs[0]
        screened = screen is not None and not screen.search(answer)
        for name, check in checks:
            if screened and name in _SCREENS:
                continue
            detail = check(question, answer)
            if detail is not None:
                return name, detail
        return None
    screened = [screen is not None and not screen.search(answer) for _, answer in pairs]
    for name, check in checks:
        for index, (question, answer) in enumerate(pairs):
            if screened[index] and name in _SCREENS:
                continue
            detail = check(question, answer)
            if detail is not None:
                return name, f"turn {index + 1}: {detail}"
    return None


@functools.cache
def _enabled_checks(enabled: frozenset[str]) -> tuple[tuple[tuple[str, Callable[[str, str], str | None]], ...], re.Pattern | None]:
    """The enabled filters in order, and the union of their screens (None when none has one)."""
    checks = tuple((name, check) for name, check in FILTERS.items() if name in enabled)
    screens = [_SCREENS[name].pattern for name, _ in checks if name in _SCREENS]
    return checks, (re.compile("|".join(screens)) if screens else None)


def strip_wrappers(question: str) -> str:
    """The question without its training prompt's markers (`<s>问：…答：</s>`); unchanged when it has none."""
    if not question or question[0] not in "<问Qq \t\r\n" and question[-1] not in "：:>\t\r\n ":
        return question  # the common case, checked cheaply
    return _WRAPPER_END.sub("", _WRAPPER_START.sub("", question, count=1), count=1)


def strip_think(answer: str) -> str:
    """`answer` without reasoning text: every `<think>…</think>` block, canonical or not; before a `</think>` that
    opens nothing, all that precedes it; from a `<think>` never closed, all that follows. Unchanged without a tag."""
    if "<think>" not in answer and "</think>" not in answer:
        return answer
    kept, position = [], 0
    while True:  # one pass over the text: a run of unclosed tags costs no more than the text
        opened = answer.find("<think>", position)
        closed = answer.find("</think>", position)
        if closed != -1 and (opened == -1 or closed < opened):  # a close that opens nothing: drop all before it
            kept, position = [], closed + len("</think>")
            continue
        if opened == -1:
            kept.append(answer[position:])
            break
        kept.append(answer[position:opened])
        if closed == -1:  # never closed: the rest is reasoning
            break
        position = closed + len("</think>")
    return "".join(kept).strip()
