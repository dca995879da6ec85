/* autointerp report viewer: an index of all components and one page per component.
 *
 * Everything that comes from the run (tokens, labels, reasoning, layer and
 * component names) reaches the page through textContent or setAttribute on
 * elements built here; nothing from the run is ever parsed as HTML.
 * Data files are scripts that call AUTOINTERP_LAYER / AUTOINTERP_CHUNK,
 * because a page opened from file:// cannot fetch JSON.
 */
(function () {
  "use strict";

  var A = (window.AUTOINTERP = window.AUTOINTERP || {});
  var renderers = (A.extrasRenderers = A.extrasRenderers || {});

  /** Register how extras[name] is shown: fn(value, container, helpers). */
  A.registerExtras = function (name, fn) {
    if (typeof fn !== "function") throw new Error("AUTOINTERP.registerExtras(" + name + ", fn): fn must be a function");
    if (renderers[name]) throw new Error("an extras renderer named " + name + " is already registered");
    renderers[name] = fn;
  };

  // ---------------------------------------------------------------- DOM helpers

  var SVG = "http://www.w3.org/2000/svg";

  /* Bidirectional controls in run text (marks U+200E/F, embeddings and overrides U+202A-E,
   * isolates U+2066-9, U+061C) would reorder what the reader sees: a token "report\u202efdp.exe"
   * reads "reportexe.pdf", a label can read backwards. Every text from the run is shown with
   * them as visible escapes, "⟨U+202E⟩". */
  var BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

  function noBidi(text) {
    return String(text).replace(BIDI, function (c) {
      return "⟨U+" + ("000" + c.charCodeAt(0).toString(16).toUpperCase()).slice(-4) + "⟩";
    });
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) {
      for (var k in attrs) {
        if (!Object.prototype.hasOwnProperty.call(attrs, k) || attrs[k] == null) continue;
        if (k === "class") e.className = attrs[k];
        else e.setAttribute(k, k === "title" ? noBidi(attrs[k]) : String(attrs[k]));
      }
    }
    if (text != null) e.textContent = noBidi(text);
    return e;
  }

  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, String(attrs[k]));
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function fmt(x, digits) {
    if (x == null || (typeof x === "number" && !isFinite(x))) return "–";
    if (typeof x !== "number") return String(x);
    if (x === 0) return "0";
    var d = digits == null ? 3 : digits;
    var a = Math.abs(x);
    if (a >= 1e4 || a < 1e-3) return x.toExponential(Math.max(0, d - 1));
    return String(Number(x.toPrecision(d)));
  }

  function fmtRate(r) {
    if (r == null) return "–";
    if (r === 0) return "0 (never fired)";
    return fmt(r, 3) + " (" + fmt(100 * r, 3) + "%)";
  }

  function fmtInt(n) {
    return n == null ? "–" : Number(n).toLocaleString("en-US");
  }

  /* Whitespace made visible: a space is "·", a newline "↵", a tab "→". */
  var WS = { " ": "·", "\n": "↵", "\t": "→", "\r": "␍", "\u00a0": "⍽" };

  function appendVisible(parent, text) {
    var buf = "";
    for (var i = 0; i < text.length; i++) {
      var ch = text.charAt(i);
      if (Object.prototype.hasOwnProperty.call(WS, ch)) {
        if (buf) parent.appendChild(document.createTextNode(noBidi(buf)));
        buf = "";
        parent.appendChild(el("span", { class: "ws" }, WS[ch]));
      } else {
        buf += ch;
      }
    }
    if (buf) parent.appendChild(document.createTextNode(noBidi(buf)));
  }

  // a long key cut in its middle: the layer path's start and the end that tells
  // partners of one layer apart ("model.encoder.…act_fn.gelu:12"); the whole key is the title
  function shortKey(key, max) {
    if (key.length <= max) return key;
    var tail = Math.ceil((max - 1) * 0.6), head = max - 1 - tail;
    return key.slice(0, head) + "…" + key.slice(key.length - tail);
  }

  function componentHref(key) {
    return "#c/" + encodeURIComponent(key);
  }

  /* A bar chart of a list of numbers (used for histograms and generic extras). */
  function bars(values, opts) {
    opts = opts || {};
    var w = opts.width || 240, h = opts.height || 48, n = values.length || 1;
    var max = 0;
    for (var i = 0; i < values.length; i++) if (isFinite(values[i])) max = Math.max(max, Math.abs(values[i]));
    var s = svg("svg", { width: w, height: h, viewBox: "0 0 " + w + " " + h, class: "bars", role: "img" });
    if (opts.title) {
      var t = svg("title", {});
      t.textContent = opts.title;
      s.appendChild(t);
    }
    var bw = w / n;
    for (var j = 0; j < values.length; j++) {
      var v = isFinite(values[j]) ? Math.abs(values[j]) : 0;
      var bh = max > 0 ? (v / max) * (h - 2) : 0;
      var r = svg("rect", { x: j * bw + 0.5, y: h - bh, width: Math.max(1, bw - 1), height: bh, class: opts.highlight === j ? "bar hi" : "bar" });
      var tt = svg("title", {});
      tt.textContent = (opts.labels ? opts.labels[j] + ": " : "[" + j + "] ") + fmt(values[j], 4);
      r.appendChild(tt);
      s.appendChild(r);
    }
    return s;
  }

  var helpers = { el: el, svg: svg, bars: bars, fmt: fmt, appendVisible: appendVisible, componentHref: componentHref };
  A.helpers = helpers;

  // ---------------------------------------------------------------- data loading

  var manifest = null;
  var rows = []; // one per component: {key, li, pos, label, conf, rate, count, pct, scores}
  var byKey = new Map();
  var chunks = new Map();
  var waiting = new Map();

  window.AUTOINTERP_LAYER = function (li, d) {
    for (var i = 0; i < d.keys.length; i++) {
      var sc = {};
      for (var s in d.scores) sc[s] = d.scores[s][i];
      var row = {
        key: d.keys[i], li: li, pos: i, index: d.index[i], label: d.label[i], conf: d.conf[i],
        rate: d.rate[i], count: d.count[i], pct: d.pct[i], scores: sc, ch: d.ch[i], off: d.off[i],
        search: ((d.label[i] || "") + " " + d.keys[i]).toLowerCase(),
      };
      rows.push(row);
      byKey.set(row.key, row);
    }
  };

  /* A chunk holds the evidence as recorded (examples by column, table rows as arrays) and a
   * table of its distinct tokens, tt: [raw, text in a window, first in a window, alone], null = the
   * fallback (the raw token; the in-window text; the raw token); a token whose text depends on its
   * neighbours has a fifth entry, its bytes in hex: a run of such tokens reads as its bytes decoded
   * as UTF-8 one token at a time (the character on the token that completes it, U+FFFD for bytes
   * that never form one), and with d.sp a window's first text drops its leading space. Expanded
   * here into what the views draw, as page_data.expand_chunk does in Python. */
  function r3(a) { return a == null ? null : a ? Number(a.toPrecision(3)) : 0; }
  function f4(x) { return typeof x === "number" && x ? Number(x.toPrecision(4)) : x; }

  function hexBytes(h) {
    var b = new Uint8Array(h.length / 2);
    for (var i = 0; i < b.length; i++) b[i] = parseInt(h.substr(2 * i, 2), 16);
    return b;
  }

  function expandChunk(d) {
    var forms = new Map();
    (d.tt || []).forEach(function (r) {
      forms.set(r[0], r.length > 4 ? { bytes: hexBytes(r[4]), alone: r[3] } : { mid: r[1], first: r[2], alone: r[3] });
    });
    function alone(tok, id) {
      if (tok == null) return "⟨" + id + "⟩";
      var f = forms.get(tok);
      return f && f.alone != null ? f.alone : tok;
    }
    function texts(ex) {
      if (!ex.t || !ex.t.length) return (ex.i || []).map(function (id) { return "⟨" + id + "⟩"; });
      var out = [], dec = null, n = ex.t.length, runAtStart = false;
      for (var i = 0; i < n; i++) {
        var t = ex.t[i], f = typeof t === "string" ? forms.get(t) : { mid: "" };
        if (f && f.bytes) {
          if (!dec) dec = new TextDecoder("utf-8", { ignoreBOM: true });
          if (i === 0) runAtStart = true;
          out.push(dec.decode(f.bytes, { stream: true }));
          var next = i + 1 < n ? forms.get(ex.t[i + 1]) : null;
          if (!(next && next.bytes)) { out[i] += dec.decode(); dec = null; }
          continue;
        }
        var mid = f && f.mid != null ? f.mid : t;
        out.push(i === 0 && f && f.first != null ? f.first : mid);
      }
      if (d.sp && runAtStart && out[0].charAt(0) === " ") out[0] = out[0].slice(1);
      return out;
    }
    /* examples come by column: t (raw tokens), a, f, s, p, and i (token ids) where some have no strings */
    function examples(cols) {
      return ((cols && cols.t) || []).map(function (t, k) {
        return { t: texts({ t: t, i: cols.i ? cols.i[k] : [] }), a: (cols.a[k] || []).map(r3), f: cols.f[k] || 0, s: cols.s[k], p: cols.p[k] };
      });
    }
    function tokenTables(stats) {
      if (!stats) return stats;
      var out = {};
      Object.keys(stats).forEach(function (k) {
        out[k] = (stats[k] || []).map(function (r) {
          return [alone(r[0], r[1]), r[1], f4(r[2]), f4(r[3]), f4(r[4]), f4(r[5])];
        });
      });
      return out;
    }
    return (d.c || []).map(function (c) {
      c.examples = examples(c.examples);
      c.top_examples = examples(c.top_examples);
      c.quantile_examples = (c.quantile_examples || []).map(function (q) { q.examples = examples(q.examples); return q; });
      c.input_tokens = tokenTables(c.input_tokens);
      c.output_tokens = tokenTables(c.output_tokens);
      if (c.output_logits) {
        ["promoted", "suppressed"].forEach(function (k) {
          c.output_logits[k] = (c.output_logits[k] || []).map(function (r) { return [alone(r[0], r[1]), r[1], f4(r[2])]; });
        });
      }
      if (c.correlations) {
        Object.keys(c.correlations).forEach(function (k) {
          c.correlations[k] = (c.correlations[k] || []).map(function (p) { return [p[0], p[1], f4(p[2]), f4(p[3]), f4(p[4])]; });
        });
      }
      return c;
    });
  }

  window.AUTOINTERP_CHUNK = function (id, raw) {
    var d = expandChunk(raw);
    chunks.set(id, d);
    var ws = waiting.get(id) || [];
    waiting.delete(id);
    ws.forEach(function (f) { f(d); });
  };

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      var s = document.createElement("script");
      s.src = src;
      s.onload = function () { resolve(); };
      s.onerror = function () { reject(new Error("could not load " + src)); };
      document.head.appendChild(s);
    });
  }

  function loadChunk(n) {
    if (chunks.has(n)) return Promise.resolve(chunks.get(n));
    return new Promise(function (resolve, reject) {
      var first = !waiting.has(n);
      if (first) waiting.set(n, []);
      waiting.get(n).push(resolve);
      if (first) loadScript("data/c/" + n + ".js").catch(reject);
    });
  }

  function componentDetail(row) {
    return loadChunk(row.ch).then(function (d) { return d[row.off]; });
  }

  // ---------------------------------------------------------------- index view

  var state = { layer: "", text: "", scorer: "", minScore: "", labeledOnly: false, sort: "key", desc: false, page: 0, pageSize: 100 };
  var app;

  function sortValue(row, col) {
    if (col === "key") return [row.li, row.index == null ? row.pos : row.index];
    if (col === "label") return row.label == null ? null : row.label.toLowerCase();
    if (col === "conf") return row.conf == null ? null : ({ high: 3, medium: 2, low: 1 }[String(row.conf).toLowerCase()] || 0);
    if (col === "rate") return row.rate;
    if (col.indexOf("score:") === 0) return row.scores[col.slice(6)];
    return null;
  }

  function compare(a, b) {
    if (Array.isArray(a)) {
      for (var i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
      return 0;
    }
    return a < b ? -1 : a > b ? 1 : 0;
  }

  function filtered() {
    var text = state.text.trim().toLowerCase();
    var li = state.layer === "" ? -1 : Number(state.layer);
    var min = state.minScore === "" ? null : Number(state.minScore);
    var scorer = state.scorer;
    var out = [];
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      if (li >= 0 && r.li !== li) continue;
      if (state.labeledOnly && r.label == null) continue;
      if (text && r.search.indexOf(text) < 0) continue;
      if (scorer && min != null && !isNaN(min)) {
        var v = r.scores[scorer];
        if (v == null || v < min) continue;
      }
      out.push(r);
    }
    var col = state.sort, sign = state.desc ? -1 : 1;
    out.sort(function (a, b) {
      var va = sortValue(a, col), vb = sortValue(b, col);
      // missing values sort last whichever the direction
      if (va == null && vb == null) return compare(sortValue(a, "key"), sortValue(b, "key"));
      if (va == null) return 1;
      if (vb == null) return -1;
      return sign * compare(va, vb) || compare(sortValue(a, "key"), sortValue(b, "key"));
    });
    return out;
  }

  function summaryBlock() {
    var m = manifest, box = el("section", { class: "summary" });
    var sum = m.summary || {};
    var facts = el("dl", { class: "facts" });
    function fact(k, v) {
      facts.appendChild(el("dt", null, k));
      facts.appendChild(el("dd", null, v));
    }
    fact("components", fmtInt(m.n_components) + " in " + m.layers.length + " layer" + (m.layers.length === 1 ? "" : "s"));
    var named = m.label_set && m.label_set !== "default";
    if (named) fact("label set", m.label_set);
    fact("labeled", fmtInt(m.n_labeled) + (m.n_failures ? " (" + fmtInt(m.n_failures) + " failed, see interpretations/" +
      (named ? "sets/" + m.label_set + "/" : "") + "failures.jsonl)" : ""));
    if (sum.n_tokens != null) fact("tokens harvested", fmtInt(sum.n_tokens));
    if (sum.layer_thresholds) {
      fact("firing threshold", Object.keys(sum.layer_thresholds).map(function (l) {
        return l + ": activation > " + fmt(sum.layer_thresholds[l], 4);
      }).join("; "));
    } else if (sum.threshold != null) fact("firing threshold", "activation > " + fmt(sum.threshold, 4));
    // the readable parts of the free-form model / dataset descriptions; the rest as key: value
    function describe(d, main, skip) {
      var parts = [];
      main.forEach(function (k) { if (d[k] != null && d[k] !== "") parts.push(String(d[k])); });
      Object.keys(d).forEach(function (k) {
        var v = d[k];
        if (main.indexOf(k) >= 0 || skip.indexOf(k) >= 0 || v == null || typeof v === "object") return;
        parts.push(k + ": " + v);
      });
      return parts.join(" · ");
    }
    if (sum.model && Object.keys(sum.model).length)
      fact("model", describe(sum.model, ["class", "summary"], ["layer_descriptions", "target"]));
    if (sum.dataset && Object.keys(sum.dataset).length)
      fact("dataset", describe(sum.dataset, ["name", "description"], []));
    box.appendChild(facts);
    if (m.comparisons && m.comparisons.length) {
      var cl = el("ul", { class: "comparisons", id: "comparisons" });
      m.comparisons.forEach(function (c, i) {
        var li = el("li");
        li.appendChild(el("a", { href: "#compare/" + i }, "label set " + c.set_a + " vs " + c.set_b));
        var bits = (c.scorers || []).map(function (s) {
          return s.scorer + " " + fmtSigned(s.mean_diff) + (s.excludes_zero ? "" : " (n.s.)");
        });
        if (bits.length) li.appendChild(el("span", { class: "muted" }, "  " + bits.join(" · ")));
        cl.appendChild(li);
      });
      box.appendChild(el("h3", null, "Compared with other label sets"));
      box.appendChild(cl);
    }
    if (m.scorers.length) {
      var t = el("table", { class: "scoretable" });
      var hr = el("tr");
      ["scorer", "labels", "random labels (shuffled)", "token lookup"].forEach(function (h) { hr.appendChild(el("th", null, h)); });
      t.appendChild(el("thead")).appendChild(hr);
      var tb = t.appendChild(el("tbody"));
      m.scorers.forEach(function (s) {
        var tr = el("tr");
        tr.appendChild(el("td", null, s));
        m.label_sources.forEach(function (src) {
          var means = m.score_means[s] || {};
          var c = means[src] || (src === "label" ? means.none : null);
          tr.appendChild(el("td", { class: "num" }, c ? fmt(c.mean) + "  (n=" + fmtInt(c.n) + ")" : "–"));
        });
        tb.appendChild(tr);
      });
      var cap = el("caption", null, "Mean score per scorer. A label that does not beat the random-label and token-lookup baselines is not an explanation.");
      t.insertBefore(cap, t.firstChild);
      box.appendChild(t);
    }
    return box;
  }

  var indexDom = null;

  function buildIndex() {
    var root = el("section", { id: "index" });
    root.appendChild(summaryBlock());

    var controls = el("form", { class: "controls", id: "filters", autocomplete: "off" });
    controls.addEventListener("submit", function (e) { e.preventDefault(); });
    var layerSel = el("select", { id: "f-layer", "aria-label": "layer" });
    layerSel.appendChild(el("option", { value: "" }, "all layers"));
    manifest.layers.forEach(function (l, i) { layerSel.appendChild(el("option", { value: String(i) }, l.name + " (" + fmtInt(l.n) + ")")); });
    var text = el("input", { id: "f-text", type: "search", placeholder: "label or key contains…", "aria-label": "label text" });
    var scorerSel = el("select", { id: "f-scorer", "aria-label": "scorer" });
    scorerSel.appendChild(el("option", { value: "" }, "any score"));
    manifest.scorers.forEach(function (s) { scorerSel.appendChild(el("option", { value: s }, s + " ≥")); });
    var minScore = el("input", { id: "f-min", type: "number", step: "0.05", placeholder: "min", "aria-label": "minimum score" });
    var labeled = el("input", { id: "f-labeled", type: "checkbox" });
    var lab = el("label", { class: "check" });
    lab.appendChild(labeled);
    lab.appendChild(document.createTextNode(" labeled only"));
    [layerSel, text, scorerSel, minScore, lab].forEach(function (c) { controls.appendChild(c); });
    if (!manifest.scorers.length) { scorerSel.hidden = true; minScore.hidden = true; }
    root.appendChild(controls);

    var count = el("p", { id: "count", class: "muted" });
    root.appendChild(count);
    var table = el("table", { id: "components", class: "components" });
    var thead = table.appendChild(el("thead"));
    var tbody = table.appendChild(el("tbody"));
    root.appendChild(table);
    var pager = el("nav", { class: "pager" });
    root.appendChild(pager);

    var cols = [["key", "component"], ["label", "label"], ["conf", "confidence"], ["rate", "firing rate"]];
    manifest.scorers.forEach(function (s) { cols.push(["score:" + s, s]); });

    var timer = null;
    function changed(resetPage) {
      state.layer = layerSel.value;
      state.text = text.value;
      state.scorer = scorerSel.value;
      state.minScore = minScore.value;
      state.labeledOnly = labeled.checked;
      if (resetPage) state.page = 0;
      render();
    }
    layerSel.addEventListener("change", function () { changed(true); });
    scorerSel.addEventListener("change", function () { changed(true); });
    labeled.addEventListener("change", function () { changed(true); });
    [text, minScore].forEach(function (inp) {
      inp.addEventListener("input", function () {
        clearTimeout(timer);
        timer = setTimeout(function () { changed(true); }, rows.length > 5000 ? 120 : 0);
      });
    });

    function render() {
      var list = filtered();
      var pages = Math.max(1, Math.ceil(list.length / state.pageSize));
      state.page = Math.min(state.page, pages - 1);
      var start = state.page * state.pageSize, stop = Math.min(list.length, start + state.pageSize);
      count.textContent = list.length
        ? "Showing " + fmtInt(start + 1) + "–" + fmtInt(stop) + " of " + fmtInt(list.length) + " matching components (" + fmtInt(rows.length) + " in the run)"
        : "No component matches (" + fmtInt(rows.length) + " in the run)";
      count.setAttribute("data-matching", String(list.length));

      clear(thead);
      var hr = thead.appendChild(el("tr"));
      cols.forEach(function (c) {
        var arrow = state.sort === c[0] ? (state.desc ? " ▼" : " ▲") : "";
        var th = el("th", { "data-col": c[0], tabindex: "0", title: "sort by " + c[1], class: c[0] === "rate" || c[0].indexOf("score:") === 0 ? "num" : null }, c[1] + arrow);
        function sortBy() {
          if (state.sort === c[0]) state.desc = !state.desc;
          else { state.sort = c[0]; state.desc = c[0] === "rate" || c[0] === "conf" || c[0].indexOf("score:") === 0; }
          render();
        }
        th.addEventListener("click", sortBy);
        th.addEventListener("keydown", function (e) { if (e.key === "Enter") sortBy(); });
        hr.appendChild(th);
      });

      clear(tbody);
      var frag = document.createDocumentFragment();
      for (var i = start; i < stop; i++) {
        var r = list[i];
        var tr = el("tr", { "data-key": r.key });
        var td = el("td", { class: "key" });
        // long keys are cut with an ellipsis by the stylesheet; the whole key shows on hover
        td.appendChild(el("a", { href: componentHref(r.key), title: r.key }, shortKey(r.key, 44)));
        tr.appendChild(td);
        tr.appendChild(el("td", { class: r.label == null ? "label muted" : "label" }, r.label == null ? "(not labeled)" : r.label));
        tr.appendChild(el("td", { class: "conf conf-" + String(r.conf || "none").toLowerCase().replace(/[^a-z]/g, "") }, r.conf || ""));
        var rate = el("td", { class: "num", title: "percentile " + fmt(r.pct, 3) + " in its layer; " + fmtInt(r.count) + " firings" }, fmt(r.rate, 3));
        tr.appendChild(rate);
        manifest.scorers.forEach(function (s) { tr.appendChild(el("td", { class: "num" }, fmt(r.scores[s], 3))); });
        tr.addEventListener("click", (function (key) {
          return function (e) { if (e.target.tagName !== "A") location.hash = componentHref(key); };
        })(r.key));
        frag.appendChild(tr);
      }
      tbody.appendChild(frag);

      clear(pager);
      if (pages > 1) {
        var prev = el("button", { type: "button" }, "← previous");
        prev.disabled = state.page === 0;
        prev.addEventListener("click", function () { state.page--; render(); window.scrollTo(0, 0); });
        var next = el("button", { type: "button" }, "next →");
        next.disabled = state.page >= pages - 1;
        next.addEventListener("click", function () { state.page++; render(); window.scrollTo(0, 0); });
        pager.appendChild(prev);
        pager.appendChild(el("span", null, " page " + (state.page + 1) + " of " + pages + " "));
        pager.appendChild(next);
      }
    }

    render();
    return root;
  }

  function showIndex() {
    if (!indexDom) indexDom = buildIndex();
    clear(app);
    app.appendChild(indexDom);
    document.title = noBidi(manifest.title);
  }

  // ---------------------------------------------------------------- component view

  function section(title, cls) {
    var s = el("section", { class: "panel " + (cls || "") });
    s.appendChild(el("h3", null, title));
    return s;
  }

  function shade(act, scale) {
    if (!act || !scale) return null;
    var x = Math.max(-1, Math.min(1, act / scale));
    var alpha = (0.12 + 0.78 * Math.abs(x)).toFixed(3);
    return x > 0 ? "background-color: rgba(255, 140, 0, " + alpha + ")" : "background-color: rgba(40, 120, 255, " + alpha + ")";
  }

  function exampleNode(ex, scale, n) {
    var line = el("div", { class: "example", "data-seq": ex.s, "data-pos": ex.p });
    line.appendChild(el("span", { class: "exmeta", title: "sequence " + ex.s + ", position " + ex.p }, "#" + n + "  act " + fmt(ex.a[ex.f], 3)));
    var text = el("span", { class: "tokens" });
    for (var i = 0; i < ex.t.length; i++) {
      var tok = ex.t[i], a = ex.a[i];
      var span = el("span", { class: i === ex.f ? "tok fire" : "tok", style: shade(a, scale) });
      span.setAttribute("title", "activation " + fmt(a, 4) + (i === ex.f ? " (firing token)" : "") + "\n" + noBidi(JSON.stringify(tok)));
      if (tok === "") span.className += " partial";
      else appendVisible(span, tok);
      text.appendChild(span);
    }
    line.appendChild(text);
    return line;
  }

  function examplesSection(title, list, scale, cls) {
    var s = section(title + " (" + list.length + ")", "examples " + cls);
    if (!list.length) s.appendChild(el("p", { class: "muted" }, "none"));
    list.forEach(function (ex, i) { s.appendChild(exampleNode(ex, scale, i + 1)); });
    return s;
  }

  function histogramSection(hist) {
    var s = section("Activation histogram", "histogram");
    var counts = hist.counts || [], edges = hist.edges || [];
    var total = counts.reduce(function (a, b) { return a + b; }, 0);
    s.appendChild(el("p", { class: "muted small" }, fmtInt(total) + " firings in log-spaced bins from " + fmt(edges[0], 3) +
      " to " + fmt(edges[edges.length - 1], 3) + "; hover a bar for its range."));
    var labels = counts.map(function (n, i) { return fmt(edges[i], 3) + " to " + fmt(edges[i + 1], 3); });
    s.appendChild(bars(counts, { width: 360, height: 64, labels: labels, title: "firings by activation" }));
    return s;
  }

  function tokenTables(title, data, help) {
    var s = section(title, "tokens");
    if (!data) {
      s.appendChild(el("p", { class: "muted" }, "not harvested"));
      return s;
    }
    s.appendChild(el("p", { class: "muted small" }, help));
    var wrap = s.appendChild(el("div", { class: "triple" }));
    [["top_precision", "by precision"], ["top_recall", "by recall"], ["top_pmi", "by PMI"]].forEach(function (t) {
      var tbl = el("table", { class: "tok-table" });
      tbl.appendChild(el("caption", null, t[1]));
      var hr = el("tr");
      ["token", "precision", "recall", "PMI"].forEach(function (h) { hr.appendChild(el("th", null, h)); });
      tbl.appendChild(el("thead")).appendChild(hr);
      var tb = tbl.appendChild(el("tbody"));
      (data[t[0]] || []).forEach(function (r) {
        var tr = el("tr");
        var td = el("td", { class: "tokcell", title: "token id " + r[1] + ", count " + fmt(r[2], 4) });
        var code = el("code");
        appendVisible(code, r[0]);
        td.appendChild(code);
        tr.appendChild(td);
        [r[3], r[4], r[5]].forEach(function (v) { tr.appendChild(el("td", { class: "num" }, fmt(v, 3))); });
        tb.appendChild(tr);
      });
      if (!(data[t[0]] || []).length) tb.appendChild(el("tr")).appendChild(el("td", { colspan: "4", class: "muted" }, "none"));
      wrap.appendChild(tbl);
    });
    return s;
  }

  function logitTables(lens) {
    var s = section("Output logits (weights)", "logits");
    s.appendChild(el("p", { class: "muted small" }, "Tokens whose logits this component's output direction raises and lowers, from the weights alone" +
      (lens.source ? " (" + lens.source + ")" : "") + "."));
    var wrap = s.appendChild(el("div", { class: "double" }));
    [["promoted", "promoted"], ["suppressed", "suppressed"]].forEach(function (t) {
      var tbl = el("table", { class: "tok-table" });
      tbl.appendChild(el("caption", null, t[1]));
      var hr = el("tr");
      ["token", "logit"].forEach(function (h) { hr.appendChild(el("th", null, h)); });
      tbl.appendChild(el("thead")).appendChild(hr);
      var tb = tbl.appendChild(el("tbody"));
      (lens[t[0]] || []).forEach(function (r) {
        var tr = el("tr");
        var td = el("td", { class: "tokcell", title: "token id " + r[1] });
        var code = el("code");
        appendVisible(code, r[0]);
        td.appendChild(code);
        tr.appendChild(td);
        tr.appendChild(el("td", { class: "num" }, fmt(r[2], 3)));
        tb.appendChild(tr);
      });
      if (!(lens[t[0]] || []).length) tb.appendChild(el("tr")).appendChild(el("td", { colspan: "2", class: "muted" }, "none"));
      wrap.appendChild(tbl);
    });
    return s;
  }

  function partnersSection(corr) {
    var s = section("Co-firing components", "partners");
    if (!corr) {
      s.appendChild(el("p", { class: "muted" }, "not harvested"));
      return s;
    }
    s.appendChild(el("p", { class: "muted small" }, "precision = P(this fires | partner fires), recall = P(partner fires | this fires)."));
    var wrap = s.appendChild(el("div", { class: "double" }));
    [["top_precision", "by precision"], ["top_recall", "by recall"], ["top_pmi", "by PMI"], ["bottom_pmi", "lowest PMI"]].forEach(function (t) {
      var tbl = el("table", { class: "partner-table" });
      tbl.appendChild(el("caption", null, t[1]));
      var hr = el("tr");
      ["component", "label", "prec", "rec", "PMI"].forEach(function (h) { hr.appendChild(el("th", null, h)); });
      tbl.appendChild(el("thead")).appendChild(hr);
      var tb = tbl.appendChild(el("tbody"));
      (corr[t[0]] || []).forEach(function (p) {
        var tr = el("tr");
        var kc = el("td", { class: "key" });
        kc.appendChild(el("a", { href: componentHref(p[0]), class: "partner", title: p[0] }, shortKey(p[0], 26)));
        tr.appendChild(kc);
        var other = byKey.get(p[0]);
        tr.appendChild(el("td", { class: other && other.label != null ? "label" : "label muted" }, other && other.label != null ? other.label : "(not labeled)"));
        [p[2], p[3], p[4]].forEach(function (v) { tr.appendChild(el("td", { class: "num" }, fmt(v, 3))); });
        tb.appendChild(tr);
      });
      if (!(corr[t[0]] || []).length) tb.appendChild(el("tr")).appendChild(el("td", { colspan: "5", class: "muted" }, "none"));
      wrap.appendChild(tbl);
    });
    return s;
  }

  function scoresSection(d) {
    var s = section("Scores", "scores");
    var names = Object.keys(d.scores || {}).sort();
    if (!names.length) {
      s.appendChild(el("p", { class: "muted" }, "not scored"));
      return s;
    }
    var t = el("table", { class: "scoretable" });
    var hr = el("tr");
    ["scorer", "this label", "random label", "token lookup", "run mean (label / random / lookup)"].forEach(function (h) { hr.appendChild(el("th", null, h)); });
    t.appendChild(el("thead")).appendChild(hr);
    var tb = t.appendChild(el("tbody"));
    names.forEach(function (name) {
      var tr = el("tr");
      tr.appendChild(el("td", null, name));
      manifest.label_sources.forEach(function (src) {
        // a scorer that judges the component, not the label (intruder), writes label_source "none"
        var c = d.scores[name][src] || (src === "label" ? d.scores[name].none : null);
        var td = el("td", { class: "num" });
        if (!c) td.textContent = "–";
        else if (c.skipped) { td.textContent = "skipped"; td.setAttribute("title", c.reason || ""); td.className += " muted"; }
        else {
          td.textContent = fmt(c.score, 3);
          var tip = (c.n ? c.n + " trials" : "") + (src !== "label" && c.label ? "\nlabel scored: " + c.label : "");
          for (var m in c.metrics) tip += "\n" + m + " = " + fmt(c.metrics[m], 4);
          td.setAttribute("title", tip.trim());
        }
        tr.appendChild(td);
      });
      var means = manifest.score_means[name] || {};
      tr.appendChild(el("td", { class: "num muted" }, manifest.label_sources.map(function (src) {
        var c = means[src] || (src === "label" ? means.none : null);
        return c ? fmt(c.mean, 3) : "–";
      }).join(" / ")));
      tb.appendChild(tr);
    });
    s.appendChild(t);
    var shuffled = names.map(function (n) { return d.scores[n].shuffled; }).filter(function (c) { return c && c.label; })[0];
    if (shuffled) s.appendChild(el("p", { class: "muted small" }, "The random label is another component's label: “" + shuffled.label + "”."));
    return s;
  }

  function rateSection(d, row) {
    var s = section("Firing rate", "rate");
    var layer = manifest.layers[row.li];
    var p = el("p");
    p.textContent = fmtRate(d.firing_rate) + " · " + fmtInt(d.firing_count) + " firings · " +
      (d.firing_count ? "percentile " + fmt(row.pct, 3) + " among the " + fmtInt(layer.n) + " components of " + layer.name : "dead in this harvest");
    s.appendChild(p);
    var h = layer.hist;
    if (h.counts.length) {
      var hi = null;
      if (d.firing_rate > 0) {
        var v = Math.log10(d.firing_rate);
        hi = Math.max(0, Math.min(h.counts.length - 1, Math.floor(((v - h.lo) / (h.hi - h.lo)) * h.counts.length)));
      }
      var labels = h.counts.map(function (_, i) {
        var a = h.lo + ((h.hi - h.lo) * i) / h.counts.length, b = h.lo + ((h.hi - h.lo) * (i + 1)) / h.counts.length;
        return "rate " + fmt(Math.pow(10, a), 2) + "–" + fmt(Math.pow(10, b), 2) + " (components)";
      });
      var fig = el("figure", { class: "hist" });
      fig.appendChild(bars(h.counts, { width: 360, height: 56, highlight: hi, labels: labels, title: "firing rates in " + layer.name }));
      fig.appendChild(el("figcaption", { class: "muted small" },
        "log firing rate across " + layer.name + ": " + fmt(Math.pow(10, h.lo), 2) + " … " + fmt(Math.pow(10, h.hi), 2) +
        (h.dead ? " · " + fmtInt(h.dead) + " never fired" : "") + " · this component highlighted"));
      s.appendChild(fig);
    }
    var stats = el("p", { class: "muted small" }, "mean activation when firing " + fmt(d.mean_activation, 4) + " · max " + fmt(d.max_activation, 4));
    s.appendChild(stats);
    return s;
  }

  function genericExtras(value, box) {
    var numeric = Array.isArray(value) && value.length > 0 && value.every(function (v) { return typeof v === "number"; });
    if (numeric) {
      box.appendChild(bars(value, { width: Math.min(600, Math.max(120, value.length * 12)), height: 60 }));
      box.appendChild(el("p", { class: "muted small" }, value.map(function (v) { return fmt(v, 3); }).join(", ")));
    } else {
      box.appendChild(el("pre", { class: "json" }, JSON.stringify(value, null, 2)));
    }
  }

  function extrasSections(d) {
    var out = [];
    Object.keys(d.extras || {}).sort().forEach(function (name) {
      var s = section(name, "extras");
      s.setAttribute("data-extras", name);
      var box = s.appendChild(el("div", { class: "extras-body" }));
      var fn = renderers[name];
      try {
        if (fn) fn(d.extras[name], box, helpers);
        else genericExtras(d.extras[name], box);
      } catch (err) {
        clear(box);
        box.appendChild(el("p", { class: "error" }, "the renderer for " + name + " failed: " + err));
        genericExtras(d.extras[name], box);
      }
      out.push(s);
    });
    return out;
  }

  /* A window a revision prompt showed the labeller: tokens shaded by activation, the marked
   * ones (missed firings, or where a firing was wrongly predicted) outlined. */
  function shownWindowNode(w, n, what) {
    var line = el("div", { class: "example shown-window", "data-seq": w.s, "data-pos": w.p });
    line.appendChild(el("span", { class: "exmeta", title: "sequence " + w.s + ", from position " + w.p }, "#" + n));
    var text = el("span", { class: "tokens" });
    var scale = 0;
    (w.a || []).forEach(function (a) { if (a != null && Math.abs(a) > scale) scale = Math.abs(a); });
    var marked = {};
    (w.m || []).forEach(function (i) { marked[i] = true; });
    for (var i = 0; i < w.t.length; i++) {
      var tok = w.t[i], a = (w.a || [])[i];
      var span = el("span", { class: marked[i] ? "tok marked" : "tok", style: shade(a, scale) });
      span.setAttribute("title", "activation " + fmt(a, 4) + (marked[i] ? " (" + what + ")" : "") + "\n" + noBidi(JSON.stringify(tok)));
      if (tok === "") span.className += " partial";
      else appendVisible(span, tok);
      text.appendChild(span);
    }
    line.appendChild(text);
    return line;
  }

  function shownWindows(box, shown) {
    [["misses", "Misses: the component fires here, but the reader of the label did not predict it (missed firings outlined)", "missed firing"],
     ["false_positives", "False positives: the reader predicted a firing here, but the component does not fire (the tokens it picked outlined)", "wrongly predicted"]
    ].forEach(function (k) {
      var list = shown[k[0]] || [];
      if (!list.length) return;
      var sec = el("div", { class: "shown-" + k[0].replace("_", "-") });
      sec.appendChild(el("h4", null, k[1] + " (" + list.length + ")"));
      list.forEach(function (w, i) { sec.appendChild(shownWindowNode(w, i + 1, k[2])); });
      box.appendChild(sec);
    });
  }

  function plural(n, one, many) { return fmtInt(n) + " " + (n === 1 ? one : many); }

  /* The refinement of this label (interpret --refine): every round, its validation score, the kept
   * one, and what each revision was shown; the windows are built when their <details> is opened. */
  function refinementSection(ref) {
    var s = section("Refinement on the validation set", "refinement");
    var kept = ref.rounds.filter(function (r) { return r.kept; })[0];
    s.appendChild(el("p", { class: "muted small" }, "Each label was scored on the validation set: held-out windows the labeller never saw " +
      "and the scores above never use (score: the mean of detection's balanced accuracy and simulation's F1). " +
      (ref.finished ? (kept ? "Kept round " + kept.round + " (" + fmt(ref.kept_score, 3) + "; the first label " + fmt(ref.first_score, 3) + "). " : "") +
        (ref.stopped ? "Stopped: " + ref.stopped + "." : "") : "Not finished: no refined label yet; the next `autointerp interpret --refine` resumes it.")));
    var names = [];
    ref.rounds.forEach(function (r) { Object.keys(r.scores || {}).forEach(function (n) { if (names.indexOf(n) < 0) names.push(n); }); });
    names.sort();
    var t = el("table", { class: "scoretable refine-rounds", id: "refinement-rounds" });
    var hr = el("tr");
    ["round", "", "label", "validation"].concat(names).concat(["its mistakes", "it was shown"]).forEach(function (h) { hr.appendChild(el("th", null, h)); });
    t.appendChild(el("thead")).appendChild(hr);
    var tb = t.appendChild(el("tbody"));
    ref.rounds.forEach(function (r) {
      var tr = el("tr", { "data-round": r.round, class: r.kept ? "kept" : null });
      tr.appendChild(el("td", { class: "num" }, String(r.round)));
      tr.appendChild(el("td", { class: "kind" }, r.kind + (r.kept ? " · kept" : "")));
      tr.appendChild(el("td", { class: "label", title: r.reasoning || null }, r.label));
      tr.appendChild(el("td", { class: "num", title: r.reason || null }, r.score == null ? "not scored" : fmt(r.score, 3)));
      names.forEach(function (n) { tr.appendChild(el("td", { class: "num" }, fmt((r.scores || {})[n], 3))); });
      tr.appendChild(el("td", { class: "num mistakes" }, r.score == null ? "–" :
        plural(r.misses, "miss", "misses") + ", " + plural(r.false_positives, "false positive", "false positives") +
        " in " + fmtInt(r.n_windows) + " windows"));
      var sh = r.shown;
      tr.appendChild(el("td", { class: "shown" }, sh ? "round " + sh.revised_from + "'s " + plural(sh.n_misses, "miss", "misses") + ", " +
        plural(sh.n_false_positives, "false positive", "false positives") : r.kind === "candidate" && r.round > 0 ? "the earlier candidates" : "–"));
      tb.appendChild(tr);
    });
    s.appendChild(t);
    ref.rounds.forEach(function (r) {
      var sh = r.shown;
      if (!sh) return;
      var det = el("details", { class: "shown-windows", "data-round": r.round });
      var shownN = (sh.misses || []).length + (sh.false_positives || []).length;
      det.appendChild(el("summary", null, "Round " + r.round + " was shown round " + sh.revised_from + "'s mistakes: " +
        (sh.misses == null ? "the windows were not recorded (refined before autointerp recorded them)" :
          fmtInt((sh.misses || []).length) + " of " + plural(sh.n_misses, "miss", "misses") + " and " + fmtInt((sh.false_positives || []).length) +
          " of " + plural(sh.n_false_positives, "false positive", "false positives"))));
      if (sh.misses != null && shownN) {
        det.addEventListener("toggle", function () {
          if (!det.open || det.getAttribute("data-built")) return;
          det.setAttribute("data-built", "1");
          var box = det.appendChild(el("div", { class: "shown-body" }));
          shownWindows(box, sh);
        });
      }
      s.appendChild(det);
    });
    return s;
  }

  /* The output scorer's trials: the candidate lists of promoted tokens as the judge read them. */
  function outputTrialsSection(trials) {
    var s = section("Output scorer: the candidate lists", "output-trials");
    s.appendChild(el("p", { class: "muted small" }, "Each trial showed the judge the label and these lists of promoted tokens, " +
      "one of them this component's, the others other components'; it picked one. Tokens as they read after a text (· is a space)."));
    trials.forEach(function (tr, ti) {
      var box = el("div", { class: "output-trial", "data-trial": ti });
      box.appendChild(el("h4", null, "Trial " + (ti + 1) + ": " + (tr.answer === tr.truth ? "the judge picked this component's list" : "the judge picked list " + (tr.answer + 1))));
      var ol = el("ol", { class: "candidate-lists" });
      (tr.lists || []).forEach(function (l, li) {
        var cls = "candidate" + (li === tr.truth ? " truth" : "") + (li === tr.answer ? " picked" : "");
        var item = el("li", { class: cls, "data-key": l.key });
        (l.t || []).forEach(function (tok) {
          var code = el("code", { class: "cand-tok" });
          appendVisible(code, tok);
          item.appendChild(code);
          item.appendChild(document.createTextNode(" "));
        });
        var notes = [];
        if (li === tr.truth) notes.push("this component's");
        else if (l.key) notes.push("from " + l.key);
        if (li === tr.answer) notes.push("the judge's pick");
        item.appendChild(el("span", { class: "muted small cand-note" }, "← " + notes.join(" · ")));
        ol.appendChild(item);
      });
      box.appendChild(ol);
      s.appendChild(box);
    });
    return s;
  }

  function showComponent(key) {
    var row = byKey.get(key);
    clear(app);
    if (!row) {
      app.appendChild(el("p", { class: "error" }, "No component " + JSON.stringify(key) + " in this report."));
      var back = el("a", { href: "#" }, "← all components");
      app.appendChild(back);
      return;
    }
    var page = el("article", { id: "component", "data-key": key });
    app.appendChild(page);
    page.appendChild(el("p", { class: "muted" }, "loading " + key + "…"));
    componentDetail(row).then(function (d) {
      if (hashKey() !== key) return; // the reader moved on while the chunk loaded
      clear(page);
      var nav = el("nav", { class: "crumbs" });
      nav.appendChild(el("a", { href: "#" }, "← all components"));
      var layerRows = rows.filter(function (r) { return r.li === row.li; });
      var prev = layerRows[row.pos - 1], next = layerRows[row.pos + 1];
      if (prev) nav.appendChild(el("a", { href: componentHref(prev.key), class: "prev" }, "‹ " + prev.key));
      if (next) nav.appendChild(el("a", { href: componentHref(next.key), class: "next" }, next.key + " ›"));
      page.appendChild(nav);

      var head = el("header", { class: "comp-head" });
      head.appendChild(el("h1", { class: "comp-key" }, d.key));
      head.appendChild(el("p", { class: "muted" }, "layer " + d.layer + " · index " + d.index));
      if (d.interp) {
        var h2 = el("h2", { class: "comp-label" }, d.interp.label);
        head.appendChild(h2);
        var conf = String(d.interp.confidence || "").toLowerCase().replace(/[^a-z]/g, "");
        var meta = el("p", { class: "interp-meta" });
        meta.appendChild(el("span", { class: "badge conf-" + conf }, "confidence: " + d.interp.confidence));
        if (d.interp.model) meta.appendChild(el("span", { class: "muted small" }, " labeled by " + d.interp.model + (d.interp.template ? " with " + d.interp.template : "")));
        head.appendChild(meta);
        if (d.interp.reasoning) head.appendChild(el("p", { class: "reasoning" }, d.interp.reasoning));
        if (d.first_pass) {
          var passes = el("p", { class: "passes" });
          passes.appendChild(el("span", { class: "muted" }, "Second pass, with its neighbours' labels (interpret --neighbours). The first pass said: "));
          passes.appendChild(el("q", { class: "first-pass" }, d.first_pass.label));
          if (d.first_pass.confidence) passes.appendChild(el("span", { class: "muted small" }, " (confidence: " + d.first_pass.confidence + ")"));
          head.appendChild(passes);
        } else if (d.interp.neighbour_pass) {
          head.appendChild(el("p", { class: "passes muted" }, "Second pass, with its neighbours' labels (interpret --neighbours)."));
        }
      } else {
        head.appendChild(el("h2", { class: "comp-label muted" }, "(not labeled)"));
      }
      if (d.fires_early) {
        head.appendChild(el("p", { class: "flag early" }, "Fires mostly at the first positions of its sequences: " +
          fmt(100 * d.early_firing_share, 3) + "% of its firings. It may respond to position more than to the tokens."));
      }
      page.appendChild(head);

      var grid = el("div", { class: "grid" });
      grid.appendChild(scoresSection(d));
      grid.appendChild(rateSection(d, row));
      page.appendChild(grid);
      if (d.refinement) page.appendChild(refinementSection(d.refinement));
      if (d.output_trials && d.output_trials.length) page.appendChild(outputTrialsSection(d.output_trials));

      var scale = Math.abs(d.max_activation || 0);
      (d.top_examples || []).concat(d.examples || []).forEach(function (ex) {
        ex.a.forEach(function (a) { if (a != null && Math.abs(a) > scale) scale = Math.abs(a); });
      });
      page.appendChild(el("p", { class: "muted small legend" }, "Shading: activation relative to this component's largest (" + fmt(scale, 3) +
        "); the firing token is outlined; hover a token for its activation. · is a space, ↵ a newline, → a tab."));
      if (d.top_examples && d.top_examples.length) page.appendChild(examplesSection("Top-activating examples", d.top_examples, scale, "top"));
      page.appendChild(examplesSection("Random examples", d.examples || [], scale, "random"));
      if (d.histogram) page.appendChild(histogramSection(d.histogram));
      (d.quantile_examples || []).forEach(function (q) {
        var where = q.upper != null ? fmt(q.lower, 3) + " to " + fmt(q.upper, 3) : "above " + fmt(q.lower, 3);
        page.appendChild(examplesSection("Quantile " + Math.round(100 * q.lower_share) + "–" + Math.round(100 * q.upper_share) +
          "%: activation " + where + ", " + fmtInt(q.count) + " firings", q.examples || [], scale, "quantile"));
      });
      page.appendChild(tokenTables("Input tokens", d.input_tokens, "Tokens at the firing position. precision = P(fires | token), recall = P(token | fires)."));
      page.appendChild(tokenTables("Output tokens", d.output_tokens, "Tokens the model predicts where this component fires (probability mass)."));
      if (d.output_logits) page.appendChild(logitTables(d.output_logits));
      page.appendChild(partnersSection(d.correlations));
      extrasSections(d).forEach(function (s) { page.appendChild(s); });
      document.title = noBidi(d.key + (d.interp ? " — " + d.interp.label : "") + " · " + manifest.title);
      window.scrollTo(0, 0);
    }).catch(function (err) {
      clear(page);
      page.appendChild(el("p", { class: "error" }, String(err)));
    });
  }

  // ---------------------------------------------------------------- label set comparisons

  function fmtSigned(x) {
    if (x == null || !isFinite(x)) return "–";
    return (x > 0 ? "+" : x < 0 ? "−" : "±") + Math.abs(x).toFixed(3);
  }

  /* One comparison of this report's label set (A) with another (B), shaped by autointerp.compare:
   * every string in it (set names, component keys, labels) is run text and goes through el(). */
  function showComparison(i) {
    var c = (manifest.comparisons || [])[i];
    clear(app);
    var page = el("section", { id: "comparison", class: "comparison" });
    app.appendChild(page);
    var back = el("p");
    back.appendChild(el("a", { href: "#" }, "← all components"));
    page.appendChild(back);
    if (!c) {
      page.appendChild(el("p", { class: "error" }, "No label set comparison number " + i + " in this report."));
      document.title = noBidi(manifest.title);
      return;
    }
    page.appendChild(el("h2", null, "Label set " + c.set_a + " (A) vs " + c.set_b + " (B)"));
    page.appendChild(el("p", { class: "muted" }, "Per scorer, over the components both sets labelled and scored: the mean of the paired " +
      "difference A − B, with a " + Math.round(100 * c.level) + "% confidence interval by paired bootstrap (" + fmtInt(c.n_resamples) +
      " resamples of the components, seed " + c.seed + "). Wins: A scores higher."));
    var t = el("table", { class: "scoretable", id: "comparison-table" });
    var hr = el("tr");
    ["scorer", "n", "A", "B", "A − B", "95% CI", "wins / ties / losses", "verdict"].forEach(function (h) { hr.appendChild(el("th", null, h)); });
    t.appendChild(el("thead")).appendChild(hr);
    var tb = t.appendChild(el("tbody"));
    (c.scorers || []).forEach(function (s) {
      var tr = el("tr", { "data-scorer": s.scorer });
      tr.appendChild(el("td", null, s.scorer));
      tr.appendChild(el("td", { class: "num" }, fmtInt(s.n)));
      tr.appendChild(el("td", { class: "num" }, fmt(s.mean_a)));
      tr.appendChild(el("td", { class: "num" }, fmt(s.mean_b)));
      tr.appendChild(el("td", { class: "num diff" }, fmtSigned(s.mean_diff)));
      tr.appendChild(el("td", { class: "num ci" }, "[" + fmtSigned(s.ci_low) + ", " + fmtSigned(s.ci_high) + "]"));
      tr.appendChild(el("td", { class: "num" }, s.wins + " / " + s.ties + " / " + s.losses));
      var verdict = !s.n ? "no component scored in both" : !s.excludes_zero ? "no clear difference" : s.mean_diff > 0 ? "A ahead" : "B ahead";
      tr.appendChild(el("td", { class: "verdict" }, verdict));
      tb.appendChild(tr);
    });
    page.appendChild(t);
    Object.keys(c.skipped || {}).forEach(function (name) {
      page.appendChild(el("p", { class: "muted small" }, name + ": not compared (" + c.skipped[name] + ")"));
    });
    (c.scorers || []).forEach(function (s) {
      if (!s.disagreements || !s.disagreements.length) return;
      var sec = section(s.scorer + ": where the sets disagree most", "disagreements");
      var dt = el("table", { class: "components" });
      var h = el("tr");
      ["component", "A − B", "A", "label A", "B", "label B"].forEach(function (x) { h.appendChild(el("th", null, x)); });
      dt.appendChild(el("thead")).appendChild(h);
      var body = dt.appendChild(el("tbody"));
      s.disagreements.forEach(function (d) {
        var tr = el("tr");
        var kc = el("td", { class: "key" });
        kc.appendChild(el("a", { href: componentHref(d.key), title: d.key }, shortKey(d.key, 48)));
        tr.appendChild(kc);
        tr.appendChild(el("td", { class: "num" }, fmtSigned(d.diff)));
        tr.appendChild(el("td", { class: "num" }, fmt(d.score_a)));
        tr.appendChild(el("td", { class: "label" }, d.label_a));
        tr.appendChild(el("td", { class: "num" }, fmt(d.score_b)));
        tr.appendChild(el("td", { class: "label" }, d.label_b));
        body.appendChild(tr);
      });
      sec.appendChild(dt);
      page.appendChild(sec);
    });
    document.title = noBidi("label set " + c.set_a + " vs " + c.set_b + " · " + manifest.title);
    window.scrollTo(0, 0);
  }

  // ---------------------------------------------------------------- routing and start

  function hashKey() {
    var h = location.hash;
    if (h.indexOf("#c/") !== 0) return null;
    try { return decodeURIComponent(h.slice(3)); } catch (e) { return h.slice(3); }
  }

  function route() {
    var m = /^#compare\/(\d+)$/.exec(location.hash);
    if (m) return showComparison(Number(m[1]));
    var key = hashKey();
    if (key != null) showComponent(key);
    else showIndex();
  }

  function start() {
    app = document.getElementById("app");
    manifest = JSON.parse(document.getElementById("autointerp-manifest").textContent);
    A.manifest = manifest;
    document.getElementById("run-title").textContent = noBidi(manifest.title);
    var t0 = performance.now();
    Promise.all(manifest.layers.map(function (_, i) { return loadScript("data/layer-" + i + ".js"); }))
      .then(function () {
        A.loadMs = performance.now() - t0;
        window.addEventListener("hashchange", route);
        route();
        document.body.setAttribute("data-ready", "1");
      })
      .catch(function (err) {
        clear(app);
        app.appendChild(el("p", { class: "error" }, String(err) + " — the report folder is incomplete; write it again with `autointerp report`."));
      });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
