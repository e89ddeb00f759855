// Reader study client: the list page (/r/<token>) and one case per page
// (/r/<token>/case/<round>/<position>). Every answer is sent the moment it is given and
// retried until the server acknowledges it; keys 1-5 answer, Enter goes on. Opening a
// round-2 case makes the reader's round-1 answers final (the server enforces it).
"use strict";

(function () {
  const parts = location.pathname.split("/").filter(Boolean);
  const token = decodeURIComponent(parts[1] || "");
  const base = "/r/" + encodeURIComponent(token);
  const app = document.getElementById("app");
  const statusEl = document.getElementById("status");

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function setStatus(text, kind) {
    statusEl.textContent = text;
    statusEl.className = kind || "";
  }

  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; }
  }

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers = Object.assign({ "Authorization": "Bearer " + token }, opts.headers);
    if (opts.json !== undefined) {
      opts.body = JSON.stringify(opts.json);
      opts.headers["Content-Type"] = "application/json";
      delete opts.json;
    }
    const res = await fetch(path, opts);
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok) throw new ApiError(res.status, (data && data.detail) || res.statusText);
    return data;
  }

  function caseUrl(slot) { return base + "/case/" + slot.round + "/" + slot.position; }
  function go(url) { location.assign(url); }

  function showError(err) {
    app.replaceChildren(
      el("p", { class: "message" }, String(err.message || err)),
      el("p", {}, el("a", { href: base }, "Back to the list")));
  }

  // ---------------------------------------------------------------- list page
  async function listView() {
    let info;
    try { info = await api("/api/reader"); } catch (err) { showError(err); return; }
    document.getElementById("who").textContent = info.reader;
    const children = [];
    const status = {};
    for (const r of info.rounds) status[r.round] = r.status;
    if (info.finished) {
      children.push(el("h1", {}, "All done — thank you!"),
        el("p", {}, "Every case has both answers. You can still change your answers of the last round."));
    } else {
      const starting = status[info.next.round] === "ready";
      const label = info.next.round === 1 && info.rounds[0].done === 0
        ? "Start"
        : (starting ? "Start round " : "Continue with round ") + info.next.round + ", case " + (info.next.position + 1);
      children.push(el("p", {},
        el("button", { class: "primary", id: "continue", onclick: () => go(caseUrl(info.next)) }, label),
        el("span", { class: "hint" }, "  (Enter)")));
      if (starting) {
        children.push(el("p", { class: "message", id: "final-note" },
          "Round " + (info.next.round - 1) + " is complete. You can still review and change its " +
          "answers now; once you open round " + info.next.round + " they are final."));
      }
    }
    const titles = { locked: " (opens when round 1 is finished)", final: " (answers final)",
                     ready: " (ready: opening it makes round 1 final)" };
    for (const r of info.rounds) {
      const closed = r.status === "locked" || r.status === "final";
      const grid = el("div", { class: "grid" });
      for (const s of r.slots) {
        const state = s.answered >= info.questions ? "done" : (s.answered ? "partial" : "");
        grid.append(closed
          ? el("span", { class: "locked " + state }, s.number)
          : el("a", { href: caseUrl({ round: r.round, position: s.position }), class: state,
                      title: state || "not answered" }, s.number));
      }
      children.push(el("section", { class: "round", "data-round": r.round, "data-status": r.status },
        el("h2", {}, "Round " + r.round + (titles[r.status] || "")),
        el("div", {}, el("progress", { max: r.total, value: r.done }), " ",
          el("span", { class: "count" }, r.done + " / " + r.total + " cases answered")),
        grid));
    }
    app.replaceChildren(...children);
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && info.next) { ev.preventDefault(); go(caseUrl(info.next)); }
    });
  }

  // ---------------------------------------------------------------- case page
  async function caseView(round, position) {
    let c;
    try { c = await api("/api/reader/case/" + round + "/" + position); }
    catch (err) { showError(err); return; }
    api("/api/reader").then((i) => { document.getElementById("who").textContent = i.reader; })
      .catch(() => {});
    const answers = Object.assign({}, c.answers);    // latest value per question
    const saved = Object.assign({}, c.answers);      // acknowledged by the server
    const pending = {};                              // question -> true while sending
    const errors = {};
    let active = c.questions.findIndex((q) => !(q.id in answers));
    if (active < 0) active = 0;
    let wantNext = false;

    const message = el("div", { class: "message", id: "message" });
    const qNodes = c.questions.map((q, i) => {
      const buttons = [1, 2, 3, 4, 5].map((v) => el("button", {
        type: "button", "data-value": v, "aria-label": q.text + " " + v,
        onclick: () => { active = i; answer(q.id, v); },
      }, v));
      const state = el("span", { class: "qstate" });
      const node = el("div", { class: "question", "data-question": q.id,
                               onclick: () => { active = i; render(); } },
        el("div", { class: "text" }, (i + 1) + ". " + q.text),
        el("div", { class: "likert" }, el("span", { class: "anchor" }, "1 = " + q.anchors[0]),
          buttons, el("span", { class: "anchor" }, "5 = " + q.anchors[1]), state));
      return { q, node, buttons, state };
    });

    const complete = () => c.questions.every((q) => q.id in saved && saved[q.id] === answers[q.id]);
    const nextBtn = el("button", { class: "primary", id: "next", onclick: () => next() },
      c.next ? "Next case →" : "Finish round " + c.round);

    function render() {
      qNodes.forEach(({ q, node, buttons, state }, i) => {
        node.classList.toggle("active", i === active);
        buttons.forEach((b) => b.classList.toggle("chosen", Number(b.dataset.value) === answers[q.id]));
        if (errors[q.id]) { state.textContent = errors[q.id]; state.className = "qstate error"; }
        else if (pending[q.id]) { state.textContent = "saving…"; state.className = "qstate"; }
        else if (q.id in saved) { state.textContent = "saved ✓"; state.className = "qstate saved"; }
        else { state.textContent = ""; state.className = "qstate"; }
      });
      nextBtn.disabled = !complete();
      const sending = Object.values(pending).some(Boolean);
      if (sending) setStatus("saving…");
      else if (Object.keys(errors).length) setStatus("not saved", "bad");
      else if (Object.keys(saved).length) setStatus("all answers saved", "ok");
      else setStatus("");
    }

    async function send(qid) {
      let delay = 500;
      pending[qid] = true;
      render();
      while (true) {
        const value = answers[qid];
        try {
          await api("/api/reader/answers", { method: "PUT",
            json: { case: c.case, round: c.round, question: qid, value: value } });
          delete errors[qid];
          if (answers[qid] === value) { saved[qid] = value; break; }
          // the reader changed the answer meanwhile: send the newer value
        } catch (err) {
          if (err instanceof ApiError && err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429) {
            errors[qid] = "not saved: " + err.message;
            break;
          }
          errors[qid] = "connection problem — retrying";
          render();
          await new Promise((r) => setTimeout(r, delay));
          delay = Math.min(delay * 2, 5000);
        }
      }
      pending[qid] = false;
      render();
      if (wantNext && complete()) next();
    }

    function answer(qid, value) {
      answers[qid] = value;
      delete errors[qid];
      message.textContent = "";
      const idx = c.questions.findIndex((q) => q.id === qid);
      const firstOpen = c.questions.findIndex((q, i) => i > idx && !(q.id in answers));
      if (firstOpen >= 0) active = firstOpen;
      if (!pending[qid]) send(qid); else render();
    }

    function next() {
      if (!c.questions.every((q) => q.id in answers)) {
        message.textContent = "Answer both questions first (keys 1–5).";
        wantNext = false;
        return;
      }
      if (!complete()) {
        message.textContent = "Saving your answers…";
        wantNext = true;
        return;
      }
      go(c.next ? caseUrl(c.next) : base);
    }

    const visuals = [el("figure", {}, el("img", { src: c.image, alt: "image", class: "image" }),
                                 el("figcaption", {}, "Image"))];
    for (const v of c.visuals) {
      visuals.push(el("figure", { "data-kind": v.kind },
        el("img", { src: v.url, alt: v.caption }), el("figcaption", {}, v.caption)));
    }
    app.replaceChildren(
      el("div", { class: "caseinfo" },
        el("span", {}, "Round " + c.round + " · Case " + c.number + " of " + c.total),
        el("span", { class: "method", id: "method" }, c.method_label),
        el("span", {}, "Study number " + c.case)),
      el("div", { class: "caseinfo" },
        el("span", {}, "Target: ", el("strong", { id: "target" }, c.target)),
        el("span", { class: "pred", id: "prediction" }, c.prediction)),
      el("div", { class: "visuals" }, visuals),
      ...qNodes.map((n) => n.node),
      message,
      el("nav", { class: "steps" },
        c.previous ? el("a", { href: caseUrl(c.previous) }, "← Previous") : null,
        el("a", { href: base }, "Case list"), nextBtn),
      el("div", { class: "hint" },
        "Keys: 1–5 answer the highlighted question · ↑/↓ change question · Enter next case"));
    render();

    document.addEventListener("keydown", (ev) => {
      if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
      if (ev.key >= "1" && ev.key <= "5") {
        ev.preventDefault();
        answer(c.questions[active].id, Number(ev.key));
      } else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        const n = c.questions.length;
        active = (active + (ev.key === "ArrowDown" ? 1 : n - 1)) % n;
        render();
      } else if (ev.key === "Enter") {
        ev.preventDefault();
        next();
      }
    });
    window.addEventListener("beforeunload", (ev) => {
      if (Object.values(pending).some(Boolean)) { ev.preventDefault(); ev.returnValue = ""; }
    });
  }

  if (parts[2] === "case") caseView(Number(parts[3]), Number(parts[4]));
  else listView();
})();
