// The notification centre on pages without a live socket (settings, diagnostics): loaded once
// over HTTP. The dashboard and job pages attach it to their socket instead.
import { NotificationCentre } from "./notifications.js";

new NotificationCentre().load();
