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

  // -- the city map: every asset, clustered, coloured by state ----------------------
  // States: a in alarm, o offline, f failed, l lit, d dimmed, 0 off, n normal, "" not asked.
  var COLOURS = { a: "#cf222e", o: "#57606a", f: "#8250df", l: "#bf8700", d: "#0a7d74",
                  "0": "#24292f", n: "#1a7f37", "": "#0550ae" };
  var RANK = { a: 6, f: 5, o: 4, "0": 3, d: 2, l: 1, n: 1, "": 0 };
  var city = { map: null, gateways: [], byGateway: {}, watched: "" };
  var markers = {};

  function paint(m) {
    var c = COLOURS[m.options.state] || COLOURS[""];
    m.setStyle({ color: c, fillColor: c });
  }

  function clusterIcon(cluster) {
    var worst = "", children = cluster.getAllChildMarkers();
    for (var i = 0; i < children.length; i++) {
      var s = children[i].options.state || "";
      if (RANK[s] > RANK[worst]) worst = s;
    }
    var n = cluster.getChildCount();
    var size = n < 100 ? 34 : n < 1000 ? 42 : 50;
    return L.divIcon({ html: "<span>" + n + "</span>", className: "cluster cluster-" + (worst === "0" ? "off" : worst || "none"),
                       iconSize: L.point(size, size) });
  }

  // The communes' outlines from the bundled GeoJSON (approximate unless an operator put
  // the real ones in), under the markers, in their own pane: a map without tiles still
  // shows where each commune is.
  function drawOutlines(map, el) {
    map.createPane("communes").style.zIndex = 350;
    fetchJson("/static/communes.geojson").then(function (data) {
      var layer = L.geoJSON(data, {
        pane: "communes", renderer: L.svg({ pane: "communes" }),
        style: function () {
          return { className: "commune-outline", color: "#6e7781", weight: 1.5, fillColor: "#d0d7de",
                   fillOpacity: 0.25 };
        },
        onEachFeature: function (feature, shape) {
          var name = document.createElement("span");  // text, never HTML: the file may be swapped
          name.textContent = String((feature.properties || {}).name || "");
          shape.bindTooltip(name, { sticky: true });
        },
      }).addTo(map);
      layer.bringToBack();
      // No asset placed yet (an empty register): the métropole is what there is to see.
      if (!map._loaded && layer.getLayers().length) map.fitBounds(layer.getBounds());
      el.setAttribute("data-communes", String(layer.getLayers().length));
    }).catch(function () { el.setAttribute("data-communes", "0"); });
  }

  function drawMap(el) {
    if (!window.L) return;
    var map = L.map(el, { preferCanvas: true, attributionControl: false, maxZoom: 19, minZoom: 3,
                          keyboard: true });
    city.map = map;
    var tiles = el.getAttribute("data-tiles");
    if (tiles) L.tileLayer(tiles, { maxZoom: 19 }).addTo(map);
    drawOutlines(map, el);
    var group = L.markerClusterGroup
      ? L.markerClusterGroup({ chunkedLoading: true, chunkInterval: 100, chunkDelay: 10,
                               disableClusteringAtZoom: 18, spiderfyOnMaxZoom: false,
                               showCoverageOnHover: false, iconCreateFunction: clusterIcon,
                               maxClusterRadius: 60 })
      : L.layerGroup();
    group.addTo(map);
    var started = performance.now();
    fetchJson("/city.json").then(function (data) {
      var bounds = L.latLngBounds([]), layers = [], withCabinet = {};
      city.gateways = data.gateways;
      data.assets.forEach(function (a) {
        var g = data.gateways[a[3]];
        if (a[0] === "c") withCabinet[a[3]] = true;
        var m = L.circleMarker([a[1], a[2]], {
          radius: a[0] === "l" ? 5 : 8, weight: a[0] === "l" ? 1 : 3, fillOpacity: 0.85,
          state: a[5], gateway: g[0], device: a[4],
        });
        paint(m);
        m.bindTooltip(g[0] + (a[4] ? " / " + a[4] : "") + " (" + g[4] + ")");
        m.on("click", function () { window.location.href = "/gateways/" + encodeURIComponent(g[0]); });
        layers.push(m);
        (city.byGateway[g[0]] = city.byGateway[g[0]] || []).push(m);
        bounds.extend([a[1], a[2]]);
      });
      // Cabinets without a register entry still show, at the gateway's position.
      data.gateways.forEach(function (g, n) {
        if (withCabinet[n] || (!g[1] && !g[2])) return;
        var m = L.circleMarker([g[1], g[2]], { radius: 8, weight: 3, fillOpacity: 0.85,
                                               state: g[3] ? "n" : "o", gateway: g[0], device: "" });
        paint(m);
        m.bindTooltip(g[0] + " (" + g[4] + ")");
        m.on("click", function () { window.location.href = "/gateways/" + encodeURIComponent(g[0]); });
        layers.push(m);
        markers[g[0]] = m;
        (city.byGateway[g[0]] = city.byGateway[g[0]] || []).push(m);
        bounds.extend([g[1], g[2]]);
      });
      if (group.addLayers) {
        group.addLayers(layers);
      } else {
        layers.forEach(function (m) { group.addLayer(m); });
      }
      if (bounds.isValid()) map.fitBounds(bounds, { padding: [30, 30], maxZoom: 16 });
      // ?focus=<cabinet>: the map opens on that cabinet, close enough to see each lamp.
      var focus = el.getAttribute("data-focus");
      data.gateways.forEach(function (g) {
        if (focus && g[0] === focus && (g[1] || g[2])) map.setView([g[1], g[2]], 18);
      });
      el.setAttribute("data-ready", String(layers.length));
      el.setAttribute("data-ms", String(Math.round(performance.now() - started)));
      map.on("moveend", watchVisible);
      watchVisible();
    });
  }

  // Zoomed in (few cabinets on screen), follow the devices' own state live: the page's one
  // feed is opened again on those cabinets (its first frame holds their whole state, later
  // ones what changed); zoomed out, back to the city's events alone.
  var watchTimer = null;
  function watchVisible() {
    clearTimeout(watchTimer);
    watchTimer = setTimeout(function () {
      var bounds = city.map.getBounds(), ids = [];
      city.gateways.forEach(function (g) {
        if (g[3] && bounds.contains([g[1], g[2]])) ids.push(g[0]);
      });
      if (ids.length > 50) ids = [];
      var key = ids.join(",");
      if (key === city.watched) return;
      city.watched = key;
      var url = document.body.getAttribute("data-live") || "/live";
      openLive(ids.length ? "/live?gateways=" + encodeURIComponent(key) : url);
    }, 250);
  }

  function recolour(gatewayId, codes) {
    (city.byGateway[gatewayId] || []).forEach(function (m) {
      var code = m.options.device ? codes[m.options.device] : undefined;
      if (code !== undefined && m.options.state !== "a") {
        m.options.state = code;
        paint(m);
      }
    });
    var el = document.getElementById("map");
    if (el) el.setAttribute("data-updated", gatewayId + ":" + Date.now());
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
          if (markers[g.id]) { markers[g.id].options.state = g.connected ? "n" : "o"; paint(markers[g.id]); }
        });
      });
    }, 300);
  }

  // -- live updates -------------------------------------------------------------------
  // One feed per page at a time: the map opens it again when the cabinets it follows change.
  var pageSource = null;
  function openLive(url) {
    if (pageSource) pageSource.close();
    pageSource = live(url);
  }

  function live(url) {
    var list = document.getElementById("live-events");
    if (document.getElementById("alarms")) return liveAlarms(url);
    var source = new EventSource(url);
    source.addEventListener("event", function (msg) {
      var data = JSON.parse(msg.data);
      if (list) {
        list.insertAdjacentHTML("afterbegin", data.html);
        while (list.children.length > 200) list.removeChild(list.lastChild);
      }
      if (document.getElementById("fleet")) refreshFleet();
    });
    // The followed cabinets' devices that changed: cabinet -> device -> [text, colour].
    source.addEventListener("states", function (msg) {
      var gateways = JSON.parse(msg.data).gateways;
      Object.keys(gateways).forEach(function (gid) {
        var devices = gateways[gid], codes = {};
        Object.keys(devices).forEach(function (id) {
          codes[id] = devices[id][1];
          var cell = document.querySelector('tr[data-device="' + CSS.escape(id) + '"] .device-state');
          if (cell) {
            cell.textContent = devices[id][0];
            cell.classList.add("changed");
          }
        });
        if (city.map) recolour(gid, codes);
      });
    });
    source.addEventListener("end", function () { source.close(); });
    source.addEventListener("open", function () { document.body.setAttribute("data-live-open", "yes"); });
    return source;
  }

  // -- alarms: rows replaced, added or removed as they change ------------------------
  function liveAlarms(url) {
    var body = document.querySelector("#alarms tbody");
    var source = new EventSource(url);
    source.addEventListener("alarm", function (msg) {
      var data = JSON.parse(msg.data);
      var row = body.querySelector('tr[data-alarm="' + data.id + '"]');
      if (!data.html) {
        if (row) row.parentNode.removeChild(row);
      } else if (row) {
        row.insertAdjacentHTML("afterend", data.html);
        row.parentNode.removeChild(row);
      } else if (!data.root) {
        body.insertAdjacentHTML("afterbegin", data.html);
      } else {
        var root = body.querySelector('tr[data-alarm="' + data.root + '"]');
        if (root) root.insertAdjacentHTML("afterend", data.html);
      }
      refreshCount();
    });
    source.addEventListener("open", function () { document.body.setAttribute("data-live-open", "yes"); });
    return source;
  }

  // -- the number of unacknowledged alarms, on every page ------------------------------
  function refreshCount() {
    var badge = document.getElementById("alarm-count");
    if (!badge) return;
    fetchJson("/alarms/count.json").then(function (data) {
      var n = data.unacknowledged;
      badge.textContent = n >= data.max ? data.max + "+" : String(n);
      badge.className = "badge" + (n ? " alert" : "");
    }).catch(function () {});
  }

  // -- a playbook run's progress ----------------------------------------------------
  function followRun(el) {
    var id = el.getAttribute("data-run");
    function poll() {
      fetchJson("/playbooks/runs/" + encodeURIComponent(id) + ".json").then(function (data) {
        el.textContent = data.status_text;
        document.getElementById("run-done").textContent = data.done;
        var cells = document.querySelectorAll("#steps .step-status");
        data.steps.forEach(function (s, n) { if (cells[n]) cells[n].textContent = s.status || "—"; });
        if (data.status !== "ended") setTimeout(poll, 1000);
      }).catch(function () { setTimeout(poll, 3000); });
    }
    setTimeout(poll, 1000);
  }

  // -- a command's acknowledgement ----------------------------------------------------
  var FINAL = ["DONE", "REFUSED", "EXPIRED"];
  function followCommand(el) {
    var id = el.getAttribute("data-command");
    function poll() {
      // The orchestrator answers once the gateway has (or after 10 s): ask again at once.
      fetchJson("/commands/" + encodeURIComponent(id) + ".json?wait").then(function (data) {
        el.textContent = data.status;
        document.getElementById("command-detail").textContent = data.detail || "—";
        if (FINAL.indexOf(data.status) < 0) setTimeout(poll, 0);
      }).catch(function () { setTimeout(poll, 3000); });
    }
    poll();
  }

  onReady(function () {
    var mapEl = document.getElementById("map");
    if (mapEl) drawMap(mapEl);
    var url = document.body.getAttribute("data-live");
    if (url) openLive(url);
    var command = document.getElementById("command-status");
    if (command) followCommand(command);
    var run = document.getElementById("run-status");
    if (run) followRun(run);
    refreshCount();
    if (!document.getElementById("alarms")) setInterval(refreshCount, 15000);
  });
})();
