// The report page: a proof of work (SHA-256 with leading zero bits, no third party) and
// a JSON report with what and where; nothing about the reporter.
"use strict";

const DETAILS = {
  lamp_out: [["off_at_night", "Éteint la nuit"], ["flickering", "Clignote"],
             ["on_by_day", "Allumé le jour"], ["dim", "Faible"]],
  lamp_damaged: [["knocked_down", "Renversé"], ["lantern_hanging", "Lanterne pendante"],
                 ["open_hatch", "Trappe ouverte"], ["cable_exposed", "Câble apparent"]],
  bollard_damaged: [["stuck_up", "Bloquée en haut"], ["stuck_down", "Bloquée en bas"],
                    ["damaged", "Abîmée"], ["lights_out", "Feux éteints"]],
};

function zeroBits(bytes) {
  let bits = 0;
  for (const b of bytes) {
    if (b === 0) { bits += 8; continue; }
    return bits + Math.clz32(b) - 24;
  }
  return bits;
}

async function solve(challenge, difficulty) {
  const encoder = new TextEncoder();
  for (let n = 0; ; n++) {
    const digest = await crypto.subtle.digest("SHA-256", encoder.encode(challenge + ":" + n));
    if (zeroBits(new Uint8Array(digest)) >= difficulty) return String(n);
  }
}

function say(id, text) { document.getElementById(id).textContent = text; }

function fillDetails() {
  const kind = document.getElementById("kind").value;
  const detail = document.getElementById("detail");
  detail.replaceChildren(new Option("—", ""));
  for (const [value, label] of DETAILS[kind]) detail.add(new Option(label, value));
}

async function send(event) {
  event.preventDefault();
  const form = event.target;
  document.getElementById("send").disabled = true;
  try {
    say("status", "Préparation de l'envoi…");
    const c = await (await fetch("/api/reports/challenge")).json();
    const nonce = await solve(c.challenge, c.difficulty);
    const body = {
      kind: form.kind.value,
      latitude: Number(form.latitude.value.replace(",", ".")),
      longitude: Number(form.longitude.value.replace(",", ".")),
      challenge: c.challenge,
      nonce: nonce,
    };
    if (form.detail.value) body.detail = form.detail.value;
    const answer = await fetch("/api/reports", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
    });
    const data = await answer.json();
    if (answer.status === 201) {
      say("status", "Merci ! Référence : " + data.reference);
      document.getElementById("reference").value = data.reference;
    } else {
      say("status", "Refusé : " + data.field + " — " + data.reason);
    }
  } catch (err) {
    say("status", "Échec de l'envoi, réessayez.");
  } finally {
    document.getElementById("send").disabled = false;
  }
}

async function follow(event) {
  event.preventDefault();
  const reference = encodeURIComponent(document.getElementById("reference").value.trim());
  const answer = await fetch("/api/reports/" + reference);
  if (answer.status !== 200) { say("progress", "Signalement introuvable."); return; }
  const data = await answer.json();
  say("progress", "État : " + data.status + " (signalé le " + data.reported_on + ")");
}

function locate() {
  navigator.geolocation.getCurrentPosition((p) => {
    document.getElementById("latitude").value = p.coords.latitude.toFixed(5);
    document.getElementById("longitude").value = p.coords.longitude.toFixed(5);
  }, () => say("status", "Position indisponible : saisissez-la."));
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("kind").addEventListener("change", fillDetails);
  document.getElementById("report").addEventListener("submit", send);
  document.getElementById("follow").addEventListener("submit", follow);
  document.getElementById("locate").addEventListener("click", locate);
  fillDetails();
});
