//! Entity ids and domains: validation (`<domain>.<object_id>`) and generation from names.

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
