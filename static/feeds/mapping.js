// mpfeed mapping editor: rows ⇄ JSON document, live preview, import (no framework, no build step).
//
// The JSON textarea is what the form posts. Editing a row or an event block rewrites the document from the
// rows (keeping, per row and per rule, the keys the rows cannot show); editing the JSON rebuilds the rows when
// they can show it. After each edit the document and the sample records are POSTed to the preview endpoint
// (debounced), and its messages are shown under the row or event block whose rule path they start with.
"use strict";

(() => {
  const TRANSFORMS = ["trim", "lower", "upper", "decimal_comma"];
  const EVENT_TYPES = ["custom_event", "screen_view", "commerce_event"];
  const BLOCK_KEYS = ["event_type", "name", "screen_name", "custom_event_type", "timestamp", "when", "attributes"];
  const ROW_DOC_KEYS = ["record_key", "identities", "mpid", "user_attributes", "events"];
  const STARTER_ACTION = { action: "purchase", transaction_id: "order_id", total_amount: "total" };

  class NotShown extends Error {}

  const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
  const pretty = (v) => JSON.stringify(v, null, 2);

  // ------------------------------------------------------------------------------------ document ⇄ rows

  // A value spec (a field name or {"field" | "value", "type", "transform", ...}) as a row.
  function rowFromSpec(path, kind, target, spec, event = null) {
    const row = { path, kind, target, event, sourceKind: "field", source: "", constJson: false, type: "auto", transforms: [], extras: [], orig: spec };
    if (typeof spec === "string") {
      row.source = spec;
      return row;
    }
    if (!isObject(spec)) throw new NotShown(`${path}: not a field name or a value object`);
    if ("value" in spec && !("field" in spec)) {
      row.sourceKind = "value";
      row.constJson = typeof spec.value !== "string";
      row.source = row.constJson ? JSON.stringify(spec.value) : spec.value;
    } else {
      const field = "field" in spec ? spec.field : "";
      if (typeof field !== "string") throw new NotShown(`${path}.field: not a field name`);
      row.source = field;
    }
    const type = "type" in spec ? spec.type : "auto";
    let transforms = "transform" in spec ? spec.transform : [];
    if (typeof transforms === "string") transforms = [transforms];
    if (typeof type !== "string" || !Array.isArray(transforms) || !transforms.every((t) => typeof t === "string")) {
      throw new NotShown(`${path}: type or transform the rows cannot show`);
    }
    row.type = type;
    row.transforms = transforms;
    const used = ["type", "transform", row.sourceKind];
    row.extras = Object.keys(spec).filter((k) => !used.includes(k));
    return row;
  }

  function sameList(a, b) {
    return a.length === b.length && a.every((x) => b.includes(x));
  }

  // A row back into a value spec: the bare field name when the row needs no more and was not an object;
  // otherwise the original object (its key order and the keys the row does not show) with the row's values.
  function specFromRow(row) {
    const orig = isObject(row.orig) ? row.orig : null;
    const key = row.sourceKind === "value" ? "value" : "field";
    let value = row.source;
    if (key === "value" && row.constJson) {
      try {
        value = JSON.parse(row.source);
      } catch (e) {
        value = row.source;
      }
    }
    let origTransforms = orig && "transform" in orig ? orig.transform : [];
    if (typeof origTransforms === "string") origTransforms = [origTransforms];
    const transforms = orig && Array.isArray(origTransforms) && origTransforms.length && sameList(row.transforms, origTransforms)
      ? orig.transform
      : TRANSFORMS.filter((t) => row.transforms.includes(t)).concat(row.transforms.filter((t) => !TRANSFORMS.includes(t)));
    const hasTransforms = Array.isArray(transforms) ? transforms.length > 0 : Boolean(transforms);
    if (!orig && key === "field" && row.type === "auto" && !hasTransforms) return row.source;
    const spec = {};
    const keys = orig ? Object.keys(orig) : [];
    if (!keys.includes(key)) spec[key] = value;
    for (const k of keys) {
      if (k === "field" || k === "value") {
        if (k === key) spec[k] = value;
      } else if (k === "type") {
        if (row.type !== "auto" || orig.type === "auto") spec.type = row.type;
      } else if (k === "transform") {
        if (hasTransforms) spec.transform = transforms;
      } else {
        spec[k] = orig[k];
      }
    }
    if (!("type" in spec) && row.type !== "auto") spec.type = row.type;
    if (!("transform" in spec) && hasTransforms) spec.transform = transforms;
    return spec;
  }

  function blockFromRule(index, rule) {
    const where = `events[${index}]`;
    if (!isObject(rule)) throw new NotShown(`${where}: not an object`);
    const eventType = "event_type" in rule ? rule.event_type : "custom_event";
    if (!EVENT_TYPES.includes(eventType)) throw new NotShown(`${where}.event_type: ${JSON.stringify(eventType)} is not one the editor knows`);
    const block = { index, eventType, orig: rule, name: "", nameJsonOnly: false, customEventType: "", typeJsonOnly: false, tsField: "", tsFormat: "", tsExtras: [], when: "", productAction: "", extras: [] };
    const name = eventType === "screen_view" ? ("screen_name" in rule ? rule.screen_name : rule.name) : rule.name;
    if (typeof name === "string" || name === undefined || name === null) {
      block.name = name || "";
    } else {
      block.nameJsonOnly = true;
      block.name = JSON.stringify(name);
    }
    const kind = "custom_event_type" in rule ? rule.custom_event_type : "";
    if (typeof kind === "string") {
      block.customEventType = kind;
    } else {
      block.typeJsonOnly = true;
      block.customEventType = JSON.stringify(kind);
    }
    const ts = rule.timestamp;
    if (typeof ts === "string") {
      block.tsField = ts;
    } else if (isObject(ts) && typeof ts.field === "string") {
      block.tsField = ts.field;
      const fmt = "format" in ts ? ts.format : "";
      if (typeof fmt !== "string") throw new NotShown(`${where}.timestamp.format: not text`);
      block.tsFormat = fmt;
      block.tsExtras = Object.keys(ts).filter((k) => k !== "field" && k !== "format");
    } else if (ts !== undefined) {
      throw new NotShown(`${where}.timestamp: not a field name or an object with a field`);
    }
    if ("when" in rule) block.when = JSON.stringify(rule.when);
    if ("product_action" in rule) block.productAction = pretty(rule.product_action);
    block.extras = Object.keys(rule).filter((k) => !BLOCK_KEYS.includes(k) && k !== "product_action");
    const attributes = "attributes" in rule ? rule.attributes : {};
    if (!isObject(attributes)) throw new NotShown(`${where}.attributes: not an object`);
    const rows = Object.entries(attributes).map(([n, spec]) => rowFromSpec(`${where}.attributes.${n}`, "event", n, spec, index));
    return { block, rows };
  }

  // The rule an event block makes, with `attributes` from its rows. `parsed` holds the block's condition and
  // product action as parsed from their inputs (undefined: keep the rule's own, when the input does not parse).
  function ruleFromBlock(block, attributes, parsed = {}) {
    const orig = isObject(block.orig) ? block.orig : {};
    const type = block.eventType;
    // event_type first when it is new (custom_event is the default and is left out unless it was written).
    const rule = type !== "custom_event" && !("event_type" in orig) ? { event_type: type } : {};
    for (const k of Object.keys(orig)) rule[k] = orig[k];
    if (type !== "custom_event" || "event_type" in orig) rule.event_type = type;
    if (type === "commerce_event") {
      delete rule.name;
      delete rule.screen_name;
      delete rule.custom_event_type;
      if (parsed.productAction !== undefined) rule.product_action = parsed.productAction;
      // A promotion or impressions event (edited in the JSON) is a commerce event without a product action.
      else if (!["product_action", "promotion_action", "product_impressions"].some((k) => k in rule)) {
        rule.product_action = { action: "purchase" };
      }
    } else {
      delete rule.product_action;
      delete rule.promotion_action;
      delete rule.product_impressions;
      if (!block.nameJsonOnly) {
        if (type === "screen_view") {
          const keepName = orig.event_type === "screen_view" && "name" in orig && !("screen_name" in orig);
          if (!keepName) delete rule.name;
          rule[keepName ? "name" : "screen_name"] = block.name;
        } else {
          delete rule.screen_name;
          rule.name = block.name;
        }
      }
      if (type === "custom_event" && !block.typeJsonOnly) {
        if (block.customEventType) rule.custom_event_type = block.customEventType;
        else delete rule.custom_event_type;
      } else if (type !== "custom_event") {
        delete rule.custom_event_type;
      }
    }
    if (!block.tsField) {
      delete rule.timestamp;
    } else if (isObject(orig.timestamp) || block.tsFormat) {
      const ts = isObject(orig.timestamp) ? { ...orig.timestamp } : {};
      ts.field = block.tsField;
      if (block.tsFormat) ts.format = block.tsFormat;
      else delete ts.format;
      rule.timestamp = ts;
    } else {
      rule.timestamp = block.tsField;
    }
    if (parsed.when === null) delete rule.when;
    else if (parsed.when !== undefined) rule.when = parsed.when;
    if (Object.keys(attributes).length || "attributes" in orig) rule.attributes = attributes;
    return rule;
  }

  // Rows and event blocks for a document; throws NotShown when the rows cannot show it.
  function stateFromDoc(doc) {
    if (!isObject(doc)) throw new NotShown("the document is not a JSON object");
    if (hasUnsafeNumbers(doc)) throw new NotShown("it has integers too large for the browser to keep exactly");
    const rows = [];
    const blocks = [];
    if ("record_key" in doc) {
      if (typeof doc.record_key !== "string") throw new NotShown("record_key: not a field name");
      rows.push({ ...rowFromSpec("record_key", "record_key", "", doc.record_key), orig: undefined });
    }
    const identities = "identities" in doc ? doc.identities : {};
    if (!isObject(identities)) throw new NotShown("identities: not an object");
    for (const [key, spec] of Object.entries(identities)) rows.push(rowFromSpec(`identities.${key}`, "identity", key, spec));
    if ("mpid" in doc) rows.push(rowFromSpec("mpid", "mpid", "", doc.mpid));
    const attributes = "user_attributes" in doc ? doc.user_attributes : {};
    if (!isObject(attributes)) throw new NotShown("user_attributes: not an object");
    for (const [name, spec] of Object.entries(attributes)) rows.push(rowFromSpec(`user_attributes.${name}`, "user_attribute", name, spec));
    const events = "events" in doc ? doc.events : [];
    if (!Array.isArray(events)) throw new NotShown("events: not a list");
    events.forEach((rule, i) => {
      const { block, rows: attributeRows } = blockFromRule(i, rule);
      blocks.push(block);
      rows.push(...attributeRows);
    });
    return { rows, blocks, jsonOnly: Object.keys(doc).filter((k) => !ROW_DOC_KEYS.includes(k)) };
  }

  // The document from the rows and blocks; `base` gives the keys the rows do not show, and the key order.
  function docFromState(base, rows, blocks, parsed = []) {
    const parts = { identities: {}, user_attributes: {}, events: [] };
    const eventAttributes = blocks.map(() => ({}));
    for (const row of rows) {
      if (row.kind === "record_key") parts.record_key = row.source;
      else if (row.kind === "mpid") parts.mpid = specFromRow(row);
      else if (row.kind === "identity") parts.identities[row.target] = specFromRow(row);
      else if (row.kind === "user_attribute") parts.user_attributes[row.target] = specFromRow(row);
      else if (row.kind === "event" && row.event !== null && row.event < blocks.length) eventAttributes[row.event][row.target] = specFromRow(row);
    }
    parts.events = blocks.map((block, i) => ruleFromBlock(block, eventAttributes[i], parsed[i] || {}));
    const include = (k) => k in parts && (k in base || (k === "record_key" || k === "mpid" ? true : Object.keys(parts[k]).length > 0));
    const doc = {};
    for (const k of Object.keys(isObject(base) ? base : {})) {
      if (!ROW_DOC_KEYS.includes(k)) doc[k] = base[k];
      else if (include(k)) doc[k] = parts[k];
    }
    for (const k of ROW_DOC_KEYS) if (!(k in doc) && include(k)) doc[k] = parts[k];
    return doc;
  }

  function rowPath(row) {
    if (row.kind === "identity") return `identities.${row.target}`;
    if (row.kind === "user_attribute") return `user_attributes.${row.target}`;
    if (row.kind === "event") return `events[${row.event}].attributes.${row.target}`;
    return row.kind;
  }

  function hasUnsafeNumbers(value) {
    if (typeof value === "number") return Number.isInteger(value) && !Number.isSafeInteger(value);
    if (Array.isArray(value)) return value.some(hasUnsafeNumbers);
    if (isObject(value)) return Object.values(value).some(hasUnsafeNumbers);
    return false;
  }

  // As feeds/views/mappings.py dom_id(): "identities.email" → "row-identities-email", unique on the page.
  function domId(path, taken) {
    const text = ("row-" + Array.from(path, (c) => (/^[A-Za-z0-9_$]$/.test(c) ? c : "-")).join("")).replace(/-+/g, "-").replace(/-$/, "");
    let candidate = text;
    for (let n = 2; taken.has(candidate); n++) candidate = `${text}-${n}`;
    taken.add(candidate);
    return candidate;
  }

  const api = { rowFromSpec, specFromRow, blockFromRule, ruleFromBlock, stateFromDoc, docFromState, rowPath, domId, NotShown };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  if (typeof document === "undefined") return;

  // ------------------------------------------------------------------------------------------------- page

  const form = document.getElementById("mapping-form");
  if (!form) return;
  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
  const textarea = $("#id_document");
  const rowsEl = $("#rows");
  const eventsEl = $("#events");
  const rowTemplate = $("#row-template");
  const eventTemplate = $("#event-template");
  const jsonStatus = $("#json-status");
  const problems = $("#problems");
  const problemList = $("#problem-list");
  const previewSource = $("#preview-source");
  const previewRecords = $("#preview-records");
  const previewStatus = $("#preview-status");
  const sampleFormat = $("#id_sample_format");
  const warningList = $("#warning-list");
  const nameInput = $("#id_name");
  const MAX_SAMPLE_CHARS = 512 * 1024;
  let columns = [];
  let base = {};
  let rowsOk = form.dataset.rowsOk === "true";
  let counter = 0;
  let previewTimer = null;
  let jsonTimer = null;
  let inflight = null;
  let localProblems = [];

  $$(".js-only").forEach((el) => { el.hidden = false; });
  try {
    base = JSON.parse(textarea.value);
  } catch (e) {
    rowsOk = false;
  }
  try {
    // The sample's columns, as the server read them (a data block, never run: the CSP allows it).
    columns = JSON.parse($("#sample-columns-data")?.textContent || "[]");
  } catch (e) {
    columns = [];
  }
  if (rowsOk) {
    // The server showed the rows; the browser must be able to write them back without losing anything.
    try {
      stateFromDoc(base);
    } catch (e) {
      if (!(e instanceof NotShown)) throw e;
      setRowsEnabled(false, e.message);
    }
  }

  // --- reading and filling the DOM

  function readRow(el) {
    const kindValue = $(".f-kind", el).value;
    const [kind, event] = kindValue.startsWith("event:") ? ["event", Number(kindValue.slice(6))] : [kindValue, null];
    const target = kind === "identity" ? $(".f-target-identity", el).value : kind === "user_attribute" || kind === "event" ? $(".f-target-name", el).value : "";
    let orig;
    try {
      orig = JSON.parse(el.dataset.spec || "null");
    } catch (e) {
      orig = null;
    }
    return {
      el, kind, event, target,
      sourceKind: kind === "record_key" ? "field" : $(".f-source-kind", el).value,
      source: $(".f-source", el).value,
      constJson: $(".f-source", el).dataset.constJson === "true",
      type: $(".f-type", el).value,
      transforms: $$(".f-transform", el).filter((c) => c.checked).map((c) => c.value),
      orig: orig === null ? undefined : orig,
    };
  }

  function readBlock(el) {
    let orig;
    try {
      orig = JSON.parse(el.dataset.rule || "{}");
    } catch (e) {
      orig = {};
    }
    return {
      el,
      orig,
      eventType: $(".f-event-type", el).value,
      name: $(".f-name", el).value,
      nameJsonOnly: $(".f-name", el).dataset.jsonOnly === "true",
      customEventType: $(".f-cet", el).value,
      typeJsonOnly: $(".f-cet", el).dataset.jsonOnly === "true",
      tsField: $(".f-ts-field", el).value.trim(),
      tsFormat: $(".f-ts-format", el).value.trim(),
    };
  }

  // The condition and product action of a block, parsed; a problem is shown on the block and the rule keeps
  // what it had.
  function parseBlockJson(block) {
    const parsed = {};
    const notes = [];
    const whenText = $(".f-when", block.el).value.trim();
    if (!whenText) parsed.when = null;
    else {
      try {
        parsed.when = JSON.parse(whenText);
      } catch (e) {
        notes.push(`the condition is not valid JSON yet (${e.message}); the document keeps the last valid one.`);
      }
    }
    if (block.eventType === "commerce_event") {
      const actionText = $(".f-product-action", block.el).value.trim();
      if (actionText) {
        try {
          parsed.productAction = JSON.parse(actionText);
        } catch (e) {
          notes.push(`the product action is not valid JSON yet (${e.message}); the document keeps the last valid one.`);
        }
      }
    }
    $(".local-msgs", block.el).textContent = notes.map((n) => n[0].toUpperCase() + n.slice(1)).join(" ");
    return { parsed, notes };
  }

  const ID_ATTRIBUTES = ["id", "for", "aria-describedby", "aria-labelledby"];

  // Rename the ids under `el` (and the references to them) that are `from` or start with `from-`.
  function renumber(el, from, to) {
    for (const node of [el, ...el.querySelectorAll("[id], [for], [aria-describedby], [aria-labelledby]")]) {
      for (const attr of ID_ATTRIBUTES) {
        const value = node.getAttribute(attr);
        if (!value) continue;
        const renamed = value.split(" ").map((v) => (v === from || v.startsWith(`${from}-`) ? to + v.slice(from.length) : v));
        node.setAttribute(attr, renamed.join(" "));
      }
    }
  }

  function newRowElement(id) {
    const el = rowTemplate.content.cloneNode(true).firstElementChild;
    renumber(el, "row-__n__", id);
    fillColumns(el);
    return el;
  }

  // --- the sample's columns, to pick a row's source from

  function fillColumns(el) {
    const select = $(".f-column", el);
    if (!select) return;
    const source = $(".f-source", el).value;
    select.replaceChildren(new Option(columns.length ? "pick a column…" : "no sample columns", ""), ...columns.map((c) => new Option(c, c)));
    select.value = columns.includes(source) ? source : "";
    const kind = $(".f-source-kind", el).value;
    select.hidden = !columns.length || kind === "value";
  }

  function setColumns(list) {
    const same = list.length === columns.length && list.every((c, i) => c === columns[i]);
    columns = list;
    if (!same) {
      $("#sample-columns").replaceChildren(...list.map((c) => new Option("", c)));
    }
    $$(".map-row", rowsEl).forEach(fillColumns);
    $("#sample-columns-note").textContent = list.length ? `Columns: ${list.join(", ")}` : "";
  }

  function setOption(select, value, label) {
    if (![...select.options].some((o) => o.value === value)) {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = label || `${value} (unknown)`;
      select.appendChild(option);
    }
    select.value = value;
  }

  function fillRow(el, row) {
    el.dataset.path = row.path;
    el.dataset.spec = JSON.stringify(row.orig === undefined ? null : row.orig);
    const title = $(".vh", el);
    if (title) title.textContent = `Row ${row.path}`;
    $(".f-source-kind", el).value = row.sourceKind;
    const source = $(".f-source", el);
    source.value = row.source;
    source.dataset.constJson = row.constJson ? "true" : "";
    refreshEventOptions(el);
    $(".f-kind", el).value = row.kind === "event" ? `event:${row.event}` : row.kind;
    if (row.kind === "identity") setOption($(".f-target-identity", el), row.target);
    else $(".f-target-name", el).value = row.target;
    setOption($(".f-type", el), row.type);
    $$(".f-transform", el).forEach((c) => { c.checked = row.transforms.includes(c.value); });
    $(".extras", el).textContent = row.extras.length ? `Also in the JSON: ${row.extras.join(", ")}` : "";
    showKind(el);
    fillColumns(el);
  }

  // Which target control a row shows, and what its kind allows.
  function showKind(el) {
    const kind = $(".f-kind", el).value;
    const named = kind === "user_attribute" || kind.startsWith("event:");
    $(".f-target-identity", el).hidden = kind !== "identity";
    $(".f-target-name", el).hidden = !named;
    $(".f-target-name", el).setAttribute("list", kind === "user_attribute" ? "reserved-attributes" : "");
    const none = $(".f-target-none", el);
    none.hidden = kind !== "mpid" && kind !== "record_key";
    none.textContent = kind === "record_key" ? "identifies the record" : "mParticle user id";
    const isKey = kind === "record_key";
    $(".f-source-kind", el).disabled = isKey;
    if (isKey) $(".f-source-kind", el).value = "field";
    $(".f-type", el).disabled = isKey;
    $(".transforms", el).disabled = isKey;
  }

  function fillBlock(el, block) {
    el.dataset.rule = JSON.stringify(block.orig);
    el.dataset.eventType = block.eventType;
    $(".f-event-type", el).value = block.eventType;
    const name = $(".f-name", el);
    name.value = block.name;
    name.disabled = block.nameJsonOnly;
    name.dataset.jsonOnly = block.nameJsonOnly ? "true" : "";
    const cet = $(".f-cet", el);
    setOption(cet, block.customEventType, block.typeJsonOnly ? "read from a field (edit in the JSON)" : undefined);
    cet.disabled = block.typeJsonOnly;
    cet.dataset.jsonOnly = block.typeJsonOnly ? "true" : "";
    $(".f-ts-field", el).value = block.tsField;
    $(".f-ts-format", el).value = block.tsFormat;
    $(".f-when", el).value = block.when;
    $(".f-product-action", el).value = block.productAction;
    $(".extras", el).textContent = block.extras.length ? `Also in the JSON: ${block.extras.join(", ")}` : "";
  }

  function newBlockElement(index) {
    const el = eventTemplate.content.cloneNode(true).firstElementChild;
    renumber(el, "event-__n__", `event-${index}`);
    setBlockNumber(el, index);
    return el;
  }

  function setBlockNumber(el, index) {
    const old = el.id;
    if (old !== `event-${index}`) renumber(el, old, `event-${index}`);
    el.dataset.path = `events[${index}]`;
    $$(".event-number", el).forEach((n) => { n.textContent = String(index + 1); });
  }

  function refreshEventOptions(only) {
    const count = eventsEl.children.length;
    for (const select of only ? [$(".f-kind", only)] : $$(".f-kind", rowsEl)) {
      const current = select.value;
      $$("option[value^='event:']", select).forEach((o) => o.remove());
      const before = $("option[value='mpid']", select);
      for (let i = 0; i < count; i++) {
        const option = document.createElement("option");
        option.value = `event:${i}`;
        option.textContent = `event ${i + 1} attribute`;
        select.insertBefore(option, before);
      }
      if ([...select.options].some((o) => o.value === current)) select.value = current;
    }
  }

  function render(state) {
    const taken = new Set();
    rowsEl.replaceChildren(...state.rows.map((row) => newRowElement(domId(row.path, taken))));
    eventsEl.replaceChildren(...state.blocks.map((block, i) => {
      const el = newBlockElement(i);
      fillBlock(el, block);
      return el;
    }));
    [...rowsEl.children].forEach((el, i) => fillRow(el, state.rows[i]));
    const note = $("#json-only-note");
    note.hidden = !state.jsonOnly.length;
    note.textContent = state.jsonOnly.length ? `Kept in the JSON only (edit under “Advanced”): ${state.jsonOnly.join(", ")}.` : "";
  }

  function setRowsEnabled(ok, reason) {
    rowsOk = ok;
    $("#rows-fieldset").disabled = !ok;
    $("#events-fieldset").disabled = !ok;
    const box = $("#rows-problem");
    box.hidden = ok;
    if (!ok) box.textContent = `The rows cannot show this document (${reason}): edit it as JSON under “Advanced”.`;
  }

  // --- rows → JSON

  function syncFromEditor() {
    if (!rowsOk) return;
    const rows = [...rowsEl.children].map(readRow);
    const blocks = [...eventsEl.children].map(readBlock);
    const parsed = blocks.map(parseBlockJson);
    const doc = docFromState(base, rows, blocks, parsed.map((p) => p.parsed));
    base = doc;
    // Each block keeps its last good rule: a condition that does not parse yet falls back to it.
    blocks.forEach((block, i) => { block.el.dataset.rule = JSON.stringify(doc.events[i]); });
    textarea.value = pretty(doc);
    jsonStatus.textContent = "";
    rows.forEach((row) => { row.el.dataset.path = rowPath(row); });
    localProblems = duplicates(rows).concat(parsed.flatMap((p, i) => p.notes.map((text) => ({ text: `events[${i}]: ${text}`, el: blocks[i].el }))));
    schedulePreview();
  }

  function duplicates(rows) {
    const seen = new Map();
    const found = [];
    for (const row of rows) {
      const path = rowPath(row);
      if (seen.has(path)) found.push({ text: `${path}: mapped by more than one row; only the last one counts`, el: row.el });
      seen.set(path, row);
    }
    return found;
  }

  // --- JSON → rows

  function syncFromJson() {
    let doc;
    try {
      doc = JSON.parse(textarea.value);
    } catch (e) {
      jsonStatus.textContent = `Not valid JSON yet: ${e.message}. The rows and the preview wait until it is.`;
      textarea.setAttribute("aria-invalid", "true");
      setRowsEnabled(false, "the JSON does not parse");
      return;
    }
    textarea.removeAttribute("aria-invalid");
    jsonStatus.textContent = "";
    base = doc;
    localProblems = [];
    try {
      render(stateFromDoc(doc));
      setRowsEnabled(true);
    } catch (e) {
      if (!(e instanceof NotShown)) throw e;
      setRowsEnabled(false, e.message);
    }
    schedulePreview();
  }

  // --- editing

  function onEditorEdit(event) {
    const row = event.target.closest(".map-row");
    if (row && event.target.classList.contains("f-kind")) showKind(row);
    if (row && event.target.classList.contains("f-column") && event.target.value) {
      // A column picked: it becomes the row's source field.
      $(".f-source-kind", row).value = "field";
      $(".f-source", row).value = event.target.value;
      $(".f-source", row).dataset.constJson = "";
    }
    if (row && (event.target.classList.contains("f-source") || event.target.classList.contains("f-source-kind"))) fillColumns(row);
    const block = event.target.closest(".event-block");
    if (block && event.target.classList.contains("f-event-type")) {
      block.dataset.eventType = event.target.value;
      const action = $(".f-product-action", block);
      if (event.target.value === "commerce_event" && !action.value.trim()) action.value = pretty(STARTER_ACTION);
    }
    syncFromEditor();
  }

  function addRow(kind, eventIndex) {
    counter += 1;
    const el = newRowElement(`row-new-${counter}`);
    rowsEl.appendChild(el);
    const row = { path: "", kind, target: kind === "identity" ? firstFreeIdentity() : "", event: eventIndex ?? null, sourceKind: "field", source: "", constJson: false, type: "auto", transforms: [], extras: [], orig: undefined };
    fillRow(el, row);
    syncFromEditor();
    $(".f-source", el).focus();
    announce(`Row added (${kind === "event" ? `event ${eventIndex + 1} attribute` : kind.replace("_", " ")}).`);
  }

  function firstFreeIdentity() {
    const used = new Set($$(".map-row", rowsEl).filter((el) => $(".f-kind", el).value === "identity").map((el) => $(".f-target-identity", el).value));
    const keys = [...$(".f-target-identity", rowTemplate.content).options].map((o) => o.value);
    return keys.find((k) => !used.has(k)) || keys[0];
  }

  function addEvent() {
    const index = eventsEl.children.length;
    const el = newBlockElement(index);
    fillBlock(el, { index, eventType: "custom_event", orig: {}, name: "", nameJsonOnly: false, customEventType: "", typeJsonOnly: false, tsField: "", tsFormat: "", tsExtras: [], when: "", productAction: "", extras: [] });
    eventsEl.appendChild(el);
    refreshEventOptions();
    syncFromEditor();
    $(".f-name", el).focus();
    announce(`Event ${index + 1} added.`);
  }

  function removeEvent(block) {
    const index = [...eventsEl.children].indexOf(block);
    const attributes = $$(".map-row", rowsEl).filter((el) => $(".f-kind", el).value === `event:${index}`);
    if (attributes.length && !window.confirm(`Remove event ${index + 1} and its ${attributes.length} attribute row(s)?`)) return;
    attributes.forEach((el) => el.remove());
    // Later events move up one: so do their attribute rows.
    for (const el of $$(".map-row", rowsEl)) {
      const select = $(".f-kind", el);
      const match = /^event:(\d+)$/.exec(select.value);
      if (match && Number(match[1]) > index) {
        const option = $(`option[value='event:${Number(match[1]) - 1}']`, select);
        if (option) select.value = option.value;
      }
    }
    block.remove();
    [...eventsEl.children].forEach((el, i) => setBlockNumber(el, i));
    refreshEventOptions();
    syncFromEditor();
    ($("[data-action='add-event']") || textarea).focus();
    announce(`Event ${index + 1} removed.`);
  }

  function announce(text) {
    previewStatus.textContent = text;
  }

  form.addEventListener("input", (event) => {
    if (event.target === textarea) {
      clearTimeout(jsonTimer);
      jsonTimer = setTimeout(syncFromJson, 300);
    } else if (event.target.closest("#rows, #events")) {
      onEditorEdit(event);
    }
  });
  form.addEventListener("click", (event) => {
    const button = event.target.closest("[data-action]");
    if (!button) return;
    const action = button.dataset.action;
    if (action === "add-row") addRow(button.dataset.kind);
    else if (action === "add-event") addEvent();
    else if (action === "add-event-attribute") addRow("event", [...eventsEl.children].indexOf(button.closest(".event-block")));
    else if (action === "remove-event") removeEvent(button.closest(".event-block"));
    else if (action === "remove-row") {
      const row = button.closest(".map-row");
      const next = row.nextElementSibling || row.previousElementSibling;
      row.remove();
      syncFromEditor();
      (next ? $(".f-source", next) : $("[data-action='add-row']")).focus();
      announce("Row removed.");
    }
  });

  // --- import

  const importFile = $("#import-file");
  importFile?.addEventListener("change", () => {
    const file = importFile.files[0];
    if (!file) return;
    const reader = new FileReader();
    reader.onload = () => {
      textarea.value = String(reader.result);
      $("#json-details").open = true;
      syncFromJson();
      if (!textarea.hasAttribute("aria-invalid")) jsonStatus.textContent = `Imported ${file.name}: check the rows and the preview, then save.`;
    };
    reader.onerror = () => { jsonStatus.textContent = `Could not read ${file.name}.`; };
    reader.readAsText(file);
  });

  // --- preview

  function csrfToken() {
    const cookie = document.cookie.split(";").map((c) => c.trim()).find((c) => c.startsWith("csrftoken="));
    if (cookie) return decodeURIComponent(cookie.slice("csrftoken=".length));
    return $("[name=csrfmiddlewaretoken]", form).value;
  }

  function schedulePreview(delay = 400, explicit = false) {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(() => runPreview(explicit), delay);
  }

  async function runPreview(explicit) {
    const text = textarea.value;
    try {
      JSON.parse(text);
    } catch (e) {
      previewStatus.textContent = "Waiting for the JSON to be valid.";
      return;
    }
    const job = previewSource.value;
    const remote = previewSource.selectedOptions[0]?.dataset.remote === "true";
    if (job && remote && !explicit) {
      previewStatus.textContent = "Press “Refresh preview” to read the job's source again.";
      return;
    }
    // The document goes as written: the browser's numbers would round a 64-bit integer.
    const body = `{"document": ${text}, ${job ? `"job": ${JSON.stringify(job)}` : sampleJson()}}`;
    inflight?.abort();
    inflight = new AbortController();
    previewStatus.textContent = "Previewing…";
    let result;
    try {
      const response = await fetch(form.dataset.previewUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), Accept: "application/json" },
        body,
        signal: inflight.signal,
      });
      if (!response.ok || !(response.headers.get("Content-Type") || "").includes("json")) {
        previewStatus.textContent = `The preview failed (HTTP ${response.status}${response.redirected ? ": has your session ended? Reload the page" : ""}).`;
        return;
      }
      result = await response.json();
    } catch (e) {
      if (e.name !== "AbortError") previewStatus.textContent = `The preview failed: ${e.message}`;
      return;
    }
    showPreview(result);
  }

  // The sample's part of a request body: its text and the format to read it as.
  function sampleJson() {
    return `"records": ${JSON.stringify(previewRecords.value)}, "format": ${JSON.stringify(sampleFormat.value)}`;
  }

  function elementForPath(path) {
    return $$("[data-path]", form).find((el) => el.dataset.path === path) || null;
  }

  function item(level, text, anchor) {
    const li = document.createElement("li");
    li.className = level;
    if (anchor) {
      const a = document.createElement("a");
      a.href = `#${anchor.id}`;
      a.textContent = text;
      li.appendChild(a);
    } else {
      li.textContent = text;
    }
    return li;
  }

  function showPreview(result) {
    // Messages next to their rows and event blocks.
    for (const el of $$(".map-row, .event-block", form)) {
      el.classList.remove("has-errors");
      $(".row-msgs", el)?.replaceChildren();
      $$("input, select, textarea", el).forEach((c) => c.removeAttribute("aria-invalid"));
    }
    const anchors = new Map();
    for (const [path, messages] of Object.entries(result.by_path || {})) {
      const el = elementForPath(path);
      if (!el) continue;
      const list = $(":scope > .row-msgs", el);
      messages.forEach((m) => { list.appendChild(item(m.level, m.text)); anchors.set(m.text, el); });
      if (messages.some((m) => m.level !== "warning")) {
        el.classList.add("has-errors");
        $$(":scope input, :scope select", el).forEach((c) => { if (!c.closest(".transforms")) c.setAttribute("aria-invalid", "true"); });
      }
    }
    for (const p of localProblems) {
      $(":scope > .row-msgs", p.el)?.appendChild(item("local", p.text));
    }
    // The sample's own problems beside it (errors apart from warnings), and its columns for the rows.
    if (!previewSource.value) {
      showSampleProblems(result.input_errors || [], result.input_warnings || []);
      if (result.sample) setColumns(result.sample.columns || []);
    }
    // The full lists at the top: errors, then warnings apart.
    const rejected = (result.rejected || []).map((r) => `${r.ref}: ${r.reason}`);
    const all = [
      ...(result.input_errors || []).map((t) => ["error", t]),
      ...localProblems.map((p) => ["local", p.text, p.el]),
      ...(result.errors || []).map((t) => ["error", t]),
      ...rejected.map((t) => ["rejected", t]),
    ];
    const warnings = [...(result.input_warnings || []), ...(result.warnings || [])];
    problemList.replaceChildren(...all.map(([level, text, el]) => item(level, text, el || anchors.get(text))));
    warningList.replaceChildren(...warnings.map((text) => item("warning", text, anchors.get(text))));
    $("#warnings-wrap").hidden = warnings.length === 0;
    problems.hidden = all.length + warnings.length === 0;
    $("#problems-h").textContent = `Problems (${all.length} error${all.length === 1 ? "" : "s"}, ${warnings.length} warning${warnings.length === 1 ? "" : "s"})`;
    previewed = true;
    showSaveState();
    // The preview itself.
    const batches = result.batches || [];
    $("#preview-output").hidden = Boolean(result.errors && result.errors.length) && !batches.length;
    $("#preview-refused").replaceChildren(...(result.rejected || []).map((r) => {
      const tr = document.createElement("tr");
      for (const text of [r.ref, r.reason, r.excerpt || ""]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      return tr;
    }));
    $("#preview-samples-wrap").hidden = !(result.samples || []).length;
    $("#preview-samples").replaceChildren(...(result.samples || []).map((s) => item(s.ok ? "" : "error", s.text)));
    $("#preview-batches").textContent = result.batches_text || "(no batches)";
    const n = (count, word) => `${count} ${word}${count === 1 ? "" : word.endsWith("ch") ? "es" : "s"}`;
    previewStatus.textContent = result.errors && result.errors.length
      ? `${n(result.errors.length, "error")} in the mapping: nothing converted.`
      : `${n(result.records, "record")} → ${n(batches.length, "batch")}, ${n((result.rejected || []).length, "refused record")}, ${n((result.warnings || []).length, "warning")}.`;
  }

  function showSampleProblems(errors, warnings) {
    $("#sample-errors").replaceChildren(...errors.map((t) => item("error", t)));
    $("#sample-errors-wrap").hidden = errors.length === 0;
    $("#sample-warnings").replaceChildren(...warnings.map((t) => item("warning", t)));
    $("#sample-warnings-wrap").hidden = warnings.length === 0;
  }

  // --- saved or not: "not saved yet" only while the page differs from what is stored

  let previewed = false;
  const savedAsLoaded = form.dataset.saved === "true";
  function snapshot() {
    let doc = textarea.value;
    try {
      doc = JSON.stringify(JSON.parse(doc));
    } catch (e) {
      // compared as text
    }
    return JSON.stringify([nameInput ? nameInput.value : "", doc, previewRecords.value.replace(/\r\n/g, "\n"), sampleFormat.value]);
  }
  const loaded = snapshot();

  function unsaved() {
    return !savedAsLoaded || snapshot() !== loaded;
  }

  function showSaveState() {
    const dirty = unsaved();
    const state = $("#save-state");
    if (state) state.textContent = dirty ? "Not saved yet." : "";
    if (previewed) {
      $("#problems-source").textContent = dirty
        ? "From the live preview of the current document (not saved yet)."
        : "From the live preview of the saved document.";
    }
  }
  form.addEventListener("input", () => showSaveState());
  form.addEventListener("change", () => showSaveState());

  for (const list of [problemList, warningList]) list.addEventListener("click", (event) => {
    const link = event.target.closest("a[href^='#']");
    if (!link) return;
    const target = document.getElementById(link.getAttribute("href").slice(1));
    const control = target && $("input:not([hidden]):not(:disabled), select:not([hidden]):not(:disabled)", target);
    if (control) {
      event.preventDefault();
      target.scrollIntoView({ block: "center" });
      control.focus();
    }
  });

  // --- a sample file: read into the sample box, its format from its name

  const sampleFile = $("#sample-file");
  const FORMAT_BY_EXTENSION = { csv: "csv", tsv: "csv", txt: "csv", ndjson: "ndjson", jsonl: "ndjson", json: "json" };
  sampleFile.addEventListener("change", () => {
    const file = sampleFile.files[0];
    if (!file) return;
    if (file.size > MAX_SAMPLE_CHARS) {
      showSampleProblems([`${file.name} is ${Math.ceil(file.size / 1024)} KiB: a sample may be up to ${MAX_SAMPLE_CHARS / 1024} KiB (cut it to its first rows).`], []);
      return;
    }
    const reader = new FileReader();
    reader.onload = () => {
      previewRecords.value = String(reader.result);
      const extension = (file.name.split(".").pop() || "").toLowerCase();
      sampleFormat.value = FORMAT_BY_EXTENSION[extension] || "auto";
      if (previewSource.value) {
        previewSource.value = "";
        $("#preview-records-wrap").hidden = false;
      }
      announce(`Read ${file.name}.`);
      showSaveState();
      schedulePreview(0, true);
    };
    reader.onerror = () => { showSampleProblems([`Could not read ${file.name}.`], []); };
    reader.readAsText(file);
  });
  sampleFormat.addEventListener("change", () => schedulePreview(0, true));

  // --- one test record, to the workspace's development environment

  const testButton = $("#test-record");
  const testStatus = $("#test-record-status");
  const testAnswer = $("#test-record-answer");
  testButton.addEventListener("click", async () => {
    const text = textarea.value;
    try {
      JSON.parse(text);
    } catch (e) {
      testStatus.textContent = "Not sent: the JSON document is not valid yet.";
      return;
    }
    testButton.disabled = true;
    testStatus.textContent = "Sending…";
    testAnswer.hidden = true;
    try {
      const response = await fetch(form.dataset.testRecordUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), Accept: "application/json" },
        body: `{"document": ${text}, ${sampleJson()}}`,
      });
      if (!response.ok || !(response.headers.get("Content-Type") || "").includes("json")) {
        testStatus.textContent = `Not sent: the request failed (HTTP ${response.status}${response.status === 403 ? ": you may not change mappings" : ""}).`;
        return;
      }
      const result = await response.json();
      testStatus.textContent = result.text;
      testStatus.className = `small ${result.sent ? (result.delivered ? "ok" : "error") : "warning"}`;
      if (result.sent) {
        const answers = result.answers.map((a) => `// mParticle's answer (${a.path}): ${a.describe}${a.body ? `\n${a.body}` : ""}`).join("\n");
        testAnswer.textContent = `${answers}\n\n// sent\n${result.batches_text}`;
        testAnswer.hidden = false;
      }
    } catch (e) {
      testStatus.textContent = `Not sent: ${e.message}`;
    } finally {
      testButton.disabled = false;
    }
  });

  const previewPanel = $("#preview");
  previewSource.addEventListener("change", () => {
    $("#preview-records-wrap").hidden = Boolean(previewSource.value);
    schedulePreview(0, true);
  });
  previewRecords.addEventListener("input", () => schedulePreview());
  $("#preview-run").addEventListener("click", () => schedulePreview(0, true));
  previewPanel.hidden = false;
  showSaveState();
  schedulePreview(0);
})();
