// colloquy's web inspector: follows /admin/events to refresh the live part of a
// conversation page, and sends the admin API's actions with the session's CSRF token.
// No framework and nothing fetched from elsewhere. Everything shown comes from the
// server's own rendering, where what a user wrote is escaped; messages set here use
// textContent.
(function () {
  "use strict";
  const csrfMeta = document.querySelector('meta[name="csrf-token"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const live = document.getElementById("live");
  const flash = document.querySelector('[data-testid="flash"]');
  if (!live) return;

  function say(text, bad) {
    if (!flash) return;
    flash.textContent = text;
    flash.classList.toggle("bad", Boolean(bad));
  }

  // One refresh at a time; changes that arrive meanwhile ask for one more.
  let refreshing = false;
  let again = false;
  async function refresh() {
    if (refreshing) {
      again = true;
      return;
    }
    refreshing = true;
    try {
      do {
        again = false;
        const response = await fetch(live.dataset.liveUrl, {
          credentials: "same-origin",
          headers: { Accept: "text/html" },
        });
        if (response.ok) {
          live.innerHTML = await response.text();
        } else if (response.status === 404) {
          say("This conversation is gone (forgotten).", true);
        }
      } while (again);
    } catch (error) {
      say("Could not refresh: " + error, true);
    } finally {
      refreshing = false;
    }
  }

  function follow() {
    const source = new EventSource(live.dataset.eventsUrl);
    source.addEventListener("change", refresh);
    source.addEventListener("resync", refresh);
    source.addEventListener("open", function () {
      document.body.dataset.live = "on";
      // Whatever changed between the page's rendering and now.
      refresh();
    });
    source.addEventListener("error", function () {
      document.body.dataset.live = "off";
    });
  }

  // Each action: the HTTP method and the admin API route under the conversation.
  const ROUTES = {
    pause: ["POST", "/pause"],
    resume: ["POST", "/resume"],
    retry: ["POST", "/retry"],
    replay: ["POST", "/replay"],
    skip: ["POST", "/skip"],
    send: ["POST", "/send"],
    start: ["POST", "/start"],
    "set-state": ["PUT", "/state"],
    reset: ["DELETE", "/state"],
    forget: ["DELETE", ""],
  };

  async function act(name, body) {
    const [method, route] = ROUTES[name];
    const path =
      "/admin/conversations/" + encodeURIComponent(live.dataset.psid) + route +
      "?page=" + encodeURIComponent(live.dataset.page);
    const response = await fetch(path, {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: method === "DELETE" ? undefined : JSON.stringify(body === undefined ? {} : body),
    });
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try {
        message = (await response.json()).error || message;
      } catch (_) {
        // not JSON: keep the status line
      }
      say(name + " failed: " + message, true);
      return false;
    }
    if (name === "forget") {
      window.location.assign("/admin/");
      return true;
    }
    say(name + ": done");
    await refresh();
    return true;
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    event.preventDefault();
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    const body = button.dataset.seq ? { seq: Number(button.dataset.seq) } : {};
    act(button.dataset.action, body).finally(function () {
      button.disabled = false;
    });
  });

  // What each form sends, from its fields.
  const FORM_BODIES = {
    send: (form) => ({ text: form.elements.text.value }),
    start: (form) => ({ tree: form.elements.tree.value }),
    "set-state": (form) => JSON.parse(form.elements.state.value),
  };

  document.querySelectorAll("form[data-action]").forEach(function (form) {
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      let body;
      try {
        body = FORM_BODIES[form.dataset.action](form);
      } catch (error) {
        say(form.dataset.action + " failed: not JSON: " + error.message, true);
        return;
      }
      const done = await act(form.dataset.action, body);
      if (done && form.dataset.action === "send") form.elements.text.value = "";
    });
  });

  follow();
})();
