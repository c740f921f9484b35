//! Contexts as the wire carries them: by id only. Who a context's user is and what its parent
//! was stay with the side that issued it (main keeps them in its context cache and restores them
//! when an id comes back), so a sandbox never learns them and cannot forge them.

use homecore::Context;

/// A context's id as the wire carries it.
pub fn context_to_wire(context: &Context) -> String {
    context.id.to_string()
}

/// A context id from the wire as a context of this side's core: the id is kept, so what the
/// call causes carries it back to its issuer; an id that is not a ULID gets a fresh context.
pub fn context_from_wire(context_id: &str) -> Context {
    match context_id.parse::<ulid::Ulid>() {
        Ok(id) => Context {
            id,
            user_id: None,
            parent_id: None,
        },
        Err(_) => Context::new(),
    }
}
