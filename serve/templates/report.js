/* exportstance report: sort, filter and page the article table, and show the current page's
   articles. Only the first page of articles is in the HTML; the others are created from the JSON
   block (escaped HTML rendered by the report's template) when their page is first shown. */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var tbody = $("articles-table").tBodies[0];
  var rows = Array.prototype.slice.call(tbody.rows);
  var list = $("article-list");
  var filters = { dominant: $("filter-dominant"), source: $("filter-source"), text: $("filter-text") };
  var pageSize = $("page-size");
  var state = { sort: "k", type: "num", dir: 1, page: 0, size: parseInt(pageSize.value, 10) };
  var ordered = rows.slice();
  var shown = rows;
  var lazy = null;
  var made = new Map();
  var haystack = new Map();
  Array.prototype.forEach.call(list.children, function (el) { made.set(el.dataset.k, el); });
  rows.forEach(function (r) {
    haystack.set(r, (r.dataset.title + "\n" + r.dataset.id + "\n" + r.dataset.outlet).toLowerCase());
  });

  function article(k) {
    var el = made.get(k);
    if (!el) {
      if (lazy === null) { lazy = JSON.parse($("lazy-articles").textContent); }
      var t = document.createElement("template");
      t.innerHTML = lazy[k];
      el = t.content.firstElementChild;
      made.set(k, el);
    }
    return el;
  }

  function compare(a, b) {
    var x = a.dataset[state.sort], y = b.dataset[state.sort], order;
    if (x === "" || y === "") {
      order = (x === "") - (y === "");  // no value (e.g. no stance index): last, either direction
    } else if (state.type === "num") {
      order = state.dir * (parseFloat(x) - parseFloat(y));
    } else {
      order = state.dir * x.localeCompare(y, "de");
    }
    return order || a.dataset.k - b.dataset.k;
  }

  function apply() {
    var d = filters.dominant.value, s = filters.source ? filters.source.value : "";
    var q = filters.text.value.trim().toLowerCase();
    shown = ordered.filter(function (r) {
      return (!d || r.dataset.dominant === d) && (!s || r.dataset.source === s) &&
        (!q || haystack.get(r).indexOf(q) >= 0);
    });
    var pages = Math.max(1, Math.ceil(shown.length / state.size));
    state.page = Math.max(0, Math.min(state.page, pages - 1));
    var page = shown.slice(state.page * state.size, (state.page + 1) * state.size);
    page.forEach(function (r) { r.hidden = false; });
    tbody.replaceChildren.apply(tbody, page);
    list.replaceChildren.apply(list, page.map(function (r) { return article(r.dataset.k); }));
    $("status").textContent = shown.length + " of " + rows.length + " articles" +
      (shown.length ? ", showing " + (state.page * state.size + 1) + "–" + (state.page * state.size + page.length) : "");
    $("page-info").textContent = "page " + (state.page + 1) + " of " + pages;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
  }

  function sortBy(button) {
    var key = button.dataset.sort;
    state.dir = key === state.sort ? -state.dir : 1;
    state.sort = key;
    state.type = button.dataset.type;
    ordered.sort(compare);
    Array.prototype.forEach.call(document.querySelectorAll("#articles-table th"), function (th) {
      th.removeAttribute("aria-sort");
    });
    button.parentNode.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
    state.page = 0;
    apply();
  }

  function reveal() {
    /* #a12 or #a12-s3: show the page that holds article 12 (clearing filters that hide it) */
    var m = /^#a(\d+)(?:-s\d+)?$/.exec(location.hash);
    if (!m) { return; }
    var row = rows[parseInt(m[1], 10)];
    if (!row) { return; }
    if (shown.indexOf(row) < 0) {
      filters.dominant.value = ""; filters.text.value = "";
      if (filters.source) { filters.source.value = ""; }
      apply();
    }
    state.page = Math.floor(shown.indexOf(row) / state.size);
    apply();
    var target = document.getElementById(location.hash.slice(1));
    if (target) { target.scrollIntoView(); }
  }

  document.querySelectorAll("#articles-table th button").forEach(function (b) {
    b.addEventListener("click", function () { sortBy(b); });
  });
  ["dominant", "source"].forEach(function (name) {
    if (filters[name]) { filters[name].addEventListener("change", function () { state.page = 0; apply(); }); }
  });
  filters.text.addEventListener("input", function () { state.page = 0; apply(); });
  pageSize.addEventListener("change", function () { state.size = parseInt(pageSize.value, 10); state.page = 0; apply(); });
  $("prev").addEventListener("click", function () { state.page -= 1; apply(); });
  $("next").addEventListener("click", function () { state.page += 1; apply(); });
  window.addEventListener("hashchange", reveal);
  apply();
  reveal();
  document.documentElement.setAttribute("data-report-ready", "");
  if (window.performance && performance.mark) { performance.mark("report-ready"); }
})();
