"""The offline demo: the real bot on the local emulator and a SQLite file, a cohort of
simulated prospects with personas, a month of nurture and win-back in half a minute, and
the owner's report, campaign effect and chart at the end."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr
from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator
from telegram_emulator.state import BotMessage
from telegram_emulator.users import SimUser

from bot.app import App
from bot.ratelimit import RateLimiter
from bot.settings import Settings
from funnel.core.clock import ScaledClock
from handlers.i18n import t

DATA = Path("data")
DATABASE = DATA / "demo.sqlite3"
CHART = DATA / "demo-funnel.png"
# The emulator is local, so the demo may send faster than Telegram's 30 messages/s;
# the limiter still paces every send, exactly as against Telegram.
DEMO_RATE = 400.0
DIALOGUE_SCALE = 60.0  # while prospects chat: a wall second is a funnel minute
CAMPAIGN_SCALE = 100_000.0  # afterwards: a wall second is about 28 funnel hours
CAMPAIGN_DAYS = 32
# A test token the emulator accepts: the demo's invoices in rubles can be paid.
DEMO_PROVIDER_TOKEN = "381764678:TEST:demo"
SOURCES = ["vk_ads", "yandex_direct", "instagram", "blog", "telegram_channel"]


@dataclass
class Persona:
    """How one kind of prospect answers, and what they do with follow-ups."""

    name: str
    weight: float
    answers: dict[str, str]
    stops_after: int | None = None  # drops out after this many answers
    taps: dict[str, float] = field(default_factory=dict)  # button id -> chance to tap it
    resumes: float = 0.0  # chance to continue the questions when nudged
    chaos: bool = False  # sends stickers, photos and nonsense first
    pays: float = 0.0  # chance the school records a payment after the consultation
    pays_in_bot: float = 0.0  # chance to pay the bot's invoice right away


PERSONAS = [
    Persona("eager", 0.22, {"need": "career", "timing": "now", "budget": "full",
            "authority": "self"}, taps={"book": 0.8, "nps_10": 0.6, "nps_9": 0.3}, pays=0.6,
            pays_in_bot=0.3),
    Persona("lukewarm", 0.23, {"need": "project", "timing": "month", "budget": "installments",
            "authority": "family"}, taps={"trial": 0.35, "book": 0.25, "nps_8": 0.5}, pays=0.4),
    Persona("cold", 0.1, {"need": "growth", "timing": "later", "budget": "low",
            "authority": "family"}, taps={"materials": 0.5, "trial": 0.1}),
    Persona("not_a_fit", 0.15, {"need": "curious", "timing": "not_now", "budget": "low",
            "authority": "self"}, taps={"ready_now": 0.3}),
    Persona("drops_out", 0.2, {"need": "growth", "timing": "month", "budget": "installments",
            "authority": "self"}, stops_after=1, resumes=0.45, taps={"book": 0.3}),
    Persona("chaotic", 0.1, {"need": "career", "timing": "later", "budget": "installments",
            "authority": "employer"}, chaos=True, taps={"trial": 0.3}, pays=0.3),
]  # fmt: skip


class DemoClock(ScaledClock):
    """A scaled clock whose pace can change without a jump: chat at one speed, then let
    the days of follow-ups pass at another."""

    def set_scale(self, scale: float) -> None:
        self.origin = self.now()
        self._started = self._monotonic()
        self.scale = scale


class Prospect:
    """One simulated person: answers as their persona does, reacts to follow-ups."""

    def __init__(self, user: SimUser, persona: Persona, rng: random.Random) -> None:
        self.user = user
        self.persona = persona
        self.rng = rng
        self.answered = 0

    async def live(self, stop: asyncio.Event) -> None:
        source = self.rng.choice(SOURCES)
        await self.user.send(f"/start {source}")
        while not stop.is_set():
            try:
                message = await self.user.next_message(timeout=0.5)
            except (TimeoutError, AssertionError):
                continue
            await self.react(message)

    async def react(self, message: BotMessage) -> None:
        if message.kind == "invoice":
            # Payments in the bot: the emulator's pre-checkout, then successful_payment.
            if self.rng.random() < self.persona.pays_in_bot:
                with contextlib.suppress(LookupError, RuntimeError):
                    await self.user.pay(message)
            return
        for row in message.buttons:
            for button in row:
                data = button.callback_data or ""
                if data.startswith("a:") and await self._answer(message, data):
                    return
        for row in message.buttons:
            for button in row:
                data = button.callback_data or ""
                chance = self.persona.taps.get(data.removeprefix("b:"), 0.0)
                if data.startswith("b:") and self.rng.random() < chance:
                    await self.user.press(message, button.text)
                    return

    async def _answer(self, message: BotMessage, data: str) -> bool:
        _, question, option = data.split(":", 2)
        if self.persona.answers.get(question) != option:
            return False
        stops = self.persona.stops_after
        if stops is not None and self.answered >= stops:
            if self.rng.random() >= self.persona.resumes:
                return True  # stays silent
            self.persona = Persona(**{**self.persona.__dict__, "stops_after": None})
        if self.persona.chaos and self.answered == 0:
            await self.user.send_sticker()
            await self.user.send("асдфыва <b>?? 3 < 5 & 6")
            self.persona = Persona(**{**self.persona.__dict__, "chaos": False})
            return True
        self.answered += 1
        await self.user.press(message, next(b.text for r in message.buttons for b in r
                                            if b.callback_data == data))  # fmt: skip
        return True


def _progress(label: str, done: float, total: float, detail: str) -> None:
    width = 30
    filled = int(width * min(done / total, 1.0)) if total else width
    bar = "█" * filled + "·" * (width - filled)
    line = f"\r{label:<10} [{bar}] {detail}"
    if sys.stdout.isatty():
        print(line, end="", flush=True)


async def _run_phase(label: str, seconds: float, detail: Callable[[], str]) -> None:
    started = time.monotonic()
    last_line = -1
    while (elapsed := time.monotonic() - started) < seconds:
        _progress(label, elapsed, seconds, detail())
        if not sys.stdout.isatty() and int(elapsed) // 5 != last_line:
            last_line = int(elapsed) // 5
            print(f"{label}: {detail()}", flush=True)
        await asyncio.sleep(0.2)
    _progress(label, seconds, seconds, detail())
    if sys.stdout.isatty():
        print()


async def run_demo(settings: Settings, *, prospects: int = 200, seed: int = 7) -> int:
    rng = random.Random(seed)
    DATA.mkdir(exist_ok=True)
    for path in (
        DATABASE,
        DATABASE.with_suffix(".sqlite3-wal"),
        DATABASE.with_suffix(".sqlite3-shm"),
    ):
        path.unlink(missing_ok=True)
    emu = TelegramEmulator(rate_per_second=DEMO_RATE, chat_burst=10)
    await emu.start()
    owner = emu.add_user("Владелец", username="school_owner")
    manager = emu.add_user("Ольга", "Продажи", username="olga_sales")
    managers = emu.add_group("Отдел продаж", members=[manager])
    demo_settings = settings.offline(
        emu.base_url, DATABASE, owner.id, manager_chat_id=managers.id, tick_seconds=0.2,
        payment_provider_token=SecretStr(DEMO_PROVIDER_TOKEN),
    )  # fmt: skip
    clock = DemoClock(DIALOGUE_SCALE)
    start_at = clock.now()
    # Within the emulator's limits (1 message/s per chat, bursts of 10): the demo never sees a 429.
    limiter = RateLimiter(rate_per_second=DEMO_RATE, chat_rate_per_second=1, chat_burst=5)
    app = App(demo_settings, token=DEFAULT_TOKEN, clock=clock, limiter=limiter)
    print(f"Leadbot demo: {prospects} simulated prospects talk to the real bot through a local")
    print(f"Telegram emulator ({emu.base_url}); the database is {DATABASE}.")
    await app.start()
    await managers.add_bot(by=manager)
    stop = asyncio.Event()
    cohort = _cohort(emu, prospects, rng)
    tasks = [asyncio.create_task(p.live(stop)) for p in cohort]
    try:
        await _run_phase("dialogues", 6, lambda: f"{_leads_talking(cohort)} prospects answering")
        clock.set_scale(CAMPAIGN_SCALE)
        seconds = CAMPAIGN_DAYS * 86400 / CAMPAIGN_SCALE
        paid = asyncio.create_task(_school_work(app, emu, owner, manager, rng, stop))
        await _run_phase(
            "follow-ups", seconds,
            lambda: f"day {(clock.now() - start_at).days:>2}/{CAMPAIGN_DAYS}, "
                    f"{emu.stats.sent} messages sent, {emu.stats.too_many_requests} × 429",
        )  # fmt: skip
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(NameError):
            await asyncio.gather(paid, return_exceptions=True)
        await app.stop()
        await emu.stop()
    await _print_results(demo_settings, clock)
    return 0


def _cohort(emu: TelegramEmulator, size: int, rng: random.Random) -> list[Prospect]:
    names = ["Анна", "Иван", "Мария", "Дмитрий", "Ольга", "Сергей", "Елена", "Алексей",
             "Наталья", "Павел", "Юлия", "Артём", "Ксения", "Никита", "Софья"]  # fmt: skip
    weights = [p.weight for p in PERSONAS]
    cohort = []
    for _ in range(size):
        persona = rng.choices(PERSONAS, weights)[0]
        user = emu.add_user(rng.choice(names))
        cohort.append(Prospect(user, persona, rng))
    return cohort


def _leads_talking(cohort: list[Prospect]) -> int:
    return sum(1 for p in cohort if p.answered)


async def _school_work(
    app: App,
    emu: TelegramEmulator,
    owner: SimUser,
    manager: SimUser,
    rng: random.Random,
    stop: asyncio.Event,
) -> None:
    """The school's people at work: a manager takes cards, the owner records payments
    with /paid (through Telegram, like a real owner) and some ad spend with /spend."""
    from sqlalchemy import select

    from funnel.core.models import Lead

    for source in SOURCES:
        await owner.send(f"/spend {source} {rng.randrange(5, 40) * 1000}")
    handled: set[int] = set()
    taken: set[int] = set()
    group = emu.group(app.settings.manager_chat_id or 0)
    take = t("card.button.take", lang=app.scripts.current.language)
    while not stop.is_set():
        await asyncio.sleep(0.5)
        for card in list(group.messages):
            if card.message_id not in taken and take in card.labels:
                taken.add(card.message_id)
                with contextlib.suppress(LookupError):
                    await manager.press(card, take)
        async with app.sessions() as session:
            booked = (await session.scalars(
                select(Lead).where(Lead.stage == "consultation", Lead.deleted_at.is_(None))
            )).all()  # fmt: skip
        for lead in booked:
            if lead.id in handled:
                continue
            handled.add(lead.id)
            if rng.random() < 0.55:
                await owner.send(f"/paid {lead.id} {rng.choice([6900, 13800, 41400, 82800])}")


async def _print_results(settings: Settings, clock: DemoClock) -> None:
    from bot import db
    from funnel.reports.campaign_effect import campaign_report
    from funnel.reports.funnel_report import funnel_report
    from funnel.reports.periods import parse_period
    from funnel.script.loading import load_script
    from handlers.views.campaigns import format_campaign_report_text
    from handlers.views.chart import render_funnel_png
    from handlers.views.report import format_report_text

    script = load_script(settings.script_path)
    engine = db.create_engine(settings.database_url)
    now = clock.now() + timedelta(seconds=1)
    try:
        async with db.sessionmaker(engine)() as session:
            report = await funnel_report(session, script, now=now, period=parse_period("all", now))
            campaigns = await campaign_report(session, script, now)
    finally:
        await engine.dispose()
    print()
    print(format_report_text(report))
    print()
    print(format_campaign_report_text(campaigns, lang=script.language))
    CHART.write_bytes(render_funnel_png(report, title=script.course, lang=script.language))
    print()
    print(f"Chart: {CHART}")
    print(f"Database: {DATABASE}. Read it again with:")
    print(f"  DATABASE_URL=sqlite+aiosqlite:///{DATABASE} .venv/bin/python -m bot stats")
