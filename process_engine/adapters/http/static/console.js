// The console's one script. The Content-Security-Policy allows scripts from this server
// only and no inline script, so everything the pages do in the browser is here:
// drawing the Mermaid graphs, and the instance buttons, which call the JSON API.
(function () {
  "use strict";

  function drawGraphs() {
    var graphs = document.querySelectorAll("pre.mermaid");
    if (graphs.length === 0) {
      return;
    }
    if (!window.mermaid) {
      document.body.setAttribute("data-graphs", "failed");
      return;
    }
    window.mermaid.initialize({
      startOnLoad: false,
      securityLevel: "strict",
      theme: "default",
      maxTextSize: 2000000,
      maxEdges: 5000,
      flowchart: { htmlLabels: true, useMaxWidth: true, wrappingWidth: 260 },
    });
    window.mermaid.run({ nodes: graphs }).then(
      function () {
        document.body.setAttribute("data-graphs", "drawn");
      },
      function (problem) {
        document.body.setAttribute("data-graphs", "failed");
        graphs.forEach(function (graph) {
          var note = document.createElement("p");
          note.className = "problem";
          note.textContent = "The graph could not be drawn: " + problem;
          graph.after(note);
        });
      }
    );
  }

  // The bearer token comes from the signed-in session (an HttpOnly cookie no script
  // can read), asked for at the moment of the action.
  function sessionToken() {
    return fetch("/ui/session/token", { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (response) {
      if (!response.ok) {
        throw new Error("sign in again (the console session has ended)");
      }
      return response.json().then(function (body) {
        return body.token;
      });
    });
  }

  function control(button, instanceId, status) {
    var action = button.getAttribute("data-action");
    if (action === "cancel" && !window.confirm("Cancel this instance? Its compensations run and it ends as cancelled.")) {
      return;
    }
    button.disabled = true;
    status.textContent = action + "\u2026";
    sessionToken()
      .then(function (token) {
        return fetch("/instances/" + encodeURIComponent(instanceId) + "/" + encodeURIComponent(action), {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", Authorization: "Bearer " + token, Accept: "application/json" },
          body: "{}",
        });
      })
      .then(function (response) {
        return response.json().then(
          function (body) {
            return { ok: response.ok, body: body };
          },
          function () {
            return { ok: false, body: { error: "HTTP " + response.status } };
          }
        );
      })
      .then(function (result) {
        if (!result.ok) {
          throw new Error(result.body.error || "the API refused");
        }
        status.textContent = action + ": the instance is " + result.body.status;
        window.location.reload();
      })
      .catch(function (problem) {
        status.textContent = action + " failed: " + problem.message;
        button.disabled = false;
      });
  }

  function wireControls() {
    var box = document.getElementById("controls");
    if (!box) {
      return;
    }
    var instanceId = box.getAttribute("data-instance");
    var status = box.querySelector(".control-status");
    box.querySelectorAll("button[data-action]").forEach(function (button) {
      button.addEventListener("click", function () {
        control(button, instanceId, status);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wireControls();
    drawGraphs();
  });
})();
