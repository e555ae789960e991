"""A local Telegram Bot API emulator (aiohttp) with simulated users, for the demo, the
end-to-end tests and the benchmarks."""

from .control import ControlClient
from .errors import ApiError
from .html_entities import HtmlParseError, ParsedText, html_to_plain, parse_html
from .server import DEFAULT_TOKEN, TelegramEmulator
from .state import (
    BotMessage,
    Button,
    CallbackAnswer,
    CallbackQueryRecord,
    EmulatorStats,
    FileDescriptor,
    FileInfo,
    RecordedRequest,
    UserMessage,
    WebhookDeliveryRecord,
)
from .users import SimGroup, SimUser

__all__ = [
    "DEFAULT_TOKEN",
    "ApiError",
    "BotMessage",
    "Button",
    "CallbackAnswer",
    "CallbackQueryRecord",
    "ControlClient",
    "EmulatorStats",
    "FileDescriptor",
    "FileInfo",
    "HtmlParseError",
    "ParsedText",
    "RecordedRequest",
    "SimGroup",
    "SimUser",
    "TelegramEmulator",
    "UserMessage",
    "WebhookDeliveryRecord",
    "html_to_plain",
    "parse_html",
]
