"""aiogram's validators built on first use (bot.lazy_models) are the ones it builds eagerly.

Each check runs in a fresh interpreter: which way aiogram was imported is decided once per
process, by whoever imports it first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Prints {model: its JSON schema, or the error building it} for every aiogram model.
DUMP_SCHEMAS = """
import json, sys, warnings
warnings.simplefilter("ignore")  # defaults like Default("parse_mode") have no JSON form
if sys.argv[1] == "lazy":
    from bot.lazy_models import import_aiogram
    assert import_aiogram(), "the deferral did not take effect"
else:
    import aiogram
from bot.lazy_models import aiogram_models
out = {}
for model in aiogram_models():
    if model.__pydantic_generic_metadata__["parameters"]:
        continue  # a generic like Response[T]: built per parametrisation
    name = model.__module__ + "." + model.__qualname__
    model.model_rebuild(raise_errors=True)  # builds the validator, or says what is missing
    if not model.__pydantic_complete__:
        out[name] = "incomplete"
        continue
    try:
        out[name] = model.model_json_schema()
    except Exception as exc:  # e.g. an InputFile field: no JSON form, either way
        out[name] = "no JSON schema: " + str(exc)
json.dump(out, sys.stdout, sort_keys=True)
"""

FIRST_USE = """
import resource, sys, time
start = time.perf_counter()
import bot
from aiogram.types import Update
from aiogram.methods import SendMessage
from aiogram.methods.base import Response
from aiogram.types import Message
imported = time.perf_counter() - start
assert not Update.__pydantic_complete__, "Update was built at import"
update = Update.model_validate({
    "update_id": 7,
    "callback_query": {
        "id": "1", "chat_instance": "c", "data": "ans:1",
        "from": {"id": 5, "is_bot": False, "first_name": "A"},
        "message": {"message_id": 3, "date": 1, "chat": {"id": 5, "type": "private"},
                    "text": "<b>hi</b>", "photo": [{"file_id": "f", "file_unique_id": "u",
                                                    "width": 1, "height": 1}]},
    },
})
assert update.callback_query.message.photo[0].width == 1
send = SendMessage(chat_id=5, text="x", reply_markup={"inline_keyboard": [[
    {"text": "a", "callback_data": "b"}]]})
assert send.reply_markup.inline_keyboard[0][0].callback_data == "b"
reply = Response[Message].model_validate({"ok": True, "result": {
    "message_id": 4, "date": 1, "chat": {"id": 5, "type": "private"}, "text": "y"}})
assert reply.result.chat.id == 5
import gc
gc.collect()
assert Response[Message] is type(reply), "Response[Message] was built again"
print(imported)
"""


def _python(code: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_every_model_builds_lazily_to_the_eager_schema() -> None:
    eager = json.loads(_python(DUMP_SCHEMAS, "eager"))
    lazy = json.loads(_python(DUMP_SCHEMAS, "lazy"))
    assert len(eager) > 400  # the Bot API's types and methods
    assert sorted(lazy) == sorted(eager)
    differing = [name for name in eager if eager[name] != lazy[name]]
    assert differing == []
    assert "incomplete" not in lazy.values()
    assert sum(isinstance(schema, dict) for schema in lazy.values()) > 350


def test_the_bot_package_defers_and_first_use_builds_what_it_needs() -> None:
    imported = float(_python(FIRST_USE).strip())
    assert imported > 0
