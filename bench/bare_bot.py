"""The yardstick for `bench_cpu`: the least an aiogram bot can do for the same dialogue.

It stores nothing and decides nothing: /start answers with the first of four questions, each
tap answers the callback, takes the buttons off the answered question and asks the next one,
and the fourth tap gets a closing text — the same Telegram requests per update as Leadbot's
dialogue, so the difference in CPU between the two is what Leadbot does on top of aiogram.

`python -m bench.bare_bot` with BOT_TOKEN and TELEGRAM_API_URL in the environment.
"""

from __future__ import annotations

import asyncio
import os

from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.filters import CommandStart
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

QUESTIONS = 4
OPTIONS = 4

router = Router()


def question(number: int) -> tuple[str, InlineKeyboardMarkup]:
    rows = [
        [InlineKeyboardButton(text=f"Option {o + 1}", callback_data=f"q{number}:{o}")]
        for o in range(OPTIONS)
    ]
    return f"<b>Question {number} of {QUESTIONS}.</b> Pick one", InlineKeyboardMarkup(
        inline_keyboard=rows
    )


@router.message(CommandStart())
async def start(message: Message) -> None:
    text, markup = question(1)
    await message.answer(text, reply_markup=markup)


@router.callback_query(F.data.startswith("q"))
async def tap(query: CallbackQuery) -> None:
    number = int((query.data or "q0").split(":")[0][1:])
    await query.answer()
    if isinstance(query.message, Message):
        if number < QUESTIONS:
            text, markup = question(number + 1)
            await query.message.answer(text, reply_markup=markup)
        else:
            await query.message.answer("Thank you, all answers are in.")


async def main() -> None:
    session = AiohttpSession(api=TelegramAPIServer.from_base(os.environ["TELEGRAM_API_URL"]))
    bot = Bot(
        os.environ["BOT_TOKEN"],
        session=session,
        default=DefaultBotProperties(parse_mode="HTML"),
    )
    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    await dispatcher.start_polling(bot, handle_signals=True)


if __name__ == "__main__":
    asyncio.run(main())
