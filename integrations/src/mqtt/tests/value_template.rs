//! Tests of the value templates: real devices' templates render as Home Assistant renders them,
//! unsupported constructs are refused at parse time, hostile templates stay bounded.

use serde_json::json;

use super::*;

/// Renders `template` against an incoming `payload`.
fn state(template: &str, payload: &str) -> Result<String, RenderError> {
    ValueTemplate::parse(template)
        .unwrap_or_else(|error| panic!("{template:?} does not parse: {error}"))
        .render(&Variables::from_payload(payload))
}

fn ok(template: &str, payload: &str) -> String {
    state(template, payload).unwrap_or_else(|error| panic!("{template:?} on {payload:?}: {error}"))
}

/// Renders a command `template` with the `value` being sent.
fn command(template: &str, value: Value) -> Result<String, RenderError> {
    ValueTemplate::parse(template)
        .unwrap_or_else(|error| panic!("{template:?} does not parse: {error}"))
        .render(&Variables::from_value(value))
}

fn unsupported_construct(template: &str) -> String {
    match ValueTemplate::parse(template) {
        Err(TemplateError::Unsupported(what)) => what,
        other => panic!("{template:?}: {other:?}"),
    }
}

#[test]
fn real_world_value_templates_render() {
    let sensor = r#"{"temperature": 21.456, "humidity": 48, "battery": 97, "state": "on",
                     "power": "0.0123", "linkquality": 120}"#;
    assert_eq!(ok("{{ value_json.temperature }}", sensor), "21.456");
    assert_eq!(
        ok("{{ value_json['temperature'] | round(1) }}", sensor),
        "21.5"
    );
    assert_eq!(ok("{{ value_json[\"humidity\"] }}", sensor), "48");
    assert_eq!(ok("{{ value_json.state }}", sensor), "on");
    assert_eq!(ok("{{ value | float / 10 }}", "215"), "21.5");
    assert_eq!(
        ok("{{ (value_json.power | float * 1000) | round(0) }}", sensor),
        "12"
    );
    assert_eq!(
        ok("{{ 'ON' if value_json.state == 'on' else 'OFF' }}", sensor),
        "ON"
    );
    assert_eq!(
        ok(
            "{{ 'ON' if value_json.state == 'on' else 'OFF' }}",
            r#"{"state": "off"}"#
        ),
        "OFF"
    );
    let tasmota = r#"{"Time":"2024-01-01T00:00:00","ENERGY":{"Total":123.456,"Power":[12,0]}}"#;
    assert_eq!(ok("{{ value_json.ENERGY.Total }}", tasmota), "123.456");
    assert_eq!(ok("{{ value_json.ENERGY.Power[0] }}", tasmota), "12");
    assert_eq!(ok("{{ value_json.ENERGY.Power.1 }}", tasmota), "0");
    assert_eq!(ok("{{ value_json.ENERGY.Power[-1] }}", tasmota), "0");
    assert_eq!(ok("{{ value_json.battery | default(0) }}", sensor), "97");
    assert_eq!(ok("{{ value_json.battery | default(0) }}", "{}"), "0");
    assert_eq!(ok("{{ value_json.x is defined }}", sensor), "False");
    assert_eq!(ok("{{ value_json.battery is defined }}", sensor), "True");
    assert_eq!(ok("{{ value_json.x is not defined }}", sensor), "True");
    assert_eq!(ok("{{ value_json.linkquality | int }}", sensor), "120");
    // Whitespace control and literal text around interpolations.
    assert_eq!(ok("  {{- value_json.humidity -}}  %", sensor), "48%");
    assert_eq!(ok("T: {{ value_json.humidity }} %\n", sensor), "T: 48 %");
    assert_eq!(ok("{# a comment #}{{ value }}", "ON"), "ON");
}

#[test]
fn real_world_command_templates_render() {
    assert_eq!(
        command("{{ value | int }}", json!(127.6)).as_deref(),
        Ok("127")
    );
    assert_eq!(
        command("{{ value | int }}", json!("42")).as_deref(),
        Ok("42")
    );
    assert_eq!(
        command(r#"{"state": "{{ value }}"}"#, json!("ON")).as_deref(),
        Ok(r#"{"state": "ON"}"#)
    );
    assert_eq!(
        command(r#"{"brightness": {{ value }}}"#, json!(128)).as_deref(),
        Ok(r#"{"brightness": 128}"#)
    );
    // 100 * 2.55 is 254.99999999999997 in binary floating point, as in Python.
    assert_eq!(
        command("{{ (value * 2.55) | round(0) }}", json!(100)).as_deref(),
        Ok("255")
    );
    assert_eq!(
        command("{{ value * 2.55 }}", json!(100)).as_deref(),
        Ok("254.99999999999997")
    );
    assert_eq!(
        command("{{ value | to_json }}", json!({"a": [1, 2.5, "x"]})).as_deref(),
        Ok(r#"{"a":[1,2.5,"x"]}"#)
    );
    // A command template has no value_json.
    assert_eq!(
        command("{{ value_json is defined }}", json!("{}")).as_deref(),
        Ok("False")
    );
}

#[test]
fn values_render_as_python_prints_them() {
    assert_eq!(ok("{{ 21 }}", ""), "21");
    assert_eq!(ok("{{ 21.0 }}", ""), "21.0");
    assert_eq!(ok("{{ 0.1 + 0.2 }}", ""), "0.30000000000000004");
    assert_eq!(ok("{{ 21.5 }}", ""), "21.5");
    assert_eq!(ok("{{ 1e16 }}", ""), "1e+16");
    assert_eq!(ok("{{ 1e15 }}", ""), "1000000000000000.0");
    assert_eq!(ok("{{ 0.0001 }}", ""), "0.0001");
    assert_eq!(ok("{{ 0.00001 }}", ""), "1e-05");
    assert_eq!(ok("{{ 1.5e-7 }}", ""), "1.5e-07");
    assert_eq!(ok("{{ -2.5e300 }}", ""), "-2.5e+300");
    assert_eq!(ok("{{ 1_000 }}", ""), "1000");
    assert_eq!(
        ok("{{ true }} {{ False }} {{ none }}", ""),
        "True False None"
    );
    assert_eq!(ok("{{ 'inf' | float }} {{ 'nan' | float }}", ""), "inf nan");
    assert_eq!(ok("{{ -0.0 }}", ""), "-0.0");
    assert_eq!(ok("{{ value_json.t }}", r#"{"t": 21.0}"#), "21.0");
    assert_eq!(ok("{{ value_json.t }}", r#"{"t": 1e2}"#), "100.0");
    // Lists and dicts render as compact JSON rather than Python's repr.
    assert_eq!(
        ok("{{ value_json }}", r#"{"a": [1, "x", null, true]}"#),
        r#"{"a":[1,"x",null,true]}"#
    );
    assert_eq!(ok("{{ [1, 'a', 2.0] }}", ""), r#"[1,"a",2.0]"#);
    // The payload itself, and a template without any tag, as they are.
    assert_eq!(ok("{{ value }}", "  ON  "), "ON");
    assert_eq!(ok("  static  ", "x"), "  static  ");
}

#[test]
fn arithmetic_follows_python() {
    assert_eq!(ok("{{ 1 + 2 * 3 }}", ""), "7");
    assert_eq!(ok("{{ (1 + 2) * 3 }}", ""), "9");
    assert_eq!(ok("{{ 7 / 2 }}", ""), "3.5");
    assert_eq!(ok("{{ 6 / 2 }}", ""), "3.0");
    assert_eq!(
        ok("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 // -2 }}", ""),
        "3 -4 -4"
    );
    assert_eq!(ok("{{ 7 % 3 }} {{ -7 % 3 }} {{ 7 % -3 }}", ""), "1 2 -2");
    assert_eq!(ok("{{ 7.5 // 2 }} {{ -7.5 % 2 }}", ""), "3.0 0.5");
    assert_eq!(ok("{{ -value_json.t }}", r#"{"t": 3}"#), "-3");
    assert_eq!(ok("{{ - - 3 }}", ""), "3");
    assert_eq!(ok("{{ -3 | abs }}", ""), "3");
    assert_eq!(ok("{{ 2 - 3 - 4 }}", ""), "-5");
    assert_eq!(ok("{{ true + 1 }}", ""), "2");
    assert_eq!(
        ok("{{ 'a' + 'b' }} {{ 'ab' * 3 }} {{ 2 * 'x' }}", ""),
        "ab ababab xx"
    );
    assert_eq!(ok("{{ value ~ ' W' }}", "12"), "12 W");
    // `~` binds tighter than `+` and looser than `*`, as in Jinja2.
    assert_eq!(ok("{{ 1 ~ 2 * 3 }}", ""), "16");
    assert!(matches!(
        state("{{ 1 ~ 2 + 3 }}", ""),
        Err(RenderError::Type(_))
    ));
    assert_eq!(ok("{{ value_json.x ~ '!' }}", "{}"), "!");
    assert_eq!(
        state("{{ 9223372036854775807 + 1 }}", ""),
        Err(RenderError::Overflow)
    );
    assert!(matches!(
        state("{{ 'a' + 1 }}", ""),
        Err(RenderError::Type(_))
    ));
    assert!(matches!(state("{{ -'a' }}", ""), Err(RenderError::Type(_))));
}

#[test]
fn division_by_zero_is_a_render_error() {
    for template in [
        "{{ 1 / 0 }}",
        "{{ 1.0 / 0.0 }}",
        "{{ 1 // 0 }}",
        "{{ 1 % 0 }}",
        "{{ 1.5 % 0 }}",
        "{{ value | float / 0 }}",
    ] {
        assert_eq!(
            state(template, "5"),
            Err(RenderError::DivisionByZero),
            "{template}"
        );
    }
}

#[test]
fn comparisons_and_logic_follow_python() {
    assert_eq!(ok("{{ 1 < 2 < 3 }} {{ 1 < 3 < 2 }}", ""), "True False");
    assert_eq!(
        ok("{{ 1 == 1.0 }} {{ 1 == true }} {{ 'a' == 1 }}", ""),
        "True True False"
    );
    assert_eq!(
        ok("{{ 2 >= 2 }} {{ 'b' > 'a' }} {{ 3 != 3 }}", ""),
        "True True False"
    );
}

#[test]
fn logic_and_membership_follow_python() {
    assert_eq!(ok("{{ not 1 == 2 }}", ""), "True");
    assert_eq!(
        ok("{{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' and 'z' }}", ""),
        "x y"
    );
    assert_eq!(ok("{{ value_json.a or 'none' }}", "{}"), "none");
    assert_eq!(
        ok("{{ 'on' in value }} {{ 'x' not in value }}", "turn on"),
        "True True"
    );
    assert_eq!(
        ok(
            "{{ 2 in value_json.l }} {{ 'k' in value_json }}",
            r#"{"l": [1, 2.0], "k": 0}"#
        ),
        "True True"
    );
    assert_eq!(
        ok("{{ value_json.l == [1, 2] }}", r#"{"l": [1, 2.0]}"#),
        "True"
    );
    assert_eq!(
        ok(
            "{{ value_json.a == value_json.b }}",
            r#"{"a": {"x": [1]}, "b": {"x": [1.0]}}"#
        ),
        "True"
    );
    assert_eq!(ok("{{ 'yes' if value_json.n > 5 }}", r#"{"n": 3}"#), "");
    assert_eq!(ok("{{ 'a' if false else 'b' if true else 'c' }}", ""), "b");
    assert!(matches!(
        state("{{ 1 in 2 }}", ""),
        Err(RenderError::Type(_))
    ));
    assert!(matches!(
        state("{{ 1 < 'a' }}", ""),
        Err(RenderError::Type(_))
    ));
}

#[test]
fn tests_tell_types_apart() {
    let payload = r#"{"i": 1, "f": 1.5, "s": "x", "b": true, "n": null, "o": {}, "l": []}"#;
    let cases = [
        ("value_json.i is number", "True"),
        ("value_json.i is integer", "True"),
        ("value_json.f is float", "True"),
        ("value_json.f is integer", "False"),
        ("value_json.b is boolean", "True"),
        ("value_json.b is number", "True"),
        ("value_json.s is string", "True"),
        ("value_json.n is none", "True"),
        ("value_json.n is not none", "False"),
        ("value_json.o is mapping", "True"),
        ("value_json.l is mapping", "False"),
        ("value_json.b is true", "True"),
        ("value_json.b is false", "False"),
        ("value_json.x is undefined", "True"),
        ("value_json.i is number and value_json.i > 0", "True"),
    ];
    for (expression, expected) in cases {
        assert_eq!(
            ok(&format!("{{{{ {expression} }}}}"), payload),
            expected,
            "{expression}"
        );
    }
}

#[test]
fn undefined_renders_empty_and_fails_where_a_value_is_needed() {
    assert_eq!(ok("{{ value_json.missing }}", "{}"), "");
    assert_eq!(ok("[{{ value_json.a.b }}]", r#"{"a": null}"#), "[]");
    assert_eq!(ok("{{ value_json[5] }}", "[1]"), "");
    assert_eq!(ok("{{ value_json.missing | default('n/a') }}", "{}"), "n/a");
    assert_eq!(ok("{{ value_json.missing | d('n/a') }}", "{}"), "n/a");
    assert_eq!(
        ok("{{ value_json.e | default('x', true) }}", r#"{"e": ""}"#),
        "x"
    );
    assert_eq!(ok("{{ value_json.e | default('x') }}", r#"{"e": ""}"#), "");
    assert_eq!(ok("{{ value_json.missing | length }}", "{}"), "0");
    assert_eq!(ok("{{ value_json.missing | string }}", "{}"), "");
    for template in [
        "{{ value_json.missing + 1 }}",
        "{{ value_json.missing.deeper }}",
        "{{ value_json.missing < 1 }}",
        "{{ -value_json.missing }}",
        "{{ value_json.missing | float }}",
        // As in Home Assistant: float() of Undefined raises its own error, not ValueError.
        "{{ value_json.missing | float(0) }}",
        "{{ value_json.missing | int(0) }}",
        "{{ value_json.missing | round(1, default=0) }}",
    ] {
        match state(template, "{}") {
            Err(RenderError::Undefined(what)) => {
                assert!(what.contains("missing"), "{template}: {what}")
            }
            other => panic!("{template}: {other:?}"),
        }
    }
}

#[test]
fn value_json_of_a_payload_that_is_not_json() {
    // value_json is undefined: rendering it alone gives an empty string, testing it works...
    assert_eq!(ok("{{ value_json }}", "ON"), "");
    assert_eq!(ok("{{ value_json is defined }}", "ON"), "False");
    assert_eq!(
        ok(
            "{{ value if value_json is not defined else value_json.state }}",
            "ON"
        ),
        "ON"
    );
    // ...and reading into it is an error, as in Home Assistant (Jinja2 raises on an attribute
    // of Undefined).
    assert_eq!(
        state("{{ value_json.temperature }}", "ON"),
        Err(RenderError::Undefined(
            "'value_json' is undefined".to_owned()
        ))
    );
    assert!(matches!(
        state("{{ value_json['temperature'] }}", "ON"),
        Err(RenderError::Undefined(_))
    ));
    // A payload that is JSON but not an object: value_json is that value.
    assert_eq!(ok("{{ value_json + 1 }}", "21"), "22");
    assert_eq!(ok("{{ value_json }}", "\"text\""), "text");
    assert_eq!(ok("{{ value_json.x }}", "21"), "");
}

#[test]
fn conversions_follow_home_assistant() {
    assert_eq!(ok("{{ value | float }}", " 21.5 "), "21.5");
    assert_eq!(ok("{{ value | float }}", "1e3"), "1000.0");
    assert_eq!(ok("{{ value | float }}", "1_000.5"), "1000.5");
    assert_eq!(ok("{{ value | float(-1) }}", "abc"), "-1");
    assert_eq!(ok("{{ float(value, 0) }}", "abc"), "0");
    assert_eq!(ok("{{ float(value) }}", "3"), "3.0");
    assert_eq!(ok("{{ value_json.n | float(0) }}", r#"{"n": null}"#), "0");
    assert_eq!(
        state("{{ value | float }}", "abc"),
        Err(RenderError::NoDefault {
            filter: "float",
            input: "'abc'".to_owned()
        })
    );
    assert!(matches!(
        state("{{ value_json.n | float }}", r#"{"n": null}"#),
        Err(RenderError::NoDefault {
            filter: "float",
            ..
        })
    ));
    // int: a string goes through float when it is not an integer, and truncates.
    assert_eq!(ok("{{ value | int }}", "21.7"), "21");
    assert_eq!(ok("{{ value | int }}", "-21.7"), "-21");
    assert_eq!(ok("{{ value | int }}", " 42 "), "42");
    assert_eq!(ok("{{ value | int }}", "1e3"), "1000");
    assert_eq!(ok("{{ value | int(base=16) }}", "0x1F"), "31");
    assert_eq!(ok("{{ value | int(0, 16) }}", "ff"), "255");
    assert_eq!(ok("{{ value | int(-1) }}", "abc"), "-1");
    assert_eq!(ok("{{ int(value, 7) }}", "nan"), "7");
    assert_eq!(ok("{{ true | int }} {{ 3.99 | int }}", ""), "1 3");
    assert!(matches!(
        state("{{ value | int }}", "abc"),
        Err(RenderError::NoDefault { filter: "int", .. })
    ));
    assert_eq!(
        state("{{ value | int }}", "inf"),
        Err(RenderError::Overflow)
    );
    assert_eq!(
        state("{{ value | int }}", "99999999999999999999"),
        Err(RenderError::Overflow)
    );
    assert!(matches!(
        state("{{ value | int(base=1) }}", "1"),
        Err(RenderError::InvalidArgument(_))
    ));
    // bool: Home Assistant's boolean words.
    assert_eq!(ok("{{ value | bool }}", "ON"), "True");
    assert_eq!(ok("{{ value | bool }}", " disable "), "False");
    assert_eq!(ok("{{ 2 | bool }} {{ 0.0 | bool }}", ""), "True False");
    assert_eq!(ok("{{ value | bool(false) }}", "maybe"), "False");
    assert_eq!(ok("{{ bool(value, 'unknown') }}", "maybe"), "unknown");
    assert!(matches!(
        state("{{ value | bool }}", "maybe"),
        Err(RenderError::NoDefault { filter: "bool", .. })
    ));
    assert_eq!(ok("{{ value | string | length }}", "héllo"), "5");
    assert_eq!(ok("{{ 21.0 | string }}", ""), "21.0");
}

#[test]
fn round_follows_python_and_home_assistant() {
    assert_eq!(
        ok("{{ 2.5 | round }} {{ 3.5 | round }} {{ -2.5 | round }}", ""),
        "2 4 -2"
    );
    assert_eq!(
        ok("{{ 0.125 | round(2) }} {{ 2.675 | round(2) }}", ""),
        "0.12 2.67"
    );
    assert_eq!(ok("{{ value | round(1) }}", "21.456"), "21.5");
    assert_eq!(ok("{{ 21 | round(1) }}", ""), "21.0");
    assert_eq!(ok("{{ 1234.5 | round(-2) }}", ""), "1200.0");
    assert_eq!(
        ok("{{ 1250 | round(-2) }} {{ 1350 | round(-2) }}", ""),
        "1200.0 1400.0"
    );
    assert_eq!(ok("{{ 1250.1 | round(-2) }}", ""), "1300.0");
    assert_eq!(
        ok("{{ 49 | round(-2) }} {{ -51 | round(-2) }}", ""),
        "0.0 -100.0"
    );
    assert_eq!(
        ok(
            "{{ 1.21 | round(1, 'ceil') }} {{ 1.29 | round(1, 'floor') }}",
            ""
        ),
        "1.3 1.2"
    );
    // `half` rounds to a multiple of 0.5, then to an integer when the precision is 0.
    assert_eq!(
        ok(
            "{{ 1.3 | round(1, method='half') }} {{ 7.7 | round(1, 'half') }}",
            ""
        ),
        "1.5 7.5"
    );
    assert_eq!(
        ok(
            "{{ 1.3 | round(method='half') }} {{ 1.8 | round(0, 'half') }}",
            ""
        ),
        "1 2"
    );
    assert_eq!(ok("{{ value | round(1, default='n/a') }}", "abc"), "n/a");
    assert!(matches!(
        state("{{ value | round }}", "abc"),
        Err(RenderError::NoDefault {
            filter: "round",
            ..
        })
    ));
    assert_eq!(
        state("{{ 'inf' | float | round }}", ""),
        Err(RenderError::Overflow)
    );
    assert_eq!(ok("{{ 'inf' | float | round(2) }}", ""), "inf");
}

#[test]
fn string_and_json_filters() {
    assert_eq!(ok("{{ value | lower }} {{ value | upper }}", "On"), "on ON");
    assert_eq!(ok("[{{ value | trim }}]", "  x  "), "[x]");
    assert_eq!(ok("{{ value | trim('-') }}", "--x--"), "x");
    assert_eq!(
        ok("{{ value | replace('_', ' ') }}", "living_room_lamp"),
        "living room lamp"
    );
    assert_eq!(ok("{{ value | replace('a', 'b', 1) }}", "aaa"), "baa");
    assert_eq!(ok("{{ value | replace('', '-') }}", "abc"), "-a-b-c-");
    assert_eq!(ok("{{ 21 | lower }}", ""), "21");
    assert_eq!(
        ok(
            "{{ value_json | tojson }}",
            r#"{"b": 1, "a": "<é>", "c": [1.0, null]}"#
        ),
        r#"{"a": "\u003c\u00e9\u003e", "b": 1, "c": [1.0, null]}"#
    );
    assert_eq!(
        ok("{{ value_json | to_json }}", r#"{"b": 1, "a": "é\n"}"#),
        r#"{"b":1,"a":"é\n"}"#
    );
    assert_eq!(
        ok(
            "{{ value_json | to_json(sort_keys=true) }}",
            r#"{"b": 1, "a": 2}"#
        ),
        r#"{"a":2,"b":1}"#
    );
    assert_eq!(
        ok(
            "{{ value_json | to_json(ensure_ascii=true) }}",
            r#"{"a": "é"}"#
        ),
        r#"{"a": "\u00e9"}"#
    );
    assert_eq!(
        ok(
            "{{ value_json | to_json(pretty_print=true) }}",
            r#"{"a": [1]}"#
        ),
        "{\n  \"a\": [\n    1\n  ]\n}"
    );
    assert_eq!(
        ok("{{ 'x' | to_json }} {{ none | tojson }}", ""),
        r#""x" null"#
    );
    assert!(matches!(
        state("{{ value_json.m | to_json }}", "{}"),
        Err(RenderError::Type(_))
    ));
    assert_eq!(ok("{{ (value | from_json).a }}", r#"{"a": 5}"#), "5");
    assert_eq!(
        ok(
            "{{ (value_json.inner | from_json).x.y }}",
            r#"{"inner": "{\"x\": {\"y\": 1}}"}"#
        ),
        "1"
    );
    assert_eq!(ok("{{ value | from_json('bad') }}", "not json"), "bad");
    assert!(matches!(
        state("{{ value | from_json }}", "not json"),
        Err(RenderError::NoDefault {
            filter: "from_json",
            ..
        })
    ));
}

#[test]
fn list_filters_and_functions() {
    let payload = r#"{"l": [3, 1.5, 7], "s": ["b", "A", "c"], "o": [{"t": 5}, {"t": 2}], "e": []}"#;
    assert_eq!(
        ok("{{ value_json.l | max }} {{ value_json.l | min }}", payload),
        "7 1.5"
    );
    assert_eq!(
        ok("{{ value_json.s | min }} {{ value_json.s | max }}", payload),
        "A c"
    );
    assert_eq!(
        ok("{{ value_json.s | min(case_sensitive=true) }}", payload),
        "A"
    );
    assert_eq!(
        ok("{{ value_json.o | max(attribute='t') }}", payload),
        r#"{"t":5}"#
    );
    assert_eq!(ok("{{ value_json.e | max }}", payload), "");
    assert_eq!(
        ok(
            "{{ value_json.l | length }} {{ value_json.l | count }}",
            payload
        ),
        "3 3"
    );
    assert_eq!(ok("{{ value_json | length }}", payload), "4");
    assert_eq!(ok("{{ max(1, 5, 3) }} {{ min([4, 2]) }}", ""), "5 2");
    assert_eq!(ok("{{ [value | float, 10] | min }}", "12.5"), "10");
    assert!(matches!(
        state("{{ [1, 'a'] | max }}", ""),
        Err(RenderError::Type(_))
    ));
    assert!(matches!(
        state("{{ 5 | max }}", ""),
        Err(RenderError::Type(_))
    ));
    assert_eq!(ok("{{ iif(value == 'ON', 'on', 'off') }}", "ON"), "on");
    assert_eq!(
        ok(
            "{{ value_json.n | iif('y', 'n', 'none') }}",
            r#"{"n": null}"#
        ),
        "none"
    );
    assert_eq!(ok("{{ iif(0) }}", ""), "False");
}

#[test]
fn string_literals_and_subscripts() {
    assert_eq!(
        ok(r#"{{ 'it\'s' ~ "\t\u00e9" ~ 'a' 'b' }}"#, ""),
        "it's\t\u{e9}ab"
    );
    assert_eq!(ok("{{ value[0] }}{{ value[-1] }}", "héllo"), "ho");
    assert_eq!(ok("{{ value[10] }}", "abc"), "");
    assert_eq!(ok("{{ value_json['a b'] }}", r#"{"a b": 1}"#), "1");
    assert_eq!(ok("{{ value_json.items }}", r#"{"items": 2}"#), "2");
    assert_eq!(ok("{{ '}}' }}", ""), "}}");
    assert_eq!(
        ok(
            "{{ value_json.d[value_json.k] }}",
            r#"{"d": {"x": 9}, "k": "x"}"#
        ),
        "9"
    );
}

#[test]
fn unsupported_constructs_are_named_at_parse_time() {
    let cases = [
        ("{% if value %}on{% endif %}", "the statement `{% if %}`"),
        ("{%- set x = 1 %}", "the statement `{% set %}`"),
        ("{{ states('sensor.x') }}", "the function `states()`"),
        ("{{ now() }}", "the function `now()`"),
        (
            "{{ value | regex_replace('a', 'b') }}",
            "the filter `regex_replace`",
        ),
        (
            "{{ value | unknown_filter }}",
            "the filter `unknown_filter`",
        ),
        ("{{ states.sensor.x.state }}", "the variable `states`"),
        ("{{ this.state }}", "the variable `this`"),
        ("{{ value.split(',')[0] }}", "the method call `.split()`"),
        ("{{ value[1:3] }}", "slices"),
        ("{{ {'a': 1} }}", "dict literals"),
        ("{{ 2 ** 3 }}", "the operator `**`"),
        ("{{ value is divisibleby(3) }}", "the test `divisibleby`"),
        (
            "{{ value is defined(1) }}",
            "arguments to the test `defined`",
        ),
        ("{{ (1, 2) }}", "tuples"),
    ];
    for (template, expected) in cases {
        assert_eq!(unsupported_construct(template), expected, "{template}");
    }
}

#[test]
fn syntax_errors_say_where() {
    for (template, offset) in [
        ("{{ value", 8),
        ("{{ value + }}", 11),
        ("{{ }}", 3),
        ("{{ 'open }}", 3),
        ("{{ value value }}", 9),
        ("{{ value | }}", 11),
        ("{{ value ! 1 }}", 9),
        ("{# never closed", 0),
        ("{{ 99999999999999999999 }}", 3),
        ("{{ value | replace('a') }}", 11),
        ("{{ value | float(1, 2) }}", 11),
        ("{{ value | float(nope=1) }}", 11),
        ("{{ float(value, 1, 2) }}", 3),
    ] {
        match ValueTemplate::parse(template) {
            Err(TemplateError::Syntax { offset: at, .. }) => {
                assert_eq!(at, offset, "{template}")
            }
            other => panic!("{template}: {other:?}"),
        }
    }
}

#[test]
fn hostile_templates_are_bounded_at_parse_time() {
    let too_long = "x".repeat(MAX_TEMPLATE_BYTES + 1);
    assert_eq!(
        ValueTemplate::parse(&too_long).map(|_| ()),
        Err(TemplateError::TooLong {
            len: MAX_TEMPLATE_BYTES + 1,
            max: MAX_TEMPLATE_BYTES
        })
    );
    let ten_thousand = format!("{{{{ {}1{} }}}}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(matches!(
        ValueTemplate::parse(&ten_thousand),
        Err(TemplateError::TooLong { .. })
    ));
    let too_deep = TemplateError::TooDeep { max: MAX_NESTING };
    // Within the length bound, every way of nesting stops at MAX_NESTING.
    for nested in [
        format!("{{{{ {}1{} }}}}", "(".repeat(2000), ")".repeat(2000)),
        format!("{{{{ {}1 }}}}", "not ".repeat(1000)),
        format!("{{{{ {}1 }}}}", "- ".repeat(2000)),
        format!("{{{{ 1{} }}}}", " + 1".repeat(1000)),
        format!("{{{{ 1{} }}}}", " < 1".repeat(1000)),
        format!("{{{{ value{} }}}}", " | abs".repeat(600)),
        format!("{{{{ value_json{} }}}}", ".a".repeat(1500)),
        format!("{{{{ value_json{} }}}}", "[0]".repeat(1300)),
        format!("{{{{ {}1 }}}}", "[".repeat(3000)),
        format!("{{{{ 1{} }}}}", " if 1 else 1".repeat(300)),
        format!("{{{{ {}1{} }}}}", "float(".repeat(300), ")".repeat(300)),
    ] {
        assert!(nested.len() <= MAX_TEMPLATE_BYTES, "{}", nested.len());
        assert_eq!(
            ValueTemplate::parse(&nested).map(|_| ()),
            Err(too_deep.clone()),
            "{}",
            &nested[..40]
        );
    }
    // The parser's own bound holds without the length bound: 10,000 parentheses are refused
    // at MAX_NESTING, not by the stack.
    let text = format!("{}1{}}}}}", "(".repeat(10_000), ")".repeat(10_000));
    let (tokens, close, _, _) = lex_expression(&text, 0).expect("lexes");
    let mut parser = Parser {
        tokens: &tokens,
        pos: 0,
        depth: 0,
        end: close,
    };
    assert_eq!(parser.expression().map(|_| ()), Err(too_deep));
    // The bound is exact: an expression is one level, each parenthesis one more.
    let nested = |levels: usize| {
        let text = format!("{{{{ {}1{} }}}}", "(".repeat(levels), ")".repeat(levels));
        ValueTemplate::parse(&text).map(|_| ())
    };
    assert_eq!(nested(MAX_NESTING - 1), Ok(()));
    let deepest = format!(
        "{{{{ {}value_json.a{} }}}}",
        "-(".repeat(MAX_NESTING / 2 - 2),
        ")".repeat(MAX_NESTING / 2 - 2)
    );
    assert_eq!(ok(&deepest, r#"{"a": 2}"#), "2");
    assert_eq!(
        nested(MAX_NESTING),
        Err(TemplateError::TooDeep { max: MAX_NESTING })
    );
    // Real templates nest well within the bound.
    assert!(
        ValueTemplate::parse(&format!("{{{{ {}1{} }}}}", "(".repeat(20), ")".repeat(20))).is_ok()
    );
}

#[test]
fn hostile_templates_are_bounded_when_rendering() {
    let too_large = RenderError::TooLarge {
        max: MAX_RENDERED_BYTES,
    };
    assert_eq!(state("{{ 'x' * 100000 }}", ""), Err(too_large.clone()));
    assert_eq!(
        state("{{ value * 1000000000000 }}", "ab"),
        Err(too_large.clone())
    );
    assert_eq!(
        state("{{ value | replace('', value) }}", &"y".repeat(300)),
        Err(too_large.clone())
    );
    assert_eq!(
        state("{{ value }}", &"z".repeat(MAX_RENDERED_BYTES + 1)),
        Err(too_large.clone())
    );
    assert_eq!(
        state(
            &"{{ value }}".repeat(40),
            &"z".repeat(MAX_RENDERED_BYTES / 32)
        ),
        Err(too_large)
    );
    // Many passes over a large payload run out of work before they run long.
    let payload = format!("[{}]", vec!["1"; 200_000].join(","));
    let template = "{{ value_json == value_json }}".repeat(40);
    assert_eq!(
        state(&template, &payload),
        Err(RenderError::TooMuchWork {
            max: MAX_RENDER_WORK
        })
    );
    // One pass is fine.
    assert_eq!(ok("{{ value_json == value_json }}", &payload), "True");
    assert_eq!(ok("{{ value_json | length }}", &payload), "200000");
}

#[test]
fn error_messages_are_short_and_specific() {
    let long = "q".repeat(1000);
    let error = state("{{ value | float }}", &long).expect_err("fails");
    let message = error.to_string();
    assert!(
        message.starts_with("float got invalid input 'qqq"),
        "{message}"
    );
    assert!(message.len() < 150, "{message}");
    assert_eq!(
        TemplateError::Unsupported("the filter `x`".into()).to_string(),
        "unsupported: the filter `x`"
    );
    assert_eq!(
        state("{{ value_json.a.b }}", "{}").map_err(|e| e.to_string()),
        Err("undefined: 'dict object' has no attribute 'a'".to_owned())
    );
}

#[test]
fn a_template_parses_once_and_renders_many_times() {
    let template = ValueTemplate::parse("{{ value_json.t | float * 2 }}").expect("parses");
    assert_eq!(template.source(), "{{ value_json.t | float * 2 }}");
    for (payload, expected) in [(r#"{"t": 1}"#, "2.0"), (r#"{"t": "2.5"}"#, "5.0")] {
        assert_eq!(
            template
                .render(&Variables::from_payload(payload))
                .as_deref(),
            Ok(expected)
        );
    }
}

#[test]
fn command_templates_read_the_named_variables_they_are_given_and_others_are_undefined() {
    let template = ValueTemplate::parse("{{ red }},{{ green }},{{ blue }}").unwrap();
    let vars = Variables::from_value(json!("1,2,3"))
        .with("red", json!(1))
        .with("green", json!(2))
        .with("blue", json!(3));
    assert_eq!(template.render(&vars).unwrap(), "1,2,3");
    // Undefined renders empty, as Jinja's (and Home Assistant's) does.
    let missing = template.render(&Variables::from_value(json!("x"))).unwrap();
    assert_eq!(missing, ",,");
    let unknown = ValueTemplate::parse("{{ entity_id }}");
    assert!(unknown.is_err(), "{unknown:?}");
    // A name outside the list is ignored, not defined.
    let ignored = Variables::from_value(json!(1)).with("states", json!(2));
    assert_eq!(
        ValueTemplate::parse("{{ value }}")
            .unwrap()
            .render(&ignored)
            .unwrap(),
        "1"
    );
}
