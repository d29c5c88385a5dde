"""Cutting a byte stream into whole JPEG images, untouched.

An MJPEG source (``ffmpeg -f mjpeg -``, ``rpicam-vid --codec mjpeg -o -``, µStreamer's
multipart HTTP stream) is JPEG images one after another, perhaps with text between them (a
multipart boundary and headers). An image is found by walking its markers, not by searching
for the end-of-image bytes: an APP segment may hold a thumbnail with an end-of-image of its
own, and only the entropy-coded data after a start-of-scan may be searched, because there a
0xFF byte is always followed by 0x00, a restart marker or a real marker. Searching is done by
``bytes.find`` and one regular expression, at C speed, so a 30 fps stream costs the loop a few
microseconds per image.
"""

from __future__ import annotations

import re

SOI, EOI, SOS = 0xD8, 0xD9, 0xDA
# A marker inside entropy-coded data: 0xFF then anything but 0x00 (a stuffed 0xFF) or a
# restart marker (0xD0-0xD7). Another 0xFF is a fill byte, looked past one at a time: rare,
# and a pattern that allowed a run of them would search ten times slower.
_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7]")
# Markers that stand alone, without a length: TEM and the restart markers.
_STANDALONE = {0x01, *range(0xD0, 0xD8)}
MAX_IMAGE = 16 * 1024 * 1024  # larger than any camera's frame: past it, the data is garbage


class JpegSplitter:
    """Feed it bytes as they come; it returns each image once its last byte has arrived.

    Memory stays bounded: bytes outside an image are dropped, and an image growing past
    ``max_image`` is dropped too. ``skipped`` counts the bytes thrown away, so that a source
    sending something other than JPEG can be reported.
    """

    def __init__(self, max_image: int = MAX_IMAGE) -> None:
        self._buffer = bytearray()
        self._max_image = max_image
        self._start = -1  # where the current image starts in the buffer; -1: looking for one
        self._position = 0  # where to look next
        self._in_scan = False
        self.skipped = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        images: list[bytes] = []
        while self._step(images):
            pass
        if self._start < 0:
            # Nothing of an image is kept but a last 0xFF, which may begin the next one.
            keep = 1 if self._buffer.endswith(b"\xff") else 0
            self._drop(len(self._buffer) - keep)
        elif len(self._buffer) - self._start > self._max_image:
            self._drop(len(self._buffer))
        return images

    def _drop(self, count: int) -> None:
        """Forget the first ``count`` bytes, counting those that were not part of an image."""
        if count <= 0:
            return
        self.skipped += count
        del self._buffer[:count]
        self._start, self._position, self._in_scan = -1, 0, False

    def _step(self, images: list[bytes]) -> bool:
        """Move as far as the bytes allow; True while there may be more to do."""
        buffer = self._buffer
        if self._start < 0:
            found = buffer.find(b"\xff\xd8", self._position)
            if found < 0:
                return False
            self._drop(found)
            self._start, self._position, self._in_scan = 0, 2, False
            return True
        if self._in_scan:
            match = _MARKER_IN_SCAN.search(buffer, self._position)
            if match is None:
                self._position = max(self._position, len(buffer) - 1)
                return False
            marker = buffer[match.end() - 1]
            if marker == 0xFF:
                self._position = match.start() + 1
                return True
            if marker == EOI:
                return self._image(match.end(), images)
            if marker == SOI:  # the source restarted mid-image: begin again from here
                self._drop(match.end() - 2)
                return True
            self._in_scan = False  # another segment (a progressive JPEG's next table)
            self._position = match.end() - 2
            return True
        position = self._position
        while position + 1 < len(buffer) and buffer[position] == buffer[position + 1] == 0xFF:
            position += 1  # fill bytes before a marker
        if position + 1 >= len(buffer):  # also a segment running past the bytes so far
            self._position = position
            return False
        if buffer[position] != 0xFF:  # not a marker where one must be: not JPEG after all
            self._drop(position)
            return True
        marker = buffer[position + 1]
        if marker == EOI:
            return self._image(position + 2, images)
        if marker == SOI:
            self._drop(position)
            return True
        if marker in _STANDALONE:
            self._position = position + 2
            return True
        if position + 4 > len(buffer):
            self._position = position
            return False
        length = (buffer[position + 2] << 8) | buffer[position + 3]
        if length < 2:
            self._drop(position + 2)
            return True
        # Past the end of the bytes so far, this waits for the rest of the segment.
        self._position = position + 2 + length
        self._in_scan = marker == SOS
        return True

    def _image(self, end: int, images: list[bytes]) -> bool:
        images.append(bytes(self._buffer[self._start : end]))
        del self._buffer[:end]
        self._start, self._position, self._in_scan = -1, 0, False
        return True
