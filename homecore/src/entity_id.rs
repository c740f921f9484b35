//! Entity ids and domains: validation (`<domain>.<object_id>`) and generation from names.
//!
//! A new entity's id is the first free one of `<domain>.<base>`, `<domain>.<base>_2`,
//! `<domain>.<base>_3`, ... [`SuffixHints`] remembers, per base, how far the taken ones reach,
//! so N entities of one name cost N probes in all rather than N²/2, and still get the ids the
//! plain search would give.

use std::collections::HashMap;

use parking_lot::Mutex;

#[cfg(test)]
mod tests;

/// Longest entity id accepted, in bytes (Home Assistant's `MAX_LENGTH_STATE_ENTITY_ID`).
pub const MAX_ENTITY_ID_LENGTH: usize = 255;

/// Longest domain accepted, in bytes (Home Assistant's `MAX_LENGTH_STATE_DOMAIN`).
pub const MAX_DOMAIN_LENGTH: usize = 64;

/// Why an entity id or domain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntityIdError {
    /// The id does not have the `<domain>.<object_id>` shape of lowercase slugs.
    #[error(
        "invalid entity id {0:?}: expected `<domain>.<object_id>` made of lowercase letters, digits and single underscores, not starting or ending with an underscore"
    )]
    InvalidFormat(String),
    /// The id is longer than [`MAX_ENTITY_ID_LENGTH`].
    #[error("entity id {id:?} is {len} bytes long; the maximum is {MAX_ENTITY_ID_LENGTH}")]
    TooLong {
        /// The refused id.
        id: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The domain is not a lowercase slug, or is too long.
    #[error(
        "invalid domain {0:?}: expected at most {MAX_DOMAIN_LENGTH} lowercase letters, digits and single underscores, not starting or ending with an underscore"
    )]
    InvalidDomain(String),
}

/// True when `part` is a lowercase slug: `[0-9a-z_]+`, no leading, trailing or doubled underscore.
fn is_slug_part(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'_')
        && !part.starts_with('_')
        && !part.ends_with('_')
        && !part.contains("__")
}

/// Checks that `domain` is a valid integration or entity domain.
pub fn validate_domain(domain: &str) -> Result<(), EntityIdError> {
    if domain.len() <= MAX_DOMAIN_LENGTH && is_slug_part(domain) {
        Ok(())
    } else {
        Err(EntityIdError::InvalidDomain(domain.to_owned()))
    }
}

/// True when `domain` is a valid domain.
pub fn is_valid_domain(domain: &str) -> bool {
    validate_domain(domain).is_ok()
}

/// Checks that `entity_id` is `<domain>.<object_id>` with both parts lowercase slugs.
///
/// Case is not folded: `Light.Kitchen` is refused rather than silently renamed,
/// so a caller never ends up writing a different entity than it named.
pub fn validate_entity_id(entity_id: &str) -> Result<(), EntityIdError> {
    if entity_id.len() > MAX_ENTITY_ID_LENGTH {
        return Err(EntityIdError::TooLong {
            id: entity_id.to_owned(),
            len: entity_id.len(),
        });
    }
    match entity_id.split_once('.') {
        Some((domain, object_id)) if is_slug_part(domain) && is_slug_part(object_id) => Ok(()),
        _ => Err(EntityIdError::InvalidFormat(entity_id.to_owned())),
    }
}

/// True when `entity_id` is valid.
pub fn is_valid_entity_id(entity_id: &str) -> bool {
    validate_entity_id(entity_id).is_ok()
}

/// Splits a valid entity id into `(domain, object_id)`.
pub fn split_entity_id(entity_id: &str) -> Result<(&str, &str), EntityIdError> {
    validate_entity_id(entity_id)?;
    entity_id
        .split_once('.')
        .ok_or_else(|| EntityIdError::InvalidFormat(entity_id.to_owned()))
}

/// Turns a human name into a lowercase slug the way Home Assistant's `slugify` does:
/// common accented Latin letters lose their accent, every other run of
/// non-alphanumerics becomes one underscore, and edges are trimmed.
///
/// Returns an empty string when nothing alphanumeric is left.
pub fn slugify(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_separator = false;
    for ch in text.chars() {
        let mapped = transliterate(ch);
        let mut emitted_any = false;
        for c in mapped.chars() {
            if c.is_ascii_alphanumeric() {
                if pending_separator && !out.is_empty() {
                    out.push('_');
                }
                pending_separator = false;
                out.push(c.to_ascii_lowercase());
                emitted_any = true;
            }
        }
        if !emitted_any {
            pending_separator = true;
        }
    }
    out
}

/// ASCII spelling of common accented Latin letters; anything else passes through.
fn transliterate(ch: char) -> std::borrow::Cow<'static, str> {
    let s: &'static str = match ch {
        'à' | 'á' | 'â' | 'ã' | 'å' | 'ā' | 'ą' | 'À' | 'Á' | 'Â' | 'Ã' | 'Å' => "a",
        'ä' | 'Ä' | 'æ' | 'Æ' => "ae",
        'ç' | 'ć' | 'č' | 'Ç' | 'Ć' | 'Č' => "c",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' | 'ě' | 'È' | 'É' | 'Ê' | 'Ë' => "e",
        'ì' | 'í' | 'î' | 'ï' | 'Ì' | 'Í' | 'Î' | 'Ï' => "i",
        'ñ' | 'ń' | 'ň' | 'Ñ' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ø' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ø' => "o",
        'ö' | 'Ö' | 'œ' | 'Œ' => "oe",
        'ù' | 'ú' | 'û' | 'ů' | 'Ù' | 'Ú' | 'Û' => "u",
        'ü' | 'Ü' => "ue",
        'ý' | 'ÿ' | 'Ý' => "y",
        'ß' => "ss",
        'ł' | 'Ł' => "l",
        'ś' | 'š' | 'Ś' | 'Š' => "s",
        'ź' | 'ż' | 'ž' | 'Ź' | 'Ż' | 'Ž' => "z",
        'ř' | 'Ř' => "r",
        'đ' | 'Đ' | 'ď' => "d",
        'ť' => "t",
        _ => return std::borrow::Cow::Owned(ch.to_string()),
    };
    std::borrow::Cow::Borrowed(s)
}

/// The candidate entity id for `base` with `suffix`: `<domain>.<base>` for 1, else
/// `<domain>.<base>_<suffix>`.
pub(crate) fn suffixed_entity_id(domain: &str, base: &str, suffix: usize) -> String {
    if suffix == 1 {
        format!("{domain}.{base}")
    } else {
        format!("{domain}.{base}_{suffix}")
    }
}

/// Which search a hint serves. The searches count different ids as taken (the registry's
/// entries and states; the components' also their live entities), so a hint earned by one
/// does not hold for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HintScope {
    /// The entity registry naming a new registered entity.
    Registry,
    /// The entity components naming an entity without a unique id.
    Components,
}

/// What [`SuffixHints`] guards.
#[derive(Debug, Default)]
struct HintsState {
    /// Per scope, by `<domain>.<base>`: the lowest suffix not known to be taken. Every lower
    /// suffix was taken when the hint was recorded and has not been freed since (a free
    /// lowers the hint). Absent means 1.
    starts: [HashMap<String, usize>; 2],
    /// Frees seen so far: a search that saw one while it ran does not raise its hint, since
    /// an id it found taken may have been freed behind it.
    frees: u64,
}

/// Where the search for a free suffixed entity id may start, per base.
///
/// Without it, naming the N-th entity of one name probes N ids; a peer registering many
/// same-named entities makes that quadratic. Whoever frees an id that a search counts as
/// taken (a state, registry entry or live entity removed, a registry entry renamed, the
/// registry reloaded) must report it through [`SuffixHints::freed`] or
/// [`SuffixHints::clear`], so that a later search finds the freed id exactly as a search
/// from 1 would.
#[derive(Debug, Default)]
pub(crate) struct SuffixHints {
    /// The hints. A leaf lock: never held while calling out, so it may be taken under any
    /// other lock (the state machine reports frees under its own).
    state: Mutex<HintsState>,
    /// Ids probed by every search, so tests can tell a search that starts at its hint from
    /// one that starts at 1 without timing anything.
    #[cfg(test)]
    probes: std::sync::atomic::AtomicU64,
}

impl SuffixHints {
    /// The first id of `<domain>.<base>`, `<domain>.<base>_2`, ..., `<domain>.<base>_<max_suffix>`
    /// that `taken` does not claim, with its suffix; `None` when all are taken.
    ///
    /// `taken` must not call back into these hints.
    pub(crate) fn first_free(
        &self,
        scope: HintScope,
        domain: &str,
        base: &str,
        max_suffix: usize,
        mut taken: impl FnMut(&str) -> bool,
    ) -> Option<(String, usize)> {
        let prefix = format!("{domain}.{base}");
        let (start, frees) = {
            let state = self.state.lock();
            let start = state.starts[scope as usize]
                .get(&prefix)
                .copied()
                .unwrap_or(1);
            (start, state.frees)
        };
        let mut found = None;
        let mut suffix = start;
        while suffix <= max_suffix {
            let candidate = suffixed_entity_id(domain, base, suffix);
            #[cfg(test)]
            self.probes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !taken(&candidate) {
                found = Some((candidate, suffix));
                break;
            }
            suffix += 1;
        }
        // Every suffix from `start` up to `suffix` (excluded) was taken; `suffix` itself is
        // free now, but the caller is about to take it, so it is where the next search starts.
        let mut state = self.state.lock();
        if state.frees == frees && suffix > start {
            let hint = state.starts[scope as usize].entry(prefix).or_insert(1);
            *hint = (*hint).max(suffix);
        }
        found
    }

    /// `entity_id` no longer counts as taken: hints that skip it are lowered to it.
    pub(crate) fn freed(&self, entity_id: &str) {
        let mut state = self.state.lock();
        state.frees += 1;
        if state.starts.iter().all(HashMap::is_empty) {
            return;
        }
        // It is suffix 1 of its own object id, and suffix n of `<base>` when it ends `_<n>`
        // with n written as the search writes it (no sign, no leading zero, at least 2).
        let numbered = entity_id.rsplit_once('_').and_then(|(prefix, digits)| {
            let canonical = !digits.is_empty()
                && !digits.starts_with('0')
                && digits.bytes().all(|b| b.is_ascii_digit());
            let suffix: usize = digits.parse().ok().filter(|_| canonical)?;
            (suffix >= 2 && prefix.contains('.')).then_some((prefix, suffix))
        });
        for starts in &mut state.starts {
            starts.remove(entity_id);
            if let Some((prefix, suffix)) = numbered
                && let Some(hint) = starts.get_mut(prefix)
            {
                *hint = (*hint).min(suffix);
            }
        }
    }

    /// Every id may have been freed (the registry was replaced): forgets every hint.
    pub(crate) fn clear(&self) {
        let mut state = self.state.lock();
        state.frees += 1;
        for starts in &mut state.starts {
            starts.clear();
        }
    }

    /// Ids probed by every search so far.
    #[cfg(test)]
    pub(crate) fn probes(&self) -> u64 {
        self.probes.load(std::sync::atomic::Ordering::Relaxed)
    }
}
