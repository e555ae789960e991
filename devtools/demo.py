"""The offline demo: the real bot on the local emulator and a SQLite file, a cohort of
simulated prospects with personas, a month of nurture and win-back in under a minute, and
the owner's report, campaign effect and chart at the end.

The same seed prints the same report, byte for byte: funnel time starts at a fixed moment
and moves in steps the simulation takes once the bot is idle, every simulated person draws
from a generator of their own, and the bot's logs go to a file instead of the terminal."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from apscheduler.triggers.interval import IntervalTrigger
from pydantic import SecretStr
from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator
from telegram_emulator.state import BotMessage
from telegram_emulator.users import SimUser

from bot.app import App
from bot.ratelimit import RateLimiter
from bot.settings import Settings
from funnel.core.clock import FakeClock
from handlers.i18n import t

DATA = Path("data")
DATABASE = DATA / "demo.sqlite3"
CHART = DATA / "demo-funnel.png"
LOG = DATA / "demo.log"
# The emulator is local, so the demo may send faster than Telegram allows (30 messages/s,
# one a second per chat, 20 a minute per group): a simulated month then takes under a
# minute. The limiter still paces every send, exactly as against Telegram.
DEMO_RATE = 400.0
DEMO_CHAT_RATE = 100.0
DEMO_GROUP_PER_MINUTE = 12_000
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


# The demo's month starts on a fixed Monday morning in the school's zone: the same seed then
# gives the same quiet hours, the same days and so the same report, whenever it runs.
START_LOCAL = datetime(2026, 3, 2, 9, 0)
# Funnel time moves only in steps, and only once the bot has handled everything due at the
# current moment: the simulation, not the speed of this machine, sets what happens. The
# app's jobs run on a grid of TICK when something falls due for them (a campaign step, a
# postponed touch, a card, the digest), and at least every MAX_GAP whatever else they do.
TICK = timedelta(hours=1)
MAX_GAP = timedelta(hours=6)
# Prospects arrive over the first day's working hours.
ARRIVALS = timedelta(hours=10)
ANSWER_SECONDS = (6, 90)  # thinking over a question
FOLLOW_UP_SECONDS = (60, 6 * 3600)  # reading a follow-up and tapping its button
PAYMENT_HOURS = (2, 96)  # from booking a consultation to the owner recording the payment
PAYS = 0.55  # share of booked leads who buy
NONSENSE = "асдфыва <b>?? 3 < 5 & 6"


class Prospect:
    """One simulated person: answers as their persona does, reacts to follow-ups. They act
    one update at a time, after thinking for a while of funnel time, with their own random
    generator, so the order in which the bot answers different people changes nothing."""

    def __init__(
        self, user: SimUser, persona: Persona, rng: random.Random, arrives_at: datetime
    ) -> None:
        self.user = user
        self.persona = persona
        self.rng = rng
        self.answered = 0
        self.chaos = 1 if persona.chaos else 0  # 1: a sticker next, 2: nonsense, 0: done
        self.seen = 0  # the last bot message read
        self.question: BotMessage | None = None
        self.due: datetime | None = arrives_at
        self._action: Callable[[], Awaitable[object]] | None = self._start

    async def _start(self) -> None:
        await self.user.send(f"/start {self.rng.choice(SOURCES)}")

    def read(self, now: datetime) -> None:
        """Reads what the bot sent since last time; plans the reaction, if any."""
        new = [m for m in self.user.messages if m.message_id > self.seen]
        if not new:
            return
        self.seen = new[-1].message_id
        if self.due is not None:
            return  # busy with something else; these messages go unanswered
        for message in new:
            action = self._react(message)
            if action is not None:
                delay, self._action = action
                self.due = now + timedelta(seconds=delay)
                return

    async def act(self) -> None:
        action, self._action, self.due = self._action, None, None
        if action is not None:
            # A button the bot has removed meanwhile: the tap does nothing, as in the app.
            with contextlib.suppress(LookupError, ValueError):
                await action()

    def _think(self, span: tuple[int, int]) -> int:
        return self.rng.randint(*span)

    async def _pay(self, invoice: BotMessage) -> None:
        """Payments in the bot: the emulator's pre-checkout, then successful_payment."""
        with contextlib.suppress(LookupError, RuntimeError):
            await self.user.pay(invoice)

    def _react(self, message: BotMessage) -> tuple[int, Callable[[], Awaitable[object]]] | None:
        if message.kind == "invoice":
            if self.rng.random() < self.persona.pays_in_bot:
                return self._think(ANSWER_SECONDS), functools.partial(self._pay, message)
            return None
        answers = [b for row in message.buttons for b in row
                   if (b.callback_data or "").startswith("a:")]  # fmt: skip
        if answers:
            self.question = message
            return self._answer(message)
        if self.chaos == 2:
            self.chaos = 0
            return self._think(ANSWER_SECONDS), functools.partial(self.user.send, NONSENSE)
        if self.chaos == 0 and self.question is not None and self.answered == 0:
            # The bot answered the nonsense with a hint: back to the question.
            question, self.question = self.question, None
            return self._answer(question)
        for row in message.buttons:
            for button in row:
                data = _unsigned(button.callback_data)
                chance = self.persona.taps.get(data.removeprefix("b:"), 0.0)
                if data.startswith("b:") and self.rng.random() < chance:
                    tap = functools.partial(self.user.press, message, button.text)
                    return self._think(FOLLOW_UP_SECONDS), tap
        return None

    def _answer(self, message: BotMessage) -> tuple[int, Callable[[], Awaitable[object]]] | None:
        chosen = None
        for row in message.buttons:
            for button in row:
                _, _, rest = _unsigned(button.callback_data).partition(":")
                question, _, option = rest.partition(":")
                if self.persona.answers.get(question) == option:
                    chosen = button.text
        if chosen is None:
            return None
        stops = self.persona.stops_after
        if stops is not None and self.answered >= stops:
            if self.rng.random() >= self.persona.resumes:
                return None  # stays silent
            self.persona = Persona(**{**self.persona.__dict__, "stops_after": None})
        if self.chaos == 1:
            self.chaos = 2
            return self._think(ANSWER_SECONDS), self.user.send_sticker
        self.answered += 1
        return self._think(ANSWER_SECONDS), functools.partial(self.user.press, message, chosen)


class School:
    """The school's people at work, at every step: a manager takes the cards, the owner
    records some ad spend with /spend and, a while after a consultation was booked, the
    payment with /paid (through Telegram, like a real owner)."""

    def __init__(self, app: App, emu: TelegramEmulator, owner: SimUser, manager: SimUser,
                 seed: int) -> None:  # fmt: skip
        self.app = app
        self.owner = owner
        self.manager = manager
        self.seed = seed
        self.group = emu.group(app.settings.manager_chat_id or 0)
        self.take = t("card.button.take", lang=app.scripts.current.language)
        self.taken: set[int] = set()
        self.seen: set[int] = set()
        self.payments: list[tuple[datetime, int, int]] = []  # when, lead, amount
        self.spent = False

    async def work(self, now: datetime) -> None:
        from sqlalchemy import select

        from funnel.core.models import Lead

        if not self.spent:
            self.spent = True
            rng = random.Random(f"{self.seed}:spend")
            for source in SOURCES:
                await self.owner.send(f"/spend {source} {rng.randrange(5, 40) * 1000}")
        for card in self.group.messages:
            if card.message_id not in self.taken and self.take in card.labels:
                self.taken.add(card.message_id)
                with contextlib.suppress(LookupError):
                    await self.manager.press(card, self.take)
        booked = self.app.scripts.current.roles.booked
        async with self.app.sessions() as session:
            rows = (await session.execute(
                select(Lead.id, Lead.user_id)
                .where(Lead.stage == booked, Lead.deleted_at.is_(None))
                .order_by(Lead.id)
            )).all()  # fmt: skip
        for lead_id, user_id in rows:
            if lead_id in self.seen:
                continue
            self.seen.add(lead_id)
            # Each lead's own generator: whether and when they pay does not depend on who
            # else booked at the same step.
            rng = random.Random(f"{self.seed}:pays:{user_id}")
            if rng.random() < PAYS:
                when = now + timedelta(hours=rng.randint(*PAYMENT_HOURS))
                amount = rng.choice([6900, 13800, 41400, 82800])
                self.payments.append((when, lead_id, amount))
        self.payments.sort()
        while self.payments and self.payments[0][0] <= now:
            _, lead_id, amount = self.payments.pop(0)
            await self.owner.send(f"/paid {lead_id} {amount}")


class Simulation:
    """Drives funnel time in deterministic steps: at each moment the bot first handles every
    update and delivery due, the prospects then read and plan their reactions, and only then
    does the clock move on, to the next reaction or the next tick of the jobs."""

    def __init__(self, app: App, emu: TelegramEmulator, clock: FakeClock,
                 cohort: list[Prospect], school: School, end: datetime) -> None:  # fmt: skip
        self.app = app
        self.emu = emu
        self.clock = clock
        self.cohort = cohort
        self.school = school
        self.start = clock.now()
        self.end = end
        self.next_tick = clock.now()
        self.last_tick = clock.now()
        self.reported_day = -1
        self._drawn = 0.0

    async def settle(self) -> None:
        """Returns once the bot has taken every update the prospects sent and finished
        handling them, cards and replies included."""
        quiet = 0
        while quiet < 2:
            await asyncio.sleep(0.002)
            if self.emu.world.updates or self.app.poller.handling:
                quiet = 0
                continue
            await self.app.handoff.settle()
            await self.app.replies.settle()
            quiet += 1

    async def run(self) -> None:
        while True:
            await self.settle()
            now = self.clock.now()
            for prospect in self.cohort:
                prospect.read(now)
            due = [p for p in self.cohort if p.due is not None and p.due <= now]
            if due:
                for prospect in due:
                    await prospect.act()
                continue
            if now >= self.next_tick:
                await self._jobs(now)
                await self.school.work(now)
                self.last_tick, self.next_tick = now, await self._next_tick(now)
                continue
            if now >= self.end:
                break
            planned = [p.due for p in self.cohort if p.due is not None]
            self.clock.set(min([*planned, self.next_tick, self.end]))
            self._progress()
        self._progress(final=True)

    async def _jobs(self, now: datetime) -> None:
        """The application's scheduled jobs, in funnel time: every interval job (the funnel
        tick, hand-off delivery, whatever else the app schedules) at each step, and each daily
        job when its hour has come since the previous step."""
        for job in self.app.scheduler.get_jobs():
            if isinstance(job.trigger, IntervalTrigger):
                await job.func()
            else:
                fire = job.trigger.get_next_fire_time(None, self.last_tick)
                if fire is not None and self.last_tick < fire <= now:
                    await job.func()
            await self.settle()

    async def _next_tick(self, now: datetime) -> datetime:
        """The next moment on the TICK grid when the jobs have something to do, at most
        MAX_GAP away; an hour's grid keeps a month of follow-ups to a few hundred rounds."""
        from sqlalchemy import func, select

        from funnel.core.models import Lead, Notification, Touch

        script = self.app.scripts.current
        steps = [(set(c.stages), offset) for c in script.campaigns for offset in c.offsets()]
        async with self.app.sessions() as session:
            leads = (await session.execute(
                select(Lead.stage, Lead.cycle_started_at).where(Lead.deleted_at.is_(None))
            )).all()  # fmt: skip
            touch = await session.scalar(
                select(func.min(Touch.due_at)).where(Touch.status == "planned")
            )
            card = await session.scalar(
                select(func.min(Notification.due_at)).where(Notification.status == "planned")
            )
        moments = [
            started + offset
            for stage, started in leads
            for stages, offset in steps
            if stage in stages and started + offset > now
        ]
        moments += [m for m in (touch, card) if m is not None]
        for job in self.app.scheduler.get_jobs():
            if not isinstance(job.trigger, IntervalTrigger):
                fire = job.trigger.get_next_fire_time(None, now)
                if fire is not None:
                    moments.append(fire)
        soonest = min([*moments, now + MAX_GAP])
        # Up to the grid: what falls due within the hour is handled at its end.
        steps_ahead = max(-(-(soonest - self.start) // TICK), (now - self.start) // TICK + 1)
        return self.start + steps_ahead * TICK

    def _progress(self, *, final: bool = False) -> None:
        day = min((self.clock.now() - self.start).days, CAMPAIGN_DAYS)
        detail = f"day {day:>2}/{CAMPAIGN_DAYS}, {self.emu.stats.sent} messages sent"
        if sys.stdout.isatty():
            if final or time.monotonic() - self._drawn > 0.1:
                self._drawn = time.monotonic()
                days = (self.clock.now() - self.start) / timedelta(days=1)
                _progress("funnel", days, CAMPAIGN_DAYS, detail)
            if final:
                print()
        elif (day % 4 == 0 and day != self.reported_day) or final:
            # Without a terminal, a line every four funnel days: the same lines every run.
            self.reported_day = day
            print(f"funnel: {detail}", flush=True)


def _progress(label: str, done: float, total: float, detail: str) -> None:
    width = 30
    filled = int(width * min(done / total, 1.0)) if total else width
    bar = "█" * filled + "·" * (width - filled)
    print(f"\r{label:<10} [{bar}] {detail}", end="", flush=True)


@contextlib.contextmanager
def _logs_to(path: Path) -> Iterator[None]:
    """The bot's logs go to `path` while the demo runs, so the progress bar stays clean."""
    from bot.logs import FieldsFormatter

    root = logging.getLogger()
    saved = root.handlers[:]
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(FieldsFormatter())
    root.handlers[:] = [handler]
    try:
        yield
    finally:
        root.handlers[:] = saved
        handler.close()


async def run_demo(settings: Settings, *, prospects: int = 200, seed: int = 7) -> int:
    DATA.mkdir(exist_ok=True)
    for path in (
        DATABASE,
        DATABASE.with_suffix(".sqlite3-wal"),
        DATABASE.with_suffix(".sqlite3-shm"),
    ):
        path.unlink(missing_ok=True)
    print(f"Leadbot demo: {prospects} simulated prospects talk to the real bot through a local")
    print(f"Telegram emulator; the database is {DATABASE}, the bot's logs go to {LOG}.")
    with _logs_to(LOG):
        clock, demo_settings = await _simulate(settings, prospects, seed)
    await _print_results(demo_settings, clock)
    print(f"Logs: {LOG}")
    return 0


async def _simulate(settings: Settings, prospects: int, seed: int) -> tuple[FakeClock, Settings]:
    rng = random.Random(seed)
    clock = FakeClock(START_LOCAL.replace(tzinfo=settings.zone))
    # Message dates in funnel time too, as a real Telegram would stamp them.
    emu = TelegramEmulator(
        rate_per_second=DEMO_RATE, chat_rate_per_second=DEMO_CHAT_RATE, chat_burst=10,
        group_per_minute=DEMO_GROUP_PER_MINUTE, wall_clock=lambda: clock.now().timestamp(),
    )  # fmt: skip
    await emu.start()
    owner = emu.add_user("Владелец", username="school_owner")
    manager = emu.add_user("Ольга", "Продажи", username="olga_sales")
    managers = emu.add_group("Отдел продаж", members=[manager])
    demo_settings = settings.offline(
        emu.base_url, DATABASE, owner.id, manager_chat_id=managers.id,
        payment_provider_token=SecretStr(DEMO_PROVIDER_TOKEN),
    )  # fmt: skip
    # Below the emulator's limits, so the demo never sees a 429 (which would move touches in
    # funnel time by how fast this machine is); every send is still paced by the limiter.
    limiter = RateLimiter(
        rate_per_second=DEMO_RATE, chat_rate_per_second=DEMO_CHAT_RATE / 2, chat_burst=5,
        group_per_minute=DEMO_GROUP_PER_MINUTE // 2,
    )  # fmt: skip
    app = App(demo_settings, token=DEFAULT_TOKEN, clock=clock, limiter=limiter)
    try:
        await app.start(scheduler=False)
        await managers.add_bot(by=manager)
        cohort = _cohort(emu, prospects, rng, clock.now())
        school = School(app, emu, owner, manager, seed)
        end = clock.now() + timedelta(days=CAMPAIGN_DAYS)
        await Simulation(app, emu, clock, cohort, school, end).run()
    finally:
        await app.stop()
        await emu.stop()
    return clock, demo_settings


def _cohort(
    emu: TelegramEmulator, size: int, rng: random.Random, start: datetime
) -> list[Prospect]:
    names = ["Анна", "Иван", "Мария", "Дмитрий", "Ольга", "Сергей", "Елена", "Алексей",
             "Наталья", "Павел", "Юлия", "Артём", "Ксения", "Никита", "Софья"]  # fmt: skip
    weights = [p.weight for p in PERSONAS]
    seed = rng.random()
    cohort = []
    for index in range(size):
        persona = rng.choices(PERSONAS, weights)[0]
        user = emu.add_user(rng.choice(names))
        # Distinct arrival seconds: leads are numbered in the same order every run.
        offset = timedelta(seconds=index * ARRIVALS.total_seconds() // max(size, 1) + index)
        cohort.append(Prospect(user, persona, random.Random(f"{seed}:{index}"), start + offset))
    return cohort


async def _print_results(settings: Settings, clock: FakeClock) -> None:
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


def _unsigned(data: str | None) -> str:
    """A button's data without the signature the bot appends (its last ":" part)."""
    return (data or "").rpartition(":")[0]
