//! docs/openapi.yaml is the API's contract: every route of the daemon's
//! handler table is in it (and nothing else), and every answer the real
//! daemon gives here, success or error, on every route, is valid against
//! the schema the document gives for that route and status.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::http::{self, Answer, Events};
use common::portal::Portal;
use common::*;
use serde_json::{json, Value};

fn doc() -> Value {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml"))
            .expect("docs/openapi.yaml");
    serde_yaml::from_str(&text).expect("docs/openapi.yaml is YAML")
}

#[test]
fn every_route_of_the_handler_table_is_documented_and_nothing_else() {
    let doc = doc();
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for (method, _) in item.as_object().unwrap() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.insert((path.clone(), method.to_uppercase()));
            }
        }
    }
    let mut served = BTreeSet::new();
    for (path, methods) in licagent::api::server::ROUTES {
        for m in *methods {
            served.insert((path.to_string(), m.to_string()));
        }
    }
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "routes missing from docs/openapi.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented routes the daemon does not serve: {extra:?}"
    );
}

#[test]
fn every_error_code_is_in_the_document() {
    // The enum of the document against the daemon's own list.
    let doc = doc();
    let listed: BTreeSet<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/error.rs"))
            .unwrap();
    // Variants of `enum Code`, in snake_case.
    let body = src
        .split("pub enum Code {")
        .nth(1)
        .and_then(|s| s.split("\n}").next())
        .unwrap();
    let mut ours = BTreeSet::new();
    for line in body.lines().map(str::trim) {
        if line.starts_with("//") || line.is_empty() {
            continue;
        }
        let name = line.trim_end_matches(',');
        let mut snake = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        }
        ours.insert(snake);
    }
    assert_eq!(
        ours, listed,
        "docs/openapi.yaml ErrorCode and src/api/error.rs differ"
    );
}

/// A small JSON Schema check: the keywords docs/openapi.yaml uses.
struct Validator {
    doc: Value,
}

impl Validator {
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let mut v = &self.doc;
                for part in r.trim_start_matches("#/").split('/') {
                    v = &v[part];
                }
                assert!(!v.is_null(), "dangling $ref {r}");
                self.resolve(v)
            }
            None => schema,
        }
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let ok = types.iter().any(|t| match *t {
                "null" => value.is_null(),
                "boolean" => value.is_boolean(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "string" => value.is_string(),
                "array" => value.is_array(),
                "object" => value.is_object(),
                _ => false,
            });
            if !ok {
                errors.push(format!("{at}: {value} is not of type {types:?}"));
                return;
            }
        }
        if let Some(c) = schema.get("const") {
            if c != value {
                errors.push(format!("{at}: {value} is not {c}"));
            }
        }
        if let Some(list) = schema.get("enum").and_then(Value::as_array) {
            if !list.contains(value) {
                errors.push(format!("{at}: {value} is not one of {list:?}"));
            }
        }
        if let (Some(min), Some(n)) = (
            schema.get("minimum").and_then(Value::as_i64),
            value.as_i64(),
        ) {
            if n < min {
                errors.push(format!("{at}: {n} is below {min}"));
            }
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time") {
            if let Some(s) = value.as_str() {
                if licagent::time::parse_rfc3339(s).is_none() {
                    errors.push(format!("{at}: {s:?} is not RFC 3339"));
                }
            }
        }
        if let Some(obj) = value.as_object() {
            let props = schema.get("properties").and_then(Value::as_object);
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !obj.contains_key(r) {
                        errors.push(format!("{at}: required field {r:?} is missing"));
                    }
                }
            }
            for (k, v) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(s) => self.check(s, v, &format!("{at}.{k}"), errors),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            errors.push(format!("{at}: field {k:?} is not in the document"))
                        }
                        Some(s @ Value::Object(_)) => {
                            self.check(s, v, &format!("{at}.{k}"), errors)
                        }
                        _ => {}
                    },
                }
            }
        }
        if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
            for (i, v) in arr.iter().enumerate() {
                self.check(items, v, &format!("{at}[{i}]"), errors);
            }
        }
        if let Some(alts) = schema.get("oneOf").and_then(Value::as_array) {
            let passing = alts
                .iter()
                .filter(|alt| {
                    let mut e = Vec::new();
                    self.check(alt, value, at, &mut e);
                    e.is_empty()
                })
                .count();
            if passing != 1 {
                errors.push(format!(
                    "{at}: {value} matches {passing} of the oneOf alternatives, not exactly 1"
                ));
            }
        }
    }

    /// The schema of the answer `status` of `method path_template`.
    fn answer_schema(&self, template: &str, method: &str, status: u16) -> &Value {
        let op = &self.doc["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not documented");
        let resp = &op["responses"][status.to_string()];
        let resp = if resp.is_null() {
            &op["responses"]["default"]
        } else {
            resp
        };
        assert!(
            !resp.is_null(),
            "{method} {template}: no answer {status} and no default"
        );
        let resp = self.resolve(resp);
        &resp["content"]["application/json"]["schema"]
    }
}

/// Every call made, for the coverage check at the end.
struct Calls {
    v: Validator,
    socket: std::path::PathBuf,
    seen: BTreeSet<(String, String)>,
}

impl Calls {
    /// Calls `method path` (the template names the documented route) and
    /// checks the answer against the document; returns it.
    fn call(&mut self, template: &str, method: &str, path: &str, body: Option<Value>) -> Answer {
        let a = match body {
            Some(b) => http::post_json(&self.socket, method, path, &b),
            None => http::request(&self.socket, method, path, &[], b""),
        };
        self.check(template, method, path, &a);
        a
    }

    fn raw(
        &mut self,
        template: &str,
        method: &str,
        path: &str,
        ctype: &str,
        body: &[u8],
    ) -> Answer {
        let a = http::request(&self.socket, method, path, &[("Content-Type", ctype)], body);
        self.check(template, method, path, &a);
        a
    }

    fn check(&mut self, template: &str, method: &str, path: &str, a: &Answer) {
        assert_eq!(
            a.header("content-type"),
            Some("application/json"),
            "{method} {path}"
        );
        let schema = self.v.answer_schema(template, method, a.status).clone();
        let mut errors = Vec::new();
        self.v.check(&schema, &a.json(), "$", &mut errors);
        assert!(
            errors.is_empty(),
            "{method} {path} -> {}: {}\n{}",
            a.status,
            errors.join("\n"),
            String::from_utf8_lossy(&a.body)
        );
        self.seen.insert((template.to_string(), method.to_string()));
    }

    fn expect(&mut self, a: &Answer, status: u16, code: &str) {
        assert_eq!(a.status, status, "{}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.code(), code);
    }
}

#[test]
fn real_answers_of_every_route_match_the_document() {
    let env = Env::new();
    let mut portal = Portal::init(env.dir.path());
    let pbx = portal.add_pbx("OpenAPI", "premium=1,essential=2");
    portal.serve();
    env.write_config_with_trust(&[&portal.trust_line], &portal.agent_config(true));
    let mut d = env.start();
    d.await_ready();
    let mut c = Calls {
        v: Validator { doc: doc() },
        socket: env.socket.clone(),
        seen: BTreeSet::new(),
    };

    // Before any license.
    let a = c.call("/v1/status", "GET", "/v1/status", None);
    assert_eq!(a.json()["state"], "unlicensed");
    c.call("/v1/hwid", "GET", "/v1/hwid", None);
    let a = c.call("/v1/whoami", "GET", "/v1/whoami", None);
    assert_eq!(
        a.json()["may_change"],
        true,
        "the test runs as the daemon's user"
    );
    let a = c.call("/v1/refresh", "POST", "/v1/refresh", None);
    c.expect(&a, 409, "nothing_to_refresh");
    let a = c.raw("/v1/license", "POST", "/v1/license", "text/plain", b"hello");
    c.expect(&a, 400, "not_a_license");
    let a = c.call(
        "/v1/activate",
        "POST",
        "/v1/activate",
        Some(json!({"key": "AAAA-BBBB"})),
    );
    c.expect(&a, 400, "key_invalid");
    let a = c.call(
        "/v1/users",
        "POST",
        "/v1/users",
        Some(json!({"id": "u0", "name": "N", "extension": "200", "profile": "premium"})),
    );
    c.expect(&a, 409, "no_license");

    // Wrong paths and methods: not_found is not unknown_user.
    let a = http::get(&env.socket, "/v1/entitlement/");
    assert_eq!((a.status, a.code()), (404, "not_found".to_string()));
    let a = http::get(&env.socket, "/v2/status");
    assert_eq!((a.status, a.code()), (404, "not_found".to_string()));
    let a = http::request(&env.socket, "DELETE", "/v1/status", &[], b"");
    assert_eq!(
        (a.status, a.code()),
        (405, "method_not_allowed".to_string())
    );
    let a = http::request(
        &env.socket,
        "GET",
        "/v1/status",
        &[("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!((a.status, a.code()), (403, "origin_refused".to_string()));

    // Activation and the portal link.
    let a = c.call(
        "/v1/activate",
        "POST",
        "/v1/activate",
        Some(json!({"key": pbx.key})),
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["state"], "active");
    let a = c.call(
        "/v1/request-code",
        "POST",
        "/v1/request-code",
        Some(json!({"key": pbx.key})),
    );
    assert_eq!(a.status, 200);
    let a = c.call("/v1/refresh", "POST", "/v1/refresh", None);
    assert_eq!(a.status, 200);
    // Trouble at the portal is a gateway error, not a refusal.
    portal.fault("error500");
    let a = c.call("/v1/refresh", "POST", "/v1/refresh", None);
    c.expect(&a, 502, "portal_unreachable");
    portal.fault("none");

    // Users, profiles, add-ons.
    for (id, ext, profile) in [
        ("u1", "201", "premium"),
        ("u2", "202", "premium"),
        ("u3", "203", "essential"),
    ] {
        let a = c.call(
            "/v1/users",
            "POST",
            "/v1/users",
            Some(json!({"id": id, "name": id, "extension": ext, "profile": profile})),
        );
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    }
    let a = c.call(
        "/v1/users",
        "POST",
        "/v1/users",
        Some(json!({"id": "u1", "name": "x", "extension": "299"})),
    );
    c.expect(&a, 409, "duplicate_user");
    let a = c.call("/v1/users", "POST", "/v1/users", Some(json!({"id": "u9"})));
    c.expect(&a, 400, "bad_request");
    c.call("/v1/users", "GET", "/v1/users", None);
    let a = c.call("/v1/users/{id}", "GET", "/v1/users/u1", None);
    assert_eq!(a.json()["reason"], Value::Null);
    let a = c.call("/v1/users/{id}", "GET", "/v1/users/nobody", None);
    c.expect(&a, 404, "unknown_user");
    c.call(
        "/v1/users/{id}",
        "PATCH",
        "/v1/users/u3",
        Some(json!({"name": "Third"})),
    );
    let a = c.call(
        "/v1/users/{id}/profile",
        "PUT",
        "/v1/users/u3/profile",
        Some(json!({"profile": "gold"})),
    );
    c.expect(&a, 422, "unknown_code");
    c.call(
        "/v1/users/{id}/addons",
        "POST",
        "/v1/users/u1/addons",
        Some(json!({"code": "mobile"})),
    );
    c.call(
        "/v1/users/{id}/addons/{code}",
        "DELETE",
        "/v1/users/u1/addons/mobile",
        None,
    );
    let a = c.call(
        "/v1/users/{id}/addons/{code}",
        "DELETE",
        "/v1/users/u1/addons/mobile",
        None,
    );
    c.expect(&a, 422, "holding_conflict");
    // The profile taken away and given back.
    let a = c.call(
        "/v1/users/{id}/profile",
        "DELETE",
        "/v1/users/u3/profile",
        None,
    );
    assert_eq!(a.json()["reason"], "no_profile");
    c.call(
        "/v1/users/{id}/profile",
        "PUT",
        "/v1/users/u3/profile",
        Some(json!({"profile": "essential"})),
    );

    // The PBX's checks: the second premium user has no seat (1 bought).
    let a = c.call(
        "/v1/entitlement",
        "GET",
        "/v1/entitlement?extension=202",
        None,
    );
    let v = a.json();
    assert_eq!(
        (v["licensed"].clone(), v["reason"].clone()),
        (json!(false), json!("no_seat"))
    );
    assert_eq!(v["missing"], json!(["premium"]));
    assert_eq!(v["profile"]["missing"], json!(["premium"]));
    let a = c.call(
        "/v1/entitlement",
        "GET",
        "/v1/entitlement?extension=999",
        None,
    );
    c.expect(&a, 404, "unknown_user");
    let a = c.call("/v1/entitlement", "GET", "/v1/entitlement", None);
    c.expect(&a, 400, "bad_request");
    let a = c.call(
        "/v1/entitlements",
        "POST",
        "/v1/entitlements",
        Some(json!({"users": ["u1", "ghost"], "extensions": ["202"]})),
    );
    let r = &a.json()["results"];
    assert_eq!(r[0]["entitlement"]["licensed"], true);
    assert_eq!(r[1]["error"]["code"], "unknown_user");
    assert_eq!(r[2]["entitlement"]["reason"], "no_seat");

    // Bulk import, seats, audit.
    let csv = b"extension,number,name,profile\n210,,Ten,essential\n";
    let a = c.raw(
        "/v1/users/import",
        "POST",
        "/v1/users/import?dry_run=true",
        "text/csv",
        csv,
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let bad = b"extension,number,name,profile\n,,Nobody,essential\n";
    let a = c.raw(
        "/v1/users/import",
        "POST",
        "/v1/users/import",
        "text/csv",
        bad,
    );
    c.expect(&a, 422, "csv_invalid");
    assert!(a.json()["error"]["rows"][0]["line"].is_u64());
    c.call("/v1/seats", "GET", "/v1/seats", None);
    let a = c.call("/v1/audit", "GET", "/v1/audit?limit=5", None);
    assert!(a.json()[0]["at"].is_string(), "audit times are RFC 3339");
    let a = c.call("/v1/audit", "GET", "/v1/audit?limit=ten", None);
    c.expect(&a, 400, "bad_request");

    // Export, restore onto a box that has users: refused.
    let a = c.call("/v1/export", "POST", "/v1/export", None);
    let export = a.json();
    let a = c.call("/v1/restore", "POST", "/v1/restore", Some(export));
    c.expect(&a, 409, "restore_refused");

    // Test mode.
    c.call("/v1/test-mode/start", "POST", "/v1/test-mode/start", None);
    let a = c.call("/v1/test-mode/start", "POST", "/v1/test-mode/start", None);
    c.expect(&a, 409, "test_mode_on");
    c.call("/v1/test-mode/stop", "POST", "/v1/test-mode/stop", None);
    let a = c.call("/v1/test-mode/stop", "POST", "/v1/test-mode/stop", None);
    c.expect(&a, 409, "test_mode_off");

    // The event stream: a snapshot first, then changes as they happen.
    let v = Validator { doc: doc() };
    let mut ev = Events::open(&env.socket, "/v1/events", &[]);
    assert_eq!(ev.status, 200);
    assert_eq!(
        ev.headers
            .iter()
            .find(|(n, _)| n == "content-type")
            .map(|(_, v)| v.as_str()),
        Some("text/event-stream")
    );
    let snap = ev.next();
    assert_eq!(snap.event, "snapshot");
    let mut errors = Vec::new();
    v.check(
        &json!({"$ref": "#/components/schemas/SnapshotEvent"}),
        &snap.data,
        "$",
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    c.call("/v1/users/{id}", "DELETE", "/v1/users/u1", None);
    // u1 removed, so u2 takes the premium seat.
    let mut kinds = BTreeSet::new();
    while !(kinds.contains("user_removed") && kinds.contains("user")) {
        let e = ev.next();
        let mut errors = Vec::new();
        v.check(
            &json!({"$ref": "#/components/schemas/Event"}),
            &e.data,
            "$",
            &mut errors,
        );
        assert!(errors.is_empty(), "{e:?}: {errors:?}");
        if e.event == "user" {
            assert_eq!(e.data["id"], "u2");
            assert_eq!(e.data["licensed"], true);
        }
        kinds.insert(e.event);
    }
    c.seen.insert(("/v1/events".into(), "GET".into()));

    // Deactivate, then this machine's trial.
    let a = c.call("/v1/deactivate", "POST", "/v1/deactivate", None);
    assert_eq!(a.json()["state"], "unlicensed");
    let a = c.call("/v1/trial", "POST", "/v1/trial", None);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["state"], "trial");

    // Every route was called and checked.
    let all: BTreeSet<(String, String)> = licagent::api::server::ROUTES
        .iter()
        .flat_map(|(p, ms)| ms.iter().map(move |m| (p.to_string(), m.to_string())))
        .collect();
    let missed: Vec<_> = all.difference(&c.seen).collect();
    assert!(
        missed.is_empty(),
        "routes this test did not call: {missed:?}"
    );
    d.stop();
}

#[test]
fn the_check_itself_refuses_what_the_document_does_not_allow() {
    let v = Validator { doc: doc() };
    let schema = json!({"$ref": "#/components/schemas/ErrorObject"});
    let good = json!({"code": "unknown_user", "message": "no"});
    let cases = [
        json!({"code": "unknown_user", "message": "no", "extra": 1}),
        json!({"code": "no_such_code", "message": "no"}),
        json!({"code": "unknown_user"}),
        json!({"code": "unknown_user", "message": 5}),
        json!({"code": "unknown_user", "message": "no", "rows": [{"line": 0, "reason": "x"}]}),
    ];
    let mut errors = Vec::new();
    v.check(&schema, &good, "$", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    for bad in cases {
        let mut errors = Vec::new();
        v.check(&schema, &bad, "$", &mut errors);
        assert!(!errors.is_empty(), "{bad} passed");
    }
    let mut errors = Vec::new();
    let audit = json!({"$ref": "#/components/schemas/AuditEntry"});
    let old = json!({"id": 1, "at": 1800000000, "caller_uid": 0, "action": "create",
        "user_id": "u", "before": null, "after": null, "totals": {}});
    v.check(&audit, &old, "$", &mut errors);
    assert!(!errors.is_empty(), "Unix-second times are not the contract");
}
