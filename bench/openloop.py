"""An open-loop upload generator: sends `rate` uploads per second on a fixed schedule whatever
the answers, so a slow server shows as latency instead of as a lower offered load.

Run as its own process (`python -m bench.openloop ...`) so its work does not delay the
benchmark's Kafka consumer. Writes one JSON object: per request its scheduled send time
(Unix s), the answer's status, the time of the answer, and the digit id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_CONNECTIONS = 512


@dataclass
class Outcome:
    """One request."""

    scheduled: float
    answered: float
    status: int
    digit_id: str | None
    error: str | None = None


def _request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: image/png\r\n"
        f"X-Mnistream-Source: bench\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


class Generator:
    """Keep-alive connections reused as answers come back; new ones when all are busy."""

    def __init__(self, host: str, port: int, requests: list[bytes]) -> None:
        self.host, self.port, self.requests = host, port, requests
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.gate = asyncio.Semaphore(MAX_CONNECTIONS)
        self.outcomes: list[Outcome] = []

    async def send(self, index: int, scheduled: float) -> None:
        """One upload, answered or failed."""
        async with self.gate:
            connection = self.idle.pop() if self.idle else None
            try:
                if connection is None:
                    connection = await asyncio.open_connection(self.host, self.port)
                reader, writer = connection
                writer.write(self.requests[index % len(self.requests)])
                await writer.drain()
                status, body = await asyncio.wait_for(_answer(reader), 30)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                if connection is not None:
                    connection[1].close()
                self.outcomes.append(Outcome(scheduled, time.time(), 0, None, repr(exc)))
                return
            self.idle.append(connection)
            digit_id = json.loads(body).get("digit_id") if status in (200, 202) else None
            self.outcomes.append(Outcome(scheduled, time.time(), status, digit_id))

    async def run(self, rate: float, seconds: float) -> None:
        """Send on schedule for `seconds`, then wait for the last answers."""
        count = int(rate * seconds)
        start_wall, start = time.time() + 0.1, time.monotonic() + 0.1
        tasks = []
        for index in range(count):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.send(index, start_wall + index / rate)))
        await asyncio.gather(*tasks)
        for _, writer in self.idle:
            writer.close()


def main() -> None:
    """Command line: see --help."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/api/predictions")
    parser.add_argument("--rate", type=float, required=True, help="uploads per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--inputs", type=Path, required=True, help="folder of PNG files")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    bodies = [p.read_bytes() for p in sorted(args.inputs.glob("*.png"))]
    if not bodies:
        raise SystemExit(f"no PNG files in {args.inputs}")
    requests = [_request(args.host, args.port, args.path, body) for body in bodies]
    generator = Generator(args.host, args.port, requests)
    asyncio.run(generator.run(args.rate, args.seconds))
    report: dict[str, Any] = {"outcomes": [o.__dict__ for o in generator.outcomes]}
    args.out.write_text(json.dumps(report))


if __name__ == "__main__":
    main()
