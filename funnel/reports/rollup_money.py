"""The money rollups: what the report says about purchases, kept exact by database triggers
on `purchases` (and on `leads`, for a lead turning into a test lead), in the same transaction
as the write, so no report joins the purchases to the leads.

Both tables are keyed by the lead's creation day (UTC, see `rollup_sql.day_sql`) and source: the
report counts a purchase in the period its lead was created in.
- `rollup_money`: unrefunded purchases, their sum in kopecks, and customers (leads with at
  least one unrefunded purchase), per day, source and currency.
- `rollup_first_purchases`: per day, source and currency, a histogram (the report's buckets)
  of the seconds from a lead's creation to its first unrefunded purchase, when not negative.

Every write is handled as "the row leaves, the row comes": an insert adds the new row's
share, a delete takes the old row's away, an update (a refund, above all) does both, in that
order, each computing what it changes from the lead's other purchases (`id <> row.id`). On
PostgreSQL the functions take the lead's row first, so two transactions of one lead take
turns and the second sees the first's purchases (see funnel/reports/rollup.py).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.reports.money import Revenue, cents_sql, from_cents
from funnel.reports.rollup_sql import DaySpan, bucket_sql, day_sql, seconds_sql

__all__ = [
    "became_test",
    "pg_functions",
    "read_first_purchases",
    "read_revenue",
    "rebuild_statements",
    "sqlite_triggers",
]

_MONEY_KEY = "(day, source, currency)"
_FIRST_KEY = "(day, source, currency, bucket)"


def _upsert(table: str, key: str, counters: tuple[str, ...]) -> str:
    added = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in counters)
    return f"ON CONFLICT {key} DO UPDATE SET {added}"


def _money_upsert() -> str:
    return _upsert("rollup_money", _MONEY_KEY, ("purchases", "cents", "buyers"))


def _first_upsert() -> str:
    return _upsert("rollup_first_purchases", _FIRST_KEY, ("leads", "seconds"))


def _others(row: str) -> str:
    """The lead's other unrefunded purchases in the row's currency."""
    return (
        f"FROM purchases o WHERE o.lead_id = {row}.lead_id AND o.currency = {row}.currency "
        f"AND o.refunded_at IS NULL AND o.id <> {row}.id"
    )


def _money_share(dialect: str, row: str, sign: int) -> str:
    """The row's share of rollup_money added (sign 1) or taken away (-1): a purchase, its
    kopecks, and a customer when the lead has no other unrefunded purchase in the currency."""
    return f"""
        INSERT INTO rollup_money (day, source, currency, purchases, cents, buyers)
        SELECT {day_sql(dialect, "l.created_at")}, l.source, {row}.currency, {sign},
               {sign} * {cents_sql(f"{row}.amount")},
               CASE WHEN EXISTS (SELECT 1 {_others(row)}) THEN 0 ELSE {sign} END
        FROM leads l
        WHERE l.id = {row}.lead_id AND NOT l.is_test AND {row}.refunded_at IS NULL
        {_money_upsert()};"""


def _first_share(dialect: str, row: str, at: str, sign: int, when: str) -> str:
    """One lead's first purchase at `at` added to (or taken from) the histogram, when `when`."""
    day = day_sql(dialect, "l.created_at")
    seconds = seconds_sql(dialect, "l.created_at", at)
    return f"""
        INSERT INTO rollup_first_purchases (day, source, currency, bucket, leads, seconds)
        SELECT day, source, currency, {bucket_sql("d")}, {sign}, {sign} * d FROM (
            SELECT {day} AS day, l.source AS source, {row}.currency AS currency, {seconds} AS d
            FROM leads l WHERE l.id = {row}.lead_id AND NOT l.is_test AND {when}) AS c
        WHERE d >= 0
        {_first_upsert()};"""


def _first_moves(dialect: str, row: str, sign: int) -> str:
    """The row joins (sign 1) or leaves (-1) the lead's purchases in its currency: the
    lead's first purchase changes only when the row is strictly earlier than every other
    one (or there is no other), and then it moves between the row and the earliest other."""
    earliest_other = f"(SELECT min(o.at) {_others(row)})"
    moves = (
        f"{row}.refunded_at IS NULL AND ({earliest_other} IS NULL OR {row}.at < {earliest_other})"
    )
    away = _first_share(dialect, row, earliest_other, -sign, moves)
    return away + _first_share(dialect, row, f"{row}.at", sign, moves)


def _added(dialect: str, row: str) -> str:
    return _money_share(dialect, row, 1) + _first_moves(dialect, row, 1)


def _removed(dialect: str, row: str) -> str:
    return _money_share(dialect, row, -1) + _first_moves(dialect, row, -1)


def became_test(dialect: str, lead: str) -> str:
    """Statements for a leads trigger: the lead `lead` (OLD) became a test lead, so what it
    bought leaves the rollups."""
    day = day_sql(dialect, f"{lead}.created_at")
    seconds = seconds_sql(dialect, f"{lead}.created_at", "min(p.at)")
    return f"""
        INSERT INTO rollup_money (day, source, currency, purchases, cents, buyers)
        SELECT {day}, {lead}.source, p.currency, -count(*), -sum({cents_sql("p.amount")}), -1
        FROM purchases p WHERE p.lead_id = {lead}.id AND p.refunded_at IS NULL
        GROUP BY p.currency
        {_money_upsert()};
        INSERT INTO rollup_first_purchases (day, source, currency, bucket, leads, seconds)
        SELECT {day}, {lead}.source, currency, {bucket_sql("d")}, -1, -d
        FROM (SELECT p.currency AS currency, {seconds} AS d
              FROM purchases p WHERE p.lead_id = {lead}.id AND p.refunded_at IS NULL
              GROUP BY p.currency) AS c
        WHERE d >= 0
        {_first_upsert()};"""


_CHANGED_COLUMNS = "lead_id, currency, amount, at, refunded_at"


def sqlite_triggers() -> dict[str, str]:
    same = (
        "OLD.lead_id IS NEW.lead_id AND OLD.currency IS NEW.currency "
        "AND OLD.amount IS NEW.amount AND OLD.at IS NEW.at "
        "AND (OLD.refunded_at IS NULL) IS (NEW.refunded_at IS NULL)"
    )
    return {
        "rollup_purchase_added": f"""
            CREATE TRIGGER rollup_purchase_added AFTER INSERT ON purchases BEGIN
                {_added("sqlite", "NEW")}
            END""",
        # A refund above all; the old row's share leaves before the new one's comes.
        "rollup_purchase_changed": f"""
            CREATE TRIGGER rollup_purchase_changed
            AFTER UPDATE OF {_CHANGED_COLUMNS} ON purchases WHEN NOT ({same})
            BEGIN
                {_removed("sqlite", "OLD")}
                {_added("sqlite", "NEW")}
            END""",
        "rollup_purchase_removed": f"""
            CREATE TRIGGER rollup_purchase_removed AFTER DELETE ON purchases BEGIN
                {_removed("sqlite", "OLD")}
            END""",
    }


def pg_functions() -> dict[str, tuple[str, str, str]]:
    """name: (table, trigger clause, function body), as rollup._pg_functions."""
    same = (
        "OLD.lead_id = NEW.lead_id AND OLD.currency IS NOT DISTINCT FROM NEW.currency "
        "AND OLD.amount IS NOT DISTINCT FROM NEW.amount AND OLD.at IS NOT DISTINCT FROM NEW.at "
        "AND (OLD.refunded_at IS NULL) = (NEW.refunded_at IS NULL)"
    )

    def lock(*rows: str) -> str:
        ids = ", ".join(f"{row}.lead_id" for row in rows)
        return f"PERFORM 1 FROM leads WHERE id IN ({ids}) ORDER BY id FOR UPDATE;"

    return {
        "rollup_purchase_added": (
            "purchases",
            "AFTER INSERT ON purchases FOR EACH ROW",
            lock("NEW") + _added("postgresql", "NEW"),
        ),
        "rollup_purchase_changed": (
            "purchases",
            f"AFTER UPDATE OF {_CHANGED_COLUMNS} ON purchases FOR EACH ROW WHEN (NOT ({same}))",
            lock("OLD", "NEW") + _removed("postgresql", "OLD") + _added("postgresql", "NEW"),
        ),
        "rollup_purchase_removed": (
            "purchases",
            "AFTER DELETE ON purchases FOR EACH ROW",
            lock("OLD") + _removed("postgresql", "OLD"),
        ),
    }


def rebuild_statements(dialect: str, real: str) -> tuple[str, ...]:
    """Both tables from the purchases, for the leads that count (`real`, on `l`)."""
    day = day_sql(dialect, "l.created_at")
    seconds = seconds_sql(dialect, "l.created_at", "f.first_at")
    return (
        "DELETE FROM rollup_money",
        "DELETE FROM rollup_first_purchases",
        f"""INSERT INTO rollup_money (day, source, currency, purchases, cents, buyers)
            SELECT {day}, l.source, p.currency, count(*), sum({cents_sql("p.amount")}),
                   count(DISTINCT p.lead_id)
            FROM purchases p JOIN leads l ON l.id = p.lead_id
            WHERE p.refunded_at IS NULL AND {real}
            GROUP BY {day}, l.source, p.currency""",
        f"""INSERT INTO rollup_first_purchases (day, source, currency, bucket, leads, seconds)
            SELECT day, source, currency, {bucket_sql("d")}, count(*), sum(d) FROM (
                SELECT {day} AS day, l.source AS source, f.currency AS currency, {seconds} AS d
                FROM (SELECT lead_id, currency, min(at) AS first_at FROM purchases
                      WHERE refunded_at IS NULL GROUP BY lead_id, currency) AS f
                JOIN leads l ON l.id = f.lead_id WHERE {real}) AS firsts
            WHERE d >= 0
            GROUP BY day, source, currency, {bucket_sql("d")}""",
    )


# -- reading -------------------------------------------------------------------------------


async def read_revenue(session: AsyncSession, source: str | None, span: DaySpan) -> Revenue:
    """(source, currency) → (purchases, revenue, customers) of the leads created in the
    span's whole days (every day for all time)."""
    days, params = span.where()
    where = ""
    if source is not None:
        where, params["source"] = " AND source = :source", source
    rows = await session.execute(
        text(
            "SELECT source, currency, sum(purchases), sum(cents), sum(buyers) FROM rollup_money "
            f"WHERE 1 = 1{days}{where} GROUP BY source, currency HAVING sum(purchases) > 0"
        ),
        params,
    )
    return {
        (src, currency): (int(count), from_cents(cents), int(buyers))
        for src, currency, count, cents, buyers in rows.all()
    }


async def read_first_purchases(
    session: AsyncSession, source: str | None, span: DaySpan, currency: str
) -> list[tuple[float, int, float]]:
    """The histogram (bucket, leads, seconds) of the time from creation to the first
    purchase in `currency`, of the leads created in the span's whole days."""
    days, params = span.where()
    params["currency"] = currency
    where = ""
    if source is not None:
        where, params["source"] = " AND source = :source", source
    rows = await session.execute(
        text(
            "SELECT bucket, sum(leads), sum(seconds) FROM rollup_first_purchases "
            f"WHERE currency = :currency{days}{where} GROUP BY bucket HAVING sum(leads) > 0"
        ),
        params,
    )
    return [(float(bucket), int(n), float(s)) for bucket, n, s in rows.all()]
