// wmsim play: draws the dream (and the real game) the server steps, and sends the page's inputs.
// The protocol is described in wmsim/play/protocol.py; the key table comes from the server
// (wmsim/play/keys.py): the page only turns held keys into a bit mask and looks it up.
"use strict";

const KEY_BITS = { ArrowUp: 1, ArrowDown: 2, ArrowLeft: 4, ArrowRight: 8, " ": 16 }; // keys.KEYS
const CHART_STEPS = 240; // steps the chart shows at most, the newest on the right
const CHART_MIN_STEPS = 60; // its width in steps until an episode is longer

const $ = (id) => document.getElementById(id);
const state = {
  socket: null,
  hello: null, // the server's first message: game, actions, key table
  held: new Set(), // keys held now
  action: 0, // the action the held keys play
  nextId: 1,
  sentAt: new Map(), // message id -> when the key changed (performance.now())
  paused: false,
  beside: false,
  seed: null,
  history: [], // per step: {reward, score, end, realScore}
};

function send(message) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify(message));
  }
}

function showStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function connect() {
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const token = new URLSearchParams(location.search).get("token");
  url.search = token ? `?token=${encodeURIComponent(token)}` : "";
  const socket = new WebSocket(url);
  socket.binaryType = "blob";
  socket.onmessage = (event) => {
    if (typeof event.data !== "string") {
      saveGif(event.data);
      return;
    }
    const message = JSON.parse(event.data);
    const handle = HANDLERS[message.type];
    if (handle) handle(message);
  };
  socket.onclose = (event) => {
    showStatus(`disconnected (${event.code}${event.reason ? ": " + event.reason : ""}): reload the page`, true);
  };
  state.socket = socket;
}

function seedField() {
  const text = $("seed").value.trim();
  return text === "" ? null : Number(text);
}

function reset() {
  state.history = [];
  send({ type: "reset", seed: seedField() });
}

// -- drawing -------------------------------------------------------------------------------

function drawFrame(canvas, base64, width, height) {
  const rgb = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
    image.data[j] = rgb[i];
    image.data[j + 1] = rgb[i + 1];
    image.data[j + 2] = rgb[i + 2];
    image.data[j + 3] = 255;
  }
  context.putImageData(image, 0, 0);
}

function drawChart() {
  const canvas = $("chart");
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  const top = 18, bottom = height - 4, plot = bottom - top;
  context.clearRect(0, 0, width, height);
  const steps = state.history.slice(-CHART_STEPS);
  const span = Math.max(CHART_MIN_STEPS, steps.length); // a short episode still fills the chart
  const x = (i) => (width * (i + 0.5)) / span;
  context.strokeStyle = "#444";
  context.beginPath();
  context.moveTo(0, bottom + 0.5);
  context.lineTo(width, bottom + 0.5);
  context.stroke();
  // rewards as bars, scaled to the largest seen (at least 1: a model's near-zero rewards stay
  // near zero); the scores and the end probability as lines
  const rewardScale = Math.max(1, ...steps.map((s) => Math.abs(s.reward)));
  context.fillStyle = "#5fcf6f";
  steps.forEach((s, i) => {
    const h = (plot * Math.abs(s.reward)) / rewardScale;
    if (h > 0) context.fillRect(x(i) - 1.5, bottom - h, 3, h);
  });
  const scores = steps.flatMap((s) => (s.realScore === null ? [s.score] : [s.score, s.realScore]));
  const scoreScale = Math.max(1, ...scores.map(Math.abs));
  const line = (values, scale, color, dashed) => {
    context.strokeStyle = color;
    context.setLineDash(dashed ? [4, 3] : []);
    context.beginPath();
    values.forEach((v, i) => {
      if (v === null) return;
      const y = bottom - (plot * v) / scale;
      if (i === 0 || values[i - 1] === null) context.moveTo(x(i), y);
      else context.lineTo(x(i), y);
    });
    context.stroke();
    context.setLineDash([]);
  };
  line(steps.map((s) => s.score), scoreScale, "#6fa8ff", false);
  if (state.beside) line(steps.map((s) => s.realScore), scoreScale, "#6fa8ff", true);
  line(steps.map((s) => s.end), 1, "#ff6b6b", false);
  context.font = "11px system-ui, sans-serif";
  const legend = [
    ["#5fcf6f", `reward (bar height: max ${rewardScale.toFixed(2)})`],
    ["#6fa8ff", `score (top: ${scoreScale.toFixed(0)})${state.beside ? ", real dashed" : ""}`],
    ["#ff6b6b", "end probability (top: 1)"],
  ];
  let left = 6;
  for (const [color, text] of legend) {
    context.fillStyle = color;
    context.fillRect(left, 5, 10, 8);
    context.fillStyle = "#bbb";
    context.fillText(text, left + 14, 13);
    left += 22 + context.measureText(text).width;
  }
}

// -- the server's messages ---------------------------------------------------------------

function onHello(message) {
  state.hello = message;
  $("game").textContent = message.game;
  $("source").textContent = `dreamed ${message.source}`;
  $("fps").min = message.min_fps;
  $("fps").max = message.max_fps;
  $("fps").value = message.fps;
  $("fps-shown").textContent = message.fps;
  const rows = message.actions.map((meaning, i) => {
    const row = document.createElement("tr");
    for (const text of [i, meaning, message.labels[i] || "(no keys)"]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  });
  $("keys").replaceChildren(...rows);
  reset();
}

function onFrame(message) {
  drawFrame($("dream"), message.frame, message.width, message.height);
  const meanings = state.hello.actions;
  if (message.step === 0) state.history = [];
  state.seed = message.seed;
  $("seed-shown").textContent = message.seed;
  $("step").textContent = message.step;
  $("action").textContent = message.action === null ? "–" : meanings[message.action];
  $("reward").textContent = message.reward.toFixed(2);
  $("score").textContent = message.score.toFixed(2);
  $("end").textContent = message.end === null ? "–" : message.end.toFixed(3);
  let realScore = null;
  if (message.real) {
    drawFrame($("real"), message.real.frame, message.width, message.height);
    realScore = message.real.score;
    $("real-score").textContent = realScore.toFixed(0);
    $("real-over").textContent = message.real.over ? "(game over)" : "";
  }
  if (message.input !== null && state.sentAt.has(message.input)) {
    $("lag").textContent = `${(performance.now() - state.sentAt.get(message.input)).toFixed(0)} ms`;
    for (const id of state.sentAt.keys()) if (id <= message.input) state.sentAt.delete(id);
  }
  if (message.step > 0) {
    state.history.push({ reward: message.reward, score: message.score, end: message.end, realScore });
    if (state.history.length > CHART_STEPS) state.history.shift();
  }
  drawChart();
  if (message.ended) {
    const why = message.ended === "terminated" ? "the model ended it" : "the step limit";
    showStatus(`episode over at step ${message.step} (${why}): R resets`);
  } else if (message.step === 0) {
    showStatus("");
  }
}

function onState(message) {
  state.paused = message.paused;
  state.beside = message.beside;
  $("pause").textContent = message.paused ? "Resume (P)" : "Pause (P)";
  $("step-once").disabled = !message.paused;
  $("fps").value = message.fps;
  $("fps-shown").textContent = message.fps;
  $("beside").checked = message.beside;
  $("real-figure").hidden = !message.beside;
  document.querySelector(".real-only").hidden = !message.beside;
}

function onError(message) {
  showStatus(message.message, true);
}

const HANDLERS = { hello: onHello, frame: onFrame, state: onState, error: onError };

function saveGif(blob) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([blob], { type: "image/gif" }));
  link.download = `${state.hello.game}-seed${state.seed}.gif`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// -- inputs --------------------------------------------------------------------------------

function sendAction() {
  if (!state.hello) return;
  let mask = 0;
  for (const key of state.held) mask |= KEY_BITS[key];
  const action = state.hello.keys[mask];
  $("held").textContent = state.hello.actions[action];
  if (action === state.action) return;
  state.action = action;
  const id = state.nextId++;
  state.sentAt.set(id, performance.now());
  send({ type: "action", action, id });
}

const COMMAND_KEYS = {
  p: () => send({ type: "pause", paused: !state.paused }),
  n: () => send({ type: "step" }),
  r: reset,
  b: () => send({ type: "beside", on: !state.beside }),
  g: () => send({ type: "gif" }),
};

document.addEventListener("keydown", (event) => {
  if (event.key in KEY_BITS) {
    event.preventDefault(); // no scrolling, no button presses by space
    if (event.repeat) return;
    state.held.add(event.key);
    sendAction();
    return;
  }
  const typing = event.target instanceof HTMLInputElement && event.target.type === "number";
  const command = COMMAND_KEYS[event.key.toLowerCase()];
  if (command && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
    event.preventDefault();
    command();
  }
});

document.addEventListener("keyup", (event) => {
  if (event.key in KEY_BITS) {
    event.preventDefault();
    state.held.delete(event.key);
    sendAction();
  }
});

window.addEventListener("blur", () => { // keys released outside the page would stay held
  state.held.clear();
  sendAction();
});

$("pause").addEventListener("click", COMMAND_KEYS.p);
$("step-once").addEventListener("click", COMMAND_KEYS.n);
$("reset").addEventListener("click", reset);
$("gif").addEventListener("click", COMMAND_KEYS.g);
$("beside").addEventListener("change", (event) => send({ type: "beside", on: event.target.checked }));
$("fps").addEventListener("input", (event) => {
  $("fps-shown").textContent = event.target.value;
  send({ type: "fps", fps: Number(event.target.value) });
});
connect();
