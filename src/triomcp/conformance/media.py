"""Tiny, valid media files for the fixtures that return images and audio (built, not stored)."""

from __future__ import annotations

import io
import struct
import wave
import zlib

__all__ = ["RED_PIXEL_PNG", "SILENCE_WAV", "png", "wav_silence"]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A PNG of one colour: 8-bit RGB, no interlacing."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))  # filter byte 0 per row
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows))
            + _png_chunk(b"IEND", b""))


def wav_silence(milliseconds: int, *, rate: int = 8000) -> bytes:
    """Mono 16-bit PCM silence in a RIFF/WAVE container."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x00\x00" * (rate * milliseconds // 1000))
    return out.getvalue()


RED_PIXEL_PNG = png(1, 1, (255, 0, 0))
SILENCE_WAV = wav_silence(100)
