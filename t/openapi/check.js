// docs/openapi.yaml checked as a document and against a running gateway
// (t/openapi.t runs this; the conventions are in the document's
// info.description).
//
//   node check.js validate FILE            the document is OpenAPI 3.1, its
//                                          schemas compile strictly, every
//                                          example is consistent and
//                                          matches its schema
//   node check.js gateways FILE            the gateways the examples need
//   node check.js send FILE GATEWAY URL    every example request of that
//                                          gateway sent to URL, each answer
//                                          checked against the response
//                                          schema of its status and against
//                                          the example
//
// Prints one "ok - ..." or "not ok - ..." line per check, "# ..." lines
// for details; exits 1 if any check failed, 2 if it could not run.

import { readFileSync } from "node:fs";
import http from "node:http";
import { Validator } from "@seriousme/openapi-schema-validator";
import Ajv2020 from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import { parse } from "yaml";

const addFormats = addFormatsModule.default;
const METHODS = ["get", "put", "post", "delete", "head", "options", "patch",
                 "trace"];
const JSON_TYPE = "application/json";

let failed = 0;

function report(ok, name, details = []) {
    console.log(`${ok ? "ok" : "not ok"} - ${name}`);
    for (const d of details) {
        for (const line of String(d).split("\n")) {
            console.log(`# ${line}`);
        }
    }
    if (!ok) {
        failed++;
    }
}

function resolve(doc, obj) {
    while (obj && typeof obj.$ref === "string" && obj.$ref.startsWith("#/")) {
        obj = obj.$ref.slice(2).split("/").reduce(
            (o, k) => o?.[k.replace(/~1/g, "/").replace(/~0/g, "~")], doc);
    }
    return obj;
}

function refName(obj) {
    return obj && typeof obj.$ref === "string" ? obj.$ref : null;
}

// The schemas of the document under one $id, so that ajv resolves their
// "#/components/schemas/X" references.
function makeAjv(doc) {
    const ajv = new Ajv2020({ strict: false, strictSchema: true,
                              allErrors: true });
    addFormats(ajv);
    ajv.addVocabulary(["example", "discriminator", "xml", "externalDocs"]);
    const defs = JSON.parse(JSON.stringify(doc.components?.schemas ?? {},
        (k, v) => (k === "$ref" && typeof v === "string"
                   && v.startsWith("#/components/schemas/"))
                  ? "timpush#/$defs/" + v.slice("#/components/schemas/".length)
                  : v));
    ajv.addSchema({ $id: "timpush", $defs: defs });
    return ajv;
}

function compile(ajv, schema) {
    const s = JSON.parse(JSON.stringify(schema, (k, v) =>
        (k === "$ref" && typeof v === "string"
         && v.startsWith("#/components/schemas/"))
        ? "timpush#/$defs/" + v.slice("#/components/schemas/".length) : v));
    return ajv.compile(s);
}

function schemaErrors(validate, value) {
    if (validate(value)) {
        return [];
    }
    return validate.errors.map(e =>
        `${e.instancePath || "(the body)"} ${e.message}`
        + (e.params && Object.keys(e.params).length
           ? " " + JSON.stringify(e.params) : ""));
}

// Every exchange the document describes: an operation's example names,
// from its request body, its parameters and its responses; and the
// examples of component responses no operation refers to.
function exchanges(doc) {
    const out = [];
    const problems = [];
    const usedResponses = new Set();

    for (const [path, item] of Object.entries(doc.paths ?? {})) {
        for (const method of METHODS) {
            const op = item[method];
            if (!op) {
                continue;
            }
            const where = `${method.toUpperCase()} ${path}`;
            const params = [...(item.parameters ?? []), ...(op.parameters ?? [])]
                .map(p => resolve(doc, p));
            const body = op.requestBody
                ? resolve(doc, op.requestBody).content?.[JSON_TYPE] : null;
            const answers = new Map();

            for (const [status, r] of Object.entries(op.responses ?? {})) {
                if (refName(r)) {
                    usedResponses.add(refName(r));
                }
                const resp = resolve(doc, r);
                const media = resp.content?.[JSON_TYPE];
                for (const [name, ex] of Object.entries(media?.examples ?? {})) {
                    if (answers.has(name)) {
                        problems.push(`${where}: example "${name}" is the answer of ${answers.get(name).status} and of ${status}`);
                        continue;
                    }
                    answers.set(name, { status: Number(status), example: resolve(doc, ex),
                                        schema: media.schema });
                }
            }

            for (const name of Object.keys(body?.examples ?? {})) {
                if (!answers.has(name)) {
                    problems.push(`${where}: the request example "${name}" has no answer of that name`);
                }
            }

            for (const [name, a] of answers) {
                const ex = {
                    id: `${where} ${name}`, where, name, method, path,
                    status: a.status, answer: a.example, schema: a.schema,
                    bodyExample: body?.examples?.[name]
                                 ? resolve(doc, body.examples[name]) : undefined,
                    bodySchema: body?.schema, params: {},
                };
                if (!a.example["x-timpush-not-sent"]) {
                    for (const p of params) {
                        const pe = p.examples?.[name];
                        if (pe === undefined) {
                            problems.push(`${where}: parameter ${p.name} has no example "${name}"`);
                        } else {
                            ex.params[p.name] = resolve(doc, pe).value;
                        }
                    }
                }
                out.push(ex);
            }

        }
    }

    for (const [cname, resp] of Object.entries(doc.components?.responses ?? {})) {
        if (usedResponses.has(`#/components/responses/${cname}`)) {
            continue;
        }
        const media = resp.content?.[JSON_TYPE];
        for (const [name, e] of Object.entries(media?.examples ?? {})) {
            const example = resolve(doc, e);
            const req = example["x-timpush-request"] ?? {};
            const status = example["x-timpush-status"];
            if (!Number.isInteger(status)) {
                problems.push(`components.responses.${cname}: example "${name}" has no x-timpush-status`);
                continue;
            }
            if (!example["x-timpush-not-sent"] && (!req.method || !req.path)) {
                problems.push(`components.responses.${cname}: example "${name}" has no x-timpush-request method and path`);
                continue;
            }
            out.push({
                id: `${req.method ?? "-"} ${req.path ?? "-"} ${cname}.${name}`,
                where: `components.responses.${cname}`, name,
                method: (req.method ?? "get").toLowerCase(), path: req.path,
                status, answer: example, schema: media.schema, params: {},
            });
        }
    }

    // a shared parameter's example names must all be answered somewhere
    const answered = new Set(out.map(x => x.name));
    for (const [pname, p] of Object.entries(doc.components?.parameters ?? {})) {
        for (const name of Object.keys(p.examples ?? {})) {
            if (!answered.has(name)) {
                problems.push(`components.parameters.${pname}: example "${name}" is no exchange's`);
            }
        }
    }

    return { list: out, problems };
}

function gatewayOf(x) {
    return x.answer["x-timpush-gateway"] ?? "default";
}

function sendOptions(x) {
    return { ...(x.bodyExample?.["x-timpush-send"] ?? {}),
             ...(x.answer["x-timpush-send"] ?? {}) };
}

async function validate(file, text, doc) {
    const v = new Validator();
    const res = await v.validate(text);
    report(res.valid, `${file} is a valid OpenAPI ${doc.openapi} document`,
           res.valid ? [] : [JSON.stringify(res.errors, null, 2)]);

    let ajv;
    try {
        ajv = makeAjv(doc);
        for (const name of Object.keys(doc.components?.schemas ?? {})) {
            ajv.getSchema(`timpush#/$defs/${name}`)
                ?? compile(ajv, { $ref: `#/components/schemas/${name}` });
        }
        report(true, "every schema compiles (JSON Schema 2020-12, unknown keywords refused)");
    } catch (e) {
        report(false, "every schema compiles (JSON Schema 2020-12, unknown keywords refused)",
               [e.message]);
        return;
    }

    const { list, problems } = exchanges(doc);
    report(problems.length === 0,
           "every example names a whole exchange (request, parameters, answer)",
           problems);

    let bad = [];
    for (const x of list) {
        if (x.schema) {
            const errs = schemaErrors(compile(ajv, x.schema), x.answer.value);
            if (errs.length) {
                bad.push(`${x.id}: the answer: ${errs.join("; ")}`);
            }
        }
        const opts = sendOptions(x);
        if (x.status < 300 && x.bodyExample && x.bodySchema && !opts.raw) {
            const errs = schemaErrors(compile(ajv, x.bodySchema), x.bodyExample.value);
            if (errs.length) {
                bad.push(`${x.id}: the request body: ${errs.join("; ")}`);
            }
        }
    }
    report(bad.length === 0,
           `every answer example (${list.length}) matches the schema of its status, every request of a 2xx its request schema`,
           bad);

    const sent = list.filter(x => !x.answer["x-timpush-not-sent"]);
    report(sent.length > 0, `${sent.length} example requests to send, ${list.length - sent.length} answers the test cannot provoke`);
}

// ---- sending --------------------------------------------------------------

function request(base, { method, path, headers = {}, body }) {
    const url = new URL(base);
    return new Promise((resolveP, reject) => {
        let answered = false;
        const req = http.request({
            host: url.hostname, port: url.port, method: method.toUpperCase(),
            path, headers, timeout: 180000,
        }, res => {
            const chunks = [];
            res.on("data", c => chunks.push(c));
            res.on("end", () => {
                answered = true;
                resolveP({ status: res.statusCode, headers: res.headers,
                           body: Buffer.concat(chunks).toString("utf8") });
            });
            res.on("error", reject);
        });
        req.on("timeout", () => req.destroy(new Error("no answer in 180 s")));
        // a server that answers before the body is whole (413) may close
        req.on("error", e => { if (!answered) setTimeout(() => answered || reject(e), 500); });
        if (body !== undefined) {
            req.end(body);
        } else {
            req.end();
        }
    });
}

function setPath(obj, dotted, value) {
    const keys = dotted.split(".");
    let o = obj;
    for (const k of keys.slice(0, -1)) {
        o = o[k] ??= {};
    }
    o[keys.at(-1)] = value;
}

function build(x) {
    const opts = sendOptions(x);
    const req = { ...(x.answer["x-timpush-request"] ?? {}) };
    req.method = req.method ?? x.method;
    let path = req.path ?? x.path.replace(/\{([^}]+)\}/g,
        (_, name) => encodeURIComponent(String(x.params[name])));
    const headers = { ...(req.headers ?? {}) };

    let body;
    let value = req.body ?? x.bodyExample?.value;
    if (value !== undefined) {
        if (opts.fill) {
            value = JSON.parse(JSON.stringify(value));
            for (const [dotted, n] of Object.entries(opts.fill)) {
                setPath(value, dotted, "x".repeat(n));
            }
        }
        body = opts.raw ? String(value) : JSON.stringify(value);
        if (opts.pad_to && Buffer.byteLength(body) < opts.pad_to) {
            body += " ".repeat(opts.pad_to - Buffer.byteLength(body));
        }
    }
    if (opts.path_to && path.length < opts.path_to) {
        path += "?pad=" + "a".repeat(opts.path_to - path.length - 5);
    }
    for (const [h, n] of Object.entries(opts.header_to ?? {})) {
        headers[h] = "a".repeat(n);
    }
    if (body !== undefined && !Object.keys(headers).some(h => /^transfer-encoding$/i.test(h))) {
        headers["Content-Type"] = JSON_TYPE;
        headers["Content-Length"] = Buffer.byteLength(body);
    }
    return { method: req.method, path, headers, body };
}

// the example and the answer, member by member; volatile members by type
function differences(want, got, volatile, at = "") {
    const out = [];
    const kind = v => Array.isArray(v) ? "array" : v === null ? "null" : typeof v;
    if (kind(want) !== kind(got)) {
        return [`${at || "(the body)"}: ${kind(want)} expected, got ${JSON.stringify(got)}`];
    }
    if (Array.isArray(want)) {
        if (want.length !== got.length) {
            return [`${at}: ${want.length} elements expected, got ${got.length}`];
        }
        want.forEach((w, i) => out.push(...differences(w, got[i], volatile, `${at}[${i}]`)));
        return out;
    }
    if (kind(want) === "object") {
        const keys = new Set([...Object.keys(want), ...Object.keys(got)]);
        for (const k of keys) {
            if (!(k in want)) {
                out.push(`${at}.${k}: not expected, got ${JSON.stringify(got[k])}`);
            } else if (!(k in got)) {
                out.push(`${at}.${k}: missing`);
            } else if (!volatile.includes(k)) {
                out.push(...differences(want[k], got[k], volatile, `${at}.${k}`));
            } else if (kind(want[k]) !== kind(got[k])) {
                out.push(`${at}.${k}: ${kind(want[k])} expected, got ${JSON.stringify(got[k])}`);
            }
        }
        return out;
    }
    return want === got ? [] : [`${at || "(the body)"}: ${JSON.stringify(want)} expected, got ${JSON.stringify(got)}`];
}

async function send(doc, gateway, base) {
    const ajv = makeAjv(doc);
    const { list, problems } = exchanges(doc);
    if (problems.length) {
        report(false, "the examples are consistent (see: check.js validate)", problems);
        return;
    }
    const mine = list.filter(x => gatewayOf(x) === gateway
                                  && !x.answer["x-timpush-not-sent"]);
    report(mine.length > 0, `${mine.length} example requests for the gateway "${gateway}"`);

    for (const x of mine) {
        const details = [];
        try {
            for (const b of x.answer["x-timpush-before"] ?? []) {
                const r = await request(base, {
                    method: b.method, path: b.path,
                    headers: b.body ? { "Content-Type": JSON_TYPE } : {},
                    body: b.body === undefined ? undefined : JSON.stringify(b.body),
                });
                if (r.status < 200 || r.status > 299) {
                    details.push(`before it, ${b.method} ${b.path}: ${r.status} ${r.body}`);
                }
            }
            const req = build(x);
            const r = await request(base, req);
            const shown = req.path.length > 120 ? req.path.slice(0, 117) + "..." : req.path;
            if (r.status !== x.status) {
                details.push(`status ${x.status} expected, got ${r.status}`);
            }
            if (req.method.toUpperCase() === "HEAD") {
                if (r.body !== "") {
                    details.push(`HEAD answered with a body: ${r.body}`);
                }
            } else {
                if (!String(r.headers["content-type"] ?? "").startsWith(JSON_TYPE)) {
                    details.push(`Content-Type ${r.headers["content-type"]}`);
                }
                let got;
                try {
                    got = JSON.parse(r.body);
                } catch (e) {
                    details.push(`not JSON: ${r.body.slice(0, 300)}`);
                }
                if (got !== undefined) {
                    if (x.schema) {
                        const errs = schemaErrors(compile(ajv, x.schema), got);
                        details.push(...errs.map(e => `schema of ${x.status}: ${e}`));
                    }
                    details.push(...differences(x.answer.value, got,
                                                x.answer["x-timpush-volatile"] ?? []));
                    if (details.length) {
                        details.push(`answer: ${r.body.trim().slice(0, 2000)}`);
                    }
                }
            }
            report(details.length === 0,
                   `${x.id}: ${req.method.toUpperCase()} ${shown} -> ${x.status}`, details);
        } catch (e) {
            report(false, x.id, [...details, e.stack ?? String(e)]);
        }
    }
}

async function main() {
    const [cmd, file, gateway, base] = process.argv.slice(2);
    if (!cmd || !file) {
        console.error("usage: check.js validate|gateways|send FILE [GATEWAY URL]");
        process.exit(2);
    }
    const text = readFileSync(file, "utf8");
    const doc = parse(text);

    if (cmd === "validate") {
        await validate(file, text, doc);
    } else if (cmd === "gateways") {
        const { list } = exchanges(doc);
        console.log([...new Set(list.filter(x => !x.answer["x-timpush-not-sent"])
                                    .map(gatewayOf))].sort().join(" "));
    } else if (cmd === "send") {
        await send(doc, gateway, base);
    } else {
        console.error(`check.js: unknown command ${cmd}`);
        process.exit(2);
    }
    process.exit(failed ? 1 : 0);
}

main().catch(e => {
    console.error(e.stack ?? String(e));
    process.exit(2);
});
