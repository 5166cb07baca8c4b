//! Builds the browser bundles (`npm ci` once, then `node build.mjs`) into
//! OUT_DIR and embeds them, so one `strom` binary serves its own pages and no
//! built bundle lives in the repository.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let web = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("out dir")).join("web");
    for watched in [
        "src",
        "static",
        "build.mjs",
        "package.json",
        "package-lock.json",
    ] {
        println!("cargo:rerun-if-changed={}", web.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=STROM_NPM");

    if !web.join("node_modules/.package-lock.json").exists()
        || modified(&web.join("package-lock.json"))
            > modified(&web.join("node_modules/.package-lock.json"))
    {
        run(
            Command::new(npm())
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&web),
            "npm ci (installs the pinned esbuild, hls.js, typescript, playwright-core)",
        );
    }
    let _ = std::fs::remove_dir_all(&out);
    run(
        Command::new("node")
            .arg("build.mjs")
            .arg(&out)
            .current_dir(&web),
        "node build.mjs (bundles the pages with esbuild)",
    );

    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
        .expect("bundle directory")
        .map(|e| e.expect("bundle entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut table = String::from("pub static ASSETS: &[(&str, &[u8])] = &[\n");
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).expect("asset name");
        table.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            f.display().to_string()
        ));
    }
    table.push_str("];\n");
    std::fs::write(out.join("assets.rs"), table).expect("writing assets.rs");
}

fn npm() -> String {
    std::env::var("STROM_NPM").unwrap_or_else(|_| "npm".into())
}

fn modified(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn run(cmd: &mut Command, what: &str) {
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => {
            panic!("{what} failed ({s}); node >= 20 and npm are needed to build strom's web pages")
        }
        Err(e) => panic!(
            "{what} could not start: {e}; node >= 20 and npm are needed to build strom's web pages"
        ),
    }
}
