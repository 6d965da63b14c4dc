// A page's live header (base.html's default): the socket, the connection indicator, the bell and
// toasts, all in live.js.
import "./live.js";
