"""The report's rollups: small tables of counts that database triggers (SQLite triggers, or
PL/pgSQL ones on PostgreSQL) keep exact in the same transaction as every write, so the
all-time report reads thousands of rows, not millions.

What is kept (the tables are in funnel/core/models.py):
- `leads.entered`: the set of stages the log shows each lead entered (",new,engaged,"). A set,
  not "the furthest stage", so a marketer may reorder the funnel without a rebuild: the
  report works out the furthest stage from the set with the script of the day.
- `rollup_leads`: leads per (source, temperature, script version, entered, current stage,
  opted out, blocked).
- `rollup_gaps`: per source and per ordered pair of stages, a histogram of the seconds from
  the first entry into one to the first entry into the other (only when that is not
  negative), in the report's buckets. The source "*" holds all sources together.
- `rollup_questions`: per source and question, leads that ever answered it and leads being
  asked it now who never answered it.
- `rollup_daily_leads`, `rollup_daily_gaps`, `rollup_daily_questions` (migration 0013): the
  same counts per UTC day the lead was created on (and per real source only, no "*"), so a
  period's report sums a few thousand rows per month and reads from the log only the hours
  its ends cut out of a day (`rollup_sql.DaySpan`).
- `rollup_money`, `rollup_first_purchases` (migration 0013): revenue, purchases, customers
  and the time to the first purchase per day and source (funnel/reports/rollup_money.py).

Test leads (/test_funnel, `leads.is_test`) are in no rollup: a lead turning into one takes
back everything the triggers counted for it. The triggers rely on what the application
guarantees: a lead's source and creation time never change after its first /start, the
stage log and the answers are append-only, leads are never deleted (/forget anonymises:
the lead stays as an anonymous count), a test lead stays one. `rebuild` recomputes
everything from the log, for an existing database and for anything written behind the
triggers' back; a migration that recreates one of the tables involved must call `install`
again (recreating a table drops its triggers).

On PostgreSQL the same maintenance runs as PL/pgSQL trigger functions (migration 0010).
Several instances write there at once, so each function that asks "is this the lead's first
answer / first entry into this stage?" first locks the lead's row: two transactions of one
lead then take turns, and the second sees the first's rows. Counters are upserted; the rare
deadlock between two leads' counters is retried like any other (bot/transactions.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.reports import rollup_money
from funnel.reports.rollup_sql import DaySpan, bucket_sql, day_sql, seconds_sql

__all__ = [
    "ALL_SOURCES",
    "DaySpan",
    "GapRow",
    "LeadsRow",
    "bucket_sql",
    "day_sql",
    "entered_stages",
    "has_daily_rollups",
    "has_test_leads",
    "install",
    "read_daily_gaps",
    "read_daily_leads",
    "read_daily_questions",
    "read_gaps",
    "read_leads",
    "read_questions",
    "rebuild",
    "seconds_sql",
    "supported",
    "uninstall",
]

ALL_SOURCES = "*"


def supported(dialect: str) -> bool:
    return dialect in ("sqlite", "postgresql")


def entered_stages(entered: str) -> list[str]:
    """The stages of a ",new,engaged," set, in the order they were first entered."""
    return [stage for stage in entered.split(",") if stage]


# -- where a count goes: all time, or also the lead's creation day ------------------------


@dataclass(frozen=True)
class _Scope:
    """The all-time tables (rollup_leads, ...) or the daily ones (rollup_daily_leads, ...),
    whose key starts with the UTC day the lead was created on."""

    daily: bool
    dialect: str

    def table(self, name: str) -> str:
        return f"rollup_daily_{name}" if self.daily else f"rollup_{name}"

    @property
    def columns(self) -> str:
        """The key's leading columns: "day, " or nothing."""
        return "day, " if self.daily else ""

    def values(self, lead: str) -> str:
        """The key's leading values for the lead row `lead`."""
        return f"{day_sql(self.dialect, f'{lead}.created_at')}, " if self.daily else ""

    def same_day(self, lead: str) -> str:
        """A condition (ending in AND) on the day column, for the lead row `lead`."""
        return f"day = {day_sql(self.dialect, f'{lead}.created_at')} AND " if self.daily else ""


def _scopes(dialect: str, days: bool) -> list[_Scope]:
    return [_Scope(False, dialect), *([_Scope(True, dialect)] if days else [])]


_ALL_TIME = _Scope(False, "sqlite")


# -- the triggers (SQLite) ----------------------------------------------------------------

_LEAD_KEY = "(source, temperature, script_version, entered, stage, opted_out, blocked)"
_LEAD_COLUMNS = _LEAD_KEY[1:-1]


def _lead_values(row: str) -> str:
    return (
        f"{row}.source, coalesce({row}.temperature, ''), {row}.script_version, {row}.entered, "
        f"{row}.stage, {row}.opted_out_at IS NOT NULL, {row}.blocked_at IS NOT NULL"
    )


def _real(row: str, tests: bool) -> str:
    """SQL true when the lead `row` counts: test leads (/test_funnel) never do."""
    return f"NOT {row}.is_test" if tests else "1"


def _count_lead(row: str, tests: bool = False, scope: _Scope = _ALL_TIME) -> str:
    key = f"({scope.columns}{_LEAD_COLUMNS})"
    return (
        f"INSERT INTO {scope.table('leads')} {key[:-1]}, leads) "
        f"SELECT {scope.values(row)}{_lead_values(row)}, 1 "
        f"WHERE {_real(row, tests)} ON CONFLICT {key} DO UPDATE SET leads = leads + 1;"
    )


def _count_waiting(row: str, tests: bool = False, scope: _Scope = _ALL_TIME) -> str:
    """One more lead waiting at its question, unless it answered that question before."""
    return (
        f"INSERT INTO {scope.table('questions')} ({scope.columns}source, question, answered, "
        f"waiting) SELECT {scope.values(row)}{row}.source, {row}.position, 0, 1 "
        f"WHERE {row}.position IS NOT NULL "
        f"AND {_real(row, tests)} AND NOT EXISTS (SELECT 1 FROM answers a "
        f"WHERE a.lead_id = {row}.id AND a.question = {row}.position) "
        f"ON CONFLICT ({scope.columns}source, question) DO UPDATE SET waiting = waiting + 1;"
    )


def _first_entry_pairs(lead: str) -> str:
    """(a, b, d) for every ordered pair of stages a lead entered, d the seconds from its
    first entry into a to its first entry into b, when not negative: what rollup_gaps
    holds for that lead."""
    firsts = (
        f"(SELECT to_stage, min(at) AS at FROM stage_events WHERE lead_id = {lead} "
        "GROUP BY to_stage)"
    )
    seconds = seconds_sql("sqlite", "f1.at", "f2.at")
    return (
        f"(SELECT f1.to_stage AS a, f2.to_stage AS b, {seconds} AS d FROM {firsts} AS f1 "
        f"JOIN {firsts} AS f2 ON f2.to_stage <> f1.to_stage WHERE {seconds} >= 0)"
    )


def _became_test(days: bool) -> str:
    """A counted lead turned into a test lead: everything the other triggers counted for it
    is taken back, so the rollups equal a rebuild that leaves test leads out."""
    pairs = _first_entry_pairs("OLD.id")
    statements = []
    for scope in _scopes("sqlite", days):
        questions, gaps, day = scope.table("questions"), scope.table("gaps"), scope.same_day
        sources = (
            "source = OLD.source" if scope.daily else f"source IN (OLD.source, '{ALL_SOURCES}')"
        )
        statements.append(f"""
            UPDATE {questions} SET answered = answered - 1
            WHERE {day("OLD")}source = OLD.source AND question IN (
                SELECT question FROM answers WHERE lead_id = OLD.id);
            UPDATE {questions} SET waiting = waiting - 1
            WHERE {day("OLD")}source = OLD.source AND question = OLD.position
            AND OLD.position IS NEW.position AND NOT EXISTS (
                SELECT 1 FROM answers a WHERE a.lead_id = OLD.id AND a.question = OLD.position);
            UPDATE {gaps} SET
                leads = leads - 1,
                seconds = seconds - (SELECT p.d FROM {pairs} AS p
                    WHERE p.a = {gaps}.from_stage AND p.b = {gaps}.to_stage)
            WHERE {day("OLD")}{sources} AND EXISTS (
                SELECT 1 FROM {pairs} AS p WHERE p.a = {gaps}.from_stage
                AND p.b = {gaps}.to_stage AND {bucket_sql("p.d")} = {gaps}.bucket);""")
    if days:
        statements.append(rollup_money.became_test("sqlite", "OLD"))
    return f"""
        CREATE TRIGGER rollup_lead_became_test AFTER UPDATE OF is_test ON leads
        WHEN NEW.is_test AND NOT OLD.is_test
        BEGIN{"".join(statements)}
        END"""


_SAME_LEAD_KEY = (
    "OLD.source IS NEW.source AND coalesce(OLD.temperature, '') IS coalesce(NEW.temperature, '') "
    "AND OLD.script_version IS NEW.script_version AND OLD.entered IS NEW.entered "
    "AND OLD.stage IS NEW.stage AND (OLD.opted_out_at IS NULL) IS (NEW.opted_out_at IS NULL) "
    "AND (OLD.blocked_at IS NULL) IS (NEW.blocked_at IS NULL)"
)


def _gap_rows(firsts: str) -> str:
    """The gaps a first entry into NEW.to_stage makes with every stage the lead entered
    before it (or after it, when the log came out of order): (a, b, d) rows."""
    return f"""(
        SELECT CASE WHEN f.d >= 0 THEN f.stage ELSE NEW.to_stage END AS a,
               CASE WHEN f.d >= 0 THEN NEW.to_stage ELSE f.stage END AS b,
               abs(f.d) AS d
        FROM {firsts} AS f
        UNION ALL
        SELECT NEW.to_stage, f.stage, 0 FROM {firsts} AS f WHERE f.d = 0
    )"""


def _triggers(tests: bool = False, days: bool = False) -> dict[str, str]:
    """The triggers; `tests`: the leads table has is_test (migration 0011), and test leads
    are left out of every count; `days`: the daily and money rollups exist (migration 0013)
    and are kept too (they come after 0011: `days` implies `tests`)."""
    seconds = seconds_sql("sqlite", "min(at)", "NEW.at")
    firsts = f"""(SELECT to_stage AS stage, {seconds} AS d FROM stage_events
                  WHERE lead_id = NEW.lead_id AND id <> NEW.id GROUP BY to_stage)"""
    real_lead = " AND NOT l.is_test" if tests else ""
    same_key = f"{_SAME_LEAD_KEY} AND OLD.is_test IS NEW.is_test" if tests else _SAME_LEAD_KEY
    key_columns = "source, temperature, script_version, entered, stage, opted_out_at, blocked_at"
    scopes = _scopes("sqlite", days)
    changed = "".join(
        f"""
                UPDATE {scope.table("leads")} SET leads = leads - 1
                WHERE ({scope.columns}{_LEAD_COLUMNS})
                    = ({scope.values("OLD")}{_lead_values("OLD")})
                AND {_real("OLD", tests)};
                {_count_lead("NEW", tests, scope)}"""
        for scope in scopes
    )
    asked = "".join(
        f"""
                UPDATE {scope.table("questions")} SET waiting = waiting - 1
                WHERE {scope.same_day("OLD")}source = OLD.source AND question = OLD.position
                AND {_real("OLD", tests)}
                AND NOT EXISTS (SELECT 1 FROM answers a
                    WHERE a.lead_id = OLD.id AND a.question = OLD.position);
                {_count_waiting("NEW", tests, scope)}"""
        for scope in scopes
    )
    answered = "".join(
        f"""
                INSERT INTO {scope.table("questions")}
                    ({scope.columns}source, question, answered, waiting)
                SELECT {scope.values("l")}l.source, NEW.question, 1, 0 FROM leads l
                WHERE l.id = NEW.lead_id{real_lead}
                ON CONFLICT ({scope.columns}source, question)
                DO UPDATE SET answered = answered + 1;
                UPDATE {scope.table("questions")} SET waiting = waiting - 1
                WHERE question = NEW.question AND ({scope.columns}source) = (
                    SELECT {scope.values("l")}l.source FROM leads l WHERE l.id = NEW.lead_id
                    AND l.position = NEW.question{real_lead});"""
        for scope in scopes
    )
    daily_gaps = (
        f"""
                INSERT INTO rollup_daily_gaps
                    (day, source, from_stage, to_stage, bucket, leads, seconds)
                SELECT s.day, s.source, g.a, g.b, {bucket_sql("g.d")}, 1, g.d
                FROM {_gap_rows(firsts)} AS g,
                (SELECT {day_sql("sqlite", "l.created_at")} AS day, l.source AS source
                 FROM leads l WHERE l.id = NEW.lead_id{real_lead}) AS s
                WHERE 1
                ON CONFLICT (day, source, from_stage, to_stage, bucket) DO UPDATE
                SET leads = leads + excluded.leads, seconds = seconds + excluded.seconds;"""
        if days
        else ""
    )
    triggers = {
        "rollup_lead_added": f"""
            CREATE TRIGGER rollup_lead_added AFTER INSERT ON leads BEGIN
                {"".join(_count_lead("NEW", tests, scope) for scope in scopes)}
                {"".join(_count_waiting("NEW", tests, scope) for scope in scopes)}
            END""",
        "rollup_lead_changed": f"""
            CREATE TRIGGER rollup_lead_changed
            AFTER UPDATE OF {key_columns}{", is_test" if tests else ""} ON leads
            WHEN NOT ({same_key})
            BEGIN{changed}
            END""",
        "rollup_lead_asked": f"""
            CREATE TRIGGER rollup_lead_asked AFTER UPDATE OF position ON leads
            WHEN OLD.position IS NOT NEW.position
            BEGIN{asked}
            END""",
        # Only a lead's first answer to a question changes the counts.
        "rollup_answer_added": f"""
            CREATE TRIGGER rollup_answer_added AFTER INSERT ON answers
            WHEN NOT EXISTS (SELECT 1 FROM answers a WHERE a.lead_id = NEW.lead_id
                             AND a.question = NEW.question AND a.id <> NEW.id)
            BEGIN{answered}
            END""",
        # Only a lead's first entry into a stage changes the counts: the gap from every stage
        # it entered before (or after, when the log came out of order), then the set.
        "rollup_stage_entered": f"""
            CREATE TRIGGER rollup_stage_entered AFTER INSERT ON stage_events
            WHEN NOT EXISTS (SELECT 1 FROM stage_events e WHERE e.lead_id = NEW.lead_id
                             AND e.to_stage = NEW.to_stage AND e.id <> NEW.id)
            BEGIN
                INSERT INTO rollup_gaps (source, from_stage, to_stage, bucket, leads, seconds)
                SELECT s.source, g.a, g.b, {bucket_sql("g.d")}, 1, g.d
                FROM {_gap_rows(firsts)} AS g,
                (SELECT l.source AS source FROM leads l WHERE l.id = NEW.lead_id{real_lead}
                 UNION ALL SELECT '{ALL_SOURCES}' FROM leads l
                 WHERE l.id = NEW.lead_id{real_lead}) AS s
                WHERE 1
                ON CONFLICT (source, from_stage, to_stage, bucket) DO UPDATE
                SET leads = leads + excluded.leads,
                    seconds = seconds + excluded.seconds;{daily_gaps}
                UPDATE leads SET entered = entered || NEW.to_stage || ','
                WHERE id = NEW.lead_id;
            END""",
    }
    if tests:
        triggers["rollup_lead_became_test"] = _became_test(days)
    if days:
        triggers.update(rollup_money.sqlite_triggers())
    return triggers


def _table_exists(connection: Connection, table: str) -> bool:
    if connection.dialect.name == "postgresql":
        found = connection.exec_driver_sql(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() "
            f"AND table_name = '{table}'"
        ).first()
    else:
        found = connection.exec_driver_sql(
            f"SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
        ).first()
    return found is not None


def has_test_leads(connection: Connection) -> bool:
    """Whether the leads table has is_test yet (migrations before 0011 install without)."""
    if connection.dialect.name == "postgresql":
        found = connection.exec_driver_sql(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = 'leads' AND column_name = 'is_test'"
        ).first()
        return found is not None
    columns = connection.exec_driver_sql("PRAGMA table_info(leads)").all()
    return any(column[1] == "is_test" for column in columns)


def has_daily_rollups(connection: Connection) -> bool:
    """Whether the daily and money rollups exist yet (migrations before 0013 install
    without)."""
    return _table_exists(connection, "rollup_daily_leads")


def install(connection: Connection) -> None:
    """Creates the triggers (again)."""
    if not supported(connection.dialect.name):
        return
    tests = has_test_leads(connection)
    days = tests and has_daily_rollups(connection)
    if connection.dialect.name == "postgresql":
        _pg_install(connection, tests, days)
        return
    for name, ddl in _triggers(tests, days).items():
        connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
        connection.exec_driver_sql(ddl)


def uninstall(connection: Connection) -> None:
    if not supported(connection.dialect.name):
        return
    if connection.dialect.name == "postgresql":
        _pg_uninstall(connection)
        return
    for name in _triggers(tests=True, days=True):
        connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")


def rebuild(connection: Connection) -> None:
    """Recomputes every rollup from the log in set-based SQL, triggers off meanwhile (call
    inside one transaction: nobody sees the tables half built)."""
    if not supported(connection.dialect.name):
        return
    uninstall(connection)
    postgres = connection.dialect.name == "postgresql"
    # Test runs (/test_funnel) are in no report: where the column exists, they stay out.
    tests = has_test_leads(connection)
    real = "NOT l.is_test" if tests else "1=1"
    if tests and has_daily_rollups(connection):
        statements = _daily_rebuild(connection.dialect.name, real)
    else:
        statements = _pg_rebuild(real) if postgres else _sqlite_rebuild(real)
    for statement in statements:
        connection.exec_driver_sql(statement)
    install(connection)


def _sqlite_entered() -> str:
    return """UPDATE leads SET entered = ',' || coalesce((
               SELECT group_concat(stage, ',') || ',' FROM (
                   SELECT to_stage AS stage FROM stage_events e WHERE e.lead_id = leads.id
                   GROUP BY to_stage ORDER BY min(e.id))), '')"""


def _sqlite_rebuild(real: str) -> tuple[str, ...]:
    seconds = seconds_sql("sqlite", "a.at", "b.at")
    return (
        "DELETE FROM rollup_leads",
        "DELETE FROM rollup_gaps",
        "DELETE FROM rollup_questions",
        _sqlite_entered(),
        f"""INSERT INTO rollup_leads {_LEAD_KEY[:-1]}, leads)
            SELECT {_lead_values("l")}, count(*) FROM leads l WHERE {real}
            GROUP BY {_lead_values("l")}""",
        f"""WITH firsts AS (
                SELECT lead_id, to_stage AS stage, min(at) AS at FROM stage_events
                GROUP BY lead_id, to_stage),
            pairs AS (
                SELECT a.lead_id AS lead_id, a.stage AS a, b.stage AS b, {seconds} AS d
                FROM firsts a JOIN firsts b ON b.lead_id = a.lead_id AND b.stage <> a.stage),
            gaps AS (
                SELECT l.source AS source, p.a, p.b, p.d FROM pairs p
                JOIN leads l ON l.id = p.lead_id WHERE p.d >= 0 AND {real}
                UNION ALL SELECT '{ALL_SOURCES}', p.a, p.b, p.d FROM pairs p
                JOIN leads l ON l.id = p.lead_id WHERE p.d >= 0 AND {real})
            INSERT INTO rollup_gaps (source, from_stage, to_stage, bucket, leads, seconds)
            SELECT source, a, b, {bucket_sql("d")}, count(*), sum(d) FROM gaps
            GROUP BY source, a, b, {bucket_sql("d")}""",
        f"""INSERT INTO rollup_questions (source, question, answered, waiting)
            SELECT l.source, a.question, count(DISTINCT a.lead_id), 0
            FROM answers a JOIN leads l ON l.id = a.lead_id WHERE {real}
            GROUP BY l.source, a.question""",
        f"""INSERT INTO rollup_questions (source, question, answered, waiting)
            SELECT l.source, l.position, 0, count(*) FROM leads l
            WHERE l.position IS NOT NULL AND {real} AND NOT EXISTS (
                SELECT 1 FROM answers a WHERE a.lead_id = l.id AND a.question = l.position)
            GROUP BY l.source, l.position
            ON CONFLICT (source, question) DO UPDATE SET waiting = excluded.waiting""",
    )


def _daily_rebuild(dialect: str, real: str) -> tuple[str, ...]:
    """The daily rollups from the log, then the all-time ones as their sums over the days
    (one pass over the log, not two), then the money rollups."""
    postgres = dialect == "postgresql"
    seconds = seconds_sql(dialect, "a.at", "b.at")
    day = day_sql(dialect, "l.created_at")
    values = _pg_lead_values("l") if postgres else _lead_values("l")
    entered = _pg_entered() if postgres else (_sqlite_entered(),)
    # Several instances may be running: nobody writes the tables being rebuilt meanwhile.
    lock = ["LOCK TABLE leads, stage_events, answers, purchases IN SHARE MODE"] if postgres else []
    tables = ("leads", "gaps", "questions", "daily_leads", "daily_gaps", "daily_questions")
    return (
        *lock,
        *(f"DELETE FROM rollup_{name}" for name in tables),
        *entered,
        f"""INSERT INTO rollup_daily_leads (day, {_LEAD_COLUMNS}, leads)
            SELECT {day}, {values}, count(*) FROM leads l WHERE {real}
            GROUP BY {day}, {values}""",
        f"""INSERT INTO rollup_leads ({_LEAD_COLUMNS}, leads)
            SELECT {_LEAD_COLUMNS}, sum(leads) FROM rollup_daily_leads
            GROUP BY {_LEAD_COLUMNS}""",
        f"""WITH firsts AS (
                SELECT lead_id, to_stage AS stage, min(at) AS at FROM stage_events
                GROUP BY lead_id, to_stage),
            pairs AS (
                SELECT a.lead_id AS lead_id, a.stage AS a, b.stage AS b, {seconds} AS d
                FROM firsts a JOIN firsts b ON b.lead_id = a.lead_id AND b.stage <> a.stage),
            gaps AS (
                SELECT {day} AS day, l.source AS source, p.a AS a, p.b AS b, p.d AS d
                FROM pairs p JOIN leads l ON l.id = p.lead_id WHERE p.d >= 0 AND {real})
            INSERT INTO rollup_daily_gaps
                (day, source, from_stage, to_stage, bucket, leads, seconds)
            SELECT day, source, a, b, {bucket_sql("d")}, count(*), sum(d) FROM gaps
            GROUP BY day, source, a, b, {bucket_sql("d")}""",
        f"""INSERT INTO rollup_gaps (source, from_stage, to_stage, bucket, leads, seconds)
            SELECT source, from_stage, to_stage, bucket, sum(leads), sum(seconds) FROM (
                SELECT source, from_stage, to_stage, bucket, leads, seconds
                FROM rollup_daily_gaps
                UNION ALL SELECT '{ALL_SOURCES}', from_stage, to_stage, bucket, leads, seconds
                FROM rollup_daily_gaps) AS g
            GROUP BY source, from_stage, to_stage, bucket""",
        f"""INSERT INTO rollup_daily_questions (day, source, question, answered, waiting)
            SELECT {day}, l.source, a.question, count(DISTINCT a.lead_id), 0
            FROM answers a JOIN leads l ON l.id = a.lead_id WHERE {real}
            GROUP BY {day}, l.source, a.question""",
        f"""INSERT INTO rollup_daily_questions (day, source, question, answered, waiting)
            SELECT {day}, l.source, l.position, 0, count(*) FROM leads l
            WHERE l.position IS NOT NULL AND {real} AND NOT EXISTS (
                SELECT 1 FROM answers a WHERE a.lead_id = l.id AND a.question = l.position)
            GROUP BY {day}, l.source, l.position
            ON CONFLICT (day, source, question) DO UPDATE SET waiting = excluded.waiting""",
        """INSERT INTO rollup_questions (source, question, answered, waiting)
            SELECT source, question, sum(answered), sum(waiting) FROM rollup_daily_questions
            GROUP BY source, question""",
        *rollup_money.rebuild_statements(dialect, real),
    )


# -- the triggers (PostgreSQL) ------------------------------------------------------------


def _pg_lead_values(row: str) -> str:
    return (
        f"{row}.source, coalesce({row}.temperature, ''), {row}.script_version, {row}.entered, "
        f"{row}.stage, CAST({row}.opted_out_at IS NOT NULL AS INTEGER), "
        f"CAST({row}.blocked_at IS NOT NULL AS INTEGER)"
    )


_PG_ALL_TIME = _Scope(False, "postgresql")


def _pg_count_lead(row: str, delta: int, scope: _Scope = _PG_ALL_TIME) -> str:
    table, key = scope.table("leads"), f"({scope.columns}{_LEAD_COLUMNS})"
    return (
        f"INSERT INTO {table} {key[:-1]}, leads) VALUES ({scope.values(row)}"
        f"{_pg_lead_values(row)}, {delta}) ON CONFLICT {key} DO UPDATE SET "
        f"leads = {table}.leads + {delta};"
    )


def _pg_count_waiting(row: str, delta: int, scopes: Sequence[_Scope] = (_PG_ALL_TIME,)) -> str:
    """The lead waits at its question (or stops waiting), unless it answered it before."""
    counts = "".join(
        f"""
            INSERT INTO {scope.table("questions")}
                ({scope.columns}source, question, answered, waiting)
            VALUES ({scope.values(row)}{row}.source, {row}.position, 0, {delta})
            ON CONFLICT ({scope.columns}source, question)
            DO UPDATE SET waiting = {scope.table("questions")}.waiting + {delta};"""
        for scope in scopes
    )
    return f"""
        IF {row}.position IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM answers a WHERE a.lead_id = {row}.id AND a.question = {row}.position
        ) THEN{counts}
        END IF;"""


_PG_SAME_LEAD_KEY = (
    "OLD.source IS NOT DISTINCT FROM NEW.source "
    "AND coalesce(OLD.temperature, '') = coalesce(NEW.temperature, '') "
    "AND OLD.script_version IS NOT DISTINCT FROM NEW.script_version "
    "AND OLD.entered IS NOT DISTINCT FROM NEW.entered "
    "AND OLD.stage IS NOT DISTINCT FROM NEW.stage "
    "AND (OLD.opted_out_at IS NULL) = (NEW.opted_out_at IS NULL) "
    "AND (OLD.blocked_at IS NULL) = (NEW.blocked_at IS NULL)"
)


def _pg_if_real(row: str, tests: bool, body: str) -> str:
    """`body` only for a lead that counts (test leads, /test_funnel, never do)."""
    return f"IF NOT {row}.is_test THEN {body} END IF;" if tests else body


def _pg_became_test(days: bool) -> str:
    """A counted lead turned into a test lead: what the other triggers counted for it is
    taken back, so the rollups equal a rebuild that leaves test leads out."""
    seconds = seconds_sql("postgresql", "f1.at", "f2.at")
    scopes = _scopes("postgresql", days)
    statements = []
    for scope in scopes:
        sources = (
            "g.source = OLD.source"
            if scope.daily
            else f"g.source IN (OLD.source, '{ALL_SOURCES}')"
        )
        same_day = f"g.day = {day_sql('postgresql', 'OLD.created_at')} AND " if scope.daily else ""
        statements.append(f"""
            UPDATE {scope.table("questions")} SET answered = answered - 1
            WHERE {scope.same_day("OLD")}source = OLD.source AND question IN (
                SELECT question FROM answers WHERE lead_id = OLD.id);
            WITH firsts AS (
                SELECT to_stage, min(at) AS at FROM stage_events WHERE lead_id = OLD.id
                GROUP BY to_stage),
            pairs AS (
                SELECT f1.to_stage AS a, f2.to_stage AS b, {seconds} AS d
                FROM firsts f1 JOIN firsts f2 ON f2.to_stage <> f1.to_stage)
            UPDATE {scope.table("gaps")} g SET leads = g.leads - 1, seconds = g.seconds - p.d
            FROM pairs p
            WHERE {same_day}{sources} AND p.d >= 0
            AND g.from_stage = p.a AND g.to_stage = p.b AND g.bucket = {bucket_sql("p.d")};""")
    return f"""
        IF NEW.is_test AND NOT OLD.is_test THEN
            IF OLD.position IS NOT DISTINCT FROM NEW.position THEN
                {_pg_count_waiting("OLD", -1, scopes)}
            END IF;{"".join(statements)}
            {rollup_money.became_test("postgresql", "OLD") if days else ""}
        END IF;"""


def _pg_functions(tests: bool = False, days: bool = False) -> dict[str, tuple[str, str, str]]:
    """name: (table, trigger clause, function body); `tests`: the leads table has is_test
    (migration 0011), and test leads are left out of every count; `days`: the daily and
    money rollups exist (migration 0013) and are kept too."""
    seconds = seconds_sql("postgresql", "min(at)", "NEW.at")
    firsts = f"""(SELECT to_stage AS stage, {seconds} AS d FROM stage_events
                  WHERE lead_id = NEW.lead_id AND id <> NEW.id GROUP BY to_stage)"""
    # Taking the lead's row first makes a lead's transactions take turns here (see the doc).
    lock_lead = "PERFORM 1 FROM leads WHERE id = NEW.lead_id FOR UPDATE;"
    skip_test_lead = (
        "IF EXISTS (SELECT 1 FROM leads WHERE id = NEW.lead_id AND is_test) THEN "
        "RETURN NULL; END IF;"
        if tests
        else ""
    )
    changed_columns = "source, temperature, script_version, entered, stage, opted_out_at, "
    changed_columns += "blocked_at, is_test" if tests else "blocked_at"
    same_key = f"{_PG_SAME_LEAD_KEY} AND OLD.is_test = NEW.is_test" if tests else _PG_SAME_LEAD_KEY
    scopes = _scopes("postgresql", days)
    uncounted = "".join(
        f"""UPDATE {scope.table("leads")} SET leads = leads - 1
                WHERE ({scope.columns}{_LEAD_COLUMNS})
                    = ({scope.values("OLD")}{_pg_lead_values("OLD")});"""
        for scope in scopes
    )
    counted = "".join(_pg_count_lead("NEW", 1, scope) for scope in scopes)
    answered = "".join(
        f"""
                INSERT INTO {scope.table("questions")}
                    ({scope.columns}source, question, answered, waiting)
                SELECT {scope.values("l")}l.source, NEW.question, 1, 0 FROM leads l
                WHERE l.id = NEW.lead_id
                ON CONFLICT ({scope.columns}source, question)
                DO UPDATE SET answered = {scope.table("questions")}.answered + 1;
                UPDATE {scope.table("questions")} SET waiting = waiting - 1
                WHERE question = NEW.question AND ({scope.columns}source) = (
                    SELECT {scope.values("l")}l.source FROM leads l WHERE l.id = NEW.lead_id
                    AND l.position = NEW.question);"""
        for scope in scopes
    )
    daily_gaps = (
        f"""
                INSERT INTO rollup_daily_gaps
                    (day, source, from_stage, to_stage, bucket, leads, seconds)
                SELECT s.day, s.source, g.a, g.b, {bucket_sql("g.d")}, 1, g.d
                FROM {_gap_rows(firsts)} AS g,
                (SELECT {day_sql("postgresql", "l.created_at")} AS day, l.source AS source
                 FROM leads l WHERE l.id = NEW.lead_id) AS s
                ON CONFLICT (day, source, from_stage, to_stage, bucket) DO UPDATE
                SET leads = rollup_daily_gaps.leads + excluded.leads,
                    seconds = rollup_daily_gaps.seconds + excluded.seconds;"""
        if days
        else ""
    )
    functions = {
        "rollup_lead_added": (
            "leads",
            "AFTER INSERT ON leads FOR EACH ROW",
            _pg_if_real("NEW", tests, f"{counted} {_pg_count_waiting('NEW', 1, scopes)}"),
        ),
        "rollup_lead_changed": (
            "leads",
            f"AFTER UPDATE OF {changed_columns} ON leads FOR EACH ROW WHEN (NOT ({same_key}))",
            _pg_if_real("OLD", tests, uncounted)
            + _pg_if_real("NEW", tests, counted)
            + (_pg_became_test(days) if tests else ""),
        ),
        "rollup_lead_asked": (
            "leads",
            "AFTER UPDATE OF position ON leads FOR EACH ROW "
            "WHEN (OLD.position IS DISTINCT FROM NEW.position)",
            _pg_if_real("OLD", tests, _pg_count_waiting("OLD", -1, scopes))
            + _pg_if_real("NEW", tests, _pg_count_waiting("NEW", 1, scopes)),
        ),
        # Only a lead's first answer to a question changes the counts.
        "rollup_answer_added": (
            "answers",
            "AFTER INSERT ON answers FOR EACH ROW",
            f"""{lock_lead}
                {skip_test_lead}
                IF EXISTS (SELECT 1 FROM answers a WHERE a.lead_id = NEW.lead_id
                           AND a.question = NEW.question AND a.id <> NEW.id) THEN
                    RETURN NULL;
                END IF;{answered}""",
        ),
        # Only a lead's first entry into a stage changes the counts: the gap from every stage
        # it entered before (or after, when the log came out of order), then the set.
        "rollup_stage_entered": (
            "stage_events",
            "AFTER INSERT ON stage_events FOR EACH ROW",
            f"""{lock_lead}
                IF EXISTS (SELECT 1 FROM stage_events e WHERE e.lead_id = NEW.lead_id
                           AND e.to_stage = NEW.to_stage AND e.id <> NEW.id) THEN
                    RETURN NULL;
                END IF;
                {
                "IF NOT EXISTS (SELECT 1 FROM leads WHERE id = NEW.lead_id AND is_test) THEN"
                if tests
                else ""
            }
                INSERT INTO rollup_gaps (source, from_stage, to_stage, bucket, leads, seconds)
                SELECT s.source, g.a, g.b, {bucket_sql("g.d")}, 1, g.d
                FROM {_gap_rows(firsts)} AS g,
                (SELECT l.source AS source FROM leads l WHERE l.id = NEW.lead_id
                 UNION ALL SELECT '{ALL_SOURCES}') AS s
                ON CONFLICT (source, from_stage, to_stage, bucket) DO UPDATE
                SET leads = rollup_gaps.leads + excluded.leads,
                    seconds = rollup_gaps.seconds + excluded.seconds;{daily_gaps}
                {"END IF;" if tests else ""}
                UPDATE leads SET entered = entered || NEW.to_stage || ','
                WHERE id = NEW.lead_id;""",
        ),
    }
    if days:
        functions.update(rollup_money.pg_functions())
    return functions


def _pg_install(connection: Connection, tests: bool, days: bool) -> None:
    for name, (table, clause, body) in _pg_functions(tests, days).items():
        connection.exec_driver_sql(
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $body$\n"
            f"BEGIN\n{body}\nRETURN NULL;\nEND\n$body$"
        )
        connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        connection.exec_driver_sql(f"CREATE TRIGGER {name} {clause} EXECUTE FUNCTION {name}()")


def _pg_uninstall(connection: Connection) -> None:
    for name, (table, _clause, _body) in _pg_functions(tests=True, days=True).items():
        connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        connection.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}()")


def _pg_entered() -> tuple[str, ...]:
    return (
        """UPDATE leads SET entered = ',' WHERE entered <> ','
           AND NOT EXISTS (SELECT 1 FROM stage_events e WHERE e.lead_id = leads.id)""",
        """UPDATE leads SET entered = f.entered FROM (
               SELECT lead_id, ',' || string_agg(stage, ',' ORDER BY first_id) || ',' AS entered
               FROM (SELECT lead_id, to_stage AS stage, min(id) AS first_id FROM stage_events
                     GROUP BY lead_id, to_stage) AS firsts
               GROUP BY lead_id) AS f
           WHERE leads.id = f.lead_id AND leads.entered IS DISTINCT FROM f.entered""",
    )


def _pg_rebuild(real: str) -> tuple[str, ...]:
    seconds = seconds_sql("postgresql", "a.at", "b.at")
    return (
        # Several instances may be running: nobody writes the tables being rebuilt meanwhile.
        "LOCK TABLE leads, stage_events, answers IN SHARE MODE",
        "DELETE FROM rollup_leads",
        "DELETE FROM rollup_gaps",
        "DELETE FROM rollup_questions",
        *_pg_entered(),
        f"""INSERT INTO rollup_leads {_LEAD_KEY[:-1]}, leads)
            SELECT {_pg_lead_values("l")}, count(*) FROM leads l WHERE {real}
            GROUP BY {_pg_lead_values("l")}""",
        f"""WITH firsts AS (
                SELECT lead_id, to_stage AS stage, min(at) AS at FROM stage_events
                GROUP BY lead_id, to_stage),
            pairs AS (
                SELECT a.lead_id AS lead_id, a.stage AS a, b.stage AS b, {seconds} AS d
                FROM firsts a JOIN firsts b ON b.lead_id = a.lead_id AND b.stage <> a.stage),
            gaps AS (
                SELECT l.source AS source, p.a, p.b, p.d FROM pairs p
                JOIN leads l ON l.id = p.lead_id WHERE p.d >= 0 AND {real}
                UNION ALL SELECT '{ALL_SOURCES}', p.a, p.b, p.d FROM pairs p
                JOIN leads l ON l.id = p.lead_id WHERE p.d >= 0 AND {real})
            INSERT INTO rollup_gaps (source, from_stage, to_stage, bucket, leads, seconds)
            SELECT source, a, b, {bucket_sql("d")}, count(*), sum(d) FROM gaps
            GROUP BY source, a, b, {bucket_sql("d")}""",
        f"""INSERT INTO rollup_questions (source, question, answered, waiting)
            SELECT l.source, a.question, count(DISTINCT a.lead_id), 0
            FROM answers a JOIN leads l ON l.id = a.lead_id WHERE {real}
            GROUP BY l.source, a.question""",
        f"""INSERT INTO rollup_questions (source, question, answered, waiting)
            SELECT l.source, l.position, 0, count(*) FROM leads l
            WHERE l.position IS NOT NULL AND {real} AND NOT EXISTS (
                SELECT 1 FROM answers a WHERE a.lead_id = l.id AND a.question = l.position)
            GROUP BY l.source, l.position
            ON CONFLICT (source, question) DO UPDATE SET waiting = excluded.waiting""",
    )


# -- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeadsRow:
    source: str
    temperature: str | None
    version: str
    entered: tuple[str, ...]
    stage: str
    opted_out: bool
    blocked: bool
    leads: int


@dataclass(frozen=True)
class GapRow:
    from_stage: str
    to_stage: str
    bucket: int
    leads: int
    seconds: int


async def read_leads(session: AsyncSession, source: str | None) -> list[LeadsRow]:
    where, params = _source_filter(source)
    rows = await session.execute(
        text(
            "SELECT source, temperature, script_version, entered, stage, opted_out, blocked, "
            f"leads FROM rollup_leads WHERE leads > 0{where}"
        ),
        params,
    )
    return _leads_rows(rows.all())


def _leads_rows(rows: Sequence[Any]) -> list[LeadsRow]:
    # A few dozen distinct sets among thousands of rows: each is split once.
    sets: dict[str, tuple[str, ...]] = {}
    result = []
    for src, temperature, version, entered, stage, opted, blocked, n in rows:
        stages = sets.get(entered)
        if stages is None:
            stages = sets[entered] = tuple(entered_stages(entered))
        result.append(
            LeadsRow(
                src, temperature or None, version, stages, stage, bool(opted), bool(blocked),
                int(n),
            )
        )  # fmt: skip
    return result


async def read_gaps(
    session: AsyncSession, source: str | None, pairs: Sequence[tuple[str, str]]
) -> list[GapRow]:
    """The histograms of the given (from, to) stage pairs, for one source or all."""
    if not pairs:
        return []
    params: dict[str, Any] = {"source": ALL_SOURCES if source is None else source}
    wanted = []
    for n, (a, b) in enumerate(pairs):
        params[f"a{n}"], params[f"b{n}"] = a, b
        wanted.append(f"(from_stage = :a{n} AND to_stage = :b{n})")
    rows = await session.execute(
        text(
            "SELECT from_stage, to_stage, bucket, leads, seconds FROM rollup_gaps "
            f"WHERE source = :source AND leads > 0 AND ({' OR '.join(wanted)})"
        ),
        params,
    )
    return [GapRow(a, b, int(bucket), int(n), int(s)) for a, b, bucket, n, s in rows.all()]


async def read_questions(
    session: AsyncSession, source: str | None
) -> tuple[dict[str, int], dict[str, int]]:
    """(answered, waiting) per question."""
    where, params = _source_filter(source)
    rows = await session.execute(
        text(
            "SELECT question, sum(answered), sum(waiting) FROM rollup_questions "
            f"WHERE 1 = 1{where} GROUP BY question"
        ),
        params,
    )
    answered: dict[str, int] = {}
    waiting: dict[str, int] = {}
    for question, done, wait in rows.all():
        answered[question] = int(done or 0)
        waiting[question] = int(wait or 0)
    return answered, waiting


def _source_filter(source: str | None) -> tuple[str, dict[str, Any]]:
    if source is None:
        return "", {}
    return " AND source = :source", {"source": source}


# -- reading the daily rollups: sums over the whole days of a period -------------------------


async def read_daily_leads(
    session: AsyncSession, source: str | None, span: DaySpan
) -> list[LeadsRow]:
    days, params = span.where()
    where, by_source = _source_filter(source)
    rows = await session.execute(
        text(
            f"SELECT {_LEAD_COLUMNS}, sum(leads) FROM rollup_daily_leads "
            f"WHERE 1 = 1{days}{where} GROUP BY {_LEAD_COLUMNS} HAVING sum(leads) > 0"
        ),
        {**params, **by_source},
    )
    return _leads_rows(rows.all())


async def read_daily_gaps(
    session: AsyncSession, source: str | None, pairs: Sequence[tuple[str, str]], span: DaySpan
) -> list[GapRow]:
    """The histograms of the given (from, to) stage pairs, for one source or all."""
    if not pairs:
        return []
    days, params = span.where()
    where, by_source = _source_filter(source)
    params.update(by_source)
    wanted = []
    for n, (a, b) in enumerate(pairs):
        params[f"a{n}"], params[f"b{n}"] = a, b
        wanted.append(f"(from_stage = :a{n} AND to_stage = :b{n})")
    rows = await session.execute(
        text(
            "SELECT from_stage, to_stage, bucket, sum(leads), sum(seconds) FROM rollup_daily_gaps "
            f"WHERE ({' OR '.join(wanted)}){days}{where} "
            "GROUP BY from_stage, to_stage, bucket HAVING sum(leads) > 0"
        ),
        params,
    )
    return [GapRow(a, b, int(bucket), int(n), int(s)) for a, b, bucket, n, s in rows.all()]


async def read_daily_questions(
    session: AsyncSession, source: str | None, span: DaySpan
) -> tuple[dict[str, int], dict[str, int]]:
    """(answered, waiting) per question."""
    days, params = span.where()
    where, by_source = _source_filter(source)
    rows = await session.execute(
        text(
            "SELECT question, sum(answered), sum(waiting) FROM rollup_daily_questions "
            f"WHERE 1 = 1{days}{where} GROUP BY question"
        ),
        {**params, **by_source},
    )
    answered: dict[str, int] = {}
    waiting: dict[str, int] = {}
    for question, done, wait in rows.all():
        answered[question] = int(done or 0)
        waiting[question] = int(wait or 0)
    return answered, waiting
