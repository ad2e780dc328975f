// Small progressive enhancements; every page works without this file.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Filters and the version picker apply as soon as they change.
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form && select.form.submit());
  }

  // "/" focuses the search box, as on most package sites.
  const search = document.getElementById("q");
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    const typing = target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement ||
      target instanceof HTMLSelectElement;
    if (search && event.key === "/" && !typing) {
      event.preventDefault();
      search.focus();
    }
  });

  // A copy button beside each install command.
  if (navigator.clipboard) {
    for (const pre of document.querySelectorAll("pre.cmd")) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "copy";
      button.textContent = "Copy";
      button.addEventListener("click", async () => {
        try {
          await navigator.clipboard.writeText(pre.querySelector("code").textContent.trim());
          button.textContent = "Copied";
        } catch {
          button.textContent = "Copy failed";
        }
        setTimeout(() => { button.textContent = "Copy"; }, 1500);
      });
      pre.appendChild(button);
    }
  }
});
