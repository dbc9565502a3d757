"""Care advice in answers: documented keyword-and-pattern rules, and the reminders that close the gap.

Rules (each unit-tested, positive and negative):

- advises_care(answer): the answer points the user to a doctor or care (就医, 就诊, 看医生, 医院, 急诊, 门诊,
  X科就诊, 复查, 遵医嘱, 面诊, 拨打120 …), not under a negation (不需要/无需/不用/没必要/不必/暂不 within the
  four characters before: "不需要就医" does not count).
- urges_emergency(answer): an urgency word (立即, 马上, 立刻, 赶紧, 尽快, 第一时间, 现在就) followed within one
  clause by emergency care (拨打120, 120, 急救, 急诊, 送医, 就医, 医院), or a direct call for an
  ambulance (拨打120/999, 叫救护车, 呼叫急救).
- is_urgent_question(question): the patient describes an emergency sign: crushing chest pain, stroke signs,
  bleeding that will not stop, suicidal thoughts, convulsions or unconsciousness, breathlessness or cyanosis,
  poisoning or an overdose, throat or lip swelling with breathlessness, the worst headache of one's life,
  drowning, electric shock, carbon monoxide, snake bite, a large burn, a head injury with vomiting or
  drowsiness, heat stroke, a board-hard abdomen, choking, bleeding in pregnancy (`_URGENT_SIGNS`).

Policy (`--care-reminder`): `append` (default) adds CARE_REMINDER to a kept answer that does not advise
care, and EMERGENCY_REMINDER to the answer to an urgent question that does not urge emergency care;
`drop` skips such rows (NO_CARE_ADVICE, EMERGENCY_WITHOUT_URGENCY); `off` keeps the rows as they are.
A reminder is only added where the rule finds none, so it is never doubled.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import NamedTuple

from converters.choices import APPEND, DROP
from converters.records import Skip

NO_CARE_ADVICE = "no_care_advice"
EMERGENCY_WITHOUT_URGENCY = "emergency_without_urgency"
CARE_REMINDER_ADDED = "care_reminder_added"
EMERGENCY_REMINDER_ADDED = "emergency_reminder_added"

# In the voice of the medical system prompt; each satisfies its own rule (tested).
CARE_REMINDER = "以上内容仅供参考，不能替代医生面诊；如症状持续或加重，请及时到正规医院就诊，具体诊断和治疗请遵医嘱。"
EMERGENCY_REMINDER = "如果症状正在发生或持续加重，请立即拨打120或马上到最近医院的急诊就诊，不要等待。"
REMINDERS = (CARE_REMINDER, EMERGENCY_REMINDER)

_NEGATION = re.compile(r"(不需要|无需|不用|没必要|不必|不要去|暂不)$")
_NEGATION_CHARS = frozenset("不无没暂")


def _literal_first(*alternatives: str) -> re.Pattern:
    """One alternation whose every branch starts with a literal character, so `re` skips to candidate
    positions in C instead of trying every branch at every character (about 8x faster on answers)."""
    return re.compile("|".join(alternatives))


_PLACE = r"(正规|当地|附近|最近)?(的)?(医院|诊所|急诊|门诊|[\u4e00-\u9fff]{1,4}科)"
_CARE = _literal_first(
    "就医",
    "就诊",
    "遵医嘱",
    "面诊",
    "复查",
    "急诊",
    "门诊",
    r"拨打\s*120",
    "医生(的)?(指导|建议|诊断|评估)",
    *(f"{verb}(一下)?(专业)?医生" for verb in ("看", "找", "咨询", "请教")),
    "去" + _PLACE,
    "到" + _PLACE,
)
_URGENT_CARE = re.compile(
    r"(立即|马上|立刻|赶紧|赶快|尽快|第一时间|现在就|迅速)[^。！!？?；;\n]{0,15}(拨打\s*120|120|急救|急诊|送医|就医|医院)"
)
_AMBULANCE = _literal_first(r"拨打\s*(120|999)", "叫(救护车|急救)", "呼叫(救护车|急救)")
_CLAUSE = "[^，。,]"
_URGENT_SIGNS = _literal_first(
    # heart attack
    f"胸{_CLAUSE}{{0,8}}(剧痛|压榨|压着|绞痛)",
    "胸痛[^。]{0,15}(冷汗|大汗|左臂|左胳膊|左肩)",
    # stroke
    *(f"{part}{_CLAUSE}{{0,3}}歪" for part in ("嘴角", "口角", "口眼")),
    *(f"{side}{_CLAUSE}{{0,6}}(无力|麻木|不能动|抬不起)" for side in ("半身", "一侧", "一边", "半边")),
    f"说话{_CLAUSE}{{0,3}}(含糊|不清)",
    # bleeding that will not stop
    f"血{_CLAUSE}{{0,4}}(喷|止不住)",
    "大量出血",
    f"大口{_CLAUSE}{{0,2}}血",
    # suicidal thoughts
    "不想活",
    "想死",
    "自杀",
    "轻生",
    "结束(自己的)?生命",
    # convulsions, unconsciousness
    *(f"{when}{_CLAUSE}{{0,6}}(抽搐|惊厥)" for when in ("突然", "正在", "刚才", "全身", "高烧", "发烧")),
    "昏迷",
    "叫不醒",
    "不省人事",
    "神志不清",
    "意识不清",
    f"突然{_CLAUSE}{{0,4}}(晕倒|倒地)",
    # breathing
    "喘不上气",
    "喘不过气",
    "没有呼吸",
    "呼吸(很)?微弱",
    *(f"{part}{_CLAUSE}{{0,3}}发紫" for part in ("憋", "嘴唇", "脸")),
    # poisoning, overdose
    "误服",
    "误喝",
    "误吃",
    "误食",
    "农药",
    "敌敌畏",
    "中毒",
    *(f"{verb}了{_CLAUSE}{{0,4}}(一整|整瓶|整板|大量|过量)" for verb in ("吃", "喝", "服")),
    # anaphylaxis
    *(f"{part}{_CLAUSE}{{0,4}}肿[^。]{{0,8}}(喘|呼吸)" for part in ("喉咙", "嗓子", "嘴唇", "舌头")),
    # the worst headache of one's life
    "剧烈头痛",
    "最痛的一次",
    "头痛欲裂",
    # drowning, electric shock, carbon monoxide, snake bite, large burns
    "溺水",
    "触电",
    "一氧化碳",
    "烧炭",
    "被蛇咬",
    "毒蛇",
    "大面积(烫|烧)伤",
    f"大半{_CLAUSE}{{0,3}}(烫|烧)伤",
    f"烫伤{_CLAUSE}{{0,3}}大半",
    f"烧伤{_CLAUSE}{{0,3}}大半",
    # head injury with vomiting or drowsiness
    *(f"{verb}[^。]{{0,8}}头[^。]{{0,12}}(呕吐|吐了|想睡|昏)" for verb in ("摔", "撞", "磕")),
    # heat stroke, board-hard abdomen, choking, bleeding in pregnancy
    "中暑",
    "体温很高[^。]{0,8}(胡话|不出汗)",
    "硬得像木板",
    f"刀(割|绞){_CLAUSE}{{0,4}}(痛|疼)",
    *(f"{verb}[^。]{{0,8}}(发紫|哭不出|说不出|喘)" for verb in ("卡住", "噎住")),
    "孕[^。]{0,10}出血",
)


def advises_care(answer: str) -> bool:
    """The answer points the user to a doctor or care (see the module docstring)."""
    pos = 0
    while match := _CARE.search(answer, pos):
        before = answer[max(0, match.start() - 4) : match.start()]
        if _NEGATION_CHARS.isdisjoint(before) or not _NEGATION.search(before):
            return True
        pos = match.start() + 1
    return False


def urges_emergency(answer: str) -> bool:
    """The answer tells the user to seek emergency care now."""
    return bool(_URGENT_CARE.search(answer) or _AMBULANCE.search(answer))


def is_urgent_question(question: str) -> bool:
    """The patient describes an emergency sign (see the module docstring)."""
    return bool(_URGENT_SIGNS.search(question))


class CareFlags(NamedTuple):
    """What the rules find in one kept dialogue (after any reminder was added)."""

    advises_care: bool
    urgent: bool
    urges_emergency: bool


# Every combination, at index 4 * advises_care + 2 * urgent + urges_emergency: rows share these few tuples.
CARE_FLAGS = [CareFlags(*bits) for bits in itertools.product((False, True), repeat=3)]


def _with_sentence(answer: str, sentence: str) -> str:
    return f"{answer}\n\n{sentence}"


def without_reminders(answer: str) -> str:
    """The answer without the verbatim reminder sentences the append policy adds (what it said on its own)."""
    for sentence in REMINDERS:
        answer = answer.replace(f"\n\n{sentence}", "").replace(sentence, "")
    return answer


def apply_care_policy(pairs: list[tuple[str, str]], policy: str) -> tuple[list[tuple[str, str]], list[str], CareFlags] | Skip:
    """Check one dialogue's `(question, answer)` turns against the rules and apply `policy`.

    A dialogue advises care when any answer does; it is urgent when any question is, and then the answer
    to the first urgent question (or a later one) must urge emergency care. Returns the turns, the changes
    made (CARE_REMINDER_ADDED, EMERGENCY_REMINDER_ADDED) and the flags, or the Skip under `drop`.
    """
    if len(pairs) == 1:  # the common case, without loops
        ((question, answer),) = pairs
        first_urgent = 0 if is_urgent_question(question) else None
        urged = first_urgent is not None and urges_emergency(answer)
        cared = advises_care(answer)
    else:
        first_urgent = next((i for i, (question, _) in enumerate(pairs) if is_urgent_question(question)), None)
        urged = first_urgent is not None and any(urges_emergency(answer) for _, answer in pairs[first_urgent:])
        cared = any(advises_care(answer) for _, answer in pairs)
    urgent = first_urgent is not None
    changes: list[str] = []
    if policy == DROP:
        if urgent and not urged:
            return Skip(EMERGENCY_WITHOUT_URGENCY, "the answer to an urgent question does not urge emergency care")
        if not cared:
            return Skip(NO_CARE_ADVICE, "no answer advises seeing a doctor")
    elif policy == APPEND:
        if urgent and not urged:
            question, answer = pairs[first_urgent]
            pairs = [*pairs[:first_urgent], (question, _with_sentence(answer, EMERGENCY_REMINDER)), *pairs[first_urgent + 1 :]]
            changes.append(EMERGENCY_REMINDER_ADDED)
            urged = cared = True  # the emergency sentence sends the user to care too
        if not cared:
            question, answer = pairs[-1]
            pairs = [*pairs[:-1], (question, _with_sentence(answer, CARE_REMINDER))]
            changes.append(CARE_REMINDER_ADDED)
            cared = True
    return pairs, changes, CARE_FLAGS[4 * cared + 2 * urgent + urged]


@dataclass
class CareTally:
    """Running counts over kept dialogues: advising care, and urging emergency care among urgent ones."""

    rows: int = 0
    advises_care: int = 0
    urgent_questions: int = 0
    urges_emergency: int = 0

    def add(self, flags: CareFlags, rows: int = 1) -> None:
        """Count the care flags of one row (or of `rows` rows with the same flags)."""
        self.rows += rows
        self.advises_care += flags.advises_care * rows
        self.urgent_questions += flags.urgent * rows
        self.urges_emergency += (flags.urgent and flags.urges_emergency) * rows

    def as_dict(self) -> dict:
        """Counts and shares (the emergency share is None when no question was urgent)."""
        return {
            "rows": self.rows,
            "advises_care": self.advises_care,
            "advises_care_share": round(self.advises_care / self.rows, 4) if self.rows else 0.0,
            "urgent_questions": self.urgent_questions,
            "urges_emergency": self.urges_emergency,
            "urges_emergency_share": (round(self.urges_emergency / self.urgent_questions, 4) if self.urgent_questions else None),
        }
