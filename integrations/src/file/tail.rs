//! Reading a file's last line without reading the whole file, and writing one message line.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Most bytes read from the end of a followed file: the last line is looked for in them, so a
/// longer last line is cut to its final part. A state holds at most 255 characters anyway.
pub const MAX_TAIL_BYTES: u64 = 64 * 1024;

/// The last non-empty line of the file at `path`, trimmed; `None` for an empty file.
pub fn last_line(path: &Path) -> std::io::Result<Option<String>> {
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    let start = length.saturating_sub(MAX_TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.take(MAX_TAIL_BYTES).read_to_end(&mut tail)?;
    Ok(last_line_of(&String::from_utf8_lossy(&tail)))
}

/// The last non-empty line of `text`, trimmed (Home Assistant strips the line it keeps).
pub fn last_line_of(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .map(str::to_owned)
}

/// One message as one line: line breaks inside it are written as `\n` so a reader of the file
/// sees one line per message.
pub fn message_line(message: &str, timestamp: Option<&str>) -> String {
    let flat = message.replace("\r\n", "\\n").replace(['\n', '\r'], "\\n");
    match timestamp {
        Some(timestamp) => format!("{timestamp} {flat}\n"),
        None => format!("{flat}\n"),
    }
}

/// Appends `line` to the file at `path`, creating the file if missing.
pub fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(line.as_bytes())?;
    file.flush()
}
