"""Whole messages out of a real multiprocessing pipe, fed a byte at a time."""

from __future__ import annotations

import os
from multiprocessing import Pipe

import pytest

from kidecar_supervisor.pipe_frames import PipeFrameError, PipeFrames


def _raw_bytes_of(*messages: object) -> bytes:
    reader, writer = Pipe(duplex=True)
    for message in messages:
        writer.send(message)
    os.set_blocking(reader.fileno(), False)
    data = b""
    while True:
        try:
            chunk = os.read(reader.fileno(), 1 << 20)
        except BlockingIOError:
            return data
        data += chunk


def test_messages_come_out_only_when_whole() -> None:
    big = {"t": "hb", "status": {"blob": "x" * 50_000}}  # > 16 KiB: header and body apart
    data = _raw_bytes_of({"t": "started"}, big, {"t": "ready", "ready": True})
    frames = PipeFrames()
    out: list[object] = []
    for i in range(len(data)):
        frames.feed(data[i:i + 1])
        out.extend(frames.messages())
        if i < len(data) - 1:
            assert out != [{"t": "started"}, big, {"t": "ready", "ready": True}]
    assert out == [{"t": "started"}, big, {"t": "ready", "ready": True}]


def test_garbage_is_an_error_not_a_hang() -> None:
    frames = PipeFrames()
    frames.feed(b"\x00\x00\x00\x05hello")
    with pytest.raises(PipeFrameError):
        list(frames.messages())
    huge = PipeFrames()
    huge.feed(b"\x7f\xff\xff\xff")
    with pytest.raises(PipeFrameError):
        list(huge.messages())


def test_encoded_messages_are_what_connection_recv_reads() -> None:
    from kidecar_supervisor.pipe_frames import encode

    reader, writer = Pipe(duplex=True)
    big = {"t": "call", "id": 1, "method": "m", "params": {"pad": "x" * 100_000}}
    data = encode({"t": "stop"}) + encode(big)
    os.write(writer.fileno(), data[:10])  # a message may go in pieces
    os.write(writer.fileno(), data[10:70_000])
    assert reader.recv() == {"t": "stop"}
    os.write(writer.fileno(), data[70_000:])
    assert reader.recv() == big
    frames = PipeFrames()
    frames.feed(data)
    assert list(frames.messages()) == [{"t": "stop"}, big]
