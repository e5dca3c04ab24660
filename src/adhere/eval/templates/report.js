// Sample filter for report.html: which prompts to show (all, regressed, improved) and from which suite.
// The state lives in the URL (#filter=regressed&suite=ifeval, or ?filter=...; #regressed works too),
// so a link can point at the regressions. Without this script every card shows.
(function () {
  "use strict";
  var bar = document.querySelector(".filters");
  if (!bar) return;
  var cards = Array.prototype.slice.call(document.querySelectorAll("article.card"));
  var groups = Array.prototype.slice.call(document.querySelectorAll(".sample-suite"));
  var buttons = Array.prototype.slice.call(bar.querySelectorAll("button[data-filter]"));
  var select = document.getElementById("suite-filter");
  var shown = document.getElementById("shown");
  var noMatch = document.getElementById("no-match");
  var FILTERS = ["all", "regressed", "improved"];
  var state = { filter: "all", suite: "all" };

  function fromUrl() {
    var hash = location.hash.replace(/^#/, "");
    if (FILTERS.indexOf(hash) >= 0) hash = "filter=" + hash;
    var params = [new URLSearchParams(location.search), new URLSearchParams(hash)];
    params.forEach(function (p) {
      if (FILTERS.indexOf(p.get("filter")) >= 0) state.filter = p.get("filter");
      if (p.get("suite")) state.suite = p.get("suite");
    });
    var known = Array.prototype.some.call(select.options, function (o) { return o.value === state.suite; });
    if (!known) state.suite = "all";
  }

  function matches(card, filter, suite) {
    var tags = (card.getAttribute("data-tags") || "").split(" ");
    var inSuite = suite === "all" || card.getAttribute("data-suite") === suite;
    return inSuite && (filter === "all" || tags.indexOf(filter) >= 0);
  }

  function apply() {
    var visible = 0, inSuite = 0;
    cards.forEach(function (card) {
      var ok = matches(card, state.filter, state.suite);
      card.hidden = !ok;
      if (ok) visible += 1;
      if (matches(card, "all", state.suite)) inSuite += 1;
    });
    groups.forEach(function (g) {
      g.hidden = !g.querySelector("article.card:not([hidden])");
    });
    buttons.forEach(function (b) {
      var f = b.getAttribute("data-filter");
      b.setAttribute("aria-pressed", String(f === state.filter));
      var n = cards.filter(function (c) { return matches(c, f, state.suite); }).length;
      b.querySelector(".c").textContent = "(" + n + ")";
    });
    select.value = state.suite;
    noMatch.hidden = visible > 0;
    shown.textContent = "Showing " + visible + " of " + inSuite + " prompts";
    document.body.setAttribute("data-filter", state.filter);
  }

  function save() {
    var hash = "filter=" + state.filter + (state.suite === "all" ? "" : "&suite=" + encodeURIComponent(state.suite));
    history.replaceState(null, "", "#" + hash);  // the hash wins over ?filter= on reload
  }

  buttons.forEach(function (b) {
    b.addEventListener("click", function () { state.filter = b.getAttribute("data-filter"); apply(); save(); });
  });
  select.addEventListener("change", function () { state.suite = select.value; apply(); save(); });
  window.addEventListener("hashchange", function () {
    if (/(^#?(regressed|improved|all)$)|filter=|suite=/.test(location.hash)) { fromUrl(); apply(); }
  });
  fromUrl();
  bar.hidden = false;
  apply();
})();
