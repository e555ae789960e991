"""Broadcasts end to end: an admin composes one with /broadcast (bad input at every step,
stale and forged buttons, a double tap on "send"), it reaches each lead of the segment once
through the touch outbox (opt-out, blocked users, the send window and the rate limiter hold)
across a restart, the A/B split is sticky, and /broadcasts reports what came of it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator
from telegram_emulator.state import BotMessage
from telegram_emulator.users import SimUser

from bot.app import App
from bot.ratelimit import RateLimiter
from funnel.broadcasts.broadcasts import arm_of, campaign_of
from funnel.core import store
from funnel.core.clock import FakeClock
from funnel.core.models import Broadcast, BroadcastRecipient, Touch
from funnel.core.telegram_text import visible_text
from handlers.i18n import t
from tests.e2e.conftest import World, fast_limiter, running_world, settings_for

RU = "ru"


def words(key: str, **fields: object) -> str:
    """A catalog text as the reader sees it (tags removed)."""
    return visible_text(t(key, lang=RU, **fields))


async def prospect(world: World, name: str, source: str = "vk_ads") -> SimUser:
    user = world.user(name)
    await user.send(f"/start {source}")
    await user.next_message()
    return user


async def say(world: World, text: str) -> BotMessage:
    await world.admin.send(text)
    return await world.admin.next_message()


async def tap(user: SimUser, message: BotMessage, label: str) -> str | None:
    query = await user.press(message, label)
    return (await user.wait_for_answer(query)).text


async def compose(
    world: World, segment: str, text: str, text_b: str | None = None, buttons: str | None = None
) -> int:
    """The shortest flow: segment, text, optional buttons and split, now, send."""
    admin = world.admin
    prompt = await say(world, f"/broadcast {segment}")
    assert words("broadcast.prompt.text")[:20] in prompt.plain_text
    buttons_step = await say(world, text)
    if buttons is None:
        await tap(admin, buttons_step, t("broadcast.button.no_buttons", lang=RU))
        split_step = await admin.next_message()
    else:
        split_step = await say(world, buttons)
    if text_b is None:
        await tap(admin, split_step, t("broadcast.button.no_split", lang=RU))
        time_step = await admin.next_message()
    else:
        time_step = await say(world, text_b)
    await tap(admin, time_step, t("broadcast.button.now", lang=RU))
    confirm = await admin.wait_for(lambda m: t("broadcast.button.send", lang=RU) in m.labels)
    answer = await tap(admin, confirm, t("broadcast.button.send", lang=RU))
    assert answer is None
    launched = await admin.wait_for(lambda m: "🚀" in m.plain_text, after=confirm)
    admin.skip_received()
    async with world.sessions() as session:
        newest = (await session.scalars(select(Broadcast).order_by(Broadcast.id.desc()))).first()
        assert newest is not None and newest.status == "scheduled"
        assert f"#{newest.id}" in launched.plain_text
        return newest.id


def got(user: SimUser, text: str) -> int:
    return sum(1 for m in user.messages if m.plain_text == text)


async def statuses(app: App, broadcast_id: int) -> list[str]:
    async with app.sessions() as session:
        query = select(Touch.status).where(Touch.campaign == campaign_of(broadcast_id))
        return sorted((await session.scalars(query)).all())


async def test_a_broadcast_reaches_each_lead_once_across_a_restart(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    admin = emu.add_user("Owner", username="owner")
    settings = settings_for(emu, tmp_path, admin_ids=str(admin.id))
    # Slow enough overall that a stop catches the broadcast half-way.
    slow = RateLimiter(rate_per_second=4, chat_rate_per_second=200, chat_burst=50)
    app = App(settings, token=DEFAULT_TOKEN, clock=clock, limiter=slow)
    await app.start(scheduler=False)
    world = World(emu, app, admin, admin, emu.add_group("none"))
    leads = [await prospect(world, f"Лид{i}") for i in range(12)]
    elsewhere = await prospect(world, "Другой", source="direct")
    stopped, blocking = leads[0], leads[-1]
    await stopped.send("/stop")
    await stopped.next_message()
    text = "🎓 Новый поток стартует <b>в понедельник</b>!"
    broadcast_id = await compose(world, "source=vk_ads", text)
    # The admin saw the test send exactly as the leads will.
    assert got(admin, visible_text(text)) == 1

    tick = asyncio.create_task(app.outbox.tick())
    await emu.wait_until(lambda: sum(got(u, visible_text(text)) for u in leads) >= 2, 20)
    await app.stop()  # SIGTERM half-way
    await asyncio.gather(tick, return_exceptions=True)
    half = await statuses(app, broadcast_id)
    assert "planned" in half and "unknown" not in half and "sending" not in half
    # While the bot is down the last lead blocks it: the send after the restart gets a 403.
    await blocking.block()

    again = App(settings, token=DEFAULT_TOKEN, clock=clock, limiter=fast_limiter())
    await again.prepare()
    try:
        await again.outbox.tick()
        await again.outbox.tick()  # nothing left: a second round sends nothing twice
        final = await statuses(again, broadcast_id)
    finally:
        await again.stop()
    # Written once each; the lead who sent /stop is no recipient at all.
    assert final == ["failed"] + ["sent"] * 10
    for user in leads[1:-1]:
        assert got(user, visible_text(text)) == 1
    assert got(stopped, visible_text(text)) == 0
    assert got(blocking, visible_text(text)) == 0
    assert got(elsewhere, visible_text(text)) == 0
    async with again.sessions() as session:
        blocked_lead = await store.lead_by_user(session, blocking.id)
        assert blocked_lead is not None and blocked_lead.blocked_at is not None
        cast = await session.get(Broadcast, broadcast_id)
        assert cast is not None and cast.recipients == 11 and cast.status == "running"


async def test_the_send_window_holds_a_broadcast_until_morning(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    async with running_world(emu, tmp_path, clock) as world:
        users = [await prospect(world, f"Лид{i}") for i in range(3)]
        broadcast_id = await compose(world, "all", "Вечерняя новость")
        # 22:30 in Moscow: after the script's window (10:00–21:00).
        clock.set(clock.now().replace(hour=19, minute=30))
        await world.app.outbox.tick()
        assert await statuses(world.app, broadcast_id) == ["planned"] * 3
        assert all(got(u, "Вечерняя новость") == 0 for u in users)
        clock.advance(timedelta(hours=12))  # 10:30 next morning
        await world.app.outbox.tick()
        assert await statuses(world.app, broadcast_id) == ["sent"] * 3
        assert all(got(u, "Вечерняя новость") == 1 for u in users)


async def test_the_guided_flow_answers_bad_input_at_every_step(world: World) -> None:
    admin = world.admin
    await prospect(world, "Лид")
    first = await say(world, "/broadcast")
    assert words("broadcast.prompt.segment")[:20] in first.plain_text
    # Segment: an unknown word is named; an empty segment is said so; the step stays.
    refused = await say(world, "colour=red")
    assert "colour=red" in refused.plain_text and "temperature" in refused.plain_text
    assert "stage=vip" in (await say(world, "stage=vip")).plain_text
    assert words("broadcast.segment_empty") in (await say(world, "source=nowhere")).plain_text
    # A sticker while the flow waits for words.
    await admin.send_sticker()
    assert words("broadcast.text_expected") in (await admin.next_message()).plain_text
    assert words("broadcast.prompt.text")[:20] in (await say(world, "source=vk_ads")).plain_text
    # Text: broken HTML, an unknown placeholder, and a text too long once names are filled.
    assert "⚠️" in (await say(world, "<b>не закрыт")).plain_text
    assert "{price}" in (await say(world, "Цена {price}")).plain_text
    too_long = await say(world, "{first_name}" * 300)
    assert "4096" in too_long.plain_text
    buttons_step = await say(world, "Привет, {first_name}! <i>Скидка</i> &amp; подарок")
    # Buttons: malformed lines, a bad link, two reply buttons, then a good set.
    assert "1" in (await say(world, "просто надпись")).plain_text
    assert "https://" in (await say(world, "Сайт | ftp://example.com")).plain_text
    two = await say(world, "Да | reply\nНет | reply")
    assert words("broadcast.error.two_reply_buttons", line=2) in two.plain_text
    split_step = await say(world, "Сайт | https://example.com/course\nИнтересно | reply")
    assert split_step.message_id > buttons_step.message_id
    # A button from an earlier step is stale now.
    stale = await tap(admin, buttons_step, t("broadcast.button.no_buttons", lang=RU))
    assert stale == t("broadcast.button.stale", lang=RU)
    time_step = await say(world, "Вариант <b>B</b>")
    # Time: not a time, the past, too far; then a time today in the school's zone.
    assert "2026-12-24" in (await say(world, "завтра")).plain_text
    assert words("broadcast.error.time_past") in (await say(world, "2020-01-01 10:00")).plain_text
    far = await say(world, "2030-01-01 10:00")
    assert words("broadcast.error.time_too_far") in far.plain_text
    await admin.send("2026-03-03 15:00")
    note = await admin.next_message()
    assert note.plain_text == words("broadcast.test.note", n=2)
    arm_a, arm_b, confirm = [await admin.next_message() for _ in range(3)]
    assert arm_a.plain_text == "Привет, Owner! Скидка & подарок"
    assert arm_b.plain_text == "Вариант B"
    assert arm_a.labels == ["Сайт", "Интересно"]
    assert "2026-03-03 15:00" in confirm.plain_text
    assert words("broadcast.confirm.count", n=1) in confirm.plain_text
    # Words at the confirmation: the admin is pointed to the buttons.
    assert words("broadcast.use_buttons") in (await say(world, "да")).plain_text
    # The time step's "now" is stale; a forged button names no broadcast of this admin.
    stale = await tap(admin, time_step, t("broadcast.button.now", lang=RU))
    assert stale == t("broadcast.button.stale", lang=RU)
    # Unsigned, a forged button is stale; signed for this chat, it still names no draft.
    forged = await admin.press_data(confirm, "bc:9999:1:send")
    assert (await admin.wait_for_answer(forged)).text == t("broadcast.button.stale", lang=RU)
    for data in ("bc:9999:1:send", "bc:99999999999999999999:1:send"):
        signed = await admin.press_data(confirm, world.signed(admin.id, data))
        assert (await admin.wait_for_answer(signed)).text == t("broadcast.button.unknown", lang=RU)
    garbage = await admin.press_data(confirm, world.signed(admin.id, "bc:x:y"))
    await admin.wait_for_answer(garbage)
    # Send, and a double tap on it.
    await tap(admin, confirm, t("broadcast.button.send", lang=RU))
    await admin.wait_for(lambda m: "🚀" in m.plain_text, after=confirm)
    again = await tap(admin, confirm, t("broadcast.button.send", lang=RU))
    async with world.sessions() as session:
        casts = list((await session.scalars(select(Broadcast))).all())
    assert [c.status for c in casts] == ["scheduled"]
    assert again == t("broadcast.button.launched", lang=RU, id=casts[0].id)
    assert casts[0].expected == 1 and casts[0].text_b == "Вариант <b>B</b>"


async def test_a_draft_survives_a_restart(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    admin = emu.add_user("Owner", username="owner")
    settings = settings_for(emu, tmp_path, admin_ids=str(admin.id))
    for attempt in range(2):
        app = App(settings, token=DEFAULT_TOKEN, clock=clock, limiter=fast_limiter())
        await app.start(scheduler=False)
        world = World(emu, app, admin, admin, emu.add_group(f"none{attempt}"))
        try:
            if attempt == 0:
                await prospect(world, "Лид")
                await say(world, "/broadcast source=vk_ads")
                await say(world, "Текст рассылки")
            else:
                resumed = await say(world, "/broadcast")
                assert resumed.plain_text == words("broadcast.resumed", id=1)
                step = await admin.next_message()
                assert words("broadcast.prompt.buttons")[:20] in step.plain_text
                assert t("broadcast.button.no_buttons", lang=RU) in step.labels
                await tap(admin, step, t("broadcast.button.no_buttons", lang=RU))
                split_step = await admin.next_message()
                await tap(admin, split_step, t("broadcast.button.no_split", lang=RU))
                time_step = await admin.next_message()
                await tap(admin, time_step, t("broadcast.button.now", lang=RU))
                await admin.wait_for(lambda m: t("broadcast.button.send", lang=RU) in m.labels)
                admin.skip_received()
                # At the confirmation, /broadcast shows the test send and the count again.
                assert (await say(world, "/broadcast")).plain_text == words(
                    "broadcast.resumed", id=1
                )
                assert (await admin.next_message()).plain_text == words("broadcast.test.note", n=1)
                assert (await admin.next_message()).plain_text == "Текст рассылки"
                confirm = await admin.next_message()
                assert t("broadcast.button.send", lang=RU) in confirm.labels
        finally:
            await app.stop()


async def test_a_prospect_cannot_use_broadcast_commands_or_buttons(world: World) -> None:
    lead = await prospect(world, "Лид")
    broadcast_id = await compose(world, "all", "Только по кнопке")
    await lead.send("/broadcast")
    reply = await lead.next_message()
    assert words("broadcast.prompt.segment")[:20] not in reply.plain_text
    await lead.send("/segment all")
    assert "🎯" not in (await lead.next_message()).plain_text
    forged = await lead.press_data(reply, f"bc:{broadcast_id}:1:cancel")
    await lead.wait_for_answer(forged)
    async with world.sessions() as session:
        cast = await session.get(Broadcast, broadcast_id)
        assert cast is not None and cast.status == "scheduled"


async def test_segment_preview_shows_size_and_a_sample(world: World) -> None:
    for i in range(3):
        await prospect(world, f"<b>Лид{i}</b>")
    await prospect(world, "Другой", source="direct")
    preview = await say(world, "/segment source=vk_ads stage=new,engaged")
    assert words("segment.preview.count", n=3) in preview.plain_text
    assert "vk_ads" in preview.plain_text and "<b>" not in preview.plain_text
    assert "Лид" not in preview.plain_text  # numbers, not names
    bad = await say(world, "/segment source=vk_ads <script>")
    assert "<script>" in bad.plain_text
    usage = await say(world, "/segment")
    assert "silent>3d" in usage.plain_text


async def test_the_split_is_sticky_and_the_report_counts_per_arm(
    world: World, clock: FakeClock
) -> None:
    users = [await prospect(world, f"Лид{i}") for i in range(10)]
    broadcast_id = await compose(
        world, "all", "Текст A", text_b="Текст B", buttons="Интересно | reply"
    )
    await world.app.outbox.tick()
    async with world.sessions() as session:
        rows = (
            await session.execute(
                select(BroadcastRecipient.lead_id, BroadcastRecipient.arm).where(
                    BroadcastRecipient.broadcast_id == broadcast_id
                )
            )
        ).all()
        leads = {u.id: await store.lead_by_user(session, u.id) for u in users}
    arms = dict(rows)
    assert set(arms.values()) == {"a", "b"}
    for user in users:
        lead = leads[user.id]
        assert lead is not None
        arm = arm_of(broadcast_id, lead.id, True)
        assert arms[lead.id] == arm  # the same hash at launch and at send
        expected = "Текст A" if arm == "a" else "Текст B"
        assert got(user, expected) == 1 and got(user, "Текст A") + got(user, "Текст B") == 1
    # One lead of each arm writes back; one answers the first question (a stage move).
    lead_of = {user.id: lead.id for user, lead in zip(users, leads.values(), strict=True) if lead}
    by_arm = {arm: [u for u in users if arms[lead_of[u.id]] == arm] for arm in ("a", "b")}
    clock.advance(timedelta(hours=1))
    replier = by_arm["a"][0]
    sent = next(m for m in replier.messages if m.plain_text == "Текст A")
    assert await tap(replier, sent, "Интересно") == t("broadcast.reply.thanks", lang=RU)
    # A tap on a broadcast the lead never received is not counted.
    for data in (f"bq:{broadcast_id + 1}", "bq:-5", "bq:99999999999999999999"):
        forged = await replier.press_data(sent, data)
        assert (await replier.wait_for_answer(forged)).text is None
    mover = by_arm["b"][0]
    question = next(m for m in mover.messages if m.buttons and "Интересно" not in m.labels)
    mover.skip_received()
    await mover.press(question, question.labels[0])
    await mover.next_message()
    report = await say(world, f"/broadcasts {broadcast_id}")
    lines = report.plain_text.splitlines()
    line_a = next(line for line in lines if line.startswith("A:"))
    line_b = next(line for line in lines if line.startswith("B:"))
    size_a, size_b = len(by_arm["a"]), len(by_arm["b"])
    assert f"получателей {size_a} · доставлено {size_a}" in line_a
    assert f"получателей {size_b} · доставлено {size_b}" in line_b
    assert "ответили 1 (" in line_a and "продвинулись 0" in line_a
    assert "ответили 1 (" in line_b  # tapping an answer is a reply too
    assert "продвинулись 1" in line_b
    for reference in ("#99999999999999", "abc", "0", str(broadcast_id + 1)):
        missing = await say(world, f"/broadcasts {reference}")
        assert missing.plain_text.startswith(words("broadcast.not_found", ref=reference)[:8])
    listing = await say(world, "/broadcasts")
    assert f"#{broadcast_id}" in listing.plain_text and "отправлено 10" in listing.plain_text
    # The follow-ups' report keeps to the script's campaigns.
    assert "broadcast:" not in (await say(world, "/campaigns")).plain_text


async def test_flood_control_puts_a_send_back_and_it_goes_once(
    world: World, clock: FakeClock
) -> None:
    users = [await prospect(world, f"Лид{i}") for i in range(3)]
    broadcast_id = await compose(world, "all", "Через паузу")
    world.emu.fail_next("sendMessage", error_code=429, retry_after=1, chat_id=users[1].chat_id)
    await world.app.outbox.tick()
    assert await statuses(world.app, broadcast_id) == ["planned", "sent", "sent"]
    # Progress while it runs.
    running = await say(world, f"/broadcast status {broadcast_id}")
    assert words("broadcast.state.running") in running.plain_text
    assert "в очереди 1 · отправлено 2 · заблокировали 0" in running.plain_text
    clock.advance(timedelta(seconds=5))
    await world.app.outbox.tick()
    assert await statuses(world.app, broadcast_id) == ["sent"] * 3
    assert [got(u, "Через паузу") for u in users] == [1, 1, 1]
    finished = await say(world, "/broadcast status")  # the latest one
    assert words("broadcast.state.finished") in finished.plain_text
    assert "в очереди 0 · отправлено 3" in finished.plain_text


async def test_a_text_telegram_refuses_at_the_test_send_goes_back_to_the_text(
    world: World,
) -> None:
    admin = world.admin
    await prospect(world, "Лид")
    await say(world, "/broadcast all")
    buttons_step = await say(world, "Текст, который Telegram не примет")
    await tap(admin, buttons_step, t("broadcast.button.no_buttons", lang=RU))
    split_step = await admin.next_message()
    await tap(admin, split_step, t("broadcast.button.no_split", lang=RU))
    time_step = await admin.next_message()
    world.emu.fail_next("sendMessage", error_code=400, chat_id=admin.chat_id,
                        description="Bad Request: can't parse entities")  # fmt: skip
    await tap(admin, time_step, t("broadcast.button.now", lang=RU))
    back = await admin.wait_for(lambda m: "can't parse entities" in m.plain_text)
    assert words("broadcast.prompt.text")[:20] in back.plain_text
    admin.skip_received()
    async with world.sessions() as session:
        [draft] = (await session.scalars(select(Broadcast))).all()
        assert (draft.status, draft.step) == ("draft", "text")
    assert words("broadcast.prompt.buttons")[:20] in (await say(world, "Другой текст")).plain_text


async def test_the_flow_speaks_the_schools_language(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    from tests.conftest import EN_SCRIPT

    async with running_world(emu, tmp_path, clock, script_path=EN_SCRIPT) as world:
        await prospect(world, "Ann")
        preview = await say(world, "/segment all")
        assert visible_text(t("segment.preview.count", lang="en", n=1)) in preview.plain_text
        refused = await say(world, "/segment colour=red")
        assert "colour=red" in refused.plain_text and "no such condition" in refused.plain_text
        start = await say(world, "/broadcast")
        assert start.plain_text.startswith(visible_text(t("broadcast.started", lang="en", id=1)))
        assert "Step 1 of 6" in start.plain_text
