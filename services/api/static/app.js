// imgrestore status page: polls the JSON API and renders recent batches and jobs with before/after thumbnails.
// The token comes from the URL fragment (#token=..., which browsers never send to the server) or the login form,
// lives in sessionStorage only, and is sent as an Authorization header; thumbnails are fetched with that header
// and shown from blob: URLs, so the token never appears in a URL the server sees.
(function () {
  "use strict";

  var TOKEN_KEY = "imgrestore.token";
  var POLL_MS = 3000;
  var THUMB_SIZE = 144;
  var thumbs = new Map(); // "<job id>:<which>:<finished_at>" -> <img> element, reused across refreshes
  var timer = null;

  function $(id) { return document.getElementById(id); }

  function takeTokenFromFragment() {
    var match = /(?:^|&)token=([^&]+)/.exec(location.hash.replace(/^#/, ""));
    if (match) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
      // Drop it from the address bar and the history entry, so it is not shared by copying the URL.
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  function request(path) {
    return fetch(path, { headers: { Authorization: "Bearer " + token() }, cache: "no-store",
                         credentials: "omit", referrerPolicy: "no-referrer" });
  }

  function getJSON(path) {
    return request(path).then(function (response) {
      if (response.status === 401) { var e = new Error("token refused"); e.unauthorized = true; throw e; }
      return response.json().then(function (body) {
        if (!response.ok) { throw new Error((body.error && body.error.message) || ("HTTP " + response.status)); }
        return body;
      });
    });
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { node.textContent = attrs[key]; } else { node.setAttribute(key, attrs[key]); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }

  function seconds(from, to) {
    if (!from || !to) { return null; }
    return (Date.parse(to) - Date.parse(from)) / 1000;
  }

  function duration(s) {
    if (s === null || isNaN(s)) { return "–"; }
    if (s < 1) { return Math.round(s * 1000) + " ms"; }
    if (s < 120) { return s.toFixed(1) + " s"; }
    return Math.round(s / 60) + " min";
  }

  function when(iso) {
    if (!iso) { return "–"; }
    var d = new Date(iso);
    return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
                                         second: "2-digit" });
  }

  function badge(state) { return el("span", { "class": "state state-" + state, text: state }); }

  function thumbnail(job, which) {
    if (which === "output" && job.state !== "succeeded") { return el("span", { "class": "muted", text: "–" }); }
    // An output changes when a job is re-run (new finished_at); an input does not.
    var key = job.id + ":" + which + (which === "output" ? ":" + job.finished_at : "");
    var img = thumbs.get(key);
    if (img) { return img; }
    img = el("img", { alt: which + " of " + job.id, "data-job-id": job.id, "data-which": which,
                      "data-loaded": "false", width: "72" });
    thumbs.set(key, img);
    request("/v1/jobs/" + encodeURIComponent(job.id) + "/thumbnail/" + which + "?size=" + THUMB_SIZE)
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.blob();
      })
      .then(function (blob) {
        img.addEventListener("load", function () {
          img.setAttribute("data-loaded", "true");
          img.setAttribute("data-natural-width", String(img.naturalWidth));
          img.setAttribute("data-natural-height", String(img.naturalHeight));
        });
        img.src = URL.createObjectURL(blob);
      })
      .catch(function (error) {
        // Words, not an <img> without a picture: browsers draw that as a broken-image icon (failed rows).
        var none = el("span", { "class": "muted no-preview", "data-job-id": job.id, "data-which": which,
                                "data-loaded": "error", text: "no preview",
                                title: "no preview: " + error.message });
        thumbs.set(key, none); // not retried: a new state (finished_at) gets a new key
        if (img.parentNode) { img.parentNode.replaceChild(none, img); }
      });
    return img;
  }

  function fill(pct) {
    var span = el("span");
    span.style.width = pct + "%"; // CSSOM, not a style attribute: the page's CSP forbids inline styles
    return span;
  }

  function renderBatches(batches) {
    var body = el("tbody");
    batches.forEach(function (b) {
      var pct = Math.round(b.progress * 100);
      body.appendChild(el("tr", { "data-batch-id": b.id, "data-state": b.state }, [
        el("td", { "class": "id", text: b.id.slice(0, 12), title: b.id }),
        el("td", { text: b.kind }),
        el("td", { text: b.task + (b.task === "denoise" ? " · " + b.profile : "") }),
        el("td", {}, [badge(b.state)]),
        el("td", {}, [el("div", { "class": "bar", title: pct + "%" }, [fill(pct)]),
                      el("span", { "class": "muted", text: pct + "% of " + b.total })]),
        el("td", { text: String(b.counts.succeeded) }),
        el("td", { "class": b.counts.failed ? "error" : "", text: String(b.counts.failed) }),
        el("td", { text: String(b.counts.pending) }),
        el("td", { text: when(b.created_at) })
      ]));
    });
    $("batches").replaceChild(body, $("batches").tBodies[0]);
    $("batches-empty").hidden = batches.length > 0;
  }

  function renderJobs(jobs) {
    var body = el("tbody");
    jobs.forEach(function (j) {
      var detail = j.error
        ? el("span", { "class": "error", text: j.error.type + ": " + j.error.message })
        : el("span", { "class": "url", text: j.input_url });
      body.appendChild(el("tr", { "data-job-id": j.id, "data-state": j.state }, [
        el("td", { "class": "thumb" }, [thumbnail(j, "input")]),
        el("td", { "class": "thumb" }, [thumbnail(j, "output")]),
        el("td", { "class": "id", text: j.id.slice(0, 12), title: j.id }),
        el("td", { text: j.task + (j.task === "denoise" ? " · " + j.profile : "") }),
        el("td", {}, [badge(j.state)]),
        el("td", { text: when(j.created_at) }),
        el("td", { text: duration(seconds(j.created_at, j.started_at)) }),
        el("td", { text: duration(seconds(j.started_at, j.finished_at)),
                   title: Object.keys(j.timings || {}).map(function (k) {
                     return k + " " + duration(j.timings[k]);
                   }).join(", ") }),
        el("td", { "class": "url" }, [detail])
      ]));
    });
    $("jobs").replaceChild(body, $("jobs").tBodies[0]);
    $("jobs-empty").hidden = jobs.length > 0;
    forgetThumbnails(jobs);
  }

  function forgetThumbnails(jobs) {
    // Previews of jobs no longer listed are dropped and their blob: URLs released, so memory stays bounded.
    var shown = new Set(jobs.map(function (j) { return j.id; }));
    thumbs.forEach(function (img, key) {
      if (!shown.has(key.split(":")[0])) {
        if (img.src) { URL.revokeObjectURL(img.src); }
        thumbs.delete(key);
      }
    });
  }

  function setStatus(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "muted";
  }

  function refresh() {
    return Promise.all([getJSON("/v1/batches?limit=20"), getJSON("/v1/jobs?limit=50")])
      .then(function (results) {
        renderBatches(results[0].batches);
        renderJobs(results[1].jobs);
        $("content").hidden = false;
        setStatus("updated " + new Date().toLocaleTimeString(), false);
      })
      .catch(function (error) {
        if (error.unauthorized) { showLogin("That token was refused; paste another one."); return; }
        setStatus("refresh failed: " + error.message, true);
      });
  }

  function start() {
    $("login").hidden = true;
    $("forget").hidden = false;
    refresh();
    if (timer === null) { timer = setInterval(refresh, POLL_MS); }
  }

  function showLogin(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (timer !== null) { clearInterval(timer); timer = null; }
    $("content").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    setStatus(message || "a token is needed", !!message);
  }

  $("login").addEventListener("submit", function (event) {
    event.preventDefault();
    var value = $("token").value.trim();
    $("token").value = "";
    if (value) { sessionStorage.setItem(TOKEN_KEY, value); start(); }
  });
  $("forget").addEventListener("click", function () { showLogin(); });

  takeTokenFromFragment();
  if (token()) { start(); } else { showLogin(); }
})();
