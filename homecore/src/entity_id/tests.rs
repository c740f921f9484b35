//! Tests for entity id validation and slugs.

use super::*;

#[test]
fn accepts_well_formed_ids() {
    for id in ["light.kitchen", "sensor.t_1", "a.b", "binary_sensor.door_2"] {
        assert!(is_valid_entity_id(id), "{id}");
    }
}

#[test]
fn refuses_malformed_ids_with_a_clear_error() {
    for id in [
        "",
        "light",
        "light.",
        ".kitchen",
        "Light.kitchen",
        "light.Kitchen",
        "light.kit chen",
        "light._kitchen",
        "light.kitchen_",
        "light.kit__chen",
        "_light.kitchen",
        "light.kitchen.extra",
        "light.küche",
    ] {
        let err = validate_entity_id(id).unwrap_err();
        assert_eq!(err, EntityIdError::InvalidFormat(id.to_owned()), "{id}");
        assert!(err.to_string().contains("invalid entity id"));
    }
}

#[test]
fn refuses_overlong_ids() {
    let id = format!("light.{}", "a".repeat(MAX_ENTITY_ID_LENGTH));
    assert!(matches!(
        validate_entity_id(&id),
        Err(EntityIdError::TooLong { .. })
    ));
    let at_limit = format!("light.{}", "a".repeat(MAX_ENTITY_ID_LENGTH - 6));
    assert!(is_valid_entity_id(&at_limit));
}

#[test]
fn domains() {
    assert!(is_valid_domain("hue"));
    assert!(is_valid_domain("media_player"));
    assert!(!is_valid_domain("Hue"));
    assert!(!is_valid_domain("a.b"));
    assert!(!is_valid_domain(&"a".repeat(MAX_DOMAIN_LENGTH + 1)));
}

#[test]
fn split() {
    assert_eq!(
        split_entity_id("light.kitchen").unwrap(),
        ("light", "kitchen")
    );
    assert!(split_entity_id("nope").is_err());
}

#[test]
fn slugify_like_home_assistant() {
    assert_eq!(slugify("Living Room Lamp"), "living_room_lamp");
    assert_eq!(slugify("  --Hello,  World!! "), "hello_world");
    assert_eq!(slugify("Küche Decke"), "kueche_decke");
    assert_eq!(slugify("Café"), "cafe");
    assert_eq!(slugify("温度"), "");
    assert_eq!(slugify("Temp 2"), "temp_2");
}

proptest::proptest! {
    #[test]
    fn slugs_of_anything_are_valid_object_ids(text in ".{0,40}") {
        let slug = slugify(&text);
        if !slug.is_empty() {
            let id = format!("sensor.{slug}");
            proptest::prop_assert!(is_valid_entity_id(&id), "{}", id);
        }
    }
}

/// The id a search from suffix 1 finds: what [`SuffixHints::first_free`] must agree with.
fn first_free_from_one(
    taken: &std::collections::HashSet<String>,
    base: &str,
    max: usize,
) -> Option<String> {
    (1..=max)
        .map(|suffix| suffixed_entity_id("light", base, suffix))
        .find(|candidate| !taken.contains(candidate))
}

/// A fixed pseudo-random sequence (xorshift), so the interleaving below is the same every run.
struct Sequence(u64);

impl Sequence {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

#[test]
fn hinted_search_finds_the_ids_a_search_from_one_finds() {
    let hints = SuffixHints::default();
    let mut taken = std::collections::HashSet::new();
    let mut sequence = Sequence(0x9e37_79b9_7f4a_7c15);
    let bases = ["lamp", "lamp_2", "fan"];
    for step in 0..5_000 {
        let base = bases[sequence.below(bases.len())];
        match sequence.below(10) {
            // Frees: a taken id of any shape, including ones that only look numbered.
            0 | 1 => {
                let id = match sequence.below(4) {
                    0 => format!("light.{base}"),
                    1 => format!("light.{base}_0{}", sequence.below(9)),
                    2 => format!("light.{base}_1"),
                    _ => suffixed_entity_id("light", base, 2 + sequence.below(60)),
                };
                taken.remove(&id);
                hints.freed(&id);
            }
            // Ids taken behind the hints' back (a state written directly) only ever add.
            2 => {
                taken.insert(suffixed_entity_id("light", base, 1 + sequence.below(80)));
            }
            _ => {
                let expected = first_free_from_one(&taken, base, usize::MAX);
                let found = hints
                    .first_free(HintScope::Registry, "light", base, usize::MAX, |id| {
                        taken.contains(id)
                    })
                    .map(|(id, _)| id);
                assert_eq!(found, expected, "step {step}");
                taken.extend(found);
            }
        }
        if step == 2_500 {
            hints.clear();
        }
    }
}

#[test]
fn hinted_search_respects_the_bound_and_each_scope_keeps_its_own_hints() {
    let hints = SuffixHints::default();
    let taken: std::collections::HashSet<String> = (1..=5)
        .map(|suffix| suffixed_entity_id("light", "lamp", suffix))
        .collect();
    let search =
        |scope, max| hints.first_free(scope, "light", "lamp", max, |id| taken.contains(id));
    assert_eq!(search(HintScope::Components, 5), None);
    assert_eq!(first_free_from_one(&taken, "lamp", 5), None);
    assert_eq!(
        search(HintScope::Components, 10),
        Some(("light.lamp_6".to_owned(), 6))
    );
    let probes = hints.probes();
    // The registry's scope earned nothing from the components' searches: it starts at 1.
    assert_eq!(
        search(HintScope::Registry, 10),
        Some(("light.lamp_6".to_owned(), 6))
    );
    assert_eq!(hints.probes() - probes, 6);
}

#[test]
fn naming_many_same_named_entities_probes_each_id_about_once() {
    // A peer registering thousands of entities of one name: searching from 1 each time would
    // probe 1 + 2 + ... + N ids; the hints keep it to about two per entity.
    const ENTITIES: usize = 2_000;
    let hints = SuffixHints::default();
    let mut taken = std::collections::HashSet::new();
    for n in 1..=ENTITIES {
        let (id, suffix) = hints
            .first_free(HintScope::Registry, "light", "lamp", usize::MAX, |id| {
                taken.contains(id)
            })
            .unwrap();
        assert_eq!(suffix, n);
        taken.insert(id);
    }
    assert!(
        hints.probes() <= 2 * ENTITIES as u64,
        "{} probes for {ENTITIES} entities",
        hints.probes()
    );
}
