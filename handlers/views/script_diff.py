"""What a reload changed, as Telegram HTML for admins: questions, texts by key, campaigns;
compact (ids, not whole texts) and always within one message. Ids come from the marketer's
file and are escaped."""

from __future__ import annotations

from html import escape

from funnel.core.telegram_text import TELEGRAM_LIMIT
from funnel.script.diff import Changes, ScriptDiff, diff_scripts
from funnel.script.schema import Script
from handlers.i18n import N_, t

# Ids listed per line before "+N": the reply names what changed, the file says how.
IDS_PER_LINE = 12


def _ids(ids: tuple[str, ...], budget: int) -> str:
    shown: list[str] = []
    used = 0
    for n, item in enumerate(ids):
        text = escape(item)
        if n >= IDS_PER_LINE or used + len(text) + 2 > budget:
            return ", ".join(shown) + f" +{len(ids) - n}"
        shown.append(text)
        used += len(text) + 2
    return ", ".join(shown)


def _section(title_key: str, changes: Changes, lang: str, budget: int) -> list[str]:
    if not changes:
        return []
    lines = [t(title_key, lang=lang)]
    for sign, ids in (("+", changes.added), ("−", changes.removed), ("~", changes.changed)):
        if ids:
            lines.append(f"{sign} {_ids(ids, budget)}")
    return lines


def format_script_diff_html(diff: ScriptDiff, lang: str, budget: int = 3000) -> str:
    """The changes from the old version to the new one, at most `budget` characters."""
    if diff.empty:
        return t("admin.reload.diff.none", lang=lang)
    per_line = max(200, budget // 8)
    lines = [
        t(
            "admin.reload.diff.versions",
            lang=lang,
            old=escape(diff.old_label),
            new=escape(diff.new_label),
        )
    ]
    lines += _section(N_("admin.reload.diff.questions"), diff.questions, lang, per_line)
    lines += _section(N_("admin.reload.diff.texts"), diff.texts, lang, per_line)
    lines += _section(N_("admin.reload.diff.campaigns"), diff.campaigns, lang, per_line)
    if diff.other:
        lines.append(t("admin.reload.diff.other", lang=lang, parts=_ids(diff.other, per_line)))
    text = "\n".join(lines)
    limit = min(budget, TELEGRAM_LIMIT)
    if len(text) > limit:  # every line is short; cut at a line, never inside a tag
        text = text[: text.rfind("\n", 0, limit - 2)] + "\n…"
    return text


def format_reload_html(old: Script, new: Script) -> str:
    """The reply to a reload that took: the version now in force and what changed."""
    loaded = t("admin.reload.loaded", lang=new.language, label=escape(new.label))
    return f"{loaded}\n{format_script_diff_html(diff_scripts(old, new), new.language)}"


def format_refusal_html(problems: list[str], lang: str) -> str:
    """The reply to a refused reload: the problems (already cut to fit) with their lines."""
    lines = "\n".join(escape(p) for p in problems)
    return t("admin.reload.refused", lang=lang, problems=lines)
