//! The SRT ingest links the system libsrt (GnuTLS build). Without it the
//! link fails with an obscure message; say what to install instead.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let dirs = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
    ];
    let found = dirs
        .iter()
        .any(|d| std::path::Path::new(d).join("libsrt-gnutls.so").exists());
    if !found && std::env::var_os("STROM_SKIP_LIBSRT_CHECK").is_none() {
        panic!(
            "libsrt (GnuTLS build) is not installed; SRT ingest links it.\n\
             Debian/Ubuntu: apt-get install -y libsrt-gnutls-dev\n\
             (set STROM_SKIP_LIBSRT_CHECK=1 if it lives elsewhere on the linker path)"
        );
    }
}
