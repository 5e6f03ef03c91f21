/* Tessera tracker: Segment-spec calls to a Tessera collector, exit intent, on-site messages.
 * Dependency-free. Load it with <script src="https://COLLECTOR/tracker.js" data-write-key="KEY"
 * async></script>; calls made before it loads can be queued on window.tessera = [] as
 * ["track", "Product Viewed", {...}] arrays. API (window.tessera): page(name?, props?),
 * track(event, props?), identify(userId?, traits?), consent({analytics, personalization, marketing}),
 * flush(), reset(), anonymousId(), checkInbox(). See the README, "Websites". */
(function (w, d) {
  "use strict";
  var script = d.currentScript || {}, data = script.dataset || {};
  var host = (data.host || (script.src ? new URL(script.src).origin : "")).replace(/\/$/, "");
  var writeKey = data.writeKey || "";
  var SESSION_IDLE_MS = 30 * 60 * 1000, DWELL_MS = +(data.exitDwellMs || 3000);
  var FLUSH_MS = 1000, FLUSH_AT = 20, P = "tsr_";
  var queue = [], timer = 0, shownAt = Date.now(), exitFired = 0, seen = null;

  // -- first-party storage: localStorage, a cookie when it is not there --------------------------
  function get(k) {
    try { var v = w.localStorage.getItem(P + k); if (v !== null) return v; } catch (e) {}
    var m = d.cookie.match(new RegExp("(?:^|; )" + P + k + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : null;
  }
  function set(k, v) {
    try { w.localStorage.setItem(P + k, v); return; } catch (e) {}
    d.cookie = P + k + "=" + encodeURIComponent(v) + ";path=/;max-age=31536000;SameSite=Lax";
  }
  function uuid() {
    if (w.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx".replace(/[xy]/g, function (c) {
      var r = (Math.random() * 16) | 0;
      return (c === "x" ? r : (r & 3) | 8).toString(16);
    });
  }
  function anonymousId() {
    var id = get("aid");
    if (!id) { id = uuid(); set("aid", id); }
    return id;
  }
  function sessionId() { // a new session after 30 idle minutes
    var now = Date.now(), s = (get("sid") || "").split("|");
    var id = s[0] && now - +s[1] < SESSION_IDLE_MS ? s[0] : uuid();
    set("sid", id + "|" + now);
    return id;
  }
  function json(k, fallback) { try { return JSON.parse(get(k)) || fallback; } catch (e) { return fallback; } }

  // -- calls ---------------------------------------------------------------------------------------
  function context() {
    var ctx = {
      page: { url: location.href, path: location.pathname, referrer: d.referrer, title: d.title },
      userAgent: navigator.userAgent, locale: navigator.language,
      screen: { width: screen.width, height: screen.height },
      library: { name: "tessera-tracker", version: "1" }
    };
    var consent = json("consent", null);
    if (consent) ctx.consent = consent;
    return ctx;
  }
  function enqueue(call) {
    var consent = json("consent", null);
    if (consent && consent.analytics === false) return; // refused: nothing leaves the browser
    call.anonymousId = anonymousId();
    var userId = get("uid");
    if (userId) call.userId = userId;
    call.messageId = uuid();
    call.timestamp = new Date().toISOString();
    call.sessionId = sessionId();
    call.context = context();
    queue.push(call);
    if (queue.length >= FLUSH_AT) flush();
    else if (!timer) timer = setTimeout(flush, FLUSH_MS);
  }
  function body(batch) {
    return JSON.stringify({ batch: batch, writeKey: writeKey, sentAt: new Date().toISOString() });
  }
  // text/plain is CORS-safelisted: no preflight; the write key travels in the body.
  function flush(beacon) {
    clearTimeout(timer); timer = 0;
    if (!queue.length) return Promise.resolve();
    var batch = queue.splice(0, queue.length), url = host + "/v1/batch";
    if (beacon && navigator.sendBeacon &&
        navigator.sendBeacon(url, new Blob([body(batch)], { type: "text/plain" }))) return Promise.resolve();
    return fetch(url, { method: "POST", body: body(batch), keepalive: true, headers: { "Content-Type": "text/plain" } })
      .catch(function () { queue = batch.concat(queue); }); // offline: retried by the next flush
  }
  function track(event, properties) { enqueue({ type: "track", event: event, properties: properties || {} }); }
  function page(name, properties) {
    shownAt = Date.now(); exitFired = 0;
    enqueue({ type: "page", name: name || d.title, properties: properties || {} });
  }
  function identify(userId, traits) {
    if (userId) set("uid", String(userId));
    enqueue({ type: "identify", traits: traits || {} });
  }
  function reset() {
    ["aid", "sid", "uid", "seen"].forEach(function (k) {
      try { w.localStorage.removeItem(P + k); } catch (e) {}
      d.cookie = P + k + "=;path=/;max-age=0";
    });
  }
  function consent(choice) { set("consent", JSON.stringify(choice)); }

  // -- exit intent ----------------------------------------------------------------------------------
  // Desktop: the pointer leaves the window through the top after DWELL_MS on the page. Touch
  // devices: a fast scroll up (more than a third of the screen within 300 ms) after the dwell, or
  // the tab being hidden. At most once per page view.
  function exitIntent(trigger) {
    if (exitFired || Date.now() - shownAt < DWELL_MS) return;
    exitFired = 1;
    track("Exit Intent", { trigger: trigger });
    flush(trigger === "tab_hidden").then(function () { pollInbox(10); });
  }
  var coarse = w.matchMedia && w.matchMedia("(pointer: coarse)").matches;
  d.addEventListener("mouseout", function (e) {
    if (!e.relatedTarget && e.clientY <= 0) exitIntent("mouse_leave");
  });
  var lastY = w.scrollY, lastT = Date.now();
  w.addEventListener("scroll", function () {
    var now = Date.now();
    if (coarse && lastY - w.scrollY > w.innerHeight / 3 && now - lastT < 300) exitIntent("other");
    if (now - lastT > 100) { lastY = w.scrollY; lastT = now; }
  }, { passive: true });
  d.addEventListener("visibilitychange", function () {
    if (d.visibilityState === "hidden") {
      if (coarse) exitIntent("tab_hidden");
      flush(true);
    } else checkInbox();
  });
  w.addEventListener("pagehide", function () { flush(true); });

  // -- on-site messages -----------------------------------------------------------------------------
  function checkInbox() {
    var url = host + "/v1/inbox/" + encodeURIComponent(anonymousId()) + "?writeKey=" + encodeURIComponent(writeKey);
    return fetch(url).then(function (r) { return r.ok ? r.json() : { messages: [] }; }).then(function (a) {
      seen = seen || json("seen", []);
      for (var i = 0; i < a.messages.length; i++) {
        if (seen.indexOf(a.messages[i].message_id) < 0) { render(a.messages[i]); return true; }
      }
      return false;
    }).catch(function () { return false; });
  }
  function pollInbox(tries) { // the worker decides within a batch or two: ask for a few seconds
    checkInbox().then(function (found) { if (!found && tries > 1) setTimeout(function () { pollInbox(tries - 1); }, 1000); });
  }
  function el(tag, css, text) {
    var e = d.createElement(tag);
    e.style.cssText = css;
    if (text) e.textContent = text; // text only: a payload never becomes markup
    return e;
  }
  function render(m) {
    var p = m.payload || {}, display = p.display === "bar" || (m.kind !== "exit_intent_overlay" && p.display !== "overlay") ? "bar" : "overlay";
    seen.push(m.message_id); set("seen", JSON.stringify(seen.slice(-50)));
    function report(outcome) {
      track("Message " + outcome, { message_id: m.message_id, kind: m.kind, rule: m.rule, display: display });
      flush();
    }
    var title = p.title || (p.template === "cart_reminder" ? "Your cart is waiting" : "");
    var text = p.text || (p.template === "cart_reminder"
      ? "You have " + (p.cart_items || "some") + " item(s) in your cart" + (p.cart_value ? " worth " + Number(p.cart_value).toFixed(2) : "") + "." +
        (p.offer_coupon ? " Use code " + (p.coupon || "COMEBACK10") + " for 10 % off." : "")
      : "");
    var root = el("div", display === "overlay"
      ? "position:fixed;inset:0;background:rgba(0,0,0,.5);z-index:2147483647;display:flex;align-items:center;justify-content:center"
      : "position:fixed;top:0;left:0;right:0;background:#222;color:#fff;z-index:2147483647;padding:10px 16px;display:flex;gap:12px;align-items:center;font:15px sans-serif");
    root.setAttribute("data-tessera-message", m.message_id);
    root.setAttribute("data-display", display);
    var box = display === "overlay"
      ? el("div", "background:#fff;color:#111;max-width:420px;padding:24px;border-radius:8px;font:16px sans-serif;box-shadow:0 8px 30px rgba(0,0,0,.3)")
      : root;
    if (title) box.appendChild(el(display === "overlay" ? "h2" : "strong", "margin:0 0 8px", title));
    if (text) box.appendChild(el(display === "overlay" ? "p" : "span", "margin:0 0 16px", text));
    var cta = el("a", "display:inline-block;background:#e4572e;color:#fff;padding:8px 16px;border-radius:4px;text-decoration:none;margin-right:8px", p.cta || "Back to my cart");
    cta.href = p.url || data.cartUrl || "#";
    cta.setAttribute("data-tessera-action", "click");
    var close = el("button", "background:none;border:1px solid #888;padding:7px 12px;border-radius:4px;cursor:pointer;color:inherit", "No thanks");
    close.setAttribute("data-tessera-action", "dismiss");
    function done() { root.remove(); d.removeEventListener("keydown", esc); }
    function esc(e) { if (e.key === "Escape") { done(); report("Dismissed"); } }
    cta.addEventListener("click", function () { done(); report("Clicked"); });
    close.addEventListener("click", function () { done(); report("Dismissed"); });
    if (display === "overlay") {
      root.addEventListener("click", function (e) { if (e.target === root) { done(); report("Dismissed"); } });
      root.appendChild(box);
    }
    d.addEventListener("keydown", esc);
    box.appendChild(cta); box.appendChild(close);
    d.body.appendChild(root);
    report("Shown");
  }

  var api = { page: page, track: track, identify: identify, consent: consent, flush: flush, reset: reset,
    anonymousId: anonymousId, checkInbox: checkInbox };
  var early = Array.isArray(w.tessera) ? w.tessera : [];
  w.tessera = api;
  early.forEach(function (c) { api[c[0]] && api[c[0]].apply(null, c.slice(1)); });
  if (data.autoPage !== "false") page();
  checkInbox();
})(window, document);
