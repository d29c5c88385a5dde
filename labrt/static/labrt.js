/* labrt.js: the page's side of a labrt lab's WebSocket. No dependencies. docs/push.md */
(function (global) {
  "use strict";
  var KEEPALIVE_MS = 5000;
  var CAMERA_SILENCE_MS = 5000;
  var ENDED = 4000;
  var REPLACED = 4029; // a newer page of the session took this one's place: stay closed
  var handlers = {};
  var ws = null;
  var deadline = null; // Date.now() when the slot ends, from the server's time_left
  var over = false;
  var attempt = 0;
  var timers = {};
  var script = global.document && global.document.currentScript;
  // The lab's path: "" at the root of a host, "/lamp" behind a proxy that serves the lab under
  // /lamp/ — the path before /labrt/labrt.js in the URL the page loaded this script from.
  var found = script && script.src && new URL(script.src).pathname.match(/^(.*)\/labrt\/labrt\.js$/);
  var options = { base: found ? found[1] : "" };
  var started = false;

  function backoff(tries) {
    // 0.5 s, 1 s, 2 s ... 30 s, with jitter so pages do not all come back at once.
    return Math.min(30000, 500 * Math.pow(2, tries)) * (0.75 + Math.random() / 2);
  }

  function emit(event, data) {
    (handlers[event] || []).slice().forEach(function (fn) {
      try { fn(data); } catch (e) { setTimeout(function () { throw e; }); }
    });
  }

  function url(path) {
    return new URL(options.base + path, global.location.href);
  }

  function end(data) {
    if (over) return;
    over = true;
    deadline = Date.now();
    clearInterval(timers.keepalive);
    clearInterval(timers.tick);
    clearTimeout(timers.retry);
    emit("tick", { time_left: 0 });
    emit("ended", data);
    if (ws) ws.close();
  }

  function status() {
    return fetch(url("/labrt/status"), { credentials: "same-origin" }).then(function (r) {
      return r.json().then(function (body) { return { ok: r.ok, body: body }; });
    });
  }

  function open(token) {
    var address = url("/labrt/ws");
    address.protocol = address.protocol === "https:" ? "wss:" : "ws:";
    // The token goes in a header (the subprotocols), never in the URL: URLs end up in logs.
    // labrt answers "labrt" either way, as a browser requires once any protocol is offered.
    ws = new WebSocket(address.href, token ? ["labrt", "labrt.token." + token] : ["labrt"]);
    ws.onopen = function () {
      attempt = 0;
      emit("open", null);
      clearInterval(timers.keepalive);
      timers.keepalive = setInterval(function () { labrt.send("keepalive"); }, KEEPALIVE_MS);
    };
    ws.onmessage = function (frame) {
      var message;
      try { message = JSON.parse(frame.data); } catch (e) { return; }
      if (message.event === "session" && message.data.state === "active") {
        deadline = Date.now() + message.data.time_left * 1000;
      }
      if (message.event === "ended") { end(message.data); return; }
      emit(message.event, message.data);
    };
    ws.onclose = function (close) {
      clearInterval(timers.keepalive);
      emit("close", { code: close.code, reason: close.reason });
      if (over || close.code === ENDED || close.code === REPLACED) return;
      timers.retry = setTimeout(connect, backoff(attempt++));
    };
  }

  function connect() {
    if (over) return;
    status().then(function (answer) {
      var s = answer.body;
      if (answer.ok && s.state !== "active") {
        end({ reason: s.reason || "expired", back: s.back });
        return;
      }
      if (answer.ok) deadline = Date.now() + s.time_left * 1000;
      open(answer.ok ? s.ws_token : null); // no session: a spectator, if the lab allows
    }, function () {
      timers.retry = setTimeout(connect, backoff(attempt++));
    });
  }

  // labrt.camera reads the stream with fetch(): Chrome never tells a page that an <img src>
  // stream died (a dropped Wi-Fi leaves the last picture up, looking live). The lab sends a
  // picture at least every second, "no signal" ones too: silence is a dead connection.
  function camera(img, name, o) {
    var tries = 0, now = null, timer, shown;
    function state(s) {
      if (img.getAttribute("data-camera-state") === s) return;
      img.setAttribute("data-camera-state", s);
      try { if (o.onstate) o.onstate(s); } catch (e) { setTimeout(function () { throw e; }); }
    }
    function halt(s) {
      clearTimeout(timer);
      if (now) now.abort();
      now = null;
      state(s);
    }
    function stop() {
      labrt.off("ended", stop);
      halt("ended");
    }
    function show(jpeg, signal) {
      var old = shown;
      img.src = shown = URL.createObjectURL(new Blob([jpeg], { type: "image/jpeg" }));
      if (old) URL.revokeObjectURL(old); // drawn already
      state(signal ? "streaming" : "no signal");
    }
    function start() {
      if (over) return stop();
      var c = now = new AbortController(), rest = new Uint8Array(0);
      function retry() {
        if (c !== now) return; // this attempt was given up already
        halt("reconnecting");
        timer = setTimeout(start, backoff(tries++));
      }
      function alive() {
        clearTimeout(timer);
        timer = setTimeout(retry, CAMERA_SILENCE_MS);
      }
      function read(reader) {
        // One promise chain per chunk: returning the next read would keep them all alive.
        reader.read().then(function (r) {
          if (c !== now) return;
          if (r.done) return retry(); // cut without the closing boundary
          alive();
          var b = new Uint8Array(rest.length + r.value.length), at = 0, end;
          b.set(rest);
          b.set(r.value, rest.length);
          // A part: "--boundary", headers, a blank line, then Content-Length bytes of JPEG.
          for (;; at = end) {
            var h = String.fromCharCode.apply(null, b.subarray(at, at + 4096));
            if (/^\s*--\S+--/.test(h)) return stop(); // the closing boundary: the slot ended
            var m = /^\s*--\S+\r\n([\s\S]*?)\r\n\r\n/.exec(h);
            if (!m && h.length === 4096) throw h; // not a camera's stream
            if (!m) break; // the headers are on their way
            var size = +(/^content-length: *(\d+)/im.exec(m[1]) || [])[1];
            if (!(size >= 0)) throw m;
            end = at + m[0].length + size;
            if (end > b.length) break;
            show(b.subarray(end - size, end), !/^labrt-camera: *no signal/im.test(m[1]));
            tries = 0; // a picture came: the next drop starts the waits over
          }
          rest = b.subarray(at);
          read(reader);
        }).then(null, retry);
      }
      alive(); // an answer that never comes is silence too
      fetch(url("/labrt/camera/" + encodeURIComponent(name)), {
        credentials: "same-origin", cache: "no-store", signal: c.signal
      }).then(function (r) {
        if (c !== now) return;
        if (r.status === 401 || r.status === 403) return stop(); // the slot is over, or no access
        if (!r.ok) throw r;
        read(r.body.getReader());
      }).then(null, retry);
    }
    labrt.on("ended", stop);
    start();
    return { stop: stop };
  }

  var labrt = {
    /** Call fn(data) for each message of this event (also "ended", "tick", "open", "close"). */
    on: function (event, fn) {
      (handlers[event] = handlers[event] || []).push(fn);
      return labrt;
    },
    off: function (event, fn) {
      handlers[event] = (handlers[event] || []).filter(function (f) { return f !== fn; });
      return labrt;
    },
    /** Send {event, data} to the lab's @lab.on_message(event); false if not connected. */
    send: function (event, data) {
      if (!ws || ws.readyState !== 1) return false;
      ws.send(JSON.stringify({ event: event, data: data === undefined ? null : data }));
      return true;
    },
    /** Seconds left in the slot, counted down locally and corrected at each (re)connect. */
    timeLeft: function () {
      return deadline === null ? null : Math.max(0, (deadline - Date.now()) / 1000);
    },
    /** End the session now; the "ended" handlers get the back URL. */
    logout: function () {
      return fetch(url("/labrt/logout"), { method: "POST", credentials: "same-origin" })
        .then(function (r) {
          return r.json().then(function (body) {
            if (r.ok) end({ reason: "logged-out", back: body.back });
            return body;
          });
        });
    },
    /** Show camera `name` live in the <img> `img` until the slot ends; returns {stop()}. */
    camera: function (img, name, options) {
      return camera(img, name, options || {});
    },
    /** Start (done on load unless the script tag has data-manual); base: the lab's path. */
    connect: function (settings) {
      if (started) return labrt; // one socket per page
      started = true;
      options.base = (settings && settings.base) || options.base;
      clearInterval(timers.tick);
      timers.tick = setInterval(function () {
        if (deadline !== null && !over) emit("tick", { time_left: labrt.timeLeft() });
      }, 1000);
      connect();
      return labrt;
    }
  };

  global.labrt = labrt;
  if (!script || !script.hasAttribute("data-manual")) {
    global.addEventListener("load", function () { labrt.connect(); });
  }
})(window);
