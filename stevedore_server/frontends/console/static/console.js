// The web console's own script: the API key, the try-it form, the load and unload buttons, cancelling jobs.
// No build step: plain JavaScript the browser runs as it is. It never writes markup from a
// string: values a plugin or the server gave reach the page as text (textContent).
"use strict";

(() => {
  // The API key typed in this page: kept in this variable only (no storage, no cookie), sent
  // as Authorization: Bearer on every call the page makes, htmx's included.
  let apiKey = "";

  const withKey = (headers = {}) => (apiKey ? { ...headers, Authorization: `Bearer ${apiKey}` } : headers);

  // -- notices ---------------------------------------------------------------------

  function notice(message) {
    const element = document.getElementById("console-notice");
    if (!element) return;
    element.textContent = message || "";
    element.hidden = !message;
  }

  function errorOf(text, status) {
    try {
      const body = JSON.parse(text);
      return body.error || `HTTP ${status}`;
    } catch {
      return `HTTP ${status}`;
    }
  }

  function needsKey(status) {
    return status === 401
      ? document.getElementById("api-key")
        ? "An API key is needed: type it in the field at the top of the page."
        : "An API key is needed."
      : null;
  }

  function askForKey(target, message) {
    const paragraph = document.createElement("p");
    paragraph.textContent = message;
    target.replaceChildren(paragraph);
  }

  document.addEventListener("htmx:configRequest", (event) => {
    if (apiKey) event.detail.headers.Authorization = `Bearer ${apiKey}`;
    else if (document.getElementById("api-key")) {
      // Keys are on and none is typed yet: asking would only earn a 401.
      event.preventDefault();
      askForKey(event.detail.target, needsKey(401));
    }
  });
  document.addEventListener("htmx:afterRequest", (event) => {
    if (event.detail.successful) notice("");
  });
  document.addEventListener("htmx:responseError", (event) => {
    const { xhr, target } = event.detail;
    const keyMessage = needsKey(xhr.status);
    if (keyMessage && target) {
      askForKey(target, `${errorOf(xhr.responseText, xhr.status)}. ${keyMessage}`);
      return;
    }
    notice(`${xhr.status}: ${errorOf(xhr.responseText, xhr.status)}`);
  });
  document.addEventListener("htmx:sendError", () => notice("The server does not answer; trying again."));

  document.addEventListener("change", (event) => {
    if (event.target.id !== "api-key") return;
    apiKey = event.target.value.trim();
    htmx.trigger(document.body, "console:key");
  });

  // -- reading the form --------------------------------------------------------------

  const pointerPart = (key) => String(key).replaceAll("~", "~0").replaceAll("/", "~1");

  // A control's value; undefined leaves an optional field out of an object.
  function read(control) {
    const kind = control.dataset.kind;
    if (kind === "boolean") return control.checked;
    if (kind === "enum") return control.value === "" ? undefined : JSON.parse(control.value);
    if (kind === "number" || kind === "integer") {
      if (control.validity.badInput) return null; // not a number: the server names the field
      if (control.value === "") return "required" in control.dataset ? null : undefined;
      return Number(control.value);
    }
    return control.value === "" && !("required" in control.dataset) ? undefined : control.value;
  }

  function controlsOf(element) {
    return Array.from(element.querySelectorAll("[data-kind]"));
  }

  function rowsOf(form) {
    return Array.from(form.querySelectorAll("[data-part=form] tbody > tr"));
  }

  // The payload the form holds; each control and row is given the JSON pointer of its value.
  function collect(form) {
    const part = form.querySelector("[data-part=form]");
    if (form.dataset.shape === "fields") return objectOf(controlsOf(part), "");
    return rowsOf(form).map((row, index) => {
      const pointer = `/${index}`;
      row.dataset.pointer = pointer;
      const controls = controlsOf(row);
      if (form.dataset.row === "object") return objectOf(controls, pointer);
      const values = controls.map((control, column) => {
        control.dataset.pointer = form.dataset.row === "scalar" ? pointer : `${pointer}/${column}`;
        const value = read(control);
        return value === undefined ? null : value;
      });
      return form.dataset.row === "scalar" ? values[0] : values;
    });
  }

  function objectOf(controls, pointer) {
    const value = {};
    for (const control of controls) {
      control.dataset.pointer = `${pointer}/${pointerPart(control.dataset.key)}`;
      const item = read(control);
      if (item !== undefined) value[control.dataset.key] = item;
    }
    return value;
  }

  // A payload or result as JSON: a list of rows one row a line, a list of scalars on one line, anything else
  // indented (pages.payload writes the fixture so).
  function formatted(value) {
    if (!Array.isArray(value) || !value.length) return JSON.stringify(value, null, 2);
    if (value.every((item) => item === null || typeof item !== "object")) return JSON.stringify(value);
    return `[\n  ${value.map((item) => JSON.stringify(item)).join(",\n  ")}\n]`;
  }

  // -- filling the form --------------------------------------------------------------

  function write(control, value) {
    const kind = control.dataset.kind;
    if (kind === "boolean") {
      if (value !== undefined && typeof value !== "boolean") throw new Error("a checkbox holds true or false");
      control.checked = value === true;
    } else if (kind === "enum") {
      const option = Array.from(control.options).find((o) => o.value !== "" && JSON.parse(o.value) === value);
      if (value !== undefined && !option) throw new Error(`${JSON.stringify(value)} is not one of the options`);
      control.value = option ? option.value : "";
    } else {
      if (value !== undefined && value !== null && typeof value === "object") throw new Error("a field holds a scalar");
      control.value = value === undefined || value === null ? "" : String(value);
    }
  }

  function fill(form, payload) {
    if (form.dataset.shape === "fields") {
      if (!isObject(payload)) throw new Error("the form holds an object");
      for (const control of controlsOf(form.querySelector("[data-part=form]"))) write(control, payload[control.dataset.key]);
      return;
    }
    if (!Array.isArray(payload)) throw new Error("the form holds an array");
    const rows = payload.map((item) => {
      const row = blankRow(form);
      const controls = controlsOf(row);
      if (form.dataset.row === "scalar") write(controls[0], item);
      else if (form.dataset.row === "object") {
        if (!isObject(item)) throw new Error("each row is an object");
        for (const control of controls) write(control, item[control.dataset.key]);
      } else {
        if (!Array.isArray(item) || item.length !== controls.length) throw new Error(`each row holds ${controls.length} values`);
        controls.forEach((control, column) => write(control, item[column]));
      }
      return row;
    });
    form.querySelector("[data-part=form] tbody").replaceChildren(...rows);
    renumber(form);
  }

  const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

  function blankRow(form) {
    return form.querySelector("template[data-blank-row]").content.firstElementChild.cloneNode(true);
  }

  function renumber(form) {
    rowsOf(form).forEach((row, index) => {
      row.querySelector("[data-row-number]").textContent = String(index + 1);
    });
    const table = form.querySelector("table.grid");
    const add = form.querySelector("[data-add-row]");
    if (table && add) add.disabled = "maxRows" in table.dataset && rowsOf(form).length >= Number(table.dataset.maxRows);
  }

  // -- errors and results --------------------------------------------------------------

  function clearErrors(form) {
    for (const element of form.querySelectorAll(".field-error")) element.remove();
    for (const element of form.querySelectorAll("[aria-invalid]")) element.removeAttribute("aria-invalid");
    for (const cell of form.querySelectorAll("[data-prediction]")) {
      cell.textContent = "";
      cell.classList.remove("row-error");
    }
    const list = form.querySelector("[data-form-errors]");
    list.replaceChildren();
    list.hidden = true;
  }

  // The control or row a JSON pointer points at, or inside: the longest pointer that starts it.
  function targetOf(form, path) {
    let best = null;
    for (const element of form.querySelectorAll("[data-part=form] [data-pointer]")) {
      const pointer = element.dataset.pointer;
      const inside = path === pointer || path.startsWith(`${pointer}/`);
      const better = !best || pointer.length > best.dataset.pointer.length || (pointer === best.dataset.pointer && element.dataset.kind);
      if (inside && better) best = element;
    }
    return best;
  }

  function showDetails(form, details, inForm) {
    const list = form.querySelector("[data-form-errors]");
    for (const { path, message } of details) {
      const target = inForm ? targetOf(form, path || "") : null;
      if (target && target.dataset.kind) {
        target.setAttribute("aria-invalid", "true");
        const small = document.createElement("small");
        small.className = "field-error";
        small.textContent = message;
        target.after(small);
      } else if (target) {
        const cell = target.querySelector("[data-prediction]");
        cell.classList.add("row-error");
        cell.textContent = message;
      } else {
        const item = document.createElement("li");
        item.textContent = path ? `${path}: ${message}` : message;
        list.append(item);
        list.hidden = false;
      }
    }
  }

  function showResult(form, title, value, failed) {
    const section = form.parentElement.querySelector("#result");
    const heading = document.createElement("h3");
    heading.textContent = title;
    const code = document.createElement("code");
    code.textContent = typeof value === "string" ? value : formatted(value);
    const pre = document.createElement("pre");
    pre.append(code);
    section.replaceChildren(heading, pre);
    section.classList.toggle("failed", Boolean(failed));
    section.hidden = false;
  }

  function showPredictions(form, predictions) {
    const rows = rowsOf(form);
    if (form.dataset.shape === "fields" || !Array.isArray(predictions) || predictions.length !== rows.length) return;
    rows.forEach((row, index) => {
      const value = predictions[index];
      row.querySelector("[data-prediction]").textContent = typeof value === "string" ? value : JSON.stringify(value);
    });
  }

  async function call(url, options) {
    try {
      const response = await fetch(url, { ...options, headers: withKey(options.headers), credentials: "omit" });
      const text = await response.text();
      let body = null;
      try {
        body = JSON.parse(text);
      } catch {
        body = { error: text || `HTTP ${response.status}` };
      }
      return { status: response.status, ok: response.ok, body };
    } catch (error) {
      return { status: 0, ok: false, body: { error: `the server does not answer (${error.message})` } };
    }
  }

  function showFailure(form, answer) {
    const body = answer.body || {};
    const message = needsKey(answer.status) || body.error || `HTTP ${answer.status}`;
    const idNote = body.error_id ? ` (error id ${body.error_id})` : "";
    showResult(form, `Error ${answer.status || ""}`.trim(), message + idNote, true);
  }

  // -- the try-it form -------------------------------------------------------------------

  const modeOf = (form) => (form.dataset.shape === "json" ? "json" : form.querySelector("input[name=mode]:checked").value);

  async function predict(form) {
    clearErrors(form);
    const inForm = modeOf(form) === "form";
    let payload;
    try {
      payload = inForm ? collect(form) : JSON.parse(form.querySelector("textarea[name=payload]").value);
    } catch (error) {
      showDetails(form, [{ path: "", message: `The payload is not JSON: ${error.message}` }], false);
      return;
    }
    const answer = await call(form.dataset.predict, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload),
    });
    if (answer.ok) {
      showResult(form, "Predictions", answer.body.predictions);
      if (inForm) showPredictions(form, answer.body.predictions);
      return;
    }
    if (answer.status === 422 && Array.isArray(answer.body.details)) {
      showDetails(form, answer.body.details, inForm);
      showResult(form, "Error 422", answer.body.error, true);
      return;
    }
    showFailure(form, answer);
  }

  async function scoreFixture(form) {
    clearErrors(form);
    const answer = await call(form.dataset.score, { method: "GET" });
    if (answer.ok) showResult(form, "Score on the fixture", answer.body.score);
    else showFailure(form, answer);
  }

  function switchMode(form, mode) {
    const textarea = form.querySelector("textarea[name=payload]");
    clearErrors(form);
    if (mode === "json") {
      textarea.value = formatted(collect(form));
    } else {
      try {
        fill(form, JSON.parse(textarea.value));
      } catch (error) {
        form.querySelector("input[name=mode][value=json]").checked = true;
        showDetails(form, [{ path: "", message: `The JSON does not fit the form: ${error.message}` }], false);
        return;
      }
    }
    form.querySelector("[data-part=form]").hidden = mode === "json";
    form.querySelector("[data-part=json]").hidden = mode !== "json";
  }

  function resetFixture(form) {
    clearErrors(form);
    const fixture = form.dataset.fixture;
    form.querySelector("textarea[name=payload]").value = formatted(JSON.parse(fixture));
    if (form.dataset.shape !== "json") fill(form, JSON.parse(fixture));
  }

  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form#try-it");
    if (!form) return;
    event.preventDefault();
    predict(form);
  });

  document.addEventListener("change", (event) => {
    const form = event.target.closest("form#try-it");
    if (form && event.target.name === "mode") switchMode(form, event.target.value);
  });

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    const form = button.closest("form#try-it");
    if (form && "scoreFixture" in button.dataset) scoreFixture(form);
    else if (form && "resetFixture" in button.dataset) resetFixture(form);
    else if (form && "addRow" in button.dataset) {
      form.querySelector("[data-part=form] tbody").append(blankRow(form));
      renumber(form);
    } else if (form && "removeRow" in button.dataset) {
      button.closest("tr").remove();
      renumber(form);
    } else if ("repository" in button.dataset) repository(button);
    else if ("cancel" in button.dataset) cancel(button);
  });

  // -- loading and unloading -------------------------------------------------------------

  async function repository(button) {
    button.setAttribute("aria-busy", "true");
    button.disabled = true;
    const answer = await call(button.dataset.repository, { method: "POST" });
    button.removeAttribute("aria-busy");
    button.disabled = false;
    notice(answer.ok ? "" : `${answer.status}: ${needsKey(answer.status) || answer.body.error}`);
    htmx.trigger(document.body, "console:changed");
  }

  // -- cancelling a job ------------------------------------------------------------------

  async function cancel(button) {
    button.setAttribute("aria-busy", "true");
    button.disabled = true;
    const answer = await call(button.dataset.cancel, { method: "DELETE" });
    notice(answer.ok ? "" : `${answer.status}: ${needsKey(answer.status) || answer.body.error}`);
    htmx.trigger(document.body, "console:changed");
  }
})();
