// The policy editor's check as you type: the draft is POSTed (with this session's CSRF token)
// to the console's validate endpoint a moment after the last keystroke; the answer is shown
// in a live region. Written by the project; nothing else runs on these pages.
(function () {
  "use strict";
  var form = document.getElementById("policy-form");
  if (!form) { return; }
  var source = document.getElementById("source");
  var format = document.getElementById("format");
  var status = document.getElementById("validation");
  var cedar = document.getElementById("draft-cedar");
  var csrf = form.querySelector("input[name=csrf]").value;
  var timer = null;
  var sent = 0;

  function show(text, ok) {
    status.textContent = text;
    status.className = ok ? "ok" : "bad";
  }

  function check() {
    var mine = ++sent;
    var body = new URLSearchParams({ csrf: csrf, format: format.value, source: source.value });
    fetch(form.dataset.validate, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: body.toString()
    }).then(function (response) {
      if (!response.ok) { throw new Error("the check answered " + response.status); }
      return response.json();
    }).then(function (result) {
      if (mine !== sent) { return; }  // a newer check is on its way
      if (result.valid) {
        var warned = (result.warnings || []).length;
        show("Valid: rules " + result.rule_ids.join(", ") +
             (warned ? ". Warnings: " + result.warnings.join("; ") : "."), true);
        cedar.textContent = result.cedar;
      } else {
        show("Invalid: " + result.error, false);
        cedar.textContent = "";
      }
    }).catch(function (error) {
      if (mine === sent) { show("Could not check the draft: " + error.message, false); }
    });
  }

  function later() {
    window.clearTimeout(timer);
    timer = window.setTimeout(check, 300);
  }

  source.addEventListener("input", later);
  format.addEventListener("change", check);
  check();
}());
