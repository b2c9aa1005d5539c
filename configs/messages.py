"""What Lifeline says: the events, the fields each event's message may use, and the default texts.

Templates are Jinja2, rendered in a sandbox with undefined fields as errors: an operator's edit
can neither reach Python nor send a message with a hole in it. `lifeline validate` renders every
template with its event's fields in both languages.
"""

from __future__ import annotations

from functools import cache
from typing import Literal, get_args

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from lifeline.configs.base import PlanModel
from pydantic import Field

Event = Literal[
    "incident_declared", "approval_needed", "failover_started", "recovered", "failed", "cancelled",
    "failback_done", "drill_started", "drill_result", "backup_failed", "alert_received", "test",
]
EVENTS: tuple[str, ...] = get_args(Event)
Language = Literal["zh", "en"]
LANGUAGES: tuple[str, ...] = get_args(Language)

COMMON_FIELDS = {"plan": "callcenter-east", "hotline": "+861012345678", "run_id": "20261203T091500-1a2b3c",
                 "at": "2026-12-03 09:15", "recipient": "Wang Fang"}
EVENT_FIELDS: dict[str, dict[str, object]] = {
    "incident_declared": {"from_site": "main", "to_site": "dr", "reason": "main site power loss"},
    "approval_needed": {"from_site": "main", "to_site": "dr", "reason": "main site power loss"},
    "failover_started": {"from_site": "main", "to_site": "dr", "reason": "main site power loss"},
    "recovered": {"kind": "failover", "site": "dr", "rto_minutes": 4.2, "affected_customers": 37},
    "failed": {"kind": "failover", "error": "promote crm at dr: timed out"},
    "cancelled": {"kind": "failover", "reason": "not approved"},
    "failback_done": {"site": "main", "rto_minutes": 3.1},
    "drill_started": {"scenario": "site-loss"},
    "drill_result": {"scenario": "site-loss", "status": "completed", "rto_minutes": 4.2, "met_targets": True},
    "backup_failed": {"datasets": "crm-db", "error": "repository locked"},
    "alert_received": {"kind": "weather", "severity": "severe", "headline": "Typhoon warning for Pudong",
                       "description": "Winds of 120 km/h expected from 18:00.", "instruction": "Stay indoors.",
                       "sites": "main", "exercise": False},
    "test": {"message": "Monthly roster test: please acknowledge."},
}
"""Each event's fields, with the sample values `validate` renders templates with."""


class Message(PlanModel):
    subject: str = Field("", description="Email subject and chat title; SMS carry only the body.")
    body: str = Field(min_length=1)


class Localized(PlanModel):
    zh: Message
    en: Message


def _message(subject: str, body: str) -> Message:
    return Message(subject=subject, body=body)


_FOOT_ZH = "应急热线 {{ hotline }}。运行 {{ run_id }}。"
_FOOT_EN = "Emergency hotline {{ hotline }}. Run {{ run_id }}."
DEFAULT_TEMPLATES: dict[str, Localized] = {
    "incident_declared": Localized(
        zh=_message("【应急】{{ plan }} 已宣布事件", "{{ at }} {{ plan }} 宣布事件：{{ reason or '站点故障' }}。"
                    "准备从 {{ from_site }} 切换到 {{ to_site }}。请确认收到。" + _FOOT_ZH),
        en=_message("[EMERGENCY] {{ plan }}: incident declared", "{{ at }} {{ plan }} declared an incident: "
                    "{{ reason or 'site failure' }}. Preparing to fail over from {{ from_site }} to {{ to_site }}. "
                    "Please acknowledge. " + _FOOT_EN)),
    "approval_needed": Localized(
        zh=_message("【待批准】{{ plan }} 切换", "{{ plan }} 从 {{ from_site }} 切换到 {{ to_site }} 需要批准。" + _FOOT_ZH),
        en=_message("[APPROVAL] {{ plan }} failover", "{{ plan }}: failing over from {{ from_site }} to {{ to_site }} "
                    "needs a person's approval. " + _FOOT_EN)),
    "failover_started": Localized(
        zh=_message("【切换中】{{ plan }}", "{{ at }} {{ plan }} 正在从 {{ from_site }} 切换到 {{ to_site }}。" + _FOOT_ZH),
        en=_message("[FAILOVER] {{ plan }}", "{{ at }} {{ plan }} is failing over from {{ from_site }} to "
                    "{{ to_site }}. " + _FOOT_EN)),
    "recovered": Localized(
        zh=_message("【已恢复】{{ plan }}", "{{ at }} {{ plan }} 已在 {{ site }} 恢复服务，用时 {{ rto_minutes }} 分钟，"
                    "受影响客户 {{ affected_customers }} 位。" + _FOOT_ZH),
        en=_message("[RECOVERED] {{ plan }}", "{{ at }} {{ plan }} serves again from {{ site }} after "
                    "{{ rto_minutes }} min; {{ affected_customers }} customers affected. " + _FOOT_EN)),
    "failed": Localized(
        zh=_message("【失败】{{ plan }} {{ kind }}", "{{ at }} {{ plan }} 的 {{ kind }} 失败：{{ error }}。"
                    "请立即处理并确认。" + _FOOT_ZH),
        en=_message("[FAILED] {{ plan }} {{ kind }}", "{{ at }} {{ plan }}: {{ kind }} failed: {{ error }}. "
                    "Act now and acknowledge. " + _FOOT_EN)),
    "cancelled": Localized(
        zh=_message("【已取消】{{ plan }} {{ kind }}", "{{ at }} {{ plan }} 的 {{ kind }} 已取消：{{ reason }}。" + _FOOT_ZH),
        en=_message("[CANCELLED] {{ plan }} {{ kind }}", "{{ at }} {{ plan }}: {{ kind }} cancelled: {{ reason }}. "
                    + _FOOT_EN)),
    "failback_done": Localized(
        zh=_message("【已回切】{{ plan }}", "{{ at }} {{ plan }} 已回切到 {{ site }}，用时 {{ rto_minutes }} 分钟。" + _FOOT_ZH),
        en=_message("[FAILBACK DONE] {{ plan }}", "{{ at }} {{ plan }} serves from {{ site }} again, after "
                    "{{ rto_minutes }} min. " + _FOOT_EN)),
    "drill_started": Localized(
        zh=_message("【演练】{{ plan }} {{ scenario }}", "{{ at }} {{ plan }} 开始演练 {{ scenario }}（非真实事件）。" + _FOOT_ZH),
        en=_message("[DRILL] {{ plan }} {{ scenario }}", "{{ at }} {{ plan }} starts drill {{ scenario }} "
                    "(not a real incident). " + _FOOT_EN)),
    "drill_result": Localized(
        zh=_message("【演练结果】{{ plan }} {{ scenario }}", "{{ plan }} 演练 {{ scenario }}：{{ status }}，"
                    "恢复用时 {{ rto_minutes }} 分钟，{{ '达标' if met_targets else '未达标' }}。" + _FOOT_ZH),
        en=_message("[DRILL RESULT] {{ plan }} {{ scenario }}", "{{ plan }} drill {{ scenario }}: {{ status }}, "
                    "recovered in {{ rto_minutes }} min, targets {{ 'met' if met_targets else 'missed' }}. " + _FOOT_EN)),
    "backup_failed": Localized(
        zh=_message("【备份失败】{{ plan }}", "{{ at }} {{ plan }} 备份失败（{{ datasets }}）：{{ error }}。请处理并确认。"
                    + _FOOT_ZH),
        en=_message("[BACKUP FAILED] {{ plan }}", "{{ at }} {{ plan }}: backup of {{ datasets }} failed: {{ error }}. "
                    "Act and acknowledge. " + _FOOT_EN)),
    "alert_received": Localized(
        zh=_message("【{% if exercise %}演习 {% endif %}预警】{{ headline }}",
                    "{{ at }} {{ plan }} 收到{{ severity }}级预警（{{ kind }}，影响站点 {{ sites }}）：{{ headline }}。"
                    "{{ description }} {{ instruction }} 应急准备已启动。" + _FOOT_ZH),
        en=_message("[{% if exercise %}EXERCISE {% endif %}WARNING] {{ headline }}",
                    "{{ at }} {{ plan }} received a {{ severity }} {{ kind }} warning for site {{ sites }}: {{ headline }}. "
                    "{{ description }} {{ instruction }} Preparedness has started. " + _FOOT_EN)),
    "test": Localized(
        zh=_message("【测试】{{ plan }} 通讯测试", "{{ message }} " + _FOOT_ZH),
        en=_message("[TEST] {{ plan }} communications test", "{{ message }} " + _FOOT_EN)),
}


PUBLIC_TEMPLATES: dict[str, Localized] = {
    "failover_started": Localized(
        zh=_message("服务切换至备用站点", "我们正在将服务切换到备用站点，期间部分服务可能短暂中断。如需帮助请拨打 {{ hotline }}。"),
        en=_message("Moving service to our backup site", "We are moving our service to our backup site; some services "
                    "may be briefly unavailable. For help, call {{ hotline }}.")),
    "recovered": Localized(
        zh=_message("服务已恢复", "服务已在备用站点恢复正常。感谢您的耐心等待。"),
        en=_message("Service restored", "Our service is running normally again from our backup site. Thank you for "
                    "your patience.")),
    "failback_done": Localized(
        zh=_message("服务已回到主站点", "服务已回到主站点，运行正常。"),
        en=_message("Service back at our main site", "Our service is back at our main site and running normally.")),
    "alert_received": Localized(
        zh=_message("预警：{{ headline }}", "我们已收到预警（{{ headline }}）并启动应急准备。目前服务运行正常。"
                    "如需帮助请拨打 {{ hotline }}。"),
        en=_message("Warning: {{ headline }}", "We have received a warning ({{ headline }}) and started our emergency "
                    "preparations. Our service is running normally. For help, call {{ hotline }}.")),
    "alert_cancelled": Localized(
        zh=_message("预警解除：{{ headline }}", "预警已解除。服务运行正常。"),
        en=_message("Warning lifted: {{ headline }}", "The warning has been lifted. Our service is running normally.")),
}
"""What the public status page says of an event, unless the plan's `templates.EVENT.customers` says otherwise."""


@cache
def _environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@cache
def _compiled(source: str) -> Template:
    return _environment().from_string(source)


def render_text(source: str, fields: dict[str, object]) -> str:
    """Raises jinja2.TemplateError (UndefinedError, SecurityError, TemplateSyntaxError) on a bad template."""
    return _compiled(source).render(**fields).strip()


def written_by_hand(text: str) -> Localized:
    """A message somebody wrote (`lifeline notify --message`, a runbook `notify` step), the same in both languages;
    its first line is the subject."""
    message = Message(subject=text.strip().splitlines()[0][:80] if text.strip() else "", body=text)
    return Localized(zh=message, en=message)


def sample_fields(event: str) -> dict[str, object]:
    return {**COMMON_FIELDS, **EVENT_FIELDS[event]}


def unknown_fields(event: str) -> dict[str, object]:
    """Every field the event's templates may use, as "—": for a message sent outside the run it describes."""
    return dict.fromkeys(sample_fields(event), "—")


def template_problems(event: str, localized: Localized,
                      fields: dict[str, object] | None = None) -> list[tuple[str, str]]:
    """(field path below the template, message) for each part that does not render with the event's fields
    (or with `fields`, for a template that belongs to no event)."""
    problems = []
    samples = fields if fields is not None else sample_fields(event)
    for language in LANGUAGES:
        message: Message = getattr(localized, language)
        for part in ("subject", "body"):
            try:
                render_text(getattr(message, part), samples)
            except TemplateError as error:
                known = ", ".join(sorted(samples))
                problems.append((f"{language}.{part}", f"does not render: {error.message} (fields: {known})"))
    return problems
