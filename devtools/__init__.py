"""Developer tools that run the real bot on the local Telegram emulator: the offline demo
(`python -m bot demo`) and the terminal chat (`python -m bot chat`). They use the
application and the emulator; neither they nor the emulator ship in the application's
wheel."""
