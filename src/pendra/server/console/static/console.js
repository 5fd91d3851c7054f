// Pendra console: small progressive enhancements. Every page works without this file; with it,
// dialogs open, destructive forms ask first, secrets copy with one click, installs move live and
// the Workers and Models pages refresh themselves when the fleet changes.
"use strict";

(function () {
  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));

  // --- dialogs ---------------------------------------------------------------------------------

  document.addEventListener("click", (event) => {
    const opener = event.target.closest("[data-open]");
    if (opener) {
      const dialog = document.getElementById(opener.dataset.open);
      if (dialog && !dialog.open) dialog.showModal();
      return;
    }
    const closer = event.target.closest("[data-close]");
    if (closer) {
      const dialog = closer.closest("dialog");
      if (dialog) dialog.close();
    }
  });

  // --- confirmation before destructive forms ------------------------------------------------------

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!form.dataset.confirm || form.dataset.confirmed === "yes") return;
    event.preventDefault();
    const dialog = $("#confirm-dialog");
    if (!dialog) {
      if (window.confirm(form.dataset.confirm)) { form.dataset.confirmed = "yes"; form.submit(); }
      return;
    }
    $("[data-confirm-text]", dialog).textContent = form.dataset.confirm;
    $("[data-confirm-ok]", dialog).textContent = form.dataset.confirmLabel || "Confirm";
    dialog.returnValue = "";
    dialog.addEventListener("close", function onClose() {
      dialog.removeEventListener("close", onClose);
      if (dialog.returnValue === "confirm") { form.dataset.confirmed = "yes"; form.submit(); }
    });
    dialog.showModal();
  }, true);

  // --- copy buttons ------------------------------------------------------------------------------

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const source = $(button.dataset.copy);
    if (!source) return;
    const text = "value" in source && source.tagName !== "PRE" ? source.value : source.textContent;
    let copied = false;
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        copied = true;
      }
    } catch (_) { copied = false; }
    if (!copied && typeof source.select === "function") {
      source.select();
      copied = document.execCommand("copy");
    }
    const label = $("span", button) || button;
    const before = label.textContent;
    label.textContent = copied ? "Copied" : "Select and copy";
    button.dataset.copied = copied ? "yes" : "no";
    setTimeout(() => { label.textContent = before; }, 2000);
  });

  // --- filters submit on change ------------------------------------------------------------------

  document.addEventListener("change", (event) => {
    if (event.target.matches("[data-autosubmit]")) event.target.form.requestSubmit();
  });

  // --- live install progress ---------------------------------------------------------------------

  const watching = new Map();
  // The newest snapshot seen per install. Snapshots only move forward (queued, running, then an
  // end; bytes done never fall), so an older one never overwrites a newer one: not from a late
  // event, and not from a region refresh whose HTML was rendered before the last event arrived.
  const latest = new Map();
  const STATE_RANK = { queued: 0, running: 1 };

  function progressRank(state, completed) {
    return [state in STATE_RANK ? STATE_RANK[state] : 2, Number(completed) || 0];
  }

  function olderThan(a, b) {
    return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
  }

  function applyInstall(data) {
    const known = latest.get(data.id);
    const rank = progressRank(data.state, data.completed);
    if (known && olderThan(rank, progressRank(known.state, known.completed))) return;
    latest.set(data.id, data);
    const item = document.querySelector(`[data-install="${CSS.escape(data.id)}"]`);
    if (!item) return;
    if (olderThan(rank, progressRank(item.dataset.state, item.dataset.completed))) return;
    item.dataset.state = data.state;
    item.dataset.completed = data.completed;
    item.className = `install install-${data.state}`;
    const bar = $("[data-field=bar]", item);
    if (bar) bar.value = data.bar;
    const percent = $("[data-field=percent_text]", item);
    if (percent) percent.textContent = data.percent_text;
    const label = $("[data-field=label]", item);
    if (label) {
      label.textContent = data.label;
      label.className = `install-label ${data.state === "failed" ? "text-error" : "muted"}`;
    }
    const state = $("[data-field=state]", item);
    if (state) {
      state.textContent = data.state.charAt(0).toUpperCase() + data.state.slice(1);
      state.className = `pill pill-${data.state}`;
    }
    if (!data.active) $$("form", item).forEach((form) => form.remove());
  }

  function watchInstalls() {
    $$("[data-install]").forEach((item) => {
      const id = item.dataset.install;
      const active = item.dataset.state === "queued" || item.dataset.state === "running";
      if (!active || watching.has(id)) return;
      const source = new EventSource(`/console/events/installs/${encodeURIComponent(id)}`);
      watching.set(id, source);
      source.addEventListener("progress", (event) => applyInstall(JSON.parse(event.data)));
      source.addEventListener("end", (event) => {
        applyInstall(JSON.parse(event.data));
        source.close();
        watching.delete(id);
      });
      source.onerror = () => {
        // The stream ends after the final event; anything else is retried by EventSource itself.
        if (source.readyState === EventSource.CLOSED) watching.delete(id);
      };
    });
  }

  // --- live fleet refresh ------------------------------------------------------------------------

  let refreshing = false;
  let refreshAgain = false;

  async function refreshRegions() {
    if (refreshing) { refreshAgain = true; return; }
    if ($("dialog[open]")) {
      // Do not pull a form out from under the admin; try again once the dialog closes.
      $("dialog[open]").addEventListener("close", refreshRegions, { once: true });
      return;
    }
    refreshing = true;
    try {
      const response = await fetch(window.location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (!response.ok || response.redirected) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      $$("[data-region]").forEach((region) => {
        const replacement = fresh.querySelector(`[data-region="${region.dataset.region}"]`);
        if (replacement) region.replaceWith(document.adoptNode(replacement));
      });
      const subtitle = fresh.querySelector(".page-head p");
      if (subtitle && $(".page-head p")) $(".page-head p").replaceWith(document.adoptNode(subtitle));
      latest.forEach((data) => applyInstall(data));  // the refresh may predate the last event
      watchInstalls();
    } finally {
      refreshing = false;
      if (refreshAgain) { refreshAgain = false; refreshRegions(); }
    }
  }

  function watchFleet() {
    if (document.body.dataset.live !== "fleet") return;
    const source = new EventSource("/console/events/fleet");
    source.addEventListener("changed", () => refreshRegions());
  }

  document.addEventListener("DOMContentLoaded", () => {
    watchInstalls();
    watchFleet();
  });
})();
