//! Checks Prometheus text exposition (format 0.0.4): with `promtool check
//! metrics` when it is installed (the reference parser and linter; the test
//! command installs Debian's prometheus package), and always with a strict
//! parser of our own, which also returns the families for further checks.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::process::{Command, Stdio};

/// Family name → type, as the exposition declared them.
pub type Families = BTreeMap<String, String>;

fn valid_name(name: &str, first_colon: bool) -> bool {
    let mut chars = name.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (first_colon && c == ':');
    chars.next().is_some_and(ok_first)
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (first_colon && c == ':'))
}

/// Label name and value pairs of one sample.
type LabelSet = Vec<(String, String)>;

/// Parses `{a="x",b="y"}` (after the metric name); returns the labels and
/// the rest of the line.
fn labels(text: &str) -> Result<(LabelSet, &str), String> {
    let Some(mut rest) = text.strip_prefix('{') else {
        return Ok((Vec::new(), text));
    };
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((out, r));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = rest[..eq].trim();
        if !valid_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err("bad escape in label value".into()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("label {name} twice"));
        }
        out.push((name.to_owned(), value));
        rest = &rest[end + 1..];
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("labels not separated by ','".into());
        }
    }
}

fn value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        v => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

/// Our strict parse: HELP/TYPE syntax, one TYPE per family before its
/// samples, samples of a family together, names, labels, values, no
/// duplicate series, histogram buckets with `le` and `+Inf`.
pub fn parse(text: &str) -> Result<Families, String> {
    let mut families = Families::new();
    let mut seen_series = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    // Histogram series (labels without `le`) and whether each has +Inf.
    let mut inf: BTreeMap<String, bool> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("");
            match kind {
                "HELP" if !valid_name(name, true) => {
                    return Err(at(format!("bad name {name:?}")));
                }
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    if !matches!(t, "counter" | "gauge" | "histogram" | "summary" | "untyped") {
                        return Err(at(format!("bad type {t:?}")));
                    }
                    if families.insert(name.to_owned(), t.to_owned()).is_some() {
                        return Err(at(format!("second TYPE for {name}")));
                    }
                    if let Some(c) = current.replace(name.to_owned()) {
                        finished.insert(c);
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !valid_name(name, true) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (set, rest) = labels(&line[name_end..]).map_err(at)?;
        let mut fields = rest.split_whitespace();
        let v = value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| at(format!("bad timestamp {ts:?}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing text".into()));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                let base = name.strip_suffix(s)?;
                (families.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        if finished.contains(family) {
            return Err(at(format!("samples of {family} are not together")));
        }
        if current.as_deref() != Some(family) {
            if families.contains_key(family) {
                return Err(at(format!("samples of {family} are not together")));
            }
            // An untyped family without a TYPE line.
            families.insert(family.to_owned(), "untyped".into());
            if let Some(c) = current.replace(family.to_owned()) {
                finished.insert(c);
            }
        }
        if name.ends_with("_bucket") && family != name {
            let le = set
                .iter()
                .find(|(k, _)| k == "le")
                .ok_or_else(|| at("bucket without le".into()))?;
            value(&le.1).map_err(at)?;
            let mut rest: Vec<String> = set
                .iter()
                .filter(|(k, _)| k != "le")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            rest.sort();
            let series = format!("{family}{{{}}}", rest.join(","));
            *inf.entry(series).or_default() |= le.1 == "+Inf";
        }
        if families.get(family).map(String::as_str) == Some("counter") && (v < 0.0 || v.is_nan()) {
            return Err(at("counter below zero".into()));
        }
        let mut key: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v}")).collect();
        key.sort();
        if !seen_series.insert(format!("{name}{{{}}}", key.join(","))) {
            return Err(at("duplicate series".into()));
        }
    }
    if let Some((series, _)) = inf.iter().find(|(_, has)| !**has) {
        return Err(format!("histogram series {series} has no +Inf bucket"));
    }
    Ok(families)
}

/// Whether `promtool` is installed.
pub fn promtool() -> bool {
    Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `promtool check metrics` on `text` (format and lint); `Ok` when promtool
/// is not installed.
pub fn promtool_check(text: &str) -> Result<(), String> {
    if !promtool() {
        return Ok(());
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Both checks; the families on success.
pub fn check(text: &str) -> Result<Families, String> {
    let families = parse(text)?;
    promtool_check(text)?;
    Ok(families)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_refuses_what_prometheus_refuses() {
        let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\na_total{x=\"2\"} 4\n\
                    # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
        let f = parse(good).unwrap();
        assert_eq!(f["a_total"], "counter");
        assert_eq!(f["h"], "histogram");
        for bad in [
            "a{x=1} 1\n",
            "a{x=\"1\" 1\n",
            "a 1 2 3\n",
            "a one\n",
            "# TYPE a counter\n# TYPE a counter\n",
            "a 1\nb 1\na 2\n",
            "a{x=\"1\"} 1\na{x=\"1\"} 2\n",
            "1a 1\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
            "# TYPE c counter\nc -1\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
