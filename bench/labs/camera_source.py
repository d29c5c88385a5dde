"""The camera bench's source (bench/camera.py): runs the program given as arguments (ffmpeg
writing MJPEG to stdout), and passes its JPEGs on to its own stdout, each with a comment
segment (marker 0xFFFE, right after the start-of-image) saying when it was written:

    COM "LBENCH <counter> <time.monotonic_ns() just before the write>"

A server that passes pictures through untouched hands the stamp to its viewers, who subtract
it from their own clock on arrival: CLOCK_MONOTONIC is one clock for the whole machine. The
stamp is ASCII digits, so no 0xFF byte (a marker, for a naive splitter) can appear in it.

    python camera_source.py ffmpeg -f lavfi -i testsrc=... -f mjpeg -
"""

import os
import signal
import subprocess
import sys
import time

SOI, EOI, SOS = b"\xff\xd8", b"\xff\xd9", 0xDA
STANDALONE = {0x01, *range(0xD0, 0xD8)}


def frames(buffer: bytearray) -> list[bytes]:
    """Cut the whole JPEGs off the front of ``buffer``: markers are walked up to the scan,
    whose end is the first 0xFFD9 (inside the scan a 0xFF is followed by 0x00 or RSTn)."""
    found = []
    while True:
        start = buffer.find(SOI)
        if start < 0:
            del buffer[: max(0, len(buffer) - 1)]
            return found
        i = start + 2
        end = -1
        while i + 4 <= len(buffer):
            if buffer[i] != 0xFF:
                i += 1  # garbage between segments: look on
                continue
            marker = buffer[i + 1]
            if marker == 0xFF:
                i += 1
            elif marker in STANDALONE:
                i += 2
            elif marker == SOS:
                end = buffer.find(EOI, i + 2)
                break
            else:
                i += 2 + int.from_bytes(buffer[i + 2 : i + 4], "big")
        if end < 0:
            if start:
                del buffer[:start]
            return found
        found.append(bytes(buffer[start : end + 2]))
        del buffer[: end + 2]


def main() -> None:
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    assert child.stdout is not None
    source, out = child.stdout.fileno(), sys.stdout.fileno()
    buffer = bytearray()
    counter = 0
    try:
        while chunk := os.read(source, 1 << 16):
            buffer += chunk
            for jpeg in frames(buffer):
                counter += 1
                stamp = b"LBENCH %d %d" % (counter, time.monotonic_ns())
                segment = b"\xff\xfe" + (len(stamp) + 2).to_bytes(2, "big") + stamp
                data = memoryview(jpeg[:2] + segment + jpeg[2:])
                while data:
                    data = data[os.write(out, data) :]
    except (BrokenPipeError, SystemExit):
        pass
    finally:
        child.terminate()
        try:
            child.wait(2)
        except subprocess.TimeoutExpired:
            child.kill()


if __name__ == "__main__":
    main()
