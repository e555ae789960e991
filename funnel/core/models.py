"""The tables: leads, their append-only stage log, answers, the touch outbox, the hand-off
outbox (notifications), purchases.

Portable between SQLite and PostgreSQL; every time is stored as UTC.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always returns them aware.

    SQLite has no time zones: without this, values would come back naive and compare
    wrongly with the clock's aware ones.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Lead(Base):
    __tablename__ = "leads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Nullable: /forget erases the Telegram identity and keeps an anonymous count.
    user_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    first_name: Mapped[str | None] = mapped_column(String(128))
    last_name: Mapped[str | None] = mapped_column(String(128))
    username: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(64), default="direct")
    stage: Mapped[str] = mapped_column(String(32))
    # The question the lead is being asked now; None once the questions are over.
    position: Mapped[str | None] = mapped_column(String(32))
    score: Mapped[int] = mapped_column(Integer, default=0)
    temperature: Mapped[str | None] = mapped_column(String(8))
    variant: Mapped[str | None] = mapped_column(String(16))
    # Which disqualifier ended the dialogue (win-back campaigns select on it).
    exit_reason: Mapped[str | None] = mapped_column(String(32))
    script_version: Mapped[str] = mapped_column(String(64))
    # Bumped by every inbound message and every stage change; a touch planned for an
    # older cycle is obsolete (the lead replied or moved on).
    cycle: Mapped[int] = mapped_column(Integer, default=1)
    # When the current cycle began: campaign delays count from here.
    cycle_started_at: Mapped[datetime]
    created_at: Mapped[datetime]
    stage_changed_at: Mapped[datetime]
    last_inbound_at: Mapped[datetime | None]
    last_outbound_at: Mapped[datetime | None]
    opted_out_at: Mapped[datetime | None]
    blocked_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    # The sales manager who took the lead from the managers' chat.
    manager_id: Mapped[int | None] = mapped_column(BigInteger)
    manager_name: Mapped[str | None] = mapped_column(String(128))
    taken_at: Mapped[datetime | None]
    # Optimistic lock: two instances (or two fast taps) never both advance one lead.
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Every stage the log shows the lead entered, as ",new,engaged,": kept by a database
    # trigger on the stage log (funnel/reports/rollup.py), never written by the application.
    entered: Mapped[str] = mapped_column(Text, server_default=",")
    # Test leads (/test_funnel): an admin going through the script, never counted in a
    # report, a rollup, an export or sent to the CRM. While a test run lasts, its campaign
    # delays are divided by time_scale (3600: an hour of the script in a second).
    is_test: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    time_scale: Mapped[float | None] = mapped_column(Float)

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        Index("ix_leads_stage_cycle_started_at", "stage", "cycle_started_at"),
        Index("ix_leads_created_at", "created_at"),
        Index("ix_leads_source", "source"),
        # NULL for every lead but the few in a test run: planning finds those by a range.
        Index("ix_leads_time_scale", "time_scale"),
    )

    @property
    def reachable(self) -> bool:
        """Whether we may still send this lead an unsolicited message."""
        return (
            self.opted_out_at is None
            and self.blocked_at is None
            and self.deleted_at is None
            and self.chat_id is not None
        )


class StageEvent(Base):
    """Append-only: one row per stage change, written with the lead update."""

    __tablename__ = "stage_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    from_stage: Mapped[str | None] = mapped_column(String(32))
    to_stage: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    cause: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_stage_events_lead_id_at", "lead_id", "at"),
        Index("ix_stage_events_to_stage_lead_id", "to_stage", "lead_id"),
    )


class Answer(Base):
    __tablename__ = "answers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    question: Mapped[str] = mapped_column(String(32))
    # The option id for a button, the text for a free answer; None once forgotten.
    value: Mapped[str | None] = mapped_column(Text)
    option: Mapped[str | None] = mapped_column(String(32))
    score: Mapped[int] = mapped_column(Integer, default=0)
    at: Mapped[datetime]
    # Answers given before "start over" stay for the drop-off report but stop counting.
    superseded: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (Index("ix_answers_lead_id_question", "lead_id", "question"),)


class Touch(Base):
    """The outbox of nurture, win-back and post-sale messages: this table is the schedule."""

    __tablename__ = "touches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    campaign: Mapped[str] = mapped_column(String(32))
    step: Mapped[int] = mapped_column(Integer)
    cycle: Mapped[int] = mapped_column(Integer)
    due_at: Mapped[datetime]
    # planned → sending → sent | cancelled | failed | unknown (left, no answer: never resent)
    status: Mapped[str] = mapped_column(String(16), default="planned")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    postponed: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None]
    replied_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime]
    # Several instances: the instance that read a planned touch into its queue holds it until
    # then, so another does not queue it too and spend a rate-limit slot on a lost claim.
    # Only a hint (the claim still decides who sends); unset on SQLite's single instance.
    leased_until: Mapped[datetime | None]
    leased_by: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (
        UniqueConstraint("lead_id", "campaign", "step", "cycle"),
        Index("ix_touches_status_due_at", "status", "due_at"),
        Index("ix_touches_lead_id_status", "lead_id", "status"),
    )


class Notification(Base):
    """The hand-off outbox: the managers' card and the CRM webhook of a lead's hot moment,
    written in the transaction that makes the lead hot and delivered after its commit."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # manager_card | crm_webhook
    # Which hot moment, e.g. "consultation:a17:e42" (funnel/handoff/notifications.py): a double tap
    # names the same moment again, starting over names a new one.
    occasion: Mapped[str] = mapped_column(String(64))
    # planned → sending → sent | failed | cancelled | unknown (a card that may have left)
    status: Mapped[str] = mapped_column(String(16), default="planned")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    due_at: Mapped[datetime]
    error: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    # Where a managers' card landed, so it can be edited later (taken, paid, forgotten) and
    # so a manager's button is honoured only on a card the bot really sent to that chat.
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        UniqueConstraint("lead_id", "kind", "occasion"),
        Index("ix_notifications_status_due_at", "status", "due_at"),
    )


# A BIGINT on PostgreSQL, SQLite's rowid alias there: only an INTEGER primary key is one.
RowId = BigInteger().with_variant(Integer(), "sqlite")


def update_digest(payload: str) -> str:
    """A short fingerprint of an update's JSON: the same update delivered again has the same
    one; an update a restarted Bot API server numbered like an old one has another."""
    return hashlib.blake2b(payload.encode(), digest_size=8).hexdigest()


class InboxUpdate(Base):
    """An update received from Telegram. Written before the polling offset is confirmed and
    marked handled (its payload emptied) in the commit of its handling, so an update fetched
    just before a crash is handled after the restart, and one Telegram delivers again is
    recognised and skipped. Handled rows are purged after Telegram's retention.

    An update is the same one when the bot, its id and its contents are: a Bot API server
    that starts numbering again (a restarted local server, the emulator) or another bot token
    on the same database hands out ids seen before, and those updates are new. Rows from
    before the bot's id was kept carry bot 0 and an empty digest.

    A row awaiting its reply is kept past the purge until the reply is settled."""

    __tablename__ = "inbox"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    bot_id: Mapped[int] = mapped_column(BigInteger, default=0)
    update_id: Mapped[int] = mapped_column(BigInteger)
    digest: Mapped[str] = mapped_column(String(16), default="")
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]
    handled_at: Mapped[datetime | None]
    # The reply committed with the update's handling (bot/replies.py): the Bot API requests
    # (JSON, dropped once settled), their chat, and how far they went: planned, sending,
    # sent, failed, unknown, forgotten; `reply_next` is the first request not yet sent.
    chat_id: Mapped[int | None] = mapped_column(BigInteger)
    replies: Mapped[str | None] = mapped_column(Text)
    reply_status: Mapped[str | None] = mapped_column(String(10))
    reply_next: Mapped[int] = mapped_column(Integer, default=0)
    reply_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("bot_id", "update_id", "digest", name="uq_inbox_update"),
        Index("ix_inbox_handled_at", "handled_at"),
        Index("ix_inbox_reply_status", "reply_status"),
        Index("ix_inbox_chat_id", "chat_id"),
    )


class Purchase(Base):
    __tablename__ = "purchases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2, asdecimal=True))
    currency: Mapped[str] = mapped_column(String(3), default="RUB")
    at: Mapped[datetime]
    recorded_by: Mapped[int | None] = mapped_column(BigInteger)
    # -- payments in the bot (Telegram Payments) --
    # Telegram's id of the charge: a payment delivered twice is recorded once.
    telegram_payment_charge_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    provider_payment_charge_id: Mapped[str | None] = mapped_column(String(128))
    # The script's offer that was paid (None: recorded by hand with /paid).
    offer: Mapped[str | None] = mapped_column(String(32))
    # A refund keeps the row and marks it: every report counts only unrefunded purchases.
    refunded_at: Mapped[datetime | None]
    refunded_by: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_purchases_lead_id", "lead_id"), Index("ix_purchases_at", "at"))


class AmountPrompt(Base):
    """The bot's prompt in the managers' chat for a lead's payment amount: a manager's reply
    to that message (matched by its id, never by its words) is the amount for that lead."""

    __tablename__ = "amount_prompts"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    message_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    created_at: Mapped[datetime]


class AdSpend(Base):
    __tablename__ = "ad_spend"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2, asdecimal=True))
    currency: Mapped[str] = mapped_column(String(3), default="RUB")
    at: Mapped[datetime]
    recorded_by: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_ad_spend_source", "source"),)


class JobMark(Base):
    """Small persistent bookmarks of background jobs (e.g. how far planning has looked)."""

    __tablename__ = "job_marks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime]


# -- the report's rollups: kept by database triggers (funnel/reports/rollup.py), read by the
# report so it costs the same for a thousand leads or a million; the daily ones (keyed by
# the UTC day the leads were created on) answer a period's whole days.


class RollupLeads(Base):
    """How many leads share one combination of what the all-time report groups by."""

    __tablename__ = "rollup_leads"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    # "" stands for no temperature: a key column cannot be NULL.
    temperature: Mapped[str] = mapped_column(String(8), primary_key=True)
    script_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    entered: Mapped[str] = mapped_column(Text, primary_key=True)
    stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    opted_out: Mapped[int] = mapped_column(Integer, primary_key=True)
    blocked: Mapped[int] = mapped_column(Integer, primary_key=True)
    leads: Mapped[int] = mapped_column(Integer, default=0)


class RollupGaps(Base):
    """Histogram of the time between first entries into two stages, per source; the source
    "*" holds every source together."""

    __tablename__ = "rollup_gaps"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    from_stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    to_stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    leads: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[int] = mapped_column(BigInteger, default=0)


class RollupQuestions(Base):
    """Per source and question: leads that ever answered it, and leads being asked it now
    who never answered it."""

    __tablename__ = "rollup_questions"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    question: Mapped[str] = mapped_column(String(32), primary_key=True)
    answered: Mapped[int] = mapped_column(Integer, default=0)
    waiting: Mapped[int] = mapped_column(Integer, default=0)


class RollupDailyLeads(Base):
    """rollup_leads per UTC day the leads were created on (days since 1970-01-01)."""

    __tablename__ = "rollup_daily_leads"

    day: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    temperature: Mapped[str] = mapped_column(String(8), primary_key=True)
    script_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    entered: Mapped[str] = mapped_column(Text, primary_key=True)
    stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    opted_out: Mapped[int] = mapped_column(Integer, primary_key=True)
    blocked: Mapped[int] = mapped_column(Integer, primary_key=True)
    leads: Mapped[int] = mapped_column(Integer, default=0)


class RollupDailyGaps(Base):
    """rollup_gaps per creation day of the leads, for each real source (no "*")."""

    __tablename__ = "rollup_daily_gaps"

    day: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    from_stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    to_stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    leads: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[int] = mapped_column(BigInteger, default=0)


class RollupDailyQuestions(Base):
    """rollup_questions per creation day of the leads."""

    __tablename__ = "rollup_daily_questions"

    day: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    question: Mapped[str] = mapped_column(String(32), primary_key=True)
    answered: Mapped[int] = mapped_column(Integer, default=0)
    waiting: Mapped[int] = mapped_column(Integer, default=0)


class RollupMoney(Base):
    """Unrefunded purchases of the leads created on a day, per source and currency: how
    many, their sum in kopecks, and how many of those leads bought (customers)."""

    __tablename__ = "rollup_money"

    day: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    purchases: Mapped[int] = mapped_column(Integer, default=0)
    cents: Mapped[int] = mapped_column(BigInteger, default=0)
    buyers: Mapped[int] = mapped_column(Integer, default=0)


class RollupFirstPurchases(Base):
    """Histogram of the seconds from a lead's creation to its first unrefunded purchase in a
    currency, per creation day and source, in the report's buckets."""

    __tablename__ = "rollup_first_purchases"

    day: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    leads: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[int] = mapped_column(BigInteger, default=0)


# -- A/B tests: who saw which variant of an experiment, first at what time (only these leads
# count in the report; funnel/experiments/).


class Exposure(Base):
    """The first time a lead was shown a variant of an experiment, written in the transaction
    of the message that showed it; the lead's stage then is where its conversion counts from."""

    __tablename__ = "exposures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    experiment: Mapped[str] = mapped_column(String(32))
    variant: Mapped[str] = mapped_column(String(24))
    stage: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("lead_id", "experiment"),
        Index("ix_exposures_experiment_variant", "experiment", "variant"),
    )


# -- broadcasts (funnel/broadcasts): an admin's message to a segment of leads. Delivered as
# touches of the campaign "broadcast:<id>" through the same outbox as the follow-ups.


class Broadcast(Base):
    """One broadcast, from the admin's draft (each step of the guided flow is stored here, so
    a restart resumes it) to its launch; its recipients are materialised by the tick."""

    __tablename__ = "broadcasts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Who composes it (drafts are per admin); None when started from the command line.
    admin_id: Mapped[int | None] = mapped_column(BigInteger)
    # draft → scheduled → launching (recipients being written) → running; or cancelled.
    status: Mapped[str] = mapped_column(String(16), default="draft")
    # The draft's step: segment | text | buttons | split | time | confirm.
    step: Mapped[str] = mapped_column(String(16), default="segment")
    # Bumped at every step: a button of an older step is stale, a second tap on "send" too.
    revision: Mapped[int] = mapped_column(Integer, default=1)
    segment: Mapped[str | None] = mapped_column(Text)
    text_a: Mapped[str | None] = mapped_column(Text)
    # The second text of an A/B split; None: everyone gets text_a.
    text_b: Mapped[str | None] = mapped_column(Text)
    # [{"label": ..., "url": ...} | {"label": ..., "reply": true}]
    buttons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # When it goes out (UTC); None while the draft has no time yet.
    send_at: Mapped[datetime | None]
    # How many the confirmation promised, and how many were written as recipients.
    expected: Mapped[int | None] = mapped_column(Integer)
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    # The last lead id written as a recipient: writing resumes after it.
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    launched_at: Mapped[datetime | None]
    materialised_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_broadcasts_status_send_at", "status", "send_at"),
        Index("ix_broadcasts_admin_id_status", "admin_id", "status"),
    )


class BroadcastRecipient(Base):
    """A lead a broadcast goes to, once (the key), with its A/B arm; the send itself is the
    touch (lead, "broadcast:<id>", 1, 0)."""

    __tablename__ = "broadcast_recipients"

    broadcast_id: Mapped[int] = mapped_column(
        ForeignKey("broadcasts.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    lead_id: Mapped[int] = mapped_column(
        ForeignKey("leads.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    arm: Mapped[str] = mapped_column(String(1), default="a")
    # When the lead tapped the broadcast's quick reply button.
    replied_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_broadcast_recipients_lead_id", "lead_id"),)


# -- the managers' loop: who took which lead and when, and how the ownership ended; the
# managers' report (funnel/reports/managers.py) reads this log with the stage log.


class ManagerTake(Base):
    """One manager's ownership of a lead, from the tap on "take" to its release. While a take
    is open (released_at is None, and the lead's manager_id names the manager) the lead hears
    no nurture or win-back touch."""

    __tablename__ = "manager_takes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    manager_id: Mapped[int] = mapped_column(BigInteger)
    # The staff member's name as Telegram showed it at the take (not the lead's data).
    manager_name: Mapped[str] = mapped_column(String(128))
    # The card the manager tapped, and when the managers were called for it (the card's
    # moment): the time to take is taken_at - called_at.
    card_id: Mapped[int | None] = mapped_column(Integer)
    called_at: Mapped[datetime]
    taken_at: Mapped[datetime]
    # The manager's last action on the lead (the take, a payment): the silence counts from it.
    active_at: Mapped[datetime]
    released_at: Mapped[datetime | None]
    # released (the button) | unfit | silence
    release_cause: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (
        Index("ix_manager_takes_lead_id_taken_at", "lead_id", "taken_at"),
        Index("ix_manager_takes_taken_at", "taken_at"),
        Index("ix_manager_takes_released_at_active_at", "released_at", "active_at"),
    )


# The service level scans recent managers' cards by kind and time.
Index("ix_notifications_kind_created_at", Notification.kind, Notification.created_at)
