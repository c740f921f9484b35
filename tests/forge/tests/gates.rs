//! The forged-frame suite: one hostile test per trust gate, each running its
//! [`sandbox_forge::gates`] check against the real `sandbox-forger` binary. The compat sweep
//! runs the same checks against itself.

#![allow(clippy::unwrap_used, missing_docs)]

use std::ffi::OsString;

use sandbox_forge::{CheckError, gates};

fn forger() -> Vec<OsString> {
    vec![env!("CARGO_BIN_EXE_sandbox-forger").into()]
}

async fn passes(check: impl Future<Output = Result<(), CheckError>>) {
    if let Err(error) = check.await {
        panic!("{error}");
    }
}

/// The tests below, by name: every check of [`gates::checks`] has one.
const TESTED: [&str; 16] = [
    "register_entity_for_an_entry_of_another_group_is_refused",
    "a_device_merging_into_a_device_owned_outside_the_group_is_refused",
    "a_device_smuggling_a_foreign_identifier_behind_its_own_is_refused",
    "register_entity_of_a_domain_that_cannot_be_proxied_is_refused",
    "register_service_outside_owned_domains_or_over_an_existing_one_is_refused",
    "core_and_unowned_events_never_reach_mains_bus",
    "contexts_main_never_issued_are_never_adopted_and_stay_bounded",
    "store_requests_over_quota_or_with_unsafe_keys_are_refused_and_write_nothing",
    "update_entry_for_an_entry_of_another_group_is_refused",
    "descriptions_claiming_what_the_group_does_not_own_are_refused",
    "values_over_mains_bounds_are_refused_and_kept_nowhere",
    "registrations_past_the_entity_cap_are_refused",
    "bridge_requests_before_ready_are_refused_and_counted",
    "flow_results_over_mains_bounds_never_become_entries_or_forms",
    "a_groups_mirrored_data_and_registry_entries_stay_within_their_budgets",
    "every_call_of_a_flood_gets_exactly_one_answer",
];

#[test]
fn every_check_has_its_test_and_names_a_trust_gate() {
    let checks = gates::checks();
    let names: Vec<&str> = checks.iter().map(|check| check.name).collect();
    assert_eq!(names, TESTED);
    for check in &checks {
        let id = check
            .gate
            .strip_prefix('B')
            .or_else(|| check.gate.strip_prefix('W'))
            .unwrap();
        assert!(id.parse::<u8>().is_ok(), "{check:?}");
        assert!(!check.rule.is_empty(), "{check:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_entity_for_an_entry_of_another_group_is_refused() {
    passes(gates::register_entity_for_an_entry_of_another_group_is_refused(forger())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_merging_into_a_device_owned_outside_the_group_is_refused() {
    passes(gates::a_device_merging_into_a_device_owned_outside_the_group_is_refused(forger()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_smuggling_a_foreign_identifier_behind_its_own_is_refused() {
    passes(gates::a_device_smuggling_a_foreign_identifier_behind_its_own_is_refused(forger()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_entity_of_a_domain_that_cannot_be_proxied_is_refused() {
    passes(gates::register_entity_of_a_domain_that_cannot_be_proxied_is_refused(forger())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_service_outside_owned_domains_or_over_an_existing_one_is_refused() {
    passes(
        gates::register_service_outside_owned_domains_or_over_an_existing_one_is_refused(forger()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_and_unowned_events_never_reach_mains_bus() {
    passes(gates::core_and_unowned_events_never_reach_mains_bus(
        forger(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_main_never_issued_are_never_adopted_and_stay_bounded() {
    passes(gates::contexts_main_never_issued_are_never_adopted_and_stay_bounded(forger())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_requests_over_quota_or_with_unsafe_keys_are_refused_and_write_nothing() {
    passes(
        gates::store_requests_over_quota_or_with_unsafe_keys_are_refused_and_write_nothing(
            forger(),
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_entry_for_an_entry_of_another_group_is_refused() {
    passes(gates::update_entry_for_an_entry_of_another_group_is_refused(forger())).await;
}

/// A check that fails says why instead of panicking, and leaves nothing running: here the
/// forger is given a flag it refuses, so it exits at once and the group never says ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_against_a_child_that_cannot_forge_fails_with_an_error() {
    let mut refusing = forger();
    refusing.push("--no-such-flag".into());
    let error = gates::register_entity_for_an_entry_of_another_group_is_refused(refusing)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(!message.is_empty());
    assert!(
        matches!(error, CheckError::Failed(_) | CheckError::Setup(_)),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptions_claiming_what_the_group_does_not_own_are_refused() {
    passes(gates::descriptions_claiming_what_the_group_does_not_own_are_refused(forger())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_mains_bounds_are_refused_and_kept_nowhere() {
    passes(gates::values_over_mains_bounds_are_refused_and_kept_nowhere(forger())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_past_the_entity_cap_are_refused() {
    passes(gates::registrations_past_the_entity_cap_are_refused(
        forger(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_requests_before_ready_are_refused_and_counted() {
    passes(gates::bridge_requests_before_ready_are_refused_and_counted(
        forger(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_a_flood_gets_exactly_one_answer() {
    passes(gates::every_call_of_a_flood_gets_exactly_one_answer(
        forger(),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_results_over_mains_bounds_never_become_entries_or_forms() {
    passes(gates::flow_results_over_mains_bounds_never_become_entries_or_forms(forger())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_mirrored_data_and_registry_entries_stay_within_their_budgets() {
    passes(gates::a_groups_mirrored_data_and_registry_entries_stay_within_their_budgets(forger()))
        .await;
}
