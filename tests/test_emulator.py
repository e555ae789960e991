"""The Telegram Bot API emulator, driven by the real aiogram Bot over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.filters import Command, CommandObject
from aiogram.methods import TelegramMethod
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from telegram_emulator import ControlClient, HtmlParseError, TelegramEmulator, parse_html

try:
    from tests.botapi_spec import assert_requests_valid, validate_request
except ImportError:  # tests/ is not a package: pytest put it on sys.path
    from botapi_spec import assert_requests_valid, validate_request  # type: ignore[no-redef]

PNG_1024x768 = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x04\x00\x00\x00\x03\x00\x08\x06\x00\x00\x00"
    + b"\x00" * 64
)


def keyboard(*buttons: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=t, callback_data=d)] for t, d in buttons]
    )


def make_bot(emu: TelegramEmulator, timeout: float = 10.0) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(emu.base_url), timeout=timeout)
    return Bot(emu.token, session=session)


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator(rate_limits=False) as emulator:
        yield emulator


@pytest.fixture
async def bot(emu: TelegramEmulator) -> AsyncIterator[Bot]:
    client = make_bot(emu)
    yield client
    await client.session.close()


# --- round trips -----------------------------------------------------------------------------


async def test_send_message_round_trip_is_parsed_by_aiogram(
    emu: TelegramEmulator, bot: Bot
) -> None:
    user = emu.add_user("Иван", username="ivan")
    me = await bot.get_me()
    sent = await bot.send_message(
        user.id,
        "<b>Привет</b>, <i>Иван</i> &amp; <a href='https://example.com'>сайт</a>",
        parse_mode="HTML",
        reply_markup=keyboard(("Да", "answer:yes"), ("Нет", "answer:no")),
    )

    assert me.id == emu.bot_id and me.is_bot
    assert sent.from_user is not None and sent.from_user.id == emu.bot_id
    assert sent.chat.id == user.id and sent.chat.type == "private"
    assert sent.text == "Привет, Иван & сайт"
    assert [e.type for e in sent.entities or []] == ["bold", "italic", "text_link"]
    assert sent.reply_markup is not None
    received = await user.next_message(timeout=2)
    assert received.message_id == sent.message_id
    assert received.text.startswith("<b>Привет</b>")
    assert received.plain_text == "Привет, Иван & сайт"
    assert received.labels == ["Да", "Нет"]
    assert received.button("Нет").callback_data == "answer:no"
    assert user.last_message is received
    assert_requests_valid(emu.requests)


async def test_photo_document_chat_and_commands_round_trip(
    emu: TelegramEmulator, bot: Bot
) -> None:
    user = emu.add_user("Мария")
    photo = await bot.send_photo(
        user.id,
        BufferedInputFile(PNG_1024x768, "funnel.png"),
        caption="<b>Воронка</b>",
        parse_mode="HTML",
    )
    document = await bot.send_document(user.id, BufferedInputFile(b"id;stage\n", "leads.csv"))
    again = await bot.send_photo(user.id, photo.photo[-1].file_id if photo.photo else "")
    await bot.send_chat_action(user.id, "typing")
    chat = await bot.get_chat(user.id)
    await bot.set_my_commands([BotCommand(command="start", description="Начать")])
    commands = await bot.get_my_commands()

    assert photo.photo is not None and (photo.photo[-1].width, photo.photo[-1].height) == (
        1024,
        768,
    )
    assert photo.caption == "Воронка"
    assert document.document is not None and document.document.file_name == "leads.csv"
    assert document.document.mime_type == "text/csv"
    assert again.photo is not None and again.photo[-1].file_id == photo.photo[-1].file_id
    assert chat.first_name == "Мария"
    assert [c.command for c in commands] == ["start"]
    kinds = [m.kind for m in user.messages]
    assert kinds == ["photo", "document", "photo"]
    assert user.messages[0].photo is not None and user.messages[0].photo.data == PNG_1024x768
    assert_requests_valid(emu.requests)


# --- getUpdates ------------------------------------------------------------------------------


async def test_long_polling_returns_as_soon_as_a_user_sends(
    emu: TelegramEmulator, bot: Bot
) -> None:
    user = emu.add_user("Иван")
    poll = asyncio.create_task(bot.get_updates(timeout=10))
    await emu.wait_until(lambda: emu.requests_for("getUpdates"), timeout=2)
    started = time.monotonic()
    await user.send("/start promo_vk")
    updates = await asyncio.wait_for(poll, timeout=2)

    assert time.monotonic() - started < 1.0
    assert len(updates) == 1
    message = updates[0].message
    assert message is not None and message.text == "/start promo_vk"
    assert message.from_user is not None and message.from_user.id == user.id
    assert message.entities is not None and message.entities[0].type == "bot_command"
    assert message.entities[0].length == len("/start")


async def test_offset_confirms_and_limit_caps(emu: TelegramEmulator, bot: Bot) -> None:
    user = emu.add_user("Иван")
    for text in ("один", "два", "три"):
        await user.send(text)

    first = await bot.get_updates(limit=2)
    same = await bot.get_updates(limit=2)  # not confirmed yet: delivered again
    rest = await bot.get_updates(offset=first[-1].update_id + 1)
    empty = await bot.get_updates(offset=rest[-1].update_id + 1, timeout=0)

    assert [u.update_id for u in first] == [u.update_id for u in same]
    assert [u.message.text for u in first + rest if u.message] == ["один", "два", "три"]
    assert empty == []
    assert emu.pending_updates == []


async def test_allowed_updates_are_honored(emu: TelegramEmulator, bot: Bot) -> None:
    user = emu.add_user("Иван")
    sent = await bot.send_message(user.id, "?", reply_markup=keyboard(("Да", "yes")))
    await bot.get_updates(allowed_updates=["message"], timeout=0)
    await user.press(user.last_message or sent.message_id, "Да")
    await user.send("текст")

    updates = await bot.get_updates(timeout=0)

    assert [u.message.text for u in updates if u.message] == ["текст"]
    assert all(u.callback_query is None for u in updates)
    assert emu.stats.updates_dropped == 1


async def test_a_second_poller_terminates_the_first(emu: TelegramEmulator, bot: Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=10))
    await emu.wait_until(lambda: emu.requests_for("getUpdates"), timeout=2)
    second = asyncio.create_task(bot.get_updates(timeout=0))

    with pytest.raises(TelegramConflictError):
        await asyncio.wait_for(first, timeout=2)
    assert await second == []


async def test_dispatcher_polling_handles_command_with_payload(emu: TelegramEmulator) -> None:
    router = Router()

    @router.message(Command("start"))
    async def on_start(message: Message, command: CommandObject) -> None:
        await message.answer(f"source={command.args}")

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    client = make_bot(emu)
    polling = asyncio.create_task(
        dispatcher.start_polling(client, handle_signals=False, polling_timeout=1)
    )
    user = emu.add_user("Иван")
    await user.send("/start ads_2024")
    reply = await user.next_message(timeout=5)
    await dispatcher.stop_polling()
    await polling
    await client.session.close()

    assert reply.plain_text == "source=ads_2024"


async def test_user_actions_become_valid_updates(emu: TelegramEmulator, bot: Bot) -> None:
    user = emu.add_user("Иван", last_name="Петров", username="ivan_p")
    text = await user.send("Привет")
    await user.send_sticker()
    await user.send_photo(caption="скрин")
    await user.send_voice()
    await user.send_contact("+79990001122")
    await user.send_location()
    await user.edit(text, "Привет!")

    updates = await bot.get_updates()

    messages = [u.message for u in updates if u.message]
    assert messages[1].sticker is not None
    assert messages[2].photo is not None and messages[2].caption == "скрин"
    assert messages[3].voice is not None
    assert messages[4].contact is not None and messages[4].contact.user_id == user.id
    assert messages[5].location is not None
    edited = updates[-1].edited_message
    assert edited is not None and edited.text == "Привет!" and edited.message_id == text.message_id


# --- Telegram's validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "<b>bold <i>italic <u>under <s>strike</s></u></i></b>",
        "<strong>a</strong><em>b</em><ins>c</ins><strike>d</strike><del>e</del>",
        '<span class="tg-spoiler">x</span> <tg-spoiler>y</tg-spoiler>',
        '<a href="https://t.me/x?a=1&amp;b=2">link</a>',
        '<pre><code class="language-python">print(1 &lt; 2)</code></pre> <code>x</code>',
        "<blockquote>q</blockquote><blockquote expandable>long</blockquote>",
        '<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>',
        "&lt;&gt;&amp;&quot; &#60; &#x3C; 3 > 2",
        "<B>upper case tags</B>",
    ],
)
def test_valid_html_is_accepted(source: str) -> None:
    assert parse_html(source).text


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("3 < 5 & 6", 'Unsupported start tag ""'),
        ("AT&T", 'Character "&"'),
        ("<b>bold", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
        ("x</b>", "Unexpected end tag"),
        ("<div>x</div>", 'Unsupported start tag "div"'),
        ('<span class="red">x</span>', 'Tag "span" must have class "tg-spoiler"'),
        ("<tg-emoji>x</tg-emoji>", 'must have attribute "emoji-id"'),
        ("&nbsp;", 'Character "&"'),
        ("<b", "Unclosed start tag"),
        ('<a href="x>y', "Unclosed start tag"),
    ],
)
def test_invalid_html_is_refused(source: str, reason: str) -> None:
    with pytest.raises(HtmlParseError, match=re.escape(reason)):
        parse_html(source)


def test_html_entities_are_utf16_offsets_after_trimming() -> None:
    parsed = parse_html("  😀 <b>жирный</b>  ")
    assert parsed.text == "😀 жирный"
    assert parsed.entities == [{"type": "bold", "offset": 3, "length": 6}]
    pre = parse_html('<pre><code class="language-sql">select</code></pre>')
    assert pre.entities == [{"type": "pre", "offset": 0, "length": 6, "language": "sql"}]


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=4096).filter(lambda t: t.strip()))
def test_escaped_text_is_always_accepted(text: str) -> None:
    parsed = parse_html(html.escape(text))
    assert parsed.text == text.strip()
    assert parsed.entities == []


async def test_html_errors_and_lengths_through_the_api(emu: TelegramEmulator, bot: Bot) -> None:
    user = emu.add_user("Иван")
    raw = "3 < 5 & 6"
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(user.id, raw, parse_mode="HTML")
    escaped = await bot.send_message(user.id, html.escape(raw), parse_mode="HTML")
    longest = await bot.send_message(user.id, "<b>" + "я" * 4096 + "</b>", parse_mode="HTML")
    decoded = await bot.send_message(user.id, "&lt;" * 4096, parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(user.id, "я" * 4097)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(user.id, "&amp;" * 4097, parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(user.id, "<b> </b>", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message caption is too long"):
        await bot.send_photo(user.id, BufferedInputFile(PNG_1024x768, "a.png"), caption="x" * 1025)

    assert escaped.text == raw
    assert longest.text is not None and len(longest.text) == 4096
    assert decoded.text == "<" * 4096


async def test_callback_data_is_limited_to_64_bytes(emu: TelegramEmulator, bot: Bot) -> None:
    user = emu.add_user("Иван")
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(user.id, "?", reply_markup=keyboard(("Да", "д" * 32 + "a")))
    accepted = await bot.send_message(user.id, "?", reply_markup=keyboard(("Да", "д" * 32)))
    no_action = InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text="Да")]])
    with pytest.raises(TelegramBadRequest, match="Text buttons are unallowed"):
        await bot.send_message(user.id, "?", reply_markup=no_action)
    reply_keyboard = ReplyKeyboardMarkup(keyboard=[[KeyboardButton(text="Контакт")]])
    await bot.send_message(user.id, "Поделитесь номером", reply_markup=reply_keyboard)

    assert accepted.reply_markup is not None
    assert user.messages[-1].reply_keyboard == [["Контакт"]]
    assert len(user.messages) == 2


async def test_wire_formats_and_missing_parameters(emu: TelegramEmulator) -> None:
    user = emu.add_user("Иван")
    url = f"{emu.base_url}/bot{emu.token}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/sendMessage", data={"chat_id": user.id, "text": "form"}) as r:
            form = (r.status, await r.json())
        payload = {"chat_id": user.id, "text": "json", "reply_markup": {"inline_keyboard": []}}
        async with http.post(f"{url}/sendmessage", json=payload) as r:
            as_json = (r.status, await r.json())
        async with http.get(f"{url}/getMe") as r:
            get = r.status
        async with http.post(f"{url}/sendMessage", data={"chat_id": user.id}) as r:
            no_text = (r.status, (await r.json())["description"])
        async with http.post(f"{url}/sendMessage", data={"text": "x"}) as r:
            no_chat = (r.status, (await r.json())["description"])
        async with http.post(f"{url}/sendMessage", data={"chat_id": 1, "text": "x"}) as r:
            unknown_chat = (await r.json())["description"]
        bad_markup = {"chat_id": user.id, "text": "x", "reply_markup": "{oops"}
        async with http.post(f"{url}/sendMessage", data=bad_markup) as r:
            markup_error = (await r.json())["description"]
        async with http.post(f"{url}/getUpdates", data={"timeout": "0"}) as r:
            decoded = r.status

    assert form[0] == 200 and form[1]["result"]["text"] == "form"
    assert as_json[0] == 200 and as_json[1]["result"]["text"] == "json"
    assert get == 200 and decoded == 200
    assert no_text == (400, "Bad Request: message text is empty")
    assert no_chat == (400, "Bad Request: chat_id is empty")
    assert unknown_chat == "Bad Request: chat not found"
    assert markup_error == "Bad Request: can't parse reply keyboard markup JSON object"
    assert [r.method for r in emu.requests][:2] == ["sendMessage", "sendMessage"]
    assert emu.requests[0].params == {"chat_id": user.id, "text": "form"}


async def test_unknown_method_and_bad_token(emu: TelegramEmulator, bot: Bot) -> None:
    url = f"{emu.base_url}/bot{emu.token}/frobnicate"
    async with aiohttp.ClientSession() as http, http.post(url) as r:
        unknown = (r.status, await r.json())
    with pytest.raises(TelegramNotFound):
        await bot(_Frobnicate())
    stranger = Bot("42:abc", session=AiohttpSession(api=TelegramAPIServer.from_base(emu.base_url)))
    try:
        with pytest.raises(TelegramUnauthorizedError):
            await stranger.get_me()
    finally:
        await stranger.session.close()

    assert unknown == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found: method not found"},
    )


class _Frobnicate(TelegramMethod[bool]):
    """A method the emulator does not serve."""

    __returning__ = bool
    __api_method__ = "frobnicate"


async def test_edits_and_deletions(emu: TelegramEmulator, bot: Bot) -> None:
    user = emu.add_user("Иван")
    sent = await bot.send_message(
        user.id, "<b>Вопрос</b>", parse_mode="HTML", reply_markup=keyboard(("A", "a"))
    )
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(
            "<b>Вопрос</b>",
            chat_id=user.id,
            message_id=sent.message_id,
            parse_mode="HTML",
            reply_markup=keyboard(("A", "a")),
        )
    edited = await bot.edit_message_text(
        "Ответ принят", chat_id=user.id, message_id=sent.message_id
    )
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_reply_markup(chat_id=user.id, message_id=sent.message_id)
    await bot.edit_message_reply_markup(
        chat_id=user.id, message_id=sent.message_id, reply_markup=keyboard(("B", "b"))
    )
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=user.id, message_id=999)
    await bot.delete_message(user.id, sent.message_id)
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(user.id, sent.message_id)

    assert isinstance(edited, Message) and edited.edit_date is not None
    assert user.messages == []
    message = emu.world.chats[user.id].log[0]
    assert message.history == ["<b>Вопрос</b>"] and message.plain_text == "Ответ принят"
    assert message.labels == ["B"] and message.deleted
    assert_requests_valid(emu.requests)


async def test_callback_queries_are_answered_once(emu: TelegramEmulator, bot: Bot) -> None:
    user = emu.add_user("Иван")
    await bot.send_message(user.id, "Бюджет?", reply_markup=keyboard(("до 10 000 ₽", "b:1")))
    question = await user.next_message(timeout=2)
    with pytest.raises(LookupError, match="no button"):
        await user.press(question, "Нет такой")
    query = await user.press(question, "до 10 000 ₽")
    forged = await user.press_data(question.message_id, "b:999")
    updates = await bot.get_updates()
    callback = updates[0].callback_query
    assert callback is not None and callback.data == "b:1"
    assert callback.message is not None and callback.message.message_id == question.message_id

    with pytest.raises(TelegramBadRequest, match="MESSAGE_TOO_LONG"):
        await bot.answer_callback_query(query.query_id, text="x" * 201)
    await bot.answer_callback_query(query.query_id, text="Принято", show_alert=True)
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(query.query_id)
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query("123")
    answer = await user.wait_for_answer(query, timeout=1)

    assert answer.text == "Принято" and answer.show_alert
    assert user.callback_answers == [answer]
    assert forged.data == "b:999"


# --- limits and refusals ---------------------------------------------------------------------


class FrozenClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_global_rate_limit_answers_429_with_retry_after() -> None:
    clock = FrozenClock()
    async with TelegramEmulator(rate_per_second=5, chat_burst=100, clock=clock) as emu:
        bot = make_bot(emu)
        users = [emu.add_user(f"U{i}") for i in range(6)]
        for user in users[:5]:
            await bot.send_message(user.id, "рассылка")
        with pytest.raises(TelegramRetryAfter) as refused:
            await bot.send_message(users[5].id, "рассылка")
        clock.now += 1.0  # a second later the bucket has refilled
        await bot.send_message(users[5].id, "рассылка")
        await bot.session.close()

    assert refused.value.retry_after >= 1
    assert emu.stats.too_many_requests == 1
    assert emu.stats.too_many_by_method["sendMessage"] == 1
    assert emu.stats.sent == 6
    assert emu.requests_for("sendMessage")[5].status == 429


async def test_per_chat_and_group_limits_and_edits_do_not_count() -> None:
    clock = FrozenClock()
    async with TelegramEmulator(chat_burst=3, group_per_minute=2, clock=clock) as emu:
        bot = make_bot(emu)
        user, manager = emu.add_user("Иван"), emu.add_user("Менеджер")
        group = emu.add_group("Менеджеры", [manager])
        await group.add_bot(by=manager)
        sent = [await bot.send_message(user.id, f"{i}") for i in range(3)]
        for i in range(5):
            await bot.edit_message_text(
                f"edit {i}", chat_id=user.id, message_id=sent[0].message_id
            )
        with pytest.raises(TelegramRetryAfter) as per_chat:
            await bot.send_message(user.id, "ещё")
        await bot.send_message(emu.add_user("Другой").id, "другому можно")
        await bot.send_message(group.id, "1")
        await bot.send_message(group.id, "2")
        with pytest.raises(TelegramRetryAfter) as per_group:
            await bot.send_message(group.id, "3")
        await bot.session.close()

    assert per_chat.value.retry_after == 1
    assert per_group.value.retry_after == 30
    assert emu.stats.too_many_by_chat == {user.id: 1, group.id: 1}


async def test_blocked_and_deactivated_users_get_403(emu: TelegramEmulator, bot: Bot) -> None:
    user, gone, stranger = (
        emu.add_user("Иван"),
        emu.add_user("Пётр"),
        emu.add_user("Анна", started=False),
    )
    await user.block()
    await gone.deactivate()
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(user.id, "Вы забыли?")
    with pytest.raises(TelegramForbiddenError, match="user is deactivated"):
        await bot.send_message(gone.id, "Вы забыли?")
    with pytest.raises(TelegramForbiddenError, match="can't initiate conversation"):
        await bot.send_message(stranger.id, "Здравствуйте")
    updates = await bot.get_updates(allowed_updates=["message", "my_chat_member"])
    await user.send("/start")  # "Restart" unblocks
    await bot.send_message(user.id, "С возвращением")

    member_update = updates[0].my_chat_member
    assert member_update is not None
    assert (member_update.old_chat_member.status, member_update.new_chat_member.status) == (
        "member",
        "kicked",
    )
    assert emu.stats.forbidden == 3
    assert user.last_message is not None and user.last_message.plain_text == "С возвращением"


async def test_groups_members_and_presses(emu: TelegramEmulator, bot: Bot) -> None:
    owner, manager, outsider = emu.add_user("Олег"), emu.add_user("Мария"), emu.add_user("Кто")
    group = emu.add_group("Менеджеры", [owner, manager])
    with pytest.raises(TelegramForbiddenError, match="not a member"):
        await bot.send_message(group.id, "Горячий лид")
    await group.add_bot(by=owner, as_admin=True)
    card = await bot.send_message(group.id, "Горячий лид", reply_markup=keyboard(("Взять", "t:1")))
    await manager.press(group.messages[-1], "Взять")
    await group.send(manager, "беру")
    updates = await bot.get_updates(
        allowed_updates=["message", "callback_query", "my_chat_member"]
    )
    statuses = [
        (await bot.get_chat_member(group.id, u.id)).status for u in (owner, manager, outsider)
    ]
    me = await bot.get_chat_member(group.id, emu.bot_id)

    assert card.chat.type == "supergroup" and group.id < -1_000_000_000_000
    assert updates[0].my_chat_member is not None
    callback = updates[1].callback_query
    assert callback is not None and callback.from_user.id == manager.id
    assert callback.message is not None and callback.message.chat.id == group.id
    assert updates[2].message is not None and updates[2].message.chat.id == group.id
    assert statuses == ["creator", "member", "left"]
    assert me.status == "administrator"
    assert emu.chat_member_status(group.id, outsider.id) == "left"
    with pytest.raises(PermissionError):
        await outsider.press(group.messages[-1], "Взять")


# --- faults, waiting and the control API -----------------------------------------------------


async def test_injected_failures_and_hangs(emu: TelegramEmulator, bot: Bot) -> None:
    user = emu.add_user("Иван")
    emu.fail_next("sendMessage", error_code=500)
    with pytest.raises(TelegramServerError):
        await bot.send_message(user.id, "a")
    emu.fail_next("sendMessage", error_code=429, retry_after=7)
    with pytest.raises(TelegramRetryAfter) as refused:
        await bot.send_message(user.id, "b")
    emu.hang_next("sendMessage")
    impatient = make_bot(emu, timeout=0.2)
    with pytest.raises(TelegramNetworkError):
        await impatient.send_message(user.id, "дошло, но ответа нет")
    await impatient.session.close()
    delivered = await user.next_message(timeout=2)

    assert refused.value.retry_after == 7
    assert delivered.plain_text == "дошло, но ответа нет"
    assert [r.injected for r in emu.requests_for("sendMessage")] == [True, True, True]


async def test_waiting_is_event_driven_and_times_out_with_context(
    emu: TelegramEmulator, bot: Bot
) -> None:
    user = emu.add_user("Иван")
    with pytest.raises(TimeoutError, match="the bot sent nothing"):
        await user.next_message(timeout=0.05)
    waiter = asyncio.create_task(user.wait_for(lambda m: "итог" in m.plain_text, timeout=2))
    await bot.send_message(user.id, "вопрос")
    await bot.send_message(user.id, "итог: 5 баллов")
    found = await waiter

    assert found.plain_text == "итог: 5 баллов"
    assert [m.plain_text for m in await user.wait_for_count(2, timeout=1)] == [
        "вопрос",
        "итог: 5 баллов",
    ]


async def test_control_api_drives_the_emulator_over_http(emu: TelegramEmulator, bot: Bot) -> None:
    async with ControlClient(emu.base_url) as control:
        assert (await control.health())["bot"]["id"] == emu.bot_id
        user = await control.add_user("Иван", username="ivan")
        await control.send(user["id"], "/start site")
        updates = await bot.get_updates()
        await bot.send_message(user["id"], "Бюджет?", reply_markup=keyboard(("Много", "b:3")))
        messages = await control.messages(user["id"], min_count=1, wait=2)
        pressed = await control.press(user["id"], "Много")
        await control.action(user["id"], "block")
        with pytest.raises(TelegramForbiddenError):
            await bot.send_message(user["id"], "Ау")
        stats = await control.stats()
        recorded = await control.requests(method="sendMessage")
        with pytest.raises(RuntimeError, match="has a button"):
            await control.press(user["id"], "Нет такой")

    assert updates[0].message is not None and updates[0].message.text == "/start site"
    assert messages[0]["buttons"] == [[{"text": "Много", "callback_data": "b:3", "url": None}]]
    assert pressed["data"] == "b:3"
    assert stats["forbidden"] == 1 and stats["sent"] == 1
    assert [r["status"] for r in recorded] == [200, 403]


def test_validate_request_reports_spec_violations() -> None:
    assert validate_request("sendMessage", {"chat_id": 1, "text": "ok"}) == []
    problems = validate_request(
        "sendMessage",
        {
            "chat_id": 1.5,
            "colour": "red",
            "disable_notification": "maybe",
            "reply_markup": {"inline_keyboard": [[{"text": "x", "callback_data": "д" * 33}]]},
        },
    )
    assert any("unknown field 'colour'" in p for p in problems)
    assert any("missing required field 'text'" in p for p in problems)
    assert any("chat_id" in p for p in problems)
    assert any("disable_notification" in p for p in problems)
    assert any("callback_data" in p for p in problems)
    assert validate_request("sendTelepathy", {}) == ["unknown method 'sendTelepathy'"]
