"""Settings from the environment or `.env`, validated at start-up with one readable line
per wrong value."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.paths import shipped

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
    # May carry the CRM's secret token: kept secret, never logged.
    crm_webhook_url: SecretStr | None = None
    log_level: str = "INFO"
    # Several instances of one bot: Telegram's limits shared through Redis (empty: the local
    # limiter, one instance). Keys start with the prefix and the bot's id.
    redis_url: SecretStr | None = None
    redis_prefix: str = Field(default="leadbot", min_length=1, max_length=64)

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

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("use DEBUG, INFO, WARNING or ERROR")
        return level

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

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
