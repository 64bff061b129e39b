// Sparekey web pages: the WebAuthn steps and a print button. Nothing else needs a script.
"use strict";
document.documentElement.classList.add("js");

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrfToken()},
    body: JSON.stringify(body || {}),
  });
  let answer = {};
  try { answer = await response.json(); } catch (e) { answer = {}; }
  if (!response.ok || answer.error) {
    throw new Error(answer.error || "The server refused the request. Reload the page and try again.");
  }
  return answer;
}

function explain(error) {
  if (error && error.name === "NotAllowedError") {
    return "The browser or the key did not complete the step (it was cancelled or timed out). Try again.";
  }
  if (error && error.name === "InvalidStateError") {
    return "This security key or passkey is already registered.";
  }
  return (error && error.message) || "Something went wrong. Try again.";
}

async function register(box) {
  const label = box.querySelector("[data-label]");
  const begun = await post(box.dataset.options);
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(begun.options);
  const credential = await navigator.credentials.create({publicKey});
  return post(box.dataset.finish, {credential: credential.toJSON(), label: label ? label.value : ""});
}

async function authenticate(box) {
  const begun = await post(box.dataset.options);
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(begun.options);
  const credential = await navigator.credentials.get({publicKey});
  return post(box.dataset.finish, {credential: credential.toJSON(), next: box.dataset.next});
}

for (const box of document.querySelectorAll("[data-webauthn]")) {
  const start = box.querySelector("[data-start]");
  const error = box.querySelector("[data-error]");
  if (!window.PublicKeyCredential || !PublicKeyCredential.parseCreationOptionsFromJSON) {
    start.disabled = true;
    error.hidden = false;
    error.textContent = "This browser cannot use security keys or passkeys here.";
    continue;
  }
  start.addEventListener("click", async () => {
    start.disabled = true;
    error.hidden = true;
    try {
      const done = box.dataset.webauthn === "register" ? await register(box) : await authenticate(box);
      window.location.assign(done.redirect);
    } catch (e) {
      error.textContent = explain(e);
      error.hidden = false;
      start.disabled = false;
      start.focus();
    }
  });
}

for (const button of document.querySelectorAll('[data-action="print"]')) {
  button.addEventListener("click", () => window.print());
}
