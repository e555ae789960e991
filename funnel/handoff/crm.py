"""What the school's CRM receives for a qualified or hot lead: who the lead is, where they
came from, their stage, temperature, score, answers and the reasons behind the score, with
an idempotency key that stays the same on every retry of one notification."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core import store
from funnel.core.models import Lead, Purchase
from funnel.dialogue import qualification
from funnel.script.schema import Script

# Fixed for ever: the keys of notifications already sent must not change with a release.
KEY_NAMESPACE = uuid.UUID("6f0d8a52-3c1e-4d0b-9a57-2f4c1b7e9d30")


def idempotency_key(notification_id: int, lead_id: int, occasion: str, created: datetime) -> str:
    """One key per notification, the same on every retry. The creation time keeps it unique
    across databases (a fresh database numbers its leads from 1 again)."""
    name = f"{notification_id}/{lead_id}/{occasion}/{created.isoformat()}"
    return str(uuid.uuid5(KEY_NAMESPACE, name))


async def lead_payload(
    session: AsyncSession, script: Script, lead: Lead, key: str
) -> dict[str, Any]:
    """The JSON document for one lead, as it stands now."""
    answers = await store.current_answers(session, lead.id)
    listed: list[dict[str, Any]] = []
    for answer in answers:
        question = script.question(answer.question)
        option = question.option(answer.option) if question and answer.option else None
        listed.append(
            {
                "question": answer.question,
                "bant": question.bant if question else None,
                "option": answer.option,
                "value": option.label if option else answer.value,
                "score": answer.score,
                "at": answer.at.isoformat(),
            }
        )
    chosen = {answer.question: answer.option for answer in answers}
    reasons = qualification.verdict(script, chosen, lead.score).reasons if answers else []
    name = " ".join(part for part in (lead.first_name, lead.last_name) if part)
    return {
        "event": "lead",
        "idempotency_key": key,
        "lead_id": lead.id,
        "name": name or None,
        "first_name": lead.first_name,
        "last_name": lead.last_name,
        "username": lead.username,
        "telegram_user_id": lead.user_id,
        "link": f"https://t.me/{lead.username}" if lead.username else None,
        "language": lead.language,
        "source": lead.source,
        "stage": lead.stage,
        "stage_title": script.titles.get(lead.stage, lead.stage),
        "temperature": lead.temperature,
        "score": lead.score,
        "answers": listed,
        "reasons": reasons,
        "created_at": lead.created_at.isoformat(),
    }


def purchase_payload(
    purchase: Purchase, event: str, key: str, lead: Lead | None
) -> dict[str, Any]:
    """A payment in the bot ("purchase") or its refund ("refund"): the money and Telegram's
    ids, under the lead's number (the CRM has the person from the lead's own event)."""
    return {
        "event": "purchase" if event == "paid" else "refund",
        "idempotency_key": key,
        "lead_id": purchase.lead_id,
        "purchase_id": purchase.id,
        "amount": str(purchase.amount),  # a decimal string: exact, never a float
        "currency": purchase.currency,
        "offer": purchase.offer,
        "telegram_payment_charge_id": purchase.telegram_payment_charge_id,
        "provider_payment_charge_id": purchase.provider_payment_charge_id,
        "paid_at": purchase.at.isoformat(),
        "refunded_at": purchase.refunded_at.isoformat() if purchase.refunded_at else None,
        "stage": lead.stage if lead is not None else None,
    }


def forgotten_payload(lead_id: int, key: str, at: datetime) -> dict[str, Any]:
    """Tells the CRM that the lead asked to be forgotten: it should erase what it holds."""
    return {
        "event": "forgotten",
        "idempotency_key": key,
        "lead_id": lead_id,
        "forgotten_at": at.isoformat(),
    }
