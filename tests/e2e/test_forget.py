"""/forget means forgotten everywhere: no name, username, Telegram id or answer is left in
any table, the managers' cards are edited to say so, and the CRM hears of it through the
same outbox (with its idempotency key)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, text

from bot import erasure
from bot.paths import sqlite_file
from funnel.core.models import Answer, Base, Lead, Notification
from handlers.i18n import t
from tests import engines
from tests.e2e.conftest import HOT, World, qualify

# The fake CRM's fixtures are shared with the hand-off tests.
from tests.e2e.test_handoff import FakeCrm, delivered
from tests.e2e.test_handoff import crm as crm
from tests.e2e.test_handoff import crm_world as crm_world

NAME, USERNAME = "Анна", "anna_k"


async def every_value(world: World) -> str:
    """Every value of every table, as one text to search."""
    values: list[str] = []
    async with world.sessions() as session:
        for table in Base.metadata.sorted_tables:
            rows = (await session.execute(text(f"SELECT * FROM {table.name}"))).all()
            values.extend(f"{table.name}:{value}" for row in rows for value in row)
    return "\n".join(values)


async def test_forget_erases_the_person_edits_the_cards_and_tells_the_crm(
    crm_world: World,
    crm: FakeCrm,
) -> None:
    world = crm_world
    user = await qualify(world, HOT, NAME, username=USERNAME)
    card = await world.managers.next_message()
    assert NAME in card.plain_text
    await delivered(world)
    [lead_post] = await crm.wait_for(1)
    assert lead_post.body["event"] == "lead" and lead_post.body["username"] == USERNAME

    await user.send("/forget")
    confirm = await user.next_message()
    await user.press(confirm, "Да, удалить")
    done = await user.next_message()
    assert "удалены" in done.plain_text
    await delivered(world)

    # The card in the managers' chat no longer shows the person.
    edited = next(m for m in world.managers.messages if m.message_id == card.message_id)
    assert edited.plain_text == t("card.erased", lang="ru", lead=1)
    assert edited.buttons == [] or edited.buttons is None or not any(edited.buttons)
    # The CRM was told, with a key of its own that stays the same on a retry.
    received = await crm.wait_for(2)
    forgotten = received[1]
    assert forgotten.body["event"] == "forgotten" and forgotten.body["lead_id"] == 1
    assert forgotten.headers["Idempotency-Key"] == forgotten.body["idempotency_key"]
    assert set(forgotten.body) == {"event", "idempotency_key", "lead_id", "forgotten_at"}

    everything = await every_value(world)
    for trace in (NAME, USERNAME, str(user.id), str(user.chat_id), "Сменить профессию"):
        assert trace not in everything, trace
    async with world.sessions() as session:
        lead = (await session.scalars(select(Lead))).one()
        assert lead.deleted_at is not None and lead.stage  # the count stays
        answers = (await session.scalars(select(Answer))).all()
        assert answers and all(a.value is None and a.option is None for a in answers)
        kinds = {n.kind: n.status for n in (await session.scalars(select(Notification)))}
        assert kinds["card_erasure"] == "sent" and kinds["crm_forgotten"] == "sent"


async def test_forget_before_the_card_left_cancels_it(world: World) -> None:
    """A card still waiting is never sent once the lead asked to be forgotten."""
    world.emu.fail_next("sendMessage", error_code=429, retry_after=1, chat_id=world.managers.id)
    user = await qualify(world, HOT, NAME, username=USERNAME)
    await delivered(world)
    await user.send("/forget")
    await user.press(await user.next_message(), "Да, удалить")
    await user.next_message()
    world.app.clock.advance(3600)  # type: ignore[attr-defined]
    await delivered(world)
    assert world.managers.messages == []
    async with world.sessions() as session:
        statuses: dict[str, Any] = {
            n.kind: n.status for n in (await session.scalars(select(Notification)))
        }
    assert statuses == {"manager_card": "cancelled"}


# Distinctive, so that no other byte sequence of the database matches by chance.
RARE_NAME, RARE_USERNAME = "Zenobia Quillfeather", "zenobia_qf_7731"
RARE_ANSWER = "Хочу писать ботов для пасеки Кукушкино-7731"


def traces(*values: str) -> list[bytes]:
    """Each value as SQLite stores it (UTF-8) and as a JSON payload may carry it (escaped)."""
    found: list[bytes] = []
    for value in values:
        found.append(value.encode())
        found.append(json.dumps(value).strip('"').encode())
    return found


def database_files(world: World) -> dict[str, bytes]:
    """Every file of the SQLite database as it is on disk now: the file, its log, the log's
    index, a rollback journal if any."""
    main = sqlite_file(world.app.settings.database_url)
    assert main is not None
    names = [main, *(main.with_name(main.name + tail) for tail in ("-wal", "-shm", "-journal"))]
    return {path.name: path.read_bytes() for path in names if path.exists()}


def where(files: dict[str, bytes], needles: list[bytes]) -> list[str]:
    return [f"{name}: {needle!r} x{data.count(needle)}"
            for name, data in files.items() for needle in needles if needle in data]  # fmt: skip


@engines.sqlite_only
async def test_after_forget_no_file_of_the_database_holds_the_person(world: World) -> None:
    """The name, the username and a typed answer are in no byte of the database's files once
    /forget is confirmed, while the bot goes on running (its pooled connections open). They
    were: the write-ahead log kept every page the rows had been on."""
    user = world.user(RARE_NAME, username=RARE_USERNAME)
    await user.send("/start vk_ads")
    await user.next_message()
    await user.send(RARE_ANSWER)  # the first question takes typed text too
    message = await user.next_message()
    for label in HOT[1:]:
        await user.press(message, label)
        message = await user.next_message()
    await delivered(world)  # the managers' card, with the name, went out
    needles = traces(RARE_NAME, RARE_USERNAME, RARE_ANSWER)
    before = database_files(world)
    assert where(before, needles), "the person should be on disk before /forget"
    assert "bot.sqlite3-wal" in before  # WAL mode: the log is where the copies were

    # Someone else talks meanwhile: their reads and writes keep pooled connections busy.
    other = world.user("Пётр")
    await other.send("/start direct")
    question = await other.next_message()

    await user.send("/forget")
    confirm = await user.next_message()
    await user.press(confirm, "Да, удалить")
    done = await user.next_message()
    assert "удалены" in done.plain_text
    await delivered(world)  # the card edited to say so
    await erasure.settle(world.app.engine)

    after = database_files(world)
    assert where(after, needles) == []
    scrubber = erasure.scrubber(world.app.engine)
    assert scrubber is not None and scrubber.cleaned >= 1
    # The bot still runs, and what it writes from now on carries nothing of the person.
    await other.press(question, HOT[0])
    await other.next_message()
    await world.admin.send("/stats")
    await world.admin.next_message()
    assert where(database_files(world), needles) == []


@engines.needs_postgres
async def test_after_forget_postgresql_vacuums_the_tables_it_touched(world: World) -> None:
    """The erasure's UPDATEs leave the old row versions (name, answers) as dead tuples until
    VACUUM: it runs after the commit, on the tables the erasure touched."""
    from funnel.core.store import ERASED_TABLES

    async def stats() -> dict[str, tuple[int, int]]:
        async with world.sessions() as session:
            rows = await session.execute(
                text("SELECT relname, vacuum_count, n_dead_tup FROM pg_stat_user_tables "
                     "WHERE relname = ANY(:names)"),
                {"names": list(ERASED_TABLES)},
            )  # fmt: skip
            return {name: (int(count), int(dead)) for name, count, dead in rows.all()}

    user = world.user(RARE_NAME, username=RARE_USERNAME)
    await user.send("/start vk_ads")
    await user.next_message()
    await user.send(RARE_ANSWER)
    await user.next_message()
    before = await stats()
    await user.send("/forget")
    await user.press(await user.next_message(), "Да, удалить")
    await user.next_message()
    await erasure.settle(world.app.engine)
    after = await stats()
    assert set(after) == set(ERASED_TABLES)
    for name in ERASED_TABLES:
        assert after[name][0] > before.get(name, (0, 0))[0], name  # vacuumed
        assert after[name][1] == 0, name  # no dead tuple left behind
    everything = await every_value(world)
    for trace in (RARE_NAME, RARE_USERNAME, RARE_ANSWER):
        assert trace not in everything
