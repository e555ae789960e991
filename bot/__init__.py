"""bot: the running application (settings, database, dispatcher, delivery, scheduler).

aiogram is imported here, first, with its Telegram types' validators deferred to their
first use (see `bot.lazy_models`): the bot starts in a third of the time and memory."""

from bot.lazy_models import import_aiogram

import_aiogram()
