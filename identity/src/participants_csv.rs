//! Participant CSV import and export (TENANT-4).
//!
//! Import turns uploaded bytes into validated rows plus row errors; it never
//! stops at the first bad row, so an organiser sees every problem at once, and
//! the caller applies the import all-or-nothing ([`ImportReport::is_clean`]).
//! Error messages name the line and column, never a cell's content: they end up
//! in the UI and possibly in logs, and cells hold personal data (DATA-3).
//!
//! Export writes what a spreadsheet can open safely: cells that a spreadsheet
//! would run as a formula get a leading `'` (CSV injection).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::password::{check_password_in, context_words, PasswordPolicy};

/// Largest accepted upload.
pub const MAX_BYTES: usize = 10 * 1024 * 1024;
/// Most data rows (header excluded) in one import.
pub const MAX_ROWS: usize = 100_000;
/// Errors reported before the import gives up listing more.
pub const MAX_ERRORS: usize = 1_000;
/// Longest cell accepted, in characters.
pub const MAX_CELL_CHARS: usize = 1_000;
/// Rows of one import that may carry a preset password: each is rated
/// against the common passwords here and hashed with argon2 on storing,
/// so this bounds the work one upload causes.
pub const MAX_PASSWORD_ROWS: usize = 2_000;

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// Columns written by [`export`] that import reads past.
const EXPORT_ONLY: [&str; 2] = ["status", "created_at"];
/// Column names with a fixed meaning (any letter case); form fields may not use them.
pub const RESERVED_COLUMNS: [&str; 5] = ["email", "name", "password", "status", "created_at"];

/// A form definition that cannot map onto CSV columns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("form field {index} has an empty name")]
    EmptyName { index: usize },
    #[error("form field name {0:?} is reserved")]
    Reserved(String),
    #[error("form field name {0:?} is used twice")]
    Duplicate(String),
    #[error("select field {0:?} has no options")]
    NoOptions(String),
}

/// Checks a form before it is saved: names non-empty, unique, not reserved,
/// select fields with options. Import and export assume this holds.
pub fn check_form(form: &[FormField]) -> Result<(), FormError> {
    for (index, field) in form.iter().enumerate() {
        let name = field.name.trim();
        if name.is_empty() || name != field.name {
            return Err(FormError::EmptyName { index });
        }
        if RESERVED_COLUMNS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(FormError::Reserved(field.name.clone()));
        }
        if form[..index].iter().any(|f| f.name == field.name) {
            return Err(FormError::Duplicate(field.name.clone()));
        }
        if matches!(&field.kind, FieldKind::Select(options) if options.is_empty()) {
            return Err(FormError::NoOptions(field.name.clone()));
        }
    }
    Ok(())
}

/// A field of an event's registration form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormField {
    /// Machine name; also the CSV column header.
    pub name: String,
    /// Label shown to participants.
    pub label: String,
    pub kind: FieldKind,
    pub required: bool,
}

/// What a form field holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    Text,
    Email,
    /// One of the listed options.
    Select(Vec<String>),
    /// Stored as `"true"` or `"false"`.
    Checkbox,
}

/// A valid row, ready to become a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportedRow {
    /// Line in the file where the record starts (1 = header).
    pub line: u64,
    /// Lowercased.
    pub email: String,
    pub name: String,
    /// Form field name → normalised value; empty optional fields are absent.
    pub fields: BTreeMap<String, String>,
    /// A preset password, if the file has one for this row. Not serialised, so
    /// an import preview sent back to the browser never echoes passwords.
    #[serde(skip_serializing)]
    pub password: Option<String>,
}

/// Something wrong with the file or a row. `line` 0 means the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    pub line: u64,
    pub column: Option<String>,
    pub message: String,
}

/// Result of an import: the valid rows and every error found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub rows: Vec<ImportedRow>,
    pub errors: Vec<RowError>,
}

impl ImportReport {
    /// True when there is no error at all; only then should the rows be applied.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    fn file_error(message: impl Into<String>) -> Self {
        Self {
            rows: Vec::new(),
            errors: vec![RowError {
                line: 0,
                column: None,
                message: message.into(),
            }],
        }
    }

    fn error(&mut self, line: u64, column: Option<&str>, message: impl Into<String>) {
        self.errors.push(RowError {
            line,
            column: column.map(str::to_owned),
            message: message.into(),
        });
    }
}

/// Where each known column sits in the file.
enum Column<'f> {
    Email,
    Name,
    Password,
    Field(&'f FormField),
    Ignored,
}

/// Imports participants. Columns: `email` and `name` (required), `password`
/// (optional preset), one per form field (by [`FormField::name`]); `status` and
/// `created_at` from [`export`] are read past. Comma or semicolon separated
/// (German spreadsheets write semicolons), UTF-8 with or without BOM.
pub fn import(bytes: &[u8], form: &[FormField]) -> ImportReport {
    import_inner(bytes, form, None)
}

/// [`import`], and preset passwords must also satisfy the tenant's policy.
pub fn import_with_policy(
    bytes: &[u8],
    form: &[FormField],
    policy: &PasswordPolicy,
) -> ImportReport {
    import_inner(bytes, form, Some(policy))
}

fn import_inner(bytes: &[u8], form: &[FormField], policy: Option<&PasswordPolicy>) -> ImportReport {
    if bytes.len() > MAX_BYTES {
        return ImportReport::file_error(format!(
            "file is larger than {} MiB",
            MAX_BYTES / (1024 * 1024)
        ));
    }
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(sniff_delimiter(bytes))
        .from_reader(bytes);

    let mut record = csv::ByteRecord::new();
    match reader.read_byte_record(&mut record) {
        Ok(true) => {}
        Ok(false) => return ImportReport::file_error("file is empty; a header row is required"),
        Err(_) => return ImportReport::file_error("header row cannot be read"),
    }
    let (columns, mut report) = match parse_header(&record, form) {
        Ok(columns) => (columns, ImportReport::default()),
        Err(report) => return report,
    };

    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut data_rows = 0usize;
    let password_column = columns.iter().position(|c| matches!(c, Column::Password));
    let mut with_password = 0usize;
    // csv counts records, not the line breaks inside quoted cells; organisers
    // look for the line their editor shows, so count line breaks ourselves.
    let mut lines = LineCounter::new(bytes);
    loop {
        if report.errors.len() >= MAX_ERRORS {
            report.error(
                0,
                None,
                format!("more than {MAX_ERRORS} errors; stopped checking"),
            );
            break;
        }
        let start = reader.position().byte();
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => {
                report.error(lines.line_at(start), None, "row cannot be read as CSV");
                break;
            }
        }
        let line = lines.line_at(record.position().map_or(start, csv::Position::byte));
        if record.len() == 1
            && record
                .get(0)
                .is_some_and(|c| c.iter().all(u8::is_ascii_whitespace))
        {
            continue; // a blank line, e.g. at the end of a hand-edited file
        }
        data_rows += 1;
        if data_rows > MAX_ROWS {
            report.error(
                line,
                None,
                format!("more than {MAX_ROWS} rows; split the file"),
            );
            break;
        }
        if record.len() != columns.len() {
            report.error(
                line,
                None,
                format!(
                    "row has {} columns, the header has {}",
                    record.len(),
                    columns.len()
                ),
            );
            continue;
        }
        if password_column
            .and_then(|i| record.get(i))
            .is_some_and(|cell| !cell.is_empty())
        {
            with_password += 1;
            if with_password > MAX_PASSWORD_ROWS {
                report.error(
                    line,
                    Some("password"),
                    format!(
                        "more than {MAX_PASSWORD_ROWS} rows with a password; import the rest in further files, or let them log in by magic link"
                    ),
                );
                break;
            }
        }
        if let Some(row) = parse_row(&record, line, &columns, policy, &mut report) {
            if let Some(first) = seen.get(&row.email) {
                report.error(
                    line,
                    Some("email"),
                    format!("e-mail address already appears on line {first}"),
                );
                continue;
            }
            seen.insert(row.email.clone(), line);
            report.rows.push(row);
        }
    }
    report
}

/// 1-based line number of byte offsets, for offsets that only grow.
struct LineCounter<'a> {
    bytes: &'a [u8],
    offset: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            offset: 0,
            line: 1,
        }
    }

    fn line_at(&mut self, byte: u64) -> u64 {
        let mut target = usize::try_from(byte)
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        // csv reports a record as starting where the previous one ended: at
        // the LF of a CRLF, or before blank lines it skipped. No record starts
        // with a line break, so step over them.
        while matches!(self.bytes.get(target), Some(b'\r' | b'\n')) {
            target += 1;
        }
        if target > self.offset {
            let newlines = self.bytes[self.offset..target]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            self.line += newlines as u64;
            self.offset = target;
        }
        self.line
    }
}

/// Semicolon if the header line has more semicolons than commas, else comma.
fn sniff_delimiter(bytes: &[u8]) -> u8 {
    let header = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let count = |d: u8| header.iter().filter(|&&b| b == d).count();
    if count(b';') > count(b',') {
        b';'
    } else {
        b','
    }
}

fn parse_header<'f>(
    record: &csv::ByteRecord,
    form: &'f [FormField],
) -> Result<Vec<Column<'f>>, ImportReport> {
    let mut report = ImportReport::default();
    let mut columns = Vec::with_capacity(record.len());
    let mut names: Vec<String> = Vec::with_capacity(record.len());
    for (index, raw) in record.iter().enumerate() {
        let position = index + 1;
        let Ok(name) = std::str::from_utf8(raw) else {
            report.error(
                1,
                None,
                format!("header column {position} is not valid UTF-8"),
            );
            continue;
        };
        let mut name = name.trim().to_owned();
        let lower = name.to_ascii_lowercase();
        if RESERVED_COLUMNS.contains(&lower.as_str()) {
            name = lower; // reserved columns match in any case: "Email" is "email"
        }
        let name = name.as_str();
        if names.iter().any(|n| n == name) {
            report.error(1, Some(name), "column appears twice in the header");
            continue;
        }
        let column = match name {
            "email" => Column::Email,
            "name" => Column::Name,
            "password" => Column::Password,
            other if EXPORT_ONLY.contains(&other) => Column::Ignored,
            _ => match form.iter().find(|f| f.name == name) {
                Some(field) => Column::Field(field),
                None => {
                    report.error(
                        1,
                        Some(name),
                        format!("header column {position} is not a form field"),
                    );
                    Column::Ignored
                }
            },
        };
        names.push(name.to_owned());
        columns.push(column);
    }
    for required in ["email", "name"] {
        if !names.iter().any(|n| n == required) {
            report.error(
                1,
                Some(required),
                "required column is missing from the header",
            );
        }
    }
    for field in form.iter().filter(|f| f.required) {
        if !names.contains(&field.name) {
            report.error(
                1,
                Some(&field.name),
                "required form field is missing from the header",
            );
        }
    }
    if report.is_clean() {
        Ok(columns)
    } else {
        Err(report)
    }
}

fn parse_row(
    record: &csv::ByteRecord,
    line: u64,
    columns: &[Column<'_>],
    policy: Option<&PasswordPolicy>,
    report: &mut ImportReport,
) -> Option<ImportedRow> {
    let errors_before = report.errors.len();
    let mut email = None;
    let mut name = None;
    let mut password = None;
    let mut fields = BTreeMap::new();
    for (raw, column) in record.iter().zip(columns) {
        let label = match column {
            Column::Email => "email",
            Column::Name => "name",
            Column::Password => "password",
            Column::Field(field) => field.name.as_str(),
            Column::Ignored => continue,
        };
        let Ok(cell) = std::str::from_utf8(raw) else {
            report.error(line, Some(label), "cell is not valid UTF-8");
            continue;
        };
        if cell.chars().count() > MAX_CELL_CHARS {
            report.error(
                line,
                Some(label),
                format!("cell is longer than {MAX_CELL_CHARS} characters"),
            );
            continue;
        }
        let result = match column {
            Column::Email => normalise_email(cell).map(|e| email = Some(e)),
            Column::Name => normalise_name(cell).map(|n| name = Some(n)),
            Column::Password => {
                password = preset_password(cell);
                Ok(())
            }
            Column::Field(field) => normalise_field(field, cell).map(|v| {
                if let Some(v) = v {
                    fields.insert(field.name.clone(), v);
                }
            }),
            Column::Ignored => Ok(()),
        };
        if let Err(message) = result {
            report.error(line, Some(label), message);
        }
    }
    if let (Some(policy), Some(pw)) = (policy, &password) {
        // The row's own address and name are no stuff for its password.
        let context = context_words(&[
            email.as_deref().unwrap_or_default(),
            name.as_deref().unwrap_or_default(),
        ]);
        if let Err(e) = check_password_in(policy, pw, &[], &context) {
            report.error(line, Some("password"), e.to_string());
        }
    }
    if report.errors.len() > errors_before {
        return None;
    }
    Some(ImportedRow {
        line,
        email: email?,
        name: name?,
        fields,
        password,
    })
}

fn normalise_email(cell: &str) -> Result<String, String> {
    let email = cell.trim().to_lowercase();
    if email.is_empty() {
        return Err("e-mail address is required".into());
    }
    if !valid_email(&email) {
        return Err("not a valid e-mail address".into());
    }
    Ok(email)
}

/// A pragmatic check of `local@domain.tld` (the mail server has the last word):
/// printable, no spaces, one `@`, a dotted domain of letters, digits and hyphens.
pub fn valid_email(email: &str) -> bool {
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return false;
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return false;
    }
    if local.chars().any(|c| {
        matches!(
            c,
            '"' | '(' | ')' | ',' | ':' | ';' | '<' | '>' | '[' | '\\' | ']'
        )
    }) {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

fn normalise_name(cell: &str) -> Result<String, String> {
    let name = cell.trim();
    if name.is_empty() {
        return Err("name is required".into());
    }
    if name.chars().any(char::is_control) {
        return Err("name contains control characters".into());
    }
    Ok(name.to_owned())
}

/// A preset password cell, taken verbatim (surrounding spaces may be
/// intended); checked against the policy once the row's address and name
/// are known.
fn preset_password(cell: &str) -> Option<String> {
    (!cell.is_empty()).then(|| cell.to_owned())
}

/// The normalised value of one form field, `None` when an optional field is empty.
fn normalise_field(field: &FormField, cell: &str) -> Result<Option<String>, String> {
    let value = cell.trim();
    if value.is_empty() {
        return if field.required {
            Err("required field is empty".into())
        } else {
            Ok(None)
        };
    }
    match &field.kind {
        FieldKind::Text => {
            // Keep inner line breaks (quoted newlines), stored as \n.
            let value = value.replace("\r\n", "\n");
            if value
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
            {
                return Err("text contains control characters".into());
            }
            Ok(Some(value))
        }
        FieldKind::Email => normalise_email(value).map(Some),
        FieldKind::Select(options) => options
            .iter()
            .find(|o| o.trim().eq_ignore_ascii_case(value))
            .map(|o| Some(o.clone()))
            .ok_or_else(|| format!("value is not one of the {} options", options.len())),
        FieldKind::Checkbox => match value.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "ja" => Ok(Some("true".into())),
            "false" | "no" | "0" | "nein" => Ok(Some("false".into())),
            _ => Err("checkbox must be true/false, yes/no or 1/0".into()),
        },
    }
}

/// A participant as exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRow {
    pub email: String,
    pub name: String,
    pub fields: BTreeMap<String, String>,
    pub status: String,
    pub created_at: String,
}

/// Writes participants as CSV (UTF-8 with BOM so spreadsheets detect the
/// encoding, CRLF line ends): `email,name,<form fields…>,status,created_at`.
/// Every cell is passed through [`neutralise_formula`].
pub fn export(rows: &[ExportRow], form: &[FormField]) -> Vec<u8> {
    let mut out = BOM.to_vec();
    {
        let mut writer = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(&mut out);
        let mut header: Vec<&str> = vec!["email", "name"];
        header.extend(form.iter().map(|f| f.name.as_str()));
        header.extend(EXPORT_ONLY);
        // Writing into a Vec cannot fail; a failed row would only shorten the output.
        let _ = writer.write_record(header.iter().map(|h| neutralise_formula(h)));
        for row in rows {
            let mut cells: Vec<String> = vec![
                neutralise_formula(&row.email),
                neutralise_formula(&row.name),
            ];
            cells.extend(
                form.iter().map(|f| {
                    neutralise_formula(row.fields.get(&f.name).map_or("", String::as_str))
                }),
            );
            cells.push(neutralise_formula(&row.status));
            cells.push(neutralise_formula(&row.created_at));
            let _ = writer.write_record(&cells);
        }
        let _ = writer.flush();
    }
    out
}

/// Prefixes `'` to a cell a spreadsheet would treat as a formula (starting with
/// `=`, `+`, `-`, `@`, tab or CR), so it is shown as text.
pub fn neutralise_formula(cell: &str) -> String {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{cell}"),
        _ => cell.to_owned(),
    }
}

#[cfg(test)]
mod tests;
