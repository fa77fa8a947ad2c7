"""Hostile inputs made in-process: image bombs, odd formats, and raw HTTP for slow clients."""

from __future__ import annotations

import asyncio
import functools
import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from tests.helpers import FOUR, SEVEN, png_header, stroke_ink


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


@functools.cache
def decompression_bomb(side: int = 20_000) -> bytes:
    """A real PNG of side×side 8-bit gray pixels: ~380 KB of zlib that inflates to 400 MB."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    parts = [compressor.compress(row * 64) for _ in range(side // 64)]
    parts.append(compressor.compress(row * (side % 64)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


def huge_dimensions() -> bytes:
    """A tiny PNG that claims 20,000 px on one side."""
    return png_header(20_000, 28)


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    """Encode an image."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def blank_png16() -> bytes:
    """A 16-bit grayscale PNG of white paper, nothing drawn."""
    return save(Image.fromarray(np.full((280, 280), 65535, dtype=np.uint16)), "PNG")


def blank_palette_png() -> bytes:
    """An indexed-colour PNG of white paper, nothing drawn."""
    white = Image.new("RGB", (280, 280), "white")
    return save(white.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG")


def blank_cmyk_jpeg() -> bytes:
    """A CMYK JPEG with no ink."""
    return save(Image.new("CMYK", (280, 280), (0, 0, 0, 0)), "JPEG")


def animated_gif() -> bytes:
    """A two-frame GIF, each frame a digit."""
    frames = [Image.fromarray(255 - stroke_ink(f, size=64)) for f in (SEVEN, FOUR)]
    return save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


@dataclass(frozen=True)
class RawAnswer:
    """An HTTP answer read off a raw socket."""

    status: int
    headers: dict[str, str]
    body: bytes


async def raw_post(
    port: int,
    headers: dict[str, str],
    body: bytes = b"",
    *,
    byte_every_s: float = 0.0,
    path: str = "/api/predictions",
) -> RawAnswer:
    """POST over a plain socket: the body all at once, or one byte every `byte_every_s` s.

    Stops sending as soon as the server answers, as a client that reads while it writes does.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    writer.write(head.encode())
    answer = asyncio.create_task(_read_answer(reader))
    try:
        if byte_every_s:
            for i in range(len(body)):
                if answer.done():
                    break
                writer.write(body[i : i + 1])
                await writer.drain()
                await asyncio.sleep(byte_every_s)
        else:
            writer.write(body)
            await writer.drain()
        return await asyncio.wait_for(answer, 60)
    finally:
        answer.cancel()
        writer.close()


async def chunked_post(
    port: int, path: str, headers: dict[str, str], total: int, chunk: int = 256 * 1024
) -> tuple[RawAnswer, int]:
    """POST a chunked body of up to `total` bytes, stopping once the server answers; the answer
    and how many body bytes had been written when it arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nTransfer-Encoding: chunked\r\n"
    writer.write((head + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode())
    answer = asyncio.create_task(_read_answer(reader))
    piece = f"{chunk:x}\r\n".encode() + b"{" + b" " * (chunk - 1) + b"\r\n"
    sent = 0
    sent_when_answered: list[int] = []
    answer.add_done_callback(lambda _: sent_when_answered.append(sent))
    try:
        while sent < total and not answer.done():
            writer.write(piece)
            await writer.drain()
            sent += chunk
            await asyncio.sleep(0)  # let the reader see an answer as soon as it comes
        return await asyncio.wait_for(answer, 60), sent_when_answered[0]
    except ConnectionError:  # the server closed the connection after answering
        return await asyncio.wait_for(answer, 60), sent_when_answered[0]
    finally:
        answer.cancel()
        writer.close()


async def _read_answer(reader: asyncio.StreamReader) -> RawAnswer:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return RawAnswer(status, headers, body)
