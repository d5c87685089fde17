/* The report's gallery: one card per image, sorted and filtered in the page.
 *
 * Data comes from scripts next to the page (browsers refuse fetch() from file://):
 * data/manifest.js sets window.XAI_MANIFEST, each data/shard-NNNNNN.js pushes its rows onto
 * window.XAI_SHARDS, data/strategies.js sets window.XAI_STRATEGIES. Every string from the
 * data is shown with textContent, never parsed as HTML. Cards are added a page at a time as
 * the list scrolls into view, and images load lazily.
 *
 * The shard scripts load a few at a time, in image order, and the first screen is drawn as
 * soon as the shards of its cards are in (body[data-first]); the rest keep loading behind it
 * (the count says how far), and once all are in (body[data-ready]) the view is recomputed
 * over every image, keeping the cards already drawn when they are still the first ones. So
 * the first screen costs the same at 100 images as at 50,000.
 */
(function () {
  "use strict";
  var PAGE = 48;
  var IN_FLIGHT = 16;  // shard scripts requested at once
  var M = window.XAI_MANIFEST;
  var rows = [], view = [], shown = 0, hidden = {}, strategies = {};
  var loading = null;  // {loaded, total} while shard scripts are still arriving
  var state = { key: "index", desc: false, cls: "", by: "pred", verdict: "", status: "",
                lo: "", hi: "" };

  function $(id) { return document.getElementById(id); }
  function pad(n) { return String(n).padStart(6, "0"); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function fmt(v, digits) {
    if (v === null || v === undefined) return "—";
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e4)) return v.toExponential(2);
    return v.toFixed(digits === undefined ? 3 : digits);
  }
  // A completeness error as a percentage on one scale: "5.55e-6%" beside "0.99%" reads as
  // the larger of the two.
  function pct(v) {
    if (v === null || v === undefined) return "—";
    var p = 100 * Math.abs(v);
    if (p === 0) return "0%";
    if (p < 0.01) return "< 0.01%";
    return p.toFixed(p < 100 ? 2 : 0) + "%";
  }
  function className(k) { return k >= 0 && k < M.classes.length ? M.classes[k] : "?"; }

  // ------------------------------------------------------------------ sort keys
  function keys() {
    var out = [
      { id: "index", label: "image number", get: function (r) { return r.i; } },
      { id: "id", label: "image id", get: function (r) { return r.id; }, text: true },
      { id: "prob", label: "probability", get: function (r) { return r.pr; } },
    ];
    M.methods.forEach(function (m, j) {
      if (m.ig) out.push({ id: "cmp:" + j, label: "completeness error · " + m.name,
                           get: function (r) { return r.d[j]; } });
    });
    M.metrics.forEach(function (met) {
      M.methods.forEach(function (m, j) {
        out.push({ id: "met:" + met.name + ":" + j, label: met.name + " · " + m.name,
                   get: function (r) { var s = r.s[met.name]; return s ? s[j] : null; } });
      });
    });
    M.methods.forEach(function (m, j) {
      if (strategies[m.name]) out.push({ id: "str:" + j, label: "strategy · " + m.name,
        get: function (r) { var c = strategies[m.name][r.i]; return c >= 0 ? c : null; } });
    });
    return out;
  }
  var KEYS = [];
  function keyOf(id) {
    for (var k = 0; k < KEYS.length; k++) if (KEYS[k].id === id) return KEYS[k];
    return KEYS[0];
  }

  // ------------------------------------------------------------------ controls
  function select(label, id, options, value, onchange) {
    var lab = el("label", null, label + " ");
    var s = el("select");
    s.id = id;
    options.forEach(function (o) {
      var opt = el("option", null, o[1]);
      opt.value = o[0];
      if (o[0] === value) opt.selected = true;
      s.appendChild(opt);
    });
    s.addEventListener("change", function () { onchange(s.value); });
    lab.appendChild(s);
    return lab;
  }
  function number(label, id, onchange) {
    var lab = el("label", null, label + " ");
    var i = el("input");
    i.type = "number"; i.step = "any"; i.id = id;
    i.addEventListener("input", function () { onchange(i.value); });
    lab.appendChild(i);
    return lab;
  }
  function controls() {
    var c = $("controls");
    KEYS = keys();
    c.appendChild(select("Sort by", "sort", KEYS.map(function (k) { return [k.id, k.label]; }),
      state.key, function (v) { state.key = v; apply(); }));
    c.appendChild(select("", "order", [["asc", "ascending"], ["desc", "descending"]], "asc",
      function (v) { state.desc = v === "desc"; apply(); }));
    c.appendChild(number("min", "lo", function (v) { state.lo = v; apply(); }));
    c.appendChild(number("max", "hi", function (v) { state.hi = v; apply(); }));
    c.appendChild(select("Class", "class", classOptions(), "",
      function (v) { state.cls = v; apply(); }));
    c.appendChild(select("as", "class-by", [["pred", "predicted"], ["true", "true label"]],
      "pred", function (v) { state.by = v; apply(); }));
    c.appendChild(select("Prediction", "verdict", [["", "right or wrong"], ["right", "right"],
      ["wrong", "wrong"]], "", function (v) { state.verdict = v; apply(); }));
    c.appendChild(select("Status", "status", [["", "any status"], ["ok", "explained"],
      ["skipped", "skipped"]], "", function (v) { state.status = v; apply(); }));
    c.appendChild(select("Colormap", "colormap", M.colormaps.map(function (n) { return [n, n]; }),
      M.colormap, setColormap));
    var ov = el("label", null, "overlay ");
    var box = el("input"); box.type = "checkbox"; box.id = "overlay";
    box.addEventListener("change", function () {
      document.body.classList.toggle("overlay", box.checked); });
    ov.appendChild(box);
    var alpha = el("input"); alpha.type = "range"; alpha.min = "0.1"; alpha.max = "1";
    alpha.step = "0.05"; alpha.value = "0.55"; alpha.id = "overlay-alpha";
    alpha.addEventListener("input", function () {
      document.documentElement.style.setProperty("--overlay", alpha.value); });
    ov.appendChild(alpha);
    c.appendChild(ov);
    var fs = el("fieldset");
    fs.appendChild(el("span", null, "Methods:"));
    M.methods.forEach(function (m, j) {
      var lab = el("label", null, m.name + " ");
      var b = el("input"); b.type = "checkbox"; b.checked = true; b.dataset.method = String(j);
      b.addEventListener("change", function () {
        hidden[j] = !b.checked;
        var tiles = document.querySelectorAll('.tile[data-method="' + j + '"]');
        for (var t = 0; t < tiles.length; t++) tiles[t].classList.toggle("hidden-method", !b.checked);
      });
      lab.prepend(b);
      fs.appendChild(lab);
    });
    c.appendChild(fs);
    rowControls();
  }
  // The class filter's choices: the classes of the rows that have arrived.
  function classOptions() {
    var present = {};
    rows.forEach(function (r) { if (r.p >= 0) present[r.p] = 1; if (r.t >= 0) present[r.t] = 1; });
    var classes = Object.keys(present).map(Number).sort(function (a, b) {
      return className(a).localeCompare(className(b)); });
    return [["", "all classes"]].concat(classes.map(
      function (k) { return [String(k), className(k)]; }));
  }
  function hasOutlines() { return rows.some(function (r) { return r.o; }); }
  // What depends on the rows (the class choices, the mask-outline switch and legend line),
  // made again when more rows arrive.
  function rowControls() {
    var s = $("class");
    if (s) {
      s.textContent = "";
      classOptions().forEach(function (o) {
        var opt = el("option", null, o[1]);
        opt.value = o[0];
        if (o[0] === state.cls) opt.selected = true;
        s.appendChild(opt);
      });
    }
    if (!$("outlines") && hasOutlines()) {  // ground-truth masks: a switch for their outlines
      var ol = el("label", null, "mask outline ");
      var obox = el("input"); obox.type = "checkbox"; obox.id = "outlines"; obox.checked = true;
      obox.addEventListener("change", function () {
        document.body.classList.toggle("outlines", obox.checked); });
      ol.prepend(obox);
      $("controls").insertBefore(ol, $("controls").querySelector("fieldset"));
      document.body.classList.add("outlines");
    }
    var old = $("legend");
    if (old) old.remove();
    legend();
  }
  // The tiles show short metric names; this line spells them out (and their direction).
  function legend() {
    var items = [];
    if (M.methods.some(function (m) { return m.ig; }))
      items.push(["compl", "relative completeness error |δ| / |F(x) − F(baseline)|, ↓"]);
    M.metrics.forEach(function (met) {
      items.push([met.short || met.name, met.name + " " + (met.higher ? "↑" : "↓") +
                  (met.description ? " (" + met.description + ")" : "")]);
    });
    if (Object.keys(strategies).length) items.push(["strat", "explanation strategy (cluster)"]);
    if (!items.length) return;
    var p = el("p", "muted");
    p.id = "legend";
    p.appendChild(el("span", null, "Tile scores: "));
    items.forEach(function (it, k) {
      if (k) p.appendChild(document.createTextNode(" · "));
      p.appendChild(el("b", null, it[0]));
      p.appendChild(document.createTextNode(" " + it[1]));
    });
    if (hasOutlines())
      p.appendChild(document.createTextNode(" · cyan outline: the ground-truth mask"));
    $("controls").after(p);
  }
  function scoreRow(box, short, title, value) {
    var dt = el("dt", null, short);
    dt.title = title;
    var dd = el("dd", null, value);
    dd.title = title + ": " + value;
    box.appendChild(dt);
    box.appendChild(dd);
  }
  function setColormap(name) {
    document.documentElement.style.setProperty("--cmap", "url(#cmap-" + name + ")");
  }

  // ------------------------------------------------------------------ filter and sort
  // The rows the controls select, in their order.
  function select_view() {
    var key = keyOf(state.key);
    var lo = state.lo === "" ? null : Number(state.lo);
    var hi = state.hi === "" ? null : Number(state.hi);
    var cls = state.cls === "" ? null : Number(state.cls);
    var out = rows.filter(function (r) {
      var ok = r.st === "ok";
      if (state.status === "ok" && !ok) return false;
      if (state.status === "skipped" && ok) return false;
      if (cls !== null && (state.by === "pred" ? r.p : r.t) !== cls) return false;
      if (state.verdict) {
        if (!ok || r.t < 0 || r.p < 0) return false;
        if ((r.p === r.t) !== (state.verdict === "right")) return false;
      }
      if ((lo !== null || hi !== null) && !key.text) {
        var v = key.get(r);
        if (v === null || v === undefined) return false;
        if (lo !== null && v < lo) return false;
        if (hi !== null && v > hi) return false;
      }
      return true;
    });
    var sign = state.desc ? -1 : 1;
    out.sort(function (a, b) {
      var x = key.get(a), y = key.get(b);
      var xn = x === null || x === undefined, yn = y === null || y === undefined;
      if (xn || yn) return xn === yn ? a.i - b.i : (xn ? 1 : -1);  // missing values last
      if (key.text) return sign * String(x).localeCompare(String(y)) || a.i - b.i;
      return x === y ? a.i - b.i : sign * (x < y ? -1 : 1);
    });
    return out;
  }
  function apply() {
    view = select_view();
    $("cards").textContent = "";
    shown = 0;
    more();
  }
  // All rows are in: the same selection over every image. The cards drawn stay when they are
  // still the first ones (the default view: they are), else the list is drawn again.
  function refresh() {
    var next = select_view();
    var same = next.length >= shown;
    for (var k = 0; same && k < shown; k++) same = next[k] === view[k];
    if (!same) { apply(); return; }
    view = next;
    count();
  }

  // ------------------------------------------------------------------ cards
  function image(src, cls, alt) {
    var img = el("img", cls);
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = alt;
    img.src = src;
    return img;
  }
  // Image r's tile of a kind ("c" crops, "o" outlines, "m<j>" maps): its shard's sprite
  // (tiles stacked, r.T a sprite) in a tile-sized img, scaled to the tile's width by
  // object-fit: cover (report.css), at the tile's object-position (CSP allows no inline
  // style attributes; styles set from the script are fine).
  function tile(kind, r, cls, alt) {
    var k = r.i - r.s0, part = Math.floor(k / r.T), n = Math.min(r.T, r.n - part * r.T);
    var img = image("img/" + kind + "/" + pad(r.sh) + "-" + part + (kind === "c" ? ".jpg" : ".png"),
                    cls, alt);
    img.style.objectPosition = "0 " + (n > 1 ? 100 * (k % r.T) / (n - 1) : 0) + "%";
    return img;
  }
  function outline(pic, r) {
    if (r.o) pic.appendChild(tile("o", r, "outline", ""));
  }
  function card(r) {
    var ok = r.st === "ok";
    var verdict = !ok ? "skipped" : (r.t < 0 || r.p < 0 ? "" : (r.p === r.t ? "right" : "wrong"));
    var c = el("article", "card " + verdict);
    c.dataset.index = String(r.i);
    var meta = el("div", "meta");
    meta.appendChild(el("div", "id", r.id));
    meta.appendChild(el("div", "muted", "#" + (r.i + 1)));
    if (ok) {
      var pred = el("div", "pred");
      pred.appendChild(el("span", null, "predicted "));
      pred.appendChild(el("b", "pred-name", className(r.p)));
      var prob = el("span", "prob", " " + fmt(r.pr, 3));
      prob.dataset.value = String(r.pr);
      pred.appendChild(prob);
      meta.appendChild(pred);
      if (r.t >= 0) {
        meta.appendChild(el("div", "verdict " + verdict,
          "true " + className(r.t) + (verdict === "right" ? " ✓" : " ✗")));
      } else {
        meta.appendChild(el("div", "muted", "no true label"));
      }
    } else {
      meta.appendChild(el("div", "reason", r.st));
    }
    c.appendChild(meta);
    var tiles = el("div", "tiles");
    if (r.c) {
      var t0 = el("div", "tile");
      var p0 = el("div", "pic");
      p0.appendChild(tile("c", r, "crop", "image " + (r.i + 1)));
      outline(p0, r);
      t0.appendChild(p0);
      t0.appendChild(el("div", "name", "image"));
      tiles.appendChild(t0);
    }
    if (ok) {
      M.methods.forEach(function (m, j) {
        var t = el("div", "tile" + (hidden[j] ? " hidden-method" : ""));
        t.dataset.method = String(j);
        var pic = el("div", "pic");
        if (r.m[j]) {
          pic.appendChild(tile("c", r, "under", ""));
          pic.appendChild(tile("m" + j, r, "map", m.name + " map"));
          outline(pic, r);
        } else {
          pic.appendChild(el("div", "missing", "no map (stage not run)"));
        }
        t.appendChild(pic);
        var name = el("div", "name", m.name);
        name.title = m.name + (m.sign ? " (" + m.sign + " maps)" : "");
        t.appendChild(name);
        var box = el("dl", "scores");
        if (m.ig) scoreRow(box, "compl", "relative completeness error",
                           pct(r.d[j]));
        M.metrics.forEach(function (met) {
          var s = r.s[met.name];
          if (s) scoreRow(box, (met.short || met.name) + (met.higher ? "↑" : "↓"),
                          met.name + " (" + (met.higher ? "higher" : "lower") + " is better)",
                          fmt(s[j]));
        });
        var strat = strategies[m.name];
        if (strat && strat[r.i] >= 0) scoreRow(box, "strat", "explanation strategy",
                                               String(strat[r.i]));
        if (box.childNodes.length) t.appendChild(box);
        tiles.appendChild(t);
      });
    }
    c.appendChild(tiles);
    return c;
  }
  function more() {
    var box = $("cards");
    var frag = document.createDocumentFragment();
    var stop = Math.min(view.length, shown + PAGE);
    for (; shown < stop; shown++) frag.appendChild(card(view[shown]));
    box.appendChild(frag);
    count();
  }
  function count() {
    $("count").textContent = "Showing " + shown + " of " + view.length + " images" +
      (view.length !== rows.length ? " (" + rows.length + " in the run)" : "") +
      (loading ? " · loading the data: " + loading.loaded + " of " + loading.total +
       " shards" : "");
    $("more").hidden = shown >= view.length;
  }

  // ------------------------------------------------------------------ start
  function banner() {
    var notes = M.notes || [];
    if (!notes.length) return;
    var b = $("banner");
    b.hidden = false;
    if (M.bad) b.classList.add("bad");
    notes.forEach(function (n) { b.appendChild(el("div", null, n)); });
  }
  function take() {  // the rows of the shard scripts that ran since the last call
    var got = window.XAI_SHARDS || [], n = 0;
    window.XAI_SHARDS = [];
    got.forEach(function (sh) {
      sh.rows.forEach(function (r) {
        r.sh = sh.index; r.s0 = sh.start; r.n = sh.stop - sh.start; r.T = sh.sprite;
        rows.push(r);
      });
      n += sh.rows.length;
    });
    return n;
  }
  function firstScreen() {
    rows.sort(function (a, b) { return a.i - b.i; });
    strategies = (window.XAI_STRATEGIES && window.XAI_STRATEGIES.methods) || {};
    controls();
    setColormap(M.colormap);
    apply();
    if ("IntersectionObserver" in window) {
      new IntersectionObserver(function (entries) {
        if (entries[0].isIntersecting && shown < view.length) more();
      }, { rootMargin: "800px" }).observe($("more"));
    }
    $("more").addEventListener("click", more);
    document.body.dataset.first = "1";
  }
  // Call ``done`` once the images shown in the window have loaded (or failed), or after 2 s.
  function onScreenImages(done) {
    var called = false;
    function once() { if (!called) { called = true; done(); } }
    var imgs = [].slice.call(document.querySelectorAll("#cards img")).filter(function (i) {
      return !i.complete && i.getBoundingClientRect().top < innerHeight &&
        getComputedStyle(i).display !== "none";
    });
    var left = imgs.length;
    if (!left) { once(); return; }
    imgs.forEach(function (i) {
      function one() { if (--left === 0) once(); }
      i.addEventListener("load", one);
      i.addEventListener("error", one);
    });
    setTimeout(once, 2000);
  }
  function allIn() {
    loading = null;
    rows.sort(function (a, b) { return a.i - b.i; });
    rowControls();
    refresh();
    document.body.dataset.ready = "1";
  }
  function start() {
    if (!M) {
      $("count").textContent = "The report data (data/manifest.js) is missing: build the " +
        "report again with `xai report`.";
      document.body.dataset.ready = "1";
      return;
    }
    document.title = M.title;
    banner();
    var files = M.shards.map(function (s) { return s.file; });
    var total = files.length, next = 0, arrived = 0, prefix = 0, prefixRows = 0;
    var sizes = [], first = false, strategiesIn = !M.strategies;
    loading = { loaded: 0, total: total };
    function script(src, onload) {
      var s = document.createElement("script");
      s.src = src;
      s.onload = s.onerror = function () { s.remove(); onload(); };
      document.head.appendChild(s);
    }
    // The first screen needs the strategies (sort keys) and the first shards, in order,
    // with a page of rows; a shard that fails to load counts as in, with no rows.
    function progress() {
      while (prefix < total && sizes[prefix] !== undefined) prefixRows += sizes[prefix++];
      if (!first && strategiesIn && (prefixRows >= PAGE || prefix === total)) {
        first = true;
        firstScreen();
      } else if (first) {
        count();
      }
      if (first && arrived === total && loading) allIn();
    }
    // A few at a time until the first screen is drawn, none until its images are in (so
    // neither waits behind a thousand scripts), then all the rest at once.
    var burst = false;
    function rest() {
      if (burst) return;
      burst = true;
      while (next < total) request();
    }
    function request() {
      if (next >= total) return;
      var k = next++;
      script(files[k], function () {
        sizes[k] = take();
        loading.loaded = ++arrived;
        var before = first;
        progress();
        if (!before && first) onScreenImages(rest);
        if (!first) request();  // drawn: the window's images go first, then rest()
      });
    }
    if (M.strategies) script(M.strategies, function () { strategiesIn = true; progress(); });
    for (var k = 0; k < IN_FLIGHT; k++) request();
    progress();
  }
  start();
})();
