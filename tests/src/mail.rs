//! Mails in a control plane's file outbox (`<data_dir>/control-plane/outbox`,
//! one `.eml` file each): who they are to, and the magic link they carry.

/// Whether the mail's `To:` header names `to`.
pub fn is_to(text: &str, to: &str) -> bool {
    text.lines()
        .any(|l| l.eq_ignore_ascii_case(&format!("To: {to}")))
}

/// The addressee (the `To:` header's value).
pub fn to(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("To: "))
        .map(str::trim)
}

/// The magic link's secret (its `#token=` fragment) and the 8-digit code
/// the mail offers instead, from a login mail (quoted-printable undone).
pub fn magic_link(text: &str) -> Option<(String, String)> {
    let text = text
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let token = text
        .split("#token=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .to_owned();
    let code: String = text
        .split("enter this code instead: ")
        .nth(1)?
        .chars()
        .take(8)
        .collect();
    (code.len() == 8).then_some((token, code))
}
