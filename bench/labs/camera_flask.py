"""The alternative bench/camera.py compares labrt's camera with: the MJPEG route of the common
Flask tutorials, under ``gunicorn -k gthread -w 1 --threads N`` (one worker, so that one
capture is shared; a thread per viewer). One reader thread runs the source (the JSON list in
``CAMERA_COMMAND``), cuts its stdout at the JPEG markers and hands the newest picture to every
viewer's generator through a ``threading.Condition``.

The tutorials' part has no Content-Length; this one has it, so that the bench's viewers parse
both servers' streams the same way (a dozen bytes more per picture).
"""

import json
import os
import subprocess
import threading

from flask import Flask, Response

COMMAND = json.loads(os.environ["CAMERA_COMMAND"])

app = Flask(__name__)


class Camera:
    def __init__(self) -> None:
        self.frame: bytes | None = None
        self.condition = threading.Condition()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self.run, daemon=True)
                self.thread.start()

    def run(self) -> None:
        process = subprocess.Popen(COMMAND, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert process.stdout is not None
        data = b""
        while chunk := process.stdout.read1(65536):
            data += chunk
            while True:
                a = data.find(b"\xff\xd8")
                b = data.find(b"\xff\xd9", a + 2)
                if a < 0 or b < 0:
                    break
                jpeg, data = data[a : b + 2], data[b + 2 :]
                with self.condition:
                    self.frame = jpeg
                    self.condition.notify_all()

    def wait(self) -> bytes:
        with self.condition:
            self.condition.wait()
            assert self.frame is not None
            return self.frame


camera = Camera()


def gen():
    while True:
        frame = camera.wait()
        yield (
            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(frame)
            + frame
            + b"\r\n"
        )


@app.route("/video_feed")
def video_feed():
    camera.start()
    return Response(gen(), mimetype="multipart/x-mixed-replace; boundary=frame")


@app.route("/")
def index():
    return "ok"
