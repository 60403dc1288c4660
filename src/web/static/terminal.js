// compute-server: the browser terminal. xterm.js (from the npm registry, served from
// /static/vendor) draws it; a WebSocket to /servers/NAME/terminal/socket carries its bytes:
// binary frames both ways, JSON text frames for resizes (to the server) and for errors and the
// shell's exit (from it).
"use strict";

const element = document.getElementById("terminal");
const state = document.querySelector("[data-terminal-state]");
if (element && window.Terminal && window.FitAddon) {
  const term = new window.Terminal({ cursorBlink: true, scrollback: 5000, fontSize: 14 });
  const fit = new window.FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(element);
  fit.fit();
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${window.location.host}${element.dataset.socket}?cols=${term.cols}&rows=${term.rows}`;
  const socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  const show = (text) => { if (state) { state.textContent = text; } };
  socket.addEventListener("open", () => { show("Connected"); term.focus(); });
  socket.addEventListener("message", (event) => {
    if (typeof event.data === "string") {
      const message = JSON.parse(event.data);
      if (message.error) {
        show("Not connected");
        term.write(`\r\n\x1b[31m${message.error}\x1b[0m\r\n`);
      } else if (message.exit !== undefined) {
        show(`The shell ended (exit status ${message.exit})`);
      }
      return;
    }
    term.write(new Uint8Array(event.data));
  });
  socket.addEventListener("close", () => {
    if (state && state.textContent === "Connected") { show("Disconnected: reload the page to connect again"); }
  });
  term.onData((data) => {
    if (socket.readyState === WebSocket.OPEN) { socket.send(encoder.encode(data)); }
  });
  term.onResize(({ cols, rows }) => {
    if (socket.readyState === WebSocket.OPEN) { socket.send(JSON.stringify({ resize: [cols, rows] })); }
  });
  window.addEventListener("resize", () => fit.fit());
}
