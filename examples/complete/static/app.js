/* The complete example's page: no framework, only labrt.js (docs/push.md).
 *
 * The page asks /api/state once for the whole picture, then follows the lab's pushes:
 * "lights", "button" and labrt's own "session", "task", "tick" and "ended". The camera
 * ("cam" in lab.toml) is labrt.js's too: labrt.camera shows it and reconnects by itself. */
"use strict";

const LIGHTS = 10;

// Every visible text, in each language the page speaks; user.locale picks one.
const TEXT = {
  en: {
    title: "Lights, button and board",
    hello: "Hello, {name}.",
    timeLeft: "Time left",
    logout: "Leave the lab",
    cameraTitle: "The bench",
    cameraAlt: "The bench, live from its camera",
    streaming: "Live.",
    "no signal": "The camera sends no picture at the moment.",
    reconnecting: "Reconnecting to the camera…",
    "camera-ended": "The camera is off.",
    lightsTitle: "Lights",
    lightsHelp: "Press a light to switch it on or off.",
    light: "Light {n}",
    on: "on",
    off: "off",
    buttonTitle: "The button on the bench",
    pressed: "The button is pressed.",
    released: "The button is released.",
    boardTitle: "The board",
    boardHelp: "Programming the microcontroller takes a few seconds.",
    program: "Program the board",
    progress: "Progress",
    idle: "Not programmed yet.",
    waiting: "Waiting for the board…",
    running: "Programming: {p} %",
    done: "Programmed.",
    stopped: "Stopped before the end.",
    failed: "Not programmed: {why}",
    busy: "The board is busy with another job; try again in a moment.",
    offline: "Not connected to the lab; trying again…",
    refused: "The lab did not take that: {why}",
    endedTitle: "Your time is over",
    expired: "Your time slot has ended.",
    "timed-out": "The lab stopped hearing from this page.",
    "logged-out": "You left the lab.",
    "disposed-by-rlms": "The booking system ended your session.",
    shutdown: "The lab is stopping.",
    over: "Your session is over.",
    back: "Back to the booking system",
    anonymousTitle: "No session",
    anonymousText: "Open this laboratory from the link of your booking.",
  },
  es: {
    title: "Luces, botón y placa",
    hello: "Hola, {name}.",
    timeLeft: "Tiempo restante",
    logout: "Salir del laboratorio",
    cameraTitle: "El banco",
    cameraAlt: "El banco, en directo desde su cámara",
    streaming: "En directo.",
    "no signal": "La cámara no envía imagen en este momento.",
    reconnecting: "Reconectando con la cámara…",
    "camera-ended": "La cámara está apagada.",
    lightsTitle: "Luces",
    lightsHelp: "Pulsa una luz para encenderla o apagarla.",
    light: "Luz {n}",
    on: "encendida",
    off: "apagada",
    buttonTitle: "El botón del banco",
    pressed: "El botón está pulsado.",
    released: "El botón está suelto.",
    boardTitle: "La placa",
    boardHelp: "Programar el microcontrolador tarda unos segundos.",
    program: "Programar la placa",
    progress: "Progreso",
    idle: "Aún sin programar.",
    waiting: "Esperando a la placa…",
    running: "Programando: {p} %",
    done: "Programada.",
    stopped: "Detenida antes de terminar.",
    failed: "No se ha programado: {why}",
    busy: "La placa está ocupada con otro trabajo; inténtalo de nuevo en un momento.",
    offline: "Sin conexión con el laboratorio; reintentando…",
    refused: "El laboratorio no aceptó eso: {why}",
    endedTitle: "Se acabó tu tiempo",
    expired: "Tu turno ha terminado.",
    "timed-out": "El laboratorio dejó de recibir noticias de esta página.",
    "logged-out": "Has salido del laboratorio.",
    "disposed-by-rlms": "El sistema de reservas ha terminado tu sesión.",
    shutdown: "El laboratorio se está deteniendo.",
    over: "Tu sesión ha terminado.",
    back: "Volver al sistema de reservas",
    anonymousTitle: "Sin sesión",
    anonymousText: "Abre este laboratorio desde el enlace de tu reserva.",
  },
};

const $ = (id) => document.getElementById(id);
let text = TEXT.en;
let following = null; // the program task the page shows (its task_id)
let said = { status: "idle", key: "idle", vars: {} }; // #program-status, to translate again
let over = false; // the session has ended
let camera = ""; // the camera's state, as labrt.camera gives it: to translate again

/** "es-ES", "es" or null → a language of TEXT (English when none fits). */
function language(locale) {
  const code = String(locale || "").toLowerCase().split(/[-_]/)[0];
  return Object.hasOwn(TEXT, code) ? code : "en";
}

/** The text for key in the page's language, with {name} placeholders filled in. */
function t(key, vars = {}) {
  const template = text[key] || TEXT.en[key] || key;
  return template.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

function translate(locale) {
  const lang = language(locale);
  text = TEXT[lang];
  document.documentElement.lang = lang;
  document.title = t("title");
  for (const element of document.querySelectorAll("[data-i18n]")) {
    element.textContent = t(element.dataset.i18n);
  }
  $("camera").alt = t("cameraAlt");
  showCamera(camera);
}

/** labrt.camera's state: "streaming", "no signal", "reconnecting" or "ended", in words. */
function showCamera(state) {
  camera = state;
  $("camera-state").textContent = state ? t(state === "ended" ? "camera-ended" : state) : "";
}

// The ten lights: real buttons; aria-pressed says on or off, to screen readers too.
function makeLights() {
  const box = $("lights");
  for (let n = 0; n < LIGHTS; n++) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.light = String(n);
    button.setAttribute("aria-pressed", "false");
    button.innerHTML =
      '<span class="bulb" aria-hidden="true"></span><span class="name"></span>' +
      '<span class="onoff" aria-hidden="true"></span>';
    button.addEventListener("click", () => {
      if (!labrt.send("light", { n })) notice("offline");
    });
    box.append(button);
  }
}

function showLights(lights) {
  for (const button of $("lights").querySelectorAll("button")) {
    const on = Boolean(lights[Number(button.dataset.light)]);
    button.setAttribute("aria-pressed", String(on));
    button.querySelector(".name").textContent = t("light", { n: button.dataset.light });
    button.querySelector(".onoff").textContent = t(on ? "on" : "off");
  }
}

function showButton(pressed) {
  $("button-state").dataset.pressed = String(pressed);
  $("button-state").textContent = t(pressed ? "pressed" : "released");
}

function setStatus(name, key, vars = {}) {
  said = { status: name, key, vars };
  $("program-status").dataset.status = name;
  $("program-status").textContent = t(key, vars);
}

/** A program task, as /api/program answers it and labrt pushes it ("task" events). */
function showTask(task) {
  const progress = (task.data && task.data.progress) || 0;
  const busy = task.status === "submitted" || task.status === "running";
  $("program").setAttribute("aria-disabled", String(busy));
  if (task.status === "submitted") {
    setStatus("running", "waiting");
  } else if (task.status === "running") {
    $("progress").value = progress;
    setStatus("running", "running", { p: progress });
  } else if (task.status === "done") {
    $("progress").value = progress;
    if (task.result === "done") setStatus("done", "done");
    else setStatus("failed", "stopped");
  } else {
    setStatus("failed", "failed", { why: task.error ? task.error.message : "" });
  }
}

function notice(key, vars) {
  $("notice").textContent = key ? t(key, vars) : "";
}

function showLab(visible) {
  $("lab").hidden = !visible;
}

/** The whole picture, from the lab. False when the page has no session. */
async function refresh() {
  const answer = await fetch("api/state", { headers: { Accept: "application/json" } });
  if (!answer.ok) return false;
  const state = await answer.json();
  translate(state.locale);
  $("hello").textContent = t("hello", { name: state.name });
  $("back").href = state.back;
  showLights(state.lights);
  showButton(state.button);
  setStatus(said.status, said.key, said.vars); // again, in the student's language
  // A job running since before this page (a reload, another tab), or one that moved on
  // while the page was disconnected.
  const id = state.task || following;
  if (id && (id !== following || said.status === "running")) {
    following = id;
    const task = await fetch(`/labrt/tasks/${id}`);
    if (task.ok) showTask(await task.json());
  }
  return true;
}

$("program").addEventListener("click", async () => {
  if ($("program").getAttribute("aria-disabled") === "true") return;
  $("program").setAttribute("aria-disabled", "true");
  notice(null);
  let answer, body;
  try {
    answer = await fetch("api/program", { method: "POST" });
    body = await answer.json();
  } catch {
    $("program").setAttribute("aria-disabled", "false");
    notice("offline");
    return;
  }
  if (answer.ok) {
    // Its first events may have come before this answer: never show an older state.
    if (body.task_id !== following) {
      following = body.task_id;
      showTask(body);
    }
    return;
  }
  $("program").setAttribute("aria-disabled", "false");
  notice(answer.status === 409 ? "busy" : "refused", { why: body.message });
});

$("logout").addEventListener("click", () => labrt.logout()); // then labrt fires "ended"

labrt.on("session", (session) => {
  showLab(session.state === "active");
  $("time-left").textContent = String(Math.ceil(session.time_left)); // before the first tick
});
labrt.on("open", () => {
  notice(null);
  refresh().catch(() => notice("offline")); // pushes sent while away are lost: catch up
});
labrt.on("close", () => {
  if (!over) notice("offline"); // labrt.js reconnects by itself
});
labrt.on("lights", showLights);
labrt.on("button", (button) => showButton(button.pressed));
labrt.on("task", (task) => {
  // A refused submission is pushed too (failed, already-running): the job it lost to goes on.
  if (task.name !== "program_board" || (task.error && task.error.code === "already-running")) {
    return;
  }
  following = task.task_id;
  showTask(task);
});
labrt.on("tick", (tick) => {
  $("time-left").textContent = String(Math.ceil(tick.time_left));
});
labrt.on("error", (error) => notice("refused", { why: error.message }));
labrt.on("ended", (end) => {
  over = true;
  showLab(false);
  $("ended-reason").textContent = t(Object.hasOwn(text, end.reason) ? end.reason : "over");
  if (end.back) $("back").href = end.back;
  else $("back").hidden = true;
  $("ended").hidden = false;
  $("back").focus();
});

// Start: the lab in the student's language, then the live connection. Without a session
// (the page opened without the booking's link) labrt.js would keep trying to connect as a
// spectator, which this lab does not allow: so connect only with a session.
makeLights();
translate(navigator.language);
refresh().then((session) => {
  if (!session) {
    $("anonymous").hidden = false;
    return;
  }
  labrt.connect();
  // The camera's pictures are for the student whose slot runs; labrt.camera stops by itself
  // when the slot ends. Its state is on the img too (data-camera-state), for style.css.
  labrt.camera($("camera"), "cam", { onstate: showCamera });
});
