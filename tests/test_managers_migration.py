"""Migration 0007 (the managers' loop) on a database from before it: a lead a manager
already holds gets its open take, so the pause and the report start from what the managers
did; and the migration goes down again cleanly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import select

from bot import db
from bot.paths import shipped
from funnel.core.models import ManagerTake


def _to(connection: Any, target: str, *, up: bool = True) -> None:
    config = Config()
    config.set_main_option("script_location", str(shipped("migrations")))
    config.attributes["connection"] = connection
    (command.upgrade if up else command.downgrade)(config, target)


async def test_a_lead_taken_before_the_upgrade_has_its_open_take(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_to, "0005")
            for lead_id, manager in ((1, "77"), (2, "NULL")):
                await connection.exec_driver_sql(
                    "INSERT INTO leads (id, source, stage, score, script_version, cycle, "
                    "cycle_started_at, created_at, stage_changed_at, manager_id, manager_name, "
                    "taken_at, version, entered) VALUES "
                    f"({lead_id}, 'direct', 'qualified', 0, 't', 1, '2026-03-03 09:00:00', "
                    f"'2026-03-03 09:00:00', '2026-03-03 09:00:00', {manager}, 'Олег', "
                    "'2026-03-03 09:10:00', 1, ',')"
                )
        async with engine.begin() as connection:
            await connection.run_sync(_to, "head")
        async with db.sessionmaker(engine)() as session:
            [take] = (await session.scalars(select(ManagerTake))).all()
        assert (take.lead_id, take.manager_id, take.manager_name) == (1, 77, "Олег")
        assert take.released_at is None and take.card_id is None
        assert take.taken_at == take.called_at == take.active_at
        async with engine.begin() as connection:
            await connection.run_sync(_to, "0005", up=False)
            tables = await connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE name LIKE '%manager_takes%'"
            )
            assert tables.all() == []
    finally:
        await engine.dispose()
