"""Exposures: the first time a lead was shown a variant. The renderer notes them on the
lead's session; they are written when that session commits, so in the very transaction
whose commit lets the message leave (a reply is sent only after its commit, a touch only
after the commit that rendered it). A rolled back transaction forgets them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, object_session

from funnel.core.models import Exposure, Lead

PENDING = "leadbot.exposures"


def note(lead: Lead, experiment_id: str, variant_id: str, at: datetime) -> None:
    """Remembers that `lead` is being shown `variant_id` (the first note of a transaction wins;
    the database keeps the first exposure of all)."""
    session = object_session(lead)
    if session is None or lead.id is None:
        return
    pending: dict[tuple[int, str], tuple[str, str, datetime]] = session.info.setdefault(
        PENDING, {}
    )
    pending.setdefault((lead.id, experiment_id), (variant_id, lead.stage, at))


def pending(session: Any) -> dict[tuple[int, str], tuple[str, str, datetime]]:
    """The exposures noted on `session` (sync or async) and not yet written."""
    info = session.info
    return dict(info.get(PENDING, {}))


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    noted = session.info.pop(PENDING, None)
    if not noted:
        return
    rows = [
        {"lead_id": lead_id, "experiment": experiment, "variant": variant, "stage": stage,
         "at": at}
        for (lead_id, experiment), (variant, stage, at) in noted.items()
    ]  # fmt: skip
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # Seen before (an earlier message, another instance): the first exposure stays.
    statement = insert(Exposure).on_conflict_do_nothing(index_elements=["lead_id", "experiment"])
    session.connection().execute(statement, rows)


@event.listens_for(Session, "after_soft_rollback")
def _forget_pending(session: Session, _transaction: Any) -> None:
    session.info.pop(PENDING, None)
