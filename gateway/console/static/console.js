// The console's and the portal's only script (CSP: script-src 'self'; no inline handlers).
// Dialogs: confirmations, and the copy-once dialog whose value leaves the page when it closes.

for (const button of document.querySelectorAll("button[data-open]")) {
  button.addEventListener("click", () => {
    const dialog = document.getElementById(button.dataset.open);
    if (dialog) dialog.showModal();
  });
}

for (const button of document.querySelectorAll("[data-close]")) {
  button.addEventListener("click", () => button.closest("dialog").close());
}

for (const button of document.querySelectorAll("button[data-copy]")) {
  button.addEventListener("click", async () => {
    const value = document.getElementById(button.dataset.copy).textContent;
    const status = document.getElementById("reveal-status");
    try {
      await navigator.clipboard.writeText(value);
      status.textContent = "Copied.";
    } catch {
      status.textContent = "Could not copy: select the value and copy it by hand.";
    }
  });
}

// The copy-once dialog: shown modal; closing it removes it (and its value) from the page, and
// the address becomes the account page's, so a reload shows the page, never the value again.
// The "close" event comes a task later than close() itself: the dialog is removed at once by
// the Done button, and by the event for the other ways out (Escape).
const once = document.querySelector("dialog[data-once]");
if (once) {
  const forget = () => {
    if (!once.isConnected) return;
    once.remove();
    history.replaceState(null, "", once.dataset.return);
  };
  once.removeAttribute("open");
  once.addEventListener("close", forget);
  for (const done of once.querySelectorAll("[data-close]")) done.addEventListener("click", forget);
  once.showModal();
}

// The portal's one-time link carries its token after the "#": browsers never send that part
// to a server. Take it out of the address bar, and post it only when the person clicks "Open
// API keys": a link scanner that runs scripts loads the page but does not use the link up.
const enter = document.getElementById("enter");
if (enter) {
  const token = location.hash.slice(1);
  history.replaceState(null, "", location.pathname);
  if (token) {
    document.getElementById("enter-token").value = token;
  } else {
    enter.hidden = true;
    document.getElementById("enter-missing").hidden = false;
  }
}
