"""One `python -m bot run --webhook` in a process of its own, as an operator runs it: for the
benchmarks and end-to-end tests that put several instances behind one "load balancer"
(the emulator delivering webhooks to each in turn)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from pathlib import Path
from typing import IO

import aiohttp


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class WebhookInstance:
    """`env` is the bot's whole environment (settings, PYTHONPATH); the instance adds the
    address it listens on. Its stderr goes to `<workdir>/<name>.log`."""

    def __init__(self, name: str, workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.env = {**env, "WEBHOOK_LISTEN": f"127.0.0.1:{self.port}"}
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._log = self.log_path.open("ab")
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", "--webhook",
            cwd=self.workdir, env=self.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip

    async def wait_healthy(self, timeout: float) -> None:  # noqa: ASYNC109
        """Until /healthz answers 200; fails with the log's tail if the process exits or
        `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while True:
                if self._process is not None and self._process.returncode is not None:
                    raise RuntimeError(f"{self.name} exited at start-up\n{self.tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(self.url + "/healthz") as response:
                        if response.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not healthy in {timeout:.0f}s\n{self.tail()}")
                await asyncio.sleep(0.2)

    async def metrics(self) -> dict[str, float]:
        """Its /metrics: sample name with labels -> value, e.g.
        'leadbot_sends_total{outcome=sent}'."""
        from prometheus_client.parser import text_string_to_metric_families

        async with aiohttp.ClientSession() as http, http.get(self.url + "/metrics") as response:
            body = await response.text()
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                values[f"{sample.name}{{{labels}}}"] = float(sample.value)
        return values

    async def terminate(self, timeout: float = 60.0) -> int:  # noqa: ASYNC109
        """SIGTERM, and its exit code; a process still running after `timeout` is killed
        and TimeoutError raised (a graceful stop must not take that long)."""
        process = self._process
        if process is None:
            return 0
        if process.returncode is not None:
            return process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise

    async def close(self) -> None:
        """Stops it however it can and closes its log."""
        with contextlib.suppress(Exception):
            await self.terminate(30)
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
