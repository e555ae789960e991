"""Settings from the environment or `.env`, validated at start-up with one readable line
per wrong value."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.paths import shipped
from funnel.handoff.service_level import ServiceLevel, parse_working_hours
from funnel.script.durations import parse_duration

DEFAULT_SCRIPT = shipped("scripts") / "ru.yaml"
DEFAULT_DATABASE = "sqlite+aiosqlite:///data/leadbot.sqlite3"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    bot_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    database_url: str = DEFAULT_DATABASE
    admin_ids: Annotated[frozenset[int], NoDecode] = frozenset()
    manager_chat_id: int | None = None
    script_path: Path = DEFAULT_SCRIPT
    timezone: str = "Europe/Moscow"
    tick_seconds: float = Field(default=5.0, gt=0, le=3600)
    time_scale: float = Field(default=1.0, ge=1, le=1_000_000)
    rate_per_second: float = Field(default=30.0, gt=0, le=1000)
    paid_broadcast: bool = False
    # What one person may send (messages and taps): INBOUND_BURST at once, then
    # INBOUND_PER_MINUTE. Past it their updates are recorded and not answered for a while,
    # with one "please slow down"; /stop, /forget and payments always pass.
    inbound_per_minute: float = Field(default=20.0, gt=0, le=100_000)
    inbound_burst: int = Field(default=10, ge=1, le=100_000)
    # May carry the CRM's secret token: kept secret, never logged.
    crm_webhook_url: SecretStr | None = None
    log_level: str = "INFO"
    # The managers' loop: a hot card nobody took is reminded after MANAGER_TAKE_MINUTES of
    # working hours (MANAGER_HOURS in TIMEZONE), escalated to the admins after
    # MANAGER_ESCALATE_MINUTES more (default: the same); a taken lead with no stage move and
    # no manager action for MANAGER_SILENCE_RESUME goes back to the follow-ups.
    manager_take_minutes: int = Field(default=15, ge=1, le=10080)
    manager_escalate_minutes: int | None = Field(default=None, ge=1, le=10080)
    manager_hours: str = "Mon-Fri 10:00-19:00"
    manager_silence_resume: str = "3d"
    # -- payments in the bot: the provider's token from @BotFather (YooKassa, Stripe...);
    # empty: only offers in Telegram Stars (XTR) can be sent. A secret, never logged.
    payment_provider_token: SecretStr | None = None

    # --- Webhook mode, health and metrics (`python -m bot run --webhook`) ---
    # The public https:// URL Telegram posts updates to (a load balancer's, with several
    # instances); plain http:// only to this machine.
    webhook_url: str | None = None
    # Telegram sends it back in X-Telegram-Bot-Api-Secret-Token; required in webhook mode.
    webhook_secret: SecretStr | None = None
    # This machine only: the TLS proxy in front forwards to it (a private address when the
    # proxy runs elsewhere; 0.0.0.0 in a container, whose port mapping decides).
    webhook_listen: str = "127.0.0.1:8080"
    webhook_path: str = "/telegram"
    # Connections the webhook's port holds at once; past it a new one is closed at once (it
    # stays well below the open-files limit, so the process never runs out of descriptors).
    webhook_max_connections: int = Field(default=1000, ge=1, le=100_000)
    # host:port for /healthz and /metrics on a listener of their own, in either mode (in
    # webhook mode the webhook's port then serves the webhook alone); empty: polling mode
    # serves neither, webhook mode serves them on WEBHOOK_LISTEN.
    metrics_listen: str | None = None
    # Several instances of one bot: Telegram's limits shared through Redis (empty: the local
    # limiter, one instance; /healthz pings it when set). Keys start with the prefix and the
    # bot's id.
    redis_url: SecretStr | None = None
    redis_prefix: str = Field(default="leadbot", min_length=1, max_length=64)

    @field_validator("script_path", mode="before")
    @classmethod
    def _script(cls, value: Any) -> Any:
        return script_file(value)

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis(cls, value: Any) -> Any:
        if value in (None, ""):
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        # The message never repeats the value: it may hold a password.
        if urlsplit(text.strip()).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis:// (or rediss://, unix://) URL")
        return text.strip()

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [p.strip() for p in value.split(",") if p.strip()]
            for part in parts:
                if not part.lstrip("-").isdigit():
                    raise ValueError(f"'{part}' is not a Telegram user id (digits only)")
            return frozenset(int(p) for p in parts)
        if isinstance(value, int):
            return frozenset({value})
        return value

    @field_validator("payment_provider_token", mode="before")
    @classmethod
    def _no_token(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value

    @property
    def provider_token(self) -> str | None:
        token = self.payment_provider_token
        return token.get_secret_value().strip() if token is not None else None

    @field_validator("manager_chat_id", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("bot_token", mode="before")
    @classmethod
    def _token_shape(cls, value: Any) -> Any:
        if value in (None, ""):
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        head, _, tail = text.partition(":")
        if not head.isdigit() or len(tail) < 5:
            raise ValueError("does not look like a token from @BotFather (123456:ABC-...)")
        return text

    @field_validator("telegram_api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("crm_webhook_url", mode="before")
    @classmethod
    def _webhook(cls, value: Any) -> Any:
        if value in (None, ""):
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        # The message never repeats the value: it may hold a token.
        parsed = urlsplit(text.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("must be an https:// URL with a host")
        # The payload is a person's name, username and answers: never in clear over a network.
        if parsed.scheme == "http" and not is_loopback(parsed.hostname):
            raise ValueError(
                "must be https:// (plain http:// only to this machine: 127.0.0.1, ::1, localhost)"
            )
        return text.strip()

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "use sqlite+aiosqlite:///path.sqlite3 or postgresql+asyncpg://user@host/db"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"'{value}' is not a time zone (e.g. Europe/Moscow)") from e
        return value

    @field_validator("manager_escalate_minutes", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("manager_hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        parse_working_hours(value)
        return value.strip()

    @field_validator("manager_silence_resume")
    @classmethod
    def _silence(cls, value: str) -> str:
        if parse_duration(value) < timedelta(minutes=1):
            raise ValueError(f"{value!r} is shorter than a minute; write it like 3d or 12h")
        return value.strip()

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("use DEBUG, INFO, WARNING or ERROR")
        return level

    @field_validator("webhook_url", "metrics_listen", mode="before")
    @classmethod
    def _empty_text_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value.strip())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("must be an https:// URL with a host, e.g. https://bot.school.ru/tg")
        # Telegram itself only posts to https; plain http is for a local emulator or relay.
        if parsed.scheme == "http" and not is_loopback(parsed.hostname):
            raise ValueError("must be https:// (plain http:// only to 127.0.0.1, ::1, localhost)")
        return value.strip()

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _webhook_secret(cls, value: Any) -> Any:
        if value in (None, ""):
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        # The message never repeats the value.
        if not WEBHOOK_SECRET.fullmatch(text):
            raise ValueError("use 1 to 256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule)")
        return text

    @field_validator("webhook_listen", "metrics_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is None:
            return None
        split_address(value)
        return value

    @field_validator("webhook_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or value in ("/healthz", "/metrics") or " " in value:
            raise ValueError("must start with / and not be /healthz or /metrics, e.g. /telegram")
        return value

    def webhook_problems(self) -> list[str]:
        """What webhook mode needs and these settings lack, one line each."""
        lines = []
        if self.webhook_url is None:
            lines.append("WEBHOOK_URL: required with --webhook (the public https:// URL)")
        if self.webhook_secret is None:
            lines.append(
                "WEBHOOK_SECRET: required with --webhook (1-256 of A-Z a-z 0-9 _ -), "
                "e.g. from `openssl rand -hex 32`"
            )
        return lines

    @property
    def redis(self) -> str | None:
        return self.redis_url.get_secret_value() if self.redis_url else None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def service_level(self) -> ServiceLevel:
        take = timedelta(minutes=self.manager_take_minutes)
        escalate = self.manager_escalate_minutes
        return ServiceLevel(
            take_within=take,
            escalate_within=take if escalate is None else timedelta(minutes=escalate),
            hours=parse_working_hours(self.manager_hours),
            zone=self.zone,
        )

    @property
    def manager_silence(self) -> timedelta:
        return parse_duration(self.manager_silence_resume)

    @property
    def crm_webhook(self) -> str | None:
        return self.crm_webhook_url.get_secret_value() if self.crm_webhook_url else None

    def warnings(self) -> list[str]:
        """Roles left unset: the bot runs, but someone will miss something."""
        lines = []
        if not self.admin_ids:
            lines.append("ADMIN_IDS is empty: no one can see reports or use /reload")
        if self.manager_chat_id is None:
            lines.append(
                "MANAGER_CHAT_ID is unset: hot leads get no card in a managers' chat, and "
                "the bot does not promise them that a manager will write"
            )
        if self.bot_token is None:
            lines.append("BOT_TOKEN is unset: needed for `python -m bot run`")
        return lines

    def is_admin(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.admin_ids

    def offline(self, api_url: str, database: Path, admin_id: int, **extra: Any) -> Settings:
        """These settings on the local emulator and a SQLite file (the demo, the terminal
        chat); simulated leads never reach a real CRM configured in .env."""
        return self.model_copy(
            update={
                "telegram_api_url": api_url,
                "database_url": f"sqlite+aiosqlite:///{database}",
                "crm_webhook_url": None,
                "admin_ids": frozenset({admin_id}),
                **extra,
            }
        )


def script_file(value: Any) -> Path:
    """SCRIPT_PATH as the file it names. Empty: the shipped Russian script. A path that
    exists (relative paths from the working directory) is that file. `scripts/NAME.yaml`
    with no such file in the working directory is the shipped script of that name, so
    `scripts/en.yaml` means the English script wherever the bot runs (a systemd unit, a
    container), as it does in the repository. Anything else is refused here, naming the
    setting, before any command starts."""
    text = "" if value is None else str(value).strip()
    if not text:
        return DEFAULT_SCRIPT
    path = Path(text).expanduser()
    try:
        exists = path.exists()
    except OSError as e:  # a folder on the way this user may not enter
        raise ValueError(f"'{text}': cannot be reached ({e.strerror or e})") from e
    if not exists and not path.is_absolute() and path.parent == Path("scripts"):
        candidate = shipped("scripts") / path.name
        if candidate.is_file():
            return candidate
    if not exists:
        names = ", ".join(f"scripts/{p.name}" for p in sorted(shipped("scripts").glob("*.yaml")))
        raise ValueError(
            f"'{text}': no such file (from the folder {Path.cwd()}); give the script's full "
            f"path, a shipped script ({names}), or leave it empty for scripts/ru.yaml"
        )
    if not path.is_file():
        raise ValueError(f"'{text}' is not a file; give the script's full path, or leave it empty")
    return path


WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


def split_address(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets: `[::]:8080`) as a pair; ValueError in words."""
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"'{value}' is not host:port (e.g. 127.0.0.1:8080 or [::1]:9100)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: traffic that never leaves this machine."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SettingsError(Exception):
    """Start-up stops with these lines, one per wrong value."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as e:
        lines = []
        for err in e.errors(include_url=False):
            name = str(err["loc"][0]).upper() if err["loc"] else "settings"
            message = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{name}: {message}")
        raise SettingsError(lines) from e
