//! Home Assistant's REST API over the real `sandbox-host run`: a token from `sandbox-host
//! token create`, the demo integration added by its config flow over REST, its sandboxed
//! lights read and switched, events fired (the core's refused), entries listed, reloaded and
//! removed; no token, bad JSON and an oversized body refused.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use sandbox_tests::http::request;
use sandbox_tests::hub::{HANG_GUARD, RunningHub as Hub};
use serde_json::{Value, json};

/// A client of one hub with one token.
struct Client<'a> {
    address: &'a str,
    token: &'a str,
}

impl Client<'_> {
    async fn get(&self, path: &str) -> (u16, Value) {
        request(self.address, "GET", path, Some(self.token), None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let body = serde_json::to_vec(&body).unwrap();
        request(self.address, "POST", path, Some(self.token), Some(body)).await
    }

    async fn post_raw(&self, path: &str, body: &[u8]) -> (u16, Value) {
        request(
            self.address,
            "POST",
            path,
            Some(self.token),
            Some(body.to_vec()),
        )
        .await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        request(self.address, "DELETE", path, Some(self.token), None).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_drives_the_sandboxed_demo_as_home_assistants_does() {
    let hub = Hub::start();
    let address = hub.address();
    let token = hub.token("rest-test");
    let api = Client {
        address: &address,
        token: &token,
    };

    // No token, a bad token: Home Assistant's 401.
    let (status, body) = request(&address, "GET", "/api/", None, None).await;
    assert_eq!((status, body), (401, json!("401: Unauthorized")));
    let (status, _) = request(&address, "GET", "/api/states", Some("nope"), None).await;
    assert_eq!(status, 401);

    assert_eq!(
        api.get("/api/").await,
        (200, json!({"message": "API running."}))
    );
    let (status, config) = api.get("/api/config").await;
    assert_eq!(status, 200);
    assert_eq!(config["state"], "RUNNING", "{config}");
    assert_eq!(config["unit_system"]["temperature"], "°C", "{config}");
    assert!(config["version"].is_string(), "{config}");

    // The demo's config flow, entirely over REST: a menu, then `defaults`.
    let (status, menu) = api
        .post(
            "/api/config/config_entries/flow",
            json!({"handler": "demo", "show_advanced_options": false}),
        )
        .await;
    assert_eq!(status, 200, "{menu}");
    assert_eq!(menu["type"], "menu", "{menu}");
    assert_eq!(menu["handler"], "demo");
    assert_eq!(menu["data_schema"][0]["name"], "next_step_id", "{menu}");
    let flow_id = menu["flow_id"].as_str().unwrap().to_owned();
    let flow_path = format!("/api/config/config_entries/flow/{flow_id}");
    let (status, current) = api.get(&flow_path).await;
    assert_eq!(
        (status, &current["type"]),
        (200, &json!("menu")),
        "{current}"
    );
    assert_eq!(
        current["menu_options"], menu["menu_options"],
        "shown again whole: {current}"
    );
    let (status, refused) = api.post(&flow_path, json!({"next_step_id": "nope"})).await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["errors"]["next_step_id"].is_string(), "{refused}");
    let (status, created) = api
        .post(&flow_path, json!({"next_step_id": "defaults"}))
        .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["type"], "create_entry", "{created}");
    let entry_id = created["result"]["entry_id"].as_str().unwrap().to_owned();
    assert_eq!(created["result"]["domain"], "demo", "{created}");
    assert!(created.get("data").is_none(), "{created}");
    let (status, gone) = api.get(&flow_path).await;
    assert_eq!(status, 404, "a finished flow is gone: {gone}");
    assert_eq!(gone, json!({"message": "Invalid flow specified"}));

    // The sandboxed demo's lights appear in main's states.
    let started = Instant::now();
    let light = loop {
        let (status, states) = api.get("/api/states").await;
        assert_eq!(status, 200);
        let lights: Vec<String> = states
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|state| state["entity_id"].as_str())
            .filter(|id| id.starts_with("light."))
            .map(str::to_owned)
            .collect();
        if let Some(light) = lights.first() {
            break light.clone();
        }
        assert!(started.elapsed() < HANG_GUARD, "no light: {states}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let state_path = format!("/api/states/{light}");
    let (status, before) = api.get(&state_path).await;
    assert_eq!(status, 200, "{before}");
    assert_eq!(before["entity_id"], light.as_str());
    for key in [
        "state",
        "attributes",
        "last_changed",
        "last_updated",
        "context",
    ] {
        assert!(before.get(key).is_some(), "{key} missing: {before}");
    }

    // Off, then on: the call answers the state it changed.
    let (status, changed) = api
        .post("/api/services/light/turn_off", json!({"entity_id": light}))
        .await;
    assert_eq!(status, 200, "{changed}");
    let (status, changed) = api
        .post("/api/services/light/turn_on", json!({"entity_id": light}))
        .await;
    assert_eq!(status, 200, "{changed}");
    let changed = changed.as_array().unwrap();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["entity_id"], light.as_str());
    assert_eq!(changed[0]["state"], "on", "{changed:?}");
    let (_, after) = api.get(&state_path).await;
    assert_eq!(after["state"], "on", "{after}");
    assert_eq!(
        after["context"]["id"], changed[0]["context"]["id"],
        "the change is the call's"
    );

    // Unknown things and bad input.
    assert_eq!(
        api.get("/api/states/light.nope").await,
        (404, json!({"message": "Entity not found."}))
    );
    let (status, _) = api.post("/api/services/light/nope", json!({})).await;
    assert_eq!(status, 400);
    let (status, invalid) = api
        .post("/api/services/light/turn_on", json!({"entity_id": 5}))
        .await;
    assert_eq!(status, 400, "{invalid}");
    let (status, malformed) = api
        .post_raw("/api/services/light/turn_on", b"{not json")
        .await;
    assert_eq!(
        (status, malformed),
        (400, json!({"message": "Data should be valid JSON."}))
    );
    let (status, malformed) = api
        .post_raw("/api/config/config_entries/flow", b"{\"handler\":")
        .await;
    assert_eq!(
        (status, malformed),
        (400, json!({"message": "Invalid JSON."}))
    );
    let (status, unknown) = api
        .post(
            "/api/config/config_entries/flow",
            json!({"handler": "nope"}),
        )
        .await;
    assert_eq!(
        (status, unknown),
        (404, json!({"message": "Invalid handler specified"}))
    );
    let oversized = vec![b' '; sandbox_host_cli::api::rest::MAX_BODY_BYTES + 1];
    let (status, _) = api.post_raw("/api/events/big", &oversized).await;
    assert_eq!(status, 413, "a body over the limit is refused");

    // Services list the light domain with its services.
    let (status, services) = api.get("/api/services").await;
    assert_eq!(status, 200);
    let light_services = services
        .as_array()
        .unwrap()
        .iter()
        .find(|domain| domain["domain"] == "light")
        .unwrap_or_else(|| panic!("no light domain: {services}"));
    assert!(
        light_services["services"]["turn_on"]["fields"].is_object(),
        "{light_services}"
    );

    // Events: fired, listed; the core's own refused.
    assert_eq!(
        api.post("/api/events/my_event", json!({"answer": 42}))
            .await,
        (200, json!({"message": "Event my_event fired."}))
    );
    let (status, _) = api.post_raw("/api/events/my_event", b"").await;
    assert_eq!(status, 200, "no data is fine");
    let (status, not_object) = api.post("/api/events/my_event", json!([1])).await;
    assert_eq!(status, 400, "{not_object}");
    for reserved in [
        "state_changed",
        "homeassistant_stop",
        "automation_triggered",
    ] {
        let (status, body) = api
            .post(&format!("/api/events/{reserved}"), json!({}))
            .await;
        assert_eq!(status, 403, "{reserved}: {body}");
    }
    let (status, events) = api.get("/api/events").await;
    assert_eq!(status, 200);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .all(|event| event["event"].is_string() && event["listener_count"].is_u64()),
        "{events}"
    );

    // Entries: listed, reloaded, removed.
    let (status, entries) = api.get("/api/config/config_entries/entry").await;
    assert_eq!(status, 200);
    let listed = entries.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{entries}");
    assert_eq!(listed[0]["entry_id"], entry_id.as_str());
    assert_eq!(listed[0]["state"], "loaded", "{entries}");
    let entry_path = format!("/api/config/config_entries/entry/{entry_id}");
    assert_eq!(
        api.post(&format!("{entry_path}/reload"), json!({})).await,
        (200, json!({"require_restart": false}))
    );
    let (_, entries) = api
        .get("/api/config/config_entries/entry?domain=demo")
        .await;
    assert_eq!(entries[0]["state"], "loaded", "{entries}");
    assert_eq!(
        api.delete(&entry_path).await,
        (200, json!({"require_restart": false}))
    );
    assert_eq!(
        api.delete(&entry_path).await,
        (404, json!({"message": "Invalid entry specified"}))
    );
    let (_, entries) = api.get("/api/config/config_entries/entry").await;
    assert_eq!(entries, json!([]));
    let (_, gone) = api.get(&state_path).await;
    assert_ne!(
        gone["state"], "on",
        "the removed entry's light is gone: {gone}"
    );

    // The demo's form as the frontend reads it; refused input; a flow left halfway aborted.
    let (_, menu) = api
        .post(
            "/api/config/config_entries/flow",
            json!({"handler": "demo"}),
        )
        .await;
    let flow_path = format!(
        "/api/config/config_entries/flow/{}",
        menu["flow_id"].as_str().unwrap()
    );
    let (status, form) = api
        .post(&flow_path, json!({"next_step_id": "configure"}))
        .await;
    assert_eq!(status, 200, "{form}");
    assert_eq!(form["type"], "form", "{form}");
    assert_eq!(form["step_id"], "configure", "{form}");
    let schema = &form["data_schema"];
    assert_eq!(
        schema[0],
        json!({"selector": {"text": {}}, "name": "name", "required": true, "default": "Demo"}),
        "{form}"
    );
    assert_eq!(schema[1]["name"], "mode", "{form}");
    assert!(
        schema[1]["selector"]["select"]["options"].is_array(),
        "{form}"
    );
    assert_eq!(schema[2]["type"], "expandable", "{form}");
    assert_eq!(schema[2]["expanded"], false, "{form}");
    assert_eq!(schema[2]["schema"][0]["name"], "update_interval", "{form}");
    assert_eq!(
        api.get(&flow_path).await,
        (200, form.clone()),
        "the same form"
    );
    let (status, refused) = api
        .post(&flow_path, json!({"name": "x", "mode": "turbo"}))
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["errors"]["mode"].is_string(), "{refused}");
    assert_eq!(
        api.delete(&flow_path).await,
        (200, json!({"message": "Flow aborted"}))
    );
    assert_eq!(api.delete(&flow_path).await.0, 404);
}
