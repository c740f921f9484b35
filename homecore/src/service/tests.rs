//! Tests for the service registry.

use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::schema::{Field, FieldType};

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn registry() -> (ServiceRegistry, EventBus) {
    let bus = EventBus::new();
    (ServiceRegistry::new(bus.clone()), bus)
}

fn brightness_schema() -> Schema {
    Schema::new(vec![Field::optional(
        "brightness",
        FieldType::integer_range(0, 255),
    )])
}

#[tokio::test]
async fn register_call_remove_and_their_events() {
    let (services, bus) = registry();
    let mut registered = bus.subscribe(EVENT_SERVICE_REGISTERED).unwrap();
    let mut removed = bus.subscribe(EVENT_SERVICE_REMOVED).unwrap();
    let mut called = bus.subscribe(EVENT_CALL_SERVICE).unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&calls);
    services
        .register(
            "light",
            "turn_on",
            Some(brightness_schema()),
            SupportsResponse::None,
            move |call| {
                let sink = Arc::clone(&sink);
                async move {
                    sink.lock().unwrap().push(call);
                    Ok(None)
                }
            },
        )
        .unwrap();
    let event = registered.recv().await.unwrap();
    assert_eq!(event.data["domain"], "light");
    assert_eq!(event.data["service"], "turn_on");
    assert!(services.has_service("light", "turn_on"));

    let ctx = Context::with_user("u");
    let response = services
        .call(
            ServiceRequest::new("light", "turn_on")
                .with_data(obj(
                    json!({"brightness": "128", "entity_id": "light.a, light.b"}),
                ))
                .with_target(ServiceTarget {
                    area_id: vec!["kitchen".into()],
                    ..ServiceTarget::default()
                })
                .with_context(ctx.clone()),
        )
        .await
        .unwrap();
    assert_eq!(response, None);
    let call = calls.lock().unwrap().pop().unwrap();
    assert_eq!(call.data, obj(json!({"brightness": 128})));
    assert_eq!(call.target.entity_id, vec!["light.a", "light.b"]);
    assert_eq!(call.target.area_id, vec!["kitchen"]);
    assert_eq!(call.context, ctx);
    let event = called.recv().await.unwrap();
    assert_eq!(event.context, ctx);
    assert_eq!(event.data["service_data"]["brightness"], 128);
    assert_eq!(
        event.data["service_data"]["entity_id"],
        json!(["light.a", "light.b"])
    );

    assert!(services.remove("light", "turn_on"));
    assert!(!services.remove("light", "turn_on"));
    assert_eq!(removed.recv().await.unwrap().data["service"], "turn_on");
    assert!(services.services().is_empty());
}

#[tokio::test]
async fn unknown_service_is_not_found() {
    let (services, _bus) = registry();
    let err = services
        .call(ServiceRequest::new("light", "explode"))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ServiceError::NotFound {
            domain: "light".into(),
            service: "explode".into()
        }
    );
}

#[tokio::test]
async fn schema_errors_carry_the_field_path() {
    let (services, _bus) = registry();
    services
        .register(
            "light",
            "turn_on",
            Some(brightness_schema()),
            SupportsResponse::None,
            |_| async { Ok(None) },
        )
        .unwrap();
    let err = services
        .call(ServiceRequest::new("light", "turn_on").with_data(obj(json!({"brightness": 300}))))
        .await
        .unwrap_err();
    let ServiceError::Validation(errors) = err else {
        panic!("expected a validation error, got {err:?}");
    };
    assert_eq!(errors.errors[0].path_strings(), vec!["brightness"]);
    let err = services
        .call(
            ServiceRequest::new("light", "turn_on")
                .with_data(obj(json!({"entity_id": "Not Valid"}))),
        )
        .await
        .unwrap_err();
    let ServiceError::Validation(errors) = err else {
        panic!("expected a validation error, got {err:?}");
    };
    assert_eq!(errors.errors[0].path_strings(), vec!["entity_id"]);
    let err = services
        .call(ServiceRequest::new("light", "turn_on").with_data(obj(json!({"colour": "red"}))))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("extra keys not allowed"), "{err}");
}

#[tokio::test]
async fn response_modes_are_enforced() {
    let (services, _bus) = registry();
    let reply = |_call: ServiceCall| async { Ok(Some(json!({"answer": 42}))) };
    services
        .register("d", "none", None, SupportsResponse::None, reply)
        .unwrap();
    services
        .register("d", "optional", None, SupportsResponse::Optional, reply)
        .unwrap();
    services
        .register("d", "only", None, SupportsResponse::Only, reply)
        .unwrap();

    assert!(matches!(
        services
            .call(ServiceRequest::new("d", "none").with_response())
            .await,
        Err(ServiceError::ResponseNotSupported { .. })
    ));
    assert_eq!(
        services
            .call(ServiceRequest::new("d", "none"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        services
            .call(ServiceRequest::new("d", "optional"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        services
            .call(ServiceRequest::new("d", "optional").with_response())
            .await
            .unwrap(),
        Some(obj(json!({"answer": 42})))
    );
    assert!(matches!(
        services.call(ServiceRequest::new("d", "only")).await,
        Err(ServiceError::ResponseRequired { .. })
    ));
    assert!(
        services
            .call(ServiceRequest::new("d", "only").with_response())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_non_object_response_is_refused() {
    let (services, _bus) = registry();
    services
        .register("d", "bad", None, SupportsResponse::Only, |_| async {
            Ok(Some(json!([1])))
        })
        .unwrap();
    assert!(matches!(
        services
            .call(ServiceRequest::new("d", "bad").with_response())
            .await,
        Err(ServiceError::InvalidResponse { .. })
    ));
}

#[tokio::test]
async fn handler_errors_and_panics_come_back_typed() {
    let (services, _bus) = registry();
    services
        .register("d", "fail", None, SupportsResponse::None, |_| async {
            Err(ServiceError::handler("device offline"))
        })
        .unwrap();
    services
        .register("d", "picky", None, SupportsResponse::None, |_| async {
            Err(ServiceError::validation(&["mode"], "not now"))
        })
        .unwrap();
    services
        .register(
            "d",
            "panic",
            None,
            SupportsResponse::None,
            |call: ServiceCall| async move {
                assert!(call.data.contains_key("never"), "handler bug");
                Ok(None)
            },
        )
        .unwrap();
    assert_eq!(
        services.call(ServiceRequest::new("d", "fail")).await,
        Err(ServiceError::Handler("device offline".into()))
    );
    let Err(ServiceError::Validation(errors)) =
        services.call(ServiceRequest::new("d", "picky")).await
    else {
        panic!("expected validation error");
    };
    assert_eq!(errors.errors[0].path_strings(), vec!["mode"]);
    assert!(matches!(
        services.call(ServiceRequest::new("d", "panic")).await,
        Err(ServiceError::Handler(message)) if message.contains("panicked")
    ));
    // The registry still works after a handler panicked.
    assert!(
        services
            .call(ServiceRequest::new("d", "fail"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn names_are_lowercased_and_validated() {
    let (services, _bus) = registry();
    services
        .register(
            "Light",
            "Turn_On",
            None,
            SupportsResponse::None,
            |_| async { Ok(None) },
        )
        .unwrap();
    assert!(services.has_service("light", "turn_on"));
    assert!(
        services
            .call(ServiceRequest::new("LIGHT", "TURN_ON"))
            .await
            .is_ok()
    );
    assert!(matches!(
        services.register("bad domain", "x", None, SupportsResponse::None, |_| async {
            Ok(None)
        }),
        Err(ServiceError::InvalidName(_))
    ));
    assert!(matches!(
        services.register("d", "x.y", None, SupportsResponse::None, |_| async {
            Ok(None)
        }),
        Err(ServiceError::InvalidName(_))
    ));
}

#[tokio::test]
async fn broken_schema_is_refused_at_registration_and_describe_reports() {
    let (services, _bus) = registry();
    let broken = Schema::new(vec![
        Field::required("a", FieldType::Any),
        Field::required("a", FieldType::Any),
    ]);
    assert!(matches!(
        services.register("d", "x", Some(broken), SupportsResponse::None, |_| async {
            Ok(None)
        }),
        Err(ServiceError::InvalidSchema(_))
    ));
    services
        .register(
            "d",
            "y",
            Some(brightness_schema()),
            SupportsResponse::Optional,
            |_| async { Ok(None) },
        )
        .unwrap();
    let description = services.describe("d", "y").unwrap();
    assert_eq!(description.supports_response, SupportsResponse::Optional);
    assert_eq!(description.schema, Some(brightness_schema()));
    let listed = services.services();
    assert_eq!(listed["d"].keys().collect::<Vec<_>>(), vec!["y"]);
}

#[tokio::test]
async fn a_schema_that_declares_entity_id_keeps_it_in_data() {
    let (services, _bus) = registry();
    let seen = Arc::new(Mutex::new(None));
    let sink = Arc::clone(&seen);
    let schema = Schema::new(vec![Field::required(
        "entity_id",
        FieldType::entity_ids(&[]),
    )]);
    services
        .register(
            "d",
            "x",
            Some(schema),
            SupportsResponse::None,
            move |call| {
                let sink = Arc::clone(&sink);
                async move {
                    *sink.lock().unwrap() = Some(call);
                    Ok(None)
                }
            },
        )
        .unwrap();
    services
        .call(ServiceRequest::new("d", "x").with_data(obj(json!({"entity_id": "light.a"}))))
        .await
        .unwrap();
    let call = seen.lock().unwrap().take().unwrap();
    assert_eq!(call.data["entity_id"], json!(["light.a"]));
    assert_eq!(call.target.entity_id, vec!["light.a"]);
}
