//! Tests for the panic boundary: outputs pass through, panics (while the future is built or
//! while it runs) become their message.

use super::*;

#[tokio::test]
async fn an_output_passes_through_and_a_panic_becomes_its_message() {
    assert_eq!(catch_panic("nothing", || async { 7 }).await, Ok(7));
    let literal = catch_panic("entry setup of demo", || async {
        tokio::task::yield_now().await;
        panic!("on purpose")
    })
    .await;
    assert_eq!(
        literal,
        Err::<(), _>("entry setup of demo panicked: on purpose".to_owned())
    );
    let formatted = catch_panic("unload of demo", || async {
        let number = 42;
        panic!("formatted {number}")
    })
    .await;
    assert_eq!(
        formatted,
        Err::<(), _>("unload of demo panicked: formatted 42".to_owned())
    );
    let opaque = catch_panic("x", || async { std::panic::panic_any(5_u8) }).await;
    assert_eq!(
        opaque,
        Err::<(), _>("x panicked: a panic without a message".to_owned())
    );
}

#[tokio::test]
async fn a_panic_while_the_future_is_built_is_caught_too() {
    fn builds_then_panics() -> futures::future::BoxFuture<'static, u32> {
        panic!("before any future")
    }
    let outcome = catch_panic("flow creation of demo", builds_then_panics).await;
    assert_eq!(
        outcome,
        Err("flow creation of demo panicked: before any future".to_owned())
    );
}
