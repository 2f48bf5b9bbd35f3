// The embeddable credential form (/connect/embed/…), once mParticle accepted the credentials: tell the partner's
// page that frames it, at the one origin it was opened for (never "*"), so the partner's product can move on.
// Message: {"type": "mpfeed:credentials", "state": "in_use" | "held", "workspace": "<slug>"}.
(function () {
  "use strict";
  var done = document.getElementById("embed-done");
  if (!done || window.parent === window) return;
  var origin = done.getAttribute("data-origin");
  if (!origin) return; // several partner pages allowed and none named: tell none of them
  window.parent.postMessage(
    {
      type: "mpfeed:credentials",
      state: done.getAttribute("data-state"),
      workspace: done.getAttribute("data-workspace"),
    },
    origin
  );
})();
