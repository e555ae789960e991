"""What the fault benchmark and the fault tests share: a real `python -m bot run` process
against the in-process emulator (started, SIGKILLed, SIGTERMed, restarted), a script with a
follow-up wave, simulated prospects that answer the BANT questions the way people do after
a bot went silent, and the accounting that compares the emulator's record with the database.

The database is read with plain SQL on the SQLite file, so the accounting depends only on
the table and column names, not on the application's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import yaml
from telegram_emulator import DEFAULT_TOKEN, BotMessage, RecordedRequest, SimUser, TelegramEmulator

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SCRIPT = ROOT / "scripts" / "ru.yaml"
SENDING = frozenset({"sendMessage", "sendPhoto", "sendDocument"})

# The wave's campaign: one step, its text tagged so a delivered message names its touch.
WAVE_CAMPAIGN = "bench_wave"
_TOUCH_TAG = re.compile(r"\[touch (\w+)/(\d+)\]")
# A managers' card carries buttons like "m:take:17:<signature>": the lead it is about.
_CARD_BUTTON = re.compile(r"^m:\w+:(\d+):[\w-]+$")

# The shipped script's questions in order, its "continue" button, answers typed as text.
QUESTIONS = ["need", "timing", "budget", "authority"]
LAST_QUESTION = QUESTIONS[-1]
CONTINUE_LABEL = "▶️ Продолжить"
TYPED_NEED = "Хочу автоматизировать отчёты на работе"
TYPED_ANSWERS = frozenset({TYPED_NEED})

# Answers by question id: a button label, or ("text", what the prospect types).
Answers = Mapping[str, str | tuple[str, str]]
HOT: dict[str, str] = {
    "need": "Сменить профессию",
    "timing": "В ближайшие 2 недели",
    "budget": "Готов(а) оплатить сразу",
    "authority": "Я сам(а)",
}
# Below the hot threshold, so these dialogues make no managers' card.
NOT_HOT: list[Answers] = [
    {
        "need": "Для своего проекта",
        "timing": "В течение месяца",
        "budget": "Удобнее в рассрочку",
        "authority": "Решаем вместе с семьёй",
    },
    {
        "need": "Расти в текущей работе",
        "timing": "Через 2–3 месяца",
        "budget": "Пока дорого",
        "authority": "Оплатит работодатель",
    },
    {
        "need": ("text", TYPED_NEED),
        "timing": "В течение месяца",
        "budget": "Удобнее в рассрочку",
        "authority": "Я сам(а)",
    },
]


# -- the script -------------------------------------------------------------------------


def wave_script_text() -> str:
    """The shipped Russian script with the send window open around the clock (the run may
    happen at any hour) and one follow-up campaign: leads engaged an hour ago get a touch."""
    data = yaml.safe_load(SHIPPED_SCRIPT.read_text(encoding="utf-8"))
    data["send_window"] = {"start": "00:00", "end": "00:00"}
    data["campaigns"] = [
        {
            "id": WAVE_CAMPAIGN,
            "kind": "nurture",
            "title": "Волна дожима",
            "stages": ["engaged"],
            "steps": [
                {
                    "after": "1h",
                    "with_question": True,
                    "text": "{first_name}, продолжим? Осталось совсем немного "
                    f"[touch {WAVE_CAMPAIGN}/1]",
                }
            ],
        }
    ]
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def write_wave_script(path: Path) -> Path:
    path.write_text(wave_script_text(), encoding="utf-8")
    return path


# -- the bot process --------------------------------------------------------------------


@dataclass
class Stop:
    """One stop of the bot process and what the emulator saw around it."""

    how: str  # "kill" (SIGKILL) or "term" (SIGTERM)
    at: float  # monotonic
    seconds: float = 0.0  # how long the process took to exit
    # Sending requests that had reached the emulator and were not answered yet, plus those
    # that reached it after the process was gone: the requests on the wire at the stop.
    on_wire: list[RecordedRequest] = field(default_factory=list)


class BotProcess:
    """`python -m bot run` on `database` against `emu`, as the operator runs it."""

    def __init__(
        self,
        emu: TelegramEmulator,
        database: Path,
        workdir: Path,
        *,
        script: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.emu = emu
        self.database = database
        self.workdir = workdir
        self.script = script
        self.settings = settings or {}
        self.log_path = workdir / "bot.log"
        self.stops: list[Stop] = []
        self.starts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._since = 0  # index in emu.requests when the current process was started
        self._mark = 0  # ... when the last one stopped
        self._last_stop: Stop | None = None

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self.database}"

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "BOT_TOKEN": DEFAULT_TOKEN,
            "TELEGRAM_API_URL": self.emu.base_url,
            "DATABASE_URL": self.url,
            "TICK_SECONDS": "0.5",
            "TIME_SCALE": "1",
            "RATE_PER_SECOND": "30",
            "TIMEZONE": "UTC",
            "MANAGER_CHAT_ID": "",
            "ADMIN_IDS": "",
            "CRM_WEBHOOK_URL": "",
            "PAID_BROADCAST": "false",
            "LOG_LEVEL": "WARNING",
        }
        if self.script is not None:
            env["SCRIPT_PATH"] = str(self.script)
        env.update(self.settings)
        return env

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self, *, ready_timeout: float = 90.0) -> None:
        """Starts the process and waits until it polls for updates."""
        if self.running:
            raise RuntimeError("the bot process is already running")
        self._settle_last_stop()
        if self._log is None:
            self._log = self.log_path.open("ab")
        self._since = len(self.emu.requests)
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            cwd=self.workdir,  # no stray .env
            env=self.env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=self._log,
        )
        self.starts += 1
        await self.wait_ready(ready_timeout)

    async def wait_ready(self, timeout: float) -> None:  # noqa: ASYNC109
        since = self._since

        def polling() -> bool:
            return any(r.method == "getUpdates" for r in self.emu.requests[since:])

        deadline = time.monotonic() + timeout
        while not polling():
            if self._process is not None and self._process.returncode is not None:
                raise RuntimeError(
                    f"the bot exited at start-up; see {self.log_path}\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the bot did not start polling in {timeout:.0f}s\n{self.tail()}"
                )
            with contextlib.suppress(TimeoutError):
                await self.emu.wait_until(polling, 0.2)

    def _in_flight(self) -> list[RecordedRequest]:
        mine = self.emu.requests[self._since :]
        return [r for r in mine if r.method in SENDING and r.status is None]

    def _settle_last_stop(self) -> None:
        """Requests that reached the emulator after the last stop (before this start) left the
        stopped process just before it died: they were on the wire too."""
        stop, self._last_stop = self._last_stop, None
        if stop is None:
            return
        seen = {id(r) for r in stop.on_wire}
        stop.on_wire.extend(
            r for r in self.emu.requests[self._mark :] if r.method in SENDING and id(r) not in seen
        )

    async def kill(self) -> Stop:
        """kill -9: the process dies wherever it is."""
        process = self._require()
        on_wire = self._in_flight()  # the emulator serves from this loop: nothing moves
        started = time.monotonic()
        process.send_signal(signal.SIGKILL)
        self._mark = len(self.emu.requests)
        await process.wait()
        stop = Stop("kill", started, time.monotonic() - started, on_wire)
        self.stops.append(stop)
        self._last_stop = stop
        return stop

    async def terminate(self, timeout: float = 60.0) -> Stop:  # noqa: ASYNC109
        """SIGTERM, the graceful stop; SIGKILL only if it takes longer than `timeout`."""
        process = self._require()
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        how = "term"
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            how = "term-timeout-kill"
            process.send_signal(signal.SIGKILL)
            await process.wait()
        self._mark = len(self.emu.requests)
        stop = Stop(how, started, time.monotonic() - started)
        stop.on_wire = self._in_flight()
        self.stops.append(stop)
        self._last_stop = stop
        return stop

    async def close(self) -> None:
        """Stops whatever still runs (gracefully) and closes the log."""
        if self.running:
            await self.terminate(30)
        self._settle_last_stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, chars: int = 3000) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def _require(self) -> asyncio.subprocess.Process:
        if self._process is None or self._process.returncode is not None:
            raise RuntimeError("the bot process is not running")
        return self._process


# -- the database -----------------------------------------------------------------------


async def create_database(url: str) -> None:
    """The schema, as the bot would create it."""
    from bot import db

    engine = db.create_engine(url)
    try:
        await db.migrate(engine)
    finally:
        await engine.dispose()


async def seed_wave(url: str, emu: TelegramEmulator, leads: int, version: str) -> list[SimUser]:
    """`leads` prospects who answered the first question two hours ago and went silent: the
    wave campaign makes one touch due for each at the bot's first tick."""
    from bot import db
    from funnel.core import store

    engine = db.create_engine(url)
    await db.migrate(engine)
    started = datetime.now(UTC) - timedelta(hours=2)
    users = []
    try:
        async with db.sessionmaker(engine)() as session:
            for i in range(leads):
                user = emu.add_user(f"Wave{i}")
                users.append(user)
                profile = store.Profile(
                    user_id=user.id, chat_id=user.chat_id, first_name=user.first_name
                )
                session.add(
                    store.new_lead(
                        profile,
                        source="bench_wave",
                        stage="engaged",
                        position="timing",
                        version=version,
                        at=started,
                    )
                )
            await session.commit()
    finally:
        await engine.dispose()
    return users


def script_label(path: Path) -> str:
    from funnel.script.loading import load_script

    return load_script(path).label


class Db:
    """Read-only questions to the bot's SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            return connection.execute(sql, args).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return []
            raise
        finally:
            connection.close()

    def touch_statuses(self) -> Counter[str]:
        return Counter(dict(self.rows("SELECT status, count(*) FROM touches GROUP BY status")))

    def card_statuses(self) -> Counter[str]:
        return Counter(
            dict(
                self.rows(
                    "SELECT status, count(*) FROM notifications WHERE kind = 'manager_card' "
                    "GROUP BY status"
                )
            )
        )

    def touches(self) -> list[tuple[int, str, int, str]]:
        """(lead id, campaign, step, status) of every touch."""
        return [
            (int(a), str(b), int(c), str(d))
            for a, b, c, d in self.rows("SELECT lead_id, campaign, step, status FROM touches")
        ]

    def cards(self) -> list[tuple[int, str, str]]:
        """(lead id, occasion, status) of every managers' card."""
        return [
            (int(a), str(b), str(c))
            for a, b, c in self.rows(
                "SELECT lead_id, occasion, status FROM notifications WHERE kind = 'manager_card'"
            )
        ]

    def leads(self) -> dict[int, dict[str, Any]]:
        """By Telegram user id: the lead's id, chat, position, stage and temperature."""
        result = {}
        for lead_id, user_id, chat_id, position, stage, temperature in self.rows(
            "SELECT id, user_id, chat_id, position, stage, temperature FROM leads"
        ):
            if user_id is not None:
                result[int(user_id)] = {
                    "id": int(lead_id),
                    "chat_id": chat_id,
                    "position": position,
                    "stage": stage,
                    "temperature": temperature,
                }
        return result

    def answers(self) -> Counter[tuple[int, str]]:
        """How many answers each (Telegram user id, question) has, superseded ones included."""
        return Counter(
            (int(user_id), str(question))
            for user_id, question in self.rows(
                "SELECT leads.user_id, answers.question FROM answers "
                "JOIN leads ON leads.id = answers.lead_id WHERE leads.user_id IS NOT NULL"
            )
        )

    def inbox(self) -> int:
        rows = self.rows("SELECT count(*) FROM inbox")
        return int(rows[0][0]) if rows else 0


# -- what the emulator delivered --------------------------------------------------------


def confirmed_updates(emu: TelegramEmulator) -> list[dict[str, Any]]:
    """Updates getUpdates returned whose offset the bot then confirmed: Telegram forgets
    those, so the bot alone is responsible for them. (Returned and not confirmed ones are
    delivered again to the next process.)"""
    returned: dict[int, dict[str, Any]] = {}
    confirmed = 0
    for request in emu.requests:
        if request.method != "getUpdates":
            continue
        offset = request.params.get("offset")
        if isinstance(offset, int) and not isinstance(offset, bool) and offset > confirmed:
            confirmed = offset
        if request.status == 200 and isinstance(request.result, list):
            for update in request.result:
                returned[int(update["update_id"])] = update
    return [update for uid, update in sorted(returned.items()) if uid < confirmed]


def answer_of(update: dict[str, Any]) -> tuple[int, str] | None:
    """(user id, question) when the update answers a question: an answer button, or a text
    a prospect typed as an answer."""
    query = update.get("callback_query")
    if query is not None:
        data = str(query.get("data") or "")
        if data.startswith("a:"):
            return int(query["from"]["id"]), data.split(":")[1]
        return None
    message = update.get("message")
    if message is not None and message.get("text") in TYPED_ANSWERS:
        return int(message["from"]["id"]), "need"
    return None


def lost_answers(emu: TelegramEmulator, db: Db, users: set[int]) -> tuple[int, int]:
    """(answers confirmed to the bot, how many of them the database does not hold), counted
    per user and question: a question answered twice because the first answer vanished
    counts one loss."""
    confirmed: Counter[tuple[int, str]] = Counter()
    for update in confirmed_updates(emu):
        answer = answer_of(update)
        if answer is not None and answer[0] in users:
            confirmed[answer] += 1
    recorded = db.answers()
    lost = sum(max(0, count - recorded[key]) for key, count in confirmed.items())
    return sum(confirmed.values()), lost


def touches_delivered(emu: TelegramEmulator, chat_ids: set[int]) -> Counter[tuple[int, str, int]]:
    """(chat, campaign, step) -> how many times that touch reached the chat."""
    delivered: Counter[tuple[int, str, int]] = Counter()
    for chat_id in chat_ids:
        chat = emu.world.chats.get(chat_id)
        for message in chat.log if chat else []:
            match = _TOUCH_TAG.search(message.text)
            if match:
                delivered[(chat_id, match.group(1), int(match.group(2)))] += 1
    return delivered


def card_lead(message: BotMessage) -> int | None:
    for data in message.callback_data:
        match = _CARD_BUTTON.match(data)
        if match:
            return int(match.group(1))
    return None


def cards_delivered(emu: TelegramEmulator, group_id: int) -> Counter[int]:
    """Lead id -> how many managers' cards about that lead reached the group."""
    chat = emu.world.chats.get(group_id)
    leads = (card_lead(m) for m in (chat.log if chat else []))
    return Counter(lead for lead in leads if lead is not None)


@dataclass
class Messages:
    """Touches or cards: what should have gone, what reached the chats."""

    expected: int = 0
    delivered: int = 0
    lost: int = 0  # should have gone, never reached the emulator
    lost_unknown: int = 0  # ... of them, rows "unknown" (on the wire at a kill)
    unknown: int = 0  # rows "unknown", delivered or not
    doubled: int = 0  # extra deliveries of one touch or card
    statuses: Counter[str] = field(default_factory=Counter)


def account_touches(
    emu: TelegramEmulator, db: Db, wave: list[SimUser], campaign: str = WAVE_CAMPAIGN
) -> Messages:
    """Every wave lead should get the campaign's step 1 exactly once."""
    leads = db.leads()
    chats = {u.chat_id for u in wave}
    delivered = touches_delivered(emu, chats)
    rows = {(lead, c, s): status for lead, c, s, status in db.touches()}
    result = Messages(statuses=Counter(rows.values()))
    result.unknown = result.statuses["unknown"]
    for user in wave:
        lead = leads.get(user.id)
        key = (user.chat_id, campaign, 1)
        status = rows.get((lead["id"], campaign, 1)) if lead else None
        if status == "cancelled":
            continue
        result.expected += 1
        count = delivered[key]
        result.delivered += min(count, 1)
        result.doubled += max(0, count - 1)
        if count == 0:
            result.lost += 1
            result.lost_unknown += status == "unknown"
    return result


def account_cards(emu: TelegramEmulator, db: Db, group_id: int) -> Messages:
    """Every card row that was not cancelled, and every hot lead, should reach the group once
    per occasion."""
    delivered = cards_delivered(emu, group_id)
    rows: dict[int, list[str]] = {}
    for lead, _occasion, status in db.cards():
        rows.setdefault(lead, []).append(status)
    for info in db.leads().values():
        if info["temperature"] == "hot":
            rows.setdefault(info["id"], [])
    result = Messages(statuses=Counter(s for statuses in rows.values() for s in statuses))
    result.unknown = result.statuses["unknown"]
    for lead, statuses in rows.items():
        live = [s for s in statuses if s != "cancelled"] if statuses else ["(no row)"]
        count = delivered[lead]
        result.expected += len(live)
        result.delivered += min(count, len(live))
        result.doubled += max(0, count - len(live))
        missing = max(0, len(live) - count)
        result.lost += missing
        result.lost_unknown += min(missing, live.count("unknown"))
    for lead, count in delivered.items():
        if lead not in rows:  # a card the database knows nothing about
            result.doubled += count
    return result


# -- simulated prospects ----------------------------------------------------------------


def question_of(message: BotMessage) -> str | None:
    for data in message.callback_data:
        if data.startswith("a:"):
            return data.split(":")[1]
    return None


class Gates:
    """Prospects wait at these questions until the driver opens them: one burst of answers
    per question, the way a broadcast or an ad campaign makes many people answer at once."""

    def __init__(self, questions: list[str]) -> None:
        self._open = {question: asyncio.Event() for question in questions}
        self.waiting: Counter[str] = Counter()
        self.first_waiting: dict[str, float] = {}  # monotonic: when the first one arrived

    def open(self, question: str) -> None:
        self._open[question].set()

    async def wait(self, question: str) -> None:
        event = self._open.get(question)
        if event is None or event.is_set():
            return
        self.first_waiting.setdefault(question, time.monotonic())
        self.waiting[question] += 1
        try:
            await event.wait()
        finally:
            self.waiting[question] -= 1


class Prospect:
    """Answers the questions with `answers`. When the bot goes silent for `patience` seconds
    (it was killed), does what a person does: sends /start again and taps "continue".

    Taps only the question the bot says is current: one it has not answered yet, or the one
    shown right after its own /start or "continue" (the earlier answer vanished). So a
    question answered twice means the first answer was lost. With `gates`, waits at each
    gated question until the driver opens it."""

    def __init__(
        self,
        user: SimUser,
        answers: Answers,
        *,
        patience: float = 10.0,
        gates: Gates | None = None,
    ) -> None:
        self.user = user
        self.answers = answers
        self.patience = patience
        self.gates = gates
        self.pressed: set[str] = set()
        self.done = False
        self.stalls = 0  # how often the bot went silent and the prospect had to /start
        self.final_answered = False
        self._current_next = True  # the next question shown is the bot's current one

    async def live(self, deadline: float) -> None:
        await self.user.send("/start bench")
        while not self.done and time.monotonic() < deadline:
            wait = min(self.patience, max(0.1, deadline - time.monotonic()))
            try:
                message = await self.user.next_message(timeout=wait)
            except TimeoutError:
                if time.monotonic() >= deadline:
                    return
                self.stalls += 1
                self._current_next = True
                await self.user.send("/start")
                continue
            await self._react(message)

    async def _react(self, message: BotMessage) -> None:
        question = question_of(message)
        if question is not None:
            if question in self.pressed and not self._current_next:
                return  # an old question shown again: no second answer
            self._current_next = False
            if self.gates is not None:
                await self.gates.wait(question)
            self.pressed.add(question)
            answer = self.answers[question]
            if isinstance(answer, tuple):
                await self.user.send(answer[1])
            else:
                await self.user.press(message, answer)
            self.final_answered = question == LAST_QUESTION or self.final_answered
            return
        if CONTINUE_LABEL in message.labels:
            self._current_next = True
            await self.user.press(message, CONTINUE_LABEL)
            return
        if self.final_answered:
            self.done = True  # the outcome (or "all answers are in")


async def wait_for(
    check: Callable[[], bool],
    timeout: float,  # noqa: ASYNC109
    step: float = 0.2,
) -> bool:
    """Polls `check` until it is true or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True
