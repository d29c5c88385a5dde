"""The camera (issue 15): 1, 10 and 50 viewers of a 640x480, 30 fps MJPEG source, served by
labrt and by the Flask tutorial's MJPEG route under gunicorn, side by side.

The source is ffmpeg's test picture behind bench/labs/camera_source.py, which stamps every
JPEG with the monotonic time it was written to the server (a comment segment, which both
servers pass through untouched). The viewers run in processes of their own, read the
``multipart/x-mixed-replace`` stream over loopback and, on the arrival of each whole part,
subtract the stamp from their own clock (CLOCK_MONOTONIC is one clock for the machine). Per
point: the pictures each viewer got per second against the source's rate, the added latency
from the source's stdout to the viewer (p50, p99 over every picture of every viewer), and the
server's CPU (user+sys, from /proc, over the window; the source's processes not counted) and
memory. The targets:

- labrt: ``labrt run`` on bench/labs/camera_lab.py, ``[drivers.cam] kind = "camera"`` with
  the source as its ``command``, spectators on;
- flask: bench/labs/camera_flask.py (a reader thread, a ``threading.Condition``, a generator
  per viewer) under ``gunicorn -k gthread -w 1 --threads 64``, in a venv cached under
  ``~/.cache/labrt-bench``;
- ffmpeg: the source piped into ``ffmpeg -c:v copy -f mpjpeg -listen 1``, ffmpeg's own HTTP
  output; it serves one client, so it is only in the 1-viewer row.

    .venv/bin/python bench/camera.py [--repeats 3] [--seconds 10] [--viewers 1,10,50]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compare import env, procs
from compare.procs import Server, free_port
from report import percentile

HERE = Path(__file__).resolve().parent
LABS = HERE / "labs"
RESULTS = HERE / "results"
ROOT = HERE.parent
SOURCE_FPS = 30
FFMPEG = [
    "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
    "-f", "lavfi", "-i", f"testsrc=size=640x480:rate={SOURCE_FPS}", "-q:v", "5", "-f", "mjpeg", "-",
]  # fmt: skip
SOURCE = [sys.executable, str(LABS / "camera_source.py"), *FFMPEG]
FLASK = ["Flask==3.1.3", "gunicorn==27.0.1"]
THREADS = 64  # gunicorn's gthread: one thread per viewer, and a few spare
VIEWERS_PER_CLIENT = 25  # viewers per client process
TICKS = os.sysconf("SC_CLK_TCK")
TARGETS = ("labrt", "flask", "ffmpeg")
NAMES = {
    "labrt": "labrt",
    "flask": "Flask + gunicorn gthread",
    "ffmpeg": "ffmpeg -listen 1",
}
LAB_TOML = """\
[lab]
name = "camera-bench"
module = "{module}"
spectators = true
[server]
host = "127.0.0.1"
port = {port}
[rlms]
username = "bench-rlms"
password = "bench-{password}"
[store]
path = "{store}"
[push]
max_spectators = 100
[drivers.cam]
kind = "camera"
command = {command}
fps = {fps}
"""


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the viewers (a process of their own) -----------------------------------------------------


class Stream:
    """One viewer: a socket reading a multipart stream; keeps, for every part that arrived
    inside the window, (the source's counter, its stamp, the arrival time), all in ns."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        self.sock.setblocking(False)
        self.buffer = bytearray()
        self.headers_done = False
        self.parts: list[tuple[int, int, int]] = []
        self.error: str | None = None
        self.closed = False
        self.chunked: bytearray | None = None  # the raw body, when chunked
        self.chunk_left = 0  # bytes of the current chunk still to come

    def feed(self, data: bytes, now: int, start: int, end: int) -> None:
        if self.chunked is not None:
            data = self.dechunk(data)
        buffer = self.buffer
        buffer += data
        if not self.headers_done:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            status = bytes(buffer[: buffer.find(b"\r\n")])
            if b" 200 " not in status + b" ":
                self.error = f"{status.decode(errors='replace')}: {bytes(buffer[:300])!r}"
                self.closed = True
                return
            self.headers_done = True
            chunked = b"transfer-encoding: chunked" in bytes(buffer[:head_end]).lower()
            rest = bytes(buffer[head_end + 4 :])
            del buffer[:]
            if chunked:
                self.chunked = bytearray()
                rest = self.dechunk(rest)
            buffer += rest
        while True:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(buffer[:head_end]).lower()
            at = head.find(b"content-length:")
            if at < 0:
                self.error = f"a part without Content-Length: {head[:200]!r}"
                self.closed = True
                return
            length = int(head[at + 15 :].split(b"\r\n", 1)[0])
            body = head_end + 4
            if len(buffer) < body + length:
                return
            if start <= now <= end:
                stamp = buffer.find(b"LBENCH ", body, body + 200)
                if stamp >= 0:
                    fields = bytes(buffer[stamp : stamp + 60]).split(b" ", 3)
                    counter, sent = int(fields[1]), int(fields[2].split(b"\xff", 1)[0])
                    self.parts.append((counter, sent, now))
                else:
                    self.parts.append((0, 0, now))  # "no signal", or a picture not ours
            # The part's trailing CRLF stays: the next head starts after it ("\r\n--...").
            del buffer[: body + length]

    def dechunk(self, data: bytes) -> bytes:
        """The body bytes in ``data`` of a ``Transfer-Encoding: chunked`` response."""
        raw = self.chunked
        assert raw is not None
        raw += data
        out = bytearray()
        at = 0
        while at < len(raw):
            if self.chunk_left:
                take = min(self.chunk_left, len(raw) - at)
                out += raw[at : at + take]
                at += take
                self.chunk_left -= take
                continue
            line_end = raw.find(b"\r\n", at)
            if line_end < 0:
                break
            line = bytes(raw[at:line_end])
            at = line_end + 2
            if line:  # the CRLF after a chunk's data is an empty line
                self.chunk_left = int(line.split(b";", 1)[0], 16)
        del raw[:at]
        return bytes(out)


def run_viewers(url: str, count: int, start: int, end: int) -> None:
    """Watch ``url`` with ``count`` viewers until ``end`` (ns); print what they got as JSON."""
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.partition(":")
    selector = selectors.DefaultSelector()
    streams = []
    for _ in range(count):
        stream = Stream(host, int(port), "/" + path)
        selector.register(stream.sock, selectors.EVENT_READ, stream)
        streams.append(stream)
    while (now := time.monotonic_ns()) < end:
        for key, _ in selector.select(min(1.0, (end - now) / 1e9)):
            stream = key.data
            try:
                data = stream.sock.recv(1 << 18)
            except BlockingIOError:
                continue
            except OSError as exc:
                data, stream.error = b"", str(exc)
            arrived = time.monotonic_ns()
            if data:
                stream.feed(data, arrived, start, end)
            if not data or stream.closed:
                if stream.error is None and start <= arrived <= end:
                    stream.error = "the server closed the stream"
                selector.unregister(stream.sock)
                stream.sock.close()
    for stream in streams:
        stream.sock.close()
    out = [{"parts": s.parts, "error": s.error} for s in streams]
    json.dump(out, sys.stdout)


# -- the servers ------------------------------------------------------------------------------


def labrt_server(workdir: Path) -> tuple[Server, str]:
    port = free_port()
    config = workdir / "lab.toml"
    config.write_text(
        LAB_TOML.format(
            module=LABS / "camera_lab.py",
            port=port,
            password=os.urandom(8).hex(),
            store=workdir / "labrt.sqlite",
            command=json.dumps(SOURCE),
            fps=SOURCE_FPS,
        )
    )
    argv = [str(ROOT / ".venv" / "bin" / "labrt"), "run", str(config)]
    server = Server("labrt", argv, port, workdir / "labrt.log", cwd=workdir)
    server.start("/weblab/sessions/api")
    return server, f"{server.url}/labrt/camera/cam"


def flask_server(workdir: Path, venv: Path) -> tuple[Server, str]:
    port = free_port()
    argv = [str(venv / "bin" / "gunicorn"), "-k", "gthread", "-w", "1", "--threads", str(THREADS)]
    argv += ["-b", f"127.0.0.1:{port}", "--no-control-socket", "--chdir", str(LABS)]
    argv += ["--graceful-timeout", "1"]  # its viewers' threads wait on the Condition
    argv += ["camera_flask:app"]
    environment = {"CAMERA_COMMAND": json.dumps(SOURCE)}
    server = Server("flask", argv, port, workdir / "gunicorn.log", env=environment)
    server.start("/")
    return server, f"{server.url}/video_feed"


def ffmpeg_server(workdir: Path) -> tuple[Server, str]:
    """The source piped into ffmpeg's HTTP output, which copies each JPEG into a part. It
    listens for one client and ends with it: started anew for every repeat."""
    port = free_port()
    relay = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin"]
    relay += ["-probesize", "32", "-analyzeduration", "0", "-fflags", "nobuffer"]
    relay += ["-f", "mjpeg", "-i", "-", "-c:v", "copy", "-f", "mpjpeg"]
    relay += ["-listen", "1", "-chunked_post", "0"]
    relay += ["-content_type", "multipart/x-mixed-replace;boundary=ffmpeg"]
    relay += [f"http://127.0.0.1:{port}/"]
    shell = " ".join(map(_quote, SOURCE)) + " | exec " + " ".join(map(_quote, relay))
    server = Server("ffmpeg", ["sh", "-c", shell], port, workdir / "ffmpeg.log")
    server.start(None)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # listening: a connect would take its one client
        if f":{port:04X} 00000000:0000 0A" in Path("/proc/net/tcp").read_text():
            return server, f"{server.url}/"
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"ffmpeg did not listen:\n{(workdir / 'ffmpeg.log').read_text()}")


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def is_source(pid: int) -> bool:
    """The source's processes (the stamping wrapper, ffmpeg making the picture): not the
    server's work. ffmpeg's relay in the ffmpeg target is its server, and counted."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True
    return any(part.endswith(b"camera_source.py") for part in cmdline) or b"lavfi" in cmdline


def cpu_seconds(pids: list[int]) -> float:
    """The time ``pids``' threads have run (user + sys), in seconds. /proc/PID/stat counts in
    clock ticks (10 ms): too coarse for a server using 1% of a core, so each thread's
    /proc/PID/task/TID/schedstat (ns) is summed instead, falling back to stat's ticks."""
    total = 0.0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
            total += sum(int((t / "schedstat").read_text().split()[0]) for t in tasks) / 1e9
        except (OSError, ValueError):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return total


# -- one point --------------------------------------------------------------------------------


def measure(server: Server, url: str, viewers: int, seconds: float, warmup: float) -> dict:
    """``viewers`` viewers for ``warmup`` + ``seconds``; what the window showed."""
    start = time.monotonic_ns() + int(warmup * 1e9)
    end = start + int(seconds * 1e9)
    clients = []
    sizes = [VIEWERS_PER_CLIENT] * (viewers // VIEWERS_PER_CLIENT)
    if viewers % VIEWERS_PER_CLIENT:
        sizes.append(viewers % VIEWERS_PER_CLIENT)
    try:
        for size in sizes:
            argv = [sys.executable, __file__, "--client", url, str(size), str(start), str(end)]
            clients.append(subprocess.Popen(argv, stdout=subprocess.PIPE))
        time.sleep(max(0.0, (start - time.monotonic_ns()) / 1e9))
        pids = [p for p in server.pids() if not is_source(p)]
        cpu0 = cpu_seconds(pids)
        time.sleep(max(0.0, (end - time.monotonic_ns()) / 1e9))
        cpu1 = cpu_seconds(pids)
        rss, pss = procs.memory(pids)
        got = []
        for client in clients:
            out, _ = client.communicate(timeout=60)
            got += json.loads(out)
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()
    errors = [g["error"] for g in got if g["error"]]
    if errors:
        raise RuntimeError(f"{len(errors)} of {viewers} viewers failed: {errors[0]}")
    stamped = sorted({(c, s) for g in got for c, s, _ in g["parts"] if c})
    if len(stamped) < 2:
        raise RuntimeError("the viewers got no stamped picture")
    (c0, s0), (c1, s1) = stamped[0], stamped[-1]
    source_fps = (c1 - c0) / ((s1 - s0) / 1e9)
    fps = sorted(len(g["parts"]) / seconds for g in got)
    latencies = sorted((a - s) / 1e6 for g in got for c, s, a in g["parts"] if c)
    return {
        "source_fps": source_fps,
        "fps_min": fps[0],
        "fps_median": statistics.median(fps),
        "fps_min_ratio": fps[0] / source_fps,
        "latency_p50_ms": percentile(latencies, 0.5),
        "latency_p99_ms": percentile(latencies, 0.99),
        "latency_max_ms": latencies[-1],
        "cpu_total_pct": (cpu1 - cpu0) / seconds * 100,
        "cpu_per_viewer_pct": (cpu1 - cpu0) / seconds * 100 / viewers,
        "rss_mib": rss,
        "pss_mib": pss,
    }


# -- the table --------------------------------------------------------------------------------

ROWS = [
    # key, label, digits, goal(value, viewers) -> bool | None
    ("fps_min", "delivered fps, slowest viewer", 1, None),
    ("fps_median", "delivered fps, median viewer", 1, None),
    ("fps_min_ratio", "slowest viewer / source fps", 3, "≥ 0.97 up to 10 viewers"),
    ("latency_p50_ms", "added latency p50 (ms)", 2, None),
    ("latency_p99_ms", "added latency p99 (ms)", 2, "≤ 5 ms at 10 viewers"),
    ("cpu_per_viewer_pct", "server CPU per viewer (% of a core)", 2, None),
    ("cpu_total_pct", "server CPU, total (% of a core)", 1, None),
    ("rss_mib", "server RSS (MiB)", 1, None),
]


NOTES = """\
What the columns are:

- Latency is from the moment the source writes a picture to its stdout to the moment a
  viewer has the whole part; it includes the viewers' own reading (25 viewers per client
  process, so at 50 viewers two processes take turns with the server on 2 cores).
- Server CPU is user+sys of the server's processes over the window (labrt: the `labrt run`
  process; Flask: gunicorn's master and its one worker; ffmpeg: the relay), from each
  thread's /proc/PID/task/TID/schedstat; the source (ffmpeg making the picture and the
  stamping wrapper) is not counted. labrt without a viewer (capture stopped) used
  0.02 % of a core when measured once, 2026-12-06.
- Flask + gunicorn: bench/labs/camera_flask.py, the tutorials' reader thread and
  `threading.Condition`, `gunicorn -k gthread -w 1 --threads 64`: one worker, so that one
  capture is shared; each viewer holds a thread for as long as it watches.
- ffmpeg -listen 1: the source piped into `ffmpeg -f mjpeg -i - -c:v copy -f mpjpeg -listen
  1`. It serves one client and ends with it, so it is only in the 1-viewer row. Its
  latency, about one frame interval (33 ms) more than the others', most likely comes from
  its pipe input (the demuxer holding a picture until it has read past it; not
  investigated further), not from its HTTP output.
"""


def goal_met(key: str, value: float, viewers: int) -> str:
    if key == "fps_min_ratio" and viewers <= 10:
        return "✔" if value >= 0.97 else "✘"
    if key == "latency_p99_ms" and viewers == 10:
        return "✔" if value <= 5 else "✘"
    return ""


def cell(values: list[float], digits: int) -> str:
    if not values:
        return ""
    median = statistics.median(values)
    return f"{median:.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


def table(results: dict[str, dict[str, list[dict]]], viewer_counts: list[int]) -> str:
    targets = [t for t in TARGETS if t in results]
    other = [t for t in targets if t != "labrt"]
    head = ["viewers", "metric", *(NAMES[t] for t in targets)]
    head += [f"labrt/{t}" for t in other if "labrt" in results] + ["goal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for viewers in viewer_counts:
        for key, label, digits, goal in ROWS:
            runs = {t: results[t].get(str(viewers), []) for t in targets}
            values = {t: [r[key] for r in runs[t]] for t in targets}
            row = [str(viewers), label, *(cell(values[t], digits) for t in targets)]
            if "labrt" in results:
                for t in other:
                    ok = values["labrt"] and values[t]
                    ratio = (
                        statistics.median(values["labrt"]) / statistics.median(values[t])
                        if ok
                        else 0
                    )
                    row.append(f"{ratio:.3g}" if ok and math.isfinite(ratio) else "")
            mark = ""
            if goal and values.get("labrt"):
                mark = goal_met(key, statistics.median(values["labrt"]), viewers)
                mark = f"{goal} {mark}" if mark else ""
            row.append(mark)
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3, help="seconds before each window")
    parser.add_argument("--viewers", default="1,10,50")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--no-write", action="store_true", help="print, write no results")
    parser.add_argument(
        "--render", action="store_true", help="rewrite results/camera.md from camera.json"
    )
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        write(json.loads((RESULTS / "camera.json").read_text()))
        return
    if args.client:
        url, count, start, end = args.client
        run_viewers(url, int(count), int(start), int(end))
        return
    viewer_counts = [int(v) for v in args.viewers.split(",")]
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {TARGETS}")

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGINT, terminated)  # also when started in the background
    venv = env.venv("camera-flask", FLASK) if "flask" in targets else None
    started = dt.datetime.now().astimezone()
    load = os.getloadavg()
    results: dict[str, dict[str, list[dict]]] = {t: {} for t in targets}
    try:
        with tempfile.TemporaryDirectory(prefix="labrt-camera-") as scratch:
            for repeat in range(args.repeats):
                order = targets[repeat % len(targets) :] + targets[: repeat % len(targets)]
                for target in order:
                    workdir = Path(scratch) / f"{target}-{repeat}"
                    workdir.mkdir()
                    points = [v for v in viewer_counts if target != "ffmpeg" or v == 1]
                    for viewers in points:
                        if target == "ffmpeg" or viewers == points[0]:
                            if target == "labrt":
                                server, url = labrt_server(workdir)
                            elif target == "flask":
                                assert venv is not None
                                server, url = flask_server(workdir, venv)
                            else:
                                server, url = ffmpeg_server(workdir)
                        say(f"repeat {repeat + 1}/{args.repeats}: {target}, {viewers} viewers")
                        try:
                            point = measure(server, url, viewers, args.seconds, args.warmup)
                        except (RuntimeError, subprocess.TimeoutExpired) as exc:
                            say(f"  failed: {exc}")
                            log = next(workdir.glob("*.log"), None)
                            if log is not None:
                                say(log.read_text(errors="replace")[-2000:])
                            continue
                        results[target].setdefault(str(viewers), []).append(point)
                        say(
                            "  fps min {fps_min:.1f} of {source_fps:.1f}, latency p50 "
                            "{latency_p50_ms:.2f} p99 {latency_p99_ms:.2f} ms, CPU "
                            "{cpu_total_pct:.1f}%, RSS {rss_mib:.1f} MiB".format(**point)
                        )
                        if target == "ffmpeg":
                            server.stop()
                    procs.stop_all()
    finally:
        procs.stop_all()
    document = {
        "started": started.isoformat(),
        "load_average_at_start": load,
        "cpus": os.cpu_count(),
        "repeats": args.repeats,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "viewers": viewer_counts,
        "source": FFMPEG,
        "flask": FLASK,
        "results": results,
    }
    print(table(results, viewer_counts))
    if not args.no_write:
        write(document)


def write(document: dict) -> None:
    """bench/results/camera.json, and camera.md from it."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "camera.json").write_text(json.dumps(document, indent=1) + "\n")
    started = dt.datetime.fromisoformat(document["started"])
    header = (
        f"`bench/camera.py --repeats {document['repeats']} --seconds {document['seconds']:g}`, "
        f"{started:%Y-%m-%d %H:%M}, {document['cpus']} cores, load average at the start "
        f"{document['load_average_at_start'][0]:.2f}. Each cell: the median over the repeats "
        f"(min..max). Source: ffmpeg testsrc 640x480 at {SOURCE_FPS} fps, -q:v 5, behind "
        "bench/labs/camera_source.py.\n\n"
    )
    text = table(document["results"], document["viewers"])
    (RESULTS / "camera.md").write_text("# Camera\n\n" + header + text + "\n\n" + NOTES)
    say(f"wrote {RESULTS / 'camera.md'} and camera.json")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)  # everything started was stopped on the way out
