"""Run the emulator on its own: `python -m telegram_emulator --port 8081`, then start the
bot with TELEGRAM_API_URL=http://127.0.0.1:8081 and drive it through the control API
(`/_emulator/`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from .server import DEFAULT_TOKEN, TelegramEmulator


async def _serve(args: argparse.Namespace) -> None:
    emu = TelegramEmulator(
        token=args.token,
        rate_limits=not args.no_rate_limits,
        latency=args.latency,
        latency_max=args.latency_max,
        latency_seed=args.latency_seed,
        webhook_targets=args.webhook_target or None,
        duplicate_rate=args.duplicate_rate,
    )
    base_url = await emu.start(host=args.host, port=args.port)
    print(f"Telegram Bot API emulator on {base_url} (token {emu.token})", flush=True)
    try:
        await asyncio.Event().wait()  # until Ctrl+C
    finally:
        await emu.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m telegram_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the token getMe reports on")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument(
        "--latency-max",
        type=float,
        default=None,
        help="with it, each request waits a random time between --latency and this",
    )
    parser.add_argument("--latency-seed", type=int, default=None, help="repeat that randomness")
    parser.add_argument("--no-rate-limits", action="store_true", help="never answer 429")
    parser.add_argument(
        "--webhook-target",
        action="append",
        default=[],
        help="deliver webhook updates here instead of the setWebhook URL (repeat: in turn)",
    )
    parser.add_argument(
        "--duplicate-rate", type=float, default=0.0, help="share of updates delivered twice"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
