//! JSON (and TOML, through serde) form of entries, used by the REST API and config files.
//!
//! Values are read according to the width of the field or parameter they fill:
//!
//! | input                              | accepted for                      |
//! |------------------------------------|-----------------------------------|
//! | JSON number, `true`/`false`        | any width                         |
//! | `"1234"`, `"0x4d2"`, `"0b101"`     | any width                         |
//! | `"192.168.12.2"` (dotted quad)     | 32-bit                            |
//! | `"02:42:c0:a8:0c:02"` (or `-`)     | 48-bit                            |
//! | `"2001:db8::1"` (IPv6 text)        | 128-bit                           |
//!
//! Key fields by match kind:
//! - exact: a value;
//! - lpm: `"10.0.0.0/8"`, `{"value": .., "prefix_len": ..}`, or a value (full length);
//!   omitted = wildcard (`/0`);
//! - ternary: `{"value": .., "mask": ..}`, `"value&&&mask"` (p4runtime-shell style),
//!   `"10.0.0.0/8"` (prefix mask), or a value (all-ones mask); omitted = wildcard.
//!
//! Output is rendered by width only (simple and predictable): 32-bit as dotted quad, 48-bit as
//! MAC, 128-bit as IPv6 text, other widths as JSON numbers (as `"0x.."` strings above
//! `u64::MAX`). Lpm renders as `"value/len"` for those address widths and as
//! `{"value", "prefix_len"}` otherwise; ternary always as `{"value", "mask"}`. Every output
//! parses back to the same entry.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::entry::{EntrySpec, FieldMatch};
use crate::error::{Result, TableError};
use crate::schema::{ActionCall, KeyField, MatchKind, ProfileRef, prefix_mask, width_mask};
use crate::table::Table;

/// `EntryJson::action` of an entry that refers to a selector group; its `params` hold the
/// group id as `"id"`. On the wire (JSON/TOML) such an entry is written `"group": <id>`
/// instead of `action`/`params`. `$` cannot start a P4 action name, so it never collides.
pub const GROUP_REF: &str = "$group";
/// `EntryJson::action` of an entry that refers to one action-profile member (wire form
/// `"member": <id>`).
pub const MEMBER_REF: &str = "$member";

/// An entry as the REST API and config files spell it.
///
/// On the wire an entry has exactly one of: `action` (+ `params`), for ordinary tables;
/// `group`, or `member`, for tables with an action selector. In this struct a group or member
/// reference is `action` [`GROUP_REF`] / [`MEMBER_REF`] with the id as param `"id"` (see
/// [`EntryJson::group`]), which keeps the struct one shape for every table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "EntryWire", into = "EntryWire")]
pub struct EntryJson {
    /// Key field name -> match (see module docs for formats).
    pub key: Map<String, Value>,
    /// Action name (or [`GROUP_REF`] / [`MEMBER_REF`]).
    pub action: String,
    /// Parameter name -> value.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Priority (ternary tables only; higher wins).
    #[serde(default)]
    pub priority: i32,
}

/// The wire form of [`EntryJson`].
#[derive(Serialize, Deserialize)]
struct EntryWire {
    key: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    member: Option<u32>,
    #[serde(default)]
    priority: i32,
}

impl TryFrom<EntryWire> for EntryJson {
    type Error = String;
    fn try_from(w: EntryWire) -> std::result::Result<Self, String> {
        let (action, params) = match (w.action, w.group, w.member) {
            (Some(a), None, None) => (a, w.params.unwrap_or_default()),
            (None, Some(id), None) | (None, None, Some(id)) => {
                if w.params.as_ref().is_some_and(|p| !p.is_empty()) {
                    return Err(
                        "`params` belong to an action; an entry with `group` or `member` takes none"
                            .into(),
                    );
                }
                let r = if w.group.is_some() {
                    GROUP_REF
                } else {
                    MEMBER_REF
                };
                (r.to_owned(), Map::from_iter([("id".to_owned(), id.into())]))
            }
            (None, None, None) => {
                return Err(
                    "missing field `action` (or `group` / `member` for a table with an action selector)"
                        .into(),
                );
            }
            _ => {
                return Err("give exactly one of `action`, `group` and `member`".into());
            }
        };
        Ok(EntryJson {
            key: w.key,
            action,
            params,
            priority: w.priority,
        })
    }
}

impl From<EntryJson> for EntryWire {
    fn from(e: EntryJson) -> Self {
        let id = e.ref_id();
        let mut w = EntryWire {
            key: e.key,
            action: None,
            params: None,
            group: None,
            member: None,
            priority: e.priority,
        };
        match (e.action.as_str(), id) {
            (GROUP_REF, Some(id)) => w.group = Some(id),
            (MEMBER_REF, Some(id)) => w.member = Some(id),
            _ => {
                w.action = Some(e.action);
                w.params = Some(e.params);
            }
        }
        w
    }
}

impl EntryJson {
    /// An entry of a selector table pointing `key` at group `id`.
    pub fn group(key: Map<String, Value>, id: u32) -> EntryJson {
        EntryJson {
            key,
            action: GROUP_REF.into(),
            params: Map::from_iter([("id".to_owned(), id.into())]),
            priority: 0,
        }
    }

    /// An entry of a selector table pointing `key` at member `id`.
    pub fn member(key: Map<String, Value>, id: u32) -> EntryJson {
        EntryJson {
            key,
            action: MEMBER_REF.into(),
            params: Map::from_iter([("id".to_owned(), id.into())]),
            priority: 0,
        }
    }

    /// The group or member id of a reference entry (None for a direct action).
    fn ref_id(&self) -> Option<u32> {
        if self.action != GROUP_REF && self.action != MEMBER_REF {
            return None;
        }
        self.params
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
    }

    /// The group or member this entry refers to, if it is a reference entry.
    pub fn profile_ref(&self) -> Option<ProfileRef> {
        let id = self.ref_id()?;
        Some(if self.action == GROUP_REF {
            ProfileRef::Group(id)
        } else {
            ProfileRef::Member(id)
        })
    }
}

/// An action-profile member as the REST API and config files spell it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberJson {
    /// Member id (any u32, chosen by the client as in P4Runtime).
    pub id: u32,
    /// Action name (one of the table's actions).
    pub action: String,
    /// Parameter name -> value.
    #[serde(default)]
    pub params: Map<String, Value>,
}

/// A selector group as the REST API and config files spell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupJson {
    /// Group id (any u32, chosen by the client).
    pub id: u32,
    /// Member ids, in the order the hash indexes them.
    #[serde(default)]
    pub members: Vec<u32>,
}

/// Renders `v` for a `bits`-wide field as text (dotted quad, MAC, IPv6 or decimal).
pub fn format_value(bits: u16, v: u128) -> String {
    match bits {
        32 => Ipv4Addr::from((v & 0xffff_ffff) as u32).to_string(),
        48 => {
            let b = (v as u64).to_be_bytes();
            format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                b[2], b[3], b[4], b[5], b[6], b[7]
            )
        }
        128 => Ipv6Addr::from(v).to_string(),
        _ => v.to_string(),
    }
}

/// Renders a match as text: `v`, `v/len` or `v&&&mask`.
pub fn format_match(bits: u16, m: &FieldMatch) -> String {
    match *m {
        FieldMatch::Exact(v) => format_value(bits, v),
        FieldMatch::Lpm { value, prefix_len } => {
            format!("{}/{}", format_value(bits, value), prefix_len)
        }
        FieldMatch::Ternary { value, mask } => {
            format!(
                "{}&&&{}",
                format_value(bits, value),
                format_value(bits, mask)
            )
        }
    }
}

/// JSON form of a value of a `bits`-wide field or parameter.
pub fn value_to_json(bits: u16, v: u128) -> Value {
    match bits {
        32 | 48 | 128 => Value::String(format_value(bits, v)),
        _ => match u64::try_from(v) {
            Ok(n) => Value::from(n),
            Err(_) => Value::String(format!("{v:#x}")),
        },
    }
}

fn parse_mac(s: &str) -> Option<u128> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut v = 0u128;
    for p in parts {
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        v = (v << 8) | u128::from(u8::from_str_radix(p, 16).ok()?);
    }
    Some(v)
}

fn parse_int(s: &str) -> Option<u128> {
    let s = s.replace('_', "");
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u128::from_str_radix(h, 16).ok()
    } else if let Some(b) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        u128::from_str_radix(b, 2).ok()
    } else if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// Parses a value as text for a `bits`-wide field; the error says what was expected.
pub fn parse_value_str(bits: u16, s: &str) -> std::result::Result<u128, String> {
    let s = s.trim();
    let v = if bits == 32 && s.contains('.') {
        s.parse::<Ipv4Addr>()
            .map(|a| u128::from(u32::from(a)))
            .map_err(|_| format!("{s:?} is not an IPv4 address"))?
    } else if bits == 48 && (s.contains(':') || s.contains('-')) {
        parse_mac(s).ok_or_else(|| format!("{s:?} is not a MAC address"))?
    } else if bits == 128 && s.contains(':') {
        s.parse::<Ipv6Addr>()
            .map(u128::from)
            .map_err(|_| format!("{s:?} is not an IPv6 address"))?
    } else {
        let alt = match bits {
            32 => ", 0x-hex or dotted IPv4",
            48 => ", 0x-hex or MAC",
            128 => ", 0x-hex or IPv6",
            _ => " or 0x-hex",
        };
        parse_int(s).ok_or_else(|| format!("{s:?} is not a number (decimal{alt})"))?
    };
    check_width(bits, v)
}

fn check_width(bits: u16, v: u128) -> std::result::Result<u128, String> {
    if v & !width_mask(bits) != 0 {
        Err(format!("value {v:#x} does not fit in {bits} bits"))
    } else {
        Ok(v)
    }
}

/// Parses a JSON value for a `bits`-wide field or parameter.
pub fn parse_value(bits: u16, v: &Value) -> std::result::Result<u128, String> {
    match v {
        Value::String(s) => parse_value_str(bits, s),
        Value::Number(n) => match n.as_u64() {
            Some(u) => check_width(bits, u128::from(u)),
            None if n.as_i64().is_some() => Err(format!("{n} is negative")),
            None => Err(format!("{n} is not an integer")),
        },
        Value::Bool(b) => Ok(u128::from(*b)),
        other => Err(format!("expected a number or string, got {other}")),
    }
}

fn parse_prefix_str(f: &KeyField, s: &str) -> std::result::Result<Option<(u128, u16)>, String> {
    let Some((v, len)) = s.rsplit_once('/') else {
        return Ok(None);
    };
    let value = parse_value_str(f.bits, v)?;
    let len: u16 = len
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: prefix length {len:?} is not a number"))?;
    if len > f.bits {
        return Err(format!(
            "{s:?}: prefix length {len} exceeds {} bits",
            f.bits
        ));
    }
    if value & !prefix_mask(f.bits, len) != 0 {
        return Err(format!(
            "{s:?} has bits set beyond the /{len} prefix (did you mean {}/{len}?)",
            format_value(f.bits, value & prefix_mask(f.bits, len))
        ));
    }
    Ok(Some((value, len)))
}

fn obj_field<'a>(
    o: &'a Map<String, Value>,
    name: &str,
    allowed: &[&str],
) -> std::result::Result<&'a Value, String> {
    if let Some(extra) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "unexpected member {extra:?} (expected {})",
            allowed.join(", ")
        ));
    }
    o.get(name)
        .ok_or_else(|| format!("missing member {name:?}"))
}

/// Parses the JSON match of one key field.
pub fn parse_match(f: &KeyField, v: &Value) -> std::result::Result<FieldMatch, String> {
    match (f.kind, v) {
        (MatchKind::Exact, Value::Object(_)) => {
            Err("exact field takes a plain value, not an object".into())
        }
        (MatchKind::Exact, _) => Ok(FieldMatch::Exact(parse_value(f.bits, v)?)),
        (MatchKind::Lpm, Value::Object(o)) => {
            let allowed = ["value", "prefix_len"];
            let value = parse_value(f.bits, obj_field(o, "value", &allowed)?)?;
            let len = obj_field(o, "prefix_len", &allowed)?;
            let len = len
                .as_u64()
                .and_then(|l| u16::try_from(l).ok())
                .filter(|&l| l <= f.bits)
                .ok_or_else(|| format!("prefix_len {len} is not in 0..={}", f.bits))?;
            if value & !prefix_mask(f.bits, len) != 0 {
                return Err(format!(
                    "value {} has bits set beyond prefix length {len}",
                    format_value(f.bits, value)
                ));
            }
            Ok(FieldMatch::Lpm {
                value,
                prefix_len: len,
            })
        }
        (MatchKind::Lpm, Value::String(s)) => match parse_prefix_str(f, s)? {
            Some((value, prefix_len)) => Ok(FieldMatch::Lpm { value, prefix_len }),
            None => Ok(FieldMatch::Lpm {
                value: parse_value_str(f.bits, s)?,
                prefix_len: f.bits,
            }),
        },
        (MatchKind::Lpm, _) => Ok(FieldMatch::Lpm {
            value: parse_value(f.bits, v)?,
            prefix_len: f.bits,
        }),
        (MatchKind::Ternary, Value::Object(o)) => {
            let allowed = ["value", "mask"];
            let value = parse_value(f.bits, obj_field(o, "value", &allowed)?)?;
            let mask = parse_value(f.bits, obj_field(o, "mask", &allowed)?)?;
            ternary(f, value, mask)
        }
        (MatchKind::Ternary, Value::String(s)) => {
            if let Some((v, m)) = s.split_once("&&&") {
                let value = parse_value_str(f.bits, v)?;
                let mask = parse_value_str(f.bits, m)?;
                ternary(f, value, mask)
            } else if let Some((value, len)) = parse_prefix_str(f, s)? {
                ternary(f, value, prefix_mask(f.bits, len))
            } else {
                ternary(f, parse_value_str(f.bits, s)?, f.full_mask())
            }
        }
        (MatchKind::Ternary, _) => ternary(f, parse_value(f.bits, v)?, f.full_mask()),
    }
}

fn ternary(f: &KeyField, value: u128, mask: u128) -> std::result::Result<FieldMatch, String> {
    if value & !mask != 0 {
        return Err(format!(
            "value {} has bits outside mask {}",
            format_value(f.bits, value),
            format_value(f.bits, mask)
        ));
    }
    Ok(FieldMatch::Ternary { value, mask })
}

/// JSON form of one key field's match (see module docs).
pub fn match_to_json(f: &KeyField, m: &FieldMatch) -> Value {
    match *m {
        FieldMatch::Exact(v) => value_to_json(f.bits, v),
        FieldMatch::Lpm { value, prefix_len } => match f.bits {
            32 | 48 | 128 => Value::String(format!("{}/{prefix_len}", format_value(f.bits, value))),
            _ => {
                serde_json::json!({"value": value_to_json(f.bits, value), "prefix_len": prefix_len})
            }
        },
        FieldMatch::Ternary { value, mask } => serde_json::json!({
            "value": value_to_json(f.bits, value),
            "mask": value_to_json(f.bits, mask),
        }),
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

impl Table {
    /// Parses a JSON key (field name -> match). Exact fields are required; omitted lpm and
    /// ternary fields are wildcards. The result is checked and canonical.
    pub fn key_from_json(&self, key: &Map<String, Value>) -> Result<Vec<FieldMatch>> {
        let s = self.schema();
        if let Some(unknown) = key.keys().find(|k| s.key_index(k).is_none()) {
            return Err(TableError::UnknownKeyField {
                table: s.name.clone(),
                field: unknown.clone(),
                known: names(s.keys.iter().map(|k| k.name.as_str())),
            });
        }
        let mut out = Vec::with_capacity(s.keys.len());
        for f in &s.keys {
            let m = match key.get(&f.name) {
                Some(v) => parse_match(f, v).map_err(|message| TableError::BadJson {
                    table: s.name.clone(),
                    location: format!("key field '{}'", f.name),
                    message,
                })?,
                None => match f.kind {
                    MatchKind::Exact => {
                        return Err(TableError::MissingKeyField {
                            table: s.name.clone(),
                            field: f.name.clone(),
                        });
                    }
                    MatchKind::Lpm => FieldMatch::Lpm {
                        value: 0,
                        prefix_len: 0,
                    },
                    MatchKind::Ternary => FieldMatch::Ternary { value: 0, mask: 0 },
                },
            };
            out.push(m);
        }
        s.canonical_key(&out)
    }

    /// Parses an action by name with named JSON parameters.
    pub fn action_from_json(&self, name: &str, params: &Map<String, Value>) -> Result<ActionCall> {
        let s = self.schema();
        let id = s.action_id(name).ok_or_else(|| TableError::UnknownAction {
            table: s.name.clone(),
            action: name.to_owned(),
            known: names(s.actions.iter().map(|a| a.name.as_str())),
        })?;
        let action = &s.actions[usize::from(id.0)];
        if let Some(unknown) = params
            .keys()
            .find(|k| !action.params.iter().any(|p| &p.name == *k))
        {
            return Err(TableError::UnknownParam {
                table: s.name.clone(),
                action: name.to_owned(),
                param: unknown.clone(),
                known: names(action.params.iter().map(|p| p.name.as_str())),
            });
        }
        let mut call = ActionCall::new(id, []);
        for p in &action.params {
            let v = params
                .get(&p.name)
                .ok_or_else(|| TableError::MissingParam {
                    table: s.name.clone(),
                    action: name.to_owned(),
                    param: p.name.clone(),
                })?;
            let v = parse_value(p.bits, v).map_err(|message| TableError::BadJson {
                table: s.name.clone(),
                location: format!("action '{name}' parameter '{}'", p.name),
                message,
            })?;
            call.params.push(v);
        }
        Ok(call)
    }

    /// Parses a whole entry; the result is checked against the schema (whether a group or
    /// member it refers to exists is checked when it is written).
    pub fn entry_from_json(&self, e: &EntryJson) -> Result<EntrySpec> {
        let key = self.key_from_json(&e.key)?;
        let action = if e.action == GROUP_REF || e.action == MEMBER_REF {
            let what = if e.action == GROUP_REF {
                "group"
            } else {
                "member"
            };
            let id = e.ref_id().ok_or_else(|| TableError::BadJson {
                table: self.name().to_owned(),
                location: what.into(),
                message: format!("{what} id must be a number in 0..=4294967295"),
            })?;
            if e.action == GROUP_REF {
                ActionCall::group(id)
            } else {
                ActionCall::member(id)
            }
        } else {
            self.action_from_json(&e.action, &e.params)?
        };
        self.check_spec(&EntrySpec {
            key,
            priority: e.priority,
            action,
        })
    }

    /// Parses a member: (id, direct action call).
    pub fn member_from_json(&self, m: &MemberJson) -> Result<(u32, ActionCall)> {
        if self.selector_schema().is_none() {
            return Err(TableError::NotASelector {
                table: self.name().to_owned(),
            });
        }
        Ok((m.id, self.action_from_json(&m.action, &m.params)?))
    }

    /// JSON form of member `id`.
    pub fn member_to_json(&self, id: u32, a: &ActionCall) -> MemberJson {
        let (action, params) = self.action_to_json(a);
        MemberJson { id, action, params }
    }

    /// JSON form of a key (one member per field).
    pub fn key_to_json(&self, key: &[FieldMatch]) -> Map<String, Value> {
        self.schema()
            .keys
            .iter()
            .zip(key)
            .map(|(f, m)| (f.name.clone(), match_to_json(f, m)))
            .collect()
    }

    /// JSON form of an action call: (action name, params). Unknown ids render as `#id`;
    /// group and member references as [`GROUP_REF`] / [`MEMBER_REF`] with param `"id"`.
    pub fn action_to_json(&self, a: &ActionCall) -> (String, Map<String, Value>) {
        if let Some(r) = a.profile_ref() {
            let (name, id) = match r {
                ProfileRef::Group(id) => (GROUP_REF, id),
                ProfileRef::Member(id) => (MEMBER_REF, id),
            };
            return (
                name.to_owned(),
                Map::from_iter([("id".to_owned(), id.into())]),
            );
        }
        match self.schema().action(a.action) {
            Some(s) => (
                s.name.clone(),
                s.params
                    .iter()
                    .zip(&a.params)
                    .map(|(p, &v)| (p.name.clone(), value_to_json(p.bits, v)))
                    .collect(),
            ),
            None => (format!("#{}", a.action.0), Map::new()),
        }
    }

    /// JSON form of an entry; parses back to the same entry.
    pub fn entry_to_json(&self, e: &EntrySpec) -> EntryJson {
        let (action, params) = self.action_to_json(&e.action);
        EntryJson {
            key: self.key_to_json(&e.key),
            action,
            params,
            priority: e.priority,
        }
    }
}
