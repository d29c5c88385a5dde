"""The weblablib side of the side-by-side benchmark (bench/run.py), written from weblablib's
documented API (https://developers.labsland.com/weblablib/): a Flask app with ``WebLab``,
``on_start``, ``@requires_active`` views and a ``@weblab.task``.

Run in its own venv (Flask 2.3, weblablib 0.5.9) by gunicorn, as its docs describe:
``gunicorn -w 5 wl_lab:app`` (sync workers, in-process task and cleaner threads), or, with
``BENCH_SOCKETIO=1``, ``gunicorn -k gevent -w 1 wl_lab:app`` plus ``flask weblab loop``
(Flask-SocketIO with a Redis message queue, ``WEBLAB_NO_THREAD``).
"""

import os
import time

from flask import Flask, jsonify, request, url_for
from weblablib import WebLab, requires_active, weblab_user

SOCKETIO = os.environ.get("BENCH_SOCKETIO") == "1"
REDIS_URL = os.environ["BENCH_REDIS_URL"]

app = Flask(__name__)
app.config.update(
    SECRET_KEY=os.environ["BENCH_SECRET"],
    WEBLAB_USERNAME=os.environ["BENCH_RLMS_USER"],
    WEBLAB_PASSWORD=os.environ["BENCH_RLMS_PASSWORD"],
    WEBLAB_REDIS_URL=REDIS_URL,
    WEBLAB_CALLBACK_URL="/callback",
    # The same poll window as the labrt side (bench/run.py's config): long enough that a
    # benchmark's sessions never time out between two measurements.
    WEBLAB_TIMEOUT=300,
    WEBLAB_POLL_INTERVAL=5,
    WEBLAB_LOG_SESSION_LIFECYCLE=False,
)
if SOCKETIO or os.environ.get("BENCH_LOOP") == "1":
    # The Flask-SocketIO form: no threads in the web worker; ``flask weblab loop`` (started
    # with BENCH_LOOP=1) runs the tasks and the cleaner in a process of its own.
    app.config["WEBLAB_NO_THREAD"] = True

weblab = WebLab(app)


@weblab.initial_url
def initial_url():
    return url_for("active")


@weblab.on_start
def start(client_data, server_data):
    return {"views": 0}


@weblab.on_dispose
def dispose():
    pass


@app.route("/bench/active")
@requires_active
def active():
    return jsonify(username=weblab_user.username, time_left=weblab_user.time_left)


@weblab.task()
def empty_task():
    return time.monotonic()


@app.route("/bench/tasks", methods=["POST"])
@requires_active
def submit():
    task = empty_task.delay()
    return jsonify(task_id=task.task_id)


@app.route("/bench/tasks/<task_id>")
@requires_active
def task_status(task_id):
    task = weblab.get_task(task_id)
    if task is None:
        return jsonify(status="missing")
    return jsonify(status=task.status, result=task.result if task.done else None)


if SOCKETIO:
    from flask_socketio import SocketIO, join_room
    from weblablib import socket_requires_active

    socketio = SocketIO(app, message_queue=REDIS_URL, async_mode="gevent")

    @socketio.on("connect")
    @socket_requires_active
    def connect(auth=None):
        # A room per student, so that a push reaches that student's pages only, as labrt's
        # lab.push does (a bare emit would go to every page connected).
        join_room(weblab_user.session_id)

    @app.route("/bench/push", methods=["POST"])
    @requires_active
    def push():
        count = int(request.args["count"])
        gap = float(request.args["gap"])
        for i in range(count):
            socketio.emit("stamp", {"i": i, "sent": time.monotonic()}, to=weblab_user.session_id)
            socketio.sleep(gap)
        return jsonify(sent=count)
