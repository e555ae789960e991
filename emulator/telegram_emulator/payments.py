"""Telegram Payments in the emulator: `sendInvoice` (validated like Telegram), the
pre-checkout query a paying user triggers (the bot has 10 seconds to answer it with
`answerPreCheckoutQuery`), the `successful_payment` message that follows, and
`refundStarPayment` (which also brings the bot a `refunded_payment` message).

A simulated user pays with `await user.pay(invoice_message)`; the control API's
`POST /_emulator/users/{id}/pay` does the same for a bot in another process."""

from __future__ import annotations

import contextlib
import re
import weakref
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .errors import bad_request
from .inbound import post_message
from .markup import parse_reply_markup
from .state import BotIdentity, BotMessage, Button, ChatRecord, UserMessage, UserRecord, World

# Telegram waits this long for answerPreCheckoutQuery, then the payment fails.
PRE_CHECKOUT_SECONDS = 10.0
MAX_TITLE = 32
MAX_DESCRIPTION = 255
MAX_PAYLOAD_BYTES = 128
MAX_START_PARAMETER = 64
MAX_ERROR_MESSAGE = 255
STARS = "XTR"
# Currencies without cents, as Telegram counts them (the smallest unit is 1).
WHOLE_UNIT_CURRENCIES = frozenset({"XTR", "CLP", "ISK", "JPY", "KRW", "PYG", "UGX", "VND"})
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_PROVIDER_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_:-]{3,}$")
_START_PARAMETER = re.compile(r"^[A-Za-z0-9_-]*$")


@dataclass
class InvoiceRecord:
    """An invoice message the bot sent."""

    chat_id: int
    message_id: int
    title: str
    description: str
    payload: str
    currency: str
    total_amount: int
    provider_token: str
    photo_url: str | None = None
    start_parameter: str = ""


@dataclass
class PreCheckoutRecord:
    """A pre-checkout query sent to the bot; `ok` is set once the bot answers."""

    query_id: str
    user_id: int
    payload: str
    currency: str
    total_amount: int
    invoice: InvoiceRecord | None = None
    ok: bool | None = None
    error_message: str | None = None
    sent_at: float = 0.0


@dataclass
class ChargeRecord:
    """A successful payment (a charge) and whether it was refunded."""

    telegram_payment_charge_id: str
    provider_payment_charge_id: str
    user_id: int
    payload: str
    currency: str
    total_amount: int
    refunded: bool = False


@dataclass(frozen=True)
class PaymentResult:
    """What paying came to: `paid` (with the charge and the successful_payment message),
    `declined` (the bot said no: `error_message`) or `timeout` (the bot did not answer in
    time)."""

    status: Literal["paid", "declined", "timeout"]
    query: PreCheckoutRecord
    charge: ChargeRecord | None = None
    message: UserMessage | None = None
    error_message: str | None = None


@dataclass
class Ledger:
    invoices: dict[tuple[int, int], InvoiceRecord] = field(default_factory=dict)
    queries: dict[str, PreCheckoutRecord] = field(default_factory=dict)
    charges: dict[str, ChargeRecord] = field(default_factory=dict)


_LEDGERS: weakref.WeakKeyDictionary[World, Ledger] = weakref.WeakKeyDictionary()


def ledger(world: World) -> Ledger:
    """The payments of one emulated world."""
    found = _LEDGERS.get(world)
    if found is None:
        found = _LEDGERS[world] = Ledger()
    return found


def invoice_of(world: World, message: BotMessage) -> InvoiceRecord | None:
    return ledger(world).invoices.get((message.chat_id, message.message_id))


def minor_units(currency: str) -> int:
    return 1 if currency in WHOLE_UNIT_CURRENCIES else 100


def _label(total_amount: int, currency: str) -> str:
    units = minor_units(currency)
    amount = f"{total_amount // units}" if units == 1 else f"{total_amount / units:.2f}"
    return f"Pay {amount} {currency}"


# -- Bot API methods --------------------------------------------------------------------------


class Api(Protocol):
    """What the payment methods use of the Bot API they extend (methods.py's BotApi)."""

    world: World

    def _chat(self, params: dict[str, Any]) -> ChatRecord: ...
    def _check_can_write(self, chat: ChatRecord) -> None: ...
    def _flood_check(self, bot: BotIdentity, chat: ChatRecord) -> None: ...
    def _message_raw(
        self,
        bot: BotIdentity,
        chat: ChatRecord,
        message: BotMessage,
        inline: dict[str, Any] | None,
    ) -> dict[str, Any]: ...


class PaymentMethods:
    """sendInvoice, answerPreCheckoutQuery and refundStarPayment for one BotApi."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.world = api.world

    def handlers(self) -> dict[str, Any]:
        return {
            "sendInvoice": self.send_invoice,
            "answerPreCheckoutQuery": self.answer_pre_checkout_query,
            "refundStarPayment": self.refund_star_payment,
        }

    @staticmethod
    def _text(params: dict[str, Any], name: str, limit: int, code: str) -> str:
        value = params.get(name)
        if not isinstance(value, str) or not value.strip():
            raise bad_request(f"{code}_EMPTY" if value in (None, "") else f"{code}_INVALID")
        if len(value) > limit:
            raise bad_request(f"{code}_TOO_LONG")
        return value

    def _prices(self, params: dict[str, Any], currency: str) -> int:
        prices = params.get("prices")
        if not isinstance(prices, list) or not prices:
            raise bad_request("can't parse prices JSON object")
        total = 0
        for price in prices:
            if not isinstance(price, dict) or not isinstance(price.get("label"), str):
                raise bad_request("can't parse prices JSON object")
            amount = price.get("amount")
            # Integers in the smallest units: a float such as 499.5 is refused.
            if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
                raise bad_request("CURRENCY_TOTAL_AMOUNT_INVALID")
            total += amount
        if currency == STARS and len(prices) != 1:
            raise bad_request("STARS_INVOICE_INVALID: exactly one price is allowed in XTR")
        return total

    async def send_invoice(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        api = self.api
        chat = api._chat(params)
        api._check_can_write(chat)
        title = self._text(params, "title", MAX_TITLE, "INVOICE_TITLE")
        description = self._text(params, "description", MAX_DESCRIPTION, "INVOICE_DESCRIPTION")
        payload = params.get("payload")
        if not isinstance(payload, str) or not payload:
            raise bad_request("INVOICE_PAYLOAD_EMPTY")
        if len(payload.encode("utf-8")) > MAX_PAYLOAD_BYTES:
            raise bad_request("INVOICE_PAYLOAD_INVALID")
        currency = params.get("currency")
        if not isinstance(currency, str) or not _CURRENCY.match(currency):
            raise bad_request("CURRENCY_INVALID")
        token = params.get("provider_token")
        token = "" if token is None else token
        if not isinstance(token, str):
            raise bad_request("PAYMENT_PROVIDER_INVALID")
        if currency == STARS:
            if token:
                raise bad_request("STARS_INVOICE_INVALID: pass an empty provider_token for XTR")
        elif not _PROVIDER_TOKEN.match(token):
            raise bad_request("PAYMENT_PROVIDER_INVALID")
        total = self._prices(params, currency)
        start = params.get("start_parameter") or ""
        if (
            not isinstance(start, str)
            or len(start) > MAX_START_PARAMETER
            or not _START_PARAMETER.match(start)
        ):
            raise bad_request("START_PARAM_INVALID")
        photo_url = params.get("photo_url")
        if photo_url is not None and not isinstance(photo_url, str):
            raise bad_request("PHOTO_INVALID")
        markup = parse_reply_markup(params.get("reply_markup"))
        api._flood_check(bot, chat)
        message = BotMessage(
            message_id=chat.next_message_id(),
            chat_id=chat.id,
            date=self.world.now(),
            kind="invoice",
            text=description,
            plain_text=description,
            buttons=markup.buttons or [[Button(_label(total, currency))]],
        )
        raw = api._message_raw(bot, chat, message, markup.inline)
        raw.pop("caption", None)
        raw["invoice"] = {
            "title": title,
            "description": description,
            "start_parameter": start,
            "currency": currency,
            "total_amount": total,
        }
        message.raw = raw
        ledger(self.world).invoices[(chat.id, message.message_id)] = InvoiceRecord(
            chat.id, message.message_id, title, description, payload, currency, total, token,
            photo_url if isinstance(photo_url, str) else None, start,
        )  # fmt: skip
        stats = self.world.stats
        stats.sent += 1
        stats.sent_by_method["sendInvoice"] += 1
        stats.sent_by_chat[chat.id] += 1
        self.world.add_bot_message(chat, message)
        return raw

    async def answer_pre_checkout_query(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        query_id = params.get("pre_checkout_query_id")
        if not isinstance(query_id, str) or not query_id:
            raise bad_request("pre_checkout_query_id is empty")
        record = ledger(self.world).queries.get(query_id)
        too_late = record is not None and (
            self.world.wall_clock() - record.sent_at > PRE_CHECKOUT_SECONDS
        )
        if record is None or record.ok is not None or too_late:
            raise bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        ok = params.get("ok")
        if not isinstance(ok, bool):
            raise bad_request("ok is empty")
        error_message = params.get("error_message")
        if not ok:
            if not isinstance(error_message, str) or not error_message.strip():
                raise bad_request(
                    "ERROR_MESSAGE_EMPTY: error_message is required when ok is False"
                )
            if len(error_message) > MAX_ERROR_MESSAGE:
                raise bad_request("ERROR_MESSAGE_TOO_LONG")
        record.ok = ok
        record.error_message = error_message if not ok else None
        self.world.changed.notify()
        return True

    async def refund_star_payment(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        user_id = params.get("user_id")
        charge_id = params.get("telegram_payment_charge_id")
        if isinstance(user_id, bool) or not isinstance(user_id, int):
            raise bad_request("user_id is empty")
        if not isinstance(charge_id, str) or not charge_id:
            raise bad_request("telegram_payment_charge_id is empty")
        charge = ledger(self.world).charges.get(charge_id)
        if charge is None or charge.user_id != user_id or charge.currency != STARS:
            raise bad_request("CHARGE_ID_INVALID")
        if charge.refunded:
            raise bad_request("CHARGE_ALREADY_REFUNDED")
        charge.refunded = True
        user = self.world.users.get(user_id)
        chat = self.world.chats.get(user_id)
        if user is not None and chat is not None:
            _post(self.world, chat, user, "refunded_payment", {
                "currency": charge.currency,
                "total_amount": charge.total_amount,
                "invoice_payload": charge.payload,
                "telegram_payment_charge_id": charge.telegram_payment_charge_id,
            })  # fmt: skip
        return True


# -- what a user does -------------------------------------------------------------------------


def _post(
    world: World, chat: ChatRecord, user: UserRecord, kind: str, content: dict[str, Any]
) -> UserMessage:
    extra: dict[str, Any] = {kind: content}
    return post_message(world, chat, user, kind=kind, **extra)


async def pre_checkout(
    world: World,
    user: UserRecord,
    *,
    payload: str,
    currency: str,
    total_amount: int,
    invoice: InvoiceRecord | None = None,
    timeout: float = PRE_CHECKOUT_SECONDS,  # noqa: ASYNC109
) -> PreCheckoutRecord:
    """Sends the bot a pre-checkout query (any payload: forged ones too) and waits up to
    `timeout` seconds for its answer; the record's `ok` stays None if none came."""
    book = ledger(world)
    record = PreCheckoutRecord(
        query_id=world.unique("pcq"),
        user_id=user.id,
        payload=payload,
        currency=currency,
        total_amount=total_amount,
        invoice=invoice,
        sent_at=world.wall_clock(),
    )
    book.queries[record.query_id] = record
    world.enqueue(
        "pre_checkout_query",
        {"id": record.query_id, "from": user.to_api(), "currency": currency,
         "total_amount": total_amount, "invoice_payload": payload},
    )  # fmt: skip
    world.changed.notify()  # lets a test see the query arrive
    with contextlib.suppress(TimeoutError):
        await world.changed.wait_until(lambda: record.ok is not None, timeout)
    return record


async def checkout(
    world: World,
    user: UserRecord,
    message: BotMessage,
    *,
    timeout: float = PRE_CHECKOUT_SECONDS,  # noqa: ASYNC109
) -> PreCheckoutRecord:
    """The user taps Pay on an invoice and confirms: the pre-checkout query and the bot's
    answer (`ok` None: no answer in time)."""
    invoice = invoice_of(world, message)
    if invoice is None:
        raise LookupError(f"message {message.message_id} in chat {message.chat_id} is no invoice")
    if user.deactivated:
        raise RuntimeError(f"user {user.id} is deactivated and cannot pay")
    return await pre_checkout(
        world, user, payload=invoice.payload, currency=invoice.currency,
        total_amount=invoice.total_amount, invoice=invoice, timeout=timeout,
    )  # fmt: skip


def complete(world: World, user: UserRecord, query: PreCheckoutRecord) -> PaymentResult:
    """What follows the bot's answer: a charge and the successful_payment message when the
    bot said yes, nothing when it said no or kept silent."""
    if query.ok is None:
        return PaymentResult("timeout", query)
    if not query.ok:
        return PaymentResult("declined", query, error_message=query.error_message)
    stars = query.currency == STARS
    charge = ChargeRecord(
        telegram_payment_charge_id=world.unique("stxCHARGE" if stars else "tgCHARGE"),
        provider_payment_charge_id="" if stars else world.unique("prov_"),
        user_id=user.id,
        payload=query.payload,
        currency=query.currency,
        total_amount=query.total_amount,
    )
    ledger(world).charges[charge.telegram_payment_charge_id] = charge
    sent = deliver_successful_payment(world, user, charge)
    return PaymentResult("paid", query, charge, sent)


async def pay(
    world: World,
    user: UserRecord,
    message: BotMessage,
    *,
    timeout: float = PRE_CHECKOUT_SECONDS,  # noqa: ASYNC109
) -> PaymentResult:
    """Paying an invoice, start to end."""
    return complete(world, user, await checkout(world, user, message, timeout=timeout))


def deliver_successful_payment(
    world: World, user: UserRecord, charge: ChargeRecord
) -> UserMessage:
    """The service message Telegram sends the bot for a charge; calling it again for the same
    charge is Telegram delivering the payment twice (in a new update)."""
    chat = world.chats[user.id]
    return _post(world, chat, user, "successful_payment", {
        "currency": charge.currency,
        "total_amount": charge.total_amount,
        "invoice_payload": charge.payload,
        "telegram_payment_charge_id": charge.telegram_payment_charge_id,
        "provider_payment_charge_id": charge.provider_payment_charge_id,
    })  # fmt: skip


__all__ = [
    "PRE_CHECKOUT_SECONDS",
    "ChargeRecord",
    "InvoiceRecord",
    "PaymentMethods",
    "PaymentResult",
    "PreCheckoutRecord",
    "checkout",
    "complete",
    "deliver_successful_payment",
    "invoice_of",
    "ledger",
    "pay",
    "pre_checkout",
]
