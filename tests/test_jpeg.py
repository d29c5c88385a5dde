"""Cutting an MJPEG byte stream into pictures (drivers/jpeg.py), with hypothesis: whatever the
pieces the pipe delivers and whatever lies between the pictures, each picture comes out
whole and untouched, and memory stays bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.jpeg import JpegSplitter


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def entropy(data: bytes, restarts: int = 0) -> bytes:
    """Entropy-coded data as an encoder writes it: every 0xFF stuffed with 0x00, and restart
    markers between intervals."""
    size = len(data) // (restarts + 1) + 1
    pieces = [data[i : i + size].replace(b"\xff", b"\xff\x00") for i in range(0, len(data), size)]
    return b"".join(
        piece + (bytes([0xFF, 0xD0 + n % 8]) if n < len(pieces) - 1 else b"")
        for n, piece in enumerate(pieces)
    )


# A thumbnail in an APP1 (Exif) segment ends with an end-of-image of its own, which must
# not end the picture around it.
THUMBNAIL = b"\xff\xd8" + segment(0xDB, b"\x00" * 65) + b"\xff\xda\x00\x02\x12\x34\xff\xd9"


@st.composite
def pictures(draw: st.DrawFn) -> bytes:
    scans = draw(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=3))
    picture = b"\xff\xd8" + segment(0xE0, b"JFIF\x00" + draw(st.binary(max_size=20)))
    if draw(st.booleans()):
        picture += segment(0xE1, b"Exif\x00\x00" + THUMBNAIL)
    if draw(st.booleans()):
        picture += b"\xff\xff"  # fill bytes before a marker are allowed
    picture += segment(0xDB, draw(st.binary(min_size=65, max_size=65)))
    for scan in scans:  # a progressive picture has several scans, tables between them
        picture += segment(0xC4, draw(st.binary(min_size=1, max_size=40)))
        picture += segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        picture += entropy(scan, draw(st.integers(0, 3)))
    return picture + b"\xff\xd9"


# What may lie between pictures: a multipart boundary and headers, or other bytes without
# 0xFF (garbage that happens to be a well-formed JPEG is a picture).
between = st.one_of(
    st.just(b""),
    st.just(b"\r\n--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 12345\r\n\r\n"),
    st.binary(max_size=50).map(lambda b: b.replace(b"\xff", b"")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(between, pictures()), min_size=1, max_size=6), st.data())
def test_every_picture_comes_out_whole_however_the_bytes_arrive(stream, data):
    wire = b"".join(gap + picture for gap, picture in stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=30)))
    splitter = JpegSplitter()
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        got += splitter.feed(wire[start:end])
    assert got == [picture for _, picture in stream]
    assert splitter.skipped == sum(len(gap) for gap, _ in stream)


def test_a_picture_cut_short_by_a_restart_is_dropped_and_the_next_one_kept():
    whole = b"\xff\xd8" + segment(0xDA, b"\x01") + entropy(b"abc" * 100) + b"\xff\xd9"
    cut = whole[: len(whole) // 2]
    assert JpegSplitter().feed(cut + whole) == [whole]


def test_bytes_that_are_not_jpeg_are_not_kept():
    splitter = JpegSplitter(max_image=10_000)
    splitter.feed(b"\xff\xd8" + segment(0xDA, b"\x01"))
    for _ in range(100):  # a scan that never ends, as from a source gone mad
        assert splitter.feed(b"\x12" * 1000) == []
        assert len(splitter._buffer) <= 11_000
    for _ in range(100):
        assert splitter.feed(b"plain text, no pictures here\n" * 30) == []
        assert len(splitter._buffer) <= 1
