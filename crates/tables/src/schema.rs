//! Table schemas: key fields with widths and match kinds, actions with typed parameters,
//! default action and size, close to a P4Info table. A schema is validated once, at
//! [`crate::Table::new`], so the lookup path can trust it (widths 1..=128, at most
//! [`MAX_KEY_FIELDS`] fields).

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::entry::{EntrySpec, FieldMatch};
use crate::error::{Result, TableError};

/// At most this many key fields, so that lookups can pack a key into a stack buffer and never
/// allocate. P4 tables rarely use more than a handful.
pub const MAX_KEY_FIELDS: usize = 16;

/// How a key field is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    /// Value must be equal.
    Exact,
    /// Longest prefix wins.
    Lpm,
    /// Value/mask; entries are ordered by priority.
    Ternary,
}

/// One key field of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyField {
    /// Name as in the P4 program (e.g. "hdr.ipv4.dstAddr" or "dst_addr").
    pub name: String,
    /// Width in bits, 1..=128.
    pub bits: u16,
    /// How it is matched.
    pub kind: MatchKind,
}

impl KeyField {
    /// Exact-match field.
    pub fn exact(name: impl Into<String>, bits: u16) -> Self {
        Self {
            name: name.into(),
            bits,
            kind: MatchKind::Exact,
        }
    }
    /// Longest-prefix-match field.
    pub fn lpm(name: impl Into<String>, bits: u16) -> Self {
        Self {
            name: name.into(),
            bits,
            kind: MatchKind::Lpm,
        }
    }
    /// Ternary (value/mask) field.
    pub fn ternary(name: impl Into<String>, bits: u16) -> Self {
        Self {
            name: name.into(),
            bits,
            kind: MatchKind::Ternary,
        }
    }
    /// All ones over the field's width.
    pub fn full_mask(&self) -> u128 {
        width_mask(self.bits)
    }
}

/// One typed parameter of an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamSchema {
    /// Parameter name as in the P4 program.
    pub name: String,
    /// Width in bits, 1..=128.
    pub bits: u16,
}

impl ParamSchema {
    /// A parameter of `bits` width.
    pub fn new(name: impl Into<String>, bits: u16) -> Self {
        Self {
            name: name.into(),
            bits,
        }
    }
}

/// An action a table entry may invoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionSchema {
    /// Action name as in the P4 program (e.g. "ipv4_forward", "drop").
    pub name: String,
    /// Parameters in declaration order; [`ActionCall::params`] follows this order.
    pub params: Vec<ParamSchema>,
}

impl ActionSchema {
    /// An action with the given parameters.
    pub fn new(name: impl Into<String>, params: Vec<ParamSchema>) -> Self {
        Self {
            name: name.into(),
            params,
        }
    }
}

/// Index into [`TableSchema::actions`]; the data plane matches on it instead of on names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActionId(pub u16);

impl ActionId {
    /// Reserved id: the entry refers to an action-selector group (param 0 = group id).
    /// Only valid in tables with a [`crate::SelectorSchema`].
    pub const GROUP: ActionId = ActionId(u16::MAX);
    /// Reserved id: the entry refers to one action-profile member (param 0 = member id).
    pub const MEMBER: ActionId = ActionId(u16::MAX - 1);
    /// Highest id a schema action may have (the ids above are reserved).
    pub const MAX_ACTION: u16 = u16::MAX - 2;
}

/// What an entry of a table with an action selector points at instead of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileRef {
    /// A group: the packet gets one of its members' actions, chosen by hash.
    Group(u32),
    /// One member: always its action.
    Member(u32),
}

/// An action with its parameter values, in the order of [`ActionSchema::params`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActionCall {
    /// Which action.
    pub action: ActionId,
    /// Parameter values, each within its declared width.
    pub params: SmallVec<[u128; 4]>,
}

impl ActionCall {
    /// Action `action` with `params`.
    pub fn new(action: ActionId, params: impl IntoIterator<Item = u128>) -> Self {
        Self {
            action,
            params: params.into_iter().collect(),
        }
    }
    /// An entry target referring to group `id` of the table's action selector.
    pub fn group(id: u32) -> Self {
        Self::new(ActionId::GROUP, [u128::from(id)])
    }
    /// An entry target referring to member `id` of the table's action profile.
    pub fn member(id: u32) -> Self {
        Self::new(ActionId::MEMBER, [u128::from(id)])
    }
    /// The group or member this call refers to, when it is not a direct action.
    #[inline]
    pub fn profile_ref(&self) -> Option<ProfileRef> {
        let id = u32::try_from(self.param(0)).unwrap_or(u32::MAX);
        match self.action {
            ActionId::GROUP => Some(ProfileRef::Group(id)),
            ActionId::MEMBER => Some(ProfileRef::Member(id)),
            _ => None,
        }
    }
    /// Parameter `i`, or 0 when absent (validated calls always have every parameter).
    pub fn param(&self, i: usize) -> u128 {
        self.params.get(i).copied().unwrap_or(0)
    }
}

/// Which storage a schema gets; decided by its match kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// All fields exact: one hash map.
    Exact,
    /// One lpm field, others exact: a hash map per prefix length, probed longest-first.
    Lpm,
    /// Any ternary field (or several lpm fields): priority-ordered value/mask list.
    Ternary,
}

/// A table declaration. Validated by [`TableSchema::validate`] (called by `Table::new`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// Table name as in the P4 program (e.g. "MyIngress.ipv4_lpm").
    pub name: String,
    /// Key fields in order; lookups pass one `u128` per field in this order.
    pub keys: Vec<KeyField>,
    /// Actions; [`ActionId`] indexes this list.
    pub actions: Vec<ActionSchema>,
    /// Action taken on a miss.
    pub default_action: ActionCall,
    /// When true, the default action cannot be changed (P4 `const default_action`).
    #[serde(default)]
    pub const_default: bool,
    /// Maximum number of entries, enforced like a hardware table.
    pub size: usize,
}

/// All ones over `bits` (0..=128).
pub(crate) fn width_mask(bits: u16) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

/// Mask selecting the top `prefix_len` bits of a `bits`-wide field.
pub(crate) fn prefix_mask(bits: u16, prefix_len: u16) -> u128 {
    let prefix_len = prefix_len.min(bits);
    width_mask(bits) & !width_mask(bits - prefix_len)
}

impl TableSchema {
    /// Checks widths, name uniqueness, field count and the default action.
    pub fn validate(&self) -> Result<()> {
        let table = || self.name.clone();
        if self.keys.len() > MAX_KEY_FIELDS {
            return Err(TableError::TooManyKeyFields {
                table: table(),
                count: self.keys.len(),
                max: MAX_KEY_FIELDS,
            });
        }
        for (i, k) in self.keys.iter().enumerate() {
            if !(1..=128).contains(&k.bits) {
                return Err(TableError::BadWidth {
                    table: table(),
                    what: "key field".into(),
                    name: k.name.clone(),
                    bits: k.bits,
                });
            }
            if self.keys[..i].iter().any(|o| o.name == k.name) {
                return Err(TableError::DuplicateName {
                    table: table(),
                    what: "key field",
                    name: k.name.clone(),
                });
            }
        }
        if self.actions.is_empty() || self.actions.len() > usize::from(ActionId::MAX_ACTION) + 1 {
            return Err(TableError::NoActions { table: table() });
        }
        for (i, a) in self.actions.iter().enumerate() {
            if self.actions[..i].iter().any(|o| o.name == a.name) {
                return Err(TableError::DuplicateName {
                    table: table(),
                    what: "action",
                    name: a.name.clone(),
                });
            }
            for (j, p) in a.params.iter().enumerate() {
                if !(1..=128).contains(&p.bits) {
                    return Err(TableError::BadWidth {
                        table: table(),
                        what: format!("parameter of action '{}'", a.name),
                        name: p.name.clone(),
                        bits: p.bits,
                    });
                }
                if a.params[..j].iter().any(|o| o.name == p.name) {
                    return Err(TableError::DuplicateName {
                        table: table(),
                        what: "parameter",
                        name: p.name.clone(),
                    });
                }
            }
        }
        self.check_action(&self.default_action)
    }

    /// Storage chosen for this schema's match kinds.
    pub fn storage_kind(&self) -> StorageKind {
        let lpm = self
            .keys
            .iter()
            .filter(|k| k.kind == MatchKind::Lpm)
            .count();
        let ternary = self.keys.iter().any(|k| k.kind == MatchKind::Ternary);
        if ternary || lpm > 1 {
            StorageKind::Ternary
        } else if lpm == 1 {
            StorageKind::Lpm
        } else {
            StorageKind::Exact
        }
    }

    /// Id of the action named `name`.
    pub fn action_id(&self, name: &str) -> Option<ActionId> {
        self.actions
            .iter()
            .position(|a| a.name == name)
            .map(|i| ActionId(i as u16))
    }

    /// The action `id` refers to.
    pub fn action(&self, id: ActionId) -> Option<&ActionSchema> {
        self.actions.get(usize::from(id.0))
    }

    /// Index of the key field named `name`.
    pub fn key_index(&self, name: &str) -> Option<usize> {
        self.keys.iter().position(|k| k.name == name)
    }

    /// Checks an action call: known action, parameter count and widths.
    pub fn check_action(&self, call: &ActionCall) -> Result<()> {
        let action = self
            .action(call.action)
            .ok_or_else(|| TableError::UnknownActionId {
                table: self.name.clone(),
                id: call.action.0,
            })?;
        if call.params.len() != action.params.len() {
            return Err(TableError::ParamCount {
                table: self.name.clone(),
                action: action.name.clone(),
                expected: action.params.len(),
                got: call.params.len(),
            });
        }
        for (p, &v) in action.params.iter().zip(call.params.iter()) {
            if v & !width_mask(p.bits) != 0 {
                return Err(TableError::ParamTooWide {
                    table: self.name.clone(),
                    action: action.name.clone(),
                    param: p.name.clone(),
                    value: v,
                    bits: p.bits,
                });
            }
        }
        Ok(())
    }

    /// Checks a key and returns it in canonical form, one match per field of the field's own
    /// kind: an `Exact` given for an lpm field becomes a full-length prefix, an `Exact` or
    /// `Lpm` given for a ternary field becomes the equivalent value/mask. Anything looser
    /// (a prefix or mask for an exact field, a mask for an lpm field) is refused.
    /// Canonical keys are what entries store, so key identity is plain equality.
    pub fn canonical_key(&self, key: &[FieldMatch]) -> Result<Vec<FieldMatch>> {
        if key.len() != self.keys.len() {
            return Err(TableError::KeyFieldCount {
                table: self.name.clone(),
                expected: self.keys.len(),
                got: key.len(),
            });
        }
        self.keys
            .iter()
            .zip(key)
            .map(|(f, m)| self.canonical_match(f, *m))
            .collect()
    }

    fn canonical_match(&self, f: &KeyField, m: FieldMatch) -> Result<FieldMatch> {
        let table = || self.name.clone();
        let too_wide = |what, value| TableError::ValueTooWide {
            table: table(),
            field: f.name.clone(),
            what,
            value,
            bits: f.bits,
        };
        let full = f.full_mask();
        // First check the match on its own terms.
        match m {
            FieldMatch::Exact(v) => {
                if v & !full != 0 {
                    return Err(too_wide("value", v));
                }
            }
            FieldMatch::Lpm { value, prefix_len } => {
                if prefix_len > f.bits {
                    return Err(TableError::PrefixTooLong {
                        table: table(),
                        field: f.name.clone(),
                        prefix_len,
                        bits: f.bits,
                    });
                }
                if value & !full != 0 {
                    return Err(too_wide("value", value));
                }
                if value & !prefix_mask(f.bits, prefix_len) != 0 {
                    return Err(TableError::HostBitsSet {
                        table: table(),
                        field: f.name.clone(),
                        value,
                        prefix_len,
                    });
                }
            }
            FieldMatch::Ternary { value, mask } => {
                if value & !full != 0 {
                    return Err(too_wide("value", value));
                }
                if mask & !full != 0 {
                    return Err(too_wide("mask", mask));
                }
                if value & !mask != 0 {
                    return Err(TableError::ValueOutsideMask {
                        table: table(),
                        field: f.name.clone(),
                        value,
                        mask,
                    });
                }
            }
        }
        let mismatch = || TableError::MatchKindMismatch {
            table: table(),
            field: f.name.clone(),
            expected: f.kind,
            got: m.kind_name(),
        };
        Ok(match (f.kind, m) {
            (MatchKind::Exact, FieldMatch::Exact(_)) => m,
            (MatchKind::Exact, _) => return Err(mismatch()),
            (MatchKind::Lpm, FieldMatch::Exact(v)) => FieldMatch::Lpm {
                value: v,
                prefix_len: f.bits,
            },
            (MatchKind::Lpm, FieldMatch::Lpm { .. }) => m,
            (MatchKind::Lpm, FieldMatch::Ternary { .. }) => return Err(mismatch()),
            (MatchKind::Ternary, FieldMatch::Exact(v)) => FieldMatch::Ternary {
                value: v,
                mask: full,
            },
            (MatchKind::Ternary, FieldMatch::Lpm { value, prefix_len }) => FieldMatch::Ternary {
                value,
                mask: prefix_mask(f.bits, prefix_len),
            },
            (MatchKind::Ternary, FieldMatch::Ternary { .. }) => m,
        })
    }

    /// Checks a whole entry; returns it with its key in canonical form.
    pub fn check_entry(&self, e: &EntrySpec) -> Result<EntrySpec> {
        let key = self.canonical_key(&e.key)?;
        self.check_action(&e.action)?;
        Ok(EntrySpec {
            key,
            priority: e.priority,
            action: e.action.clone(),
        })
    }

    /// Human-readable key for error messages, e.g. `{dst_addr=10.0.0.0/8, port=3}`.
    pub fn format_key(&self, key: &[FieldMatch]) -> String {
        let mut s = String::from("{");
        for (i, m) in key.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            let (name, bits) = self
                .keys
                .get(i)
                .map(|k| (k.name.as_str(), k.bits))
                .unwrap_or(("?", 128));
            s.push_str(name);
            s.push('=');
            s.push_str(&crate::json::format_match(bits, m));
        }
        s.push('}');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> TableSchema {
        TableSchema {
            name: "t".into(),
            keys: vec![KeyField::lpm("dst", 32), KeyField::exact("vrf", 8)],
            actions: vec![
                ActionSchema::new("fwd", vec![ParamSchema::new("port", 9)]),
                ActionSchema::new("drop", vec![]),
            ],
            default_action: ActionCall::new(ActionId(1), []),
            const_default: false,
            size: 16,
        }
    }

    #[test]
    fn masks() {
        assert_eq!(width_mask(1), 1);
        assert_eq!(width_mask(128), u128::MAX);
        assert_eq!(prefix_mask(32, 8), 0xff00_0000);
        assert_eq!(prefix_mask(32, 0), 0);
        assert_eq!(prefix_mask(32, 32), 0xffff_ffff);
        assert_eq!(prefix_mask(128, 128), u128::MAX);
        assert_eq!(prefix_mask(128, 1), 1u128 << 127);
    }

    #[test]
    fn validate_rejects_bad_schemas() {
        assert!(schema().validate().is_ok());
        let mut s = schema();
        s.keys[1].bits = 0;
        assert!(matches!(
            s.validate(),
            Err(TableError::BadWidth { bits: 0, .. })
        ));
        let mut s = schema();
        s.keys[1].bits = 129;
        assert!(matches!(
            s.validate(),
            Err(TableError::BadWidth { bits: 129, .. })
        ));
        let mut s = schema();
        s.actions[0].params[0].bits = 200;
        let e = s.validate().unwrap_err();
        assert!(e.to_string().contains("parameter of action 'fwd'"), "{e}");
        let mut s = schema();
        s.keys[1].name = "dst".into();
        assert!(matches!(
            s.validate(),
            Err(TableError::DuplicateName {
                what: "key field",
                ..
            })
        ));
        let mut s = schema();
        s.default_action = ActionCall::new(ActionId(7), []);
        assert!(matches!(
            s.validate(),
            Err(TableError::UnknownActionId { id: 7, .. })
        ));
        let mut s = schema();
        s.default_action = ActionCall::new(ActionId(0), []);
        assert!(matches!(
            s.validate(),
            Err(TableError::ParamCount {
                expected: 1,
                got: 0,
                ..
            })
        ));
        let mut s = schema();
        s.default_action = ActionCall::new(ActionId(0), [512]);
        assert!(matches!(
            s.validate(),
            Err(TableError::ParamTooWide {
                value: 512,
                bits: 9,
                ..
            })
        ));
        let mut s = schema();
        s.actions.clear();
        assert!(matches!(s.validate(), Err(TableError::NoActions { .. })));
        let mut s = schema();
        s.keys = (0..17)
            .map(|i| KeyField::exact(format!("k{i}"), 8))
            .collect();
        assert!(matches!(
            s.validate(),
            Err(TableError::TooManyKeyFields { count: 17, .. })
        ));
    }

    #[test]
    fn storage_kind_follows_match_kinds() {
        let mut s = schema();
        assert_eq!(s.storage_kind(), StorageKind::Lpm);
        s.keys[0].kind = MatchKind::Exact;
        assert_eq!(s.storage_kind(), StorageKind::Exact);
        s.keys[1].kind = MatchKind::Ternary;
        assert_eq!(s.storage_kind(), StorageKind::Ternary);
        s.keys[0].kind = MatchKind::Lpm;
        s.keys[1].kind = MatchKind::Lpm;
        assert_eq!(s.storage_kind(), StorageKind::Ternary);
    }

    #[test]
    fn canonical_key_checks_and_normalises() {
        let s = schema();
        let ok = s
            .canonical_key(&[FieldMatch::Exact(0x0a00_0001), FieldMatch::Exact(1)])
            .unwrap();
        assert_eq!(
            ok[0],
            FieldMatch::Lpm {
                value: 0x0a00_0001,
                prefix_len: 32
            }
        );
        let e = s
            .canonical_key(&[
                FieldMatch::Lpm {
                    value: 0x0a00_0001,
                    prefix_len: 8,
                },
                FieldMatch::Exact(1),
            ])
            .unwrap_err();
        assert!(
            matches!(e, TableError::HostBitsSet { prefix_len: 8, .. }),
            "{e}"
        );
        let e = s
            .canonical_key(&[
                FieldMatch::Lpm {
                    value: 0,
                    prefix_len: 33,
                },
                FieldMatch::Exact(1),
            ])
            .unwrap_err();
        assert!(
            matches!(e, TableError::PrefixTooLong { prefix_len: 33, .. }),
            "{e}"
        );
        let e = s
            .canonical_key(&[FieldMatch::Exact(0), FieldMatch::Exact(256)])
            .unwrap_err();
        assert!(e.to_string().contains("key field 'vrf'"), "{e}");
        let e = s
            .canonical_key(&[
                FieldMatch::Exact(0),
                FieldMatch::Lpm {
                    value: 0,
                    prefix_len: 8,
                },
            ])
            .unwrap_err();
        assert!(
            matches!(e, TableError::MatchKindMismatch { ref field, got: "lpm", .. } if field == "vrf"),
            "{e}"
        );
        let e = s.canonical_key(&[FieldMatch::Exact(0)]).unwrap_err();
        assert!(matches!(
            e,
            TableError::KeyFieldCount {
                expected: 2,
                got: 1,
                ..
            }
        ));
    }

    #[test]
    fn ternary_canonical_forms() {
        let mut s = schema();
        s.keys[0].kind = MatchKind::Ternary;
        let k = s
            .canonical_key(&[
                FieldMatch::Lpm {
                    value: 0x0a00_0000,
                    prefix_len: 8,
                },
                FieldMatch::Exact(3),
            ])
            .unwrap();
        assert_eq!(
            k[0],
            FieldMatch::Ternary {
                value: 0x0a00_0000,
                mask: 0xff00_0000
            }
        );
        let e = s
            .canonical_key(&[
                FieldMatch::Ternary {
                    value: 0x0a00_0001,
                    mask: 0xff00_0000,
                },
                FieldMatch::Exact(3),
            ])
            .unwrap_err();
        assert!(matches!(e, TableError::ValueOutsideMask { .. }), "{e}");
    }

    #[test]
    fn schema_serde_names() {
        let v = serde_json::to_value(schema()).unwrap();
        assert_eq!(v["keys"][0]["kind"], "lpm");
        assert_eq!(v["keys"][1]["kind"], "exact");
        assert_eq!(v["default_action"]["action"], 1);
        let back: TableSchema = serde_json::from_value(v).unwrap();
        assert_eq!(back, schema());
    }
}
