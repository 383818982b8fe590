// kohya_wrap web app: live updates (server-sent events) and form posts. No framework, no build step.
"use strict";

const csrfToken = () => document.querySelector('meta[name="csrf-token"]').content;

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: JSON.stringify(body || {}),
    credentials: "same-origin",
  });
  let data;
  try {
    data = await response.json();
  } catch (e) {
    data = { ok: false, errors: [(await response.text()) || `HTTP ${response.status}`] };
  }
  return data;
}

function toast(text, bad) {
  const box = document.getElementById("toast");
  const line = document.createElement("div");
  line.textContent = text;
  if (bad) line.className = "bad";
  box.appendChild(line);
  setTimeout(() => line.remove(), 6000);
}

function fillList(id, lines) {
  const list = document.getElementById(id);
  if (!list) return;
  list.replaceChildren(...(lines || []).map((text) => {
    const item = document.createElement("li");
    item.textContent = text;
    return item;
  }));
}

function clock(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.floor(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(r)}` : `${two(m)}:${two(r)}`;
}

function showSummary(root, run) {
  const set = (field, text) => {
    const el = root.querySelector(`[data-field="${field}"]`);
    if (el) el.textContent = text;
  };
  const status = root.querySelector('[data-field="status"]');
  if (status) { status.textContent = run.status; status.className = `status ${run.status}`; }
  const inTable = root.tagName === "TR";
  set("epoch", inTable ? `${run.epoch ?? "–"} / ${run.epochs}` : `${run.epoch ?? "–"}`);
  set("step", inTable ? `${run.step ?? "–"} / ${run.total_steps}` : `${run.step ?? "–"}`);
  set("loss", run.loss === null ? "–" : run.loss.toFixed(4));
  set("eta", clock(run.eta_s));
  set("reason", run.reason || "");
  const bar = root.querySelector('[data-field="bar"]');
  if (bar) { bar.max = run.total_steps || 1; bar.value = run.step || 0; }
}

function runsPage() {
  const source = new EventSource("/events/runs");
  source.onmessage = (message) => {
    const runs = JSON.parse(message.data);
    const known = new Set([...document.querySelectorAll("#runs-table tbody tr")].map((tr) => tr.dataset.run));
    if (runs.some((run) => !known.has(run.id))) { source.close(); location.reload(); return; }
    for (const run of runs) {
      const row = document.querySelector(`#runs-table tr[data-run="${CSS.escape(run.id)}"]`);
      if (row) showSummary(row, run);
    }
  };
}

function runPage() {
  const live = document.getElementById("run-live");
  const id = live.dataset.run;
  let outputs = Number(live.dataset.outputs);
  let status = live.dataset.status;
  const source = new EventSource(`/events/runs/${encodeURIComponent(id)}`);
  source.onmessage = async (message) => {
    const run = JSON.parse(message.data);
    showSummary(live, run);
    // A new LoRA or sample, or a change of status, redraws the report part (samples grid, loss, files).
    if (run.outputs !== outputs || run.status !== status) {
      outputs = run.outputs;
      status = run.status;
      const response = await fetch(`/runs/${encodeURIComponent(id)}/report`, { credentials: "same-origin" });
      if (response.ok) document.getElementById("report").innerHTML = await response.text();
    }
  };
  // The buttons live in the report part, which is redrawn: one listener on the page serves them all.
  document.getElementById("report").addEventListener("click", async (event) => {
    const button = event.target.closest("[data-action]");
    if (!button) return;
    button.disabled = true;
    const result = await post(`/runs/${encodeURIComponent(id)}/${button.dataset.action}`);
    if (result.ok) toast(`${button.textContent}: ${result.message}`);
    else toast(result.errors.join("\n"), true);
    const response = await fetch(`/runs/${encodeURIComponent(id)}/report`, { credentials: "same-origin" });
    if (response.ok) document.getElementById("report").innerHTML = await response.text();
  });
}

function newRunPage() {
  const form = document.getElementById("settings");
  const preset = form.dataset.preset;
  document.getElementById("preset").addEventListener("change", (event) => {
    location.href = `/new?preset=${encodeURIComponent(event.target.value)}`;
  });
  const values = () => {
    const result = {};
    for (const el of form.querySelectorAll("input, select, textarea")) result[el.name] = el.value;
    return result;
  };
  let sequence = 0;
  const check = async () => {
    const mine = ++sequence;
    document.getElementById("check-state").textContent = "Checking…";
    const result = await post("/new/check", { preset, values: values() });
    if (mine !== sequence) return; // a newer check is on its way
    for (const el of form.querySelectorAll(".field")) el.classList.remove("invalid");
    for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
    const general = [];
    for (const line of result.errors) {
      const key = line.split(":", 1)[0].trim();
      const slot = form.querySelector(`[data-error-for="${CSS.escape(key)}"]`);
      if (slot) {
        slot.textContent = line.slice(key.length + 1).trim();
        slot.closest(".field").classList.add("invalid");
      }
      general.push(line);
    }
    fillList("check-errors", general);
    fillList("check-warnings", result.warnings.map((w) => `warning: ${w}`));
    fillList("check-plan", result.plan);
    document.getElementById("check-state").textContent = result.ok ? "ok: the config validates" : `${result.errors.length} error(s)`;
    document.getElementById("check-state").className = result.ok ? "" : "muted";
  };
  let timer = null;
  form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 250); });
  form.addEventListener("change", () => { clearTimeout(timer); timer = setTimeout(check, 50); });
  check();
  document.getElementById("save").addEventListener("click", async () => {
    const queue = document.getElementById("save-queue");
    const priority = document.getElementById("save-priority");
    const result = await post("/new/save", {
      preset, values: values(), path: document.getElementById("save-path").value,
      queue: queue ? queue.checked : false, priority: priority ? priority.value : "0",
      grid: document.getElementById("save-grid").value,
    });
    fillList("save-errors", result.ok ? [] : result.errors);
    const out = document.getElementById("save-result");
    out.replaceChildren();
    if (!result.ok) return;
    const parts = [];
    if (result.saved) parts.push(`saved ${result.saved}`);
    out.textContent = parts.join("; ");
    const links = result.run ? [[result.run, `queued as job ${result.job}: ${result.run}`]]
      : (result.runs || []).map((run, i) => [run, `job ${result.jobs[i]}: ${run}`]);
    if (result.sweep) out.append(`${parts.length ? "; " : ""}sweep ${result.sweep} queued: `);
    for (const [run, text] of links) {
      const link = document.createElement("a");
      link.href = `/runs/${encodeURIComponent(run)}`;
      link.textContent = text;
      if (out.textContent) out.append("; ");
      out.append(link);
    }
  });
}

function datasetPage() {
  const root = document.getElementById("dataset");
  const dir = root.dataset.dir;
  for (const button of document.querySelectorAll("[data-save-caption]")) {
    button.addEventListener("click", async () => {
      const name = button.dataset.saveCaption;
      const text = document.querySelector(`[data-caption-for="${CSS.escape(name)}"]`).value;
      const out = document.querySelector(`[data-result-for="${CSS.escape(name)}"]`);
      const result = await post("/dataset/caption", { dir, name, caption: text });
      if (!result.ok) { out.textContent = result.errors.join(" "); out.className = "result bad"; return; }
      out.className = "result";
      out.textContent = result.changed ? (result.backup ? `saved; the old caption is in ${result.backup}` : "saved") : "unchanged";
    });
  }
  const bulk = async (apply) => {
    const result = await post("/dataset/edit", {
      dir, apply,
      remove: document.getElementById("bulk-remove").value,
      replace: document.getElementById("bulk-replace").value,
      prune: document.getElementById("bulk-prune").checked,
    });
    fillList("bulk-errors", result.ok ? [] : result.errors);
    if (!result.ok) return;
    const emptied = result.emptied.length ? `; ${result.emptied.length} would be left empty and stay as they are` : "";
    document.getElementById("bulk-result").textContent = result.applied
      ? `changed ${result.changes} of ${result.of} captions; originals backed up in ${result.backup}`
      : `${result.changes} of ${result.of} captions would change${emptied}`;
    if (result.applied) setTimeout(() => location.reload(), 1500);
  };
  document.getElementById("bulk-preview").addEventListener("click", () => bulk(false));
  document.getElementById("bulk-apply").addEventListener("click", () => bulk(true));
  document.getElementById("tag-start").addEventListener("click", async () => {
    const result = await post("/dataset/tag", { dir, overwrite: document.getElementById("tag-overwrite").checked });
    const out = document.getElementById("tag-result");
    if (!result.ok) { out.textContent = result.errors.join(" "); return; }
    const bar = document.getElementById("tag-progress");
    bar.hidden = false;
    const source = new EventSource(`/events/tasks/${result.task}`);
    source.onmessage = (message) => {
      const task = JSON.parse(message.data);
      bar.max = task.total || 1;
      bar.value = task.done;
      out.textContent = task.status === "running" ? `${task.title}: ${task.done} / ${task.total}` : task.lines.join("; ");
      if (task.status !== "running") { source.close(); if (task.status === "done") setTimeout(() => location.reload(), 1500); }
    };
  });
}

function queuePage() {
  for (const button of document.querySelectorAll("[data-job-action]")) {
    button.addEventListener("click", async () => {
      const result = await post(`/queue/${button.dataset.job}/${button.dataset.jobAction}`);
      fillList("queue-errors", result.ok ? [] : result.errors);
      if (result.ok) location.reload();
    });
  }
  for (const button of document.querySelectorAll("[data-priority-set]")) {
    const input = document.querySelector(`[data-priority-job="${button.dataset.prioritySet}"]`);
    const set = async () => {
      const result = await post(`/queue/${button.dataset.prioritySet}/priority`, { priority: input.value });
      fillList("queue-errors", result.ok ? [] : result.errors);
      if (result.ok) location.reload();
    };
    button.addEventListener("click", set);
    input.addEventListener("keydown", (event) => { if (event.key === "Enter") set(); });
  }
  const toggle = document.getElementById("pause-toggle");
  toggle.addEventListener("click", async () => {
    const result = await post(toggle.dataset.paused === "true" ? "/queue/resume" : "/queue/pause");
    fillList("queue-errors", result.ok ? [] : result.errors);
    if (result.ok) location.reload();
  });
  let previous = null;
  const source = new EventSource("/events/queue");
  source.onmessage = (message) => {
    // The page is rendered on the server: a change in the queue reloads it (a reconnect alone does not).
    // A priority being typed is not thrown away: the reload waits until the field loses focus.
    if (previous !== null && message.data !== previous) {
      source.close();
      const field = document.activeElement;
      if (field && field.matches("input.priority")) field.addEventListener("blur", () => location.reload(), { once: true });
      else location.reload();
      return;
    }
    previous = message.data;
  };
}

function comparePage() {
  document.getElementById("compare-go").addEventListener("click", async () => {
    const runs = [...document.querySelectorAll('input[name="run"]:checked')].map((el) => el.value);
    const sweep = document.getElementById("compare-sweep");
    const button = document.getElementById("compare-go");
    button.disabled = true;
    const result = await post("/compare", {
      runs, sweep: sweep ? sweep.value : "", epoch: document.getElementById("compare-epoch").value,
    });
    button.disabled = false;
    fillList("compare-errors", result.ok ? [] : result.errors);
    if (result.ok) location.href = `/compare?sheet=${encodeURIComponent(result.name)}`;
  });
}

const pages = { runs: runsPage, run: runPage, new: newRunPage, dataset: datasetPage, queue: queuePage, compare: comparePage };
document.addEventListener("DOMContentLoaded", () => {
  const page = pages[document.body.dataset.page];
  if (page) page();
});
