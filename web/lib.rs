//! The browser pages' bundles, embedded at build time (see build.rs).

include!(concat!(env!("OUT_DIR"), "/web/assets.rs"));

/// The bundled file called `name` and its media type.
pub fn asset(name: &str) -> Option<(&'static [u8], &'static str)> {
    let (_, body) = ASSETS.iter().find(|(n, _)| *n == name)?;
    Some((body, media_type(name)))
}

fn media_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("html") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_page_bundle_is_embedded() {
        for name in [
            "player.js",
            "portal.js",
            "login.js",
            "admin.js",
            "strom.css",
        ] {
            let (body, kind) = super::asset(name).unwrap_or_else(|| panic!("{name} missing"));
            assert!(body.len() > 100, "{name} is {} bytes", body.len());
            assert!(kind.starts_with("text/"));
        }
        assert!(super::asset("../Cargo.toml").is_none());
    }
}
