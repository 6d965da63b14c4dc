// Runboard's service worker, served at /sw.js: shows browser push notifications (the payload is
// {title, body, link, level, notification_id, unread_count}) and opens the link when one is clicked.
// It does not cache anything: the dashboard is live, a stale copy would only mislead.

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function readPayload(event) {
  if (!event.data) return {};
  try {
    return event.data.json();
  } catch {
    return { body: event.data.text() };
  }
}

// Only links on this site: a notification must never send the user elsewhere.
function sameOriginUrl(link) {
  try {
    const url = new URL(link || "/", self.location.origin);
    if (url.origin === self.location.origin) return url.href;
  } catch {}
  return new URL("/", self.location.origin).href;
}

self.addEventListener("push", (event) => {
  const data = readPayload(event);
  const options = {
    body: data.body || "",
    data: { link: sameOriginUrl(data.link) },
    // The same notification pushed twice (a retried task) replaces itself instead of stacking.
    tag: data.notification_id ? `notification-${data.notification_id}` : undefined,
  };
  event.waitUntil(self.registration.showNotification(data.title || "Runboard", options));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const target = sameOriginUrl(event.notification.data && event.notification.data.link);
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const open = windows.find((client) => client.url === target);
      if (open) return open.focus();
      return self.clients.openWindow(target);
    })(),
  );
});
