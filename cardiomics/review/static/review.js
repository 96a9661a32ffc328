// Provenance panel: a click on any number fetches its provenance and audit lines (no framework).
(function () {
  "use strict";
  const dataEl = document.getElementById("page-data");
  if (!dataEl) return;
  const page = JSON.parse(dataEl.textContent);
  const panel = document.getElementById("prov-panel");
  const $ = (id) => document.getElementById(id);

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function auditText(r) {
    const parts = ["#" + r.seq, r.ts, r.event, "by " + r.actor];
    for (const k of ["tool", "tool_version", "checkpoint", "decision", "version", "comment", "report_sha256", "result_id", "models"]) {
      if (r[k] !== undefined && r[k] !== "" && r[k] !== null) parts.push(k + "=" + (Array.isArray(r[k]) ? r[k].join(",") : r[k]));
    }
    return parts.join("  ");
  }

  async function show(resultId, label) {
    const url = "/runs/" + encodeURIComponent(page.run_id) + "/provenance/" + encodeURIComponent(resultId) +
      (page.version ? "?version=" + page.version : "");
    $("prov-what").textContent = label ? "— " + label : "";
    $("prov-json").href = url;
    panel.hidden = false;
    panel.dataset.state = "loading";
    const resp = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    const body = await resp.json();
    for (const id of ["prov-meta", "prov-models", "prov-inputs", "prov-audit", "prov-approvals"]) clear($(id));
    if (!resp.ok) {
      $("prov-meta").appendChild(el("dd", body.message || resp.statusText, "error"));
      panel.dataset.state = "error";
      return;
    }
    const p = body.provenance;
    for (const [k, v] of [["Tool", p.tool], ["Tool version", p.tool_version], ["Result id", p.result_id],
                          ["Seed", p.seed], ["Duration", p.duration_s + " s"]]) {
      $("prov-meta").appendChild(el("dt", k));
      $("prov-meta").appendChild(el("dd", v, k === "Result id" ? "mono" : ""));
    }
    if (!p.models.length) $("prov-models").appendChild(el("li", "no model (deterministic computation)", "muted"));
    for (const m of p.models) {
      const li = el("li", null, "model-card");
      li.appendChild(el("strong", m.id + " " + m.version));
      li.appendChild(el("div", "weights SHA-256 " + m.weights_sha256, "mono small"));
      $("prov-models").appendChild(li);
    }
    for (const [k, v] of Object.entries(p.input_hashes)) $("prov-inputs").appendChild(el("li", k + ": " + v));
    $("prov-params").textContent = JSON.stringify(p.parameters, null, 1);
    if (!body.audit.length) $("prov-audit").appendChild(el("li", "no audit line names this result", "error"));
    for (const r of body.audit) $("prov-audit").appendChild(el("li", auditText(r), "audit-line"));
    if (!body.approvals.length) $("prov-approvals").appendChild(el("li", "no decision yet", "muted"));
    for (const r of body.approvals) $("prov-approvals").appendChild(el("li", auditText(r), "approval-line"));
    panel.dataset.state = "ready";
  }

  document.addEventListener("click", (ev) => {
    const btn = ev.target.closest("button.num");
    if (btn) { ev.preventDefault(); show(btn.dataset.result, btn.dataset.label); }
  });
  const close = $("prov-close");
  if (close) close.addEventListener("click", () => { panel.hidden = true; });
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && panel) panel.hidden = true; });

  // a comment is required to request changes: say so before the round trip
  const form = document.getElementById("signoff-form");
  if (form) form.addEventListener("submit", (ev) => {
    const which = ev.submitter && ev.submitter.value;
    const comment = document.getElementById("comment");
    if (which === "changes-requested" && !comment.value.trim()) {
      ev.preventDefault();
      comment.setCustomValidity("Say what should change.");
      comment.reportValidity();
      comment.addEventListener("input", () => comment.setCustomValidity(""), { once: true });
    }
  });
})();
