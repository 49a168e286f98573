// The console's behaviour: the fleet map, live updates (server-sent events) and a
// command's acknowledgement. No inline script anywhere (Content-Security-Policy); every
// HTML fragment inserted here was escaped by the server.
"use strict";

(function () {
  function onReady(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  function fetchJson(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(url + ": " + r.status); return r.json(); });
  }

  // -- the fleet map ------------------------------------------------------------------
  var markers = {};

  function colour(g) { return g.connected ? "#1a7f37" : "#6e7781"; }

  function drawMap(el) {
    if (!window.L) return;
    var map = L.map(el, { preferCanvas: true, attributionControl: false, maxZoom: 19, minZoom: 3 });
    var tiles = el.getAttribute("data-tiles");
    if (tiles) L.tileLayer(tiles, { maxZoom: 19 }).addTo(map);
    var group = L.markerClusterGroup ? L.markerClusterGroup({ chunkedLoading: true }) : L.layerGroup();
    group.addTo(map);
    fetchJson("/fleet.json").then(function (data) {
      var bounds = [];
      data.gateways.forEach(function (g) {
        if (!g.latitude && !g.longitude) return;
        var m = L.circleMarker([g.latitude, g.longitude], {
          radius: 8, color: colour(g), fillColor: colour(g), fillOpacity: 0.8,
        });
        m.bindTooltip(g.id + " (" + g.commune + ")");
        m.on("click", function () { window.location.href = "/gateways/" + encodeURIComponent(g.id); });
        group.addLayer(m);
        markers[g.id] = m;
        bounds.push([g.latitude, g.longitude]);
      });
      if (bounds.length) map.fitBounds(bounds, { padding: [30, 30], maxZoom: 16 });
      el.setAttribute("data-ready", String(bounds.length));
    });
  }

  var refreshing = null;
  function refreshFleet() {
    if (refreshing) return;
    refreshing = setTimeout(function () {
      refreshing = null;
      fetchJson("/fleet.json").then(function (data) {
        data.gateways.forEach(function (g) {
          var row = document.querySelector('tr[data-gateway="' + CSS.escape(g.id) + '"] .online-cell span');
          if (row) {
            row.className = "state " + (g.connected ? "online" : "offline");
          }
          if (markers[g.id]) markers[g.id].setStyle({ color: colour(g), fillColor: colour(g) });
        });
      });
    }, 300);
  }

  // -- live updates -------------------------------------------------------------------
  function live(url) {
    var list = document.getElementById("live-events");
    var source = new EventSource(url);
    source.addEventListener("event", function (msg) {
      var data = JSON.parse(msg.data);
      if (list) {
        list.insertAdjacentHTML("afterbegin", data.html);
        while (list.children.length > 200) list.removeChild(list.lastChild);
      }
      if (document.getElementById("fleet")) refreshFleet();
    });
    source.addEventListener("devices", function (msg) {
      var data = JSON.parse(msg.data);
      Object.keys(data.devices).forEach(function (id) {
        var cell = document.querySelector('tr[data-device="' + CSS.escape(id) + '"] .device-state');
        if (cell) {
          cell.textContent = data.devices[id];
          cell.classList.add("changed");
        }
      });
    });
    source.addEventListener("end", function () { source.close(); });
    document.body.setAttribute("data-live-open", "yes");
  }

  // -- a command's acknowledgement ----------------------------------------------------
  var FINAL = ["DONE", "REFUSED", "EXPIRED"];
  function followCommand(el) {
    var id = el.getAttribute("data-command");
    function poll() {
      fetchJson("/commands/" + encodeURIComponent(id) + ".json").then(function (data) {
        el.textContent = data.status;
        document.getElementById("command-detail").textContent = data.detail || "—";
        if (FINAL.indexOf(data.status) < 0) setTimeout(poll, 1000);
      }).catch(function () { setTimeout(poll, 3000); });
    }
    poll();
  }

  onReady(function () {
    var mapEl = document.getElementById("map");
    if (mapEl) drawMap(mapEl);
    var url = document.body.getAttribute("data-live");
    if (url) live(url);
    var command = document.getElementById("command-status");
    if (command) followCommand(command);
  });
})();
