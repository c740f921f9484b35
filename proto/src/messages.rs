//! Binds every message type string of the protocol to its Rust types, and lists them all.
//!
//! A [`Call`] expects a reply of type [`Call::Reply`]; a [`Push`] expects none. The type string
//! is what a [`Frame`](crate::wire::Frame) carries in its `type` field; the [`CATALOG`] is the
//! single list docs/PROTOCOL.md and the tests are checked against.

use crate::wire;

/// Which peer sends a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Main sends, the sandbox answers.
    MainToSandbox,
    /// The sandbox sends, main answers.
    SandboxToMain,
}

/// Whether a message is a call (answered) or a push (not answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A request that gets exactly one response frame.
    Call,
    /// A one-way message; frame id 0.
    Push,
}

/// A request message that is answered with a [`Call::Reply`].
pub trait Call: prost::Message + Default + Send + Sync + 'static {
    /// The frame `type` string.
    const TYPE: &'static str;
    /// Its position in the [`CATALOG`] (per-type counters are indexed by it).
    const INDEX: usize = catalog_position(Self::TYPE);
    /// The message answering this call.
    type Reply: prost::Message + Default + Send + Sync + 'static;
}

/// A one-way message.
pub trait Push: prost::Message + Default + Send + Sync + 'static {
    /// The frame `type` string.
    const TYPE: &'static str;
    /// Its position in the [`CATALOG`] (per-type counters are indexed by it).
    const INDEX: usize = catalog_position(Self::TYPE);
}

/// One row of the [`CATALOG`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageSpec {
    /// The frame `type` string.
    pub type_name: &'static str,
    /// Call or push.
    pub shape: Shape,
    /// Who sends it.
    pub direction: Direction,
    /// The protocol version the message exists since.
    pub since: &'static str,
}

macro_rules! protocol_messages {
    (
        calls { $( $call:ident => $reply:ident, $call_name:literal, $call_dir:ident, $call_since:literal; )* }
        pushes { $( $push:ident, $push_name:literal, $push_dir:ident, $push_since:literal; )* }
    ) => {
        $(
            impl Call for wire::$call {
                const TYPE: &'static str = $call_name;
                type Reply = wire::$reply;
            }
        )*
        $(
            impl Push for wire::$push {
                const TYPE: &'static str = $push_name;
            }
        )*

        /// Every message type of the protocol, in the order docs/PROTOCOL.md lists them.
        pub const CATALOG: &[MessageSpec] = &[
            $( MessageSpec {
                type_name: $call_name,
                shape: Shape::Call,
                direction: Direction::$call_dir,
                since: $call_since,
            }, )*
            $( MessageSpec {
                type_name: $push_name,
                shape: Shape::Push,
                direction: Direction::$push_dir,
                since: $push_since,
            }, )*
        ];
    };
}

protocol_messages! {
    calls {
        Ready => ReadyAck, "ready", SandboxToMain, "1.0";
        Ping => Pong, "ping", MainToSandbox, "1.0";
        EntrySetup => EntrySetupResult, "entry_setup", MainToSandbox, "1.0";
        EntryUnload => EntryUnloadResult, "entry_unload", MainToSandbox, "1.0";
        EntryRemove => EntryRemoveResult, "entry_remove", MainToSandbox, "1.2";
        FlowInit => FlowResult, "flow_init", MainToSandbox, "1.0";
        FlowStep => FlowResult, "flow_step", MainToSandbox, "1.0";
        FlowAbort => FlowAbortResult, "flow_abort", MainToSandbox, "1.0";
        CallService => CallServiceResult, "call_service", MainToSandbox, "1.0";
        EntityQuery => EntityQueryResult, "entity_query", MainToSandbox, "1.0";
        GetTranslations => GetTranslationsResult, "get_translations", MainToSandbox, "1.0";
        Shutdown => ShutdownResult, "shutdown", MainToSandbox, "1.0";
        RegisterEntity => RegisterEntityResult, "register_entity", SandboxToMain, "1.0";
        UnregisterEntity => UnregisterEntityResult, "unregister_entity", SandboxToMain, "1.0";
        RegisterService => RegisterServiceResult, "register_service", SandboxToMain, "1.0";
        UnregisterService => UnregisterServiceResult, "unregister_service", SandboxToMain, "1.0";
        UpdateEntry => UpdateEntryResult, "update_entry", SandboxToMain, "1.0";
        StoreLoad => StoreLoadResult, "store_load", SandboxToMain, "1.0";
        StoreSave => StoreSaveResult, "store_save", SandboxToMain, "1.0";
        StoreRemove => StoreRemoveResult, "store_remove", SandboxToMain, "1.0";
    }
    pushes {
        StateChanged, "state_changed", SandboxToMain, "1.0";
        FireEvent, "fire_event", SandboxToMain, "1.0";
        CoreConfigUpdated, "core_config_updated", MainToSandbox, "1.2";
    }
}

/// The position of `type_name` in the [`CATALOG`], or the catalog's length for a type it does
/// not have (an index no per-type counter has). `const`, so every [`Call::INDEX`] and
/// [`Push::INDEX`] is computed at compile time.
pub const fn catalog_position(type_name: &str) -> usize {
    let wanted = type_name.as_bytes();
    let mut index = 0;
    while index < CATALOG.len() {
        let candidate = CATALOG[index].type_name.as_bytes();
        if candidate.len() == wanted.len() {
            let mut byte = 0;
            while byte < wanted.len() && candidate[byte] == wanted[byte] {
                byte += 1;
            }
            if byte == wanted.len() {
                return index;
            }
        }
        index += 1;
    }
    CATALOG.len()
}

/// Looks a message type up in the [`CATALOG`].
pub fn spec(type_name: &str) -> Option<&'static MessageSpec> {
    CATALOG.iter().find(|spec| spec.type_name == type_name)
}

#[cfg(test)]
mod tests;
