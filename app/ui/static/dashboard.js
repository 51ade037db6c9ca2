// The built-in dashboard: reads the public API (relative URLs), draws tiles, the GPU table,
// namespaces and processes, and refreshes with ETags, touching only the cells that changed.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  // ?refresh=<seconds> changes the period (the default is 10 s).
  const REFRESH_MS = Math.max(1, Number(params.get("refresh")) || 10) * 1000;
  const SPARK_REFRESH_MS = 60000;
  // The window figures (cluster tiles, namespaces) are asked once a minute: each is a
  // subquery over every GPU across the hour, seconds of Prometheus' CPU at 8,000 GPUs, and
  // an hour's averages move little in a minute. After a failure they are asked every refresh.
  const WINDOW_REFRESH_MS = Math.max(REFRESH_MS, 60000);
  let windowAsked = -Infinity;  // Date.now() when the window figures were last asked
  const MAX_PROCESSES = 500;
  const DASH = "—";
  const STATES = ["allocated-busy", "allocated-idle", "free", "unallocated-busy", "unknown"];
  const HEALTH = ["ok", "warning", "critical", "unknown"];
  const GIB = 1024 ** 3;

  const $ = (selector) => document.querySelector(selector);
  const etags = new Map();  // path -> ETag of the answer we hold
  const answers = new Map();  // path -> the last `data` we received
  const failures = new Map();  // path -> what failed on its last fetch
  let lastSuccess = null;  // Date.now() of the last metrics answer (200 or 304)
  let firstPaintDone = false;

  // ------------------------------------------------------------------ fetching

  /** GET `path` (relative) with If-None-Match; resolve to "changed", "same" or throw. */
  async function fetchData(path) {
    const headers = {Accept: "application/json"};
    if (etags.has(path)) headers["If-None-Match"] = etags.get(path);
    let response;
    try {
      // no-store: we validate ourselves, so a 304 reaches us and costs no body.
      response = await fetch(path, {headers, cache: "no-store"});
    } catch (err) {
      throw new Error(`the API did not answer (${err.message})`);
    }
    if (response.status === 304) return "same";
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    if (!response.ok || !body || body.success !== true) {
      const error = new Error(body && body.error ? body.error : `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    const etag = response.headers.get("ETag");
    if (etag) etags.set(path, etag); else etags.delete(path);
    answers.set(path, body.data);
    return "changed";
  }

  const PATHS = {
    gpus: "api/v1/gpu/metrics",
    processes: "api/v1/gpu/processes",
    cluster: "api/v1/cluster?window=1h",
    namespaces: "api/v1/namespaces?window=1h",
  };

  // What to redraw when an answer changed. Each is drawn as soon as it arrives: the GPU
  // table does not wait for the window figures, which take Prometheus longer.
  const RENDER = {
    gpus: () => { renderGpus(); renderTiles(); },
    cluster: () => renderTiles(),
    namespaces: () => renderNamespaces(),
    processes: () => renderProcesses(),
  };

  async function load(name) {
    try {
      const result = await fetchData(PATHS[name]);
      failures.delete(name);
      if (name === "gpus") lastSuccess = Date.now();
      if (result === "changed") RENDER[name]();
    } catch (err) {
      failures.set(name, err);
    } finally {
      renderStatus();
    }
  }

  async function refresh() {
    try {
      // The GPU list first, alone: the table is what a visitor waits for, and the window
      // figures would compete with it for Prometheus.
      await load("gpus");
      const names = ["processes"];
      const windowFailed = failures.has("cluster") || failures.has("namespaces");
      if (windowFailed || Date.now() - windowAsked >= WINDOW_REFRESH_MS) {
        windowAsked = Date.now();
        names.push("cluster", "namespaces");
      }
      await Promise.allSettled(names.map(load));
    } finally {
      setTimeout(refresh, REFRESH_MS);
    }
  }

  // ------------------------------------------------------------------ formatting

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const fixed = (v, digits) => (isNum(v) ? v.toFixed(digits) : DASH);
  const text = (v) => (v === null || v === undefined || v === "" ? DASH : String(v));
  const gib = (v) => (isNum(v) ? (v / GIB).toFixed(1) : DASH);

  function duration(seconds) {
    if (!isNum(seconds)) return DASH;
    if (seconds < 60) return `${Math.round(seconds)}s`;
    if (seconds < 3600) return `${Math.round(seconds / 60)}m`;
    return `${(seconds / 3600).toFixed(1)}h`;
  }

  function gpuLabel(row) {
    const index = isNum(row.gpu_index) ? String(row.gpu_index) : DASH;
    if (row.mig_instance === null || row.mig_instance === undefined) return index;
    return `${index} MIG ${row.mig_profile || ""} #${row.mig_instance}`.replace("  ", " ");
  }

  function rowKey(row) {
    return `${row.node_name}|${row.uuid || row.gpu_index}|${row.mig_instance ?? ""}`;
  }

  const byName = new Intl.Collator(undefined, {numeric: true}).compare;

  // ------------------------------------------------------------------ the GPU table

  // Each column: what it shows (text, and a bar's percentage), and what it sorts by.
  const COLUMNS = [
    {key: "node", cls: "node", show: (r) => r.node_name, sort: (r) => r.node_name},
    {key: "gpu", cls: "gpu num", show: gpuLabel,
     sort: (r) => [r.node_name, r.gpu_index ?? -1, r.mig_instance ?? -1]},
    {key: "model", cls: "model", show: (r) => text(r.gpu_name), sort: (r) => r.gpu_name},
    {key: "utilization", cls: "utilization num", bar: (r) => r.utilization,
     show: (r) => (isNum(r.utilization) ? `${r.utilization.toFixed(1)}%` : DASH),
     sort: (r) => r.utilization},
    {key: "memory", cls: "memory num", bar: (r) => r.memory_utilization,
     show: (r) => (isNum(r.memory_used) || isNum(r.memory_total)
       ? `${gib(r.memory_used)} / ${gib(r.memory_total)} GiB` : DASH),
     sort: (r) => r.memory_utilization ?? r.memory_used},
    {key: "temperature", cls: "temperature num", show: (r) => fixed(r.temperature, 0),
     sort: (r) => r.temperature},
    {key: "power", cls: "power num", show: (r) => fixed(r.power_usage, 1),
     sort: (r) => r.power_usage},
    {key: "pod", cls: "pod", show: (r) => text(r.pod), sort: (r) => r.pod},
    {key: "namespace", cls: "namespace", show: (r) => text(r.namespace), sort: (r) => r.namespace},
    {key: "state", cls: "state", col: "state", show: (r) => text(r.state),
     klass: (r) => `state state-${r.state || "unknown"}`, sort: (r) => r.state},
    {key: "idle", cls: "idle num", col: "state", show: (r) => duration(r.idle_seconds),
     sort: (r) => r.idle_seconds},
    {key: "health", cls: "health", col: "health",
     show: (r) => (r.health ? r.health.status : DASH),
     klass: (r) => `health health-${r.health ? r.health.status : "none"}`,
     title: (r) => (r.health && r.health.reasons
       ? r.health.reasons.map((reason) => `${reason.code}: ${reason.message}`).join("\n") : ""),
     sort: (r) => (r.health ? HEALTH.indexOf(r.health.status) : null)},
  ];

  const table = $("#gpus");
  const tbody = table.tBodies[0];
  const rows = new Map();  // rowKey -> {tr, cells, shown, data, haystack}
  let order = [];  // rowKeys in display order
  let sortKey = "node";
  let sortDir = 1;
  let filterText = "";

  const template = (() => {
    const tr = document.createElement("tr");
    tr.className = "gpu";
    for (const column of COLUMNS) {
      const td = document.createElement("td");
      td.className = column.cls;
      if (column.col) td.dataset.col = column.col;
      if (column.key === "node") {
        const name = document.createElement("span");
        name.className = "name";
        td.appendChild(name);
      } else if (column.bar) {
        const bar = document.createElement("span");
        bar.className = "cell-bar";
        bar.appendChild(document.createElement("span"));
        const label = document.createElement("span");
        label.className = "bar-text";
        td.append(bar, label);
      }
      tr.appendChild(td);
    }
    return tr;
  })();

  function newRow() {
    const tr = template.cloneNode(true);
    const cells = Array.from(tr.cells, (td, i) => {
      const column = COLUMNS[i];
      if (column.key === "node") return {td, label: td.firstChild};
      if (column.bar) return {td, fill: td.firstChild.firstChild, label: td.lastChild};
      return {td, label: td};
    });
    return {tr, cells, shown: new Array(COLUMNS.length).fill(null), data: null};
  }

  /** Write a row's cells, each only when what it shows changed. */
  function updateRow(entry, data) {
    entry.data = data;
    COLUMNS.forEach((column, i) => {
      const shown = column.show(data);
      const percent = column.bar ? column.bar(data) : null;
      const klass = column.klass ? column.klass(data) : null;
      const title = column.title ? column.title(data) : null;
      const signature = `${shown}|${percent}|${klass}|${title}`;
      if (entry.shown[i] === signature) return;
      entry.shown[i] = signature;
      const cell = entry.cells[i];
      cell.label.textContent = shown;
      if (column.bar) {
        cell.fill.style.width = isNum(percent) ? `${Math.max(0, Math.min(100, percent))}%` : "0";
      }
      if (klass) cell.td.className = `${column.cls} ${klass}`;
      if (column.title) cell.td.title = title;
    });
    entry.haystack = [data.node_name, data.gpu_name, data.pod, data.namespace,
      ...(data.pods || []).flatMap((p) => [p.pod, p.namespace])]
      .filter(Boolean).join(" ").toLowerCase();
  }

  function compareRows(a, b) {
    const column = COLUMNS.find((c) => c.key === sortKey);
    const x = column.sort(a.data);
    const y = column.sort(b.data);
    const missingX = x === null || x === undefined;
    const missingY = y === null || y === undefined;
    if (missingX || missingY) {
      // Values not reported sort last, whichever the direction.
      if (missingX !== missingY) return missingX ? 1 : -1;
    } else {
      const c = compareValues(x, y);
      if (c !== 0) return c * sortDir;
    }
    return compareValues(COLUMNS[1].sort(a.data), COLUMNS[1].sort(b.data));
  }

  function compareValues(x, y) {
    if (Array.isArray(x)) {
      for (let i = 0; i < x.length; i += 1) {
        const c = compareValues(x[i], y[i]);
        if (c !== 0) return c;
      }
      return 0;
    }
    if (typeof x === "number" && typeof y === "number") return x - y;
    return byName(String(x), String(y));
  }

  // A first answer larger than this is drawn in two steps: these rows at once (the top
  // of the table, in the API's order, which is the default sort), the rest in chunks.
  // (?first_rows= changes it: the tests draw a small cluster in steps too.)
  const FIRST_ROWS = Math.max(1, Number(params.get("first_rows")) || 300);
  const CHUNK_ROWS = 2000;
  let pending = null;  // the timer of a first render still adding rows

  /** Create or update the rows of `list`; with `prune`, remove every other row. */
  function syncRows(list, prune) {
    const seen = new Set();
    for (const row of list) {
      const key = rowKey(row);
      seen.add(key);
      let entry = rows.get(key);
      if (!entry) {
        entry = newRow();
        entry.tr.dataset.key = key;
        rows.set(key, entry);
      }
      updateRow(entry, row);
    }
    if (!prune) return;
    for (const [key, entry] of rows) {
      if (!seen.has(key)) {
        entry.tr.remove();
        rows.delete(key);
      }
    }
  }

  function renderGpus() {
    const data = answers.get(PATHS.gpus) || [];
    if (pending !== null) { clearTimeout(pending); pending = null; }
    const inSteps = rows.size === 0 && data.length > FIRST_ROWS;
    syncRows(inSteps ? data.slice(0, FIRST_ROWS) : data, !inSteps);
    table.classList.toggle("no-state", !data.some((r) => "state" in r));
    table.classList.toggle("no-health", !data.some((r) => "health" in r));
    arrange();
    if (!firstPaintDone) {
      firstPaintDone = true;
      // "rows drawn": after the browser has laid out and painted the first frame of rows.
      requestAnimationFrame(() => setTimeout(() => {
        performance.mark("gpu-rows-drawn");
        document.body.dataset.rowsDrawn = "true";
      }, 0));
    }
    if (!inSteps) {
      document.body.dataset.rowsComplete = "true";
      return;
    }
    let next = FIRST_ROWS;
    const more = () => {
      const end = Math.min(next + CHUNK_ROWS, data.length);
      syncRows(data.slice(next, end), false);
      next = end;
      if (next < data.length) {
        pending = setTimeout(more, 0);
        return;
      }
      pending = null;
      arrange();
      performance.mark("gpu-rows-complete");
      document.body.dataset.rowsComplete = "true";
    };
    pending = setTimeout(more, 0);
  }

  /** Put rows in sort order (moving DOM nodes only when the order changed), filter, group. */
  function arrange() {
    const entries = Array.from(rows.values()).sort(compareRows);
    const keys = entries.map((e) => rowKey(e.data));
    if (keys.length !== order.length || keys.some((k, i) => k !== order[i])) {
      const fragment = document.createDocumentFragment();
      for (const entry of entries) fragment.appendChild(entry.tr);
      tbody.appendChild(fragment);
      order = keys;
    }
    const terms = filterText.toLowerCase().split(/\s+/).filter(Boolean);
    let previousNode = null;
    let visible = 0;
    for (const entry of entries) {
      const show = terms.every((term) => entry.haystack.includes(term));
      if (entry.tr.hidden === show) entry.tr.hidden = !show;
      if (!show) continue;
      visible += 1;
      const starts = entry.data.node_name !== previousNode;
      previousNode = entry.data.node_name;
      const grouped = starts && sortKey === "node";
      if (entry.tr.classList.contains("group-start") !== grouped) {
        entry.tr.classList.toggle("group-start", grouped);
      }
      setSparkSlot(entry, grouped);
    }
    $("#shown").textContent = terms.length ? `${visible} of ${rows.size} shown` : `${rows.size} GPU rows`;
    for (const th of table.tHead.rows[0].cells) {
      if (th.dataset.sort === sortKey) th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
  }

  table.tHead.addEventListener("click", (event) => {
    const th = event.target.closest("th[data-sort]");
    if (!th) return;
    if (sortKey === th.dataset.sort) sortDir = -sortDir;
    else { sortKey = th.dataset.sort; sortDir = 1; }
    arrange();
  });

  let filterTimer = null;
  $("#filter").addEventListener("input", (event) => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      filterText = event.target.value.trim();
      arrange();
      renderProcesses();
    }, 120);
  });

  // ------------------------------------------------------------------ sparklines

  // One per node, in the node's first row; asked only for nodes on screen, many per request.
  const SVG = "http://www.w3.org/2000/svg";
  const sparks = new Map();  // node -> {values, fetched}
  const wanted = new Set();
  let sparkTimer = null;
  const observer = new IntersectionObserver((seen) => {
    for (const item of seen) {
      if (item.isIntersecting) wanted.add(item.target.dataset.node);
    }
    scheduleSparks();
  });

  function setSparkSlot(entry, grouped) {
    const td = entry.cells[0].td;
    const node = entry.data.node_name;
    let svg = td.querySelector("svg");
    if (!grouped) {
      if (svg) { observer.unobserve(td); svg.remove(); }
      return;
    }
    if (!svg) {
      svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("width", "80");
      svg.setAttribute("height", "16");
      svg.setAttribute("viewBox", "0 0 80 16");
      svg.classList.add("sparkline");
      const title = document.createElementNS(SVG, "title");
      title.textContent = `${node}: average GPU utilization over the last hour`;
      const path = document.createElementNS(SVG, "path");
      path.classList.add("spark");
      svg.append(title, path);
      td.appendChild(svg);
      td.dataset.node = node;
      observer.observe(td);
    }
    drawSpark(svg, sparks.get(node));
  }

  function drawSpark(svg, spark) {
    const path = svg.querySelector("path");
    if (!spark) return;
    let d = "";
    const n = spark.values.length;
    spark.values.forEach((v, i) => {
      if (!isNum(v)) return;
      const x = n > 1 ? (i / (n - 1)) * 80 : 0;
      const y = 15 - (Math.max(0, Math.min(100, v)) / 100) * 14;
      const previous = i > 0 && isNum(spark.values[i - 1]);
      d += `${previous ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    });
    if (path.getAttribute("d") !== d) path.setAttribute("d", d);
  }

  function scheduleSparks() {
    clearTimeout(sparkTimer);
    sparkTimer = setTimeout(loadSparks, 250);
  }

  async function loadSparks() {
    const now = Date.now();
    const due = [...wanted].filter((node) => {
      const spark = sparks.get(node);
      return !spark || now - spark.fetched > SPARK_REFRESH_MS;
    });
    wanted.clear();
    // Batches that keep the query string well under the API's 4 KiB limit.
    const batches = [];
    let batch = [];
    let length = 0;
    for (const node of due) {
      const part = `&node=${encodeURIComponent(node)}`;
      if (batch.length && length + part.length > 3000) { batches.push(batch); batch = []; length = 0; }
      batch.push(node);
      length += part.length;
    }
    if (batch.length) batches.push(batch);
    for (const nodes of batches) {
      const query = nodes.map((node) => `node=${encodeURIComponent(node)}`).join("&");
      const path = `api/v1/gpu/history?range=1h&points=121&fields=utilization&group_by=node&${query}`;
      try {
        if (await fetchData(path) === "changed") {
          for (const series of answers.get(path).series) {
            sparks.set(series.key.node_name, {values: series.values.utilization, fetched: now});
          }
        }
        for (const node of nodes) {
          if (sparks.has(node)) sparks.get(node).fetched = now;
        }
        failures.delete("history");
      } catch (err) {
        failures.set("history", err);
      }
      answers.delete(path);
      etags.delete(path);
    }
    for (const entry of rows.values()) {
      const svg = entry.cells[0].td.querySelector("svg");
      if (svg) drawSpark(svg, sparks.get(entry.data.node_name));
    }
    renderStatus();
  }

  // Visible sparklines are asked again once a minute.
  setInterval(() => {
    for (const entry of rows.values()) {
      if (entry.cells[0].td.querySelector("svg") && !entry.tr.hidden) {
        const box = entry.tr.getBoundingClientRect();
        if (box.bottom > 0 && box.top < innerHeight) wanted.add(entry.data.node_name);
      }
    }
    scheduleSparks();
  }, SPARK_REFRESH_MS);

  // ------------------------------------------------------------------ tiles

  function tile(key, label, value, sub) {
    return {key, label, value, sub: sub || ""};
  }

  function tilesFromCluster(cluster, gpus) {
    const g = cluster.gpus;
    const a = cluster.allocation || {};
    const models = Object.entries(g.by_model || {}).map(([m, n]) => `${n}× ${m}`).join(", ");
    return [
      tile("gpus", "GPUs", text(g.total),
        `${g.mig_instances ? `${g.mig_instances} MIG instances · ` : ""}${models}`),
      // States are now-figures: counted from the GPU rows, fresh with the table, where the
      // rows carry them (the cluster answer is asked once a minute).
      ...STATES.map((s) => tile(`state-${s}`, s, gpus.some((r) => "state" in r)
        ? String(gpus.filter((r) => r.state === s).length)
        : text(g.by_state ? g.by_state[s] : null))),
      tile("utilization", `Utilization (avg ${cluster.window})`,
        isNum(cluster.utilization_avg) ? `${cluster.utilization_avg.toFixed(1)}%` : DASH),
      tile("memory", "Memory used", `${gib(cluster.memory_used)} GiB`,
        `of ${gib(cluster.memory_total)} GiB`),
      tile("power", "Power", isNum(cluster.power_usage) ? `${cluster.power_usage.toFixed(0)} W` : DASH,
        isNum(cluster.energy_joules) ? `${(cluster.energy_joules / 3.6e6).toFixed(2)} kWh in ${cluster.window}` : ""),
      tile("allocation", "GPUs requested", text(a.requested),
        `of ${text(a.allocatable)} allocatable · ${text(a.held)} held · ${text(a.pending_requests)} pending`),
      ...healthTiles(gpus),
    ];
  }

  function tilesFromRows(gpus) {
    // Without /api/v1/cluster: what the GPU rows alone say, now.
    const sum = (field) => {
      const values = gpus.map((r) => r[field]).filter(isNum);
      return values.length ? values.reduce((x, y) => x + y, 0) : null;
    };
    const util = gpus.map((r) => r.utilization).filter(isNum);
    const tiles = [
      tile("gpus", "GPU rows", String(gpus.length)),
      tile("utilization", "Utilization (now)",
        util.length ? `${(util.reduce((x, y) => x + y, 0) / util.length).toFixed(1)}%` : DASH),
      tile("memory", "Memory used", `${gib(sum("memory_used"))} GiB`, `of ${gib(sum("memory_total"))} GiB`),
      tile("power", "Power", isNum(sum("power_usage")) ? `${sum("power_usage").toFixed(0)} W` : DASH),
    ];
    if (gpus.some((r) => "state" in r)) {
      for (const s of STATES) tiles.push(tile(`state-${s}`, s, String(gpus.filter((r) => r.state === s).length)));
    }
    return tiles.concat(healthTiles(gpus));
  }

  function healthTiles(gpus) {
    if (!gpus.some((r) => "health" in r)) return [];
    return HEALTH.map((status) => tile(`health-${status}`, `health ${status}`,
      String(gpus.filter((r) => r.health && r.health.status === status).length)));
  }

  const tileElements = new Map();

  function renderTiles() {
    const gpus = answers.get(PATHS.gpus) || [];
    const cluster = answers.get(PATHS.cluster);
    const tiles = cluster ? tilesFromCluster(cluster, gpus) : tilesFromRows(gpus);
    const container = $("#tiles");
    const keys = new Set(tiles.map((t) => t.key));
    for (const [key, element] of tileElements) {
      if (!keys.has(key)) { element.root.remove(); tileElements.delete(key); }
    }
    for (const t of tiles) {
      let element = tileElements.get(t.key);
      if (!element) {
        const root = document.createElement("div");
        root.className = "tile";
        root.dataset.tile = t.key;
        const label = document.createElement("div");
        label.className = "label";
        const value = document.createElement("div");
        value.className = "value";
        const sub = document.createElement("div");
        sub.className = "sub";
        root.append(label, value, sub);
        element = {root, label, value, sub};
        tileElements.set(t.key, element);
      }
      container.appendChild(element.root);  // keeps the order of `tiles`
      for (const part of ["label", "value", "sub"]) {
        if (element[part].textContent !== t[part]) element[part].textContent = t[part];
      }
    }
  }

  // ------------------------------------------------------------------ namespaces, processes

  function fillBody(body, records, cellsOf) {
    const fragment = document.createDocumentFragment();
    for (const record of records) {
      const tr = document.createElement("tr");
      for (const [value, numeric] of cellsOf(record)) {
        const td = document.createElement("td");
        if (numeric) td.className = "num";
        td.textContent = value;
        tr.appendChild(td);
      }
      fragment.appendChild(tr);
    }
    body.replaceChildren(fragment);
  }

  function renderNamespaces() {
    const data = answers.get(PATHS.namespaces) || [];
    $("#namespaces-section").hidden = false;
    $("#namespaces-window").textContent = "(last hour)";
    fillBody($("#namespaces").tBodies[0], data, (n) => [
      [n.namespace], [text(n.pods), true], [text(n.gpus_requested), true],
      [text(n.gpus_held), true], [fixed(n.utilization_avg, 1), true],
      [isNum(n.idle_gpu_seconds) ? (n.idle_gpu_seconds / 3600).toFixed(2) : DASH, true],
      [isNum(n.energy_joules) ? (n.energy_joules / 3.6e6).toFixed(3) : DASH, true],
      [text(n.energy_split)],
    ]);
  }

  function renderProcesses() {
    const data = answers.get(PATHS.processes);
    if (!data) return;
    const terms = filterText.toLowerCase().split(/\s+/).filter(Boolean);
    const matching = terms.length ? data.filter((p) => {
      const haystack = [p.node_name, p.pod, p.namespace, p.process_name, p.user]
        .filter(Boolean).join(" ").toLowerCase();
      return terms.every((term) => haystack.includes(term));
    }) : data;
    const shown = matching.slice(0, MAX_PROCESSES);
    $("#processes-note").textContent = matching.length > shown.length
      ? `(first ${shown.length} of ${matching.length}; filter to narrow)` : `(${matching.length})`;
    fillBody($("#processes").tBodies[0], shown, (p) => [
      [p.node_name], [text(p.gpu_index), true], [text(p.pid), true], [text(p.process_name)],
      [text(p.user)], [isNum(p.gpu_memory) ? `${(p.gpu_memory / 2 ** 20).toFixed(0)} MiB` : DASH, true],
      [text(p.pod)], [text(p.namespace)],
    ]);
  }

  // ------------------------------------------------------------------ status

  function renderStatus() {
    const banner = $("#banner");
    const main = $("#data");
    const age = lastSuccess === null ? null : Math.round((Date.now() - lastSuccess) / 1000);
    const gpuFailure = failures.get("gpus");
    const other = [...failures.entries()].filter(([name]) => name !== "gpus");
    if (gpuFailure || other.length) {
      const failure = gpuFailure || other[0][1];
      const down = failure.status === 503 || failure.status === 504 || failure.status === 502;
      let message = down ? `Prometheus is not answering: ${failure.message}`
        : `The API answered an error: ${failure.message}`;
      if (gpuFailure) {
        message += age === null ? " No data yet." : ` Showing the data from ${age} s ago.`;
      }
      if (banner.textContent !== message) banner.textContent = message;
      banner.hidden = false;
    } else if (!banner.hidden) {
      banner.hidden = true;
      banner.textContent = "";
    }
    main.classList.toggle("stale", Boolean(gpuFailure) && lastSuccess !== null);
    $("#updated").textContent = age === null ? "loading…" : `updated ${age} s ago`;
  }

  setInterval(renderStatus, 1000);
  refresh();
})();
