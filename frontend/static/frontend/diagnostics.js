// Which transports work from this browser, and the WebSocket round-trip time: `ping` and `pong` on
// the notification socket itself (the one every page uses; bound to the sign-in like any socket).
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const show = (id, text) => { document.getElementById(id).textContent = text; };

function checkSocket() {
  const ws = new WebSocket(`${scheme}//${location.host}/ws/notifications/`);
  const timer = setTimeout(() => { show("diag-socket", "no answer in 5 s"); ws.close(); }, 5000);
  ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.type === "hello") {
      clearTimeout(timer);
      show("diag-socket", `connected (protocol ${data.protocol}, as ${data.user.username})`);
      ws.close();
    }
  };
  ws.onclose = (event) => { if (event.code !== 1000 && event.code !== 1005) show("diag-socket", `closed with ${event.code}`); };
}

function checkSse() {
  const source = new EventSource("/events/");
  const timer = setTimeout(() => { show("diag-sse", "no answer in 5 s"); source.close(); }, 5000);
  source.onmessage = () => { clearTimeout(timer); show("diag-sse", "working"); source.close(); };
  source.onerror = () => { clearTimeout(timer); show("diag-sse", "failed"); source.close(); };
}

function measure() {
  show("diag-rtt", "measuring…");
  const ws = new WebSocket(`${scheme}//${location.host}/ws/notifications/`);
  const samples = [];
  let sentAt = 0;
  const next = () => { sentAt = performance.now(); ws.send(JSON.stringify({ type: "ping" })); };
  ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.type === "snapshot" && samples.length === 0 && sentAt === 0) return next();
    if (data.type !== "pong") return;
    samples.push(performance.now() - sentAt);
    if (samples.length < 20) return next();
    ws.close();
    samples.sort((a, b) => a - b);
    show("diag-rtt", `median ${samples[10].toFixed(1)} ms, worst ${samples[19].toFixed(1)} ms`);
  };
  ws.onerror = () => show("diag-rtt", "the socket failed");
}

document.getElementById("diag-again").addEventListener("click", measure);
checkSocket();
checkSse();
measure();
