//! Home Assistant's MQTT value and command templates: the subset of Jinja2 that real devices'
//! discovery configurations use, parsed once (at discovery) and rendered per message.
//!
//! Supported: literal text with `{{ expression }}` interpolations and `{# comments #}`, with the
//! whitespace control `{{-` / `-}}`; the variables `value` and `value_json`; attribute access
//! (`.key`, `.0`) and subscripts (`['key']`, `[0]`, negative indexes); string, integer, float,
//! `true`/`false`/`none` and list literals; `+ - * / // % ~`, unary `-`/`+`, comparisons (chained,
//! `in`, `not in`), `and`/`or`/`not`, `A if COND else B`; the tests `defined`, `undefined`,
//! `none`, `number`, `string`, `boolean`, `integer`, `float`, `mapping`, `true`, `false` (with
//! `is not`); the filters `float`, `int`, `round`, `string`, `lower`, `upper`, `trim`,
//! `default`/`d`, `abs`, `bool`, `tojson`, `to_json`, `from_json`, `replace`, `min`, `max`,
//! `length`/`count`, `iif`, and Home Assistant's global functions `float()`, `int()`, `bool()`,
//! `iif()`, `min()`, `max()`. Anything else (`{% %}` statements, other variables such as
//! `states`, other functions, filters or tests, method calls, slices, dict literals, `**`) is
//! [`TemplateError::Unsupported`], naming the construct, when the template is parsed.
//!
//! Semantics follow Jinja2 as Home Assistant configures it: a missing key is `Undefined`, which
//! renders as an empty string, is replaced by `default`, is false, and is an error in arithmetic,
//! comparisons, conversions (`float`, `int`, `round`, even with a default, as in Home Assistant)
//! and under a further attribute access (so `value_json.x` on a payload that is not JSON is an
//! error, as in Home Assistant, while `value_json is defined` is false); `float`, `int`, `round`,
//! `bool` and `from_json` without a default fail on input they cannot convert (Home Assistant
//! since 2021.12); numbers render as Python does (`21`, `21.0`, `0.1`, `1e+16`), booleans as
//! `True`/`False`, none as `None`; the rendered text is trimmed of surrounding whitespace, and a
//! template without any `{{`, `{%` or `{#` is returned as it is.
//!
//! Where this differs from Home Assistant, on purpose: lists and dicts render as compact JSON
//! (Python would print their repr, which no device parses); integers are 64-bit (an overflow is
//! a [`RenderError::Overflow`] where Python would grow the integer); a JSON key named like a
//! Python dict method (`items`, `keys`, `values`, `get`) is read as the key by `.name` (Jinja
//! would return the method); `+` on two lists and `<` between lists are errors.
//!
//! Everything here comes from the network (the template from a discovery payload, the variables
//! from messages), so it is bounded: [`MAX_TEMPLATE_BYTES`], [`MAX_NESTING`] when parsing (no
//! recursion deeper than it, whatever the input), [`MAX_RENDERED_BYTES`] for every string built
//! while rendering, and [`MAX_RENDER_WORK`] for the total work of one rendering.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::cmp::Ordering;

use serde_json::{Number, Value};

#[cfg(test)]
#[path = "tests/value_template.rs"]
mod tests;

/// The longest template accepted, in bytes. Real value templates are under 300 bytes; four
/// kilobytes is room for the longest command templates (a JSON body with a few interpolations)
/// and bounds what one discovery payload makes the hub parse and keep.
pub const MAX_TEMPLATE_BYTES: usize = 4096;

/// The deepest expression accepted: parentheses, operator and comparison chains, postfix and
/// filter chains, `not` and unary minus all count. Parsing and rendering recurse along this
/// depth, so it bounds their stack use whatever the template; 32 is several times what real
/// templates reach (`(value_json.a.b | float * 1000) | round(0)` is 7).
pub const MAX_NESTING: usize = 32;

/// The longest string rendering may build, the result included, in bytes. State values are a
/// few bytes and command payloads a few hundred; 64 KiB stops a template from multiplying its
/// input (`value * 1000000`, `replace('', ...)`) long before it costs memory.
pub const MAX_RENDERED_BYTES: usize = 64 * 1024;

/// The most work one rendering may do, in units of roughly a byte or a value touched. A template
/// of at most [`MAX_TEMPLATE_BYTES`] has at most a few thousand operations, but each may walk the
/// whole payload (`tojson`, `==` on structures, `in`, `min`); this caps the product. Four million
/// is a few milliseconds, and hundreds of times what real templates on real payloads use.
pub const MAX_RENDER_WORK: usize = 4 * 1024 * 1024;

/// The most characters of a value or a name quoted in an error message.
pub const MAX_ERROR_ECHO_CHARS: usize = 64;

/// The floats that convert to an `i64` without overflow: [-2^63, 2^63).
const I64_AS_F64: std::ops::Range<f64> = -9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0;

/// The deepest JSON value walked (compared, serialized); `serde_json` parses no deeper than 128.
const MAX_JSON_DEPTH: usize = 128;

/// Why a template was refused at parse time; the configuration holding it should be skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Longer than [`MAX_TEMPLATE_BYTES`].
    #[error("the template is {len} bytes long, more than {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// [`MAX_TEMPLATE_BYTES`].
        max: usize,
    },
    /// Nested deeper than [`MAX_NESTING`].
    #[error("the template nests deeper than {max} levels")]
    TooDeep {
        /// [`MAX_NESTING`].
        max: usize,
    },
    /// Not a valid template.
    #[error("syntax error at byte {offset}: {message}")]
    Syntax {
        /// Where, in bytes from the template's start.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// Valid Jinja2 this subset does not support; the message names the construct.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// Why a message could not be rendered; Home Assistant logs it and leaves the state as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// An undefined value was used where a value is needed.
    #[error("undefined: {0}")]
    Undefined(String),
    /// An operation on values of the wrong types.
    #[error("type error: {0}")]
    Type(String),
    /// Division or modulo by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// An integer result outside 64 bits, or an infinite float made an integer.
    #[error("integer overflow")]
    Overflow,
    /// A conversion filter met input it cannot convert and was given no default.
    #[error("{filter} got invalid input {input} but no default was specified")]
    NoDefault {
        /// The filter or function.
        filter: &'static str,
        /// The input, quoted and shortened to [`MAX_ERROR_ECHO_CHARS`].
        input: String,
    },
    /// An argument a filter cannot use.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A string longer than [`MAX_RENDERED_BYTES`] would be built.
    #[error("the rendered text would exceed {max} bytes")]
    TooLarge {
        /// [`MAX_RENDERED_BYTES`].
        max: usize,
    },
    /// More than [`MAX_RENDER_WORK`] work.
    #[error("rendering needs more than {max} units of work")]
    TooMuchWork {
        /// [`MAX_RENDER_WORK`].
        max: usize,
    },
}

/// The variables a template is rendered with.
#[derive(Debug)]
pub struct Variables<'p> {
    value: Source<'p>,
    value_json: OnceCell<Option<Value>>,
    /// The command's named variables ([`COMMAND_VARIABLES`]) this render defines.
    named: Vec<(&'static str, Value)>,
}

/// Variables a command template may read besides `value`, as Home Assistant's platforms define
/// them (cover: `position`, `tilt_position`, ...; basic light: `red`, `green`, `blue`, `hue`,
/// `sat`, `x`, `y`, `brightness`; lock: `code`). A name a render does not define is undefined.
pub const COMMAND_VARIABLES: [&str; 15] = [
    "blue",
    "brightness",
    "code",
    "green",
    "hue",
    "position",
    "position_closed",
    "position_open",
    "red",
    "sat",
    "tilt_max",
    "tilt_min",
    "tilt_position",
    "x",
    "y",
];

#[derive(Debug)]
enum Source<'p> {
    Payload(&'p str),
    Value(Value),
}

impl<'p> Variables<'p> {
    /// For a value template: `value` is the payload, `value_json` the payload parsed as JSON
    /// (parsed once, when the template first reads it; undefined when it is not JSON).
    pub fn from_payload(payload: &'p str) -> Self {
        Variables {
            value: Source::Payload(payload),
            value_json: OnceCell::new(),
            named: Vec::new(),
        }
    }

    /// For a command template: `value` is the value being sent, with its type; there is no
    /// `value_json`. The value should come from JSON (at most 128 levels deep).
    pub fn from_value(value: Value) -> Variables<'static> {
        Variables {
            value: Source::Value(value),
            value_json: OnceCell::from(None),
            named: Vec::new(),
        }
    }

    /// Defines the command variable `name` (one of [`COMMAND_VARIABLES`]; others are ignored).
    pub fn with(mut self, name: &str, value: Value) -> Self {
        if let Some(known) = COMMAND_VARIABLES.iter().find(|known| **known == name) {
            self.named.retain(|(defined, _)| defined != known);
            self.named.push((known, value));
        }
        self
    }
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct ValueTemplate {
    text: String,
    segments: Vec<Segment>,
    is_static: bool,
}

impl ValueTemplate {
    /// Parses `text`, refusing what this subset does not support.
    pub fn parse(text: &str) -> Result<ValueTemplate, TemplateError> {
        if text.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError::TooLong {
                len: text.len(),
                max: MAX_TEMPLATE_BYTES,
            });
        }
        Ok(ValueTemplate {
            text: text.to_owned(),
            segments: parse_segments(text)?,
            is_static: !(text.contains("{{") || text.contains("{%") || text.contains("{#")),
        })
    }

    /// The template's text.
    pub fn source(&self) -> &str {
        &self.text
    }

    /// Renders the template with `vars`.
    pub fn render(&self, vars: &Variables<'_>) -> Result<String, RenderError> {
        if self.is_static {
            return Ok(self.text.clone());
        }
        let mut ctx = Ctx { vars, work: 0 };
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => push_bounded(&mut out, text)?,
                Segment::Expr(expr) => {
                    let value = eval(expr, &mut ctx)?;
                    let text = display(&value, &mut ctx)?;
                    push_bounded(&mut out, &text)?;
                }
            }
        }
        ctx.charge(out.len())?;
        Ok(out.trim().to_owned())
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing: the template's segments, the expression lexer and parser.

#[derive(Debug, Clone)]
enum Segment {
    Text(String),
    Expr(Expr),
}

#[derive(Debug, Clone)]
enum Expr {
    Lit(Lit),
    List(Vec<Expr>),
    Value,
    ValueJson,
    /// One of [`COMMAND_VARIABLES`].
    Named(&'static str),
    Attr(Box<Expr>, String),
    Item(Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
    Pos(Box<Expr>),
    Not(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Box<Expr>, Vec<(CmpOp, Expr)>),
    Cond {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Option<Box<Expr>>,
    },
    /// A filter (`input | func(args)`) or a global function (`func(input, args)`); `args` holds
    /// one slot per parameter of `func`, bound at parse time.
    Call {
        func: Func,
        input: Box<Expr>,
        args: Vec<Option<Expr>>,
    },
    Test {
        input: Box<Expr>,
        test: TestKind,
        negated: bool,
    },
}

#[derive(Debug, Clone)]
enum Lit {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    FloorDiv,
    Mod,
    Concat,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Mod => "%",
            BinOp::Concat => "~",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
}

impl CmpOp {
    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::In => "in",
            CmpOp::NotIn => "not in",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestKind {
    Defined,
    Undefined,
    None,
    Number,
    String,
    Boolean,
    Integer,
    Float,
    Mapping,
    True,
    False,
}

fn test_by_name(name: &str) -> Option<TestKind> {
    Some(match name {
        "defined" => TestKind::Defined,
        "undefined" => TestKind::Undefined,
        "none" => TestKind::None,
        "number" => TestKind::Number,
        "string" => TestKind::String,
        "boolean" => TestKind::Boolean,
        "integer" => TestKind::Integer,
        "float" => TestKind::Float,
        "mapping" => TestKind::Mapping,
        "true" => TestKind::True,
        "false" => TestKind::False,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Float,
    Int,
    Round,
    String,
    Lower,
    Upper,
    Trim,
    Default,
    Abs,
    Bool,
    JinjaToJson,
    ToJson,
    FromJson,
    Replace,
    Min,
    Max,
    Length,
    Iif,
}

impl Func {
    fn filter(name: &str) -> Option<Func> {
        Some(match name {
            "float" => Func::Float,
            "int" => Func::Int,
            "round" => Func::Round,
            "string" => Func::String,
            "lower" => Func::Lower,
            "upper" => Func::Upper,
            "trim" => Func::Trim,
            "default" | "d" => Func::Default,
            "abs" => Func::Abs,
            "bool" => Func::Bool,
            "tojson" => Func::JinjaToJson,
            "to_json" => Func::ToJson,
            "from_json" => Func::FromJson,
            "replace" => Func::Replace,
            "min" => Func::Min,
            "max" => Func::Max,
            "length" | "count" => Func::Length,
            "iif" => Func::Iif,
            _ => return None,
        })
    }

    /// Home Assistant's global functions of this subset.
    fn global(name: &str) -> Option<Func> {
        Some(match name {
            "float" => Func::Float,
            "int" => Func::Int,
            "bool" => Func::Bool,
            "iif" => Func::Iif,
            "min" => Func::Min,
            "max" => Func::Max,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Func::Float => "float",
            Func::Int => "int",
            Func::Round => "round",
            Func::String => "string",
            Func::Lower => "lower",
            Func::Upper => "upper",
            Func::Trim => "trim",
            Func::Default => "default",
            Func::Abs => "abs",
            Func::Bool => "bool",
            Func::JinjaToJson => "tojson",
            Func::ToJson => "to_json",
            Func::FromJson => "from_json",
            Func::Replace => "replace",
            Func::Min => "min",
            Func::Max => "max",
            Func::Length => "length",
            Func::Iif => "iif",
        }
    }

    /// The parameters after the input, in order.
    fn params(self) -> &'static [&'static str] {
        match self {
            Func::Float | Func::Bool | Func::FromJson => &["default"],
            Func::Int => &["default", "base"],
            Func::Round => &["precision", "method", "default"],
            Func::String
            | Func::Lower
            | Func::Upper
            | Func::Abs
            | Func::JinjaToJson
            | Func::Length => &[],
            Func::Trim => &["chars"],
            Func::Default => &["default_value", "boolean"],
            Func::ToJson => &["ensure_ascii", "pretty_print", "sort_keys"],
            Func::Replace => &["old", "new", "count"],
            Func::Min | Func::Max => &["case_sensitive", "attribute"],
            Func::Iif => &["if_true", "if_false", "if_none"],
        }
    }

    /// How many of [`Func::params`] are required.
    fn required(self) -> usize {
        match self {
            Func::Replace => 2,
            _ => 0,
        }
    }
}

fn syntax(offset: usize, message: impl Into<String>) -> TemplateError {
    TemplateError::Syntax {
        offset,
        message: message.into(),
    }
}

fn unsupported(what: impl Into<String>) -> TemplateError {
    TemplateError::Unsupported(what.into())
}

/// `text` shortened to [`MAX_ERROR_ECHO_CHARS`] characters.
fn shorten(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(MAX_ERROR_ECHO_CHARS) {
        Some((cut, _)) => Cow::Owned(format!("{}...", &text[..cut])),
        None => Cow::Borrowed(text),
    }
}

fn parse_segments(text: &str) -> Result<Vec<Segment>, TemplateError> {
    let mut segments = Vec::new();
    let mut pos = 0;
    let mut strip_next = false;
    loop {
        let tag = find_tag(text, pos);
        let mut literal = &text[pos..tag.map_or(text.len(), |(at, _)| at)];
        if strip_next {
            literal = literal.trim_start();
        }
        let Some((at, kind)) = tag else {
            push_text(&mut segments, literal);
            return Ok(segments);
        };
        let mut inner = at + 2;
        let strip_before = text[inner..].starts_with('-');
        if strip_before || text[inner..].starts_with('+') {
            inner += 1;
        }
        if strip_before {
            literal = literal.trim_end();
        }
        push_text(&mut segments, literal);
        match kind {
            b'{' => {
                let (tokens, close, end, strip_after) = lex_expression(text, inner)?;
                let mut parser = Parser {
                    tokens: &tokens,
                    pos: 0,
                    depth: 0,
                    end: close,
                };
                let expr = parser.expression()?;
                if let Some(token) = tokens.get(parser.pos) {
                    return Err(syntax(
                        token.offset,
                        format!("unexpected {}, expected `}}}}`", describe(&token.tok)),
                    ));
                }
                segments.push(Segment::Expr(expr));
                pos = end;
                strip_next = strip_after;
            }
            b'#' => {
                let close = text[inner..]
                    .find("#}")
                    .ok_or_else(|| syntax(at, "`{#` is never closed by `#}`"))?;
                strip_next = text[inner..inner + close].ends_with('-');
                pos = inner + close + 2;
            }
            _ => {
                let word: String = text[inner..]
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .take(MAX_ERROR_ECHO_CHARS)
                    .collect();
                return Err(unsupported(format!("the statement `{{% {word} %}}`")));
            }
        }
    }
}

fn push_text(segments: &mut Vec<Segment>, text: &str) {
    if !text.is_empty() {
        segments.push(Segment::Text(text.to_owned()));
    }
}

/// The next `{{`, `{%` or `{#` at or after `from`, with the byte after its `{`.
fn find_tag(text: &str, from: usize) -> Option<(usize, u8)> {
    let bytes = text.as_bytes();
    let mut search = from;
    while let Some(found) = text.get(search..).and_then(|rest| rest.find('{')) {
        let at = search + found;
        match bytes.get(at + 1) {
            Some(&kind @ (b'{' | b'%' | b'#')) => return Some((at, kind)),
            _ => search = at + 1,
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Str(String),
    Int(i64),
    Float(f64),
    Op(&'static str),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    offset: usize,
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Name(name) => format!("`{}`", shorten(name)),
        Tok::Str(_) => "a string".to_owned(),
        Tok::Int(_) | Tok::Float(_) => "a number".to_owned(),
        Tok::Op(op) => format!("`{op}`"),
    }
}

const TWO_CHAR_OPS: [&str; 6] = ["//", "**", "==", "!=", "<=", ">="];
const ONE_CHAR_OPS: [&str; 19] = [
    "+", "-", "*", "/", "%", "~", "<", ">", "(", ")", "[", "]", "{", "}", ".", ",", "|", ":", "=",
];

/// Lexes the expression starting at `pos` up to its `}}` (or `-}}`): the tokens, where the
/// closing tag starts, where it ends, and whether it strips the whitespace after it.
fn lex_expression(
    text: &str,
    mut pos: usize,
) -> Result<(Vec<Token>, usize, usize, bool), TemplateError> {
    let bytes = text.as_bytes();
    let mut tokens: Vec<Token> = Vec::new();
    loop {
        let Some(c) = text.get(pos..).and_then(|rest| rest.chars().next()) else {
            return Err(syntax(pos, "`{{` is never closed by `}}`"));
        };
        if c.is_whitespace() {
            pos += c.len_utf8();
            continue;
        }
        let rest = &text[pos..];
        if rest.starts_with("-}}") {
            return Ok((tokens, pos, pos + 3, true));
        }
        if rest.starts_with("}}") {
            return Ok((tokens, pos, pos + 2, false));
        }
        let start = pos;
        let tok = match c {
            '\'' | '"' => {
                let (value, end) = lex_string(text, pos)?;
                pos = end;
                Tok::Str(value)
            }
            '0'..='9' => {
                let after_dot = matches!(
                    tokens.last(),
                    Some(Token {
                        tok: Tok::Op("."),
                        ..
                    })
                );
                let (tok, end) = lex_number(text, pos, after_dot)?;
                pos = end;
                tok
            }
            'a'..='z' | 'A'..='Z' | '_' => {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(text.len(), |len| pos + len);
                let name = text[pos..end].to_owned();
                pos = end;
                Tok::Name(name)
            }
            _ => {
                let op = TWO_CHAR_OPS
                    .iter()
                    .chain(ONE_CHAR_OPS.iter())
                    .find(|op| rest.starts_with(**op))
                    .ok_or_else(|| {
                        syntax(pos, format!("unexpected character `{}`", c.escape_debug()))
                    })?;
                pos += op.len();
                Tok::Op(op)
            }
        };
        debug_assert!(pos > start && pos <= bytes.len());
        tokens.push(Token { tok, offset: start });
    }
}

/// A string literal (Python's escapes) starting at the quote at `pos`: its value and where it
/// ends.
fn lex_string(text: &str, pos: usize) -> Result<(String, usize), TemplateError> {
    let mut chars = text[pos..].char_indices();
    let Some((_, quote)) = chars.next() else {
        return Err(syntax(pos, "expected a string"));
    };
    let mut value = String::new();
    while let Some((index, c)) = chars.next() {
        if c == quote {
            return Ok((value, pos + index + 1));
        }
        if c != '\\' {
            value.push(c);
            continue;
        }
        let Some((_, escaped)) = chars.next() else {
            break;
        };
        match escaped {
            '\n' => {}
            '\\' | '\'' | '"' => value.push(escaped),
            'n' => value.push('\n'),
            't' => value.push('\t'),
            'r' => value.push('\r'),
            'a' => value.push('\u{7}'),
            'b' => value.push('\u{8}'),
            'f' => value.push('\u{c}'),
            'v' => value.push('\u{b}'),
            'x' | 'u' | 'U' => {
                let len = match escaped {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let mut code = 0u32;
                for _ in 0..len {
                    let digit = chars
                        .next()
                        .and_then(|(_, d)| d.to_digit(16))
                        .ok_or_else(|| syntax(pos + index, "invalid escape in a string"))?;
                    code = code * 16 + digit;
                }
                value.push(
                    char::from_u32(code)
                        .ok_or_else(|| syntax(pos + index, "invalid escape in a string"))?,
                );
            }
            // Python keeps an unknown escape as it is.
            other => {
                value.push('\\');
                value.push(other);
            }
        }
    }
    Err(syntax(pos, "the string is never closed"))
}

/// A number literal starting at `pos`: an integer right after a `.` (`list.0`), else an integer
/// or a float (`1.5`, `1e3`, `1_000`).
fn lex_number(text: &str, pos: usize, after_dot: bool) -> Result<(Tok, usize), TemplateError> {
    let bytes = text.as_bytes();
    let digits_end = |from: usize| {
        let mut end = from;
        while bytes
            .get(end)
            .is_some_and(|b| b.is_ascii_digit() || *b == b'_')
        {
            end += 1;
        }
        end
    };
    let mut end = digits_end(pos);
    let mut is_float = false;
    if !after_dot {
        if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
            end = digits_end(end + 1);
            is_float = true;
        }
        if matches!(bytes.get(end), Some(b'e' | b'E')) {
            let mut exponent = end + 1;
            if matches!(bytes.get(exponent), Some(b'+' | b'-')) {
                exponent += 1;
            }
            if bytes.get(exponent).is_some_and(u8::is_ascii_digit) {
                end = digits_end(exponent);
                is_float = true;
            }
        }
    }
    let literal: String = text[pos..end].chars().filter(|c| *c != '_').collect();
    let tok = if is_float {
        Tok::Float(literal.parse().map_err(|_| syntax(pos, "invalid number"))?)
    } else {
        Tok::Int(
            literal
                .parse()
                .map_err(|_| syntax(pos, "the integer does not fit in 64 bits"))?,
        )
    };
    Ok((tok, end))
}

type ParseResult<T> = Result<T, TemplateError>;

/// A call's positional and keyword arguments.
type CallArgs = (Vec<Expr>, Vec<(String, Expr)>);

/// A recursive descent parser following Jinja2's precedence (lowest first): `if`/`else`, `or`,
/// `and`, `not`, comparisons, `+ -`, `~`, `* / // %`, unary `- +`, then postfix (`.`, `[]`)
/// and filters/tests (`|`, `is`). `depth` counts the nesting of the tree being built, so that
/// neither parsing nor rendering recurses deeper than [`MAX_NESTING`] (plus a constant).
struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
    depth: usize,
    /// Where the closing `}}` is, for errors at the end.
    end: usize,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<&'t Tok> {
        self.tokens.get(self.pos).map(|token| &token.tok)
    }

    fn peek_second(&self) -> Option<&'t Tok> {
        self.tokens.get(self.pos + 1).map(|token| &token.tok)
    }

    fn offset(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map_or(self.end, |token| token.offset)
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(found)) if *found == op)
    }

    fn is_name(&self, name: &str) -> bool {
        matches!(self.peek(), Some(Tok::Name(found)) if found == name)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        let found = self.is_op(op);
        if found {
            self.pos += 1;
        }
        found
    }

    fn eat_name(&mut self, name: &str) -> bool {
        let found = self.is_name(name);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect_op(&mut self, op: &str) -> ParseResult<()> {
        if self.eat_op(op) {
            return Ok(());
        }
        Err(self.unexpected(&format!("`{op}`")))
    }

    fn unexpected(&self, expected: &str) -> TemplateError {
        let found = self
            .peek()
            .map_or_else(|| "the end of the expression".to_owned(), describe);
        syntax(
            self.offset(),
            format!("unexpected {found}, expected {expected}"),
        )
    }

    fn enter(&mut self) -> ParseResult<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(TemplateError::TooDeep { max: MAX_NESTING });
        }
        Ok(())
    }

    fn leave(&mut self, levels: usize) {
        self.depth -= levels;
    }

    fn expression(&mut self) -> ParseResult<Expr> {
        self.enter()?;
        let expr = self.conditional()?;
        self.leave(1);
        Ok(expr)
    }

    fn conditional(&mut self) -> ParseResult<Expr> {
        let mut expr = self.or()?;
        let mut entered = 0;
        while self.eat_name("if") {
            self.enter()?;
            entered += 1;
            let cond = self.or()?;
            let otherwise = if self.eat_name("else") {
                Some(Box::new(self.conditional()?))
            } else {
                None
            };
            expr = Expr::Cond {
                cond: Box::new(cond),
                then: Box::new(expr),
                otherwise,
            };
        }
        self.leave(entered);
        Ok(expr)
    }

    fn or(&mut self) -> ParseResult<Expr> {
        let mut left = self.and()?;
        let mut entered = 0;
        while self.eat_name("or") {
            self.enter()?;
            entered += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        self.leave(entered);
        Ok(left)
    }

    fn and(&mut self) -> ParseResult<Expr> {
        let mut left = self.not()?;
        let mut entered = 0;
        while self.eat_name("and") {
            self.enter()?;
            entered += 1;
            let right = self.not()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        self.leave(entered);
        Ok(left)
    }

    fn not(&mut self) -> ParseResult<Expr> {
        if self.eat_name("not") {
            self.enter()?;
            let operand = self.not()?;
            self.leave(1);
            return Ok(Expr::Not(Box::new(operand)));
        }
        self.compare()
    }

    fn compare(&mut self) -> ParseResult<Expr> {
        let first = self.sum()?;
        let mut rest = Vec::new();
        loop {
            let op = match self.peek() {
                Some(Tok::Op("==")) => CmpOp::Eq,
                Some(Tok::Op("!=")) => CmpOp::Ne,
                Some(Tok::Op("<")) => CmpOp::Lt,
                Some(Tok::Op("<=")) => CmpOp::Le,
                Some(Tok::Op(">")) => CmpOp::Gt,
                Some(Tok::Op(">=")) => CmpOp::Ge,
                Some(Tok::Name(name)) if name == "in" => CmpOp::In,
                Some(Tok::Name(name))
                    if name == "not"
                        && matches!(self.peek_second(), Some(Tok::Name(next)) if next == "in") =>
                {
                    self.pos += 1;
                    CmpOp::NotIn
                }
                _ => break,
            };
            self.pos += 1;
            self.enter()?;
            rest.push((op, self.sum()?));
        }
        self.leave(rest.len());
        if rest.is_empty() {
            return Ok(first);
        }
        Ok(Expr::Compare(Box::new(first), rest))
    }

    fn binary_chain(
        &mut self,
        ops: &[(&str, BinOp)],
        operand: fn(&mut Self) -> ParseResult<Expr>,
    ) -> ParseResult<Expr> {
        let mut left = operand(self)?;
        let mut entered = 0;
        while let Some(op) = ops
            .iter()
            .find(|(symbol, _)| self.is_op(symbol))
            .map(|(_, op)| *op)
        {
            self.pos += 1;
            self.enter()?;
            entered += 1;
            let right = operand(self)?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
        self.leave(entered);
        Ok(left)
    }

    fn sum(&mut self) -> ParseResult<Expr> {
        self.binary_chain(&[("+", BinOp::Add), ("-", BinOp::Sub)], Self::concat)
    }

    fn concat(&mut self) -> ParseResult<Expr> {
        self.binary_chain(&[("~", BinOp::Concat)], Self::product)
    }

    fn product(&mut self) -> ParseResult<Expr> {
        self.binary_chain(
            &[
                ("*", BinOp::Mul),
                ("/", BinOp::Div),
                ("//", BinOp::FloorDiv),
                ("%", BinOp::Mod),
            ],
            Self::power,
        )
    }

    fn power(&mut self) -> ParseResult<Expr> {
        let operand = self.unary(true)?;
        if self.is_op("**") {
            return Err(unsupported("the operator `**`"));
        }
        Ok(operand)
    }

    fn unary(&mut self, with_filters: bool) -> ParseResult<Expr> {
        let mut entered = 0;
        let mut node = if self.eat_op("-") {
            self.enter()?;
            entered += 1;
            Expr::Neg(Box::new(self.unary(false)?))
        } else if self.eat_op("+") {
            self.enter()?;
            entered += 1;
            Expr::Pos(Box::new(self.unary(false)?))
        } else {
            self.primary()?
        };
        node = self.postfix(node, &mut entered)?;
        if with_filters {
            node = self.filters(node, &mut entered)?;
        }
        self.leave(entered);
        Ok(node)
    }

    fn primary(&mut self) -> ParseResult<Expr> {
        let offset = self.offset();
        let Some(tok) = self.peek() else {
            return Err(self.unexpected("an expression"));
        };
        self.pos += 1;
        Ok(match tok {
            Tok::Name(name) => match name.as_str() {
                "true" | "True" => Expr::Lit(Lit::Bool(true)),
                "false" | "False" => Expr::Lit(Lit::Bool(false)),
                "none" | "None" => Expr::Lit(Lit::None),
                "value" => Expr::Value,
                "value_json" => Expr::ValueJson,
                _ if !self.is_op("(")
                    && let Some(known) = COMMAND_VARIABLES.iter().find(|known| **known == name) =>
                {
                    Expr::Named(known)
                }
                "and" | "or" | "not" | "if" | "else" | "in" | "is" => {
                    return Err(syntax(
                        offset,
                        format!("unexpected `{name}`, expected an expression"),
                    ));
                }
                _ if self.is_op("(") => return self.global_call(name),
                _ => return Err(unsupported(format!("the variable `{}`", shorten(name)))),
            },
            Tok::Str(first) => {
                // Adjacent string literals are one, as in Python.
                let mut text = first.clone();
                while let Some(Tok::Str(next)) = self.peek() {
                    text.push_str(next);
                    self.pos += 1;
                }
                Expr::Lit(Lit::Str(text))
            }
            Tok::Int(value) => Expr::Lit(Lit::Int(*value)),
            Tok::Float(value) => Expr::Lit(Lit::Float(*value)),
            Tok::Op("(") => {
                let inner = self.expression()?;
                if self.is_op(",") {
                    return Err(unsupported("tuples"));
                }
                self.expect_op(")")?;
                inner
            }
            Tok::Op("[") => {
                self.enter()?;
                let mut items = Vec::new();
                while !self.eat_op("]") {
                    items.push(self.expression()?);
                    if !self.eat_op(",") {
                        self.expect_op("]")?;
                        break;
                    }
                }
                self.leave(1);
                Expr::List(items)
            }
            Tok::Op("{") => return Err(unsupported("dict literals")),
            Tok::Op(_) => {
                self.pos -= 1;
                return Err(self.unexpected("an expression"));
            }
        })
    }

    fn postfix(&mut self, mut node: Expr, entered: &mut usize) -> ParseResult<Expr> {
        loop {
            if self.eat_op(".") {
                self.enter()?;
                *entered += 1;
                node = match self.peek() {
                    Some(Tok::Name(name)) => {
                        self.pos += 1;
                        if self.is_op("(") {
                            return Err(unsupported(format!(
                                "the method call `.{}()`",
                                shorten(name)
                            )));
                        }
                        Expr::Attr(Box::new(node), name.clone())
                    }
                    Some(Tok::Int(index)) => {
                        self.pos += 1;
                        Expr::Item(Box::new(node), Box::new(Expr::Lit(Lit::Int(*index))))
                    }
                    _ => return Err(self.unexpected("a name after `.`")),
                };
            } else if self.eat_op("[") {
                self.enter()?;
                *entered += 1;
                if self.is_op(":") {
                    return Err(unsupported("slices"));
                }
                let key = self.expression()?;
                if self.is_op(":") {
                    return Err(unsupported("slices"));
                }
                self.expect_op("]")?;
                node = Expr::Item(Box::new(node), Box::new(key));
            } else if self.is_op("(") {
                return Err(unsupported("calling a value"));
            } else {
                return Ok(node);
            }
        }
    }

    fn filters(&mut self, mut node: Expr, entered: &mut usize) -> ParseResult<Expr> {
        loop {
            if self.eat_op("|") {
                self.enter()?;
                *entered += 1;
                let offset = self.offset();
                let name = self.dotted_name("a filter name after `|`")?;
                let func = Func::filter(&name)
                    .ok_or_else(|| unsupported(format!("the filter `{}`", shorten(&name))))?;
                let (positional, keywords) = if self.is_op("(") {
                    self.call_args()?
                } else {
                    (Vec::new(), Vec::new())
                };
                let args = Self::bind(func, offset, positional, keywords)?;
                node = Expr::Call {
                    func,
                    input: Box::new(node),
                    args,
                };
            } else if self.eat_name("is") {
                self.enter()?;
                *entered += 1;
                let negated = self.eat_name("not");
                let name = self.dotted_name("a test name after `is`")?;
                let test = test_by_name(&name)
                    .ok_or_else(|| unsupported(format!("the test `{}`", shorten(&name))))?;
                if self.is_op("(") {
                    return Err(unsupported(format!(
                        "arguments to the test `{}`",
                        shorten(&name)
                    )));
                }
                node = Expr::Test {
                    input: Box::new(node),
                    test,
                    negated,
                };
            } else if self.is_op("(") {
                return Err(unsupported("calling a value"));
            } else {
                return Ok(node);
            }
        }
    }

    fn dotted_name(&mut self, expected: &str) -> ParseResult<String> {
        let Some(Tok::Name(first)) = self.peek() else {
            return Err(self.unexpected(expected));
        };
        self.pos += 1;
        let mut name = first.clone();
        while self.is_op(".") {
            let Some(Tok::Name(next)) = self.peek_second() else {
                break;
            };
            self.pos += 2;
            name.push('.');
            name.push_str(next);
        }
        Ok(name)
    }

    fn global_call(&mut self, name: &str) -> ParseResult<Expr> {
        let func = Func::global(name)
            .ok_or_else(|| unsupported(format!("the function `{}()`", shorten(name))))?;
        let offset = self.offset().saturating_sub(name.len());
        let (mut positional, keywords) = self.call_args()?;
        let input = if matches!(func, Func::Min | Func::Max) && positional.len() > 1 {
            // `max(a, b, c)` is `max([a, b, c])` in Home Assistant.
            Expr::List(std::mem::take(&mut positional))
        } else if positional.is_empty() {
            return Err(syntax(offset, format!("{name}() needs an argument")));
        } else {
            positional.remove(0)
        };
        let args = Self::bind(func, offset, positional, keywords)?;
        Ok(Expr::Call {
            func,
            input: Box::new(input),
            args,
        })
    }

    fn call_args(&mut self) -> ParseResult<CallArgs> {
        self.expect_op("(")?;
        let mut positional = Vec::new();
        let mut keywords = Vec::new();
        while !self.eat_op(")") {
            match (self.peek(), self.peek_second()) {
                (Some(Tok::Name(name)), Some(Tok::Op("="))) => {
                    self.pos += 2;
                    keywords.push((name.clone(), self.expression()?));
                }
                _ => {
                    if !keywords.is_empty() {
                        return Err(syntax(
                            self.offset(),
                            "a positional argument after a keyword argument",
                        ));
                    }
                    positional.push(self.expression()?);
                }
            }
            if !self.eat_op(",") {
                self.expect_op(")")?;
                break;
            }
        }
        Ok((positional, keywords))
    }

    /// Binds arguments to `func`'s parameters (after its input).
    fn bind(
        func: Func,
        offset: usize,
        positional: Vec<Expr>,
        keywords: Vec<(String, Expr)>,
    ) -> ParseResult<Vec<Option<Expr>>> {
        let params = func.params();
        if positional.len() > params.len() {
            return Err(syntax(
                offset,
                format!(
                    "{} takes at most {} argument(s), got {}",
                    func.name(),
                    params.len(),
                    positional.len()
                ),
            ));
        }
        let mut slots: Vec<Option<Expr>> = positional.into_iter().map(Some).collect();
        slots.resize_with(params.len(), || None);
        for (name, value) in keywords {
            let slot = params
                .iter()
                .position(|param| *param == name)
                .and_then(|index| slots.get_mut(index))
                .ok_or_else(|| {
                    syntax(
                        offset,
                        format!("{} has no argument `{}`", func.name(), shorten(&name)),
                    )
                })?;
            if slot.is_some() {
                return Err(syntax(
                    offset,
                    format!("{} got `{name}` twice", func.name()),
                ));
            }
            *slot = Some(value);
        }
        if let Some(missing) = slots
            .iter()
            .zip(params)
            .take(func.required())
            .find(|(slot, _)| slot.is_none())
        {
            return Err(syntax(
                offset,
                format!("{} needs the argument `{}`", func.name(), missing.1),
            ));
        }
        Ok(slots)
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering: values and evaluation.

/// A value while rendering: Python's types as Jinja2 sees them. Lists and dicts stay JSON,
/// borrowed from the variables or owned (parsed by `from_json`, built by a list literal).
#[derive(Debug, Clone)]
enum Val<'a> {
    /// Jinja2's `Undefined`, with what is undefined, for errors.
    Undefined(String),
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    /// Only arrays and objects.
    Json(Cow<'a, Value>),
}

fn from_json_ref(value: &Value) -> Val<'_> {
    match value {
        Value::Null => Val::None,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => number_val(n),
        Value::String(s) => Val::Str(Cow::Borrowed(s)),
        Value::Array(_) | Value::Object(_) => Val::Json(Cow::Borrowed(value)),
    }
}

fn from_json_owned<'a>(value: Value) -> Val<'a> {
    match value {
        Value::Null => Val::None,
        Value::Bool(b) => Val::Bool(b),
        Value::Number(n) => number_val(&n),
        Value::String(s) => Val::Str(Cow::Owned(s)),
        value @ (Value::Array(_) | Value::Object(_)) => Val::Json(Cow::Owned(value)),
    }
}

fn number_val<'a>(number: &Number) -> Val<'a> {
    match number.as_i64() {
        Some(int) => Val::Int(int),
        None => Val::Float(number.as_f64().unwrap_or(f64::NAN)),
    }
}

fn type_name(value: &Val<'_>) -> &'static str {
    match value {
        Val::Undefined(_) => "Undefined",
        Val::None => "NoneType",
        Val::Bool(_) => "bool",
        Val::Int(_) => "int",
        Val::Float(_) => "float",
        Val::Str(_) => "str",
        Val::Json(json) => match json.as_ref() {
            Value::Object(_) => "dict",
            _ => "list",
        },
    }
}

/// A value quoted for an error message, Python-like and shortened.
fn echo(value: &Val<'_>) -> String {
    match value {
        Val::Str(s) => format!("'{}'", shorten(s)),
        Val::Undefined(_) => "Undefined".to_owned(),
        Val::Json(json) => {
            let mut out = String::new();
            match write_json(&mut out, json, ORJSON, 0, &mut Unmetered) {
                Ok(()) => shorten(&out).into_owned(),
                Err(_) => format!("<{}>", type_name(value)),
            }
        }
        other => display_scalar(other),
    }
}

/// Python's `str()` of a scalar (lists and dicts go through [`display`]).
fn display_scalar(value: &Val<'_>) -> String {
    match value {
        Val::Undefined(_) => String::new(),
        Val::None => "None".to_owned(),
        Val::Bool(true) => "True".to_owned(),
        Val::Bool(false) => "False".to_owned(),
        Val::Int(int) => int.to_string(),
        Val::Float(float) => python_float_repr(*float),
        Val::Str(s) => s.to_string(),
        Val::Json(_) => String::new(),
    }
}

/// Python's `repr()` of a float: the shortest digits that read back the same, in positional
/// notation with at least one decimal (`21.0`) when the exponent is in -4..16, else in
/// scientific notation with a signed exponent of at least two digits (`1e+16`, `1.5e-05`).
fn python_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if value == 0.0 {
        return if value.is_sign_negative() {
            "-0.0"
        } else {
            "0.0"
        }
        .to_owned();
    }
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if value < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        if point <= 0 {
            let zeros = "0".repeat(point.unsigned_abs() as usize);
            format!("{sign}0.{zeros}{digits}")
        } else {
            let point = point as usize;
            if point >= digits.len() {
                let zeros = "0".repeat(point - digits.len());
                format!("{sign}{digits}{zeros}.0")
            } else {
                format!("{sign}{}.{}", &digits[..point], &digits[point..])
            }
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{sign}{first}{fraction}e{exponent_sign}{:02}",
            exponent.unsigned_abs()
        )
    }
}

/// No work bound: for quoting a value in an error message, which [`MAX_RENDERED_BYTES`] bounds.
struct Unmetered;

trait Charge {
    fn charge(&mut self, units: usize) -> Result<(), RenderError>;
}

impl Charge for Unmetered {
    fn charge(&mut self, _units: usize) -> Result<(), RenderError> {
        Ok(())
    }
}

struct Ctx<'a> {
    vars: &'a Variables<'a>,
    work: usize,
}

impl Charge for Ctx<'_> {
    fn charge(&mut self, units: usize) -> Result<(), RenderError> {
        self.work = self.work.saturating_add(units);
        if self.work > MAX_RENDER_WORK {
            return Err(RenderError::TooMuchWork {
                max: MAX_RENDER_WORK,
            });
        }
        Ok(())
    }
}

impl<'a> Ctx<'a> {
    fn value(&self) -> Val<'a> {
        match &self.vars.value {
            Source::Payload(payload) => Val::Str(Cow::Borrowed(payload)),
            Source::Value(value) => from_json_ref(value),
        }
    }

    fn value_json(&mut self) -> Result<Option<&'a Value>, RenderError> {
        let vars = self.vars;
        if vars.value_json.get().is_none()
            && let Source::Payload(payload) = &vars.value
        {
            self.charge(payload.len())?;
        }
        Ok(vars
            .value_json
            .get_or_init(|| match &vars.value {
                Source::Payload(payload) => serde_json::from_str(payload).ok(),
                Source::Value(_) => None,
            })
            .as_ref())
    }
}

type RenderResult<T> = Result<T, RenderError>;

fn check_len(len: usize) -> RenderResult<()> {
    if len > MAX_RENDERED_BYTES {
        return Err(RenderError::TooLarge {
            max: MAX_RENDERED_BYTES,
        });
    }
    Ok(())
}

fn push_bounded(out: &mut String, text: &str) -> RenderResult<()> {
    check_len(out.len() + text.len())?;
    out.push_str(text);
    Ok(())
}

fn eval<'a>(expr: &'a Expr, ctx: &mut Ctx<'a>) -> RenderResult<Val<'a>> {
    ctx.charge(1)?;
    Ok(match expr {
        Expr::Lit(lit) => match lit {
            Lit::None => Val::None,
            Lit::Bool(b) => Val::Bool(*b),
            Lit::Int(int) => Val::Int(*int),
            Lit::Float(float) => Val::Float(*float),
            Lit::Str(s) => Val::Str(Cow::Borrowed(s)),
        },
        Expr::List(items) => {
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                list.push(into_json(eval(item, ctx)?)?);
            }
            Val::Json(Cow::Owned(Value::Array(list)))
        }
        Expr::Value => ctx.value(),
        Expr::ValueJson => match ctx.value_json()? {
            Some(json) => from_json_ref(json),
            None => Val::Undefined("'value_json' is undefined".to_owned()),
        },
        Expr::Named(name) => match ctx.vars.named.iter().find(|(defined, _)| defined == name) {
            Some((_, value)) => from_json_ref(value),
            None => Val::Undefined(format!("'{name}' is undefined")),
        },
        Expr::Attr(base, name) => {
            let base = eval(base, ctx)?;
            get_attr(base, name)?
        }
        Expr::Item(base, key) => {
            let base = eval(base, ctx)?;
            let key = eval(key, ctx)?;
            get_item(base, &key, ctx)?
        }
        Expr::Neg(operand) => negate(eval(operand, ctx)?)?,
        Expr::Pos(operand) => match eval(operand, ctx)? {
            Val::Undefined(what) => return Err(RenderError::Undefined(what)),
            Val::Bool(b) => Val::Int(i64::from(b)),
            value @ (Val::Int(_) | Val::Float(_)) => value,
            other => {
                return Err(RenderError::Type(format!(
                    "bad operand type for unary +: '{}'",
                    type_name(&other)
                )));
            }
        },
        Expr::Not(operand) => Val::Bool(!truthy(&eval(operand, ctx)?)),
        Expr::Bin(op, left, right) => {
            let left = eval(left, ctx)?;
            let right = eval(right, ctx)?;
            binary(*op, left, right, ctx)?
        }
        Expr::And(left, right) => {
            let left = eval(left, ctx)?;
            if truthy(&left) {
                eval(right, ctx)?
            } else {
                left
            }
        }
        Expr::Or(left, right) => {
            let left = eval(left, ctx)?;
            if truthy(&left) {
                left
            } else {
                eval(right, ctx)?
            }
        }
        Expr::Compare(first, rest) => {
            let mut left = eval(first, ctx)?;
            for (op, right) in rest {
                let right = eval(right, ctx)?;
                if !compare(*op, &left, &right, ctx)? {
                    return Ok(Val::Bool(false));
                }
                left = right;
            }
            Val::Bool(true)
        }
        Expr::Cond {
            cond,
            then,
            otherwise,
        } => {
            if truthy(&eval(cond, ctx)?) {
                eval(then, ctx)?
            } else if let Some(otherwise) = otherwise {
                eval(otherwise, ctx)?
            } else {
                Val::Undefined("the inline if-expression is false and has no else".to_owned())
            }
        }
        Expr::Call { func, input, args } => {
            let input = eval(input, ctx)?;
            let mut values = Vec::with_capacity(args.len());
            for arg in args {
                values.push(match arg {
                    Some(arg) => Some(eval(arg, ctx)?),
                    None => None,
                });
            }
            apply(*func, input, Args(values), ctx)?
        }
        Expr::Test {
            input,
            test,
            negated,
        } => {
            let value = eval(input, ctx)?;
            Val::Bool(run_test(*test, &value) != *negated)
        }
    })
}

fn into_json(value: Val<'_>) -> RenderResult<Value> {
    Ok(match value {
        Val::Undefined(what) => return Err(RenderError::Undefined(what)),
        Val::None => Value::Null,
        Val::Bool(b) => Value::Bool(b),
        Val::Int(int) => Value::from(int),
        Val::Float(float) => Number::from_f64(float).map_or(Value::Null, Value::Number),
        Val::Str(s) => Value::String(s.into_owned()),
        Val::Json(json) => json.into_owned(),
    })
}

fn truthy(value: &Val<'_>) -> bool {
    match value {
        Val::Undefined(_) | Val::None => false,
        Val::Bool(b) => *b,
        Val::Int(int) => *int != 0,
        Val::Float(float) => *float != 0.0,
        Val::Str(s) => !s.is_empty(),
        Val::Json(json) => match json.as_ref() {
            Value::Array(items) => !items.is_empty(),
            Value::Object(map) => !map.is_empty(),
            _ => true,
        },
    }
}

fn run_test(test: TestKind, value: &Val<'_>) -> bool {
    match test {
        TestKind::Defined => !matches!(value, Val::Undefined(_)),
        TestKind::Undefined => matches!(value, Val::Undefined(_)),
        TestKind::None => matches!(value, Val::None),
        TestKind::Number => matches!(value, Val::Bool(_) | Val::Int(_) | Val::Float(_)),
        TestKind::String => matches!(value, Val::Str(_)),
        TestKind::Boolean => matches!(value, Val::Bool(_)),
        TestKind::Integer => matches!(value, Val::Int(_)),
        TestKind::Float => matches!(value, Val::Float(_)),
        TestKind::Mapping => {
            matches!(value, Val::Json(json) if matches!(json.as_ref(), Value::Object(_)))
        }
        TestKind::True => matches!(value, Val::Bool(true)),
        TestKind::False => matches!(value, Val::Bool(false)),
    }
}

/// `base.name` as Jinja2 reads it: a dict's key, else undefined; an error on undefined.
fn get_attr<'a>(base: Val<'a>, name: &str) -> RenderResult<Val<'a>> {
    let missing = |base: &Val<'_>| {
        Val::Undefined(format!(
            "'{} object' has no attribute '{}'",
            type_name(base),
            shorten(name)
        ))
    };
    Ok(match base {
        Val::Undefined(what) => return Err(RenderError::Undefined(what)),
        Val::Json(Cow::Borrowed(json)) => match json.get(name) {
            Some(found) if json.is_object() => from_json_ref(found),
            _ => missing(&Val::Json(Cow::Borrowed(json))),
        },
        Val::Json(Cow::Owned(Value::Object(mut map))) => match map.swap_remove(name) {
            Some(found) => from_json_owned(found),
            None => missing(&Val::Json(Cow::Owned(Value::Object(map)))),
        },
        other => missing(&other),
    })
}

/// `base[key]` as Jinja2 reads it: a dict's key, a list's or a string's index (negative from the
/// end), else undefined; an error on undefined.
fn get_item<'a>(base: Val<'a>, key: &Val<'_>, ctx: &mut Ctx<'_>) -> RenderResult<Val<'a>> {
    let missing = |base: &Val<'_>| {
        let what = match key {
            Val::Str(name) => format!(
                "'{} object' has no attribute '{}'",
                type_name(base),
                shorten(name)
            ),
            other => format!(
                "'{} object' has no element {}",
                type_name(base),
                echo(other)
            ),
        };
        Val::Undefined(what)
    };
    let index = match key {
        Val::Int(int) => Some(*int),
        Val::Bool(b) => Some(i64::from(*b)),
        _ => None,
    };
    Ok(match (base, key) {
        (Val::Undefined(what), _) => return Err(RenderError::Undefined(what)),
        (Val::Json(json), Val::Str(name)) if json.is_object() => match json {
            Cow::Borrowed(json) => json
                .get(name.as_ref())
                .map_or_else(|| missing(&Val::Json(Cow::Borrowed(json))), from_json_ref),
            Cow::Owned(Value::Object(mut map)) => match map.swap_remove(name.as_ref()) {
                Some(found) => from_json_owned(found),
                None => missing(&Val::Json(Cow::Owned(Value::Object(map)))),
            },
            Cow::Owned(other) => missing(&Val::Json(Cow::Owned(other))),
        },
        (Val::Json(json), _) if json.is_array() && index.is_some() => {
            let len = json.as_array().map_or(0, Vec::len);
            match (python_index(index.unwrap_or(0), len), json) {
                (Some(at), Cow::Borrowed(json)) => json.get(at).map_or(Val::None, from_json_ref),
                (Some(at), Cow::Owned(Value::Array(mut items))) if at < items.len() => {
                    from_json_owned(items.swap_remove(at))
                }
                (_, json) => missing(&Val::Json(json)),
            }
        }
        (Val::Str(s), _) if index.is_some() => {
            ctx.charge(s.len())?;
            let len = s.chars().count();
            match python_index(index.unwrap_or(0), len).and_then(|at| s.chars().nth(at)) {
                Some(c) => Val::Str(Cow::Owned(c.to_string())),
                None => missing(&Val::Str(s)),
            }
        }
        (other, _) => missing(&other),
    })
}

fn python_index(index: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let index = if index < 0 { index + len } else { index };
    if (0..len).contains(&index) {
        usize::try_from(index).ok()
    } else {
        None
    }
}

fn negate(value: Val<'_>) -> RenderResult<Val<'_>> {
    match value {
        Val::Undefined(what) => Err(RenderError::Undefined(what)),
        Val::Bool(b) => Ok(Val::Int(-i64::from(b))),
        Val::Int(int) => int.checked_neg().map(Val::Int).ok_or(RenderError::Overflow),
        Val::Float(float) => Ok(Val::Float(-float)),
        other => Err(RenderError::Type(format!(
            "bad operand type for unary -: '{}'",
            type_name(&other)
        ))),
    }
}

#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(int) => int as f64,
            Num::Float(float) => float,
        }
    }
}

fn num(value: &Val<'_>) -> Option<Num> {
    match value {
        Val::Bool(b) => Some(Num::Int(i64::from(*b))),
        Val::Int(int) => Some(Num::Int(*int)),
        Val::Float(float) => Some(Num::Float(*float)),
        _ => None,
    }
}

fn binary<'a>(
    op: BinOp,
    left: Val<'a>,
    right: Val<'a>,
    ctx: &mut Ctx<'_>,
) -> RenderResult<Val<'a>> {
    if op == BinOp::Concat {
        let mut joined = display(&left, ctx)?.into_owned();
        let right = display(&right, ctx)?;
        push_bounded(&mut joined, &right)?;
        ctx.charge(joined.len())?;
        return Ok(Val::Str(Cow::Owned(joined)));
    }
    for operand in [&left, &right] {
        if let Val::Undefined(what) = operand {
            return Err(RenderError::Undefined(what.clone()));
        }
    }
    if let (Some(a), Some(b)) = (num(&left), num(&right)) {
        return arithmetic(op, a, b);
    }
    match (op, &left, &right) {
        (BinOp::Add, Val::Str(a), Val::Str(b)) => {
            let mut joined = a.to_string();
            push_bounded(&mut joined, b)?;
            ctx.charge(joined.len())?;
            Ok(Val::Str(Cow::Owned(joined)))
        }
        (BinOp::Mul, Val::Str(s), times) | (BinOp::Mul, times, Val::Str(s))
            if matches!(num(times), Some(Num::Int(_))) =>
        {
            let times = match num(times) {
                Some(Num::Int(times)) => usize::try_from(times).unwrap_or(0),
                _ => 0,
            };
            check_len(s.len().saturating_mul(times))?;
            ctx.charge(s.len() * times)?;
            Ok(Val::Str(Cow::Owned(s.repeat(times))))
        }
        _ => Err(RenderError::Type(format!(
            "unsupported operand type(s) for {}: '{}' and '{}'",
            op.symbol(),
            type_name(&left),
            type_name(&right)
        ))),
    }
}

fn arithmetic<'a>(op: BinOp, a: Num, b: Num) -> RenderResult<Val<'a>> {
    if let (Num::Int(x), Num::Int(y)) = (a, b) {
        let result = match op {
            BinOp::Add => x.checked_add(y),
            BinOp::Sub => x.checked_sub(y),
            BinOp::Mul => x.checked_mul(y),
            BinOp::Div => {
                if y == 0 {
                    return Err(RenderError::DivisionByZero);
                }
                return Ok(Val::Float(x as f64 / y as f64));
            }
            BinOp::FloorDiv | BinOp::Mod => {
                if y == 0 {
                    return Err(RenderError::DivisionByZero);
                }
                // Python rounds the quotient toward negative infinity; the remainder takes the
                // divisor's sign.
                let quotient = x.checked_div(y).ok_or(RenderError::Overflow)?;
                let remainder = x.checked_rem(y).unwrap_or(0);
                let adjust = remainder != 0 && (remainder < 0) != (y < 0);
                if op == BinOp::FloorDiv {
                    Some(if adjust { quotient - 1 } else { quotient })
                } else {
                    Some(if adjust { remainder + y } else { remainder })
                }
            }
            BinOp::Concat => None,
        };
        return result.map(Val::Int).ok_or(RenderError::Overflow);
    }
    let (x, y) = (a.as_f64(), b.as_f64());
    Ok(Val::Float(match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => {
            if y == 0.0 {
                return Err(RenderError::DivisionByZero);
            }
            x / y
        }
        BinOp::FloorDiv | BinOp::Mod => {
            let (floor_div, modulo) = python_float_divmod(x, y)?;
            if op == BinOp::FloorDiv {
                floor_div
            } else {
                modulo
            }
        }
        BinOp::Concat => f64::NAN,
    }))
}

/// Python's `divmod` of floats (`//` and `%`).
fn python_float_divmod(x: f64, y: f64) -> RenderResult<(f64, f64)> {
    if y == 0.0 {
        return Err(RenderError::DivisionByZero);
    }
    let mut modulo = x % y;
    let mut div = (x - modulo) / y;
    if modulo != 0.0 {
        if (y < 0.0) != (modulo < 0.0) {
            modulo += y;
            div -= 1.0;
        }
    } else {
        modulo = 0.0f64.copysign(y);
    }
    let floor_div = if div != 0.0 {
        let floor = div.floor();
        if div - floor > 0.5 {
            floor + 1.0
        } else {
            floor
        }
    } else {
        0.0f64.copysign(x / y)
    };
    Ok((floor_div, modulo))
}

fn compare(op: CmpOp, left: &Val<'_>, right: &Val<'_>, ctx: &mut Ctx<'_>) -> RenderResult<bool> {
    Ok(match op {
        CmpOp::Eq => equals(left, right, ctx, 0)?,
        CmpOp::Ne => !equals(left, right, ctx, 0)?,
        CmpOp::In => contains(right, left, ctx)?,
        CmpOp::NotIn => !contains(right, left, ctx)?,
        CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => match order(op, left, right)? {
            None => false,
            Some(ordering) => match op {
                CmpOp::Lt => ordering == Ordering::Less,
                CmpOp::Le => ordering != Ordering::Greater,
                CmpOp::Gt => ordering == Ordering::Greater,
                _ => ordering != Ordering::Less,
            },
        },
    })
}

/// Python's ordering of two values; `None` when unordered (NaN).
fn order(op: CmpOp, left: &Val<'_>, right: &Val<'_>) -> RenderResult<Option<Ordering>> {
    for operand in [left, right] {
        if let Val::Undefined(what) = operand {
            return Err(RenderError::Undefined(what.clone()));
        }
    }
    if let (Some(a), Some(b)) = (num(left), num(right)) {
        return Ok(match (a, b) {
            (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
            _ => a.as_f64().partial_cmp(&b.as_f64()),
        });
    }
    match (left, right) {
        (Val::Str(a), Val::Str(b)) => Ok(Some(a.as_ref().cmp(b.as_ref()))),
        _ => Err(RenderError::Type(format!(
            "'{}' not supported between instances of '{}' and '{}'",
            op.symbol(),
            type_name(left),
            type_name(right)
        ))),
    }
}

fn numbers_equal(a: Num, b: Num) -> bool {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x == y,
        (Num::Float(x), Num::Float(y)) => x == y,
        (Num::Int(int), Num::Float(float)) | (Num::Float(float), Num::Int(int)) => {
            // Exactly, as Python compares an int with a float.
            float.fract() == 0.0 && I64_AS_F64.contains(&float) && float as i64 == int
        }
    }
}

/// Python's `==`: numbers by value (`1 == 1.0 == True`), lists and dicts deeply.
fn equals(left: &Val<'_>, right: &Val<'_>, ctx: &mut Ctx<'_>, depth: usize) -> RenderResult<bool> {
    ctx.charge(1)?;
    if depth > MAX_JSON_DEPTH {
        return Err(RenderError::Type("a value is nested too deeply".to_owned()));
    }
    Ok(match (left, right) {
        (Val::Undefined(_), Val::Undefined(_)) | (Val::None, Val::None) => true,
        (Val::Str(a), Val::Str(b)) => {
            ctx.charge(a.len().min(b.len()))?;
            a == b
        }
        (Val::Json(a), Val::Json(b)) => match (a.as_ref(), b.as_ref()) {
            (Value::Array(a), Value::Array(b)) => {
                if a.len() != b.len() {
                    return Ok(false);
                }
                for (x, y) in a.iter().zip(b) {
                    if !equals(&from_json_ref(x), &from_json_ref(y), ctx, depth + 1)? {
                        return Ok(false);
                    }
                }
                true
            }
            (Value::Object(a), Value::Object(b)) => {
                if a.len() != b.len() {
                    return Ok(false);
                }
                for (key, x) in a {
                    let Some(y) = b.get(key) else {
                        return Ok(false);
                    };
                    if !equals(&from_json_ref(x), &from_json_ref(y), ctx, depth + 1)? {
                        return Ok(false);
                    }
                }
                true
            }
            _ => false,
        },
        _ => match (num(left), num(right)) {
            (Some(a), Some(b)) => numbers_equal(a, b),
            _ => false,
        },
    })
}

/// Python's `needle in haystack`.
fn contains(haystack: &Val<'_>, needle: &Val<'_>, ctx: &mut Ctx<'_>) -> RenderResult<bool> {
    match haystack {
        Val::Str(text) => match needle {
            Val::Str(part) => {
                ctx.charge(text.len())?;
                Ok(text.contains(part.as_ref()))
            }
            other => Err(RenderError::Type(format!(
                "'in <string>' requires string as left operand, not {}",
                type_name(other)
            ))),
        },
        Val::Json(json) => match json.as_ref() {
            Value::Array(items) => {
                for item in items {
                    if equals(needle, &from_json_ref(item), ctx, 0)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Value::Object(map) => {
                Ok(matches!(needle, Val::Str(key) if map.contains_key(key.as_ref())))
            }
            _ => Ok(false),
        },
        // Jinja2's Undefined iterates as empty.
        Val::Undefined(_) => Ok(false),
        other => Err(RenderError::Type(format!(
            "argument of type '{}' is not iterable",
            type_name(other)
        ))),
    }
}

/// Python's `str()` of a value, except that lists and dicts are compact JSON.
fn display<'v>(value: &'v Val<'_>, ctx: &mut Ctx<'_>) -> RenderResult<Cow<'v, str>> {
    Ok(match value {
        Val::Str(s) => Cow::Borrowed(s.as_ref()),
        Val::Json(json) => {
            let mut out = String::new();
            write_json(&mut out, json, ORJSON, 0, ctx)?;
            Cow::Owned(out)
        }
        scalar => Cow::Owned(display_scalar(scalar)),
    })
}

// ---------------------------------------------------------------------------------------------
// JSON output: Python's `json.dumps` (Jinja2's `tojson`, Home Assistant's `to_json` with
// `ensure_ascii`) and orjson's (Home Assistant's `to_json`, and how lists and dicts render).

#[derive(Debug, Clone, Copy)]
struct JsonStyle {
    /// Python's `json.dumps`: `", "` and `": "` separators (without indent), floats as Python
    /// prints them, `NaN` and `Infinity`; else orjson's: compact, non-finite floats as `null`.
    python: bool,
    sort_keys: bool,
    ensure_ascii: bool,
    /// Jinja2's `tojson` escapes `<`, `>`, `&` and `'` for HTML.
    html_safe: bool,
    indent: Option<usize>,
}

const ORJSON: JsonStyle = JsonStyle {
    python: false,
    sort_keys: false,
    ensure_ascii: false,
    html_safe: false,
    indent: None,
};

fn write_val_json(
    out: &mut String,
    value: &Val<'_>,
    style: JsonStyle,
    ctx: &mut impl Charge,
) -> RenderResult<()> {
    match value {
        Val::Undefined(_) => Err(RenderError::Type(
            "Object of type Undefined is not JSON serializable".to_owned(),
        )),
        Val::None => push_bounded(out, "null"),
        Val::Bool(b) => push_bounded(out, if *b { "true" } else { "false" }),
        Val::Int(int) => push_bounded(out, &int.to_string()),
        Val::Float(float) => write_float(out, *float, style),
        Val::Str(s) => write_json_string(out, s, style),
        Val::Json(json) => write_json(out, json, style, 0, ctx),
    }
}

fn write_float(out: &mut String, value: f64, style: JsonStyle) -> RenderResult<()> {
    let text = match (style.python, value.is_finite()) {
        (true, true) => python_float_repr(value),
        (true, false) if value.is_nan() => "NaN".to_owned(),
        (true, false) if value > 0.0 => "Infinity".to_owned(),
        (true, false) => "-Infinity".to_owned(),
        (false, true) => {
            Number::from_f64(value).map_or_else(|| "null".to_owned(), |n| n.to_string())
        }
        (false, false) => "null".to_owned(),
    };
    push_bounded(out, &text)
}

fn write_json_string(out: &mut String, text: &str, style: JsonStyle) -> RenderResult<()> {
    check_len(out.len() + text.len() + 2)?;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\'' if style.html_safe => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c if u32::from(c) < 0x20 || (style.ensure_ascii && u32::from(c) >= 0x7f) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
        check_len(out.len())?;
    }
    push_bounded(out, "\"")
}

fn write_newline(out: &mut String, style: JsonStyle, depth: usize) -> RenderResult<()> {
    if let Some(indent) = style.indent {
        check_len(out.len() + 1 + indent * depth)?;
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', indent * depth));
    }
    Ok(())
}

fn write_json(
    out: &mut String,
    value: &Value,
    style: JsonStyle,
    depth: usize,
    ctx: &mut impl Charge,
) -> RenderResult<()> {
    if depth > MAX_JSON_DEPTH {
        return Err(RenderError::Type("a value is nested too deeply".to_owned()));
    }
    let start = out.len();
    let item_separator = if style.python && style.indent.is_none() {
        ", "
    } else {
        ","
    };
    let key_separator = if style.python || style.indent.is_some() {
        ": "
    } else {
        ":"
    };
    match value {
        Value::Array(items) if !items.is_empty() => {
            push_bounded(out, "[")?;
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    push_bounded(out, item_separator)?;
                }
                write_newline(out, style, depth + 1)?;
                write_json(out, item, style, depth + 1, ctx)?;
            }
            write_newline(out, style, depth)?;
            push_bounded(out, "]")?;
        }
        Value::Object(map) if !map.is_empty() => {
            push_bounded(out, "{")?;
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if style.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    push_bounded(out, item_separator)?;
                }
                write_newline(out, style, depth + 1)?;
                write_json_string(out, key, style)?;
                push_bounded(out, key_separator)?;
                write_json(out, item, style, depth + 1, ctx)?;
            }
            write_newline(out, style, depth)?;
            push_bounded(out, "}")?;
        }
        Value::Array(_) => push_bounded(out, "[]")?,
        Value::Object(_) => push_bounded(out, "{}")?,
        scalar => write_val_json(out, &from_json_ref(scalar), style, ctx)?,
    }
    ctx.charge(out.len() - start)
}

// ---------------------------------------------------------------------------------------------
// Filters and functions.

/// The evaluated arguments of a call, one slot per parameter.
struct Args<'a>(Vec<Option<Val<'a>>>);

impl<'a> Args<'a> {
    fn take(&mut self, index: usize) -> Option<Val<'a>> {
        self.0.get_mut(index).and_then(Option::take)
    }
}

fn no_default(filter: &'static str, input: &Val<'_>) -> RenderError {
    RenderError::NoDefault {
        filter,
        input: echo(input),
    }
}

/// Python's `float()`: `None` where it raises `ValueError` or `TypeError`; an error on
/// undefined (Jinja2's Undefined raises its own error, which no filter catches).
fn to_float(value: &Val<'_>) -> RenderResult<Option<f64>> {
    Ok(match value {
        Val::Undefined(what) => return Err(RenderError::Undefined(what.clone())),
        Val::Bool(b) => Some(f64::from(u8::from(*b))),
        Val::Int(int) => Some(*int as f64),
        Val::Float(float) => Some(*float),
        Val::Str(s) => python_parse_float(s),
        Val::None | Val::Json(_) => None,
    })
}

/// Python's `float(str)`: surrounding whitespace, a sign, `inf`/`infinity`/`nan` in any case,
/// and `_` between digits.
fn python_parse_float(text: &str) -> Option<f64> {
    let text = text.trim();
    let cleaned = without_digit_underscores(text)?;
    cleaned.parse().ok()
}

/// `text` without its `_` digit separators; `None` when one is not between two digits.
fn without_digit_underscores(text: &str) -> Option<Cow<'_, str>> {
    if !text.contains('_') {
        return Some(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    for (index, byte) in bytes.iter().enumerate() {
        if *byte == b'_' {
            let before = index.checked_sub(1).and_then(|i| bytes.get(i));
            let after = bytes.get(index + 1);
            if !(before.is_some_and(u8::is_ascii_alphanumeric)
                && after.is_some_and(u8::is_ascii_alphanumeric))
            {
                return None;
            }
        }
    }
    Some(Cow::Owned(text.replace('_', "")))
}

/// Python's `int(str, base)`: `None` where it raises `ValueError`.
fn python_parse_int(text: &str, base: u32) -> Option<RenderResult<i64>> {
    let text = text.trim();
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let prefix = match base {
        16 => ["0x", "0X"],
        8 => ["0o", "0O"],
        2 => ["0b", "0B"],
        _ => ["", ""],
    };
    let digits = prefix
        .iter()
        .filter(|p| !p.is_empty())
        .find_map(|p| unsigned.strip_prefix(p))
        .unwrap_or(unsigned);
    let digits = without_digit_underscores(digits)?;
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(base)) {
        return None;
    }
    let signed = if negative {
        format!("-{digits}")
    } else {
        digits.into_owned()
    };
    Some(i64::from_str_radix(&signed, base).map_err(|_| RenderError::Overflow))
}

/// Python's `int(float)`: `None` for NaN (`ValueError`), an error when infinite or beyond 64
/// bits (Python's `OverflowError`, which no filter catches, or a big integer).
fn float_to_int(value: f64) -> Option<RenderResult<i64>> {
    if value.is_nan() {
        return None;
    }
    let truncated = value.trunc();
    if !I64_AS_F64.contains(&truncated) {
        return Some(Err(RenderError::Overflow));
    }
    Some(Ok(truncated as i64))
}

/// Python's `round(x, ndigits)` for floats: exact decimal rounding, half to even.
fn python_round(value: f64, ndigits: i64) -> f64 {
    if !value.is_finite() || value == 0.0 || ndigits > 323 {
        return value;
    }
    if ndigits < -308 {
        return 0.0 * value;
    }
    if let Ok(ndigits) = usize::try_from(ndigits) {
        return format!("{value:.ndigits$}").parse().unwrap_or(value);
    }
    // A negative ndigits rounds to a multiple of 10^-ndigits: on the exact integer digits.
    let power = ndigits.unsigned_abs() as usize;
    let digits = format!("{:.0}", value.abs().trunc());
    let fraction = value.abs().fract();
    if digits.len() < power {
        return 0.0 * value;
    }
    let (head, tail) = digits.split_at(digits.len() - power);
    let half = format!("5{}", "0".repeat(power - 1));
    let head_is_odd = head
        .bytes()
        .last()
        .is_some_and(|digit| (digit - b'0') % 2 == 1);
    let round_up = match tail.cmp(half.as_str()) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => fraction != 0.0 || head_is_odd,
    };
    let mut head: Vec<u8> = if head.is_empty() {
        b"0".to_vec()
    } else {
        head.as_bytes().to_vec()
    };
    if round_up {
        let mut carry = true;
        for digit in head.iter_mut().rev() {
            if *digit == b'9' {
                *digit = b'0';
            } else {
                *digit += 1;
                carry = false;
                break;
            }
        }
        if carry {
            head.insert(0, b'1');
        }
    }
    let sign = if value < 0.0 { "-" } else { "" };
    let head = String::from_utf8_lossy(&head);
    format!("{sign}{head}e{power}").parse().unwrap_or(value)
}

/// Home Assistant's `bool` (its config validation's boolean): `None` for other input.
fn to_bool(value: &Val<'_>) -> Option<bool> {
    match value {
        Val::Bool(b) => Some(*b),
        Val::Int(int) => Some(*int != 0),
        Val::Float(float) => Some(*float != 0.0),
        Val::Str(s) => match s.trim().to_lowercase().as_str() {
            "1" | "true" | "yes" | "on" | "enable" => Some(true),
            "0" | "false" | "no" | "off" | "disable" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn owned_str<'a>(text: String, ctx: &mut Ctx<'_>) -> RenderResult<Val<'a>> {
    check_len(text.len())?;
    ctx.charge(text.len())?;
    Ok(Val::Str(Cow::Owned(text)))
}

fn apply<'a>(
    func: Func,
    input: Val<'a>,
    mut args: Args<'a>,
    ctx: &mut Ctx<'_>,
) -> RenderResult<Val<'a>> {
    match func {
        Func::Float => match to_float(&input)? {
            Some(float) => Ok(Val::Float(float)),
            None => args.take(0).ok_or_else(|| no_default("float", &input)),
        },
        Func::Int => apply_int(input, args),
        Func::Round => apply_round(input, args),
        Func::String => {
            let text = display(&input, ctx)?.into_owned();
            owned_str(text, ctx)
        }
        Func::Lower => {
            let text = display(&input, ctx)?.to_lowercase();
            owned_str(text, ctx)
        }
        Func::Upper => {
            let text = display(&input, ctx)?.to_uppercase();
            owned_str(text, ctx)
        }
        Func::Trim => {
            let text = display(&input, ctx)?;
            let trimmed = match args.take(0) {
                None | Some(Val::None) => text.trim().to_owned(),
                Some(Val::Str(chars)) => text.trim_matches(|c| chars.contains(c)).to_owned(),
                Some(other) => {
                    return Err(RenderError::Type(format!(
                        "strip arg must be None or str, not {}",
                        type_name(&other)
                    )));
                }
            };
            owned_str(trimmed, ctx)
        }
        Func::Default => {
            let default = args.take(0).unwrap_or(Val::Str(Cow::Borrowed("")));
            let boolean = args.take(1).is_some_and(|b| truthy(&b));
            let replace = matches!(input, Val::Undefined(_)) || (boolean && !truthy(&input));
            Ok(if replace { default } else { input })
        }
        Func::Abs => match input {
            Val::Bool(b) => Ok(Val::Int(i64::from(b))),
            Val::Int(int) => int.checked_abs().map(Val::Int).ok_or(RenderError::Overflow),
            Val::Float(float) => Ok(Val::Float(float.abs())),
            other => Err(RenderError::Type(format!(
                "bad operand type for abs(): '{}'",
                type_name(&other)
            ))),
        },
        Func::Bool => match to_bool(&input) {
            Some(b) => Ok(Val::Bool(b)),
            None => args.take(0).ok_or_else(|| no_default("bool", &input)),
        },
        Func::JinjaToJson => {
            let style = JsonStyle {
                python: true,
                sort_keys: true,
                ensure_ascii: true,
                html_safe: true,
                indent: None,
            };
            let mut out = String::new();
            write_val_json(&mut out, &input, style, ctx)?;
            owned_str(out, ctx)
        }
        Func::ToJson => {
            let ensure_ascii = args.take(0).is_some_and(|v| truthy(&v));
            let pretty = args.take(1).is_some_and(|v| truthy(&v));
            let style = JsonStyle {
                python: ensure_ascii,
                sort_keys: args.take(2).is_some_and(|v| truthy(&v)),
                ensure_ascii,
                html_safe: false,
                indent: pretty.then_some(2),
            };
            let mut out = String::new();
            write_val_json(&mut out, &input, style, ctx)?;
            owned_str(out, ctx)
        }
        Func::FromJson => {
            let parsed = match &input {
                Val::Str(text) => {
                    ctx.charge(text.len())?;
                    serde_json::from_str::<Value>(text).ok()
                }
                _ => None,
            };
            match parsed {
                Some(value) => Ok(from_json_owned(value)),
                None => args.take(0).ok_or_else(|| no_default("from_json", &input)),
            }
        }
        Func::Replace => {
            let text = display(&input, ctx)?.into_owned();
            let old = args.take(0).map_or(Ok(Cow::Borrowed("")), |old| {
                display(&old, ctx).map(|s| Cow::Owned(s.into_owned()))
            })?;
            let new = args.take(1).map_or(Ok(Cow::Borrowed("")), |new| {
                display(&new, ctx).map(|s| Cow::Owned(s.into_owned()))
            })?;
            let limit = match args.take(2) {
                None | Some(Val::None) => usize::MAX,
                Some(Val::Int(count)) => usize::try_from(count).unwrap_or(usize::MAX),
                Some(other) => {
                    return Err(RenderError::Type(format!(
                        "'{}' object cannot be interpreted as an integer",
                        type_name(&other)
                    )));
                }
            };
            ctx.charge(text.len())?;
            let occurrences = if old.is_empty() {
                text.chars().count() + 1
            } else {
                text.matches(old.as_ref()).count()
            }
            .min(limit);
            let len = (text.len() - occurrences * old.len())
                .saturating_add(occurrences.saturating_mul(new.len()));
            check_len(len)?;
            owned_str(text.replacen(old.as_ref(), &new, occurrences), ctx)
        }
        Func::Min | Func::Max => apply_min_max(func, input, args, ctx),
        Func::Length => match &input {
            Val::Str(text) => {
                ctx.charge(text.len())?;
                Ok(Val::Int(
                    i64::try_from(text.chars().count()).unwrap_or(i64::MAX),
                ))
            }
            Val::Json(json) => {
                let len = match json.as_ref() {
                    Value::Array(items) => items.len(),
                    Value::Object(map) => map.len(),
                    _ => 0,
                };
                Ok(Val::Int(i64::try_from(len).unwrap_or(i64::MAX)))
            }
            // Jinja2's Undefined has a length of 0.
            Val::Undefined(_) => Ok(Val::Int(0)),
            other => Err(RenderError::Type(format!(
                "object of type '{}' has no len()",
                type_name(other)
            ))),
        },
        Func::Iif => {
            let if_true = args.take(0).unwrap_or(Val::Bool(true));
            let if_false = args.take(1).unwrap_or(Val::Bool(false));
            if let (Val::None, Some(if_none)) = (&input, args.take(2)) {
                return Ok(if_none);
            }
            Ok(if truthy(&input) { if_true } else { if_false })
        }
    }
}

/// Jinja2's `int` as Home Assistant wraps it: a string in `base` (default 10), else through
/// `float` (`"21.7"` is 21); truncation toward zero.
fn apply_int<'a>(input: Val<'a>, mut args: Args<'a>) -> RenderResult<Val<'a>> {
    let default = args.take(0);
    let base = match args.take(1) {
        None => 10,
        Some(Val::Int(base)) if (2..=36).contains(&base) => base as u32,
        Some(other) => {
            return Err(RenderError::InvalidArgument(format!(
                "int base must be an integer from 2 to 36, not {}",
                echo(&other)
            )));
        }
    };
    let converted = match &input {
        Val::Undefined(what) => return Err(RenderError::Undefined(what.clone())),
        Val::Bool(b) => Some(Ok(i64::from(*b))),
        Val::Int(int) => Some(Ok(*int)),
        Val::Float(float) => float_to_int(*float),
        Val::Str(text) => {
            python_parse_int(text, base).or_else(|| python_parse_float(text).and_then(float_to_int))
        }
        Val::None | Val::Json(_) => None,
    };
    match converted {
        Some(result) => result.map(Val::Int),
        None => default.ok_or_else(|| no_default("int", &input)),
    }
}

/// Home Assistant's `round(precision=0, method="common", default)`: the input through `float`;
/// `common` rounds half to even (Python's `round`), `ceil`, `floor`, `half` (to a multiple of
/// 0.5); an integer when `precision` is 0.
fn apply_round<'a>(input: Val<'a>, mut args: Args<'a>) -> RenderResult<Val<'a>> {
    let precision = args.take(0);
    let method = args.take(1);
    let default = args.take(2);
    let fail = |default: Option<Val<'a>>, input: &Val<'_>| {
        default.ok_or_else(|| no_default("round", input))
    };
    let precision = match precision {
        None => 0,
        Some(Val::Int(precision)) => precision,
        Some(Val::Bool(b)) => i64::from(b),
        Some(_) => return fail(default, &input),
    };
    if precision > 308 {
        // Python's float(10 ** precision) overflows.
        return Err(RenderError::Overflow);
    }
    let multiplier: f64 = format!("1e{precision}").parse().unwrap_or(0.0);
    let Some(value) = to_float(&input)? else {
        return fail(default, &input);
    };
    let method = match &method {
        Some(Val::Str(method)) => method.as_ref(),
        _ => "common",
    };
    let rounded = match method {
        "ceil" | "floor" | "half" => {
            let scaled = if method == "half" {
                value * 2.0
            } else {
                value * multiplier
            };
            if scaled.is_nan() {
                return fail(default, &input);
            }
            if scaled.is_infinite() {
                return Err(RenderError::Overflow);
            }
            match method {
                "ceil" => scaled.ceil() / multiplier,
                "floor" => scaled.floor() / multiplier,
                _ => scaled.round_ties_even() / 2.0,
            }
        }
        _ => python_round(value, precision),
    };
    if precision != 0 {
        return Ok(Val::Float(rounded));
    }
    match float_to_int(rounded) {
        Some(result) => result.map(Val::Int),
        None => fail(default, &input),
    }
}

/// Jinja2's `min`/`max(case_sensitive=False, attribute=None)`: the first smallest/largest item
/// of a list, a string's characters or a dict's keys; undefined when empty.
fn apply_min_max<'a>(
    func: Func,
    input: Val<'a>,
    mut args: Args<'a>,
    ctx: &mut Ctx<'_>,
) -> RenderResult<Val<'a>> {
    let case_sensitive = args.take(0).is_some_and(|v| truthy(&v));
    let attribute = match args.take(1) {
        None | Some(Val::None) => None,
        Some(Val::Str(attribute)) => Some(attribute.into_owned()),
        Some(Val::Int(index)) => Some(index.to_string()),
        Some(other) => {
            return Err(RenderError::InvalidArgument(format!(
                "attribute must be a string, not {}",
                type_name(&other)
            )));
        }
    };
    let items: Vec<Val<'a>> = match input {
        Val::Json(Cow::Borrowed(Value::Array(items))) => items.iter().map(from_json_ref).collect(),
        Val::Json(Cow::Borrowed(Value::Object(map))) => map
            .keys()
            .map(|key| Val::Str(Cow::Borrowed(key.as_str())))
            .collect(),
        Val::Json(Cow::Owned(Value::Array(items))) => {
            items.into_iter().map(from_json_owned).collect()
        }
        Val::Json(Cow::Owned(Value::Object(map))) => map
            .into_iter()
            .map(|(key, _)| Val::Str(Cow::Owned(key)))
            .collect(),
        Val::Str(text) => {
            ctx.charge(text.len())?;
            text.chars()
                .map(|c| Val::Str(Cow::Owned(c.to_string())))
                .collect()
        }
        Val::Undefined(_) => Vec::new(),
        other => {
            return Err(RenderError::Type(format!(
                "'{}' object is not iterable",
                type_name(&other)
            )));
        }
    };
    let key_of = |item: &Val<'a>, ctx: &mut Ctx<'_>| -> RenderResult<Val<'a>> {
        let mut key = item.clone();
        if let Some(attribute) = &attribute {
            for part in attribute.split('.') {
                let part = match part.parse::<i64>() {
                    Ok(index) => Val::Int(index),
                    Err(_) => Val::Str(Cow::Owned(part.to_owned())),
                };
                key = get_item(key, &part, ctx)?;
            }
        }
        Ok(match key {
            Val::Str(s) if !case_sensitive => Val::Str(Cow::Owned(s.to_lowercase())),
            other => other,
        })
    };
    let wanted = if func == Func::Min {
        Ordering::Less
    } else {
        Ordering::Greater
    };
    let mut best: Option<(Val<'a>, Val<'a>)> = None;
    for item in items {
        ctx.charge(1)?;
        let key = key_of(&item, ctx)?;
        let better = match &best {
            None => true,
            Some((_, best_key)) => order(CmpOp::Lt, &key, best_key)? == Some(wanted),
        };
        if better {
            best = Some((item, key));
        }
    }
    Ok(best.map_or_else(
        || Val::Undefined("No aggregated item, sequence was empty.".to_owned()),
        |(item, _)| item,
    ))
}
