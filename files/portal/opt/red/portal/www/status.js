// The status page: reads /red/status.json (written by red-status on the box) every couple of
// seconds and shows it. No framework, nothing from outside the box.
"use strict";
const $ = (selector) => document.querySelector(selector);
let openLog = null;

function element(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes || {})) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function badge(state) {
  return element("span", { class: "state " + state }, state);
}

function logButton(name) {
  const button = element("button", { class: "log", type: "button" }, "log");
  button.addEventListener("click", () => showLog(name));
  return button;
}

async function showLog(name) {
  openLog = name;
  $("#log-section").hidden = false;
  $("#log-name").textContent = "/logs/" + name + ".log";
  const response = await fetch("/red/logs/" + encodeURIComponent(name) + ".txt",
                               { cache: "no-store", credentials: "same-origin" });
  $("#log").textContent = response.ok ? await response.text() : "(no log yet)";
}

function logName(path) {
  const match = /([^/]+)\.log$/.exec(path || "");
  return match ? match[1] : null;
}

// red-doctor's verdicts (the report under status.doctor): each one a badge class of its own.
const VERDICTS = ["ok", "warn", "fail", "skip"];

function fact(label, ...value) {
  return [element("dt", {}, label), element("dd", {}, ...value)];
}

// The GPU card: what red-doctor found (the GPU, the flavor, each check of the app), and a banner
// when no flavor runs on this GPU or there is no GPU, with the report's own why and what to do.
// Every string goes in as text: the report holds what nvidia-smi printed.
function renderGpu(report) {
  $("#doctor-hint").hidden = Boolean(report);
  const gpuBanner = $("#gpu-banner");
  if (!report) {
    gpuBanner.hidden = true;
    $("#gpu").replaceChildren();
    $("#checks").replaceChildren();
    return;
  }
  const card = report.gpu;
  const flavor = report.flavor || {};
  const refused = flavor.chosen === null || flavor.chosen === undefined;
  const warning = String(flavor.warning || "");
  gpuBanner.hidden = !(refused || !card || warning);
  gpuBanner.className = refused ? "banner bad" : "banner waiting";
  gpuBanner.textContent = refused ? (warning || "No flavor of VisoMaster runs on this GPU: " + flavor.reason)
                                  : warning;
  const facts = card ? [
    fact("GPU", String(card.name) + (card.count > 1 ? ` (${card.count} GPUs; the app uses the first)` : "")),
    fact("Compute capability", String(card.compute_capability)),
    fact("Driver", String(card.driver_version)),
    fact("CUDA", card.cuda_max ? `up to ${card.cuda_max} (what the driver runs)` : "not known"),
  ] : [fact("GPU", "none: " + (report.gpu_problem || "nvidia-smi shows no GPU"))];
  facts.push(fact("Flavor", `${flavor.configured} → `,
                  element("strong", {}, refused ? "none (nothing installed)" : String(flavor.chosen)),
                  element("span", { class: "why" }, String(flavor.reason || ""))));
  $("#gpu").replaceChildren(...facts.flat());
  const checks = (report.app || []).map((check) => {
    const verdict = VERDICTS.includes(check.verdict) ? check.verdict : "unknown";
    return element("li", { "data-check": String(check.name) },
      element("span", { class: "state " + verdict }, verdict),
      element("strong", {}, String(check.name)),
      element("span", { class: "detail" }, String(check.reason || "")));
  });
  $("#checks").replaceChildren(...checks);
}

function render(status) {
  $("#host").textContent = status.label || status.hostname || "";
  const failed = status.problems || [];
  const banner = $("#banner");
  if (failed.length) {
    banner.className = "banner bad";
    // The doctor's own banner in the GPU card says it in full: not twice at the top.
    const warning = status.doctor && status.doctor.flavor.warning;
    const first = warning && failed[0] === "red-doctor: " + warning
      ? "red-doctor: VisoMaster cannot run on this box: the GPU card below says why and what to do"
      : failed[0];
    banner.textContent = first + (failed.length > 1 ? ` (and ${failed.length - 1} more below)` : "");
  } else if (status.ready) {
    const busy = status.provisioning.some((step) => step.state === "running");
    banner.className = busy ? "banner waiting" : "banner ok";
    banner.textContent = busy ? "Every service is running; provisioning is still at work."
                              : "Every service is running.";
  } else {
    banner.className = "banner waiting";
    banner.textContent = "Services are starting…";
  }
  const rows = status.programs.map((program) => element("tr", { "data-program": program.name },
    element("td", {}, program.name),
    element("td", {}, badge(program.state)),
    element("td", { class: "info" }, program.service ? program.info : (program.info || "") + " (on demand)"),
    element("td", {}, logButton(program.name))));
  $("#programs tbody").replaceChildren(...rows);
  const steps = status.provisioning.map((step) => {
    const name = logName(step.log);
    return element("li", { "data-step": step.name },
      badge(step.state), element("strong", {}, step.name),
      name && status.logs.includes(name) ? logButton(name) : element("span"),
      element("span", { class: "detail" }, step.detail || ""));
  });
  $("#steps").replaceChildren(...steps);
  const secrets = status.secrets.map((secret) => element("li", {},
    element("code", {}, secret.path), " opens " + secret.opens +
    (secret.generated ? " (generated on this box)" : secret.exists ? " (from the environment)" : " (not made yet)")));
  $("#secrets").replaceChildren(...secrets);
  renderGpu(status.doctor);
  const jupyter = $("#jupyter-link");
  if (status.jupyter.vast) {
    jupyter.href = `https://${location.hostname}:${status.jupyter.port}/`;
    jupyter.textContent = "Vast's Jupyter";
  } else {
    jupyter.href = status.jupyter.path;
  }
  const age = Date.now() / 1000 - status.generated_epoch;
  const footer = $("#updated");
  footer.className = age > 15 ? "stale" : "";
  footer.textContent = age > 15
    ? `The status is ${Math.round(age)} s old: the status writer is not running (supervisorctl status status).`
    : "Updated " + status.generated + ", refreshes by itself.";
  if (openLog) showLog(openLog);
}

async function refresh() {
  try {
    const response = await fetch("/red/status.json", { cache: "no-store", credentials: "same-origin" });
    if (response.status === 401) { location.reload(); return; }
    if (response.ok) render(await response.json());
    else $("#banner").textContent = `The status file is not there yet (HTTP ${response.status}).`;
  } catch (error) {
    $("#banner").className = "banner bad";
    $("#banner").textContent = "The box does not answer: " + error;
  }
}

$("#log-close").addEventListener("click", () => { openLog = null; $("#log-section").hidden = true; });
refresh();
setInterval(refresh, 2000);
