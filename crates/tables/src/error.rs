//! The crate's single error type.
//!
//! Every variant names the table it concerns (and the key field, action or parameter where
//! there is one), so a message that reaches a REST client or a log line is actionable on its own.

use crate::schema::MatchKind;

/// Result alias used throughout the crate.
pub type Result<T, E = TableError> = std::result::Result<T, E>;

/// Why a schema, an entry, an operation or a JSON document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    // ----- schema ---------------------------------------------------------------------------
    /// A key field or action parameter width outside `1..=128`.
    #[error("table '{table}': {what} '{name}' has width {bits} bits; widths must be 1..=128")]
    BadWidth {
        table: String,
        /// "key field" or "parameter of action 'x'".
        what: String,
        name: String,
        bits: u16,
    },
    /// Two key fields, two actions or two parameters of one action share a name.
    #[error("table '{table}': duplicate {what} name '{name}'")]
    DuplicateName {
        table: String,
        what: &'static str,
        name: String,
    },
    /// More key fields than the lookup path supports without allocating.
    #[error("table '{table}': {count} key fields; at most {max} are supported")]
    TooManyKeyFields {
        table: String,
        count: usize,
        max: usize,
    },
    /// A table must offer at least one action (its default action).
    #[error("table '{table}': schema declares no actions")]
    NoActions { table: String },

    // ----- entries and actions --------------------------------------------------------------
    /// The table holds `size` entries already, as a hardware table would refuse.
    #[error("table '{table}' is full ({size} entries)")]
    TableFull { table: String, size: usize },
    /// Insert of a key that is already present (use modify).
    #[error("table '{table}': an entry with key {key} already exists")]
    DuplicateKey { table: String, key: String },
    /// Modify or delete of a key that is not present.
    #[error("table '{table}': no entry with key {key}")]
    NoSuchEntry { table: String, key: String },
    /// The key has the wrong number of fields.
    #[error("table '{table}': key has {got} fields, schema has {expected}")]
    KeyFieldCount {
        table: String,
        expected: usize,
        got: usize,
    },
    /// A key value or mask does not fit the field's width.
    #[error("table '{table}': key field '{field}': {what} {value:#x} does not fit in {bits} bits")]
    ValueTooWide {
        table: String,
        field: String,
        /// "value" or "mask".
        what: &'static str,
        value: u128,
        bits: u16,
    },
    /// An LPM prefix longer than the field.
    #[error(
        "table '{table}': key field '{field}': prefix length {prefix_len} exceeds field width {bits}"
    )]
    PrefixTooLong {
        table: String,
        field: String,
        prefix_len: u16,
        bits: u16,
    },
    /// An LPM value with bits set after the prefix (e.g. 10.0.0.1/8).
    #[error(
        "table '{table}': key field '{field}': value {value:#x} has bits set beyond prefix length {prefix_len}"
    )]
    HostBitsSet {
        table: String,
        field: String,
        value: u128,
        prefix_len: u16,
    },
    /// A ternary value with bits set where the mask is zero.
    #[error(
        "table '{table}': key field '{field}': ternary value {value:#x} has bits outside mask {mask:#x}"
    )]
    ValueOutsideMask {
        table: String,
        field: String,
        value: u128,
        mask: u128,
    },
    /// A match of the wrong kind for the field (e.g. Lpm for an exact field).
    #[error("table '{table}': key field '{field}' is {expected:?}; got a {got} match")]
    MatchKindMismatch {
        table: String,
        field: String,
        expected: MatchKind,
        got: &'static str,
    },
    /// An action id that is not an index into the schema's actions.
    #[error("table '{table}': unknown action id {id}")]
    UnknownActionId { table: String, id: u16 },
    /// An action name the schema does not declare.
    #[error("table '{table}': unknown action '{action}' (known: {known})")]
    UnknownAction {
        table: String,
        action: String,
        known: String,
    },
    /// An action call with the wrong number of parameters.
    #[error("table '{table}': action '{action}' takes {expected} parameters, got {got}")]
    ParamCount {
        table: String,
        action: String,
        expected: usize,
        got: usize,
    },
    /// A parameter value wider than its declared width.
    #[error(
        "table '{table}': action '{action}' parameter '{param}': value {value:#x} does not fit in {bits} bits"
    )]
    ParamTooWide {
        table: String,
        action: String,
        param: String,
        value: u128,
        bits: u16,
    },
    /// The schema declares the default action constant.
    #[error("table '{table}': default action is const and cannot be changed")]
    ConstDefault { table: String },
    /// Operation `index` of a batch failed; nothing of the batch was applied.
    #[error("table '{table}': batch op #{index} failed, batch not applied: {source}")]
    Batch {
        table: String,
        index: usize,
        source: Box<TableError>,
    },

    // ----- action selectors -----------------------------------------------------------------
    /// A selector declaration with a zero limit.
    #[error("table '{table}': bad action selector: {message}")]
    BadSelector { table: String, message: String },
    /// A group or member operation (or a group/member reference) on a table declared without
    /// an action selector.
    #[error(
        "table '{table}' has no action selector: its entries take a direct action, not a group or member"
    )]
    NotASelector { table: String },
    /// An entry of a selector table naming an action directly.
    #[error(
        "table '{table}' uses an action selector: an entry refers to a group or a member, not to action '{action}' directly"
    )]
    SelectorNeedsRef { table: String, action: String },
    /// Insert of a member id that exists (use modify).
    #[error("table '{table}': action profile member {member} already exists")]
    DuplicateMember { table: String, member: u32 },
    /// A member id that is not in the action profile.
    #[error("table '{table}': no action profile member {member}")]
    NoSuchMember { table: String, member: u32 },
    /// The action profile holds `size` members already.
    #[error("table '{table}': action profile is full ({size} members)")]
    ProfileFull { table: String, size: usize },
    /// Delete of a member a group or an entry still refers to.
    #[error("table '{table}': member {member} is still used by {user}; remove that first")]
    MemberInUse {
        table: String,
        member: u32,
        /// "group 1" or "entry {key}".
        user: String,
    },
    /// Insert of a group id that exists (use modify).
    #[error("table '{table}': selector group {group} already exists")]
    DuplicateGroup { table: String, group: u32 },
    /// A group id that does not exist.
    #[error("table '{table}': no selector group {group}")]
    NoSuchGroup { table: String, group: u32 },
    /// The selector holds `max` groups already.
    #[error("table '{table}': selector has the maximum of {max} groups")]
    TooManyGroups { table: String, max: usize },
    /// A group given more members than the selector's max group size.
    #[error("table '{table}': group {group} would have {size} members; max group size is {max}")]
    GroupTooLarge {
        table: String,
        group: u32,
        size: usize,
        max: usize,
    },
    /// The same member listed twice in one group.
    #[error("table '{table}': group {group} lists member {member} twice")]
    DuplicateGroupMember {
        table: String,
        group: u32,
        member: u32,
    },
    /// Delete of a group an entry still refers to.
    #[error("table '{table}': group {group} is still used by entry {entry}; remove that first")]
    GroupInUse {
        table: String,
        group: u32,
        entry: String,
    },

    // ----- JSON edge ------------------------------------------------------------------------
    /// A JSON (or TOML) value that cannot be read as what `location` needs.
    /// `location` is e.g. "key field 'dst_addr'" or "action 'forward' parameter 'port'".
    #[error("table '{table}': {location}: {message}")]
    BadJson {
        table: String,
        location: String,
        message: String,
    },
    /// A JSON key names a field the schema does not have.
    #[error("table '{table}': unknown key field '{field}' (known: {known})")]
    UnknownKeyField {
        table: String,
        field: String,
        known: String,
    },
    /// A JSON key omits an exact field (lpm and ternary fields may be omitted: wildcard).
    #[error("table '{table}': missing exact key field '{field}'")]
    MissingKeyField { table: String, field: String },
    /// JSON parameters name a parameter the action does not have.
    #[error("table '{table}': action '{action}' has no parameter '{param}' (known: {known})")]
    UnknownParam {
        table: String,
        action: String,
        param: String,
        known: String,
    },
    /// JSON parameters omit one of the action's parameters.
    #[error("table '{table}': action '{action}' is missing parameter '{param}'")]
    MissingParam {
        table: String,
        action: String,
        param: String,
    },

    // ----- registry -------------------------------------------------------------------------
    /// Two tables registered under one name.
    #[error("table '{table}' is already registered")]
    DuplicateTable { table: String },
    /// No table of that name.
    #[error("no table named '{table}'")]
    UnknownTable { table: String },
}

impl TableError {
    /// The table the error concerns.
    pub fn table(&self) -> &str {
        use TableError::*;
        match self {
            BadWidth { table, .. }
            | DuplicateName { table, .. }
            | TooManyKeyFields { table, .. }
            | NoActions { table }
            | TableFull { table, .. }
            | DuplicateKey { table, .. }
            | NoSuchEntry { table, .. }
            | KeyFieldCount { table, .. }
            | ValueTooWide { table, .. }
            | PrefixTooLong { table, .. }
            | HostBitsSet { table, .. }
            | ValueOutsideMask { table, .. }
            | MatchKindMismatch { table, .. }
            | UnknownActionId { table, .. }
            | UnknownAction { table, .. }
            | ParamCount { table, .. }
            | ParamTooWide { table, .. }
            | ConstDefault { table }
            | BadSelector { table, .. }
            | NotASelector { table }
            | SelectorNeedsRef { table, .. }
            | DuplicateMember { table, .. }
            | NoSuchMember { table, .. }
            | ProfileFull { table, .. }
            | MemberInUse { table, .. }
            | DuplicateGroup { table, .. }
            | NoSuchGroup { table, .. }
            | TooManyGroups { table, .. }
            | GroupTooLarge { table, .. }
            | DuplicateGroupMember { table, .. }
            | GroupInUse { table, .. }
            | Batch { table, .. }
            | BadJson { table, .. }
            | UnknownKeyField { table, .. }
            | MissingKeyField { table, .. }
            | UnknownParam { table, .. }
            | MissingParam { table, .. }
            | DuplicateTable { table }
            | UnknownTable { table } => table,
        }
    }

    /// True for "not found" style errors (unknown table/entry/member/group), which a REST
    /// layer maps to 404 rather than 400. Kept here so the mapping lives in one place.
    pub fn is_not_found(&self) -> bool {
        match self {
            TableError::NoSuchEntry { .. }
            | TableError::UnknownTable { .. }
            | TableError::NoSuchMember { .. }
            | TableError::NoSuchGroup { .. } => true,
            TableError::Batch { source, .. } => source.is_not_found(),
            _ => false,
        }
    }

    /// True when the request conflicts with current state (duplicate key/table/member/group,
    /// table or profile full, const default, member or group still in use), which a REST layer maps to 409.
    pub fn is_conflict(&self) -> bool {
        match self {
            TableError::DuplicateKey { .. }
            | TableError::DuplicateTable { .. }
            | TableError::TableFull { .. }
            | TableError::ConstDefault { .. }
            | TableError::DuplicateMember { .. }
            | TableError::DuplicateGroup { .. }
            | TableError::ProfileFull { .. }
            | TableError::TooManyGroups { .. }
            | TableError::MemberInUse { .. }
            | TableError::GroupInUse { .. } => true,
            TableError::Batch { source, .. } => source.is_conflict(),
            _ => false,
        }
    }
}
