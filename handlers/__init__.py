"""The Telegram presentation: aiogram routers that turn updates into funnel calls, typed
callback data, keyboards, and the views that render funnel results. Imports the domain and
aiogram, never the application (bot/)."""
