// The operator console's live parts: the jobs table and one job's page poll their JSON every 1.5 s and
// redraw (text only: no HTML from data), and the re-drive button posts with the CSRF token in a header.
"use strict";
(function () {
  var PERIOD = 1500;
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "className") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  function td(label, children) { return el("td", { "data-label": label }, children); }
  function text(s) { return document.createTextNode(s == null ? "" : String(s)); }
  function progress(pct, label) {
    return el("progress", { max: "100", value: String(pct), "aria-label": label, text: pct + "%" });
  }
  function badge(cls, s) { return el("span", { className: "badge " + cls, text: s }); }

  function poll(url, draw) {
    var live = document.getElementById("live");
    function tick() {
      if (document.hidden) return setTimeout(tick, PERIOD);
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (r.status === 401) { window.location.href = "/console/login"; throw new Error("logged out"); }
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (doc) { draw(doc); if (live) live.textContent = "Live: updated " + new Date().toLocaleTimeString(); })
        .catch(function (err) { if (live) live.textContent = "Not updating (" + err.message + "); retrying."; })
        .then(function () { setTimeout(tick, PERIOD); });
    }
    setTimeout(tick, PERIOD);
  }

  function jobRow(j) {
    var kind = j.operationType + (j.guardianId ? " · " + j.guardianId : "") +
      (j.missingGuardianId ? " for " + j.missingGuardianId : "");
    var state = td("State", [badge("job-" + j.status, j.status)]);
    state.firstChild.setAttribute("data-field", "status");
    if (j.stuck) {
      state.appendChild(text(" "));
      state.appendChild(badge("stuck", "stuck"));
      if (j.reconcilerNote) state.appendChild(el("div", { className: "note", text: j.reconcilerNote }));
    }
    var c = j.chunks || {};
    var timing = (j.createdAt || "").slice(0, 19) +
      (j.durationSeconds != null ? " · " + j.durationSeconds.toFixed(1) + " s" : "");
    var callback = j.callbackUrl ? (j.callback ? j.callback.state : "pending") : "—";
    var pct = el("span", { className: "pct", "data-field": "pct", text: j.progressPercent + "%" });
    return el("tr", { "data-job": j.jobId }, [
      td("Job", [el("a", { href: "/console/jobs/" + j.jobId, text: j.jobId.slice(0, 8) })]),
      td("Election", [text(j.electionId)]),
      td("Kind", [text(kind)]),
      state,
      td("Progress", [progress(j.progressPercent, "progress of job " + j.jobId.slice(0, 8)), text(" "), pct]),
      td("Chunks", [text([c.DONE, c.FAILED, c.RUNNING, c.PENDING].join(" / "))]),
      td("Priority", [text(j.priority)]),
      td("Outbox", [text(j.outboxBacklog)]),
      td("Callback", [text(callback)]),
      td("Timing", [text(timing)]),
    ]);
  }

  var jobs = document.getElementById("jobs");
  if (jobs) {
    poll(jobs.getAttribute("data-poll"), function (rows) {
      var body = el("tbody", {}, rows.map(jobRow));
      if (!rows.length) body.appendChild(el("tr", { className: "empty" }, [el("td", { colspan: "10", text: "No job matches." })]));
      jobs.replaceChild(body, jobs.tBodies[0]);
    });
  }

  function set(id, value) { var e = document.getElementById(id); if (e) e.textContent = value == null ? "" : String(value); }
  function show(id, on) { var e = document.getElementById(id); if (e) e.hidden = !on; }

  var job = document.getElementById("job");
  if (job) {
    var tasks = document.getElementById("tasks");
    poll(job.getAttribute("data-poll"), function (j) {
      var s = document.getElementById("job-status");
      s.textContent = j.status;
      s.className = "badge job-" + j.status;
      var bar = document.getElementById("job-progress");
      bar.value = j.progressPercent;
      bar.textContent = j.progressPercent + "%";
      set("job-pct", j.progressPercent + "%");
      set("c-done", j.chunks.DONE); set("c-failed", j.chunks.FAILED);
      set("c-running", j.chunks.RUNNING); set("c-pending", j.chunks.PENDING);
      set("c-outbox", j.outboxBacklog);
      show("stuck", j.stuck);
      set("reconciler-note", j.reconcilerNote); show("reconciler-note", !!j.reconcilerNote);
      set("job-error", j.errorMessage); show("job-error", !!j.errorMessage);
      show("redrive-form", j.chunks.FAILED > 0);
      var body = el("tbody", {}, (j.tasks || []).map(function (t) {
        return el("tr", { "data-task": String(t.taskId) }, [
          td("Unit", [text(t.kind + " " + t.number)]),
          td("State", [badge("task-" + t.state, t.state)]),
          td("Attempts", [text(t.attempts)]),
          td("Run time", [text(t.runSeconds != null ? t.runSeconds.toFixed(2) + " s" : "—")]),
          el("td", { "data-label": "Last error", className: "error", text: t.lastError || "" }),
        ]);
      }));
      tasks.replaceChild(body, tasks.tBodies[0]);
    });
    var form = document.getElementById("redrive-form");
    if (form) {
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var button = document.getElementById("redrive");
        button.disabled = true;
        fetch(form.action, { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf, Accept: "application/json" } })
          .then(function (r) { return r.json().then(function (d) { return [r.status, d]; }); })
          .then(function (res) {
            set("action-result", res[0] === 200 ? "Re-drove " + res[1].redriven + " chunk(s)." : "Refused: " + (res[1].detail || res[1].message || res[0]));
          })
          .catch(function (err) { set("action-result", "Failed: " + err.message); })
          .then(function () { button.disabled = false; });
      });
    }
  }
})();
