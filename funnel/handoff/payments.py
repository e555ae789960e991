"""Payments in the bot (Telegram Payments): the invoice for one of the script's offers, the
pre-checkout check, a successful payment recorded exactly once, and refunds.

The invoice's payload names the lead, the offer and a nonce, nothing of the person
(`lb1:<lead>:<offer>:<nonce>`); Telegram hands it back in the pre-checkout query and in the
successful payment. A purchase row is unique by Telegram's charge id, so a payment Telegram
delivers twice (or in two updates) is one purchase. A refund keeps the row and marks it
(`refunded_at`): every report counts only unrefunded purchases, and the log of stages keeps
what happened."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core import store
from funnel.core.errors import InputError
from funnel.core.inputs import quote
from funnel.core.models import Lead, Purchase
from funnel.handoff.purchases import record_purchase
from funnel.script.schema import Offer, Script, minor_units

PAYLOAD_PREFIX = "lb1"
MAX_PAYLOAD_BYTES = 128
_PAYLOAD = re.compile(r"^lb1:(\d{1,12}):([a-z][a-z0-9_]{0,23}):([A-Za-z0-9_-]{4,32})$")
# Telegram's charge ids are short ASCII tokens; anything else an admin types is a typo.
_CHARGE_ID = re.compile(r"^[A-Za-z0-9_.:-]{6,128}$")
MAX_CHARGE_ID = 128


@dataclass(frozen=True)
class Invoice:
    """What `sendInvoice` carries for one offer and one lead."""

    offer_id: str
    title: str
    description: str
    payload: str
    currency: str
    total_amount: int  # in the currency's smallest units
    photo_url: str | None
    stars: bool


def invoice_payload(lead_id: int, offer_id: str, nonce: str | None = None) -> str:
    payload = f"{PAYLOAD_PREFIX}:{lead_id}:{offer_id}:{nonce or secrets.token_urlsafe(6)}"
    assert len(payload.encode()) <= MAX_PAYLOAD_BYTES
    return payload


def parse_payload(payload: str | None) -> tuple[int, str] | None:
    """(lead id, offer id) of a payload this bot wrote; None for anything else."""
    if not payload or len(payload) > MAX_PAYLOAD_BYTES:
        return None
    match = _PAYLOAD.fullmatch(payload)
    if match is None:
        return None
    return int(match.group(1)), match.group(2)


def invoice_for(script: Script, offer_id: str, lead_id: int, nonce: str | None = None) -> Invoice:
    offer = script.offer(offer_id)
    if offer is None:
        raise LookupError(f"no offer {offer_id!r} in the script")
    return Invoice(
        offer_id=offer.id,
        title=offer.title,
        description=offer.description,
        payload=invoice_payload(lead_id, offer.id, nonce),
        currency=offer.currency,
        total_amount=offer.total_amount,
        photo_url=offer.photo_url,
        stars=offer.stars,
    )


def sendable(offer: Offer, provider_token: bool) -> bool:
    """Stars need no provider; any other currency needs PAYMENT_PROVIDER_TOKEN."""
    return offer.stars or provider_token


def unsendable_offers(script: Script, provider_token: bool) -> list[Offer]:
    """Offers the bot could not send as things are set up (for `check` and the start-up)."""
    return [offer for offer in script.offers if not sendable(offer, provider_token)]


def to_amount(total_amount: int, currency: str) -> Decimal:
    """Telegram's smallest units as money: 4990050 RUB kopecks → 49900.50."""
    units = minor_units(currency)
    return (Decimal(total_amount) / units).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# -- pre-checkout ---------------------------------------------------------------------------

Refusal = Literal["unknown_invoice", "not_yours", "forgotten", "offer_gone", "price_changed"]


@dataclass(frozen=True)
class Checkout:
    """Whether Telegram may take the money; `reason` says why not."""

    ok: bool
    reason: Refusal | None = None
    lead_id: int | None = None
    offer_id: str | None = None


async def check_checkout(
    session: AsyncSession,
    script: Script,
    *,
    payer_id: int,
    payload: str,
    currency: str,
    total_amount: int,
) -> Checkout:
    """The last word before the charge: the invoice is ours and the payer's, the lead is not
    forgotten, the offer is still in the script at the same price and currency."""
    parsed = parse_payload(payload)
    if parsed is None:
        return Checkout(False, "unknown_invoice")
    lead_id, offer_id = parsed
    lead = await store.lead_by_id(session, lead_id)
    if lead is None:
        return Checkout(False, "unknown_invoice", offer_id=offer_id)
    if lead.deleted_at is not None:
        return Checkout(False, "forgotten", lead_id, offer_id)
    if lead.user_id != payer_id:
        # A forwarded invoice: the lead it was made for is someone else.
        return Checkout(False, "not_yours", lead_id, offer_id)
    offer = script.offer(offer_id)
    if offer is None:
        return Checkout(False, "offer_gone", lead_id, offer_id)
    if offer.currency != currency or offer.total_amount != total_amount:
        return Checkout(False, "price_changed", lead_id, offer_id)
    return Checkout(True, None, lead_id, offer_id)


# -- the successful payment -----------------------------------------------------------------


@dataclass(frozen=True)
class Paid:
    """What a successful payment came to. `recorded`: a new purchase; `duplicate`: this
    charge was recorded before (Telegram delivered it again); `unmatched`: no lead to record
    it for (the operator must look: the money was taken)."""

    status: Literal["recorded", "duplicate", "unmatched"]
    lead_id: int | None = None
    purchase_id: int | None = None
    stage: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    offer_id: str | None = None


async def record_payment(
    session: AsyncSession,
    script: Script,
    *,
    payer_id: int,
    payload: str,
    currency: str,
    total_amount: int,
    telegram_charge_id: str,
    provider_charge_id: str | None,
    at: datetime,
) -> Paid:
    """Records the purchase once per Telegram charge and moves the lead to customer (loyal on
    a repeat purchase); the caller commits, then thanks the buyer."""
    existing = await purchase_by_charge(session, telegram_charge_id)
    if existing is not None:
        return Paid("duplicate", existing.lead_id, existing.id, None, existing.amount,
                    existing.currency, existing.offer)  # fmt: skip
    parsed = parse_payload(payload)
    lead: Lead | None = None
    offer_id = None
    if parsed is not None:
        lead_id, offer_id = parsed
        lead = await store.lead_by_id(session, lead_id)
        # Forgotten since the pre-checkout: the money is still the (anonymous) lead's.
        if lead is not None and lead.deleted_at is None and lead.user_id != payer_id:
            lead = None
    if lead is None:
        lead = await store.lead_by_user(session, payer_id)
    if lead is None:
        return Paid("unmatched", offer_id=offer_id)
    amount = to_amount(total_amount, currency)
    stage = await record_purchase(
        session, script, lead, amount, currency, None, at,
        telegram_charge_id=telegram_charge_id[:MAX_CHARGE_ID],
        provider_charge_id=(provider_charge_id or None) and provider_charge_id[:MAX_CHARGE_ID],
        offer=offer_id,
    )  # fmt: skip
    await session.flush()
    purchase = await purchase_by_charge(session, telegram_charge_id)
    assert purchase is not None
    return Paid("recorded", lead.id, purchase.id, stage, amount, currency, offer_id)


async def purchase_by_charge(session: AsyncSession, charge_id: str) -> Purchase | None:
    return (
        await session.scalars(
            select(Purchase).where(
                Purchase.telegram_payment_charge_id == charge_id[:MAX_CHARGE_ID]
            )
        )
    ).first()


# -- refunds --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refundable:
    """The purchase an admin's reference names, and how to give the money back."""

    purchase: Purchase
    lead: Lead
    # Telegram Stars go back through refundStarPayment; anything else through the provider.
    via_telegram: bool


async def find_refundable(session: AsyncSession, reference: str) -> Refundable:
    """The purchase named by a lead (#12, 12, @username: its one unrefunded purchase) or a
    Telegram charge id. InputError with a code the presentation explains otherwise."""
    reference = reference.strip()
    if not reference:
        raise InputError("refund.no_reference")
    purchase: Purchase | None
    if reference.startswith(("#", "@")) or reference.isdigit():
        lead = await store.lead_by_reference(session, reference)
        if lead is None:
            raise InputError("refund.no_lead", value=quote(reference, 40))
        open_purchases = list(
            (
                await session.scalars(
                    select(Purchase)
                    .where(Purchase.lead_id == lead.id, Purchase.refunded_at.is_(None))
                    .order_by(Purchase.at, Purchase.id)
                )
            ).all()
        )
        if not open_purchases:
            refunded = await session.scalar(
                select(func.count()).where(Purchase.lead_id == lead.id)
            )
            code = "refund.already_refunded" if refunded else "refund.nothing_to_refund"
            raise InputError(code, lead=lead.id)
        if len(open_purchases) > 1:
            charges = ", ".join(p.telegram_payment_charge_id or f"#{p.id}" for p in open_purchases)
            raise InputError("refund.several", lead=lead.id, charges=quote(charges, 300))
        purchase = open_purchases[0]
    else:
        if not _CHARGE_ID.fullmatch(reference):
            raise InputError("refund.bad_reference", value=quote(reference, 40))
        purchase = await purchase_by_charge(session, reference)
        if purchase is None:
            raise InputError("refund.unknown_charge", value=quote(reference, 40))
        if purchase.refunded_at is not None:
            raise InputError("refund.already_refunded", lead=purchase.lead_id)
        lead = await session.get(Lead, purchase.lead_id)
        assert lead is not None  # the purchase's foreign key
    via_telegram = purchase.currency == "XTR" and purchase.telegram_payment_charge_id is not None
    return Refundable(purchase, lead, via_telegram)


async def mark_refunded(
    session: AsyncSession, purchase: Purchase, by: int | None, at: datetime
) -> bool:
    """Marks the purchase refunded; False when it already was. When the lead has no purchase
    left, the planned post-sale messages are cancelled (nobody to thank for a course they
    gave back)."""
    if purchase.refunded_at is not None:
        return False
    purchase.refunded_at = at
    purchase.refunded_by = by
    await session.flush()
    left = await session.scalar(
        select(func.count()).where(
            Purchase.lead_id == purchase.lead_id, Purchase.refunded_at.is_(None)
        )
    )
    if not left:
        await store.cancel_pending_touches(session, purchase.lead_id, "refunded")
    return True
